"""convjit.compile_network and Network: layers run back to back equal the
same layers compiled and run one by one; sources of every kind; errors."""

import numpy as np
import pytest

import convjit
from conftest import MBV2, MBV2_SHAPES, random_weights

# Four layers that chain: a strided conv, an inverted residual, a 1x1
# and a separable conv (valid padding: the shape shrinks).
CHAIN = """
layer stem { input 29x27x3
  c: conv 3x3 -> 24, stride 2, pad same, bias, relu6 }
layer block { input 15x14x24
  e: pointwise 96, relu6
  d: depthwise 3x3, pad same
  p: pointwise 24, residual }
layer mix { input 15x14x24
  p: pointwise 16 }
layer tail { input 15x14x16
  s: conv 3x3 -> 8, pad valid, separable depthwise }
"""
NAMES = ["stem", "block", "mix", "tail"]


def one_by_one(x, **kw):
    for name in NAMES:
        x = convjit.compile(CHAIN, layer=name, **kw)(x)
    return x


@pytest.mark.parametrize("threads", [1, 2])
def test_equals_the_layers_one_by_one(rng, threads):
    net = convjit.compile_network(CHAIN, threads=threads)
    assert net.layers == NAMES
    assert net.input_shape == (29, 27, 3) and net.output_shape == (13, 12, 8)
    assert net.threads == threads and net.precision == "f32"
    kernels = [convjit.compile(CHAIN, layer=n) for n in NAMES]
    assert net.macs == sum(k.macs for k in kernels)
    x = rng.standard_normal((3, 29, 27, 3)).astype(np.float32)
    want = one_by_one(x, threads=threads)
    np.testing.assert_array_equal(net(x), want)
    # One image as [H, W, C], and into `out`.
    np.testing.assert_array_equal(net(x[1]), want[1])
    out = np.full((3, 13, 12, 8), np.nan, dtype=np.float32)
    assert net(x, out=out) is out
    np.testing.assert_array_equal(out, want)
    assert "4 layers" in repr(net)


def test_sources_of_every_kind_and_weights_per_layer(rng, tmp_path):
    w = random_weights(rng, MBV2_SHAPES)
    layer = convjit.Layer("inverted_residual", MBV2, w, (14, 14, 24), (14, 14, 24))
    path = tmp_path / "mbv2.conv"
    path.write_text(MBV2)
    npz = tmp_path / "w.npz"
    np.savez(npz, **w)
    x = rng.standard_normal((2, 14, 14, 24)).astype(np.float32)
    k = convjit.compile(MBV2, weights=w)
    want = k(k(k(x)))
    # A Layer (its weights), a path with weights by name, text with an .npz.
    net = convjit.compile_network(
        [layer, path, MBV2],
        weights={"inverted_residual": str(npz)},
    )
    np.testing.assert_array_equal(net(x), want)
    net = convjit.compile_network([layer, layer, layer])
    np.testing.assert_array_equal(net(x), want)


def test_errors():
    with pytest.raises(
        convjit.DataError,
        match="layer 'stem' reads 29x27x3 but layer 'inverted_residual' before it writes 14x14x24",
    ):
        convjit.compile_network([MBV2, CHAIN])
    with pytest.raises(convjit.DataError, match="no layer named 'nope'"):
        convjit.compile_network(CHAIN, weights={"nope": {}})
    with pytest.raises(convjit.LayerError):
        convjit.compile_network([])
    with pytest.raises(convjit.LayerError, match="<string>:12:23: error"):
        convjit.compile_network(CHAIN + "layer z { input 2x2x1 x }")
    with pytest.raises(TypeError):
        convjit.compile_network(42)
    with pytest.raises(ValueError):
        convjit.compile_network(CHAIN, threads=0)
    net = convjit.compile_network(CHAIN)
    with pytest.raises(convjit.DataError, match="29, 27, 3"):
        net(np.zeros((1, 15, 14, 3), np.float32))


def test_hostile_inputs(rng, tmp_path):
    # A truncated weight archive for one layer, and one that is not a zip.
    npz = tmp_path / "w.npz"
    np.savez(npz, **{"c.weight": np.zeros((3, 3, 3, 24), np.float32)})
    cut = tmp_path / "cut.npz"
    cut.write_bytes(npz.read_bytes()[:40])
    for bad in (cut, tmp_path / "missing.npz"):
        with pytest.raises(convjit.DataError):
            convjit.compile_network(CHAIN, weights={"stem": str(bad)})
    with pytest.raises(convjit.DataError):
        convjit.compile_network(CHAIN, weights={"stem": {"c.weight": np.zeros((2, 2))}})
    # Weights too large for any machine: refused, not allocated.
    huge = "layer h { input 65536x65536x64\n p: pointwise 65536 }"
    with pytest.raises(convjit.Error):
        convjit.compile_network(huge)
    # NaN and infinities go through every layer as they do one by one.
    net = convjit.compile_network(CHAIN)
    x = rng.standard_normal((2, 29, 27, 3)).astype(np.float32)
    x[0, 3, 4, 1], x[1, 10, 2, 0], x[1, 0, 0, 2] = np.nan, np.inf, -np.inf
    np.testing.assert_array_equal(net(x), one_by_one(x))
    # An empty batch, or a read-only output: refused.
    with pytest.raises(convjit.DataError):
        net(np.zeros((0, 29, 27, 3), np.float32))
    ro = np.zeros((1, 13, 12, 8), np.float32)
    ro.flags.writeable = False
    with pytest.raises(convjit.DataError):
        net(x[:1], out=ro)


def test_out_sharing_memory_with_x_is_refused(rng):
    # Two frombuffer()s of one bytearray: the same bytes, different bases.
    net = convjit.compile_network("layer a { input 4x4x8\n p: pointwise 8 }\nlayer b { input 4x4x8\n q: pointwise 8 }")
    x = rng.standard_normal((1, 4, 4, 8)).astype(np.float32)
    ba = bytearray(x.tobytes())
    a = np.frombuffer(memoryview(ba), np.float32).reshape(x.shape)
    o = np.frombuffer(memoryview(ba), np.float32).reshape(x.shape)
    with pytest.raises(convjit.DataError, match="out: memory shared with x"):
        net(a, out=o)
