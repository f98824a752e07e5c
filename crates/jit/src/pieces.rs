//! Pieces of a stage's input: the rows a call's output rows read, and
//! how many output rows a call takes so that its input rows, converted
//! into the thread's scratch just before, are still in L2 when the
//! function reads them. Shared by the input converted to channel pairs
//! (`pairs.rs`) and the input rounded to bf16 on one thread
//! (`exec::LazyRound`). A flat stage's "rows" are pixels.

use convjit_ir::Stage;
use convjit_plan::rows::input_rows;
use convjit_plan::stage_plan::is_flat;

/// Bytes of converted input rows a call reads at most (at least one
/// output row's): kept in L2 between the conversion and the reads (64
/// KiB made more calls than it saved: conv1 224x224x3 ran slower).
pub(crate) const PIECE_BYTES: usize = 256 << 10;

/// Input pixels a row.
pub(crate) fn row_pixels(stage: &Stage) -> usize {
    match is_flat(stage) {
        true => 1,
        false => stage.input.w,
    }
}

/// Input rows that `rows` output rows read at most (padding included).
pub(crate) fn rows_read(stage: &Stage, rows: usize) -> usize {
    if is_flat(stage) {
        return rows.max(1);
    }
    let (s, d, k) = (stage.stride[0], stage.dilation[0], stage.kernel[0]);
    ((rows.max(1) - 1) * s + (k - 1) * d + 1).min(stage.input.h)
}

/// The input rows `[lo, hi)` that output rows `a..b` read.
pub(crate) fn rows_of(stage: &Stage, a: usize, b: usize) -> (usize, usize) {
    match is_flat(stage) {
        true => (a, b),
        false => {
            let (lo, hi, _, _) = input_rows(stage, a, b);
            (lo, hi)
        }
    }
}

/// Output rows per call: as many as read about [`PIECE_BYTES`] of input
/// rows of `row_bytes` each once converted, at least one (in closed
/// form: it runs per call).
pub(crate) fn rows_per_call(stage: &Stage, row_bytes: usize) -> usize {
    let fit = PIECE_BYTES / row_bytes.max(1);
    if is_flat(stage) {
        return fit.max(1);
    }
    let ho = stage.output.h.max(1);
    if rows_read(stage, ho) <= fit {
        return ho;
    }
    // n rows read (n - 1) * s + span input rows.
    let (s, span) = (
        stage.stride[0],
        (stage.kernel[0] - 1) * stage.dilation[0] + 1,
    );
    match fit.checked_sub(span) {
        Some(spare) => (spare / s + 1).clamp(1, ho),
        None => 1,
    }
}

/// Scratch bytes a call of [`rows_per_call`] rows converts its input
/// rows (of `row_bytes` each, converted) into.
pub(crate) fn scratch_bytes(stage: &Stage, row_bytes: usize) -> usize {
    rows_read(stage, rows_per_call(stage, row_bytes)) * row_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(src: &str) -> Stage {
        convjit_ir::compile_source(src).unwrap().remove(0).stages[0].clone()
    }

    /// A piece is the most output rows whose input rows fit the budget
    /// (or one, or all), as counting up to it would say.
    #[test]
    fn a_piece_is_the_most_rows_within_the_budget() {
        for src in [
            "layer l { input 9x5x3\n c: conv 3x3 -> 16, stride 2x1, pad same }",
            "layer l { input 300x100x64\n c: conv 5x5 -> 16, stride 2x2, pad same }",
            "layer l { input 200x60x256\n c: conv 3x3 -> 16, dilation 2, pad same }",
            "layer l { input 40x3000x512\n c: conv 7x1 -> 16 }",
        ] {
            let s = stage(src);
            // Rows as converted to pairs, and as rounded (f32).
            for row in [
                row_pixels(&s) * s.input.c.div_ceil(2) * 4,
                row_pixels(&s) * s.input.c * 4,
            ] {
                let counted = (1..=s.output.h)
                    .take_while(|&n| n == 1 || rows_read(&s, n) * row <= PIECE_BYTES)
                    .last()
                    .unwrap();
                assert_eq!(rows_per_call(&s, row), counted, "{src}");
            }
        }
    }
}
