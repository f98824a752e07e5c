//! The transforms around the point products: `V = B^T d B` of each tile's
//! input window (4x4 or 6x6) into the point slabs, and `A^T M A` of its
//! products into the tile's outputs (2x2 or 4x4) with the bias, the
//! activation and the residual.
//!
//! Per tile, a whole vector of channels at a time with AVX-512 or AVX2
//! intrinsics (chosen at run time): the tile's vectors stay in registers
//! (F(4x4, 3x3)'s 36 mostly). (Written as loops over fixed arrays of
//! scalars the compiler kept them on the stack; `perf` found the
//! transforms at 37% of a 64-channel layer's time.) Channels past the last
//! whole vector, and CPUs without AVX2, take the scalar code, which makes
//! the same operations in the same order: the same bits.
//!
//! F(4x4, 3x3)'s transforms are written so that every multiply is by 2, 4
//! or 8 (exact): `4 d0 - 5 d2 + d4` as `4 (d0 - d2) + (d4 - d2)`. Its
//! one-dimensional steps are the macros `bt4!` and `at4!`, shared by the
//! scalar and the vector code.

use super::{Area, Bufs, LIMIT};
use convjit_ir::winograd::Variant;
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
            // (AVX2 runs the channels past the last 16.)
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Level::Avx2;
            }
        }
        Level::Scalar
    }
}

/// Most outputs of a tile (F(4x4, 3x3)'s 16).
const MAX_OUTPUTS: usize = 16;

/// `B^T d` of F(4x4, 3x3) on one column `d[0..6]`, `B^T = [4 0 -5 0 1 0;
/// 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0
/// 1]`, with the operations `$add`, `$sub` and `$mul(x, k)` (k = 2, 4).
macro_rules! bt4 {
    ($add:expr, $sub:expr, $mul:expr, $d:expr) => {{
        let d = $d;
        let (a, b) = ($sub(d[4], d[2]), $sub(d[3], d[1]));
        [
            $add($mul($sub(d[0], d[2]), 4.0), a),
            $sub($add(d[4], d[3]), $mul($add(d[1], d[2]), 4.0)),
            $add($sub(d[4], d[3]), $mul($sub(d[1], d[2]), 4.0)),
            $add(a, $mul(b, 2.0)),
            $sub(a, $mul(b, 2.0)),
            $add($mul($sub(d[1], d[3]), 4.0), $sub(d[5], d[3])),
        ]
    }};
}

/// `A^T m` of F(4x4, 3x3) on one column `m[0..6]`, `A^T = [1 1 1 1 1 0;
/// 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`.
macro_rules! at4 {
    ($add:expr, $sub:expr, $mul:expr, $m:expr) => {{
        let m = $m;
        let (a, b) = ($add(m[1], m[2]), $sub(m[1], m[2]));
        let (c, d) = ($add(m[3], m[4]), $sub(m[3], m[4]));
        [
            $add($add(m[0], a), c),
            $add(b, $mul(d, 2.0)),
            $add(a, $mul(c, 4.0)),
            $add($add(b, $mul(d, 8.0)), m[5]),
        ]
    }};
}

/// `A^T m` of F(2x2, 5x5) on one column `m[0..6]`, `A^T = [1 1 1 1 1 0;
/// 0 1 -1 2 -2 1]`: `at4!`'s first two rows, the second plus `m[5]`.
macro_rules! at25 {
    ($add:expr, $sub:expr, $mul:expr, $m:expr) => {{
        let m = $m;
        let (a, b) = ($add(m[1], m[2]), $sub(m[1], m[2]));
        let (c, d) = ($add(m[3], m[4]), $sub(m[3], m[4]));
        [$add($add(m[0], a), c), $add($add(b, $mul(d, 2.0)), m[5])]
    }};
}

/// `T w T^T` of a 6x6 window `w` (F(4x4, 3x3), F(2x2, 5x5)) with the
/// one-dimensional `$at!` of `$m` outputs a side (`bt4!`, 6: the input
/// transform; `at4!` or `at25!`: the output's), point `(i, j)` read by
/// `$g(i, j)`; each of the `$m * $m` values handed to `$put(p, value)`,
/// `p` row-major (columns first, then rows, in the scalar and the vector
/// code alike). Handed, not returned: the input transform stores them
/// where they go (an array of 36 vectors between cost 56x56x64 ~5%).
macro_rules! window6 {
    ($at:ident, $m:literal, $add:expr, $sub:expr, $mul:expr, $g:expr, $put:expr) => {{
        let g = $g;
        let cols: [[_; $m]; 6] = std::array::from_fn(|j| {
            $at!(
                $add,
                $sub,
                $mul,
                std::array::from_fn::<_, 6, _>(|i| g(i, j))
            )
        });
        for k in 0..$m {
            let col = std::array::from_fn::<_, 6, _>(|j| cols[j][k]);
            for (j, x) in $at!($add, $sub, $mul, col).into_iter().enumerate() {
                ($put)(k * $m + j, x);
            }
        }
    }};
}

/// `V[p][t]` of the area's tiles.
pub(super) fn input_band(s: &Stage, var: Variant, x: &[f32], area: Area, bufs: &mut Bufs) {
    let (i, ci) = (s.input, s.input.c);
    let (m, a) = (var.tile(), var.window());
    let Bufs { v, window, .. } = bufs;
    let slab = v.len() / var.points();
    let level = Level::host();
    for t in 0..area.tiles() {
        let (ty, tx) = area.tile(t);
        // The window's rows and columns in the image, if inside.
        let at = |k: usize, tile: usize, pad: usize, len: usize| {
            (tile * m + k).checked_sub(pad).filter(|&v| v < len)
        };
        let row = |r: usize| at(r, ty, s.padding.top, i.h);
        let col = |c: usize| at(c, tx, s.padding.left, i.w);
        let (d, stride) = match (row(0), row(a - 1), col(0), col(a - 1)) {
            (Some(r), Some(_), Some(c), Some(_)) => (&x[(r * i.w + c) * ci..], i.w * ci),
            _ => {
                // A window across the edge: its inputs copied beside zeros.
                for k in 0..a * a {
                    let w = &mut window[k * ci..][..ci];
                    match (row(k / a), col(k % a)) {
                        (Some(r), Some(c)) => w.copy_from_slice(&x[(r * i.w + c) * ci..][..ci]),
                        _ => w.fill(0.0),
                    }
                }
                (&window[..], a * ci)
            }
        };
        input_tile(level, var, d, stride, ci, v, t * ci, slab);
    }
}

/// `B^T d B` of one window: input `(i, j)` of the window, channel `c`, is
/// `d[i * row + j * ci + c]`; point `p` goes to `v[p * slab + at + c]`.
/// F(2x2, 3x3): `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`;
/// F(4x4, 3x3) and F(2x2, 5x5) (the same points): [`bt4!`].
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)] // the formulas read best by index
fn input_tile(
    level: Level,
    var: Variant,
    d: &[f32],
    row: usize,
    ci: usize,
    v: &mut [f32],
    at: usize,
    slab: usize,
) {
    let a = var.window();
    // The last value read and written: every access below is before them.
    assert!(d.len() >= (a - 1) * row + a * ci);
    assert!(v.len() >= (var.points() - 1) * slab + at + ci);
    let (dp, vp) = (d.as_ptr(), v[at..].as_mut_ptr());
    // Each level's function for the variant (F(2x2, 5x5) has F(4x4,
    // 3x3)'s points).
    #[cfg(target_arch = "x86_64")]
    let [wide, narrow]: [InputFn; 2] = match var {
        Variant::F2 => [avx512::input2, avx2::input2],
        Variant::F4 | Variant::F2K5 => [avx512::input4, avx2::input4],
    };
    let done = match level {
        // SAFETY: the CPU has the level's instructions (`Level::host`;
        // AVX-512 hosts were checked for AVX2 too), and the functions
        // access only channels below `ci` of the window and the slabs,
        // bounded by the asserts above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe {
            let c = wide(dp, row, ci, vp, slab, 0);
            narrow(dp, row, ci, vp, slab, c)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { narrow(dp, row, ci, vp, slab, 0) },
        Level::Scalar => 0,
    };
    for c in done..ci {
        let g = |i: usize, j: usize| d[i * row + j * ci + c];
        match var {
            Variant::F2 => {
                let mut r = [[0f32; 4]; 4];
                for j in 0..4 {
                    r[0][j] = g(0, j) - g(2, j);
                    r[1][j] = g(1, j) + g(2, j);
                    r[2][j] = g(2, j) - g(1, j);
                    r[3][j] = g(1, j) - g(3, j);
                }
                for (i, ri) in r.iter().enumerate() {
                    let p = |j: usize| (i * 4 + j) * slab + at + c;
                    v[p(0)] = ri[0] - ri[2];
                    v[p(1)] = ri[1] + ri[2];
                    v[p(2)] = ri[2] - ri[1];
                    v[p(3)] = ri[1] - ri[3];
                }
            }
            Variant::F4 | Variant::F2K5 => {
                window6!(bt4, 6, add, sub, mul, g, |p, x| v[p * slab + at + c] = x);
            }
        }
    }
}

/// A level's input transform of a variant's tiles: `(window, row, ci,
/// slabs, slab, first channel)`, the first channel it left undone.
#[cfg(target_arch = "x86_64")]
type InputFn = unsafe fn(*const f32, usize, usize, *mut f32, usize, usize) -> usize;
/// A level's output transform: `(tile, co, first channel)`, the first
/// channel it left undone and whether a sum was not finite.
#[cfg(target_arch = "x86_64")]
type OutputFn = unsafe fn(&Tile, usize, usize) -> (usize, bool);

/// The scalar operations of `bt4!` and `at4!`.
fn add(a: f32, b: f32) -> f32 {
    a + b
}
fn sub(a: f32, b: f32) -> f32 {
    a - b
}
fn mul(a: f32, k: f32) -> f32 {
    a * k
}

/// `A^T M A` of the area's tiles, plus bias, activation and residual, into
/// `out` (the band's output rows); whether a sum was not finite (or huge).
pub(super) fn output_band(
    s: &Stage,
    var: Variant,
    bias: &[f32],
    x: &[f32],
    area: Area,
    bufs: &mut Bufs,
    out: &mut [f32],
) -> bool {
    let (o, co) = (s.output, s.output.c);
    let m_side = var.tile();
    let ty0 = area.ty0;
    let Bufs {
        m, spill, zeros, ..
    } = bufs;
    let slab = m.len() / var.points();
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
        let mut y = [std::ptr::null_mut::<f32>(); MAX_OUTPUTS];
        let mut res = [zeros.as_ptr(); MAX_OUTPUTS];
        for (k, (yk, rk)) in y.iter_mut().zip(&mut res).take(m_side * m_side).enumerate() {
            let (r, c) = (ty * m_side + k / m_side, tx * m_side + k % m_side);
            // Rows of this band, at their offset in `out`, or the spill
            // buffer's row `k`: `co` floats in bounds either way.
            let ((base, len), at) = match r < o.h && c < o.w {
                true => (outs[0], ((r - ty0 * m_side) * o.w + c) * co),
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
            var,
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

/// One tile's output transform: `A^T m A` of point `p`'s products `m[p *
/// slab + c]`, plus `bias[c]`, then the activation (NaN passes) and the
/// residual `res[k][c]`, into output `k` (row-major in the tile) at
/// `y[k][c]`. F(2x2, 3x3): `A^T = [1 1 1 0; 0 1 -1 -1]`; F(4x4, 3x3):
/// [`at4!`]; F(2x2, 5x5): [`at25!`].
struct Tile<'a> {
    var: Variant,
    m: &'a [f32],
    slab: usize,
    bias: &'a [f32],
    /// The first `tile^2` each `co` floats (outputs in the image, or spill
    /// rows), pairwise disjoint and disjoint from `m`, `bias` and `res`.
    y: [*mut f32; MAX_OUTPUTS],
    /// The first `tile^2` each `co` floats.
    res: [*const f32; MAX_OUTPUTS],
    activation: Activation,
}

/// [`Tile`]'s outputs for channels `0 .. co`; whether a sum (before the
/// activation) was NaN or not below [`LIMIT`].
#[allow(clippy::needless_range_loop)] // the formulas read best by index
fn output_tile(level: Level, t: &Tile, co: usize) -> bool {
    assert!(t.m.len() > (t.var.points() - 1) * t.slab + co - 1 && t.bias.len() >= co);
    #[cfg(target_arch = "x86_64")]
    let [wide, narrow]: [OutputFn; 2] = match t.var {
        Variant::F2 => [avx512::output2, avx2::output2],
        Variant::F4 => [avx512::output4, avx2::output4],
        Variant::F2K5 => [avx512::output25, avx2::output25],
    };
    let (done, mut bad) = match level {
        // SAFETY: the CPU has the level's instructions (`Level::host`;
        // AVX-512 hosts were checked for AVX2 too); `m` and `bias` are
        // bounded by the assert above, `y` and `res` point at `co` floats
        // each (`output_band`), and only channels below `co` are accessed.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe {
            let (c, bad) = wide(t, co, 0);
            let (c, more) = narrow(t, co, c);
            (c, bad | more)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { narrow(t, co, 0) },
        Level::Scalar => (0, false),
    };
    let mut sums = [0f32; MAX_OUTPUTS];
    for c in done..co {
        match t.var {
            Variant::F2 => {
                let g = |i: usize, j: usize| t.m[(i * 4 + j) * t.slab + c];
                let mut a = [[0f32; 4]; 2];
                for j in 0..4 {
                    a[0][j] = g(0, j) + g(1, j) + g(2, j);
                    a[1][j] = g(1, j) - g(2, j) - g(3, j);
                }
                sums[..4].copy_from_slice(&[
                    a[0][0] + a[0][1] + a[0][2],
                    a[0][1] - a[0][2] - a[0][3],
                    a[1][0] + a[1][1] + a[1][2],
                    a[1][1] - a[1][2] - a[1][3],
                ]);
            }
            Variant::F4 => {
                let g = |i: usize, j: usize| t.m[(i * 6 + j) * t.slab + c];
                window6!(at4, 4, add, sub, mul, g, |p, x| sums[p] = x);
            }
            Variant::F2K5 => {
                let g = |i: usize, j: usize| t.m[(i * 6 + j) * t.slab + c];
                window6!(at25, 2, add, sub, mul, g, |p, x| sums[p] = x);
            }
        }
        let n = t.var.tile() * t.var.tile();
        for (k, sum) in sums[..n].iter().enumerate() {
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

/// The vector code of one level: `input2`/`input4` and
/// `output2`/`output4`/`output25` do whole vectors of channels from `start`
/// of [`input_tile`] and [`output_tile`] for F(2x2, 3x3), F(4x4, 3x3) (and
/// F(2x2, 5x5), whose input transform is F(4x4, 3x3)'s), and return the
/// first channel they left.
macro_rules! level {
    ($name:ident, $feature:literal, $lanes:literal, $vec:ty, $load:ident, $store:ident,
     $add:ident, $sub:ident, $mul:ident, $max:ident, $min:ident, $set1:ident, $bad:expr) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::{Tile, LIMIT};
            use convjit_ir::Activation;
            #[allow(unused_imports)]
            use std::arch::x86_64::*;

            /// # Safety
            ///
            /// The CPU has the feature; `d` and `v` are [`input_tile`]'s
            /// 4x4 window and slabs (from its tile's offset), valid for
            /// channels `0 .. ci`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn input2(
                d: *const f32,
                row: usize,
                ci: usize,
                v: *mut f32,
                slab: usize,
                start: usize,
            ) -> usize {
                let mut c = start;
                while c + $lanes <= ci {
                    // SAFETY: `i, j < 4` and `c + lanes <= ci`: inside
                    // the window (the caller's contract).
                    let g = |i: usize, j: usize| unsafe { $load(d.add(i * row + j * ci + c)) };
                    let mut r = [[$set1(0.0); 4]; 4];
                    for j in 0..4 {
                        let (d0, d1, d2, d3) = (g(0, j), g(1, j), g(2, j), g(3, j));
                        r[0][j] = $sub(d0, d2);
                        r[1][j] = $add(d1, d2);
                        r[2][j] = $sub(d2, d1);
                        r[3][j] = $sub(d1, d3);
                    }
                    for (i, ri) in r.iter().enumerate() {
                        // SAFETY: point `i * 4 + j < 16`, `c + lanes <= ci`:
                        // inside the slabs (the caller's contract).
                        let p = |j: usize| unsafe { v.add((i * 4 + j) * slab + c) };
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
                c
            }

            /// # Safety
            ///
            /// As [`input2`], for a 6x6 window and 36 slabs.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn input4(
                d: *const f32,
                row: usize,
                ci: usize,
                v: *mut f32,
                slab: usize,
                start: usize,
            ) -> usize {
                let (add, sub) = (|a, b| $add(a, b), |a, b| $sub(a, b));
                let scale = |a, k: f32| $mul(a, $set1(k));
                let mut c = start;
                while c + $lanes <= ci {
                    // SAFETY: `i, j < 6` and `c + lanes <= ci`: inside
                    // the window (the caller's contract).
                    let g = |i: usize, j: usize| unsafe { $load(d.add(i * row + j * ci + c)) };
                    // SAFETY: point `p < 36`, `c + lanes <= ci`: inside
                    // the slabs (the caller's contract).
                    let put = |p: usize, x| unsafe { $store(v.add(p * slab + c), x) };
                    window6!(bt4, 6, add, sub, scale, g, put);
                    c += $lanes;
                }
                c
            }

            /// # Safety
            ///
            /// The CPU has the feature; `t` is as [`Tile`] says (F(2x2,
            /// 3x3)), for channels `0 .. co`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn output2(t: &Tile, co: usize, start: usize) -> (usize, bool) {
                let (m, slab) = (t.m.as_ptr(), t.slab);
                let zero = $set1(0.0);
                let mut bad = false;
                let mut c = start;
                while c + $lanes <= co {
                    // SAFETY: point `i * 4 + j < 16`, `c + lanes <= co`:
                    // inside `m` (the caller's contract, `Tile`).
                    let g = |i: usize, j: usize| unsafe { $load(m.add((i * 4 + j) * slab + c)) };
                    let mut a = [[zero; 4]; 2];
                    for j in 0..4 {
                        let (m0, m1, m2, m3) = (g(0, j), g(1, j), g(2, j), g(3, j));
                        a[0][j] = $add($add(m0, m1), m2);
                        a[1][j] = $sub($sub(m1, m2), m3);
                    }
                    let sums = [
                        $add($add(a[0][0], a[0][1]), a[0][2]),
                        $sub($sub(a[0][1], a[0][2]), a[0][3]),
                        $add($add(a[1][0], a[1][1]), a[1][2]),
                        $sub($sub(a[1][1], a[1][2]), a[1][3]),
                    ];
                    // SAFETY: as this function's contract.
                    bad |= unsafe { epilogue(t, c, &sums) };
                    c += $lanes;
                }
                (c, bad)
            }

            /// The loop of an output transform over a 6x6 point window
            /// (`window6!` with `$at!`, `$m` outputs a side) and its
            /// epilogue, whole vectors of channels from `start`.
            macro_rules! output6 {
                ($t:expr, $co:expr, $start:expr, $at:ident, $m:literal) => {{
                    let (t, co): (&Tile, usize) = ($t, $co);
                    let (m, slab) = (t.m.as_ptr(), t.slab);
                    let (add, sub) = (|a, b| $add(a, b), |a, b| $sub(a, b));
                    let scale = |a, k: f32| $mul(a, $set1(k));
                    let mut bad = false;
                    let mut c = $start;
                    while c + $lanes <= co {
                        // SAFETY: point `i * 6 + j < 36`, `c + lanes <=
                        // co`: inside `m` (the caller's contract, `Tile`).
                        let g =
                            |i: usize, j: usize| unsafe { $load(m.add((i * 6 + j) * slab + c)) };
                        let mut sums = [$set1(0.0); $m * $m];
                        window6!($at, $m, add, sub, scale, g, |p, x| sums[p] = x);
                        // SAFETY: the caller's contract.
                        bad |= unsafe { epilogue(t, c, &sums) };
                        c += $lanes;
                    }
                    (c, bad)
                }};
            }

            /// # Safety
            ///
            /// As [`output2`], F(4x4, 3x3).
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn output4(t: &Tile, co: usize, start: usize) -> (usize, bool) {
                output6!(t, co, start, at4, 4)
            }

            /// # Safety
            ///
            /// As [`output2`], F(2x2, 5x5).
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn output25(t: &Tile, co: usize, start: usize) -> (usize, bool) {
                output6!(t, co, start, at25, 2)
            }

            /// Outputs `k < sums.len()` of channels `c .. c + lanes`: the
            /// bias, the NaN/limit check, the activation, the residual.
            ///
            /// # Safety
            ///
            /// The CPU has the feature; `c + lanes <= co` of `t` (`Tile`),
            /// `sums.len() <= tile^2`.
            #[target_feature(enable = $feature)]
            #[inline]
            unsafe fn epilogue(t: &Tile, c: usize, sums: &[$vec]) -> bool {
                let (zero, six, limit) = ($set1(0.0), $set1(6.0), $set1(LIMIT));
                // SAFETY: `c + lanes <= co <= bias.len()` (`Tile`).
                let b = unsafe { $load(t.bias.as_ptr().add(c)) };
                let mut bad = false;
                for (k, &sum) in sums.iter().enumerate() {
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
                bad
            }
        }
    };
}

level!(
    avx512,
    "avx512f",
    16,
    __m512,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_add_ps,
    _mm512_sub_ps,
    _mm512_mul_ps,
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
    __m256,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_mul_ps,
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

    /// Every level computes the scalar code's bits, for both variants and
    /// channel counts on and off each vector width (the tails run scalar),
    /// with strided windows and slabs at an offset.
    #[test]
    fn every_level_transforms_as_the_scalar_code() {
        let mut rng = Rng::new(11);
        for var in Variant::ALL {
            let (a, points, outputs) = (var.window(), var.points(), var.tile() * var.tile());
            for ci in [1, 7, 8, 9, 16, 17, 24, 33, 64, 70] {
                let row = (a + 1) * ci + 3;
                let d = rng.vec((a - 1) * row + a * ci, 4.0);
                let slab = 3 * ci + 1;
                let at = ci + 1;
                let run = |level: Level| {
                    let mut v = vec![f32::NAN; points * slab];
                    input_tile(level, var, &d, row, ci, &mut v, at, slab);
                    v
                };
                let want = run(Level::Scalar);
                assert!(want[at..].iter().step_by(slab).all(|v| v.is_finite()));
                for level in levels() {
                    assert_eq!(
                        want.map_bits(),
                        run(level).map_bits(),
                        "{var:?} input, {ci} channels"
                    );
                }
                let m = rng.vec(points * slab, 4.0);
                let bias = rng.vec(ci, 1.0);
                let res: Vec<Vec<f32>> = (0..outputs).map(|_| rng.vec(ci, 1.0)).collect();
                for activation in [Activation::None, Activation::Relu, Activation::Relu6] {
                    let out = |level: Level, m: &[f32]| {
                        let mut y = vec![vec![0f32; ci]; outputs];
                        let mut yp = [std::ptr::null_mut(); MAX_OUTPUTS];
                        let mut rp = [std::ptr::null(); MAX_OUTPUTS];
                        for k in 0..outputs {
                            yp[k] = y[k].as_mut_ptr();
                            rp[k] = res[k].as_ptr();
                        }
                        let tile = Tile {
                            var,
                            m,
                            slab,
                            bias: &bias,
                            y: yp,
                            res: rp,
                            activation,
                        };
                        let bad = output_tile(level, &tile, ci);
                        (y.concat().map_bits(), bad)
                    };
                    let want = out(Level::Scalar, &m);
                    assert!(!want.1);
                    for level in levels() {
                        assert_eq!(want, out(level, &m), "{var:?} output, {ci} channels");
                        // A NaN or huge product in any channel is flagged.
                        for (c, bad) in [(0, f32::NAN), (ci - 1, 3e30), (ci / 2, f32::INFINITY)] {
                            let mut m = m.clone();
                            m[5 * slab + c] = bad;
                            assert!(out(level, &m).1, "{var:?}, {ci} channels, {bad} at {c}");
                        }
                    }
                }
            }
        }
    }

    /// The scalar transforms are the IR's matrices (`B^T d B`, `A^T m A`)
    /// within f32 rounding.
    #[test]
    fn the_transforms_are_the_matrices() {
        let mut rng = Rng::new(12);
        for var in Variant::ALL {
            let (m, a) = (var.tile(), var.window());
            let (bt, at) = (var.bt(), var.at());
            let d = rng.vec(a * a, 1.0);
            let mut v = vec![0f32; a * a];
            input_tile(Level::Scalar, var, &d, a, 1, &mut v, 0, 1);
            for p in 0..a {
                for q in 0..a {
                    let want: f64 = (0..a * a)
                        .map(|k| bt[p * a + k / a] * f64::from(d[k]) * bt[q * a + k % a])
                        .sum();
                    let got = f64::from(v[p * a + q]);
                    assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "{var:?}");
                }
            }
            let mm = rng.vec(a * a, 1.0);
            let mut y = vec![[0f32; 1]; m * m];
            let zero = [0f32];
            let mut yp = [std::ptr::null_mut(); MAX_OUTPUTS];
            for (k, yk) in y.iter_mut().enumerate() {
                yp[k] = yk.as_mut_ptr();
            }
            let tile = Tile {
                var,
                m: &mm,
                slab: 1,
                bias: &zero,
                y: yp,
                res: [zero.as_ptr(); MAX_OUTPUTS],
                activation: Activation::None,
            };
            output_tile(Level::Scalar, &tile, 1);
            for (k, yk) in y.iter().enumerate() {
                let (r, c) = (k / m, k % m);
                let want: f64 = (0..a * a)
                    .map(|p| at[r * a + p / a] * f64::from(mm[p]) * at[c * a + p % a])
                    .sum();
                let got = f64::from(yk[0]);
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{var:?} {k}"
                );
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
