"""Weights of the image filters in examples/filters.conv, one .npz per layer keyed 'f.weight'.

    python3 examples/filters_weights.py OUTDIR [--write-conv examples/filters.conv]

The same filters, layers and weights as shared/peers/bench_filters.py --write-conv/--write-weights
(which times them in OpenCV): Gaussian 5x5 sigma 1 and 7x7 sigma 1.5, box 9x9, on 1920x1080
images with 1 channel (grey) and 3 (RGB, the same kernel on each channel: a depthwise stage);
Sobel dx and dy as one 'conv 3x3 -> 2' on a grey image; the Laplacian 3x3, which is not separable.
Kernels are float32 outer products of their float32 1-D factors, as OpenCV's sepFilter2D applies.
Needs only NumPy.
"""
import argparse
import os

import numpy as np

H, W = 1080, 1920


def gauss1d(k, sigma):
    x = np.arange(k) - (k - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    return (g / g.sum()).astype(np.float32)


def filters():
    """name -> (channels, full kernels [Kh][Kw][Co])."""
    out = {}
    for c in (1, 3):
        for k, s in ((5, 1.0), (7, 1.5)):
            g = gauss1d(k, s)
            out[f"gauss{k}x{k}_c{c}"] = (c, np.outer(g, g)[:, :, None])
        b = np.full(9, 1 / 9, np.float32)
        out[f"box9x9_c{c}"] = (c, np.outer(b, b)[:, :, None])
    sm = np.array([1, 2, 1], np.float32)
    d = np.array([-1, 0, 1], np.float32)
    kx = np.outer(sm, d)  # d/dx: smooth down the column, derivative along the row
    ky = np.outer(d, sm)
    out["sobel_dxdy_c1"] = (1, np.stack([kx, ky], axis=2))
    lap = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    out["laplace3x3_c1"] = (1, lap[:, :, None])
    return out


def conv_text(name, c, full):
    kh, kw, co = full.shape
    op = f"conv {kh}x{kw} -> {co}" if c == 1 and co > 1 else f"depthwise {kh}x{kw}"
    return f"layer {name} {{\n  input {H}x{W}x{c}\n  f: {op}, pad same\n}}\n"


def conv_weights(c, full):
    """[Kh][Kw][1][Co] for a filter bank on one channel, else depthwise [Kh][Kw][C][1]."""
    kh, kw, co = full.shape
    if c == 1 and co > 1:
        return full.reshape(kh, kw, 1, co).astype(np.float32)
    return np.repeat(full[:, :, None, :], c, axis=2).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--write-conv", default="")
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    F = filters()
    for name, (c, full) in F.items():
        np.savez(os.path.join(args.outdir, name + ".npz"), **{"f.weight": conv_weights(c, full)})
    if args.write_conv:
        with open(args.write_conv, "w") as f:
            f.write("# Image filters on 1920x1080 images, the layers shared/peers/bench_filters.py times in OpenCV\n")
            f.write("# Weights: python3 examples/filters_weights.py DIR (one DIR/NAME.npz per layer)\n")
            for name, (c, full) in F.items():
                f.write(conv_text(name, c, full) + "\n")
    print(f"wrote {len(F)} weight files to {args.outdir}")


if __name__ == "__main__":
    main()
