//! Spatial separability found in the weights: a depthwise stage whose every
//! channel kernel has rank 1, or a conv stage with one input channel whose
//! every output kernel has rank 1 (Sobel, Gaussian, box filters), is
//! rewritten as a `Khx1` stage then a `1xKw` depthwise stage, with exact
//! factors. A rewrite of the layer and its weights before planning: the
//! code generators see two ordinary stages.
//!
//! On request ([`Separation::Rank`]) every such kernel is replaced by its
//! best rank-R approximation (SVD): R `Khx1` filters per kernel (the first
//! stage's outputs grow R-fold), then a grouped `1xKw` conv whose groups
//! each sum one kernel's R rows. The R parallel branches are one chain.

use crate::layer::{Activation, Layer, Padding, Stage, StageKind};
use crate::weights::{StageWeights, Weights};

/// A product may differ from the weight it stands for by this many ulps of
/// *that weight* (f32 rounding of the factors and of the product), and no
/// more: a near-rank-1 kernel is kept whole. Relative to each weight, not
/// to the kernel's largest: beside a tap of 1e6, an error of 0.2 on a tap
/// of 1 was within "4 ulps of the largest", and the separated kernel
/// printed 3.0 where the layer computes 3.2. Each output's error is then
/// at most 8 ulps (1e-6) of its magnitude (the sum of |weight x input|)
/// beyond what the whole kernel rounds: a tenth of the tolerance every
/// comparison with the interpreter allows ([`crate::REL_TOL`], 1e-5).
const ULPS: f32 = 8.0;

/// Singular values below this many ulps of a kernel's norm are its f32
/// rounding, not its rank (an approximation asked for, [`Separation::Rank`]).
const RANK_ULPS: f32 = 4.0;

/// Exact rank-1 factors of the row-major `kh x kw` kernel `k`: `col` (`kh`)
/// and `row` (`kw`) with `col[i] * row[j] == k[i][j]` to f32 rounding of
/// each weight (`ULPS` of it), taken
/// from the row and column of the largest magnitude. `None` when the kernel
/// has rank above 1 (beyond that tolerance), a weight that is not finite,
/// or a product that is zero where the weight is not, or the reverse.
///
/// The zeros must match exactly because an infinite input makes them
/// visible: the whole kernel's `0 * inf` is NaN, a tiny product times
/// `inf` is an infinity. With the same zeros, the factored sums
/// `row[j] * (sum_i col[i] * x[i][j])` are NaN, or infinite with a sign,
/// exactly where the whole kernel's sums are (a zero factor makes every
/// weight of its row or column zero).
pub fn rank1_factors(k: &[f32], kh: usize, kw: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    assert_eq!(k.len(), kh * kw, "kernel of {kh}x{kw}");
    if k.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let (pivot, max) = k
        .iter()
        .map(|x| x.abs())
        .enumerate()
        .fold(
            (0, 0f32),
            |(bi, bm), (i, m)| if m > bm { (i, m) } else { (bi, bm) },
        );
    if max == 0.0 {
        return Some((vec![0.0; kh], vec![0.0; kw]));
    }
    let (p, q) = (pivot / kw, pivot % kw);
    let col: Vec<f32> = (0..kh).map(|i| k[i * kw + q]).collect();
    let pv = k[p * kw + q] as f64;
    let row: Vec<f32> = (0..kw)
        .map(|j| (k[p * kw + j] as f64 / pv) as f32)
        .collect();
    let ulps = (ULPS * f32::EPSILON) as f64;
    let exact = (0..kh).all(|i| {
        (0..kw).all(|j| {
            let (c, r, w) = (col[i] as f64, row[j] as f64, k[i * kw + j] as f64);
            (c * r - w).abs() <= ulps * w.abs() && ((c == 0.0 || r == 0.0) == (w == 0.0))
        })
    });
    exact.then_some((col, row))
}

/// How [`separate`] rewrites stages whose kernels factor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Separation {
    /// Every stage runs whole.
    Off,
    /// Kernels of rank 1 (to f32 rounding) run as `Khx1` then `1xKw`.
    #[default]
    Exact,
    /// Every candidate kernel is replaced by its best approximation of at
    /// most this rank (fewer where the kernels have lower rank): not the
    /// same function, the note says how far from it.
    Rank(usize),
}

/// The singular value decomposition of the row-major `kh x kw` matrix `a`
/// as outer products, largest first: `(col, row)` pairs (`kh` and `kw`
/// long) whose products sum to `a`, the first R of them its best rank-R
/// approximation. One-sided Jacobi (Hestenes) in f64 over the shorter
/// side: kernels are small, and it is accurate for small singular values
/// too. Work: about `10 * min^2 * max` multiply-adds per sweep
/// ([`SVD_BUDGET`] bounds what `separate` asks for).
pub fn singular_pairs(a: &[f32], kh: usize, kw: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
    assert_eq!(a.len(), kh * kw, "kernel of {kh}x{kw}");
    // Orthogonalize the columns of `m` (`long` x `short`, as columns):
    // m v = u sigma, so m = sum of (m v_j) (x) v_j.
    let (short, long) = (kh.min(kw), kh.max(kw));
    let at = |i: usize, j: usize| {
        if kw <= kh {
            a[i * kw + j]
        } else {
            a[j * kw + i]
        }
    };
    let mut cols: Vec<Vec<f64>> = (0..short)
        .map(|j| (0..long).map(|i| at(i, j) as f64).collect())
        .collect();
    let mut v: Vec<Vec<f64>> = (0..short)
        .map(|j| (0..short).map(|i| f64::from(u8::from(i == j))).collect())
        .collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    // Each sweep rotates every pair of columns orthogonal; a few sweeps
    // converge quadratically (the bound only stops a pathological input).
    for _ in 0..SWEEPS {
        let mut rotated = false;
        for p in 0..short {
            for q in p + 1..short {
                let (alpha, beta) = (dot(&cols[p], &cols[p]), dot(&cols[q], &cols[q]));
                let gamma = dot(&cols[p], &cols[q]);
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for m in [&mut cols, &mut v] {
                    let (lo, hi) = m.split_at_mut(q);
                    for (x, y) in lo[p].iter_mut().zip(hi[0].iter_mut()) {
                        (*x, *y) = (c * *x - s * *y, s * *x + c * *y);
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut pairs: Vec<(Vec<f64>, Vec<f64>)> = cols
        .into_iter()
        .zip(v)
        .map(|(mv, v)| if kw <= kh { (mv, v) } else { (v, mv) })
        .collect();
    let size = |p: &(Vec<f64>, Vec<f64>)| dot(&p.0, &p.0) * dot(&p.1, &p.1);
    pairs.sort_by(|a, b| size(b).total_cmp(&size(a)));
    pairs
}

/// Jacobi sweeps at the most (a handful is usual).
const SWEEPS: usize = 30;

/// Multiply-adds the SVDs of one stage may take (about a second): beyond
/// it (kernels of hundreds of taps a side, times many channels) the stage
/// runs whole rather than hold up the compile.
pub const SVD_BUDGET: f64 = 2e9;

/// What [`separate`] did to one stage that could have been separated.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The stage's name in the original layer.
    pub stage: String,
    /// It runs separated.
    pub separated: bool,
    /// `every channel's 5x5 kernel has rank 1: run as 5x1 then 1x5 (25 -> 10
    /// MACs per output)`, or why not.
    pub text: String,
}

/// `layer` with every separable stage split (the same layer when none is),
/// the weights to match, and a note per stage that could have been.
pub struct Separated {
    /// The layer that runs.
    pub layer: Layer,
    /// Its weights.
    pub weights: Weights,
    /// One per stage looked at.
    pub notes: Vec<Note>,
}

impl Separated {
    /// Some stage was split.
    pub fn changed(&self) -> bool {
        self.notes.iter().any(|n| n.separated)
    }
}

/// Splits every stage of `layer` whose kernels `weights` shows to have rank 1
/// (see the module's documentation), or, with [`Separation::Rank`], every
/// candidate stage, where that saves multiply-accumulates. With exact
/// factors the result computes what `layer` does, up to f32 rounding; its
/// stages are named `S.col` and `S.row` as those of `separable spatial` are.
pub fn separate(layer: &Layer, weights: &Weights, how: Separation) -> Separated {
    try_separate(layer, weights, how).unwrap_or_else(|notes| Separated {
        layer: layer.clone(),
        weights: weights.clone(),
        notes,
    })
}

/// [`separate`], but where no stage splits, only the notes on the stages
/// looked at (`Err`): what a compile asks, so that a layer with nothing to
/// split costs no copy of its weights (megabytes for large pointwise
/// stages). Each stage is looked at once (its SVDs, for a rank).
pub fn try_separate(
    layer: &Layer,
    weights: &Weights,
    how: Separation,
) -> Result<Separated, Vec<Note>> {
    let splits: Vec<Split> = match how {
        Separation::Off => Vec::new(),
        _ => layer
            .stages
            .iter()
            .zip(weights.stages())
            .map(|(s, w)| split_stage(s, w, how))
            .collect(),
    };
    let note = |s: &Stage, separated: bool, text: &str| Note {
        stage: s.name.clone(),
        separated,
        text: text.to_string(),
    };
    if !splits.iter().any(|x| matches!(x, Split::Done(..))) {
        return Err(layer
            .stages
            .iter()
            .zip(&splits)
            .filter_map(|(s, x)| match x {
                Split::Kept(text) => Some(note(s, false, text)),
                _ => None,
            })
            .collect());
    }
    let mut stages = Vec::with_capacity(layer.stages.len() + 1);
    let mut arrays = Vec::with_capacity(layer.stages.len() + 1);
    let mut notes = Vec::new();
    for ((s, w), x) in layer.stages.iter().zip(weights.stages()).zip(splits) {
        match x {
            Split::NotCandidate => {
                stages.push(s.clone());
                arrays.push(w.clone());
            }
            Split::Kept(text) => {
                notes.push(note(s, false, &text));
                stages.push(s.clone());
                arrays.push(w.clone());
            }
            Split::Done(parts, text) => {
                notes.push(note(s, true, &text));
                for (stage, w) in *parts {
                    stages.push(stage);
                    arrays.push(w);
                }
            }
        }
    }
    let layer = Layer {
        name: layer.name.clone(),
        input: layer.input,
        stages,
    };
    let weights = Weights::new(&layer, arrays).expect("the split stages' arrays fit them");
    Ok(Separated {
        layer,
        weights,
        notes,
    })
}

/// A stage [`separate`] looks at: a depthwise stage, or a conv stage on one
/// input channel, with a kernel of at least 2x2.
pub fn is_candidate(s: &Stage) -> bool {
    let independent = match s.kind {
        StageKind::Depthwise { .. } => true,
        StageKind::Conv { .. } => s.input.c == 1,
        StageKind::Pointwise { .. } => false,
    };
    independent && s.kernel[0] >= 2 && s.kernel[1] >= 2
}

/// What [`split_stage`] made of a stage.
enum Split {
    /// Not a 2-D kernel on independent channels: nothing to look at.
    NotCandidate,
    /// Looked at, kept whole, for this reason.
    Kept(String),
    /// Split into a column stage and a row stage with their weights, for
    /// this reason.
    Done(Box<[(Stage, StageWeights); 2]>, String),
}

/// Per kernel, its column and row factors (`factors[o][r]`: kernel `o`'s
/// `r`-th pair).
type Factors = Vec<Vec<(Vec<f32>, Vec<f32>)>>;

/// Stage `s` (weights `w`) split as `how` asks, where it is a candidate
/// ([`is_candidate`]) whose kernels all factor ([`kernel_factors`]) and
/// the split saves MACs, with the reason.
fn split_stage(s: &Stage, w: &StageWeights, how: Separation) -> Split {
    let [kh, kw] = s.kernel;
    // One kernel per output channel (of one input channel each): n of them.
    let (n, what) = match s.kind {
        StageKind::Depthwise { multiplier } => (s.input.c * multiplier, "channel"),
        StageKind::Conv { cout, .. } if s.input.c == 1 => (cout, "output"),
        _ => return Split::NotCandidate,
    };
    if !is_candidate(s) {
        return Split::NotCandidate;
    }
    // Both layouts are [Kh][Kw][n] with n = C*M (output c*M + m) or Co.
    let kernels: Vec<Vec<f32>> = (0..n)
        .map(|o| (0..kh * kw).map(|t| w.weight[t * n + o]).collect())
        .collect();
    let (factors, error) = match kernel_factors(&kernels, kh, kw, what, how) {
        Ok(f) => f,
        Err(why) => return Split::Kept(why),
    };
    let r = factors.iter().map(Vec::len).max().unwrap_or(1);
    let (first, second) = factor_stages(s, n, r);
    let (before, after) = (s.macs(), first.macs() + second.macs());
    let per_out = |m: u64| fmt_per(m as f64 / (s.output.len() as f64));
    let (from, to) = (per_out(before), per_out(after));
    let (has, run) = match &error {
        None => ("has rank 1".to_string(), format!("{kh}x1 then 1x{kw}")),
        Some(e) => (
            if e.exact {
                format!("has rank at most {r}")
            } else {
                format!("approximated at rank {r}")
            },
            if r == 1 {
                format!("{kh}x1 then 1x{kw}")
            } else {
                format!("{r} {kh}x1 then {r} 1x{kw} summed")
            },
        ),
    };
    if after >= before {
        return Split::Kept(format!(
            "every {what}'s {kh}x{kw} kernel {has}, but {run} would not save work ({from} -> {to} MACs per output): run whole"
        ));
    }
    let err = error.map_or(String::new(), |e| {
        format!("; relative error {:.1e} on the weights", e.relative)
    });
    let text = format!(
        "every {what}'s {kh}x{kw} kernel {has}: run as {run} ({from} -> {to} MACs per output{err})"
    );
    let (cols, rows) = factor_weights(&factors, kh, kw, r);
    let parts = [
        (
            first,
            StageWeights {
                weight: cols,
                bias: None,
            },
        ),
        (
            second,
            StageWeights {
                weight: rows,
                bias: w.bias.clone(),
            },
        ),
    ];
    Split::Done(Box::new(parts), text)
}

/// The factors of the `kh x kw` `kernels` (each one's `what`: channel or
/// output): exact rank-1 ones, or for [`Separation::Rank`] the best
/// approximations (with their error) where some kernel has none; or why
/// the stage runs whole.
fn kernel_factors(
    kernels: &[Vec<f32>],
    kh: usize,
    kw: usize,
    what: &str,
    how: Separation,
) -> Result<(Factors, Option<ApproxError>), String> {
    let n = kernels.len();
    // NaN or an infinity has no factors, nor an approximation (its SVD is
    // NaN): the whole kernel keeps the contract's NaN and infinities.
    if let Some(o) = kernels
        .iter()
        .position(|k| k.iter().any(|x| !x.is_finite()))
    {
        return Err(format!(
            "{what} {o}'s {kh}x{kw} kernel has a weight that is not finite: run whole"
        ));
    }
    // Exact rank-1 factors, up to the first kernel that has none.
    let mut exact = Vec::with_capacity(n);
    let refused = kernels.iter().position(|k| match rank1_factors(k, kh, kw) {
        Some(f) => {
            exact.push(vec![f]);
            false
        }
        None => true,
    });
    match (refused, how) {
        (None, _) => Ok((exact, None)),
        (Some(_), Separation::Rank(rank)) => {
            let (short, long) = (kh.min(kw) as f64, kh.max(kw) as f64);
            let work = n as f64 * 10.0 * short * short * long * 8.0;
            if work > SVD_BUDGET {
                return Err(format!(
                    "{n} {kh}x{kw} kernels are too large to approximate at compile time: run whole"
                ));
            }
            let (f, e) = best_rank(kernels, kh, kw, rank.max(1));
            Ok((f, Some(e)))
        }
        (Some(o), _) => Err(format!(
            "{what} {o}'s {kh}x{kw} kernel has rank above 1: run whole"
        )),
    }
}

/// The two stages that replace `s` (`n` kernels, `r` factor pairs each):
/// a `Khx1` stage with the vertical stride, dilation and padding, whose
/// output channel `o*r + k` is kernel `o`'s `k`-th column filter, then a
/// `1xKw` stage (depthwise for `r = 1`, else a conv of `n` groups summing
/// each kernel's `r` filters) with the horizontal ones, the bias,
/// activation and residual.
fn factor_stages(s: &Stage, n: usize, r: usize) -> (Stage, Stage) {
    let [kh, kw] = s.kernel;
    // The first stage's output channel o*r + k is kernel o's k-th column
    // filter (for r = 1, o itself): a multiplier r times the stage's, or r
    // times its outputs.
    let first_kind = match s.kind {
        StageKind::Depthwise { multiplier } => StageKind::Depthwise {
            multiplier: multiplier * r,
        },
        _ => StageKind::Conv {
            cout: n * r,
            groups: 1,
        },
    };
    let mid = crate::layer::Shape::new(s.output.h, s.input.w, n * r);
    let p = s.padding;
    let first = Stage {
        name: format!("{}.col", s.name),
        kind: first_kind,
        input: s.input,
        output: mid,
        kernel: [kh, 1],
        stride: [s.stride[0], 1],
        dilation: [s.dilation[0], 1],
        padding: Padding {
            left: 0,
            right: 0,
            ..p
        },
        weight_key: format!("{}.col.weight", s.name),
        bias_key: None,
        activation: Activation::None,
        residual: false,
    };
    let second = Stage {
        name: format!("{}.row", s.name),
        kind: if r == 1 {
            StageKind::Depthwise { multiplier: 1 }
        } else {
            StageKind::Conv { cout: n, groups: n }
        },
        input: mid,
        output: s.output,
        kernel: [1, kw],
        stride: [1, s.stride[1]],
        dilation: [1, s.dilation[1]],
        padding: Padding {
            top: 0,
            bottom: 0,
            ..p
        },
        weight_key: format!("{}.row.weight", s.name),
        ..s.clone()
    };
    (first, second)
}

/// The weights of [`factor_stages`]' stages from the factors: the
/// column filters `[Kh][1][n*r]`, the row filters `[1][Kw][n]` (r = 1) or
/// `[1][Kw][r][n]` (group `o` reads channels `o*r..o*r + r`).
fn factor_weights(factors: &Factors, kh: usize, kw: usize, r: usize) -> (Vec<f32>, Vec<f32>) {
    let n = factors.len();
    let mut cols = vec![0f32; kh * n * r];
    let mut rows = vec![0f32; kw * r * n];
    for (o, f) in factors.iter().enumerate() {
        for (k, (col, row)) in f.iter().enumerate() {
            for i in 0..kh {
                cols[i * n * r + o * r + k] = col[i];
            }
            // Depthwise [1][Kw][n] (r = 1), or grouped [1][Kw][r][n]:
            // group o reads channels o*r..o*r + r.
            for j in 0..kw {
                rows[(j * r + k) * n + o] = row[j];
            }
        }
    }
    (cols, rows)
}

/// How far a rank-R approximation is from the weights.
struct ApproxError {
    /// Frobenius norm of the difference over all kernels, relative to theirs.
    relative: f64,
    /// Every kernel has rank at most R (to f32 rounding): the difference is
    /// rounding only.
    exact: bool,
}

/// Each of `kernels`' best approximation of rank at most `rank`, all
/// of the same rank (the highest any kernel needs, up to `rank`): per kernel,
/// `r` pairs of column (`kh`) and row (`kw`) factors.
fn best_rank(kernels: &[Vec<f32>], kh: usize, kw: usize, rank: usize) -> (Factors, ApproxError) {
    let pairs: Vec<_> = kernels.iter().map(|k| singular_pairs(k, kh, kw)).collect();
    // A kernel read from f32 has singular values of its rounding, about
    // eps of its norm: those beyond it are its rank.
    let norm = |c: &[f64]| c.iter().map(|x| x * x).sum::<f64>().sqrt();
    let needed = |p: &[(Vec<f64>, Vec<f64>)]| {
        let size: Vec<f64> = p.iter().map(|(c, r)| norm(c) * norm(r)).collect();
        let tol =
            RANK_ULPS as f64 * f32::EPSILON as f64 * size.iter().map(|s| s * s).sum::<f64>().sqrt();
        size.iter().filter(|&&s| s > tol).count()
    };
    let full = pairs.iter().map(|p| needed(p)).max().unwrap_or(0);
    let r = rank.min(full).max(1);
    let (mut diff, mut total) = (0f64, 0f64);
    let factors = pairs
        .iter()
        .enumerate()
        .map(|(o, p)| {
            let f: Vec<(Vec<f32>, Vec<f32>)> = p[..r]
                .iter()
                .map(|(c, v)| {
                    let c = c.iter().map(|&x| x as f32).collect();
                    let v = v.iter().map(|&x| x as f32).collect();
                    (c, v)
                })
                .collect();
            // Measured on the f32 factors the kernel will run with.
            for (t, &x) in kernels[o].iter().enumerate() {
                let (i, j) = (t / kw, t % kw);
                let y: f64 = f.iter().map(|(c, v)| c[i] as f64 * v[j] as f64).sum();
                diff += (y - x as f64).powi(2);
                total += (x as f64).powi(2);
            }
            f
        })
        .collect();
    let relative = if total > 0.0 {
        (diff / total).sqrt()
    } else {
        0.0
    };
    (
        factors,
        ApproxError {
            relative,
            exact: r >= full,
        },
    )
}

/// `10`, or `7.5` when not whole.
fn fmt_per(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round())
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile_source, interpret, Rng};

    fn outer(c: &[f32], r: &[f32]) -> Vec<f32> {
        c.iter()
            .flat_map(|a| r.iter().map(move |b| a * b))
            .collect()
    }

    #[test]
    fn sobel_gaussian_and_box_factor_exactly() {
        let sobel = outer(&[1.0, 2.0, 1.0], &[-1.0, 0.0, 1.0]);
        let (c, r) = rank1_factors(&sobel, 3, 3).unwrap();
        assert_eq!(outer(&c, &r), sobel);
        let g: Vec<f32> = (0..7)
            .map(|i| (-((i as f32 - 3.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
            .collect();
        let s: f32 = g.iter().sum();
        let g: Vec<f32> = g.iter().map(|x| x / s).collect();
        assert!(rank1_factors(&outer(&g, &g), 7, 7).is_some());
        assert!(rank1_factors(&[1.0 / 81.0; 81], 9, 9).is_some());
        assert_eq!(
            rank1_factors(&[0.0; 6], 2, 3),
            Some((vec![0.0; 2], vec![0.0; 3]))
        );
    }

    #[test]
    fn rank_two_and_near_rank_one_are_refused() {
        let laplace = [0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0];
        assert_eq!(rank1_factors(&laplace, 3, 3), None);
        let mut k = outer(&[1.0, 2.0, 1.0], &[1.0, 2.0, 1.0]);
        k[0] *= 1.0 + 1e-5; // 40 ulps off
        assert_eq!(rank1_factors(&k, 3, 3), None);
        assert_eq!(rank1_factors(&[f32::NAN; 4], 2, 2), None);
    }

    #[test]
    fn a_small_tap_beside_huge_ones_is_exact_or_kept_whole() {
        // outer([1e6, 1, 1], [1, 1, 1]) with 0.2 added at one tap: within
        // 4 ulps of the largest weight, but 20% of its own.
        let mut k = outer(&[1e6, 1.0, 1.0], &[1.0, 1.0, 1.0]);
        k[7] += 0.2;
        assert_eq!(rank1_factors(&k, 3, 3), None);
        let exact = outer(&[1e6, 1.0, 1.0], &[1.0, 1.0, 1.0]);
        assert!(rank1_factors(&exact, 3, 3).is_some());
        // Every product of accepted factors is within ULPS of its weight.
        let mut rng = crate::Rng::new(5);
        for _ in 0..200 {
            let mut c = rng.vec(5, 1.0);
            c[0] *= 1e6;
            let k = outer(&c, &rng.vec(4, 1.0));
            let (col, row) = rank1_factors(&k, 5, 4).expect("an outer product factors");
            for i in 0..5 {
                for j in 0..4 {
                    let (p, w) = (col[i] as f64 * row[j] as f64, k[i * 4 + j] as f64);
                    assert!((p - w).abs() <= 8.0 * f32::EPSILON as f64 * w.abs());
                }
            }
        }
    }

    #[test]
    fn zeros_must_match_and_non_finite_kernels_run_whole() {
        // A product 1e-8 standing for a 0 (whose `0 * inf` is NaN where
        // `1e-8 * inf` is not).
        let k = [1.0, 1e-8, 1.0, 0.0];
        assert_eq!(rank1_factors(&k, 2, 2), None);
        let k = [1.0, 1e-8, 1.0, 1e-8];
        assert!(rank1_factors(&k, 2, 2).is_some());
        // Sobel's zero column is a zero row factor: it factors.
        let sobel = [-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0];
        assert!(rank1_factors(&sobel, 3, 3).is_some());
        // An infinite weight: not separated, exactly or approximately.
        let l = layer("layer d { input 9x9x2\n d: depthwise 3x3 }");
        let mut w = outer(&[1.0, 2.0, 1.0], &[1.0, 2.0, 1.0])
            .into_iter()
            .flat_map(|x| [x, x])
            .collect::<Vec<f32>>();
        w[7] = f32::INFINITY;
        let weights = one_stage(&l, w, None);
        for how in [Separation::Exact, Separation::Rank(2)] {
            let s = separate(&l, &weights, how);
            assert!(!s.changed(), "{how:?}");
            assert!(
                s.notes[0].text.contains("not finite"),
                "{}",
                s.notes[0].text
            );
        }
    }

    /// Weights of a one-stage layer.
    fn one_stage(l: &Layer, weight: Vec<f32>, bias: Option<Vec<f32>>) -> Weights {
        Weights::new(l, vec![StageWeights { weight, bias }]).unwrap()
    }

    fn layer(text: &str) -> Layer {
        compile_source(text).unwrap().remove(0)
    }

    #[test]
    fn depthwise_with_multiplier_splits_padding_stride_and_bias() {
        let l = layer(
            "layer d { input 11x13x2\n dw: depthwise 5x3, multiplier 2, stride 2x1, dilation 1x2, pad 1 2 0 1, bias, relu }",
        );
        let mut rng = Rng::new(5);
        // [Kh][Kw][C][M]: the kernel of output o is col_o (x) row_o.
        let (cols, rows) = (rng.vec(5 * 4, 1.0), rng.vec(3 * 4, 1.0));
        let mut w = vec![0f32; 5 * 3 * 4];
        for i in 0..5 {
            for j in 0..3 {
                for o in 0..4 {
                    w[(i * 3 + j) * 4 + o] = cols[i * 4 + o] * rows[j * 4 + o];
                }
            }
        }
        let bias = Some(rng.vec(4, 1.0));
        let weights = one_stage(&l, w, bias.clone());
        let s = separate(&l, &weights, Separation::Exact);
        assert!(s.changed());
        crate::check_layer(&s.layer).unwrap();
        let [a, b] = &s.layer.stages[..] else {
            panic!("two stages")
        };
        assert_eq!(
            (a.kernel, a.stride, a.kind),
            ([5, 1], [2, 1], l.stages[0].kind)
        );
        assert_eq!((a.padding.top, a.padding.bottom, a.padding.left), (1, 2, 0));
        assert_eq!((a.bias_key.clone(), a.activation), (None, Activation::None));
        assert_eq!((b.kernel, b.stride, b.dilation), ([1, 3], [1, 1], [1, 2]));
        assert_eq!((b.padding.left, b.padding.right, b.padding.top), (0, 1, 0));
        assert_eq!(
            (b.kind, b.activation),
            (StageKind::Depthwise { multiplier: 1 }, Activation::Relu)
        );
        assert_eq!(s.weights.stages()[1].bias, bias);
        assert_eq!(b.output, l.stages[0].output);
        let x = rng.vec(l.input.len() * 2, 1.0);
        let want = interpret(&l, &weights, &x, 2).unwrap();
        let got = interpret(&s.layer, &s.weights, &x, 2).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    #[test]
    fn filter_bank_on_one_channel_splits_and_laplacian_does_not() {
        let l = layer("layer s { input 6x7x1\n f: conv 3x3 -> 2, pad same }");
        let kx = outer(&[1.0, 2.0, 1.0], &[-1.0, 0.0, 1.0]);
        let ky = outer(&[-1.0, 0.0, 1.0], &[1.0, 2.0, 1.0]);
        let w: Vec<f32> = (0..9).flat_map(|t| [kx[t], ky[t]]).collect();
        let weights = one_stage(&l, w, None);
        let s = separate(&l, &weights, Separation::Exact);
        assert_eq!(
            s.notes[0].text,
            "every output's 3x3 kernel has rank 1: run as 3x1 then 1x3 (9 -> 6 MACs per output)"
        );
        assert_eq!(
            s.layer.stages[0].kind,
            StageKind::Conv { cout: 2, groups: 1 }
        );
        let x = Rng::new(1).vec(42, 1.0);
        let want = interpret(&l, &weights, &x, 1).unwrap();
        let got = interpret(&s.layer, &s.weights, &x, 1).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{g} vs {w}");
        }

        let l = layer("layer s { input 6x7x1\n f: depthwise 3x3, pad same }");
        let lap = vec![0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0];
        let weights = one_stage(&l, lap, None);
        let s = separate(&l, &weights, Separation::Exact);
        assert!(!s.changed());
        assert_eq!(s.layer, l);
        assert_eq!(
            s.notes[0].text,
            "channel 0's 3x3 kernel has rank above 1: run whole"
        );
    }

    #[test]
    fn no_gain_and_non_candidates_are_left_alone() {
        // Stride 3 in W: 3x1 over every column costs as much as 3x3 on a third.
        let l = layer("layer s { input 9x9x1\n f: depthwise 3x3, stride 1x3 }");
        let weights = Weights::new(
            &l,
            vec![StageWeights {
                weight: vec![1.0; 9],
                bias: None,
            }],
        )
        .unwrap();
        let s = separate(&l, &weights, Separation::Exact);
        assert!(!s.changed() && s.notes[0].text.contains("would not save work"));
        let l =
            layer("layer s { input 9x9x2\n c: conv 3x3 -> 2\n p: pointwise 3\n k: conv 1x5 -> 1 }");
        let s = separate(&l, &Weights::random(&l, 1), Separation::Exact);
        assert!(s.notes.is_empty() && s.layer == l);
    }

    /// `sum_k c_k (x) r_k`, a kernel of rank (at most) the number of pairs.
    fn sum_outer(pairs: &[(Vec<f32>, Vec<f32>)]) -> Vec<f32> {
        let mut k = outer(&pairs[0].0, &pairs[0].1);
        for (c, r) in &pairs[1..] {
            for (a, b) in k.iter_mut().zip(outer(c, r)) {
                *a += b;
            }
        }
        k
    }

    #[test]
    fn singular_pairs_rebuild_the_kernel_largest_first() {
        let mut rng = Rng::new(3);
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
        for (kh, kw) in [(3, 3), (5, 2), (2, 7), (9, 9), (1, 4)] {
            let k = rng.vec(kh * kw, 1.0);
            let p = singular_pairs(&k, kh, kw);
            assert_eq!(p.len(), kh.min(kw));
            let sigma: Vec<f64> = p
                .iter()
                .map(|(c, r)| (dot(c, c) * dot(r, r)).sqrt())
                .collect();
            assert!(sigma.windows(2).all(|w| w[0] >= w[1]), "{sigma:?}");
            for (t, &x) in k.iter().enumerate() {
                let y: f64 = p.iter().map(|(c, v)| c[t / kw] * v[t % kw]).sum();
                assert!((y - x as f64).abs() < 1e-12, "{kh}x{kw}: {y} vs {x}");
            }
            // Both sides' factors are orthogonal.
            for (a, (ca, ra)) in p.iter().enumerate() {
                for (cb, rb) in &p[a + 1..] {
                    assert!(dot(ca, cb).abs() < 1e-12 && dot(ra, rb).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn kernels_too_large_to_decompose_run_whole() {
        let l = layer("layer d { input 130x130x16\n dw: depthwise 128x128, pad same }");
        let s = separate(&l, &Weights::random(&l, 1), Separation::Rank(2));
        assert!(!s.changed());
        assert_eq!(
            s.notes[0].text,
            "16 128x128 kernels are too large to approximate at compile time: run whole"
        );
    }

    #[test]
    fn rank_r_runs_r_column_filters_then_a_grouped_row_conv() {
        let l = layer(
            "layer d { input 12x11x3\n dw: depthwise 7x5, multiplier 2, stride 2x1, pad same, bias, relu6 }",
        );
        let mut rng = Rng::new(9);
        // Every kernel of rank 2 exactly.
        let n = 6;
        let mut w = vec![0f32; 7 * 5 * n];
        for o in 0..n {
            let pairs = [
                (rng.vec(7, 1.0), rng.vec(5, 1.0)),
                (rng.vec(7, 1.0), rng.vec(5, 1.0)),
            ];
            for (t, x) in sum_outer(&pairs).into_iter().enumerate() {
                w[t * n + o] = x;
            }
        }
        let weights = one_stage(&l, w, Some(rng.vec(n, 1.0)));
        assert!(!separate(&l, &weights, Separation::Exact).changed());
        let x = rng.vec(l.input.len(), 1.0);
        let want = interpret(&l, &weights, &x, 1).unwrap();
        for rank in [2, 3] {
            let s = separate(&l, &weights, Separation::Rank(rank));
            crate::check_layer(&s.layer).unwrap();
            let [a, b] = &s.layer.stages[..] else {
                panic!("two stages")
            };
            assert_eq!(a.kind, StageKind::Depthwise { multiplier: 4 });
            assert_eq!(b.kind, StageKind::Conv { cout: 6, groups: 6 });
            assert!(
                s.notes[0].text.starts_with(
                    "every channel's 7x5 kernel has rank at most 2: run as 2 7x1 then 2 1x5 summed (35 -> "
                ),
                "{}",
                s.notes[0].text
            );
            let got = interpret(&s.layer, &s.weights, &x, 1).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
        // Rank 1 of a rank-2 kernel: an approximation, and says how far.
        let s = separate(&l, &weights, Separation::Rank(1));
        assert_eq!(
            s.layer.stages[1].kind,
            StageKind::Depthwise { multiplier: 1 }
        );
        let text = &s.notes[0].text;
        assert!(
            text.contains("approximated at rank 1: run as 7x1 then 1x5"),
            "{text}"
        );
        let e: f64 = text
            .rsplit("relative error ")
            .next()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(e > 1e-2 && e < 1.0, "{text}");
    }

    #[test]
    fn rank_r_of_a_filter_bank_matches_its_truncated_svd() {
        // Sobel and the Laplacian on one channel: rank 1 and rank 2.
        let l = layer("layer s { input 9x8x1\n f: conv 3x3 -> 2, pad same }");
        let kx = outer(&[1.0, 2.0, 1.0], &[-1.0, 0.0, 1.0]);
        let lap = [0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0];
        let w: Vec<f32> = (0..9).flat_map(|t| [kx[t], lap[t]]).collect();
        let weights = one_stage(&l, w, None);
        // Rank 2 of a 3x3: 12 MACs for 9, no gain.
        let s = separate(&l, &weights, Separation::Rank(2));
        assert!(!s.changed());
        assert!(
            s.notes[0]
                .text
                .contains("would not save work (9 -> 12 MACs"),
            "{}",
            s.notes[0].text
        );
        // A 9x9 Laplacian of Gaussian-like bank: rank 2 saves, and is exact.
        let l = layer("layer s { input 20x19x1\n f: conv 9x9 -> 2, pad same, bias }");
        let g: Vec<f32> = (0..9)
            .map(|i| (-((i as f32 - 4.0).powi(2)) / 8.0).exp())
            .collect();
        let d: Vec<f32> = (0..9).map(|i| (i as f32 - 4.0) * g[i]).collect();
        let k0 = sum_outer(&[(g.clone(), d.clone()), (d.clone(), g.clone())]);
        let k1 = sum_outer(&[(d.clone(), g.clone())]);
        let w: Vec<f32> = (0..81).flat_map(|t| [k0[t], k1[t]]).collect();
        let weights = one_stage(&l, w, Some(vec![0.5, -0.25]));
        let s = separate(&l, &weights, Separation::Rank(4));
        assert_eq!(
            s.layer.stages[0].kind,
            StageKind::Conv { cout: 4, groups: 1 }
        );
        assert_eq!(
            s.layer.stages[1].kind,
            StageKind::Conv { cout: 2, groups: 2 }
        );
        assert!(
            s.notes[0].text.contains("has rank at most 2"),
            "{}",
            s.notes[0].text
        );
        let x = Rng::new(4).vec(l.input.len(), 1.0);
        let want = interpret(&l, &weights, &x, 1).unwrap();
        let got = interpret(&s.layer, &s.weights, &x, 1).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
        // Off: nothing looked at.
        let s = separate(&l, &weights, Separation::Off);
        assert!(s.notes.is_empty() && s.layer == l);
    }
}
