//! The transforms around the point products: `V = B^T d B` of each tile's
//! 4x4 input window into the 16 point slabs, and `A^T M A` of its 16
//! products into the tile's 2x2 outputs with the bias, the activation and
//! the residual.
//!
//! Per tile, a whole vector of channels at a time with AVX-512 or AVX2
//! intrinsics (chosen at run time): the tile's 16 vectors stay in
//! registers. (Written as loops over fixed arrays the compiler kept them
//! on the stack; `perf` found the transforms at 37% of a 64-channel
//! layer's time.) Channels past the last whole vector, and CPUs without
//! AVX2, take the scalar code.

use super::{Area, Bufs, LIMIT};
use convjit_ir::winograd::{POINTS, TILE, WINDOW};
use convjit_ir::{Activation, Stage};

/// The widest vectors of the host the transforms have code for.
#[derive(Clone, Copy)]
enum Level {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Scalar,
}

impl Level {
    fn host() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Level::Avx2;
            }
        }
        Level::Scalar
    }
}

/// `V[p][t]` of the area's tiles.
pub(super) fn input_band(s: &Stage, x: &[f32], area: Area, bufs: &mut Bufs) {
    let (i, ci) = (s.input, s.input.c);
    let Bufs { v, window, .. } = bufs;
    let slab = v.len() / POINTS;
    let level = Level::host();
    for t in 0..area.tiles() {
        let (ty, tx) = area.tile(t);
        // The window's rows and columns in the image, if inside.
        let at = |k: usize, tile: usize, pad: usize, len: usize| {
            (tile * TILE + k).checked_sub(pad).filter(|&v| v < len)
        };
        let row = |r: usize| at(r, ty, s.padding.top, i.h);
        let col = |c: usize| at(c, tx, s.padding.left, i.w);
        let (d, stride) = match (row(0), row(WINDOW - 1), col(0), col(WINDOW - 1)) {
            (Some(r), Some(_), Some(c), Some(_)) => (&x[(r * i.w + c) * ci..], i.w * ci),
            _ => {
                // A window across the edge: its inputs copied beside zeros.
                for k in 0..POINTS {
                    let w = &mut window[k * ci..][..ci];
                    match (row(k / WINDOW), col(k % WINDOW)) {
                        (Some(r), Some(c)) => w.copy_from_slice(&x[(r * i.w + c) * ci..][..ci]),
                        _ => w.fill(0.0),
                    }
                }
                (&window[..], WINDOW * ci)
            }
        };
        input_tile(level, d, stride, ci, v, t * ci, slab);
    }
}

/// `B^T d B` of one window, `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0
/// -1]`: input `(i, j)` of the window, channel `c`, is `d[i * row + j * ci
/// + c]`; point `p` goes to `v[p * slab + at + c]`.
#[allow(clippy::needless_range_loop)] // the formulas read best by index
fn input_tile(
    level: Level,
    d: &[f32],
    row: usize,
    ci: usize,
    v: &mut [f32],
    at: usize,
    slab: usize,
) {
    // The last value read and written: every access below is before them.
    assert!(d.len() >= (WINDOW - 1) * row + WINDOW * ci);
    assert!(v.len() >= (POINTS - 1) * slab + at + ci);
    let done = match level {
        // SAFETY: the CPU has the level's instructions (`Level::host`),
        // and the functions access only channels below `ci` of the
        // window and the slabs, bounded by the asserts above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { avx512::input(d.as_ptr(), row, ci, v[at..].as_mut_ptr(), slab) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::input(d.as_ptr(), row, ci, v[at..].as_mut_ptr(), slab) },
        Level::Scalar => 0,
    };
    for c in done..ci {
        let g = |i: usize, j: usize| d[i * row + j * ci + c];
        let mut r = [[0f32; WINDOW]; WINDOW];
        for j in 0..WINDOW {
            r[0][j] = g(0, j) - g(2, j);
            r[1][j] = g(1, j) + g(2, j);
            r[2][j] = g(2, j) - g(1, j);
            r[3][j] = g(1, j) - g(3, j);
        }
        for (i, ri) in r.iter().enumerate() {
            let p = |j: usize| (i * WINDOW + j) * slab + at + c;
            v[p(0)] = ri[0] - ri[2];
            v[p(1)] = ri[1] + ri[2];
            v[p(2)] = ri[2] - ri[1];
            v[p(3)] = ri[1] - ri[3];
        }
    }
}

/// `A^T M A` of the area's tiles, plus bias, activation and residual, into
/// `out` (the band's output rows); whether a sum was not finite (or huge).
pub(super) fn output_band(
    s: &Stage,
    bias: &[f32],
    x: &[f32],
    area: Area,
    bufs: &mut Bufs,
    out: &mut [f32],
) -> bool {
    let (o, co) = (s.output, s.output.c);
    let ty0 = area.ty0;
    let Bufs {
        m, spill, zeros, ..
    } = bufs;
    let slab = m.len() / POINTS;
    let level = Level::host();
    let mut bad = false;
    // Every output pointer derives from these two, taken once (a fresh
    // `&mut` of a buffer per output would retag all of it).
    let outs = [
        (out.as_mut_ptr(), out.len()),
        (spill.as_mut_ptr(), spill.len()),
    ];
    for t in 0..area.tiles() {
        let (ty, tx) = area.tile(t);
        // Outputs past the image's edge go to the spill buffer; the
        // residual is the layer's input there, else zeros.
        let mut y = [std::ptr::null_mut::<f32>(); TILE * TILE];
        let mut res = [zeros.as_ptr(); TILE * TILE];
        for (k, (yk, rk)) in y.iter_mut().zip(&mut res).enumerate() {
            let (r, c) = (ty * TILE + k / TILE, tx * TILE + k % TILE);
            // Rows of this band, at their offset in `out`, or the spill
            // buffer's row `k`: `co` floats in bounds either way.
            let ((base, len), at) = match r < o.h && c < o.w {
                true => (outs[0], ((r - ty0 * TILE) * o.w + c) * co),
                false => (outs[1], k * co),
            };
            assert!(at + co <= len);
            // SAFETY: in bounds of the buffer (just checked).
            *yk = unsafe { base.add(at) };
            if s.residual && r < o.h && c < o.w {
                *rk = x[(r * o.w + c) * co..][..co].as_ptr();
            }
        }
        let tile = Tile {
            m: &m[t * co..],
            slab,
            bias,
            y,
            res,
            activation: s.activation,
        };
        bad |= output_tile(level, &tile, co);
    }
    bad
}

/// One tile's output transform: `A^T m A`, `A^T = [1 1 1 0; 0 1 -1 -1]`,
/// of point `p`'s products `m[p * slab + c]`, plus `bias[c]`, then the
/// activation (NaN passes) and the residual `res[k][c]`, into output `k`
/// (row-major in the tile) at `y[k][c]`.
struct Tile<'a> {
    m: &'a [f32],
    slab: usize,
    bias: &'a [f32],
    /// Each `co` floats (outputs in the image, or spill rows), pairwise
    /// disjoint and disjoint from `m`, `bias` and `res`.
    y: [*mut f32; TILE * TILE],
    /// Each `co` floats.
    res: [*const f32; TILE * TILE],
    activation: Activation,
}

/// [`Tile`]'s outputs for channels `0 .. co`; whether a sum (before the
/// activation) was NaN or not below [`LIMIT`].
#[allow(clippy::needless_range_loop)] // the formulas read best by index
fn output_tile(level: Level, t: &Tile, co: usize) -> bool {
    assert!(t.m.len() > (POINTS - 1) * t.slab + co - 1 && t.bias.len() >= co);
    let (done, mut bad) = match level {
        // SAFETY: the CPU has the level's instructions (`Level::host`);
        // `m` and `bias` are bounded by the assert above, `y` and `res`
        // point at `co` floats each (`output_band`), and only channels
        // below `co` are accessed.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { avx512::output(t, co) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::output(t, co) },
        Level::Scalar => (0, false),
    };
    for c in done..co {
        let g = |i: usize, j: usize| t.m[(i * WINDOW + j) * t.slab + c];
        let mut a = [[0f32; WINDOW]; TILE];
        for j in 0..WINDOW {
            a[0][j] = g(0, j) + g(1, j) + g(2, j);
            a[1][j] = g(1, j) - g(2, j) - g(3, j);
        }
        let sums = [
            a[0][0] + a[0][1] + a[0][2],
            a[0][1] - a[0][2] - a[0][3],
            a[1][0] + a[1][1] + a[1][2],
            a[1][1] - a[1][2] - a[1][3],
        ];
        for (k, sum) in sums.iter().enumerate() {
            let v = sum + t.bias[c];
            bad |= v.is_nan() || v.abs() >= LIMIT;
            let v = match t.activation {
                Activation::Relu if v < 0.0 => 0.0,
                Activation::Relu6 if v < 0.0 => 0.0,
                Activation::Relu6 if v > 6.0 => 6.0,
                _ => v,
            };
            // SAFETY: `y[k]` and `res[k]` hold `co` floats each, `c < co`
            // (see `Tile`).
            unsafe { *t.y[k].add(c) = v + *t.res[k].add(c) };
        }
    }
    bad
}

/// The vector code of one level: `input` and `output` do channels `0 ..
/// co / lanes * lanes` of [`input_tile`] and [`output_tile`] and return
/// that count.
macro_rules! level {
    ($name:ident, $feature:literal, $lanes:literal, $load:ident, $store:ident,
     $add:ident, $sub:ident, $max:ident, $min:ident, $set1:ident, $bad:expr) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::{Tile, LIMIT, WINDOW};
            use convjit_ir::Activation;
            #[allow(unused_imports)]
            use std::arch::x86_64::*;

            /// # Safety
            ///
            /// The CPU has the feature; `d` and `v` are [`input_tile`]'s
            /// window and slabs (from its tile's offset), valid for
            /// channels `0 .. ci`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn input(
                d: *const f32,
                row: usize,
                ci: usize,
                v: *mut f32,
                slab: usize,
            ) -> usize {
                let end = ci / $lanes * $lanes;
                let mut c = 0;
                while c < end {
                    // SAFETY: `i, j < WINDOW` and `c + lanes <= ci`: inside
                    // the window (the caller's contract).
                    let g = |i: usize, j: usize| unsafe { $load(d.add(i * row + j * ci + c)) };
                    let mut r = [[$set1(0.0); WINDOW]; WINDOW];
                    for j in 0..WINDOW {
                        let (d0, d1, d2, d3) = (g(0, j), g(1, j), g(2, j), g(3, j));
                        r[0][j] = $sub(d0, d2);
                        r[1][j] = $add(d1, d2);
                        r[2][j] = $sub(d2, d1);
                        r[3][j] = $sub(d1, d3);
                    }
                    for (i, ri) in r.iter().enumerate() {
                        // SAFETY: point `i * WINDOW + j < POINTS`, `c + lanes
                        // <= ci`: inside the slabs (the caller's contract).
                        let p = |j: usize| unsafe { v.add((i * WINDOW + j) * slab + c) };
                        // SAFETY: as `p` says.
                        unsafe {
                            $store(p(0), $sub(ri[0], ri[2]));
                            $store(p(1), $add(ri[1], ri[2]));
                            $store(p(2), $sub(ri[2], ri[1]));
                            $store(p(3), $sub(ri[1], ri[3]));
                        }
                    }
                    c += $lanes;
                }
                end
            }

            /// # Safety
            ///
            /// The CPU has the feature; `t` is as [`Tile`] says, for
            /// channels `0 .. co`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn output(t: &Tile, co: usize) -> (usize, bool) {
                let end = co / $lanes * $lanes;
                let (m, slab) = (t.m.as_ptr(), t.slab);
                let (zero, six, limit) = ($set1(0.0), $set1(6.0), $set1(LIMIT));
                let mut bad = false;
                let mut c = 0;
                while c < end {
                    // SAFETY: point `i * WINDOW + j < POINTS`, `c + lanes <=
                    // co`: inside `m` (the caller's contract, `Tile`).
                    let g =
                        |i: usize, j: usize| unsafe { $load(m.add((i * WINDOW + j) * slab + c)) };
                    let mut a = [[zero; WINDOW]; 2];
                    for j in 0..WINDOW {
                        let (m0, m1, m2, m3) = (g(0, j), g(1, j), g(2, j), g(3, j));
                        a[0][j] = $add($add(m0, m1), m2);
                        a[1][j] = $sub($sub(m1, m2), m3);
                    }
                    // SAFETY: `c + lanes <= co <= bias.len()` (`Tile`).
                    let b = unsafe { $load(t.bias.as_ptr().add(c)) };
                    let sums = [
                        $add($add(a[0][0], a[0][1]), a[0][2]),
                        $sub($sub(a[0][1], a[0][2]), a[0][3]),
                        $add($add(a[1][0], a[1][1]), a[1][2]),
                        $sub($sub(a[1][1], a[1][2]), a[1][3]),
                    ];
                    for (k, sum) in sums.into_iter().enumerate() {
                        let v = $add(sum, b);
                        bad |= $bad(v, limit);
                        // max/min return their second operand when either
                        // is NaN: NaN passes, as in the scalar code.
                        let v = match t.activation {
                            Activation::None => v,
                            Activation::Relu => $max(zero, v),
                            Activation::Relu6 => $min(six, $max(zero, v)),
                        };
                        // SAFETY: `res[k]` and `y[k]` hold `co` floats each
                        // and `c + lanes <= co` (`Tile`).
                        unsafe {
                            let v = $add(v, $load(t.res[k].add(c)));
                            $store(t.y[k].add(c), v);
                        }
                    }
                    c += $lanes;
                }
                (end, bad)
            }
        }
    };
}

level!(
    avx512,
    "avx512f",
    16,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_add_ps,
    _mm512_sub_ps,
    _mm512_max_ps,
    _mm512_min_ps,
    _mm512_set1_ps,
    // NaN or |v| not below the limit.
    |v, limit| _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(_mm512_abs_ps(v), limit) != 0
);

level!(
    avx2,
    "avx2",
    8,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_max_ps,
    _mm256_min_ps,
    _mm256_set1_ps,
    // NaN or |v| not below the limit (|v|: the sign bit cleared).
    |v, limit| {
        let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
        _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLT_UQ>(abs, limit)) != 0
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::Rng;

    /// The levels this host runs, the scalar code first.
    fn levels() -> Vec<Level> {
        #[cfg(target_arch = "x86_64")]
        return [
            (true, Level::Scalar),
            (is_x86_feature_detected!("avx2"), Level::Avx2),
            (is_x86_feature_detected!("avx512f"), Level::Avx512),
        ]
        .into_iter()
        .filter_map(|(has, level)| has.then_some(level))
        .collect();
        #[cfg(not(target_arch = "x86_64"))]
        vec![Level::Scalar]
    }

    /// Every level computes the scalar code's bits, for channel counts on
    /// and off each vector width (the tails run scalar), with strided
    /// windows and slabs at an offset.
    #[test]
    fn every_level_transforms_as_the_scalar_code() {
        let mut rng = Rng::new(11);
        for ci in [1, 7, 8, 9, 16, 17, 24, 33, 64, 70] {
            let row = 5 * ci + 3;
            let d = rng.vec(3 * row + 4 * ci, 4.0);
            let slab = 3 * ci + 1;
            let at = ci + 1;
            let run = |level: Level| {
                let mut v = vec![f32::NAN; POINTS * slab];
                input_tile(level, &d, row, ci, &mut v, at, slab);
                v
            };
            let want = run(Level::Scalar);
            for level in levels() {
                assert_eq!(
                    want.map_bits(),
                    run(level).map_bits(),
                    "input, {ci} channels"
                );
            }
            let m = rng.vec(POINTS * slab, 4.0);
            let bias = rng.vec(ci, 1.0);
            let res: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(ci, 1.0)).collect();
            for activation in [Activation::None, Activation::Relu, Activation::Relu6] {
                let out = |level: Level, m: &[f32]| {
                    let mut y = vec![vec![0f32; ci]; 4];
                    let tile = Tile {
                        m,
                        slab,
                        bias: &bias,
                        y: std::array::from_fn(|k| y[k].as_mut_ptr()),
                        res: std::array::from_fn(|k| res[k].as_ptr()),
                        activation,
                    };
                    let bad = output_tile(level, &tile, ci);
                    (y.concat().map_bits(), bad)
                };
                let want = out(Level::Scalar, &m);
                assert!(!want.1);
                for level in levels() {
                    assert_eq!(want, out(level, &m), "output, {ci} channels");
                    // A NaN or huge product in any channel is flagged.
                    for (c, bad) in [(0, f32::NAN), (ci - 1, 3e30), (ci / 2, f32::INFINITY)] {
                        let mut m = m.clone();
                        m[5 * slab + c] = bad;
                        assert!(out(level, &m).1, "{ci} channels, {bad} at {c}");
                    }
                }
            }
        }
    }

    trait Bits {
        fn map_bits(&self) -> Vec<u32>;
    }

    impl Bits for Vec<f32> {
        fn map_bits(&self) -> Vec<u32> {
            self.iter().map(|v| v.to_bits()).collect()
        }
    }
}
