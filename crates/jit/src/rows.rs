//! Row bands: a stage restricted to a range of its output rows is itself a
//! smaller stage (fewer input rows, explicit vertical padding). Fusion and
//! threads are built on this, so they reuse the ordinary code generator and
//! every band is as specialised as a whole stage.

use convjit_ir::{Padding, Shape, Stage};

/// The input rows `[lo, hi)` that output rows `[a, b)` of `stage` read,
/// and the zero-padding rows `(above, below)` they also read.
pub fn input_rows(stage: &Stage, a: usize, b: usize) -> (usize, usize, usize, usize) {
    debug_assert!(a < b && b <= stage.output.h);
    let (s, d, k) = (stage.stride[0], stage.dilation[0], stage.kernel[0]);
    let (pt, h) = (stage.padding.top as isize, stage.input.h as isize);
    let first = (a * s) as isize - pt;
    let end = ((b - 1) * s + (k - 1) * d + 1) as isize - pt;
    let (lo, hi) = (first.clamp(0, h), end.clamp(0, h));
    (
        lo as usize,
        hi as usize,
        (lo - first) as usize,
        (end - hi) as usize,
    )
}

/// `stage` restricted to output rows `[a, b)`, reading input rows
/// `input_rows(stage, a, b)`; `None` if those are empty (the band would
/// read nothing but padding: a whole-stage run handles that).
pub fn band(stage: &Stage, a: usize, b: usize) -> Option<Stage> {
    let (lo, hi, above, below) = input_rows(stage, a, b);
    (hi > lo).then(|| Stage {
        input: Shape {
            h: hi - lo,
            ..stage.input
        },
        output: Shape {
            h: b - a,
            ..stage.output
        },
        padding: Padding {
            top: above,
            bottom: below,
            ..stage.padding
        },
        ..stage.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::{compile_source, interpret_stage, Rng, Weights};

    /// Every band of every stage computes exactly the rows of the whole.
    #[test]
    fn bands_compute_the_rows_of_the_whole_stage() {
        let src = "layer l { input 11x6x3\n \
            a: conv 3x2 -> 4, stride 2x1, pad same, bias, relu\n \
            b: depthwise 3x3, dilation 2, pad 3 1 1 1, multiplier 2\n \
            c: conv 4x1 -> 2, pad 0 2 0 0\n p: pointwise 5 }";
        let layer = compile_source(src).unwrap().remove(0);
        let weights = Weights::random(&layer, 3);
        let mut x = Rng::new(4).vec(layer.input.len(), 1.0);
        for (stage, w) in layer.stages.iter().zip(weights.stages()) {
            let whole = interpret_stage(stage, w, &x, 1, None);
            let row = stage.output.w * stage.output.c;
            let in_row = stage.input.w * stage.input.c;
            for a in 0..stage.output.h {
                for b in a + 1..=stage.output.h {
                    let Some(sub) = band(stage, a, b) else {
                        continue;
                    };
                    let (lo, hi, _, _) = input_rows(stage, a, b);
                    let got = interpret_stage(&sub, w, &x[lo * in_row..hi * in_row], 1, None);
                    assert_eq!(got, whole[a * row..b * row], "{} rows {a}..{b}", stage.name);
                }
            }
            x = whole;
        }
    }

    #[test]
    fn a_band_of_only_padding_is_refused() {
        let src = "layer l { input 4x4x1\n c: conv 3x3 -> 1, pad 5 0 0 0 }";
        let layer = compile_source(src).unwrap().remove(0);
        assert!(band(&layer.stages[0], 0, 1).is_none());
        assert!(band(&layer.stages[0], 0, 4).is_some());
    }
}
