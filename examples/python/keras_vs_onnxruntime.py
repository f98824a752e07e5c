"""The seed's layer (a Keras SeparableConv2D: 12x12x3 input, 5x5, 256
outputs) and a MobileNet v2 block (an inverted residual), run by convjit
and by ONNX Runtime on the same input: error and time side by side.

    pip install ./python onnx onnxruntime      # from the repository's root
    python examples/python/keras_vs_onnxruntime.py [--batch N] [--threads T]

With Keras installed, the SeparableConv2D is a real Keras layer (and Keras'
own output is compared too); without it, an object that looks like one to
convjit.from_keras (class name, get_config(), get_weights(): Keras' keys
and layouts). The ONNX graphs are built with onnx.helper from the same
weights (Keras' HWIO kernels transposed to ONNX's OIHW).
"""

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import convjit


class SeparableConv2D:
    """Stands in for keras.layers.SeparableConv2D where Keras is absent."""

    def __init__(self, filters, kernel_size, cin, rng, depth_multiplier=1, activation="relu"):
        kh, kw = kernel_size
        m = depth_multiplier
        self._config = dict(
            name="separable_conv2d", filters=filters, kernel_size=(kh, kw), strides=(1, 1),
            padding="valid", data_format="channels_last", dilation_rate=(1, 1),
            depth_multiplier=m, activation=activation, use_bias=True,
        )
        self._weights = [
            (rng.standard_normal((kh, kw, cin, m)) / np.sqrt(kh * kw)).astype(np.float32),
            (rng.standard_normal((1, 1, cin * m, filters)) / np.sqrt(cin * m)).astype(np.float32),
            (rng.standard_normal(filters) * 0.1).astype(np.float32),
        ]

    def get_config(self):
        return dict(self._config)

    def get_weights(self):
        return list(self._weights)


def keras_separable(rng, x):
    """The seed's layer, from Keras if importable; and Keras' output (or None)."""
    try:
        import keras
    except ImportError:
        return SeparableConv2D(256, (5, 5), 3, rng), None, "duck-typed (Keras not installed)"
    layer = keras.layers.SeparableConv2D(256, 5, activation="relu", bias_initializer="random_normal")
    return layer, np.asarray(layer(x)), f"Keras {keras.__version__}"


def onnx_dw(c, m, w, b, name, x, y, pad):
    """A depthwise conv node: Keras [Kh, Kw, C, M] -> ONNX [C*M, 1, Kh, Kw], group C."""
    kh, kw = w.shape[:2]
    inits = [numpy_helper.from_array(w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw), f"{name}_w")]
    ins = [x, f"{name}_w"]
    if b is not None:
        inits.append(numpy_helper.from_array(b, f"{name}_b"))
        ins.append(f"{name}_b")
    return helper.make_node("Conv", ins, [y], group=c, kernel_shape=[kh, kw], pads=[pad] * 4), inits


def onnx_pw(w, b, name, x, y):
    """A pointwise conv node: [Ci, Co] -> ONNX [Co, Ci, 1, 1]."""
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.T[:, :, None, None]), f"{name}_w"),
             numpy_helper.from_array(b, f"{name}_b")]
    return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], kernel_shape=[1, 1]), inits


def session(nodes, inits, in_shape, out_shape, threads):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def median_us(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e6 * float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="threads for both convjit and ONNX Runtime")
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []

    # 1. The seed's SeparableConv2D.
    x = rng.standard_normal((a.batch, 12, 12, 3)).astype(np.float32)
    layer, keras_out, origin = keras_separable(rng, x)
    imported = convjit.from_keras(layer, input_shape=(12, 12, 3))
    k = convjit.compile(imported, threads=a.threads)
    dw, pw, b = layer.get_weights()
    n1, i1 = onnx_dw(3, 1, dw, None, "dw", "x", "d", 0)
    n2, i2 = onnx_pw(pw.reshape(pw.shape[-2:]), b, "pw", "d", "p")
    relu = helper.make_node("Relu", ["p"], ["y"])
    sess = session([n1, n2, relu], i1 + i2, [a.batch, 3, 12, 12], [a.batch, 256, 8, 8], a.threads)
    rows.append(("SeparableConv2D 12x12x3, 5x5 -> 256", origin, k, sess, x, keras_out))

    # 2. A MobileNet v2 block: 1x1 expand x6, relu6; 3x3 depthwise, relu6; 1x1 project; + input.
    h, c, e = 56, 24, 144
    conv = f"""layer mbv2_block {{
  input {h}x{h}x{c}
  expand:  pointwise {e}, bias, relu6
  dw:      depthwise 3x3, pad same, bias, relu6
  project: pointwise {c}, bias, residual
}}"""
    w = {
        "expand.weight": (rng.standard_normal((c, e)) / np.sqrt(c)).astype(np.float32),
        "expand.bias": (rng.standard_normal(e) * 0.1).astype(np.float32),
        "dw.weight": (rng.standard_normal((3, 3, e, 1)) / 3).astype(np.float32),
        "dw.bias": (rng.standard_normal(e) * 0.1).astype(np.float32),
        "project.weight": (rng.standard_normal((e, c)) / np.sqrt(e)).astype(np.float32),
        "project.bias": (rng.standard_normal(c) * 0.1).astype(np.float32),
    }
    k2 = convjit.compile(conv, weights=w, threads=a.threads)
    clip = [numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")]
    n1, i1 = onnx_pw(w["expand.weight"], w["expand.bias"], "ex", "x", "e")
    n2, i2 = onnx_dw(e, 1, w["dw.weight"], w["dw.bias"], "dw", "e6", "d", 1)
    n3, i3 = onnx_pw(w["project.weight"], w["project.bias"], "pr", "d6", "p")
    nodes = [n1, helper.make_node("Clip", ["e", "lo", "hi"], ["e6"]), n2,
             helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]), n3, helper.make_node("Add", ["p", "x"], ["y"])]
    x2 = rng.standard_normal((a.batch, h, h, c)).astype(np.float32)
    sess2 = session(nodes, clip + i1 + i2 + i3, [a.batch, c, h, h], [a.batch, c, h, h], a.threads)
    rows.append((f"MobileNet v2 block {h}x{h}x{c}, x6", ".conv text", k2, sess2, x2, None))

    print(f"batch {a.batch}, {a.threads} thread(s); convjit {k.backend} {k.precision}, "
          f"ONNX Runtime {ort.__version__} (CPU); median of {a.repeats} runs\n")
    print(f"{'layer':38} {'from':34} {'max |convjit - ORT|':>19} {'convjit us':>11} {'ORT us':>10} {'ORT/convjit':>11}")
    for name, origin, kern, s, x, ref in rows:
        nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        out = np.empty((x.shape[0], *kern.output_shape), np.float32)
        ours = kern(x, out=out)
        theirs = s.run(None, {"x": nchw})[0].transpose(0, 2, 3, 1)
        err = float(np.abs(ours - theirs).max())
        t_ours = median_us(lambda: kern(x, out=out), a.repeats)
        t_ort = median_us(lambda: s.run(None, {"x": nchw}), a.repeats)
        print(f"{name:38} {origin:34} {err:19.2e} {t_ours:11.1f} {t_ort:10.1f} {t_ort / t_ours:10.2f}x")
        if ref is not None:
            print(f"{'':38} {'max |convjit - Keras|':34} {float(np.abs(ours - ref).max()):19.2e}")


if __name__ == "__main__":
    main()
