//! Spatial separability found in the weights: a depthwise stage whose every
//! channel kernel has rank 1, or a conv stage with one input channel whose
//! every output kernel has rank 1 (Sobel, Gaussian, box filters), is
//! rewritten as a `Khx1` stage then a `1xKw` depthwise stage, with exact
//! factors. A rewrite of the layer and its weights before planning: the
//! code generators see two ordinary stages.

use crate::layer::{Activation, Layer, Padding, Stage, StageKind};
use crate::weights::{StageWeights, Weights};

/// A product may differ from the weight it stands for by this many ulps of
/// the kernel's largest magnitude (f32 rounding of the factors and of the
/// product), and no more: a near-rank-1 kernel is kept whole.
const ULPS: f32 = 4.0;

/// Exact rank-1 factors of the row-major `kh x kw` kernel `k`: `col` (`kh`)
/// and `row` (`kw`) with `col[i] * row[j] == k[i][j]` to f32 rounding, taken
/// from the row and column of the largest magnitude. `None` when the kernel
/// has rank above 1 (beyond that tolerance).
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
    let tol = (ULPS * f32::EPSILON * max) as f64;
    let exact = (0..kh).all(|i| {
        (0..kw).all(|j| ((col[i] as f64) * (row[j] as f64) - k[i * kw + j] as f64).abs() <= tol)
    });
    exact.then_some((col, row))
}

/// What [`separate`] did to one stage that could have been separated.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The stage's name in the original layer.
    pub stage: String,
    pub separated: bool,
    /// `every channel's 5x5 kernel has rank 1: run as 5x1 then 1x5 (25 -> 10
    /// MACs per output)`, or why not.
    pub text: String,
}

/// `layer` with every separable stage split (the same layer when none is),
/// the weights to match, and a note per stage that could have been.
pub struct Separated {
    pub layer: Layer,
    pub weights: Weights,
    pub notes: Vec<Note>,
}

impl Separated {
    pub fn changed(&self) -> bool {
        self.notes.iter().any(|n| n.separated)
    }
}

/// Whether [`separate`] would split any stage of `layer`: what a compile
/// asks first, so that a layer with nothing to split costs no copy of its
/// weights (megabytes for large pointwise stages).
pub fn splits_any(layer: &Layer, weights: &Weights) -> bool {
    layer
        .stages
        .iter()
        .zip(weights.stages())
        .any(|(s, w)| is_candidate(s) && matches!(split(s, w), Split::Done(..)))
}

/// Splits every stage of `layer` whose kernels `weights` shows to have rank 1
/// (see the module's documentation), where that saves multiply-accumulates.
/// The result computes what `layer` does, up to f32 rounding; its stages
/// are named `S.col` and `S.row` as those of `separable spatial` are.
pub fn separate(layer: &Layer, weights: &Weights) -> Separated {
    if !layer.stages.iter().any(is_candidate) {
        return Separated {
            layer: layer.clone(),
            weights: weights.clone(),
            notes: Vec::new(),
        };
    }
    let mut stages = Vec::with_capacity(layer.stages.len());
    let mut arrays = Vec::with_capacity(layer.stages.len());
    let mut notes = Vec::new();
    for (s, w) in layer.stages.iter().zip(weights.stages()) {
        match split(s, w) {
            Split::NotCandidate => {
                stages.push(s.clone());
                arrays.push(w.clone());
            }
            Split::Kept(text) => {
                notes.push(Note {
                    stage: s.name.clone(),
                    separated: false,
                    text,
                });
                stages.push(s.clone());
                arrays.push(w.clone());
            }
            Split::Done(parts, text) => {
                notes.push(Note {
                    stage: s.name.clone(),
                    separated: true,
                    text,
                });
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
    Separated {
        layer,
        weights,
        notes,
    }
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

enum Split {
    /// Not a 2-D kernel on independent channels: nothing to look at.
    NotCandidate,
    /// Looked at, kept whole, for this reason.
    Kept(String),
    Done(Box<[(Stage, StageWeights); 2]>, String),
}

fn split(s: &Stage, w: &StageWeights) -> Split {
    let [kh, kw] = s.kernel;
    let (kernels, first_kind, what) = match s.kind {
        StageKind::Depthwise { multiplier } => (
            s.input.c * multiplier,
            StageKind::Depthwise { multiplier },
            "channel",
        ),
        // One input channel: one group.
        StageKind::Conv { cout, .. } if s.input.c == 1 => {
            (cout, StageKind::Conv { cout, groups: 1 }, "output")
        }
        _ => return Split::NotCandidate,
    };
    if !is_candidate(s) {
        return Split::NotCandidate;
    }
    // Both layouts are [Kh][Kw][n] with n = C*M (output c*M + m) or Co.
    let n = kernels;
    let mut cols = vec![0f32; kh * n];
    let mut rows = vec![0f32; kw * n];
    let mut kernel = vec![0f32; kh * kw];
    for o in 0..n {
        for (t, v) in kernel.iter_mut().enumerate() {
            *v = w.weight[t * n + o];
        }
        let Some((col, row)) = rank1_factors(&kernel, kh, kw) else {
            return Split::Kept(format!(
                "{what} {o}'s {kh}x{kw} kernel has rank above 1: run whole"
            ));
        };
        for i in 0..kh {
            cols[i * n + o] = col[i];
        }
        for j in 0..kw {
            rows[j * n + o] = row[j];
        }
    }
    let mid = crate::layer::Shape::new(s.output.h, s.input.w, n);
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
        kind: StageKind::Depthwise { multiplier: 1 },
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
    let (before, after) = (s.macs(), first.macs() + second.macs());
    let per_out = |m: u64| m as f64 / (s.output.len() as f64);
    if after >= before {
        return Split::Kept(format!(
            "every {what}'s {kh}x{kw} kernel has rank 1, but {kh}x1 then 1x{kw} would not save work ({} -> {} MACs per output): run whole",
            fmt_per(per_out(before)),
            fmt_per(per_out(after)),
        ));
    }
    let text = format!(
        "every {what}'s {kh}x{kw} kernel has rank 1: run as {kh}x1 then 1x{kw} ({} -> {} MACs per output)",
        fmt_per(per_out(before)),
        fmt_per(per_out(after)),
    );
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
        let weights = Weights::new(
            &l,
            vec![StageWeights {
                weight: w,
                bias: bias.clone(),
            }],
        )
        .unwrap();
        let s = separate(&l, &weights);
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
        let weights = Weights::new(
            &l,
            vec![StageWeights {
                weight: w,
                bias: None,
            }],
        )
        .unwrap();
        let s = separate(&l, &weights);
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
        let weights = Weights::new(
            &l,
            vec![StageWeights {
                weight: lap,
                bias: None,
            }],
        )
        .unwrap();
        let s = separate(&l, &weights);
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
        let s = separate(&l, &weights);
        assert!(!s.changed() && s.notes[0].text.contains("would not save work"));
        let l =
            layer("layer s { input 9x9x2\n c: conv 3x3 -> 2\n p: pointwise 3\n k: conv 1x5 -> 1 }");
        let s = separate(&l, &Weights::random(&l, 1));
        assert!(s.notes.is_empty() && s.layer == l);
    }
}
