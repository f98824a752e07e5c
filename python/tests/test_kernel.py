"""convjit.compile, Kernel, interpret: sources, weights, inputs and
outputs of every kind, errors, threads, and agreement with the CLI."""

import os
import pathlib
import threading

import numpy as np
import pytest

import convjit
from conftest import MBV2, MBV2_SHAPES, TEXTBOOK, TEXTBOOK_SHAPES, random_weights


@pytest.fixture
def textbook(rng):
    w = random_weights(rng, TEXTBOOK_SHAPES)
    return convjit.compile(TEXTBOOK, weights=w), w


def test_compile_and_properties(textbook):
    k, _ = textbook
    assert k.input_shape == (12, 12, 3)
    assert k.output_shape == (8, 8, 256)
    assert k.macs == 4_800 + 49_152
    assert k.precision == "f32"
    assert k.backend in ("avx512", "avx2", "cranelift")
    # Every core by default (the plan may still use fewer).
    assert k.threads >= 1
    assert convjit.compile(TEXTBOOK, threads=1).threads == 1
    assert k.name == "textbook"
    assert "textbook" in repr(k)


def test_call_matches_the_interpreter(textbook, rng):
    k, w = textbook
    x = rng.standard_normal((3, 12, 12, 3)).astype(np.float32)
    y = k(x)
    assert y.shape == (3, 8, 8, 256) and y.dtype == np.float32
    r = convjit.interpret(TEXTBOOK, x, weights=w)
    np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-5)


def test_one_image_as_hwc(textbook, rng):
    k, _ = textbook
    x = rng.standard_normal((12, 12, 3)).astype(np.float32)
    y = k(x)
    assert y.shape == (8, 8, 256)
    np.testing.assert_array_equal(y, k(x[None])[0])


def test_out_is_filled_and_returned(textbook, rng):
    k, _ = textbook
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    out = np.full((2, 8, 8, 256), np.nan, dtype=np.float32)
    assert k(x, out=out) is out
    np.testing.assert_array_equal(out, k(x))


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(np.float64),
        lambda x: np.asfortranarray(x),
        lambda x: x.astype(">f4"),
        lambda x: x.tolist(),
    ],
    ids=["float64", "fortran", "big-endian", "list"],
)
def test_other_inputs_are_converted_by_the_rule(textbook, rng, convert):
    k, _ = textbook
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(k(convert(x)), k(x))
    # float16 values are all float32 values: the same output.
    h = x.astype(np.float16)
    np.testing.assert_array_equal(k(h), k(h.astype(np.float32)))


def test_integer_and_bool_inputs_are_converted(textbook):
    k, _ = textbook
    x = np.arange(2 * 12 * 12 * 3).reshape(2, 12, 12, 3) % 5
    np.testing.assert_array_equal(k(x), k(x.astype(np.float32)))
    np.testing.assert_array_equal(k(x > 2), k((x > 2).astype(np.float32)))


def test_non_contiguous_views(textbook, rng):
    k, _ = textbook
    big = rng.standard_normal((4, 24, 24, 6)).astype(np.float32)
    for view in (big[::2, ::2, ::2, ::2], big[:, :12, :12, :3], big[1:3, 5:17, 3:15, 2:5]):
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(k(view), k(np.ascontiguousarray(view)))
    # Channels-first data transposed to NHWC is a strided view too.
    nchw = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    nhwc = nchw.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(k(nhwc), k(nhwc.copy()))


def test_wrong_dtypes_raise_type_error(textbook):
    k, _ = textbook
    with pytest.raises(TypeError, match="complex"):
        k(np.zeros((1, 12, 12, 3), dtype=np.complex64))
    with pytest.raises(TypeError, match="dtype <U1|found dtype"):
        k(np.full((1, 12, 12, 3), "a"))
    with pytest.raises(TypeError, match="out: expected dtype float32, found float64"):
        k(np.zeros((1, 12, 12, 3), np.float32), out=np.zeros((1, 8, 8, 256)))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        k(np.zeros((1, 12, 12, 3), np.float32), out=[0.0])


@pytest.mark.parametrize(
    "shape",
    [(1, 12, 12, 4), (12, 12), (0, 12, 12, 3), (1, 1, 12, 12, 3), (2, 11, 12, 3), ()],
)
def test_wrong_shapes_raise_data_error(textbook, shape):
    k, _ = textbook
    with pytest.raises(convjit.DataError) as e:
        k(np.zeros(shape, np.float32))
    assert str(e.value) == (
        "x: expected float32 [N, 12, 12, 3] (NHWC, N >= 1) or [12, 12, 3] "
        f"for layer 'textbook', found {list(shape)}"
    )


def test_bad_out_raises_data_error(textbook):
    k, _ = textbook
    x = np.zeros((2, 12, 12, 3), np.float32)
    with pytest.raises(convjit.DataError, match=r"out: expected float32 \[2, 8, 8, 256\], found \[1, 8, 8, 256\]"):
        k(x, out=np.zeros((1, 8, 8, 256), np.float32))
    with pytest.raises(convjit.DataError, match="out: not C-contiguous"):
        k(x, out=np.zeros((2, 8, 8, 512), np.float32)[..., ::2])
    ro = np.zeros((2, 8, 8, 256), np.float32)
    ro.flags.writeable = False
    with pytest.raises(convjit.DataError, match="out: cannot be written .*read-only"):
        k(x, out=ro)


def test_unaligned_arrays(textbook, rng):
    k, _ = textbook
    x = rng.standard_normal((1, 12, 12, 3)).astype(np.float32)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    np.testing.assert_array_equal(k(unaligned), k(x))  # converted by the rule
    with pytest.raises(convjit.DataError, match="x: not aligned to 4 bytes"):
        k._k.run(unaligned, None)  # the extension itself refuses it
    w = random_weights(rng, TEXTBOOK_SHAPES)
    bias = np.zeros(256 * 4 + 1, np.uint8)[1:].view(np.float32)
    bias[...] = w["sep.bias"]
    assert not bias.flags.aligned
    np.testing.assert_array_equal(
        convjit.compile(TEXTBOOK, weights={**w, "sep.bias": bias})(x),
        convjit.compile(TEXTBOOK, weights=w)(x),
    )
    raw = np.zeros(8 * 8 * 256 * 4 + 1, np.uint8)
    out = raw[1:].view(np.float32).reshape(1, 8, 8, 256)
    with pytest.raises(convjit.DataError, match="out: not aligned to 4 bytes"):
        k(x, out=out)


def test_out_sharing_memory_with_x_is_refused(rng):
    k = convjit.compile("layer l { input 4x4x8\n d: depthwise 3x3, pad same }")
    buf = rng.standard_normal((1, 4, 4, 8)).astype(np.float32)
    with pytest.raises(convjit.DataError, match="out: memory shared with x"):
        k(buf, out=buf)
    with pytest.raises(convjit.DataError, match="out: memory shared with x"):
        k(buf, out=buf.reshape(1, 4, 4, 8)[:])


def _aliases(tmp_path, x, shift=0):
    """Pairs (x, out) over the same bytes whose NumPy base objects differ,
    out ``shift`` floats after x: NumPy's borrow flags cannot see them."""
    import ctypes

    n, nbytes = x.size, x.nbytes
    ba = bytearray(nbytes + 4 * shift)
    two_views = (
        np.frombuffer(memoryview(ba), np.float32, n).reshape(x.shape),
        np.frombuffer(memoryview(ba), np.float32, n, offset=4 * shift).reshape(x.shape),
    )
    buf = (ctypes.c_float * (n + shift))()
    c_views = (
        np.ctypeslib.as_array(buf)[:n].reshape(x.shape),
        np.ctypeslib.as_array(buf)[shift:].reshape(x.shape),
    )
    f = tmp_path / f"alias{shift}.bin"
    f.write_bytes(bytes(nbytes + 4 * shift))
    maps = (
        np.memmap(f, np.float32, "r+", shape=x.shape),
        np.memmap(f, np.float32, "r+", offset=4 * shift, shape=x.shape),
    )
    for a, o in (two_views, c_views, maps):
        a[...] = x
        yield a, o


@pytest.mark.parametrize("shift", [0, 5])
def test_out_sharing_memory_by_address_is_refused(tmp_path, rng, shift):
    # Two frombuffer()s of one bytearray, two ctypes views, two memmaps of
    # one file: the same memory, or overlapping, under different bases.
    src = "layer l { input 4x4x8\n d: depthwise 3x3, pad same\n p: pointwise 8 }"
    k = convjit.compile(src)
    x = rng.standard_normal((2, 4, 4, 8)).astype(np.float32)
    for a, o in _aliases(tmp_path, x, shift):
        with pytest.raises(convjit.DataError, match="out: memory shared with x"):
            k(a, out=o)
        np.testing.assert_array_equal(a, x)  # nothing written
    # Adjacent, not overlapping: accepted.
    buf = np.zeros(2 * x.size, np.float32)
    a, o = np.frombuffer(memoryview(buf), np.float32, x.size), np.frombuffer(
        memoryview(buf), np.float32, x.size, offset=x.nbytes
    )
    a[...] = x.ravel()
    np.testing.assert_array_equal(k(a.reshape(x.shape), out=o.reshape(x.shape)), k(x))


def test_wrong_input_shape_is_refused_before_conversion():
    # A view of more values than memory holds: refused by shape, not
    # copied to float32 first (which raised MemoryError).
    k = convjit.compile("layer t { input 8x8x4\n p: pointwise 4 }")
    for dtype in (np.float32, np.float64):
        x = np.broadcast_to(dtype(0), (1, 8, 8, 10**9))
        with pytest.raises(convjit.DataError, match=r"expected float32 \[N, 8, 8, 4\].*found \[1, 8, 8, 1000000000\]"):
            k(x)
    net = convjit.compile_network("layer t { input 8x8x4\n p: pointwise 4 }")
    with pytest.raises(convjit.DataError, match="the network's first"):
        net(np.broadcast_to(np.float64(0), (8, 8, 10**10)))
    # The interpreter too (it converted first).
    with pytest.raises(convjit.DataError, match=r"expected float32 \[N, 8, 8, 4\].*found \[8, 8, 10000000000\]"):
        convjit.interpret("layer t { input 8x8x4\n p: pointwise 4 }",
                          np.broadcast_to(np.float64(0), (8, 8, 10**10)))
    # And runs what fits, converted.
    y = convjit.interpret("layer t { input 8x8x4\n p: pointwise 4 }", np.ones((8, 8, 4), np.float64))
    assert y.shape == (8, 8, 4) and y.dtype == np.float32


def test_weight_shapes_are_checked_before_any_copy():
    # Zero-stride views claiming 10^12 values: copying one aborted the
    # interpreter. Each is refused by its shape (key and both shapes
    # named), or, for a key no stage reads, by name.
    src = "layer t { input 8x8x4\n d: depthwise 3x3, pad same, bias, relu\n p: pointwise 4, residual }"
    good = {"d.weight": np.ones((3, 3, 4, 1), np.float32), "d.bias": np.zeros(4, np.float32),
            "p.weight": np.ones((4, 4), np.float32)}
    huge32 = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (3, 3, 4, 10**12), (0, 0, 0, 0))
    huge64 = np.broadcast_to(np.float64(1), (4, 10**12))
    for key, huge in (("d.weight", huge32), ("p.weight", huge64)):
        with pytest.raises(convjit.DataError) as e:
            convjit.compile(src, weights={**good, key: huge})
        want = [3, 3, 4, 1] if key == "d.weight" else [4, 4]
        assert f"weights: key '{key}': expected shape {want}" in str(e.value)
        assert f"found {list(huge.shape)}" in str(e.value)
    with pytest.raises(convjit.DataError, match="key 'extra.weight': unexpected array"):
        convjit.compile(src, weights={**good, "extra.weight": huge32})
    # Views and other real dtypes of the right shape are read as float32.
    k = convjit.compile(src, weights={**good, "p.weight": np.broadcast_to(np.float64(0.5), (4, 4))})
    want = convjit.compile(src, weights={**good, "p.weight": np.full((4, 4), 0.5, np.float32)})
    x = np.ones((1, 8, 8, 4), np.float32)
    np.testing.assert_array_equal(k(x), want(x))


def test_sources_text_path_and_layer(tmp_path, rng):
    w = random_weights(rng, TEXTBOOK_SHAPES)
    x = rng.standard_normal((1, 12, 12, 3)).astype(np.float32)
    f = tmp_path / "t.conv"
    f.write_text(TEXTBOOK)
    want = convjit.compile(TEXTBOOK, weights=w)(x)
    np.testing.assert_array_equal(convjit.compile(f, weights=w)(x), want)
    np.testing.assert_array_equal(convjit.compile(str(f), weights=w)(x), want)
    layer = convjit.Layer("textbook", TEXTBOOK, w, (12, 12, 3), (8, 8, 256))
    assert layer.source == layer.conv
    np.testing.assert_array_equal(convjit.compile(layer)(x), want)
    with pytest.raises(TypeError, match="source"):
        convjit.compile(b"layer")


def test_layer_is_chosen_by_name(rng):
    two = TEXTBOOK + MBV2
    k = convjit.compile(two, layer="inverted_residual")
    assert k.name == "inverted_residual"
    with pytest.raises(convjit.LayerError, match=r"the file holds 2 layers \(textbook, inverted_residual\)"):
        convjit.compile(two)
    with pytest.raises(convjit.LayerError, match="no layer 'nope' in the file"):
        convjit.compile(two, layer="nope")


def test_weights_from_npz_equal_weights_from_dict(tmp_path, rng):
    w = random_weights(rng, MBV2_SHAPES)
    np.savez(tmp_path / "w.npz", **w)
    x = rng.standard_normal((2, 14, 14, 24)).astype(np.float32)
    a = convjit.compile(MBV2, weights=w)(x)
    np.testing.assert_array_equal(convjit.compile(MBV2, weights=tmp_path / "w.npz")(x), a)
    np.testing.assert_array_equal(convjit.compile(MBV2, weights=str(tmp_path / "w.npz"))(x), a)
    # float64 weights are converted; Keras' [1, 1, Ci, Co] pointwise arrays are taken.
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    w64["expand.weight"] = w64["expand.weight"].reshape(1, 1, 24, 144)
    np.testing.assert_array_equal(convjit.compile(MBV2, weights=w64)(x), a)
    r = convjit.interpret(MBV2, x, weights=w)
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)


def test_weight_errors_name_the_key_and_shapes(rng):
    w = random_weights(rng, TEXTBOOK_SHAPES)
    del w["sep.bias"]
    with pytest.raises(convjit.DataError) as e:
        convjit.compile(TEXTBOOK, weights=w)
    assert str(e.value).startswith("weights: key 'sep.bias': missing: stage 'sep.pointwise'")
    w = random_weights(rng, TEXTBOOK_SHAPES)
    w["sep.pointwise.weight"] = w["sep.pointwise.weight"][:, :255]
    with pytest.raises(convjit.DataError, match=r"expected shape \[3, 256\] .* found \[3, 255\]"):
        convjit.compile(TEXTBOOK, weights=w)
    w = random_weights(rng, TEXTBOOK_SHAPES)
    w["extra.bias"] = np.zeros(3, np.float32)
    with pytest.raises(convjit.DataError, match="unexpected array"):
        convjit.compile(TEXTBOOK, weights=w)
    with pytest.raises(TypeError, match="complex"):
        convjit.compile(TEXTBOOK, weights={"sep.bias": np.zeros(256, np.complex64)})
    with pytest.raises(TypeError, match="dict of arrays"):
        convjit.compile(TEXTBOOK, weights=[1, 2])


def test_option_errors():
    with pytest.raises(ValueError, match=r"'f16' is not a precision \(f32, bf16\)"):
        convjit.compile(TEXTBOOK, precision="f16")
    with pytest.raises(ValueError, match="is not a code generator"):
        convjit.compile(TEXTBOOK, backend="sse")
    with pytest.raises(ValueError, match="threads=0"):
        convjit.compile(TEXTBOOK, threads=0)
    with pytest.raises(convjit.CompileError):
        # Cranelift has no bf16 code, on any host.
        convjit.compile(TEXTBOOK, backend="cranelift", precision="bf16")


WINO = "layer w {\n  input 9x10x16\n  c: conv 3x3 -> 24, pad same, bias, relu\n}\n"


def test_winograd_is_asked_for_and_within_its_bound(rng):
    x = rng.standard_normal((2, 9, 10, 16)).astype(np.float32)
    w = {"c.weight": rng.standard_normal((3, 3, 16, 24)).astype(np.float32),
         "c.bias": rng.standard_normal(24).astype(np.float32)}
    ref = convjit.interpret(WINO, x, weights=w)
    assert not convjit.compile(WINO, weights=w).winograd
    # Too small to pay: auto (True) declines, always runs it.
    assert not convjit.compile(WINO, weights=w, winograd=True).winograd
    k = convjit.compile(WINO, weights=w, winograd="always")
    assert k.winograd and "winograd: F(2x2, 3x3)" in k.plan()
    # The bound `verify --winograd` uses: per output, sum over channels of
    # |inputs| in the 4x4 window times |taps|, here at most 16*16*9*max|x||w|.
    bound = 1e-5 * (1 + 16 * 16 * 9 * np.abs(x).max() * np.abs(w["c.weight"]).max())
    np.testing.assert_allclose(k(x), ref, rtol=0, atol=bound)
    net = convjit.compile_network(WINO, weights={"w": w}, winograd="always")
    np.testing.assert_allclose(net(x), ref, rtol=0, atol=bound)
    # A longer layer runs its 3x3 stage that way, the residual added last.
    chain = WINO.replace("relu\n}", "relu\n  z: pointwise 16, residual\n}")
    wz = dict(w, **{"z.weight": rng.standard_normal((24, 16)).astype(np.float32)})
    k = convjit.compile(chain, weights=wz, winograd="always")
    assert k.winograd and "stage c: F(2x2, 3x3)" in k.plan()
    ref = convjit.interpret(chain, x, weights=wz)
    bound = 1e-5 * (1 + 24 * np.abs(wz["z.weight"]).max() * 16 * 16 * 9 * np.abs(x).max()
                    * np.abs(w["c.weight"]).max() + 2 * np.abs(x).max())
    np.testing.assert_allclose(k(x), ref, rtol=0, atol=bound)
    # 4x4 tiles, asked for: F(4x4, 3x3), whose transforms' coefficients
    # (up to 25 and 64, over a 6x6 window) scale the bound by at most 114.
    k = convjit.compile(WINO, weights=w, winograd="always", winograd_tile=4)
    assert k.winograd and "winograd: F(4x4, 3x3)" in k.plan()
    ref = convjit.interpret(WINO, x, weights=w)
    bound4 = 1e-5 * (1 + 114 * 16 * 36 * 9 * np.abs(x).max() * np.abs(w["c.weight"]).max())
    np.testing.assert_allclose(k(x), ref, rtol=0, atol=bound4)
    net = convjit.compile_network(WINO, weights={"w": w}, winograd="always", winograd_tile=4)
    np.testing.assert_allclose(net(x), ref, rtol=0, atol=bound4)
    # A 5x5 conv: F(2x2, 5x5), its one form, whatever tile is asked.
    five = WINO.replace("conv 3x3", "conv 5x5")
    w5 = dict(w, **{"c.weight": rng.standard_normal((5, 5, 16, 24)).astype(np.float32)})
    k = convjit.compile(five, weights=w5, winograd="always")
    assert k.winograd and "winograd: F(2x2, 5x5)" in k.plan()
    ref5 = convjit.interpret(five, x, weights=w5)
    bound5 = 1e-5 * (1 + 114 * 16 * 36 * 25 * np.abs(x).max() * np.abs(w5["c.weight"]).max())
    np.testing.assert_allclose(k(x), ref5, rtol=0, atol=bound5)
    k4 = convjit.compile(five, weights=w5, winograd="always", winograd_tile=4)
    assert k4.winograd and "winograd: F(2x2, 5x5)" in k4.plan()
    for bad in (3, 0, -4, 1 << 70):
        with pytest.raises(ValueError, match="winograd_tile"):
            convjit.compile(WINO, winograd="always", winograd_tile=bad)
    for bad in ("4", 4.0, True):
        with pytest.raises(TypeError, match="winograd_tile"):
            convjit.compile(WINO, winograd="always", winograd_tile=bad)
    with pytest.raises(ValueError, match="needs winograd"):
        convjit.compile(WINO, winograd_tile=2)
    with pytest.raises(ValueError, match="winograd='often'"):
        convjit.compile(WINO, winograd="often")
    with pytest.raises(TypeError, match="winograd"):
        convjit.compile(WINO, winograd=1)
    for bad in (None, 1.5, ["auto"]):
        with pytest.raises(TypeError, match="winograd"):
            convjit.compile(WINO, winograd=bad)
    for bad in ("", "AUTO", "off\x00"):
        with pytest.raises(ValueError, match="winograd"):
            convjit.compile_network(WINO, winograd=bad)


def test_exception_hierarchy():
    for e in (convjit.LayerError, convjit.DataError, convjit.CompileError):
        assert issubclass(e, convjit.Error)
    assert issubclass(convjit.Error, Exception)


def test_every_backend_and_threads_agree(rng):
    x = rng.standard_normal((2, 14, 14, 24)).astype(np.float32)
    w = random_weights(rng, MBV2_SHAPES)
    ref = convjit.interpret(MBV2, x, weights=w)
    for backend in ("auto", "avx512", "avx2", "cranelift"):
        for threads in (None, 2):
            try:
                k = convjit.compile(MBV2, weights=w, backend=backend, threads=threads)
            except convjit.CompileError as e:
                assert "this CPU" in str(e) or "not" in str(e)
                continue
            np.testing.assert_allclose(k(x), ref, rtol=1e-4, atol=1e-5, err_msg=f"{backend} {threads}")


def test_bf16_or_compile_error(rng):
    w = random_weights(rng, MBV2_SHAPES)
    x = rng.standard_normal((1, 14, 14, 24)).astype(np.float32)
    try:
        k = convjit.compile(MBV2, weights=w, precision="bf16")
    except convjit.CompileError as e:
        assert "bf16" in str(e)
        return
    assert k.precision == "bf16"
    ref = convjit.interpret(MBV2, x, weights=w, precision="bf16")
    np.testing.assert_allclose(k(x), ref, rtol=2e-2, atol=2e-2)


def test_eight_python_threads_share_one_kernel(rng):
    w = random_weights(rng, MBV2_SHAPES)
    for threads in (1, 2):
        k = convjit.compile(MBV2, weights=w, threads=threads)
        xs = [rng.standard_normal((2, 14, 14, 24)).astype(np.float32) for _ in range(8)]
        want = [k(x) for x in xs]
        got = [None] * 8
        start = threading.Barrier(8)

        def work(i):
            start.wait()
            for _ in range(20):
                y = k(xs[i])
                assert np.array_equal(y, want[i])
            got[i] = y

        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for g, x, y in zip(got, xs, want):
            np.testing.assert_array_equal(g, y)


def test_plan_is_the_clis(tmp_path, rng, cli):
    w = random_weights(rng, MBV2_SHAPES)
    (tmp_path / "l.conv").write_text(MBV2)
    np.savez(tmp_path / "w.npz", **w)
    k = convjit.compile(tmp_path / "l.conv", weights=w, threads=2)
    r = cli("plan", tmp_path / "l.conv", "--weights", tmp_path / "w.npz", "--threads", 2)
    assert r.returncode == 0, r.stderr
    assert k.plan() == r.stdout
    r = cli("plan", tmp_path / "l.conv", "--weights", tmp_path / "w.npz", "--threads", 2, "--json")
    import json

    assert k.plan(json=True) == json.loads(r.stdout)
    assert k.plan(json=True)["macs"] == k.macs


def test_run_agrees_with_the_cli(tmp_path, rng, cli):
    w = random_weights(rng, TEXTBOOK_SHAPES)
    x = rng.standard_normal((3, 12, 12, 3)).astype(np.float32)
    (tmp_path / "t.conv").write_text(TEXTBOOK)
    np.savez(tmp_path / "w.npz", **w)
    np.save(tmp_path / "x.npy", x)
    for engine, ours in (("jit", convjit.compile(TEXTBOOK, weights=w)(x)), ("interp", convjit.interpret(TEXTBOOK, x, weights=w))):
        out = tmp_path / f"{engine}.npy"
        r = cli("run", tmp_path / "t.conv", "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy", "-o", out, "--engine", engine)
        assert r.returncode == 0, r.stderr
        np.testing.assert_array_equal(np.load(out), ours)
    # Without weights, both use the seeded random weights of seed 0.
    out = tmp_path / "seeded.npy"
    r = cli("run", tmp_path / "t.conv", "--input", tmp_path / "x.npy", "-o", out)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), convjit.compile(TEXTBOOK)(x))


def test_errors_are_the_clis_messages(tmp_path, rng, cli):
    bad = tmp_path / "bad.conv"
    bad.write_text("layer l {\n  input 4x4x3\n  d: depthwise 3x3, strid 2\n}\n")
    r = cli("check", bad)
    assert r.returncode == 1
    with pytest.raises(convjit.LayerError) as e:
        convjit.compile(bad)
    assert str(e.value) == r.stderr.rstrip("\n")
    with pytest.raises(convjit.LayerError) as e:
        convjit.compile(bad.read_text())
    assert str(e.value) == r.stderr.rstrip("\n").replace(str(bad), "<string>")

    (tmp_path / "t.conv").write_text(TEXTBOOK)
    w = random_weights(rng, TEXTBOOK_SHAPES)
    w["sep.bias"] = w["sep.bias"][:10]
    np.savez(tmp_path / "w.npz", **w)
    r = cli("run", tmp_path / "t.conv", "--weights", tmp_path / "w.npz")
    assert r.returncode == 1
    with pytest.raises(convjit.DataError) as e:
        convjit.compile(tmp_path / "t.conv", weights=tmp_path / "w.npz")
    assert "error: " + str(e.value) == r.stderr.rstrip("\n")
    with pytest.raises(convjit.DataError) as e:
        convjit.compile(tmp_path / "t.conv", weights=w)
    assert "error: " + str(e.value) == r.stderr.rstrip("\n").replace(str(tmp_path / "w.npz"), "weights")

    with pytest.raises(convjit.DataError) as e:
        convjit.compile(tmp_path / "missing.conv")
    r = cli("check", tmp_path / "missing.conv")
    assert "error: " + str(e.value) == r.stderr.rstrip("\n")


def test_help_documents_compile():
    doc = convjit.compile.__doc__
    for word in ("source", "weights", "precision", "threads", "backend", "LayerError", "DataError", "CompileError"):
        assert word in doc
    assert "without a copy" in convjit.Kernel.__call__.__doc__


def test_package_is_typed():
    root = pathlib.Path(convjit.__file__).parent
    assert (root / "py.typed").is_file()
    assert (root / "_convjit.pyi").is_file()


def test_hostile_inputs(tmp_path, rng):
    """Truncated and foreign weight files, NaN and infinities, a layer whose
    weights would not fit in memory, and sources that are not layer text:
    each a documented exception or the IEEE answer, never a crash."""
    w = random_weights(rng, TEXTBOOK_SHAPES)
    npz = tmp_path / "w.npz"
    np.savez(npz, **w)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(convjit.DataError):
        convjit.compile(TEXTBOOK, weights=str(cut))
    notzip = tmp_path / "text.npz"
    notzip.write_text("not a zip archive")
    with pytest.raises(convjit.DataError):
        convjit.compile(TEXTBOOK, weights=str(notzip))
    # NaN and infinities propagate as in the interpreter (same positions).
    k = convjit.compile(TEXTBOOK, weights=w)
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    x[0, 3, 4, 1], x[1, 7, 7, 0], x[1, 0, 0, 2] = np.nan, np.inf, -np.inf
    got, want = k(x), convjit.interpret(TEXTBOOK, x, weights=w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)
    # Weights of 4096 x 4096 x 1000 x 1000 floats: refused before allocating.
    huge = "layer h { input 1000x1000x4096\n c: conv 1000x1000 -> 4096 }"
    with pytest.raises(convjit.Error):
        convjit.compile(huge)
    # A batch of none is refused, as documented (N >= 1).
    with pytest.raises(convjit.DataError, match="N >= 1"):
        k(np.zeros((0, 12, 12, 3), np.float32))
    with pytest.raises(convjit.LayerError):
        convjit.compile("layer {" + "x" * 100_000)
    with pytest.raises((TypeError, convjit.Error)):
        convjit.compile(b"\xff\xfe layer")


# A child that reads a FIFO in one thread (compile, .npz weights,
# import_onnx) while its main thread opens the FIFO's other end and
# writes: the main thread runs only if the reader let go of the GIL.
FIFO_CHILD = r"""
import errno, os, sys, threading, time
import convjit
kind, fifo = sys.argv[1], sys.argv[2]
SRC = "layer t { input 4x4x2\n p: pointwise 2 }"
def read():
    try:
        if kind == "conv":
            print("read", convjit.compile(fifo).name)
        elif kind == "interp":
            # float64: converted after the shape check, the source read once
            # (a second read of the FIFO found it empty).
            import numpy as np
            print("read", convjit.interpret(fifo, np.ones((4, 4, 2))).shape)
        elif kind == "npz":
            convjit.compile(SRC, weights=fifo)
        else:
            convjit.import_onnx(fifo)
    except convjit.DataError as e:
        print("read", "DataError")
t = threading.Thread(target=read)
t.start()
# Once the reader has the FIFO open, its other end is opened, written
# and closed (again if the reader opens it again, finding it empty). A
# .npz is refused once open (an archive is read by seeking): the write may
# then find the reader gone.
data = SRC.encode() if kind in ("conv", "interp") else b"not an archive"
while t.is_alive():
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        time.sleep(0.001)
        continue
    try:
        os.write(fd, data)
    except BrokenPipeError:
        pass
    os.close(fd)
    data = b""
t.join()
"""


@pytest.mark.parametrize("kind", ["conv", "interp", "npz", "onnx"])
def test_files_are_read_without_the_gil(tmp_path, kind):
    import subprocess
    import sys

    fifo = tmp_path / f"fifo.{kind}"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # Holding the GIL, the reader blocked the writer for ever: the
    # timeout only ends such a deadlock, it is not a measurement.
    r = subprocess.run([sys.executable, "-c", FIFO_CHILD, kind, str(fifo)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    want = {"conv": "read t", "interp": "read (4, 4, 2)"}.get(kind, "read DataError")
    assert r.stdout.strip() == want
