"""convjit: convolution layers compiled to machine code for this CPU, run on NumPy arrays.

A layer is written in the ``.conv`` language (see the repository's README)::

    import numpy as np, convjit
    k = convjit.compile('''
        layer textbook {
          input 12x12x3
          sep: conv 5x5 -> 256, separable depthwise
        }''', weights={"sep.depthwise.weight": dw, "sep.pointwise.weight": pw})
    y = k(x)                       # x: float32 [N, 12, 12, 3] -> y: [N, 8, 8, 256]

Layouts are NHWC for activations and TensorFlow/Keras (HWIO) for weights,
keyed ``STAGE.weight`` / ``STAGE.bias`` (a separable stage ``S``:
``S.depthwise.weight``, ``S.pointwise.weight``, ``S.bias``), as the
command line's ``.npz`` files.

Functions: :func:`compile`, :func:`compile_network` (layers run back to
back as one :class:`Network`), :func:`interpret`, :func:`import_onnx`,
:func:`from_keras`. Errors: :class:`Error` and its subclasses
:class:`LayerError`, :class:`DataError`, :class:`CompileError`, whose
messages are those the ``convjit`` command line prints after ``error:``
(a ``.conv`` mistake: the whole ``FILE:LINE:COL: error: ...`` diagnostic).
Wrong Python types raise ``TypeError``, bad option values ``ValueError``.
"""

from __future__ import annotations

import json as _json
import mmap
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _convjit
from ._convjit import CompileError, DataError, Error, LayerError
from ._keras import from_keras

__all__ = [
    "compile",
    "compile_network",
    "interpret",
    "import_onnx",
    "from_keras",
    "Kernel",
    "Network",
    "Layer",
    "Error",
    "LayerError",
    "DataError",
    "CompileError",
    "ImportNote",
]

Source = Union[str, "os.PathLike[str]", "Layer"]
WeightsArg = Union[None, Mapping[str, Any], str, "os.PathLike[str]"]


class ImportNote(UserWarning):
    """What :func:`import_onnx` could not take from a model, and why (a warning)."""


class Layer:
    """One layer: its ``.conv`` text and its weights, ready for :func:`compile`.

    Made by :func:`import_onnx` (one per chain of convolutions of a model)
    and :func:`from_keras`. ``compile(layer)`` compiles it with its weights.

    Attributes:
        name: the layer's name in the ``.conv`` text.
        conv: the ``.conv`` text (one ``layer NAME { ... }`` block); ``source`` is the same.
        weights: dict of arrays keyed as the layer's ``.npz`` would be (float32
            from :func:`import_onnx`; :func:`from_keras` keeps ``get_weights()``'
            arrays as they are, converted by :func:`compile` once their shapes fit).
        input_shape, output_shape: ``(H, W, C)`` of one image.
        onnx_input, onnx_output: the ONNX tensors the layer reads and computes
            (``None`` for a Keras layer). ONNX tensors are NCHW; convjit's are NHWC.
    """

    def __init__(
        self,
        name: str,
        conv: str,
        weights: Dict[str, np.ndarray],
        input_shape: Tuple[int, int, int],
        output_shape: Tuple[int, int, int],
        onnx_input: Optional[str] = None,
        onnx_output: Optional[str] = None,
    ) -> None:
        self.name = name
        self.conv = conv
        self.weights = weights
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self.onnx_input = onnx_input
        self.onnx_output = onnx_output

    @property
    def source(self) -> str:
        """The ``.conv`` text (the same as ``conv``)."""
        return self.conv

    def __repr__(self) -> str:
        return (
            f"<convjit.Layer {self.name!r}: {self.input_shape} -> {self.output_shape}, "
            f"{len(self.weights)} arrays>"
        )


def _source(source: Any) -> Tuple[str, str, bool, Optional[Mapping[str, Any]]]:
    """(text or path, name for diagnostics, is_path, the weights a Layer carries)."""
    if isinstance(source, Layer):
        return source.conv, f"<layer {source.name}>", False, source.weights
    if isinstance(source, os.PathLike):
        path = os.fspath(source)
        if not isinstance(path, str):
            raise TypeError("source: a bytes path is not supported; pass str or pathlib.Path")
        return path, path, True, None
    if isinstance(source, str):
        # Every layer has a '{'; a path to a .conv file has none (almost
        # never): text with one, a path without.
        if "{" in source:
            return source, "<string>", False, None
        return source, source, True, None
    raise TypeError(
        f"source: expected .conv text, a path or a convjit.Layer, found {type(source).__name__}"
    )


def _real(a: Any, what: str) -> np.ndarray:
    """``a`` as an array of real numbers, not converted: the extension
    checks its shape against the layer first, then reads it as float32
    (any layout, in logical order)."""
    arr = np.asarray(a)
    if not (arr.dtype == np.float32 and arr.dtype.isnative):
        _check_real(arr, what)
    return arr


def _check_real(arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{what}: expected real numbers (float32, or a real dtype converted to it), "
            f"found dtype {arr.dtype}"
        )


def _input(x: Any, check: Optional[Any] = None) -> np.ndarray:
    """The rule of Kernel.__call__: C-contiguous aligned native float32 as
    is, anything else copied; ``check`` (the extension's) refuses a wrong
    shape before that copy."""
    if (
        isinstance(x, np.ndarray)
        and x.dtype == np.float32
        and x.dtype.isnative
        and x.flags.c_contiguous
        and x.flags.aligned
    ):
        return x
    a = np.asarray(x)
    _check_real(a, "x")
    if check is not None:
        check(a)
    # One copy, fresh: C order, aligned, native float32.
    return np.array(a, dtype=np.float32, order="C")


def _file_bytes(a: np.ndarray) -> Optional[Tuple[Tuple[int, int], int, int]]:
    """(file identity, first byte, end) of the file bytes a C-contiguous
    ``a`` maps, where it is (a view of) a ``numpy.memmap``; else ``None``."""
    root: Any = a
    while isinstance(root, np.ndarray) and not isinstance(root.base, mmap.mmap):
        root = root.base
    if not isinstance(root, np.memmap) or root.filename is None:
        return None
    try:
        st = os.stat(root.filename)
    except OSError:
        return None
    start = root.offset + (a.__array_interface__["data"][0] - root.__array_interface__["data"][0])
    return (st.st_dev, st.st_ino), start, start + a.nbytes


def _maps_same_bytes(x: np.ndarray, out: np.ndarray) -> bool:
    """Whether ``x`` and ``out`` are memmaps of overlapping bytes of one
    file: two mappings, at different addresses, of the same memory (the
    extension compares addresses)."""
    if not (out.flags.c_contiguous and x.flags.c_contiguous):
        return False
    fx, fo = _file_bytes(x), _file_bytes(out)
    return fx is not None and fo is not None and fx[0] == fo[0] and fx[1] < fo[2] and fo[1] < fx[2]


def _weights(
    weights: WeightsArg, carried: Optional[Mapping[str, Any]]
) -> Tuple[Optional[Dict[str, np.ndarray]], Optional[str]]:
    """(dict of float32 arrays, .npz path): at most one is given."""
    if weights is None:
        weights = carried
    if weights is None:
        return None, None
    if isinstance(weights, (str, os.PathLike)):
        return None, os.fspath(weights)
    if isinstance(weights, Mapping):
        out = {}
        for k, v in weights.items():
            if not isinstance(k, str):
                raise TypeError(f"weights: keys are strings (STAGE.weight), found {k!r}")
            out[k] = _real(v, f"weights[{k!r}]")
        return out, None
    raise TypeError(
        f"weights: expected a dict of arrays or a .npz path, found {type(weights).__name__}"
    )


class _Compiled:
    """What a :class:`Kernel` and a :class:`Network` share: the call and
    the properties of the compiled code (``_k``: the extension's object)."""

    __slots__ = ("_k",)

    def __init__(self, _k: Any) -> None:
        self._k = _k

    def __call__(self, x: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Runs the layer (a :class:`Network`: every layer, back to back) on
        ``x`` and returns the output.

        Args:
            x: ``[N, H, W, C]`` images (NHWC, N >= 1), or ``[H, W, C]`` for
                one image (then the output is ``[Ho, Wo, Co]``). A
                C-contiguous, aligned, native-endian float32 ``numpy.ndarray``
                is read where it is, without a copy. Anything else is
                converted to such an array first (one copy): other strides
                or byte order, other real dtypes (bool, integers, float16,
                float64: ``astype(float32)``, so float64 is rounded), lists.
                Complex, string and object data raise ``TypeError``.
            out: where to write the output, or ``None`` for a new array.
                Must be a C-contiguous writeable float32 ``numpy.ndarray`` of
                exactly the output's shape (no conversion: a wrong dtype
                raises ``TypeError``, a wrong shape or layout, or memory
                shared with ``x``, ``DataError``; two separate mappings of
                one file or shared-memory block, other than ``np.memmap``,
                are at different addresses and cannot be told apart: do
                not pass them as ``x`` and ``out``).

        Returns:
            ``out`` if given, else a new float32 array ``[N, Ho, Wo, Co]``.

        Raises:
            DataError: ``x`` or ``out`` does not fit the layer (the message
                names the shape expected and the shape found).
        """
        x = _input(x, self._k.check_input)
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError(f"out: expected a numpy.ndarray, found {type(out).__name__}")
            if out.dtype != np.float32 or not out.dtype.isnative:
                raise TypeError(f"out: expected dtype float32, found {out.dtype}")
            if _maps_same_bytes(x, out):
                raise DataError("out: memory shared with x (memmaps of the same bytes of one file)")
        return self._k.run(x, out)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return self._k.input_shape

    @property
    def output_shape(self) -> Tuple[int, int, int]:
        return self._k.output_shape

    @property
    def macs(self) -> int:
        return self._k.macs

    @property
    def backend(self) -> str:
        return self._k.backend

    @property
    def precision(self) -> str:
        return self._k.precision

    @property
    def threads(self) -> int:
        return self._k.threads

    def _describe(self) -> str:
        return (
            f"{self.input_shape} -> {self.output_shape}, {self.backend}, {self.precision}, "
            f"{self.threads} thread(s)"
        )


class Kernel(_Compiled):
    """A layer compiled for this CPU. Made by :func:`compile`; call it on images.

    One kernel may be called from many Python threads at once (the GIL is
    released while it runs; each call has its own buffers).

    Properties:
        input_shape: ``(H, W, C)`` of one input image.
        output_shape: ``(Ho, Wo, Co)`` of one output image.
        macs: multiply-accumulates per image of the layer as written.
        backend: the code generator that wrote the code (``avx512``, ``avx2``, ``cranelift``).
        precision: ``f32`` or ``bf16``.
        threads: the threads asked for (every core by default); the plan
            gives a group fewer where more would not pay.
        name: the layer's name.
        winograd: whether it runs as Winograd's (F(4x4, 3x3), F(2x2, 3x3)
            or F(2x2, 5x5); ``compile``'s ``winograd``).
    """

    __slots__ = ()

    @property
    def winograd(self) -> bool:
        return self._k.winograd

    def plan(self, json: bool = False) -> Union[str, Dict[str, Any]]:
        """The plan: with ``json=False`` the text ``convjit plan --weights W.npz``
        prints for this layer and these weights (stages, shapes, MACs, host,
        fusion groups, bands, threads, register blocking, with the planner's
        reasons); with ``json=True`` the object ``convjit plan --json``
        prints, as a dict."""
        if json:
            return _json.loads(self._k.plan_json())
        return self._k.plan_text()

    @property
    def name(self) -> str:
        return self._k.name

    def __repr__(self) -> str:
        return f"<convjit.Kernel {self.name!r}: {self._describe()}>"


def compile(
    source: Source,
    *,
    layer: Optional[str] = None,
    weights: WeightsArg = None,
    precision: str = "f32",
    threads: Optional[int] = None,
    backend: str = "auto",
    winograd: Union[bool, str] = False,
    winograd_tile: Optional[int] = None,
) -> Kernel:
    """Compiles a layer for this CPU; returns a :class:`Kernel` to call on images.

    Args:
        source: ``.conv`` text (any string holding ``{``), a path to a
            ``.conv`` file (``str`` without ``{``, or ``pathlib.Path``), or
            a :class:`Layer` (from :func:`import_onnx` / :func:`from_keras`,
            compiled with its own weights unless ``weights`` is given).
        layer: the layer to compile when the source holds several.
        weights: a dict of arrays keyed ``STAGE.weight`` / ``STAGE.bias``
            in the contract's (Keras) layouts, converted to float32 (real
            dtypes only), or the path of an ``.npz`` archive of them; ``None``
            (and no :class:`Layer` weights): seeded random weights, those
            ``convjit run`` uses without ``--weights`` (seed 0). A missing,
            unexpected or mis-shaped array raises :class:`DataError`
            naming the key and both shapes. Where the weights show a
            stage's kernels to have rank 1, it runs as two 1-D stages (as
            the command line does; see :meth:`Kernel.plan`).
        precision: ``"f32"``, or ``"bf16"`` (weights and stage inputs rounded
            to bfloat16 where they are multiplied, f32 sums; needs a CPU
            with AVX512_BF16, else :class:`CompileError`).
        threads: threads sharing each image's work (1 to 256); ``None``:
            the library's default, every core, as the command line's (the
            plan keeps one thread where a second would not pay; ``1``: the
            calling thread only).
        backend: ``"auto"`` (the widest the CPU runs), ``"avx512"``,
            ``"avx2"`` or ``"cranelift"``; one the CPU lacks raises
            :class:`CompileError`.
        winograd: run 3x3 stride-1 convs (alone or stages of a longer
            layer) as Winograd's F(4x4, 3x3) (36 products per 4x4 outputs
            instead of 144) or, on images its tiles would fit badly,
            F(2x2, 3x3) (16 per 2x2 instead of 36), and 5x5 ones as
            F(2x2, 5x5) (36 per 2x2 instead of 100); f32 only:
            ``True`` or ``"auto"`` where it pays (16 channels a side, 2M
            multiply-accumulates or more: ``convjit plan --winograd`` says),
            ``"always"`` whenever it can.
            Its rounding differs from the direct sum's (the bound is
            ``convjit verify --winograd``'s); ``False``, the default: never.
            :attr:`Kernel.winograd` says whether it runs.
        winograd_tile: with ``winograd``, the output tile side of every
            3x3 Winograd stage, ``2`` or ``4``; ``None``: chosen per stage
            (a 5x5 conv runs F(2x2, 5x5), its one form, either way).

    Raises:
        LayerError: bad ``.conv`` text (``FILE:LINE:COL: error: ...``; text
            given as a string is named ``<string>``), or no such layer.
        DataError: weights that do not fit the layer, unreadable files.
        CompileError: the CPU cannot run the generator or precision asked for.
        ValueError: an unknown precision, backend or winograd, threads out
            of range.
    """
    text, name, is_path, carried = _source(source)
    arrays, path = _weights(weights, carried)
    return Kernel(
        _convjit.compile(
            text,
            name,
            is_path,
            layer,
            arrays,
            path,
            precision,
            threads,
            backend,
            _winograd(winograd),
            _winograd_tile(winograd_tile),
        )
    )


def _winograd(value: Union[bool, str]) -> str:
    """``compile``'s ``winograd`` as the extension spells it."""
    if value is True:
        return "auto"
    if value is False:
        return "off"
    if isinstance(value, str):
        return value
    raise TypeError(f"winograd: expected a bool or a str, found {type(value).__name__}")


def _winograd_tile(value: Optional[int]) -> Optional[int]:
    """``compile``'s ``winograd_tile``, checked: ``None``, 2 or 4."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"winograd_tile: expected 2, 4 or None, found {type(value).__name__}")
    if value not in (2, 4):
        raise ValueError(f"winograd_tile={value}: expected 2, 4 or None")
    return value


class Network(_Compiled):
    """Layers compiled together, run back to back with one call: each layer
    on the previous one's output, in one arena of buffers (the layers'
    run buffers and two tensors the intermediate outputs alternate
    between), as a network runs. Made by :func:`compile_network`; called
    like a :class:`Kernel` (same rules for ``x`` and ``out``, same
    exceptions), and like it safe to call from many threads at once.

    Properties:
        input_shape: ``(H, W, C)`` of one input image (the first layer's).
        output_shape: ``(Ho, Wo, Co)`` of one output image (the last layer's).
        macs: multiply-accumulates per image, all layers.
        layers: the layers' names, in the order they run.
        backend, precision, threads: as :class:`Kernel`'s.
    """

    __slots__ = ()

    @property
    def layers(self) -> List[str]:
        return self._k.layers

    def __repr__(self) -> str:
        return f"<convjit.Network of {len(self.layers)} layers: {self._describe()}>"


def compile_network(
    sources: Union[Source, Sequence[Source]],
    *,
    weights: Optional[Mapping[str, WeightsArg]] = None,
    precision: str = "f32",
    threads: Optional[int] = None,
    backend: str = "auto",
    winograd: Union[bool, str] = False,
    winograd_tile: Optional[int] = None,
) -> Network:
    """Compiles layers that follow each other (each reads the shape the one
    before writes) as one :class:`Network`.

    Args:
        sources: ``.conv`` text or a path (all its layers, in file order),
            a :class:`Layer`, or a list of these (their layers in order).
        weights: per layer name, that layer's weights as :func:`compile`
            takes them (a dict of arrays or an ``.npz`` path). A layer
            without an entry uses the weights its :class:`Layer` carries,
            else seeded random ones. A name no layer has raises
            :class:`DataError`.
        precision, threads, backend, winograd, winograd_tile: as for
            :func:`compile`, for every layer.

    Raises:
        LayerError, CompileError, ValueError: as :func:`compile`.
        DataError: as :func:`compile`, and for layers that do not chain (the
            message names both layers and shapes).
    """
    if isinstance(sources, (str, os.PathLike, Layer)):
        sources = [sources]
    if not isinstance(sources, Sequence):
        raise TypeError(
            f"sources: expected .conv text, a path, a Layer or a list of them, "
            f"found {type(sources).__name__}"
        )
    given = dict(weights or {})
    items = []
    for source in sources:
        text, name, is_path, carried = _source(source)
        for layer in _convjit.layer_names(text, name, is_path):
            arrays, path = _weights(given.get(layer), carried)
            items.append((text, name, is_path, layer, arrays, path))
    unknown = sorted(set(given) - {item[3] for item in items})
    if unknown:
        raise DataError(
            f"weights: no layer named {', '.join(repr(k) for k in unknown)} in the network"
        )
    if not items:
        raise LayerError("sources: a network needs at least one layer")
    return Network(
        _convjit.compile_network(
            items, precision, threads, backend, _winograd(winograd), _winograd_tile(winograd_tile)
        )
    )


def interpret(
    source: Source,
    x: Any,
    *,
    layer: Optional[str] = None,
    weights: WeightsArg = None,
    precision: str = "f32",
) -> np.ndarray:
    """Runs a layer in the reference interpreter (plain loops, f64 sums): the
    oracle every compiled kernel is checked against, as ``convjit run
    --engine interp``. Slow.

    ``source``, ``layer``, ``weights`` and ``precision`` are those of
    :func:`compile`, ``x`` that of :meth:`Kernel.__call__` (converted by
    the same rule); returns a new float32 array. Same exceptions.
    """
    text, name, is_path, carried = _source(source)
    arrays, path = _weights(weights, carried)

    # The extension checks x's shape against the layer before `_input`
    # converts it (one copy), as Kernel.__call__ does.
    return _convjit.interpret(text, name, is_path, layer, arrays, path, precision, x, _input)


def import_onnx(
    path: Union[str, "os.PathLike[str]"],
    input_shape: Optional[Tuple[int, int, int]] = None,
) -> List[Layer]:
    """The convolution chains of an ONNX model, one :class:`Layer` per chain,
    as ``convjit import`` writes them (its ``.conv`` text and weights).

    Args:
        path: a self-contained ``.onnx`` file.
        input_shape: ``(H, W, C)`` of the model's (NCHW) input where the
            model leaves it symbolic.

    Each layer computes NHWC what the model computes NCHW from
    ``layer.onnx_input`` to ``layer.onnx_output``: transpose with
    ``x.transpose(0, 2, 3, 1)`` on the way in and ``(0, 3, 1, 2)`` out.
    What could not be imported is reported as :class:`ImportNote` warnings.

    Raises:
        DataError: the file cannot be read or is not a valid model, or no
            convolution in it could be imported (message ``PATH: ...``).
    """
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)  # type: ignore[assignment]
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape: expected (H, W, C) of sizes >= 1, found {input_shape}")
    layers, notes = _convjit.import_onnx(os.fspath(path), input_shape)
    for n in notes:
        warnings.warn(n, ImportNote, stacklevel=2)
    return [Layer(*fields) for fields in layers]
