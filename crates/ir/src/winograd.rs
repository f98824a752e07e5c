//! Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016): a 3x3
//! stride-1 convolution computed per 2x2 output tile from its 4x4 input
//! window as 16 element-wise products summed over the input channels,
//!
//! ```text
//! Y = A^T [ sum_ci (G g G^T) . (B^T d B) ] A
//! ```
//!
//! 16 multiplies per tile and channel pair where the direct sum takes 36.
//! What the IR owns of it: which layers may run so ([`refusal`]), the
//! transformed weights ([`transform_weights`]), and the scale of its
//! rounding, for checks ([`magnitude`]). The rewrite is exact in real
//! arithmetic, not in f32: each product mixes every input of the window
//! and every tap, so its rounding scales with those sums, not with the
//! output's own terms. It runs only when asked for (`Options::winograd`).

use crate::error::DataError;
use crate::layer::{Layer, Stage, StageKind};
use crate::weights::{StageWeights, Weights};

/// Outputs per tile side.
pub const TILE: usize = 2;
/// Inputs per tile side (`TILE + 3 - 1`).
pub const WINDOW: usize = 4;
/// Points of a transformed tile: one product (a matrix product over the
/// channels) each.
pub const POINTS: usize = WINDOW * WINDOW;

/// `G`, the weight transform (4x3).
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// Why `layer` cannot run as F(2x2, 3x3), or `None` when it can: one
/// ungrouped 3x3 conv stage of stride 1 and dilation 1 (any padding,
/// bias, activation, residual).
pub fn refusal(layer: &Layer) -> Option<&'static str> {
    let [s] = layer.stages.as_slice() else {
        return Some("the layer has more than one stage");
    };
    stage_refusal(s)
}

/// Why `s` cannot run as F(2x2, 3x3) (see [`refusal`]), or `None`.
pub fn stage_refusal(s: &Stage) -> Option<&'static str> {
    match s.kind {
        StageKind::Conv { groups: 1, .. } => {}
        StageKind::Conv { .. } => return Some("the conv is grouped"),
        _ => return Some("the stage is not a conv"),
    }
    if s.kernel != [3, 3] {
        return Some("the kernel is not 3x3");
    }
    if s.stride != [1, 1] || s.dilation != [1, 1] {
        return Some("the conv has a stride or a dilation");
    }
    None
}

/// Tile rows and columns covering `stage`'s output.
pub fn tiles(stage: &Stage) -> (usize, usize) {
    (stage.output.h.div_ceil(TILE), stage.output.w.div_ceil(TILE))
}

/// The 16 transformed weight matrices `U[p] = (G g G^T)[p]` of an HWIO
/// `3x3xCixCo` array, each `[Ci][Co]` (a pointwise stage's layout), computed
/// in f64 and rounded once; 16/9 of the weights' size again, within the
/// process's memory budget ([`crate::budget`]) or an error.
pub fn transform_weights(stage: &Stage, weight: &[f32]) -> Result<Vec<Vec<f32>>, DataError> {
    let (ci, co) = (stage.input.c, stage.output.c);
    assert_eq!(weight.len(), 9 * ci * co, "3x3 weights of {ci} -> {co}");
    let what = format_args!("the Winograd weights of '{}'", stage.name);
    crate::budget::check(what, (POINTS as u64 * 4).checked_mul((ci * co) as u64))?;
    let mut u = (0..POINTS)
        .map(|_| crate::budget::zeroed(what, ci * co))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..ci * co {
        let g = |ky: usize, kx: usize| f64::from(weight[(ky * 3 + kx) * ci * co + i]);
        // G g: 4x3, then (G g) G^T: 4x4.
        let mut gg = [[0f64; 3]; 4];
        for (a, row) in gg.iter_mut().enumerate() {
            for (kx, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|ky| G[a][ky] * g(ky, kx)).sum();
            }
        }
        for a in 0..WINDOW {
            for b in 0..WINDOW {
                let v: f64 = (0..3).map(|kx| gg[a][kx] * G[b][kx]).sum();
                u[a * WINDOW + b][i] = v as f32;
            }
        }
    }
    Ok(u)
}

/// Per output of `layer` run as F(2x2, 3x3), the scale of its rounding
/// (the `m` of `compare`'s `REL_TOL * (1 + m)`): the sum over the input
/// channels of (the absolute inputs of the output's 4x4 tile window) x (the
/// absolute taps of its kernel), plus |bias| and the residual's |input|.
/// Every transformed value is a sum of at most those terms with
/// coefficients of at most 1 (B, A) or 9/4 (G G^T), so each f32 rounding
/// along the way is at most a few ulps of it. Non-finite inputs count 0:
/// the outputs they reach are compared exactly, and the kernel runs an
/// image whose sums are not finite again the direct way.
pub fn magnitude(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
) -> Result<Vec<f32>, DataError> {
    if let Some(why) = refusal(layer) {
        return Err(DataError::tensor("layer", why));
    }
    chain_magnitude(layer, weights, input, batch, &[true])
}

/// [`magnitude`] for a layer of several stages where those marked in
/// `winograd` run as F(2x2, 3x3) and the others directly: the bound is
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
    winograd: &[bool],
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
            true => {
                if let Some(why) = stage_refusal(s) {
                    return Err(DataError::tensor("layer", why));
                }
                window_bound(s, w, &mag, batch, residual)?
            }
            false => crate::interp::abs_sums(s, w, &mag, batch, residual),
        };
        for m in &mut mag {
            *m = finite(*m);
        }
    }
    Ok(mag)
}

/// The Winograd bound of stage `s` (a 3x3 conv) on inputs of scale `x`
/// (`batch` images): per output, sum over the input channels of `x` over
/// its tile's 4x4 window times the channel's |taps|, plus |bias| and the
/// residual's scale.
fn window_bound(
    s: &Stage,
    w: &StageWeights,
    x_all: &[f32],
    batch: usize,
    residual: Option<&[f32]>,
) -> Result<Vec<f32>, DataError> {
    let (i, o) = (s.input, s.output);
    // Per (ci, co), the sum of the kernel's |taps|.
    let taps: Vec<f64> = (0..i.c * o.c)
        .map(|k| {
            (0..9)
                .map(|t| f64::from(w.weight[t * i.c * o.c + k]).abs())
                .sum()
        })
        .collect();
    let (th, tw) = tiles(s);
    let mut mag = crate::budget::zeroed(
        format_args!("the magnitudes of '{}'", s.name),
        batch * o.len(),
    )?;
    let mut window = vec![0f64; i.c];
    for n in 0..batch {
        let x = &x_all[n * i.len()..][..i.len()];
        for ty in 0..th {
            for tx in 0..tw {
                window.fill(0.0);
                for r in 0..WINDOW {
                    for c in 0..WINDOW {
                        let (y, xx) = (
                            (ty * TILE + r).checked_sub(s.padding.top),
                            (tx * TILE + c).checked_sub(s.padding.left),
                        );
                        let (Some(y), Some(xx)) = (y, xx) else {
                            continue;
                        };
                        if y >= i.h || xx >= i.w {
                            continue;
                        }
                        for (acc, v) in window.iter_mut().zip(&x[(y * i.w + xx) * i.c..][..i.c]) {
                            if v.is_finite() {
                                *acc += f64::from(v.abs());
                            }
                        }
                    }
                }
                for co in 0..o.c {
                    let sum: f64 = (0..i.c).map(|ci| window[ci] * taps[ci * o.c + co]).sum();
                    let bias = w.bias.as_ref().map_or(0.0, |b| f64::from(b[co]).abs());
                    for (oy, ox) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let (y, xx) = (ty * TILE + oy, tx * TILE + ox);
                        if y >= o.h || xx >= o.w {
                            continue;
                        }
                        let at = n * o.len() + (y * o.w + xx) * o.c + co;
                        let res = residual.map_or(0.0, |r| f64::from(r[at]));
                        mag[at] = (sum + bias + res) as f32;
                    }
                }
            }
        }
    }
    Ok(mag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile_source, interpret, Rng};

    fn layer(src: &str) -> Layer {
        compile_source(src).unwrap().remove(0)
    }

    /// F(2x2, 3x3) in f64 from the transformed weights: the direct sum's
    /// values, so the transforms are the ones the runtime relies on.
    #[test]
    fn transformed_weights_give_the_direct_sum_in_f64() {
        let l = layer("layer l { input 5x6x3\n c: conv 3x3 -> 2, pad same }");
        let w = Weights::random(&l, 3);
        let x = Rng::new(4).vec(l.input.len(), 1.0);
        let want = interpret(&l, &w, &x, 1).unwrap();
        let s = &l.stages[0];
        let u = transform_weights(s, &w.stages()[0].weight).unwrap();
        let (th, tw) = tiles(s);
        let (ci, co) = (3, 2);
        let at = |y: isize, xx: isize, c: usize| {
            if y < 0 || xx < 0 || y >= 5 || xx >= 6 {
                0.0
            } else {
                f64::from(x[((y * 6 + xx) as usize) * ci + c])
            }
        };
        // B^T d B and A^T m A in f64, as the runtime computes them in f32.
        let bt = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
        let at_ = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
        for ty in 0..th {
            for tx in 0..tw {
                let mut m = [[[0f64; 4]; 4]; 2];
                for c in 0..ci {
                    let d = |r: usize, q: usize| {
                        at((ty * 2 + r) as isize - 1, (tx * 2 + q) as isize - 1, c)
                    };
                    for a in 0..4 {
                        for b in 0..4 {
                            let v: f64 = (0..4)
                                .flat_map(|r| (0..4).map(move |q| (r, q)))
                                .map(|(r, q)| bt[a][r] * d(r, q) * bt[b][q])
                                .sum();
                            for (o, mo) in m.iter_mut().enumerate() {
                                mo[a][b] += v * f64::from(u[a * 4 + b][c * co + o]);
                            }
                        }
                    }
                }
                for (o, mo) in m.iter().enumerate() {
                    for (oy, row) in at_.iter().enumerate() {
                        for (ox, col) in at_.iter().enumerate() {
                            let (y, xx) = (ty * 2 + oy, tx * 2 + ox);
                            if y >= 5 || xx >= 6 {
                                continue;
                            }
                            let v: f64 = (0..4)
                                .flat_map(|a| (0..4).map(move |b| (a, b)))
                                .map(|(a, b)| row[a] * mo[a][b] * col[b])
                                .sum();
                            let want = f64::from(want[(y * 6 + xx) * co + o]);
                            assert!(
                                (v - want).abs() < 1e-5 * (1.0 + want.abs()),
                                "{v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn only_a_lone_ungrouped_3x3_conv_of_stride_1_qualifies() {
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
            ("layer l { input 8x8x4\n c: conv 5x5 -> 4 }", "3x3"),
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
        let finite = magnitude(&l, &w, &x, 1).unwrap();
        x[0] = f32::INFINITY;
        x[1] = f32::NAN;
        let m = magnitude(&l, &w, &x, 1).unwrap();
        assert!(m.iter().all(|v| v.is_finite()));
        assert!(m.iter().zip(&finite).all(|(a, b)| a <= b));
        assert!(magnitude(&l, &w, &x, 2).is_err());
        let two = layer("layer l { input 4x4x1\n c: conv 3x3 -> 1, stride 2 }");
        assert!(magnitude(&two, &Weights::random(&two, 1), &x, 1).is_err());
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
        let chain = chain_magnitude(&l, &w, &x, 2, &[false; 3]).unwrap();
        for (a, b) in chain.iter().zip(&direct) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        }
        let wino = chain_magnitude(&l, &w, &x, 2, &[false, true, false]).unwrap();
        assert!(wino
            .iter()
            .zip(&chain)
            .all(|(a, b)| *a >= *b * (1.0 - 1e-6)));
        assert!(wino.iter().zip(&chain).any(|(a, b)| *a > *b * 1.5));
        // Only a 3x3 conv can be marked; one flag per stage.
        assert!(chain_magnitude(&l, &w, &x, 2, &[true, false, false]).is_err());
        assert!(chain_magnitude(&l, &w, &x, 2, &[false]).is_err());
        let lone = layer("layer l { input 6x6x3\n c: conv 3x3 -> 4, pad same, bias }");
        let w = Weights::random(&lone, 1);
        let x = Rng::new(2).vec(lone.input.len(), 1.0);
        assert_eq!(
            magnitude(&lone, &w, &x, 1).unwrap(),
            chain_magnitude(&lone, &w, &x, 1, &[true]).unwrap()
        );
    }
}
