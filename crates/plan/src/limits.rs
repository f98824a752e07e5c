//! How much code a layer may need: the limits every generator, the JIT
//! and the AOT builder check before emitting anything, so that a very
//! wide kernel or a layer of thousands of stages is refused with the
//! reason instead of compiling for minutes (and gigabytes).

use crate::stage_plan::{self, StagePlan};
use convjit_ir::Layer;
use std::fmt;

/// Estimated instructions (see [`stage_plan::code_size`]) beyond which a layer
/// is refused: about a second of compile time.
pub const MAX_CODE_SIZE: usize = 400_000;

/// The most stages a compiled layer has: each is a function of at least
/// [`stage_plan::MIN_CODE_SIZE`] instructions, so a layer of more would exceed
/// [`MAX_CODE_SIZE`] whatever its shapes. Counted before anything is
/// planned ([`check_stage_count`]): planning and listing the functions of
/// a layer of 20,000 stages only to refuse its code would be wasted work.
pub const MAX_STAGES: usize = MAX_CODE_SIZE / stage_plan::MIN_CODE_SIZE;

/// A layer refused for the code it would need, with the reason (a
/// property of the layer, not a bug: the interpreter still runs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooLarge(pub String);

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TooLarge {}

/// Refuses a layer of more than [`MAX_STAGES`] stages, with the reason:
/// what `Kernel::compile` and the AOT builder do first.
pub fn check_stage_count(layer: &Layer) -> Result<(), TooLarge> {
    let n = layer.stages.len();
    if n > MAX_STAGES {
        return Err(TooLarge(format!(
            "layer '{}' has {n} stages: more than {MAX_STAGES} never compile (each stage is \
             a function of at least {} instructions, and a layer's code at most \
             {MAX_CODE_SIZE}: about a second of compile time); the interpreter \
             (--engine interp) runs it, up to {:.1e} multiply-accumulates",
            layer.name,
            stage_plan::MIN_CODE_SIZE,
            convjit_ir::MAX_INTERPRETED_MACS
        )));
    }
    Ok(())
}

/// Refuses the stage functions of `plans` before anything is emitted when
/// their estimated code exceeds [`MAX_CODE_SIZE`] (very wide kernels).
pub fn check_code_size(plans: &[StagePlan]) -> Result<(), TooLarge> {
    let size: usize = plans.iter().map(stage_plan::code_size).sum();
    if size > MAX_CODE_SIZE {
        return Err(TooLarge(format!(
            "the layer would need about {size} instructions of specialised code \
             (limit {MAX_CODE_SIZE}): too much to compile (kernels this wide, or this \
             many stages); \
             the interpreter (--engine interp) runs it, up to {:.1e} multiply-accumulates",
            convjit_ir::MAX_INTERPRETED_MACS
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::compile_source;

    fn layer(stages: usize) -> Layer {
        let body: String = (0..stages)
            .map(|i| format!(" s{i}: depthwise 1x1\n"))
            .collect();
        compile_source(&format!("layer many {{ input 1x1x1\n{body} }}"))
            .unwrap()
            .remove(0)
    }

    /// One stage past the limit is refused with the reason; at the limit
    /// the count passes (and the code size decides).
    #[test]
    fn stage_count_is_refused_past_the_limit() {
        assert_eq!(MAX_STAGES, 4000);
        let TooLarge(m) = check_stage_count(&layer(MAX_STAGES + 1)).unwrap_err();
        assert!(
            m.starts_with("layer 'many' has 4001 stages: more than 4000 never compile"),
            "{m}"
        );
        assert!(check_stage_count(&layer(MAX_STAGES)).is_ok());
    }

    /// The code-size check sums the plans: 4,000 one-tap depthwise stages
    /// are each at least `MIN_CODE_SIZE`, together past the limit.
    #[test]
    fn code_size_is_the_sum_over_the_plans() {
        let l = layer(MAX_STAGES);
        let plans: Vec<StagePlan> = l
            .stages
            .iter()
            .map(stage_plan::plan_for_cranelift)
            .collect();
        let TooLarge(m) = check_code_size(&plans).unwrap_err();
        assert!(m.contains("instructions of specialised code"), "{m}");
        assert!(check_code_size(&plans[..10]).is_ok());
    }
}
