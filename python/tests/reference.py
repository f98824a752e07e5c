"""NumPy references for TensorFlow/Keras semantics (NHWC, HWIO, TF 'same'
padding), for checking from_keras independently of convjit."""

import math

import numpy as np


def _pads(size, k, s, d, padding):
    if padding == "same":
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        return out, total // 2, total - total // 2
    return (size - (k - 1) * d - 1) // s + 1, 0, 0


def _taps(x, kh, kw, stride, dilation, padding):
    n, h, w, c = x.shape
    oh, t, b = _pads(h, kh, stride[0], dilation[0], padding)
    ow, l, r = _pads(w, kw, stride[1], dilation[1], padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), (t, b), (l, r), (0, 0)))
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilation[0], j * dilation[1]
            yield i, j, xp[:, y0 : y0 + (oh - 1) * stride[0] + 1 : stride[0], x0 : x0 + (ow - 1) * stride[1] + 1 : stride[1], :]


def conv2d(x, w, stride=(1, 1), dilation=(1, 1), padding="valid", groups=1):
    kh, kw, cig, co = w.shape
    cog = co // groups
    out = None
    for i, j, p in _taps(x, kh, kw, stride, dilation, padding):
        parts = [p[..., g * cig : (g + 1) * cig] @ w[i, j, :, g * cog : (g + 1) * cog] for g in range(groups)]
        t = np.concatenate(parts, axis=-1)
        out = t if out is None else out + t
    return out


def depthwise(x, w, stride=(1, 1), dilation=(1, 1), padding="valid"):
    kh, kw, c, m = w.shape
    out = None
    for i, j, p in _taps(x, kh, kw, stride, dilation, padding):
        t = (p[..., :, None] * w[i, j]).reshape(*p.shape[:3], c * m)
        out = t if out is None else out + t
    return out


def activation(y, act):
    if act == "relu":
        return np.maximum(y, 0)
    if act == "relu6":
        return np.clip(y, 0, 6)
    return y
