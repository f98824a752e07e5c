//! The stage plan ([`StagePlan`]): everything code generation and packing
//! need for one stage on one [`Target`], made by [`plan_for`] from the
//! stage as the generator runs it ([`planned_stage`]), its blocking
//! ([`schedule_for`]), geometry, register blocks ([`unit_runs`]) and
//! packed-weight layout ([`layout_weights`], [`packed_extent`]).

use super::geometry::{
    inputs_in_lanes_ok, is_flat, row_block_vectors, row_multiplier_ok, row_one_ok, segments,
    tap_range, Segment,
};
use super::nest::NextWeights;
#[cfg(doc)]
use super::packing::PACK_SLACK_BYTES;
use super::packing::{layout_weights, packed_extent, row_weights_ok};
use super::runs::{unit_runs, OutDst, Run};
use super::schedule::{schedule_for, Schedule};
#[cfg(doc)]
use super::shares::plan_channels;
use super::target::{stage_target, Target};
use super::tiles::{dot_plan_on, paired_stage, tile_plan, TilePlan};
use convjit_ir::{Activation, Stage, StageKind};

/// Conv/pointwise weights (bytes) above which channel blocks are walked
/// outside the pixels ([`StagePlan::channels_outer`]): a typical L2 (Zen 3:
/// 512 KiB per core).
pub const CHANNELS_OUTER_BYTES: usize = 512 << 10;

/// How a stage maps onto vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Conv and pointwise: vectors over output channels, a reduction loop
    /// over (taps x input channels) broadcasting one input scalar per step.
    Reduce,
    /// Depthwise with multiplier 1..=3: vectors over input channels, one
    /// accumulator per (channel vector, m); outputs `c*M+m` stored per lane
    /// when M > 1.
    DwChannels,
    /// Depthwise with multiplier >= 4: for each input channel (a "group"),
    /// vectors over its M contiguous outputs, the input scalar broadcast.
    DwMultiplier,
}

/// `stage` as the generator for `target` plans it: a conv on one input
/// channel with 1, 2 or 4 outputs (a filter on a grey image written as a
/// conv, or a filter bank: Sobel's dx and dy) is a depthwise stage with
/// that multiplier, the same weights `[Kh][Kw][1][M]`, so a direct
/// generator runs its interior columns as vectors along the row instead
/// of 1, 2 or 4 lanes of a vector over its outputs (`conv 3x3 -> 1` on
/// 256x256x1: 91 -> 9 us).
pub fn planned_stage<'a>(stage: &'a Stage, target: &Target) -> std::borrow::Cow<'a, Stage> {
    match stage.kind {
        // Not a flat 1x1: its function takes pixel ranges (`call_range`,
        // decided on the layer's stage), a depthwise one takes rows.
        StageKind::Conv { cout, groups: 1 }
            if stage.input.c == 1
                && !is_flat(stage)
                && stage.stride[1] == 1
                && (row_one_ok(stage.kernel[1], &stage_target(stage, target)) && cout == 1
                    || row_multiplier_ok(
                        cout,
                        stage.kernel[0] * stage.kernel[1],
                        &stage_target(stage, target),
                    )) =>
        {
            let mut s = stage.clone();
            s.kind = StageKind::Depthwise { multiplier: cout };
            std::borrow::Cow::Owned(s)
        }
        _ => std::borrow::Cow::Borrowed(stage),
    }
}

/// Everything code generation and packing need for one stage.
#[derive(Clone, Debug)]
pub struct StagePlan {
    /// The generator and vectors this plan is made for.
    pub target: Target,
    /// The register blocking ([`schedule_for`]).
    pub sched: Schedule,
    /// How the stage maps onto vectors.
    pub strategy: Strategy,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub ci: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
    /// Output channels: also the pixel stride of the output, in floats
    /// (for a share of the channels too, see [`StagePlan::channels`]).
    pub co: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Vertical dilation.
    pub dil_h: usize,
    /// Horizontal dilation.
    pub dil_w: usize,
    /// Padding rows above the input.
    pub pt: usize,
    /// Padding columns left of the input.
    pub pl: usize,
    /// Reduction channels per tap in the packed layout (Ci for Reduce, 1 else).
    pub ci_per_tap: usize,
    /// Every output row reads all `kh` kernel rows.
    pub rows_full: bool,
    /// The function takes a range of pixels ([`is_flat`]).
    pub flat: bool,
    /// The output columns of a row in classes that read the same kernel
    /// columns (the left border, the interior, the right border), left
    /// to right.
    pub segments: Vec<Segment>,
    /// Channel groups: a grouped conv/pointwise stage's groups,
    /// DwMultiplier's input channels, else 1.
    pub groups: usize,
    /// Input channels from one group to the next.
    pub g_in: usize,
    /// Output channels from one group to the next (where the code stores).
    pub g_out: usize,
    /// Weight bytes of a group.
    pub g_w: usize,
    /// Bias bytes of a group.
    pub g_bias: usize,
    /// Output-channel shift per group (for packing: which channels'
    /// weights a group holds).
    pub g_weight_channel: usize,
    /// The register blocks across a group's output channels.
    pub runs: Vec<Run>,
    /// Float offset of the packed bias, if any.
    pub bias_off: Option<usize>,
    /// The units' weights are packed compact: per (tap, channel) step,
    /// only the floats the units use (a unit of contiguous output
    /// channels at its first channel's offset from the run's first,
    /// overlapping units sharing their floats; others one after the
    /// other), where whole vectors per unit would hold more zero lanes
    /// than [`PACK_SLACK_BYTES`] and a tenth of the used ones (one output
    /// channel, a one-channel depthwise stage: 16x on 16 lanes). A unit's
    /// vector is still loaded whole: its unused lanes read the next
    /// unit's or step's floats, whose products are never stored (lanes
    /// are independent: no path combines lanes of a unit's accumulator),
    /// and `packed_len` reaches exactly past the last such load.
    pub compact: bool,
    /// Few-channel depthwise rows as vectors along the row (see
    /// [`StagePlan::row_vectors`]), 2 or more channels: float offset of their
    /// weights `[tap][phase][lane]` (lane `l` of phase `r` holds channel
    /// `(r + l) % C`), then of their bias `[phase][lane]`.
    pub row_weights_off: Option<usize>,
    /// Outputs per input pixel of the row vectors: 1, or M for a
    /// one-channel depthwise stage with multiplier M (2 or 4, see
    /// [`planned_stage`]): lane `l` then reads pixel `l / M` of a load of
    /// `lanes / M` pixels, permuted to lane `l` from pixel `l / M`; its
    /// weights are packed `[tap][lane]` (lane `l`: output `l % M`), then
    /// the bias.
    pub row_multiplier: usize,
    /// A conv/pointwise stage with 1 to 4 output channels on a direct
    /// generator ([`super::inputs_in_lanes_ok`]): vectors over each
    /// kernel row's contiguous inputs (kernel columns x input channels)
    /// and the weights alike (one run of a one-lane unit repeated per
    /// output, packed compact: a `[tap][ci]` plane per output), an
    /// accumulator per pixel and output, summed across its lanes at the
    /// end (a block's `lanes / Co` pixels' outputs in one vector). Every
    /// FMA uses all its lanes instead of Co: 3x3 256x256x64 -> 1 4,682 ->
    /// 436 us, -> 3 4,669 -> 845 (BENCHMARKS.md, "Few output channels").
    pub inputs_in_lanes: bool,
    /// Floats of the packed weights (the buffer the code reads).
    pub packed_len: usize,
    /// The stage's activation, applied before the store.
    pub activation: Activation,
    /// The stage adds the layer's input to its output.
    pub residual: bool,
    /// The output channels `c0..c1` the function computes: all, `(0,
    /// co)`, but for a thread's share of a conv/pointwise stage
    /// ([`plan_channels`]), whose packed weights hold only those.
    pub channels: (usize, usize),
    /// bf16 on AMX tiles ([`Target::tiles`] and a stage that fills them),
    /// or the same blocking on `vdpbf16ps` ([`Target::dot`],
    /// [`TilePlan::dot`]): the function and its packed weights follow this
    /// instead of the runs and units above.
    pub tiles: Option<TilePlan>,
    /// The input is stored as bf16 (2 bytes a value, the upper half of
    /// the f32 the tile stage before rounded): a many-channel depthwise
    /// stage in bf16 whose producer stores that ([`bf16_intermediates`]).
    /// It widens each load to f32 and computes as on f32 input. Set by
    /// the compilers, never by [`plan_for`].
    ///
    /// [`bf16_intermediates`]: super::bf16_intermediates
    pub bf16_input: bool,
    /// `vdpbf16ps` on channel pairs ([`paired_stage`]): the stage's real
    /// input channels; the plan is the paired stage's (`ci` its pairs,
    /// each value 4 bytes: two bf16).
    pub pairs: Option<usize>,
    /// On pairs, without a residual: the epilogue rounds the outputs to
    /// bf16 before storing them, for a reader that multiplies them as
    /// they are ([`super::round_outputs`]), rather than the runtime after
    /// the call.
    pub round_output: bool,
    /// A direct plan that stores its output as bf16 (2 bytes a value,
    /// rounded as [`convjit_ir::round_bf16`] does, denormals flushed), for
    /// a reader that takes bf16 ([`super::bf16_intermediates`]); on tiles,
    /// [`TilePlan::bf16_output`] says it. Every output offset of the nest
    /// is in [`StagePlan::out_bytes`]. Set by the compilers, never by
    /// [`plan_for`].
    pub bf16_output: bool,
    /// A depthwise plan in bf16 on the layer's input that rounds each
    /// input vector as it loads it (`vcvtneps2bf16`, widened back;
    /// denormals flushed) rather than having the runtime round the image
    /// in a pass first; [`super::reads_bf16`]'s plans only. Set by the
    /// JIT, never by [`plan_for`].
    pub round_input: bool,
    /// Row-vector stores run ahead of themselves by prefetching for
    /// writing ([`super::PREFETCH_STORES_AHEAD`] bytes on): the plan writes a
    /// group's output and the group's input and output together pass
    /// what the caches keep between calls ([`super::mark_streamed_outputs`]).
    /// Set by the compilers, never by [`plan_for`]. A filter's pair in
    /// registers ([`super::column_pair`]) has no row-vector blocks and
    /// does not prefetch: it measured slower so.
    pub prefetch_stores: bool,
    /// A row stage whose function computes the column stage before it
    /// too, in registers ([`super::column_pair`]): its input is that
    /// stage's. Set by [`super::plan_pair`], never by [`plan_for`].
    pub column: Option<super::ColumnPass>,
}

/// The plan of `stage` for Cranelift's vectors.
pub fn plan_for_cranelift(stage: &Stage) -> StagePlan {
    plan_for(stage, &Target::CRANELIFT)
}

/// The plan of `stage` for the vectors and registers of `target`.
pub fn plan_for(stage: &Stage, target: &Target) -> StagePlan {
    plan_with(stage, target, None)
}

/// [`plan_for`], its units packed compact or aligned as `compact` says
/// (`None`: as [`StagePlan::compact`] decides), for tests of both layouts.
pub(super) fn plan_with(stage: &Stage, target: &Target, compact: Option<bool>) -> StagePlan {
    if let Some(paired) = paired_stage(stage, target) {
        let f32_code = Target {
            tiles: false,
            dot: false,
            dot_all: false,
            pairs: false,
            ..*target
        };
        let mut p = plan_with(&paired, &f32_code, compact);
        p.pairs = Some(stage.input.c);
        return p;
    }
    let target = &stage_target(stage, target);
    let stage = &*planned_stage(stage, target);
    let inputs_in_lanes = inputs_in_lanes_ok(stage, target);
    let sched = schedule_for(stage, target);
    // Its weights are the kernel's floats in order.
    let compact = if inputs_in_lanes { Some(true) } else { compact };
    let lanes = target.lanes;
    let (si, so) = (stage.input, stage.output);
    let [kh, kw] = stage.kernel;
    let [sh, sw] = stage.stride;
    let [dil_h, dil_w] = stage.dilation;
    let p = stage.padding;
    let (h, w, ho, wo) = (si.h, si.w, so.h, so.w);
    let (pt, pl) = (p.top, p.left);
    let rows_full = (0..ho).all(|oy| tap_range(oy, sh, dil_h, pt, kh, h) == (0, kh));
    let (ci, co) = (si.c, so.c);
    let taps = kh * kw;
    let (strategy, ci_per_tap, groups) = strategy_of(stage);
    // Inputs in lanes: a run of one unit of one lane, repeated per output
    // channel, so each output's weights are a plane of their own
    // (`[co][tap][ci]`, compact), its bias beside the next's.
    let unit_lanes = if inputs_in_lanes { 1 } else { lanes };
    let (mut runs, (g_in, g_out, g_weight_channel)) =
        unit_runs(stage, strategy, groups, unit_lanes, sched.units);
    if inputs_in_lanes {
        for unit in runs.iter_mut().flat_map(|r| r.units.iter_mut()) {
            if let OutDst::Vector(c) = unit.out {
                unit.out = OutDst::Lanes(vec![(0, c)]);
            }
        }
    }
    let steps = taps * ci_per_tap;
    let has_bias = stage.bias_key.is_some();
    let weights = layout_weights(runs, groups, steps, has_bias, lanes, compact);
    let few_channels = strategy == Strategy::DwChannels
        && target.direct()
        && sw == 1
        && co == ci
        && (2..lanes).contains(&ci)
        && row_block_vectors(ci, target) > 0
        && row_weights_ok(taps, ci, target);
    let row_multiplier = match stage.kind {
        StageKind::Depthwise { multiplier: m }
            if ci == 1 && sw == 1 && row_multiplier_ok(m, taps, target) =>
        {
            m
        }
        _ => 1,
    };
    // Row-vector weights: per tap, a vector per channel phase, or one of
    // the multiplier's outputs.
    let row_phases = match (few_channels, row_multiplier) {
        (true, _) => Some(ci),
        (false, 2..) => Some(1),
        _ => None,
    };
    let extent = packed_extent(&weights, groups, steps, has_bias, taps, row_phases, lanes);
    let tiles = target
        .tiles
        .then(|| tile_plan(stage).ok())
        .flatten()
        .or_else(|| dot_plan_on(stage, target).ok())
        .filter(|_| !inputs_in_lanes);
    StagePlan {
        target: *target,
        sched,
        strategy,
        h,
        w,
        ci,
        ho,
        wo,
        co,
        kh,
        kw,
        sh,
        sw,
        dil_h,
        dil_w,
        pt,
        pl,
        ci_per_tap,
        rows_full,
        flat: is_flat(stage),
        segments: segments(stage),
        groups,
        g_in,
        g_out,
        g_w: weights.g_w,
        g_bias: weights.g_bias,
        g_weight_channel,
        runs: weights.runs,
        bias_off: extent.bias_off,
        compact: weights.compact,
        row_weights_off: extent.row_weights_off,
        row_multiplier,
        inputs_in_lanes,
        packed_len: tiles.as_ref().map_or(extent.packed_len, |t| t.packed_len),
        activation: stage.activation,
        residual: stage.residual,
        channels: (0, co),
        tiles,
        bf16_input: false,
        pairs: None,
        round_output: false,
        bf16_output: false,
        round_input: false,
        prefetch_stores: false,
        column: None,
    }
}

/// How `stage` maps onto vectors, its reduction channels per tap
/// ([`StagePlan::ci_per_tap`]) and its channel groups ([`StagePlan::groups`]).
fn strategy_of(stage: &Stage) -> (Strategy, usize, usize) {
    let ci = stage.input.c;
    match stage.kind {
        StageKind::Conv { groups, .. } | StageKind::Pointwise { groups, .. } => {
            (Strategy::Reduce, ci / groups, groups)
        }
        StageKind::Depthwise { multiplier } if multiplier <= 3 => (Strategy::DwChannels, 1, 1),
        StageKind::Depthwise { .. } => (Strategy::DwMultiplier, 1, ci),
    }
}

impl StagePlan {
    /// Bytes of one input value as the function reads it: 4, or 2 where
    /// the input is stored as bf16 ([`StagePlan::bf16_input`]). Every
    /// input offset of the nest and the taps is in these.
    pub fn in_bytes(&self) -> usize {
        if self.bf16_input {
            2
        } else {
            4
        }
    }

    /// Bytes of one output value as the function stores it: 4, or 2 as
    /// bf16 ([`StagePlan::bf16_output`], [`TilePlan::bf16_output`]).
    pub fn out_bytes(&self) -> usize {
        match &self.tiles {
            Some(t) => t.out_bytes(),
            None if self.bf16_output => 2,
            None => 4,
        }
    }

    /// Bytes of one input row.
    pub fn in_row_bytes(&self) -> i64 {
        (self.w * self.ci * self.in_bytes()) as i64
    }

    /// Conv/pointwise loop order: channel blocks outside the pixels (each
    /// block's weights read from cache by every pixel, the input read once
    /// per channel block) rather than all channel blocks for each block of
    /// pixels (the input reused from L1, all the weights read again). Only
    /// when the weights exceed [`CHANNELS_OUTER_BYTES`]: the whole weight
    /// set then comes from L3 or memory per pixel block (3x3 512->512 on
    /// 14x14: +8-20%); below it both orders ran equally fast (pointwise
    /// 24<->144, 3x3 64->64 and 256->256). A thread's share of the
    /// channels ([`plan_channels`]) counts its own weights only, a grouped
    /// stage those of all its groups (groups outermost, then each group's
    /// channel blocks): AlexNet's 3x3 on 12x12x384 in 2 groups has 2.6 MiB,
    /// which channel blocks inside read from L3 per pixel block (69% of
    /// the FMA peak).
    pub fn channels_outer(&self) -> bool {
        // (Inputs in lanes: every output of a pixel in one block.)
        self.strategy == Strategy::Reduce
            && !self.inputs_in_lanes
            && self.kh * self.kw * self.ci_per_tap * (self.channels.1 - self.channels.0) * 4
                > CHANNELS_OUTER_BYTES
    }

    /// Chunks a flat 1x1 stage's reduction runs in, each over every
    /// channel block and pixel (1: the whole reduction in one pass). With
    /// channel blocks outermost, every pixel block reads its channel
    /// block's weights again from L2; past a quarter of L2 a block runs
    /// in the fewest equal chunks within it, a chunk's partial sums stored
    /// in the output and loaded back by the next (f32 either way: the
    /// same sums, bit for bit). Zen 5 (1 MiB L2), one thread, `bench`
    /// alternated twice: 7x7x2048 -> 512 (393 KB a block) 86-88% of the
    /// FMA peak whole, 94-96% in 2 chunks; 7x7x3072 -> 256 (590 KB)
    /// 77-80% whole, 94-95% in 3; 7x7x1536 -> 512 (295 KB) 92-95%, 96%;
    /// blocks of 98-196 KB (28x28x512 -> 256, 7x7x1024 -> 512, 14x14x1024
    /// -> 512) ran 93-98% whole, and chunking them gained nothing. f32
    /// plans of whole vectors of output channels only.
    pub fn k_chunks(&self) -> usize {
        let plain = self.flat
            && self.kh == 1
            && self.kw == 1
            && self.groups == 1
            && self.target.direct()
            && self.tiles.is_none()
            && self.pairs.is_none()
            && !(self.bf16_input || self.bf16_output || self.round_input || self.round_output)
            && self.channels_outer()
            // Whole vectors, none moved back over another's channels
            // (a pass would add its sums to those twice).
            && (self.channels.1 - self.channels.0).is_multiple_of(self.sched.lanes)
            && self
                .runs
                .iter()
                .flat_map(|r| &r.units)
                .all(|u| matches!(u.out, OutDst::Vector(_)));
        if !plain {
            return 1;
        }
        let most = crate::layer_plan::host_l2_bytes() / 4;
        let block = self.runs.iter().map(|r| r.w_stride).max().unwrap_or(0);
        let unroll = self.sched.k_unroll.max(1);
        (1..=16)
            .filter(|&c| self.ci.is_multiple_of(c) && (self.ci / c).is_multiple_of(unroll))
            .find(|&c| block / c <= most)
            .unwrap_or(1)
    }

    /// How a direct generator prefetches the next channel block's weights
    /// (with [`StagePlan::channels_outer`]): per pass where two blocks'
    /// weights exceed 3/4 of L2, else per step. Measured against each
    /// other (`bench`, four alternations, 2 MiB L2): Inception's 7x7 128
    /// -> 128 (802 KiB a block) 2,953-3,080 us per step, 2,573-2,687 per
    /// pass; VGG's 3x3 14x14x512 -> 512 (590 KiB a block) 5,596-6,028 per
    /// step, 6,333-6,480 per pass.
    pub fn next_weights(&self) -> NextWeights {
        let l2 = crate::layer_plan::host_l2_bytes();
        // A chunked reduction's blocks are a chunk of their weights.
        let chunks = self.k_chunks();
        match self
            .runs
            .iter()
            .any(|r| 2 * r.w_stride / chunks > l2 / 4 * 3)
        {
            true => NextWeights::PerPass,
            false => NextWeights::PerStep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(src: &str) -> Stage {
        convjit_ir::compile_source(src).unwrap().remove(0).stages[0].clone()
    }

    #[test]
    fn a_1x1_reduction_runs_in_passes_only_where_a_block_crowds_l2() {
        let most = crate::layer_plan::host_l2_bytes() / 4;
        let plan = |src: &str, t: &Target| plan_for(&stage(src), t);
        for t in [Target::AVX512, Target::AVX2] {
            // Blocks of 1 MiB or more (4 MiB of L2 at most): the fewest
            // equal passes whose blocks' share is within a quarter of L2.
            let p = plan("layer a { input 1x29x65536\n p: pointwise 64, bias }", &t);
            let (c, block) = (p.k_chunks(), p.runs[0].w_stride);
            assert!(
                c > 1 && p.ci % c == 0 && block / c <= most,
                "{c} of {block}"
            );
            let fits = |d: usize| {
                p.ci.is_multiple_of(d) && (p.ci / d).is_multiple_of(8) && block / d <= most
            };
            assert!(!(1..c).any(fits), "{c} of {block}: not the fewest");
            // Small blocks, a tail vector moved back over others' channels,
            // rows rather than pixels, or Cranelift: one pass.
            for src in [
                "layer a { input 7x7x64\n p: pointwise 64 }",
                "layer a { input 1x29x65536\n p: pointwise 44 }",
                "layer a { input 9x9x65536\n p: conv 1x1 -> 64, stride 2 }",
            ] {
                assert_eq!(plan(src, &t).k_chunks(), 1, "{src}");
            }
        }
        let cl = plan(
            "layer a { input 1x29x65536\n p: pointwise 64 }",
            &Target::CRANELIFT,
        );
        assert_eq!(cl.k_chunks(), 1);
    }

    #[test]
    fn a_grey_conv_to_one_output_runs_as_a_depthwise_row() {
        let grey = stage("layer f { input 9x40x1\n f: conv 3x5 -> 1, pad same, bias }");
        for t in [Target::AVX512, Target::AVX2] {
            let planned = planned_stage(&grey, &t);
            assert_eq!(planned.kind, StageKind::Depthwise { multiplier: 1 });
            assert!(plan_for(&grey, &t).row_vectors().is_some());
        }
        // Cranelift has no row vectors; a horizontal stride, 3 outputs
        // (no row multiplier) or more input channels stay convs.
        assert_eq!(planned_stage(&grey, &Target::CRANELIFT).kind, grey.kind);
        for src in [
            "layer f { input 9x40x1\n f: conv 3x3 -> 1, stride 2, pad same }",
            "layer f { input 9x40x1\n f: conv 3x3 -> 3, pad same }",
            "layer f { input 9x40x2\n f: conv 3x3 -> 1, pad same }",
        ] {
            let s = stage(src);
            assert_eq!(planned_stage(&s, &Target::AVX512).kind, s.kind, "{src}");
        }
    }

    #[test]
    fn few_outputs_put_their_inputs_in_lanes() {
        let to_one = stage("layer f { input 9x40x20\n f: conv 3x3 -> 1, pad same, bias }");
        for t in [Target::AVX512, Target::AVX2] {
            let p = plan_for(&to_one, &t);
            assert!(p.inputs_in_lanes && p.compact, "{t:?}");
            assert_eq!((p.sched.px, p.sched.units), (t.lanes, 1));
            // The kernel's floats in order: a run of a kernel row is
            // contiguous in the weights too.
            assert_eq!(p.runs[0].tap_bytes(1), 4);
            assert!(p.pair_col_blocks().is_none());
        }
        assert!(!plan_for(&to_one, &Target::CRANELIFT).inputs_in_lanes);
        // Three outputs: 5 pixels a block (15 sums in a vector), each
        // output's weights a plane of their own, its bias beside.
        let three = stage("layer f { input 9x40x20\n f: conv 3x3 -> 3, pad same, bias }");
        let p = plan_for(&three, &Target::AVX512);
        assert!(p.inputs_in_lanes);
        assert_eq!((p.sched.px, p.runs.len(), p.runs[0].count), (5, 1, 3));
        assert_eq!(p.runs[0].w_stride, 9 * 20 * 4);
        assert_eq!(p.runs[0].bias_stride, 4);
        let five = stage("layer f { input 9x40x20\n f: conv 3x3 -> 5, pad same }");
        assert!(!plan_for(&five, &Target::AVX512).inputs_in_lanes);
        // bf16 on AMD: not channel pairs (one lane of sixteen), f32 FMAs
        // on its rounded inputs in lanes.
        let amd = Target {
            dot: true,
            pairs: true,
            ..Target::AVX512
        };
        assert!(paired_stage(&to_one, &amd).is_none());
        let p = plan_for(&to_one, &amd);
        assert!(p.inputs_in_lanes && p.tiles.is_none() && p.pairs.is_none());
    }
}
