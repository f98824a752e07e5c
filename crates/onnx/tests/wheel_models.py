#!/usr/bin/env python3
"""The six CNNs shipped in the `onnx` wheel (backend/test/data/light), for
`wheel_models.rs`: their weights are `ConstantOfShape` nodes (one value
repeated), which convjit's importer folds.

    python3 wheel_models.py prepare OUT_DIR
        Prints the directory holding the wheel's models, and writes
        OUT_DIR/NAME.onnx for each: the model with every ConstantOfShape of
        rank 1 or 4 multiplied by random factors (per channel, and for
        weights [Co,1,1,1] * [1,Ci,Kh,Kw]: every element differs), so that
        a weight or channel out of place shows in the comparison, and the
        folder meets Mul with broadcasting. The graph is otherwise the same.
    python3 wheel_models.py run OUT_DIR
        For each OUT_DIR/NAME.tensors (tensor names, one per line, written
        by the test), runs OUT_DIR/NAME.onnx in ONNX Runtime on a seeded
        random input and saves the named tensors as OUT_DIR/NAME.npz
        (keys t0, t1, ... in the file's order; NCHW, float32).
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

MODELS = ["resnet50", "shufflenet", "squeezenet", "vgg19", "inception_v2", "densenet121"]


def wheel_dir():
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def randomize(model, rng):
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for n in g.node:
        nodes.append(n)
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            continue
        dims = [int(d) for d in numpy_helper.to_array(inits[n.input[0]])]
        if len(dims) == 4:
            factors = [[dims[0], 1, 1, 1], [1] + dims[1:]]
        elif len(dims) == 1:
            factors = [dims]
        else:
            continue  # Gemm weights: not convjit's
        out = n.output[0]
        n.output[0] = out + "__fill"
        last = n.output[0]
        for i, shape in enumerate(factors):
            name = f"{out}__factor{i}"
            g.initializer.append(numpy_helper.from_array(
                rng.uniform(0.5, 1.5, shape).astype(np.float32), name))
            nxt = out if i == len(factors) - 1 else f"{out}__scaled{i}"
            nodes.append(helper.make_node("Mul", [last, name], [nxt]))
            last = nxt
    del g.node[:]
    g.node.extend(nodes)
    return model


def prepare(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(24)
    print(wheel_dir())
    for name in MODELS:
        model = onnx.load(os.path.join(wheel_dir(), f"light_{name}.onnx"))
        onnx.save(randomize(model, rng), os.path.join(out_dir, f"{name}.onnx"))


def run(out_dir):
    for name in MODELS:
        listed = os.path.join(out_dir, f"{name}.tensors")
        if not os.path.exists(listed):
            continue
        wanted = [l for l in open(listed).read().split("\n") if l]
        model = onnx.load(os.path.join(out_dir, f"{name}.onnx"))
        graph_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
        del model.graph.output[:]
        model.graph.output.extend(
            helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted
            if t not in graph_inputs)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        feeds = {}
        for i in session.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            feeds[i.name] = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, feeds)))
        values.update(feeds)
        np.savez(os.path.join(out_dir, f"{name}.npz"),
                 **{f"t{i}": values[t] for i, t in enumerate(wanted)})


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "run"):
        sys.exit(__doc__)
    (prepare if sys.argv[1] == "prepare" else run)(sys.argv[2])
