"""from_keras: Keras convolution layers as one convjit layer, read through
``get_config()`` / ``get_weights()`` and the class name only, so that
neither TensorFlow nor Keras is a dependency of convjit (any object with
those methods and a Keras class name works: tests use small fakes).

Keras' layouts are the contract's: Conv2D ``kernel`` ``[Kh, Kw, Ci/G, Co]``,
DepthwiseConv2D ``depthwise_kernel`` ``[Kh, Kw, C, M]`` (output channel
``c*M + m``), SeparableConv2D ``depthwise_kernel`` then ``pointwise_kernel``
``[1, 1, C*M, Co]``, biases ``[Co]``: arrays are passed on unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["from_keras"]

_CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


def _is_int(v: Any) -> bool:
    """A Python or NumPy integer (not a bool, not a float, even an integral one)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _config_int(cfg: Dict[str, Any], key: str, default: Optional[int], where: str) -> int:
    """``cfg[key]``, an int >= 1 (``default`` where the key is absent; ``None``: required)."""
    from . import LayerError

    if key not in cfg:
        if default is None:
            raise LayerError(f"{where}: get_config() has no '{key}'")
        return default
    v = cfg[key]
    if not _is_int(v) or v < 1:
        raise LayerError(f"{where}: {key} must be an int >= 1, got {v!r}")
    return int(v)


def _config_pair(cfg: Dict[str, Any], key: str, default: Optional[int], where: str) -> Tuple[int, int]:
    """``cfg[key]``: an int >= 1 for both sides, or 2 of them (tuple, list or
    1-D array); ``default`` for both where the key is absent."""
    from . import LayerError

    if key not in cfg:
        if default is None:
            raise LayerError(f"{where}: get_config() has no '{key}'")
        return default, default
    v = cfg[key]
    if _is_int(v) and v >= 1:
        return int(v), int(v)
    if isinstance(v, np.ndarray) and v.ndim == 1:
        items: Any = list(v)
    elif isinstance(v, (tuple, list)):
        items = v
    else:
        items = None
    if items is not None and len(items) == 2 and all(_is_int(d) and d >= 1 for d in items):
        return int(items[0]), int(items[1])
    raise LayerError(f"{where}: {key} must be an int or 2 ints, each >= 1, got {v!r}")


def _config_bool(cfg: Dict[str, Any], key: str, default: bool, where: str) -> bool:
    from . import LayerError

    v = cfg.get(key, default)
    if not isinstance(v, (bool, np.bool_)):
        raise LayerError(f"{where}: {key} must be True or False, got {v!r}")
    return bool(v)


def _name(raw: Any, used: set) -> str:
    """A .conv identifier from a Keras name (``block_1/dw:0`` -> ``block_1_dw_0``), unique."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", str(raw)) or "stage"
    if not (s[0].isalpha() or s[0] == "_"):
        s = "s_" + s
    base, i = s, 2
    while s in used:
        s, i = f"{base}_{i}", i + 1
    used.add(s)
    return s


def _activation(a: Any, where: str) -> Optional[str]:
    """'linear'/None -> None; 'relu', 'relu6' as they are; anything else refused."""
    if isinstance(a, dict):  # a serialised activation: {'class_name': ..., 'config': ...}
        inner = a.get("config")
        a = inner.get("name", a.get("class_name")) if isinstance(inner, dict) else a.get("class_name")
    if a is None or a == "linear":
        return None
    if a in ("relu", "relu6"):
        return a
    from . import LayerError

    raise LayerError(f"{where}: activation '{a}' has no .conv equivalent (relu, relu6 or none)")


def _input_shape(obj: Any) -> Optional[Tuple[int, int, int]]:
    """(H, W, C) of what ``obj`` (a layer or a Sequential) reads, where Keras knows it."""

    def hwc(s: Any) -> Optional[Tuple[int, int, int]]:
        if s is None:
            return None
        s = tuple(s)
        if len(s) == 4:
            s = s[1:]
        if len(s) == 3 and all(_is_int(d) for d in s):
            return (int(s[0]), int(s[1]), int(s[2]))
        return None

    tries = [
        lambda: obj.get_build_config()["input_shape"],  # Keras 3
        lambda: obj.input_shape,  # Keras 2
        lambda: obj.input.shape,
        lambda: obj.get_config().get("batch_input_shape"),  # Keras 2, first layer
        lambda: obj.get_config().get("batch_shape"),  # Keras 3 InputLayer
        lambda: obj.get_config()["layers"][0]["config"]["batch_shape"],  # Keras 3 Sequential
        lambda: obj.get_config()["layers"][0]["config"]["batch_input_shape"],
    ]
    for t in tries:
        try:
            s = hwc(t())
        except Exception:
            continue
        if s is not None:
            return s
    return None


def _layers(obj: Any) -> List[Any]:
    if isinstance(obj, (list, tuple)):
        out: List[Any] = []
        for o in obj:
            out.extend(_layers(o))
        return out
    if type(obj).__name__ in ("Sequential", "Functional", "Model") or (
        hasattr(obj, "layers") and type(obj).__name__ not in _CONVS
    ):
        return list(obj.layers)
    return [obj]


def from_keras(
    layer_or_layers: Any,
    *,
    input_shape: Optional[Sequence[int]] = None,
    name: Optional[str] = None,
):
    """A Keras ``Conv2D``, ``DepthwiseConv2D`` or ``SeparableConv2D`` (with
    ``depth_multiplier``), a list of them, or a ``Sequential`` of them, as
    one :class:`convjit.Layer` (one stage per Keras layer), ready for
    :func:`convjit.compile`.

    Read through ``type(obj).__name__``, ``get_config()`` and
    ``get_weights()`` only: TensorFlow is not needed. ``ReLU`` layers
    (``max_value`` None or 6) and ``Activation('relu' | 'relu6')`` fold into
    the stage before them; ``InputLayer`` only gives the input shape;
    anything else, ``channels_first``, ``padding='causal'`` or another
    activation raises :class:`convjit.LayerError`.

    Args:
        layer_or_layers: the Keras layer(s) or model.
        input_shape: ``(H, W, C)`` of the input (needed where Keras does
            not know it: a layer never built or called).
        name: the layer's name (default: the model's or first layer's).
    """
    from . import Layer, LayerError

    layers = _layers(layer_or_layers)
    shape = _hwc_arg(input_shape) if input_shape is not None else None
    if shape is None:
        for candidate in [layer_or_layers] + layers:
            shape = _input_shape(candidate)
            if shape is not None:
                break
    if shape is None or len(shape) != 3:
        raise ValueError("from_keras: the input shape is unknown: pass input_shape=(H, W, C)")

    used: set = set()
    lines: List[str] = []
    stages: List[List[str]] = []  # each stage's options, for activations folded later
    weights: Dict[str, np.ndarray] = {}
    for obj in layers:
        kind = type(obj).__name__
        cfg = obj.get_config()
        if not isinstance(cfg, dict):
            raise LayerError(
                f"Keras layer ({kind}): get_config() returned {type(cfg).__name__}, expected a dict"
            )
        where = f"Keras layer '{cfg.get('name', kind)}' ({kind})"
        if kind == "InputLayer":
            continue
        if kind in ("ReLU", "Activation"):
            if kind == "ReLU":
                mv = cfg.get("max_value")
                if cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
                    raise LayerError(f"{where}: only a plain ReLU (or ReLU(6)) has a .conv equivalent")
                if mv is not None and (
                    isinstance(mv, (bool, np.bool_)) or not isinstance(mv, (int, float, np.number))
                ):
                    raise LayerError(f"{where}: max_value must be None or a number, got {mv!r}")
                act = "relu" if mv is None else "relu6" if float(mv) == 6.0 else None
                if act is None:
                    raise LayerError(f"{where}: max_value {mv}: only None or 6 (relu6)")
            else:
                act = _activation(cfg.get("activation"), where)
            if act is None:
                continue
            if not stages or any(o in ("relu", "relu6") for o in stages[-1]):
                raise LayerError(f"{where}: an activation follows a convolution that has none")
            stages[-1].append(act)
            continue
        if kind not in _CONVS:
            raise LayerError(
                f"{where}: not a convolution convjit takes (Conv2D, DepthwiseConv2D, SeparableConv2D)"
            )
        if cfg.get("data_format") not in (None, "channels_last"):
            raise LayerError(f"{where}: data_format '{cfg['data_format']}': only channels_last")
        kh, kw = _config_pair(cfg, "kernel_size", None, where)
        sh, sw = _config_pair(cfg, "strides", 1, where)
        dh, dw = _config_pair(cfg, "dilation_rate", 1, where)
        padding = cfg.get("padding", "valid")
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise LayerError(f"{where}: padding '{padding}': only 'valid' or 'same'")
        padding = padding.lower()
        use_bias = _config_bool(cfg, "use_bias", True, where)
        arrays = _arrays(obj, where)
        s = _name(cfg.get("name", kind.lower()), used)
        opts: List[str] = []
        if (sh, sw) != (1, 1):
            opts.append(f"stride {sh}x{sw}")
        if (dh, dw) != (1, 1):
            opts.append(f"dilation {dh}x{dw}")
        opts.append(f"pad {padding}")
        want = 2 if kind != "SeparableConv2D" else 3
        want -= 0 if use_bias else 1
        if len(arrays) != want:
            raise LayerError(f"{where}: get_weights() gave {len(arrays)} arrays, expected {want}")
        if kind == "Conv2D":
            co = _config_int(cfg, "filters", None, where)
            op = f"conv {kh}x{kw} -> {co}"
            groups = _config_int(cfg, "groups", 1, where)
            if groups != 1:
                opts.append(f"groups {groups}")
            weights[f"{s}.weight"] = arrays[0]
        elif kind == "DepthwiseConv2D":
            m = _config_int(cfg, "depth_multiplier", 1, where)
            op = f"depthwise {kh}x{kw}"
            if m != 1:
                opts.append(f"multiplier {m}")
            weights[f"{s}.weight"] = arrays[0]
        else:
            co = _config_int(cfg, "filters", None, where)
            m = _config_int(cfg, "depth_multiplier", 1, where)
            op = f"conv {kh}x{kw} -> {co}"
            opts.append("separable depthwise")
            if m != 1:
                opts.append(f"multiplier {m}")
            weights[f"{s}.depthwise.weight"] = arrays[0]
            pw = arrays[1]
            weights[f"{s}.pointwise.weight"] = pw.reshape(pw.shape[-2:]) if pw.ndim == 4 else pw
        if use_bias:
            opts.append("bias")
            weights[f"{s}.bias"] = arrays[-1]
        act = _activation(cfg.get("activation"), where)
        if act:
            opts.append(act)
        lines.append(f"  {s}: {op}")
        stages.append(opts)
    if not stages:
        raise LayerError("from_keras: no convolution among the layers given")
    if name is None:
        top = layer_or_layers
        raw = top.get_config().get("name") if hasattr(top, "get_config") else None
        name = raw or "keras"
    lname = _name(name, set())
    body = "\n".join(f"{line}, {', '.join(o)}" for line, o in zip(lines, stages))
    text = f"layer {lname} {{\n  input {shape[0]}x{shape[1]}x{shape[2]}\n{body}\n}}\n"
    return Layer(lname, text, weights, shape, _out_shape(text), None, None)


def _hwc_arg(v: Any) -> Tuple[int, int, int]:
    """``from_keras``' ``input_shape``: 3 ints >= 1 (a tuple, list or 1-D array)."""
    items = list(v) if isinstance(v, (tuple, list, np.ndarray)) else None
    if items is None or not all(_is_int(d) for d in items):
        raise TypeError(f"input_shape: expected (H, W, C), 3 ints, found {v!r}")
    if len(items) != 3 or min(items) < 1:
        raise ValueError(f"input_shape: expected (H, W, C) of sizes >= 1, found {v!r}")
    return int(items[0]), int(items[1]), int(items[2])


def _arrays(obj: Any, where: str) -> List[np.ndarray]:
    """``obj.get_weights()`` as arrays of real numbers, not converted:
    ``compile`` checks each shape against the layer before it copies
    anything to float32 (an array may be a view of more than memory holds)."""
    from . import LayerError

    got = obj.get_weights()
    if not isinstance(got, (list, tuple)):
        raise LayerError(f"{where}: get_weights() returned {type(got).__name__}, expected a list of arrays")
    arrays = []
    for i, a in enumerate(got):
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise LayerError(f"{where}: get_weights()[{i}] has dtype {a.dtype}, expected real numbers")
        arrays.append(a)
    return arrays


def _out_shape(text: str) -> Tuple[int, int, int]:
    from . import _convjit

    # The library's shape inference (and checks: a bad combination is a
    # LayerError naming the line of the generated text).
    return tuple(_convjit.output_shape(text))  # type: ignore[return-value]
