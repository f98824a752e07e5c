//! The fusion cost model: estimated cycles per image of a group of
//! stages ([`group_cycles`]: FMAs at a measured share of the peak, stalls
//! of streaming tensors, band calls and kept rows), and of a stage fused
//! to the group before it or apart ([`fusion_cost`]).

use super::bands::band_rows;
use super::{Host, MARGIN};
use crate::stage_plan::Target;
use convjit_ir::Layer;

/// The cost model's estimates (cycles per image) for adding a stage to the
/// fusion group before it: the group and the stage run apart, or fused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusionCost {
    /// The group and the stage, each run on its own.
    pub apart: f64,
    /// The group with the stage, run in bands.
    pub fused: f64,
}

impl FusionCost {
    /// Fusing must win by more than the model's noise: a fused group runs
    /// bands of short calls, so a tie goes to whole stages.
    pub fn pays(&self) -> bool {
        self.fused < self.apart * MARGIN
    }
}

impl std::fmt::Display for FusionCost {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "estimated {:.0}k cycles apart, {:.0}k fused",
            self.apart / 1e3,
            self.fused / 1e3
        )
    }
}

/// Bytes per cycle one core streams from its L2, and from L3 or memory
/// (a tensor beyond half of L2 is evicted before the next stage reads
/// it): Sapphire Rapids at ~3.7 GHz copies ~27 GB/s from beyond L2, and
/// depthwise 56x56x144 (3.6 MB in and out) ran at that rate.
pub(super) const L2_BYTES_PER_CYCLE: f64 = 32.0;
const FAR_BYTES_PER_CYCLE: f64 = 7.0;
/// The share of streaming time the FMAs do not hide: pointwise
/// 56x56x144 -> 24 ran 142 us, its FMAs alone ~106 us at the measured
/// efficiency and its 1.8 MB input ~69 us at the rate above.
const STALL: f64 = 0.5;
/// Fraction of the FMA peak a stage's loops reach: conv and pointwise
/// blocks measured 80-90% of it, depthwise (a load per FMA) about half.
const REDUCE_EFFICIENCY: f64 = 0.85;
const DEPTHWISE_EFFICIENCY: f64 = 0.55;
/// A stage call of a band: the function's setup and its row loops' state.
pub(super) const CALL_CYCLES: f64 = 400.0;

/// Cycles lost to streaming `bytes` of one tensor between stages: from
/// L2 where `streamed`, the bytes its writer read and wrote, fit in half
/// of it (what the writer streamed last is what L2 still holds), else
/// from L3 or memory.
fn stall_cycles(bytes: usize, streamed: usize, host: &Host) -> f64 {
    let rate = if streamed <= host.l2_bytes / 2 {
        L2_BYTES_PER_CYCLE
    } else {
        FAR_BYTES_PER_CYCLE
    };
    STALL * bytes as f64 / rate
}

/// The bytes streamed by the stage that writes the input of stage `i`
/// (its input and output), or for the layer's input the input alone.
/// A depthwise stride-2 stage reads four times what it writes: a
/// 784 KiB intermediate (MobileNet v1's 112x112x64 stride 2) had mostly
/// left L2 by the time the next stage read it, and fusing them ran 8%
/// faster (481-505 against 527-541 us, `bench`, three runs each).
fn written_with(layer: &Layer, i: usize) -> usize {
    let bytes = |shape: convjit_ir::Shape| shape.len() * 4;
    match i.checked_sub(1) {
        Some(w) => bytes(layer.stages[w].input) + bytes(layer.stages[w].output),
        None => bytes(layer.stages[0].input),
    }
}

/// Estimated cycles per image of stages `first..=last` as one group: their
/// FMAs, the stalls of streaming the group's input and output, and when
/// fused, per band a call of each stage and the copy of the rows the next
/// band reads again (the price of never recomputing them).
pub(super) fn group_cycles(
    layer: &Layer,
    first: usize,
    last: usize,
    host: &Host,
    target: &Target,
) -> f64 {
    let stages = &layer.stages[first..=last];
    let compute: f64 = stages
        .iter()
        .map(|s| {
            // At the lanes of the code that runs it (an AVX-512 layer
            // hands some stages to the AVX2 code), as the stage it runs as.
            let t = crate::stage_plan::stage_target(s, target);
            let (eff, lanes) = match crate::stage_plan::planned_stage(s, &t).kind {
                convjit_ir::StageKind::Depthwise { .. } => (DEPTHWISE_EFFICIENCY, t.lanes),
                // Vectors over a group's outputs: fewer outputs than lanes
                // leave lanes idle (one output per group, a rank-R
                // separation's row stage, uses 1 of 16).
                convjit_ir::StageKind::Conv { cout, groups }
                | convjit_ir::StageKind::Pointwise { cout, groups } => {
                    (REDUCE_EFFICIENCY, (cout / groups.max(1)).clamp(1, t.lanes))
                }
            };
            s.macs() as f64 / (lanes as f64 * 2.0 * eff)
        })
        .sum();
    let bytes = |shape: convjit_ir::Shape| shape.len() * 4;
    let stalls = stall_cycles(bytes(stages[0].input), written_with(layer, first), host)
        + stall_cycles(
            bytes(stages[stages.len() - 1].output),
            written_with(layer, last + 1),
            host,
        );
    let bands = if last > first {
        let b = band_rows(layer, first, last, host);
        let bands = layer.stages[last].output.h.div_ceil(b);
        let kept: usize = stages[1..]
            .iter()
            .map(|s| (s.kernel[0] - 1) * s.dilation[0] * s.input.w * s.input.c * 4)
            .sum();
        bands as f64 * (stages.len() as f64 * CALL_CYCLES + kept as f64 / L2_BYTES_PER_CYCLE)
    } else {
        0.0
    };
    compute + stalls + bands
}

/// The cost of fusing stage `i` into the group `first..i` against
/// running it apart.
pub fn fusion_cost(
    layer: &Layer,
    first: usize,
    i: usize,
    host: &Host,
    target: &Target,
) -> FusionCost {
    FusionCost {
        apart: group_cycles(layer, first, i - 1, host, target)
            + group_cycles(layer, i, i, host, target),
        fused: group_cycles(layer, first, i, host, target),
    }
}
