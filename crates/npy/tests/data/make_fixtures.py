#!/usr/bin/env python3
"""Regenerate the NumPy-written fixtures the convjit-npy tests read.

Run from anywhere: `python3 crates/npy/tests/data/make_fixtures.py` (needs numpy).
Every array is small so the files stay a few hundred bytes each.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(HERE, name)


def main():
    a = np.arange(6, dtype="<f4").reshape(2, 3)

    np.save(path("f32_v1.npy"), a)
    with open(path("f32_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, a, version=(2, 0))
    with open(path("f32_v3.npy"), "wb") as f:
        np.lib.format.write_array(f, a, version=(3, 0))
    np.save(path("f32_scalar.npy"), np.array(2.5, dtype="<f4"))
    np.save(path("f32_empty.npy"), np.zeros((0, 3), dtype="<f4"))

    np.save(path("f64.npy"), a.astype("<f8"))
    np.save(path("i32.npy"), a.astype("<i4"))
    np.save(path("fortran.npy"), np.asfortranarray(a))

    b = (np.arange(24, dtype="<f4") / 4 - 2).reshape(2, 3, 4)
    np.savez(path("savez.npz"), a=a, **{"dw.weight": b})
    np.savez_compressed(path("savez_compressed.npz"), a=a, **{"dw.weight": b})
    np.savez(path("savez_f64.npz"), a=a, **{"dw.weight": b.astype("<f8")})


if __name__ == "__main__":
    main()
