//! Row ranges: a range of a stage's output rows reads a range of its input
//! rows (and maybe zero-padding rows above or below). Fusion and threads
//! run stages by ranges of output rows (each stage's one function takes
//! the range at run time); this says which input rows a range needs, so
//! the program can keep exactly those in its buffers.

use convjit_ir::Stage;

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

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::compile_source;

    /// Against the taps themselves: the rows read span (clamped to the
    /// input) from the first tap row of the range to the last, so every
    /// input row a tap touches is inside; the padding rows are those of
    /// that span outside the input.
    #[test]
    fn input_rows_are_the_rows_the_taps_touch() {
        let src = "layer l { input 11x6x3\n \
            a: conv 3x2 -> 4, stride 2x1, pad same, bias, relu\n \
            b: depthwise 3x3, dilation 2, pad 3 1 1 1, multiplier 2\n \
            c: conv 4x1 -> 2, pad 0 2 0 0\n p: pointwise 5 }";
        let layer = compile_source(src).unwrap().remove(0);
        for st in &layer.stages {
            let (s, d, k) = (st.stride[0], st.dilation[0], st.kernel[0]);
            let h = st.input.h as isize;
            for a in 0..st.output.h {
                for b in a + 1..=st.output.h {
                    let touched: Vec<isize> = (a..b)
                        .flat_map(|oy| {
                            (0..k).map(move |t| (oy * s + t * d) as isize - st.padding.top as isize)
                        })
                        .collect();
                    let inside: Vec<isize> = touched
                        .iter()
                        .copied()
                        .filter(|r| (0..h).contains(r))
                        .collect();
                    let (lo, hi, above, below) = input_rows(st, a, b);
                    let first = *touched.iter().min().unwrap();
                    let last = *touched.iter().max().unwrap();
                    let span = (first.clamp(0, h), (last + 1).clamp(0, h));
                    assert_eq!((lo as isize, hi as isize), span, "{} {a}..{b}", st.name);
                    assert!(inside.iter().all(|r| (span.0..span.1).contains(r)));
                    assert_eq!(
                        above as isize,
                        first.clamp(0, h) - first,
                        "{} {a}..{b}",
                        st.name
                    );
                    assert_eq!(
                        below as isize,
                        last + 1 - (last + 1).clamp(0, h),
                        "{} {a}..{b}",
                        st.name
                    );
                }
            }
        }
    }
}
