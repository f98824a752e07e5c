//! Shared by the hand-written SIMD families (`sse.rs`, `avx2.rs`): which
//! output pixels are *interior* (every tap inside the input, no bounds
//! checks) and the taps of each pixel, as element offsets.

use convjit_ir::{Activation, Stage};

/// `[lo, hi)`: the outputs along one axis whose taps all fall inside the
/// input (`input` long, kernel `k`, stride `s`, dilation `d`, `pad` before).
pub(crate) fn interior(
    input: usize,
    output: usize,
    k: usize,
    s: usize,
    d: usize,
    pad: usize,
) -> (usize, usize) {
    let lo = pad.div_ceil(s).min(output);
    let span = (k - 1) * d;
    let hi = if input + pad > span {
        ((input - 1 + pad - span) / s + 1).min(output)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Taps of output pixel (`oy`, `ox`) that fall inside the input, as
/// (tap index, input offset in elements from the image start).
pub(crate) fn border_taps(
    s: &Stage,
    c: usize,
    oy: usize,
    ox: usize,
    taps: &mut Vec<(usize, isize)>,
) {
    let [kh, kw] = s.kernel;
    let [sh, sw] = s.stride;
    let [dh, dw] = s.dilation;
    taps.clear();
    for ky in 0..kh {
        let iy = (oy * sh + ky * dh) as isize - s.padding.top as isize;
        if iy < 0 || iy >= s.input.h as isize {
            continue;
        }
        for kx in 0..kw {
            let ix = (ox * sw + kx * dw) as isize - s.padding.left as isize;
            if ix < 0 || ix >= s.input.w as isize {
                continue;
            }
            taps.push((ky * kw + kx, (iy * s.input.w as isize + ix) * c as isize));
        }
    }
}

/// Offsets of every tap from the pixel under tap (0, 0), interior pixels.
pub(crate) fn interior_taps(s: &Stage, c: usize) -> Vec<(usize, isize)> {
    let [kh, kw] = s.kernel;
    let [dh, dw] = s.dilation;
    let mut taps = Vec::with_capacity(kh * kw);
    for ky in 0..kh {
        for kx in 0..kw {
            let off = (ky * dh * s.input.w + kx * dw) * c;
            taps.push((ky * kw + kx, off as isize));
        }
    }
    taps
}

/// `act(a)` on one element (scalar channel tails): the interpreter's
/// (NaN propagates; `f32::max` would turn it into 0). Exact in f64.
pub(crate) fn activate1(a: f32, act: Activation) -> f32 {
    act.apply(a as f64) as f32
}
