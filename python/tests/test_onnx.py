"""convjit.import_onnx on models built with onnx.helper, each imported
layer compiled and run against ONNX Runtime on the same input (skipped
loudly without onnx / onnxruntime; required in CI)."""

import numpy as np
import pytest

import convjit
from conftest import need_module


def mbv2_model(rng, h=14, c=24, expand=6):
    onnx = need_module("onnx")
    from onnx import TensorProto, helper, numpy_helper

    e = c * expand
    def init(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("w1", (e, c, 1, 1), 1 / np.sqrt(c)), init("b1", (e,), 0.1),
        init("w2", (e, 1, 3, 3), 1 / 3), init("b2", (e,), 0.1),
        init("w3", (c, e, 1, 1), 1 / np.sqrt(e)), init("b3", (c,), 0.1),
        numpy_helper.from_array(np.array(0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["e"], kernel_shape=[1, 1]),
        helper.make_node("Clip", ["e", "lo", "hi"], ["e6"]),
        helper.make_node("Conv", ["e6", "w2", "b2"], ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=e),
        helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]),
        helper.make_node("Conv", ["d6", "w3", "b3"], ["p"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["p", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mbv2_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, h])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_imported_block_matches_onnx_runtime(tmp_path, rng):
    ort = need_module("onnxruntime")
    model = mbv2_model(rng)
    path = tmp_path / "block.onnx"
    path.write_bytes(model.SerializeToString())
    layers = convjit.import_onnx(path)
    assert len(layers) == 1
    layer = layers[0]
    assert (layer.onnx_input, layer.onnx_output) == ("x", "y")
    assert layer.input_shape == (14, 14, 24) and layer.output_shape == (14, 14, 24)
    assert "residual" in layer.conv and "relu6" in layer.conv
    assert set(layer.weights) >= {k for k in layer.weights if k.endswith(".weight")}
    x = rng.standard_normal((1, 24, 14, 14)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    k = convjit.compile(layer)
    got = k(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The text and weights are those `compile` takes separately, too.
    np.testing.assert_array_equal(
        convjit.compile(layer.conv, weights=layer.weights)(x.transpose(0, 2, 3, 1)),
        k(x.transpose(0, 2, 3, 1)),
    )


def test_symbolic_input_needs_input_shape(tmp_path, rng):
    onnx = need_module("onnx")
    need_module("onnxruntime")
    model = mbv2_model(rng)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims[1:], ("C", "H", "W")):
        d.dim_param = name
    for d in model.graph.output[0].type.tensor_type.shape.dim[1:]:
        d.dim_param = "S"
    path = tmp_path / "sym.onnx"
    path.write_bytes(model.SerializeToString())
    layers = convjit.import_onnx(path, input_shape=(10, 10, 24))
    assert layers[0].input_shape == (10, 10, 24)
    with pytest.raises(ValueError, match="input_shape"):
        convjit.import_onnx(path, input_shape=(10, 10))


def test_import_errors(tmp_path, rng):
    need_module("onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(convjit.DataError, match=str(bad)):
        convjit.import_onnx(bad)
    with pytest.raises(convjit.DataError):
        convjit.import_onnx(tmp_path / "missing.onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    none = tmp_path / "none.onnx"
    none.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(convjit.DataError, match=r"no convolution could be imported \(0 Conv nodes\)"):
        convjit.import_onnx(none)
