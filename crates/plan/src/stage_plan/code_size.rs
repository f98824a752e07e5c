//! A stage function's size before it is emitted ([`code_size`]), so
//! that very wide kernels are refused rather than compiled for minutes.

use super::stage::{StagePlan, Strategy};

/// The fewest instructions [`code_size`] counts for any plan: a stage
/// function's setup and loop control, whatever its shape.
pub const MIN_CODE_SIZE: usize = 100;

/// A rough count of the instructions code generation will emit for `plan`:
/// every column segment (conv, pointwise; for full and border rows) or
/// column block with its per-pixel taps of one kernel row unrolled
/// (depthwise) costs code.
pub fn code_size(plan: &StagePlan) -> usize {
    if let Some(c) = &plan.column {
        return pair_code_size(plan, c);
    }
    let acc = plan.sched.units * plan.sched.px;
    match plan.strategy {
        // A direct generator's blocks mix border and interior pixels: a
        // reduction loop per kernel column where their columns differ.
        Strategy::Reduce if plan.target.direct() && !plan.flat => {
            // Rows in pairs have a second body: the pairs' blocks.
            let pairs = plan.pair_col_blocks().unwrap_or_default();
            let blocks: usize = [plan.col_blocks(), pairs]
                .iter()
                .flatten()
                .map(|b| {
                    let uniform = b.cols.iter().all(|&c| c == b.cols[0]);
                    let loops = if uniform { 1 } else { plan.kw };
                    loops * (4 * acc + 40) + 4 * acc + 40
                })
                .sum();
            blocks + 100
        }
        // A chunked reduction's body thrice: first, middle, last pass.
        Strategy::Reduce => plan.segments.len() * 2 * (4 * acc + 64) * plan.k_chunks().min(3),
        // A load and an FMA per tap and unit; per pixel and unit the
        // initial value, activation and store; loop control.
        Strategy::DwChannels | Strategy::DwMultiplier => {
            let units = plan.sched.units;
            let blocks: usize = plan
                .col_blocks()
                .iter()
                .map(|b| {
                    let taps: usize = b.cols.iter().map(|&(_, n)| n).sum();
                    2 * taps * units + 6 * b.cols.len() * units + 30
                })
                .sum();
            blocks + 100
        }
    }
}

/// A filter's pair in registers ([`super::column_pair`]): per class of
/// output rows (at most `2 Kh + 1`: the borders' and the interior's valid
/// kernel rows) and strip (first, middle, last), a row's code: its column
/// sums before and at its first pixels, then up to four runs of steps
/// (whole, masked and past-the-image loads; a masked store), each a step
/// of a load and `M` FMAs per kernel row, per output `Kw` FMAs and shifts,
/// the epilogue and the rotation of the sums.
fn pair_code_size(plan: &StagePlan, c: &super::ColumnPass) -> usize {
    let (kh, kw, m) = (c.kh, plan.kw, c.m);
    let sums = kh * (m + 1);
    let step = sums + m * (2 * kw + 6) + 12;
    let row = 2 * sums + 4 * step + 20;
    let classes = plan.ho.min(2 * kh + 1);
    let strips = if c.strip > 0 { 3 } else { 1 };
    classes * strips * row + MIN_CODE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage_plan::shares::{channel_shares, plan_channels};
    use crate::stage_plan::stage::plan_for;
    use crate::stage_plan::target::Target;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// `MIN_CODE_SIZE` bounds the stages a layer may have
        /// (`crate::limits::MAX_STAGES`): no stage function, whole or a
        /// share of its channels, is counted smaller.
        #[test]
        fn no_function_is_smaller_than_the_least_code_size(
            case in convjit_ir::random_layer::layer_case(convjit_ir::random_layer::Limits::PROPTEST),
        ) {
            let Ok(layers) = convjit_ir::compile_source(&case.src) else { return Ok(()) };
            for s in &layers[0].stages {
                for t in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                    proptest::prop_assert!(code_size(&plan_for(s, &t)) >= MIN_CODE_SIZE, "{}", s.name);
                    for (c0, c1) in channel_shares(s, &t, 3).into_iter().flatten() {
                        let p = plan_channels(s, &t, c0, c1);
                        proptest::prop_assert!(code_size(&p) >= MIN_CODE_SIZE, "{} {c0}..{c1}", s.name);
                    }
                }
            }
        }
    }
}
