//! Winograd's minimal filtering (Lavin and Gray, 2016): an `r x r`
//! stride-1 convolution computed per `m x m` output tile from its input
//! window of side `m + r - 1` as element-wise products summed over the
//! input channels,
//!
//! ```text
//! Y = A^T [ sum_ci (G g G^T) . (B^T d B) ] A
//! ```
//!
//! in three forms ([`Variant`]): F(2x2, 3x3), 16 multiplies per tile and
//! channel pair where the direct sum takes 36; F(4x4, 3x3), 36 where it
//! takes 144; F(2x2, 5x5), 36 where it takes 100. What the IR owns of it: which layers may run so
//! ([`refusal`]), the transformed weights ([`transform_weights`]), and the
//! scale of its rounding, for checks ([`magnitude`]). The rewrite is exact
//! in real arithmetic, not in f32: each product mixes every input of the
//! window and every tap, so its rounding scales with those sums (and, for
//! the larger tile, with coefficients up to 25 and 64 in the transforms),
//! not with the output's own terms. It runs only when asked for
//! (`Options::winograd`).

use crate::error::DataError;
use crate::layer::{Layer, Stage, StageKind};
use crate::weights::{StageWeights, Weights};

/// Which F(m x m, r x r): the output tile's side `m` and the kernel's `r`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// F(2x2, 3x3): 4x4 windows, 16 points; transforms of 0 and +-1.
    F2,
    /// F(4x4, 3x3): 6x6 windows, 36 points (interpolation points 0, +-1,
    /// +-2 and infinity); 0.25 of the direct products, larger rounding.
    F4,
    /// F(2x2, 5x5): the same 6x6 windows and points as F(4x4, 3x3) (the
    /// same input transform), 0.36 of the direct products.
    F2K5,
}

impl Variant {
    /// Every variant, 3x3 kernels first, smallest tile first.
    pub const ALL: [Variant; 3] = [Variant::F2, Variant::F4, Variant::F2K5];

    /// The variant of output tile side `m` for `r x r` kernels.
    pub fn of(m: usize, r: usize) -> Option<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.tile() == m && v.kernel() == r)
    }

    /// Outputs per tile side.
    pub const fn tile(self) -> usize {
        match self {
            Variant::F2 | Variant::F2K5 => 2,
            Variant::F4 => 4,
        }
    }

    /// The kernel's side.
    pub const fn kernel(self) -> usize {
        match self {
            Variant::F2 | Variant::F4 => 3,
            Variant::F2K5 => 5,
        }
    }

    /// Inputs per tile side (`tile + kernel - 1`).
    pub const fn window(self) -> usize {
        self.tile() + self.kernel() - 1
    }

    /// Points of a transformed tile: one product (a matrix product over
    /// the channels) each.
    pub const fn points(self) -> usize {
        self.window() * self.window()
    }

    /// `G`, the weight transform (`window x kernel`, row-major).
    fn g(self) -> &'static [f64] {
        const S: f64 = 1.0 / 6.0;
        match self {
            Variant::F2 => &[
                1.0, 0.0, 0.0, //
                0.5, 0.5, 0.5, //
                0.5, -0.5, 0.5, //
                0.0, 0.0, 1.0,
            ],
            Variant::F4 => &[
                0.25,
                0.0,
                0.0, //
                -S,
                -S,
                -S, //
                -S,
                S,
                -S, //
                S / 4.0,
                S / 2.0,
                S, //
                S / 4.0,
                -S / 2.0,
                S, //
                0.0,
                0.0,
                1.0,
            ],
            // The one `G` that gives the 5x5 sum with F(4x4, 3x3)'s `B^T`
            // and these `A^T` rows (solved for, exact in these fractions).
            Variant::F2K5 => &[
                0.25,
                0.0,
                0.0,
                0.0,
                0.0, //
                -S,
                -S,
                -S,
                -S,
                -S, //
                -S,
                S,
                -S,
                S,
                -S, //
                S / 4.0,
                S / 2.0,
                S,
                2.0 * S,
                4.0 * S, //
                S / 4.0,
                -S / 2.0,
                S,
                -2.0 * S,
                4.0 * S, //
                0.0,
                0.0,
                0.0,
                0.0,
                1.0,
            ],
        }
    }

    /// `B^T`, the input transform (`window x window`, row-major).
    pub fn bt(self) -> &'static [f64] {
        match self {
            Variant::F2 => &[
                1.0, 0.0, -1.0, 0.0, //
                0.0, 1.0, 1.0, 0.0, //
                0.0, -1.0, 1.0, 0.0, //
                0.0, 1.0, 0.0, -1.0,
            ],
            Variant::F4 | Variant::F2K5 => &[
                4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
                0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
                0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
                0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
                0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
                0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
            ],
        }
    }

    /// `A^T`, the output transform (`tile x window`, row-major).
    pub fn at(self) -> &'static [f64] {
        match self {
            Variant::F2 => &[
                1.0, 1.0, 1.0, 0.0, //
                0.0, 1.0, -1.0, -1.0,
            ],
            Variant::F4 => &[
                1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
                0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
                0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
                0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
            ],
            Variant::F2K5 => &[
                1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
                0.0, 1.0, -1.0, 2.0, -2.0, 1.0,
            ],
        }
    }

    /// `"F(2x2, 3x3)"`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::F2 => "F(2x2, 3x3)",
            Variant::F4 => "F(4x4, 3x3)",
            Variant::F2K5 => "F(2x2, 5x5)",
        }
    }
}

/// Why `layer` cannot run as Winograd's, or `None` when it can: one
/// ungrouped 3x3 or 5x5 conv stage of stride 1 and dilation 1 (any
/// padding, bias, activation, residual).
pub fn refusal(layer: &Layer) -> Option<&'static str> {
    let [s] = layer.stages.as_slice() else {
        return Some("the layer has more than one stage");
    };
    stage_refusal(s)
}

/// Why `s` cannot run as Winograd's (see [`refusal`]), or `None`.
pub fn stage_refusal(s: &Stage) -> Option<&'static str> {
    match s.kind {
        StageKind::Conv { groups: 1, .. } => {}
        StageKind::Conv { .. } => return Some("the conv is grouped"),
        _ => return Some("the stage is not a conv"),
    }
    if s.kernel != [3, 3] && s.kernel != [5, 5] {
        return Some("the kernel is not 3x3 or 5x5");
    }
    if s.stride != [1, 1] || s.dilation != [1, 1] {
        return Some("the conv has a stride or a dilation");
    }
    None
}

/// Tile rows and columns of `v` covering `stage`'s output.
pub fn tiles(stage: &Stage, v: Variant) -> (usize, usize) {
    (
        stage.output.h.div_ceil(v.tile()),
        stage.output.w.div_ceil(v.tile()),
    )
}

/// The transformed weight matrices `U[p] = (G g G^T)[p]` of an HWIO
/// `r x r x Ci x Co` array (`r` the variant's kernel), one per point of
/// `v`, each `[Ci][Co]` (a pointwise stage's layout), computed in f64 and
/// rounded once; `points / r^2` of the weights' size again, within the
/// process's memory budget ([`crate::budget`]) or an error.
pub fn transform_weights(
    stage: &Stage,
    weight: &[f32],
    v: Variant,
) -> Result<Vec<Vec<f32>>, DataError> {
    let (ci, co) = (stage.input.c, stage.output.c);
    let (a, r, g) = (v.window(), v.kernel(), v.g());
    assert_eq!(
        weight.len(),
        r * r * ci * co,
        "{r}x{r} weights of {ci} -> {co}"
    );
    let what = format_args!("the Winograd weights of '{}'", stage.name);
    crate::budget::check(what, (v.points() as u64 * 4).checked_mul((ci * co) as u64))?;
    let mut u = (0..v.points())
        .map(|_| crate::budget::zeroed(what, ci * co))
        .collect::<Result<Vec<_>, _>>()?;
    let mut gg = vec![0f64; a * r];
    for i in 0..ci * co {
        let w = |ky: usize, kx: usize| f64::from(weight[(ky * r + kx) * ci * co + i]);
        // G g: a x r, then (G g) G^T: a x a.
        for p in 0..a {
            for kx in 0..r {
                gg[p * r + kx] = (0..r).map(|ky| g[p * r + ky] * w(ky, kx)).sum();
            }
        }
        for p in 0..a {
            for q in 0..a {
                let x: f64 = (0..r).map(|kx| gg[p * r + kx] * g[q * r + kx]).sum();
                u[p * a + q][i] = x as f32;
            }
        }
    }
    Ok(u)
}

/// Per output of `layer` run as Winograd's `v`, the scale of its rounding
/// (the `m` of `compare`'s `REL_TOL * (1 + m)`): the magnitudes of every
/// term each transform and product sums, carried through with the
/// transforms' coefficients' magnitudes (`window_bound`), plus |bias| and
/// the residual's |input|: each f32 rounding along the way is at most a
/// few ulps of it. Non-finite inputs count 0: the outputs they reach are
/// compared exactly, and the kernel runs an image whose sums are not
/// finite again the direct way.
pub fn magnitude(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
    v: Variant,
) -> Result<Vec<f32>, DataError> {
    if let Some(why) = refusal(layer) {
        return Err(DataError::tensor("layer", why));
    }
    chain_magnitude(layer, weights, input, batch, &[Some(v)])
}

/// [`magnitude`] for a layer of several stages where those given a
/// variant in `winograd` run as it and the others directly: the bound is
/// carried from stage to stage (an input's scale is the bound of the
/// stage before), a direct stage's as the interpreter's (`sum |w| m +
/// |bias|`), a Winograd stage's over its tiles' windows; the last stage's
/// residual adds the layer's |input|. Non-finite values count 0, as in
/// [`magnitude`].
pub fn chain_magnitude(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
    winograd: &[Option<Variant>],
) -> Result<Vec<f32>, DataError> {
    weights.check(layer)?;
    if input.len() != batch * layer.input.len() {
        return Err(DataError::tensor(
            "input",
            "length does not match the batch",
        ));
    }
    if winograd.len() != layer.stages.len() {
        return Err(DataError::tensor("layer", "one Winograd flag per stage"));
    }
    let finite = |v: f32| if v.is_finite() { v.abs() } else { 0.0 };
    let abs_input: Vec<f32> = input.iter().map(|&v| finite(v)).collect();
    let mut mag = abs_input.clone();
    for ((s, w), &wino) in layer.stages.iter().zip(weights.stages()).zip(winograd) {
        let residual = s.residual.then_some(&abs_input[..]);
        mag = match wino {
            Some(v) => {
                if let Some(why) = stage_refusal(s) {
                    return Err(DataError::tensor("layer", why));
                }
                if s.kernel != [v.kernel(); 2] {
                    let why = format!("{} does not compute a {:?} kernel", v.name(), s.kernel);
                    return Err(DataError::tensor("layer", why));
                }
                window_bound(s, w, &mag, batch, residual, v)?
            }
            None => crate::interp::abs_sums(s, w, &mag, batch, residual),
        };
        for m in &mut mag {
            *m = finite(*m);
        }
    }
    Ok(mag)
}

/// The Winograd bound of stage `s` (a 3x3 or 5x5 conv) run as `v` on inputs of
/// scale `x` (`batch` images): per output `k` of a tile, the first-order
/// propagation of every rounding through the transforms,
///
/// ```text
/// sum_ci sum_p |A^T A|[k][p] (|G| |g| |G|^T)[p] (|B|^T |d| |B|)[p]
/// ```
///
/// (`d` the tile's window of `x`, `g` the (ci, co) kernel), plus |bias| and
/// the residual's scale: each transformed value is rounded relative to the
/// sum of its terms' magnitudes, and the products and the output
/// transform carry those with the coefficients' magnitudes. Where no
/// coefficient exceeds 1 (F(2x2, 3x3)) the old, simpler form, the window's
/// sum times the taps' sum, is at least this; F(4x4, 3x3)'s coefficients
/// (up to 25 in `B^T d B`, 64 in `A^T m A`) make this form the one that
/// both covers its rounding and stays tight enough to catch a wrong
/// transform.
fn window_bound(
    s: &Stage,
    w: &StageWeights,
    x_all: &[f32],
    batch: usize,
    residual: Option<&[f32]>,
    v: Variant,
) -> Result<Vec<f32>, DataError> {
    let (i, o) = (s.input, s.output);
    let (ci, co) = (i.c, o.c);
    let (m, a, points) = (v.tile(), v.window(), v.points());
    let abs = |t: &[f64]| t.iter().map(|c| c.abs()).collect::<Vec<f64>>();
    let (bt, at) = (abs(v.bt()), abs(v.at()));
    let (g, r) = (v.g(), v.kernel());
    let what = format_args!("the Winograd bound of '{}'", s.name);
    // |G| |g| |G|^T per point, [p][ci][co].
    let mut gabs = crate::budget::zeroed(what, points * ci * co)?;
    for k in 0..ci * co {
        let tap = |ky: usize, kx: usize| f64::from(w.weight[(ky * r + kx) * ci * co + k]).abs();
        for p in 0..a {
            for q in 0..a {
                let mut sum = 0f64;
                for ky in 0..r {
                    for kx in 0..r {
                        sum += (g[p * r + ky] * g[q * r + kx]).abs() * tap(ky, kx);
                    }
                }
                gabs[(p * a + q) * ci * co + k] = sum as f32;
            }
        }
    }
    let (th, tw) = tiles(s, v);
    let mut mag = crate::budget::zeroed(what, batch * o.len())?;
    // Per tile: the window's |d| [w][ci], |B|^T |d| |B| [p][ci], the
    // products' bounds [p][co].
    let mut d = vec![0f64; points * ci];
    let mut half = vec![0f64; points * ci];
    let mut xb = vec![0f64; points * ci];
    let mut mb = vec![0f64; points * co];
    let mut rows = vec![0f64; m * a * co];
    for n in 0..batch {
        let x = &x_all[n * i.len()..][..i.len()];
        for ty in 0..th {
            for tx in 0..tw {
                d.fill(0.0);
                for r in 0..a {
                    for c in 0..a {
                        let (y, xx) = (
                            (ty * m + r).checked_sub(s.padding.top),
                            (tx * m + c).checked_sub(s.padding.left),
                        );
                        let (Some(y), Some(xx)) = (y, xx) else {
                            continue;
                        };
                        if y >= i.h || xx >= i.w {
                            continue;
                        }
                        let src = &x[(y * i.w + xx) * ci..][..ci];
                        for (acc, val) in d[(r * a + c) * ci..][..ci].iter_mut().zip(src) {
                            if val.is_finite() {
                                *acc = f64::from(val.abs());
                            }
                        }
                    }
                }
                // |B|^T |d|, then (.) |B|: two one-dimensional passes.
                half.fill(0.0);
                xb.fill(0.0);
                left_mul(&bt, a, a * ci, &d, &mut half);
                for p in 0..a {
                    let span = a * ci;
                    let (src, dst) = (&half[p * span..][..span], &mut xb[p * span..][..span]);
                    left_mul(&bt, a, ci, src, dst);
                }
                // The products' bounds, summed over the input channels.
                mb.fill(0.0);
                for p in 0..points {
                    let out = &mut mb[p * co..][..co];
                    for (k, &xv) in xb[p * ci..][..ci].iter().enumerate() {
                        if xv == 0.0 {
                            continue;
                        }
                        let gk = &gabs[(p * ci + k) * co..][..co];
                        for (acc, &gv) in out.iter_mut().zip(gk) {
                            *acc += xv * f64::from(gv);
                        }
                    }
                }
                // |A|^T (.) |A|: rows, then each output.
                rows.fill(0.0);
                left_mul(&at, m, a * co, &mb, &mut rows);
                for k in 0..m * m {
                    let (oy, ox) = (k / m, k % m);
                    let (y, xx) = (ty * m + oy, tx * m + ox);
                    if y >= o.h || xx >= o.w {
                        continue;
                    }
                    for c in 0..co {
                        let sum: f64 = (0..a)
                            .map(|q| at[ox * a + q] * rows[(oy * a + q) * co + c])
                            .sum();
                        let bias = w.bias.as_ref().map_or(0.0, |b| f64::from(b[c]).abs());
                        let at = n * o.len() + (y * o.w + xx) * co + c;
                        let res = residual.map_or(0.0, |r| f64::from(r[at]));
                        mag[at] = (sum + bias + res) as f32;
                    }
                }
            }
        }
    }
    Ok(mag)
}

/// `dst += mat src` along the first axis: `mat` is `n x a` (row-major),
/// `src` `a` rows and `dst` `n` rows of `len` values each; zero
/// coefficients skipped (the bound's matrices are mostly zeros).
fn left_mul(mat: &[f64], n: usize, len: usize, src: &[f64], dst: &mut [f64]) {
    let a = mat.len() / n;
    for (i, out) in dst.chunks_exact_mut(len).take(n).enumerate() {
        for (r, row) in src.chunks_exact(len).take(a).enumerate() {
            let k = mat[i * a + r];
            if k != 0.0 {
                for (o, x) in out.iter_mut().zip(row) {
                    *o += k * x;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile_source, interpret, Rng};

    fn layer(src: &str) -> Layer {
        compile_source(src).unwrap().remove(0)
    }

    /// Each variant in f64 from its transformed weights: the direct sum's
    /// values, so the transforms are the ones the runtime relies on.
    #[test]
    fn transformed_weights_give_the_direct_sum_in_f64() {
        for v in Variant::ALL {
            let r = v.kernel();
            let src = format!("layer l {{ input 7x6x3\n c: conv {r}x{r} -> 2, pad same }}");
            let l = layer(&src);
            let w = Weights::random(&l, 3);
            let x = Rng::new(4).vec(l.input.len(), 1.0);
            let want = interpret(&l, &w, &x, 1).unwrap();
            let s = &l.stages[0];
            let (ci, co, pad) = (3, 2, (r / 2) as isize);
            let at = |y: isize, xx: isize, c: usize| {
                if y < 0 || xx < 0 || y >= 7 || xx >= 6 {
                    0.0
                } else {
                    f64::from(x[((y * 6 + xx) as usize) * ci + c])
                }
            };
            let u = transform_weights(s, &w.stages()[0].weight, v).unwrap();
            assert_eq!(u.len(), v.points());
            let (th, tw) = tiles(s, v);
            let (m, a) = (v.tile(), v.window());
            let (bt, at_) = (v.bt(), v.at());
            for ty in 0..th {
                for tx in 0..tw {
                    // B^T d B per channel, times U, summed: M[o][p][q].
                    let mut mm = vec![vec![0f64; a * a]; co];
                    for c in 0..ci {
                        let d = |r: usize, q: usize| {
                            at((ty * m + r) as isize - pad, (tx * m + q) as isize - pad, c)
                        };
                        for p in 0..a {
                            for q in 0..a {
                                let val: f64 = (0..a)
                                    .flat_map(|r| (0..a).map(move |k| (r, k)))
                                    .map(|(r, k)| bt[p * a + r] * d(r, k) * bt[q * a + k])
                                    .sum();
                                for (o, mo) in mm.iter_mut().enumerate() {
                                    mo[p * a + q] += val * f64::from(u[p * a + q][c * co + o]);
                                }
                            }
                        }
                    }
                    // A^T M A.
                    for (o, mo) in mm.iter().enumerate() {
                        for oy in 0..m {
                            for ox in 0..m {
                                let (y, xx) = (ty * m + oy, tx * m + ox);
                                if y >= 7 || xx >= 6 {
                                    continue;
                                }
                                let got: f64 = (0..a)
                                    .flat_map(|p| (0..a).map(move |q| (p, q)))
                                    .map(|(p, q)| at_[oy * a + p] * mo[p * a + q] * at_[ox * a + q])
                                    .sum();
                                let want = f64::from(want[(y * 6 + xx) * co + o]);
                                assert!(
                                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                                    "{v:?}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(Variant::of(4, 3), Some(Variant::F4));
        assert_eq!(Variant::of(2, 5), Some(Variant::F2K5));
        assert_eq!(Variant::of(4, 5), None);
        assert_eq!(Variant::of(3, 3), None);
    }

    #[test]
    fn only_a_lone_ungrouped_3x3_or_5x5_conv_of_stride_1_qualifies() {
        let ok =
            layer("layer l { input 8x8x4\n c: conv 3x3 -> 4, pad same, bias, relu, residual }");
        assert_eq!(refusal(&ok), None);
        for (src, why) in [
            (
                "layer l { input 8x8x4\n c: conv 3x3 -> 4, stride 2 }",
                "stride",
            ),
            (
                "layer l { input 8x8x4\n c: conv 3x3 -> 4, dilation 2 }",
                "stride",
            ),
            ("layer l { input 8x8x4\n c: conv 7x7 -> 4 }", "3x3 or 5x5"),
            (
                "layer l { input 8x8x4\n c: conv 3x3 -> 4, groups 2 }",
                "grouped",
            ),
            ("layer l { input 8x8x4\n c: depthwise 3x3 }", "not a conv"),
            (
                "layer l { input 8x8x4\n c: conv 3x3 -> 4\n p: pointwise 4 }",
                "more than one",
            ),
        ] {
            assert!(
                refusal(&layer(src)).is_some_and(|r| r.contains(why)),
                "{src}"
            );
        }
    }

    #[test]
    fn magnitude_refuses_what_cannot_run_and_ignores_non_finite_inputs() {
        let l = layer("layer l { input 4x4x1\n c: conv 3x3 -> 1, pad same }");
        let w = Weights::random(&l, 1);
        let mut x = vec![1.0f32; 16];
        let finite = magnitude(&l, &w, &x, 1, Variant::F2).unwrap();
        x[0] = f32::INFINITY;
        x[1] = f32::NAN;
        let m = magnitude(&l, &w, &x, 1, Variant::F4).unwrap();
        assert!(m.iter().all(|v| v.is_finite()));
        // F(4x4)'s windows differ; both finite, and each non-finite input drops.
        let m2 = magnitude(&l, &w, &x, 1, Variant::F2).unwrap();
        assert!(m2.iter().zip(&finite).all(|(a, b)| a <= b));
        assert!(m.iter().all(|v| v.is_finite()));
        assert!(magnitude(&l, &w, &x, 2, Variant::F2).is_err());
        let two = layer("layer l { input 4x4x1\n c: conv 3x3 -> 1, stride 2 }");
        assert!(magnitude(&two, &Weights::random(&two, 1), &x, 1, Variant::F4).is_err());
    }

    /// Carried through stages, a direct stage's bound is the interpreter's
    /// own (finite data); a lone Winograd stage's is [`magnitude`]; the
    /// Winograd bound of a stage is at least its direct bound.
    #[test]
    fn chain_magnitudes_are_the_interpreters_where_no_stage_runs_winograd() {
        let l = layer(
            "layer l { input 7x9x5\n p: pointwise 6, bias, relu\n c: conv 3x3 -> 6, pad same, bias\n q: pointwise 5, residual }",
        );
        let w = Weights::random(&l, 5);
        let x = Rng::new(6).vec(2 * l.input.len(), 1.0);
        let (_, direct) = crate::interpret_with_magnitude(&l, &w, &x, 2).unwrap();
        let chain = chain_magnitude(&l, &w, &x, 2, &[None; 3]).unwrap();
        for (a, b) in chain.iter().zip(&direct) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        }
        let wino = chain_magnitude(&l, &w, &x, 2, &[None, Some(Variant::F2), None]).unwrap();
        assert!(wino
            .iter()
            .zip(&chain)
            .all(|(a, b)| *a >= *b * (1.0 - 1e-6)));
        assert!(wino.iter().zip(&chain).any(|(a, b)| *a > *b * 1.5));
        // Only a conv of the variant's kernel can be marked; one flag per stage.
        assert!(chain_magnitude(&l, &w, &x, 2, &[Some(Variant::F2), None, None]).is_err());
        assert!(chain_magnitude(&l, &w, &x, 2, &[None, Some(Variant::F2K5), None]).is_err());
        assert!(chain_magnitude(&l, &w, &x, 2, &[None]).is_err());
        for v in Variant::ALL {
            let r = v.kernel();
            let lone = layer(&format!(
                "layer l {{ input 6x6x3\n c: conv {r}x{r} -> 4, pad same, bias }}"
            ));
            let w = Weights::random(&lone, 1);
            let x = Rng::new(2).vec(lone.input.len(), 1.0);
            assert_eq!(
                magnitude(&lone, &w, &x, 1, v).unwrap(),
                chain_magnitude(&lone, &w, &x, 1, &[Some(v)]).unwrap()
            );
        }
    }
}
