#!/usr/bin/env python3
"""Whole classic CNNs through `convjit import`, checked against ONNX Runtime.

    python3 zoo.py CONVJIT_BINARY OUT_DIR [MODEL ...]

Needs `onnx`, `onnxruntime` and `numpy` (no download: the graphs are built
here, with the structure of torchvision's ResNet-50, ResNeXt-50 32x4d,
MobileNetV2, SqueezeNet 1.1, the ONNX model zoo's Caffe AlexNet (groups 2)
and ShuffleNet v1 (g = 3), with random weights). For each model it:

1. writes OUT_DIR/NAME.onnx (batch 1, 224x224; ResNet-50 is ~100 MB);
2. runs `convjit import` on it (printing its summary and time);
3. asks ONNX Runtime for every imported layer's input and output tensor;
4. runs each layer with `convjit run --weights` on ONNX Runtime's input and
   compares with its output (tolerance 1e-4 of the largest output);
5. checks that every Conv node of the model was imported.

Exit status 1 if any check fails. Not part of `cargo test` (minutes, and a
few hundred MB in OUT_DIR).
"""

import os
import re
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)) + "/fixtures")
from make_fixtures import Model  # noqa: E402

RNG = np.random.default_rng(11)


class Net(Model):
    """A Model whose tensors get fresh names and nodes torchvision-like ones."""

    def __init__(self, name):
        super().__init__(name, opset=13)
        self.n = 0

    def t(self):
        self.n += 1
        return f"t{self.n}"

    def cbr(self, x, path, cin, cout, k, stride=1, pad=None, group=1, act="relu", bn=True):
        """Conv [+ BatchNormalization] [+ Relu | Clip(0, 6)], PyTorch style."""
        pad = k // 2 if pad is None else pad
        t = self.conv(x, self.t(), cin, cout, k, group=group, bias=not bn, name=f"{path}/Conv",
                      strides=[stride, stride], pads=[pad] * 4)
        if bn:
            t = self.bn(t, self.t(), cout, epsilon=1e-5)
            self.nodes[-1].name = f"{path}/BatchNormalization"
        if act == "relu":
            t = self.node("Relu", [t], self.t(), name=f"{path}/Relu")
        elif act == "relu6":
            t = self.clip6(t, self.t(), "const")
        return t

    def head(self, x, c, classes=1000):
        t = self.node("GlobalAveragePool", [x], self.t())
        t = self.node("Flatten", [t], self.t())
        w = self.init(self.t() + "_w", RNG.normal(0, 0.01, (classes, c)))
        b = self.init(self.t() + "_b", np.zeros(classes))
        return self.node("Gemm", [t, w, b], "logits", transB=1)


def resnet50(groups=1, width_per_group=64, name="resnet50"):
    m = Net(name)
    t = m.cbr("input", "/conv1", 3, 64, 7, stride=2, pad=3)
    t = m.node("MaxPool", [t], m.t(), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for li, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
        width = planes * width_per_group // 64 * groups
        for b in range(blocks):
            p = f"/layer{li + 1}/layer{li + 1}.{b}"
            s = stride if b == 0 else 1
            y = m.cbr(t, p + "/conv1", cin, width, 1)
            y = m.cbr(y, p + "/conv2", width, width, 3, stride=s, group=groups)
            y = m.cbr(y, p + "/conv3", width, planes * 4, 1, act=None)
            short = t
            if b == 0:
                short = m.cbr(t, p + "/downsample/0", cin, planes * 4, 1, stride=s, pad=0, act=None)
            y = m.node("Add", [y, short], m.t(), name=p + "/Add")
            t = m.node("Relu", [y], m.t(), name=p + "/Relu_1")
            cin = planes * 4
    return m, m.head(t, cin)


def mobilenet_v2():
    m = Net("mobilenet_v2")
    t = m.cbr("input", "/features/0", 3, 32, 3, stride=2, act="relu6")
    cin, i = 32, 1
    for expand, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for j in range(n):
            p = f"/features/{i}/conv"
            stride = s if j == 0 else 1
            hidden = cin * expand
            y = t
            if expand != 1:
                y = m.cbr(y, p + "/0", cin, hidden, 1, act="relu6")
            y = m.cbr(y, p + "/1", hidden, hidden, 3, stride=stride, group=hidden, act="relu6")
            y = m.cbr(y, p + "/2", hidden, c, 1, act=None)
            if stride == 1 and cin == c:
                y = m.node("Add", [t, y], m.t(), name=f"/features/{i}/Add")
            t, cin, i = y, c, i + 1
    t = m.cbr(t, "/features/18", cin, 1280, 1, act="relu6")
    return m, m.head(t, 1280)


def squeezenet1_1():
    m = Net("squeezenet1_1")
    t = m.cbr("input", "/features/0", 3, 64, 3, stride=2, pad=0, bn=False)
    pool = lambda x: m.node("MaxPool", [x], m.t(), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    t, cin = pool(t), 64
    fires = [(16, 64), (16, 64), None, (32, 128), (32, 128), None, (48, 192), (48, 192), (64, 256), (64, 256)]
    for i, fire in enumerate(fires):
        if fire is None:
            t = pool(t)
            continue
        sq, e = fire
        p = f"/features/{i + 3}"
        s = m.cbr(t, p + "/squeeze", cin, sq, 1, bn=False)
        e1 = m.cbr(s, p + "/expand1x1", sq, e, 1, bn=False)
        e3 = m.cbr(s, p + "/expand3x3", sq, e, 3, bn=False)
        t, cin = m.node("Concat", [e1, e3], m.t(), axis=1), 2 * e
    t = m.node("Dropout", [t], m.t())
    t = m.cbr(t, "/classifier/1", cin, 1000, 1, pad=0, bn=False)
    t = m.node("GlobalAveragePool", [t], m.t())
    return m, m.node("Flatten", [t], "logits")


def alexnet_caffe():
    """bvlcalexnet of the ONNX model zoo: LRN, and groups 2 in conv2, 4, 5."""
    m = Net("alexnet_caffe")
    lrn = lambda x: m.node("LRN", [x], m.t(), size=5, alpha=1e-4, beta=0.75, bias=1.0)
    pool = lambda x: m.node("MaxPool", [x], m.t(), kernel_shape=[3, 3], strides=[2, 2])
    t = pool(lrn(m.cbr("input", "conv1", 3, 96, 11, stride=4, pad=0, bn=False)))
    t = pool(lrn(m.cbr(t, "conv2", 96, 256, 5, pad=2, group=2, bn=False)))
    t = m.cbr(t, "conv3", 256, 384, 3, bn=False)
    t = m.cbr(t, "conv4", 384, 384, 3, group=2, bn=False)
    t = pool(m.cbr(t, "conv5", 384, 256, 3, group=2, bn=False))
    t = m.node("Flatten", [t], m.t())
    w = m.init("fc6_w", RNG.normal(0, 0.01, (4096, 256 * 6 * 6)).astype(np.float32))
    return m, m.node("Gemm", [t, w], "logits", transB=1)


def shufflenet_v1(g=3):
    m = Net("shufflenet_v1")
    t = m.cbr("input", "conv1", 3, 24, 3, stride=2)
    t = m.node("MaxPool", [t], m.t(), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin, size = 24, 56
    for si, (cout, n) in enumerate([(240, 4), (480, 8), (960, 4)]):
        for u in range(n):
            p = f"stage{si + 2}/unit{u}"
            stride = 2 if u == 0 else 1
            out = cout - cin if stride == 2 else cout
            mid = cout // 4
            first_g = 1 if cin == 24 else g
            y = m.cbr(t, p + "/gconv1", cin, mid, 1, group=first_g)
            shape1, shape2 = p + "/shape1", p + "/shape2"
            m.inits.append(numpy_helper.from_array(np.array([0, g, mid // g, size, size], np.int64), shape1))
            m.inits.append(numpy_helper.from_array(np.array([0, -1, size, size], np.int64), shape2))
            y = m.node("Reshape", [y, shape1], m.t())
            y = m.node("Transpose", [y], m.t(), perm=[0, 2, 1, 3, 4])
            y = m.node("Reshape", [y, shape2], m.t())
            size //= stride
            y = m.cbr(y, p + "/dwconv", mid, mid, 3, stride=stride, group=mid, act=None)
            y = m.cbr(y, p + "/gconv2", mid, out, 1, group=g, act=None)
            if stride == 2:
                s = m.node("AveragePool", [t], m.t(), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
                y = m.node("Concat", [s, y], m.t(), axis=1)
            else:
                y = m.node("Add", [t, y], m.t())
            t, cin = m.node("Relu", [y], m.t()), cout
    return m, m.head(t, cin)


MODELS = {
    "resnet50": lambda: resnet50(),
    "resnext50_32x4d": lambda: resnet50(groups=32, width_per_group=4, name="resnext50_32x4d"),
    "mobilenet_v2": mobilenet_v2,
    "squeezenet1_1": squeezenet1_1,
    "alexnet_caffe": alexnet_caffe,
    "shufflenet_v1": shufflenet_v1,
}


def build(name, out_dir):
    m, logits = MODELS[name]()
    size = 227 if name == "alexnet_caffe" else 224
    graph = helper.make_graph(m.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, None)], m.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = os.path.join(out_dir, name + ".onnx")
    onnx.save_model(model, path)
    return model, path, size


def layers_of(conv_text):
    """(layer, input tensor, output tensor, weights file) from the .conv comments."""
    out, weights, tensors = [], None, None
    for line in conv_text.splitlines():
        if line.startswith("# weights: "):
            weights = line[len("# weights: "):]
        elif m := re.match(r"# ONNX '(.*)' -> '(.*)' \(", line):
            tensors = m.groups()
        elif m := re.match(r"layer (\w+) \{", line):
            out.append((m.group(1), tensors[0], tensors[1], weights))
    return out


def check(binary, out_dir, name):
    model, path, size = build(name, out_dir)
    conv_nodes = sum(n.op_type == "Conv" for n in model.graph.node)
    mb = os.path.getsize(path) / 1e6
    begin = time.perf_counter()
    r = subprocess.run([binary, "import", path], capture_output=True, text=True)
    took = time.perf_counter() - begin
    print(f"== {name}: {mb:.1f} MB, {conv_nodes} Conv nodes, import {took:.2f} s (exit {r.returncode})")
    print(r.stdout + r.stderr, end="")
    if r.returncode != 0:
        return False
    layers = layers_of(open(path[:-5] + ".conv").read())
    stages = int(re.search(r", (\d+) of (\d+) Conv nodes", r.stdout).group(1))
    ok = stages == conv_nodes
    if not ok:
        print(f"FAIL: {stages} of {conv_nodes} Conv nodes imported")

    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = sorted({t for _, i, o, _ in layers for t in (i, o)} - {"input"})
    for n in names:
        m.graph.output.append(helper.make_empty_tensor_value_info(n))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = RNG.normal(0, 1, (1, 3, size, size)).astype(np.float32)
    values = dict(zip(names, sess.run(names, {"input": x})))
    values["input"] = x
    worst = 0.0
    for layer, i, o, weights in layers:
        np.save(os.path.join(out_dir, "in.npy"), values[i].transpose(0, 2, 3, 1).copy())
        r = subprocess.run([binary, "run", path[:-5] + ".conv", "--layer", layer, "--weights",
                            os.path.join(out_dir, weights), "--input", os.path.join(out_dir, "in.npy"),
                            "--output", os.path.join(out_dir, "out.npy")], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL: run {layer}: {r.stderr}")
            ok = False
            continue
        got = np.load(os.path.join(out_dir, "out.npy"))
        want = values[o].transpose(0, 2, 3, 1)
        scale = max(1.0, float(np.abs(want).max()))
        err = float(np.abs(got - want).max()) / scale
        worst = max(worst, err)
        if not err <= 1e-4:
            print(f"FAIL: layer {layer} ('{i}' -> '{o}'): |convjit - onnxruntime| / max = {err:.2e}")
            ok = False
    print(f"{len(layers)} layers run; worst |convjit - onnxruntime| / max |output| = {worst:.2e}")
    return ok


def main():
    binary, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    names = sys.argv[3:] or list(MODELS)
    results = {n: check(binary, out_dir, n) for n in names}
    print("\n" + ", ".join(f"{n} {'ok' if ok else 'FAILED'}" for n, ok in results.items()))
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
