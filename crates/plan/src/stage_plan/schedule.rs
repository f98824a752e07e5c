//! Register blocking of one stage ([`Schedule`]) and the cost model that
//! chooses it: pixels x output vectors per register block and the
//! unrolling of the reduction, per generator ([`schedule_for`]), with the
//! reasons `convjit plan` prints ([`schedule_reason_for`]).

use super::geometry::{is_flat, positions, tap_range};
use super::stage::planned_stage;
#[cfg(doc)]
use super::stage::{plan_for, StagePlan};
use super::target::{stage_target, Target, LANES};
use convjit_ir::{Stage, StageKind};

/// Most live accumulator vectors per register block (x64 has xmm0-15:
/// accumulators plus a weight vector plus a broadcast temporary must fit).
pub const MAX_ACCUMULATORS: usize = 12;

/// Accumulator vectors of a conv/pointwise register block (4 pixels x 2
/// vectors or 8 pixels x 1). Cranelift's `fma` ties its result to a
/// multiplicand (the broadcast input, loaded fresh for each FMA), never to
/// the accumulator, so every FMA moves its accumulator to another register.
/// With 8 accumulators, the weight vectors and a broadcast, the register
/// allocator keeps this rotation spill- and move-free across the unrolled
/// loop; with 12 (4x3, 6x2 or 12x1) it spills accumulators every step.
pub const REDUCE_ACCUMULATORS: usize = 8;

/// The core's vector throughput, for the conv/pointwise cost model
/// ([`reduce_units`]): FMA pipes, FMA latency in cycles, vector loads per
/// cycle (AMD Zen 3/4; recent Intel cores alike).
const FMA_PIPES: f64 = 2.0;
const FMA_LATENCY: f64 = 4.0;
const VECTOR_LOADS: f64 = 2.0;
/// Bytes of weights a cycle a 1x1 block's steps stream from L2 where its
/// channel block's weights do not fit L1d: 14x14x1024 -> 512 ran 4x4
/// blocks (256 bytes a step of 16 FMAs: 23 bytes a cycle) at 71-72% of
/// the FMA peak, 6x4 (256 bytes a step of 24: 19) at 89%, 7x3 (192 bytes
/// a step of 21) at 98% (Zen 5, one thread, `bench`). At 24, 6x4 looked
/// FMA-bound and took 14x14x2048 -> 512, 8% slower on two threads.
const L2_WEIGHT_BYTES_PER_CYCLE: f64 = 20.0;
/// The price of a 1x1 block whose pixels' inputs (all their channels) do
/// not fit L1d, read again by every channel block: 14x14x1024 -> 512 and
/// -> 256 ran 14x2 blocks (57 KB of inputs) at 87-95% of the FMA peak
/// where 7x3 (28 KB) ran at 94-98% (Zen 5, one thread, `bench`,
/// alternated twice); with 512 channels (28 KB) 14x2 ran 97%, 7x3 95-96%.
const INPUT_BEYOND_L1: f64 = 1.04;

/// Accumulator vectors of a depthwise (multiplier 1) register block: 8
/// pixels of one channel vector. Its taps of one kernel row are unrolled;
/// 12 accumulators do not spill either, but ran no faster (each FMA needs
/// a copy of the shared weight vector, so FMA latency is not the limit)
/// and took longer to compile; 4 and 6 ran 10-20% slower.
pub const DW_ACCUMULATORS: usize = 8;

/// Accumulator vectors of a depthwise register block with multiplier 2 or
/// 3 (4 pixels x 2, 3 pixels x 3): its units share each input load, so
/// the block holds the weight vectors of every unit, the accumulators and
/// an input with its copy. 12 (6 pixels x 2) ran 13% slower (dw 3x3 m2
/// 56x56x32, `examples/cmp.rs`).
pub const DW_SHARED_ACCUMULATORS: usize = 9;

/// The blocking decisions for one stage, computed by [`schedule`] alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Schedule {
    /// f32 lanes per vector.
    pub lanes: usize,
    /// Output pixels (consecutive in a row) per register block.
    pub px: usize,
    /// Accumulator vectors per pixel per register block.
    pub units: usize,
    /// Unrolling of the reduction loop over input channels (conv,
    /// pointwise; 1 for depthwise, whose kernel-row taps are all unrolled).
    pub k_unroll: usize,
}

/// The blocking decisions for `stage` with Cranelift's vectors.
pub fn schedule(stage: &Stage) -> Schedule {
    schedule_for(stage, &Target::CRANELIFT)
}

/// Input channels each output channel of a conv/pointwise stage reduces
/// over per tap: `Ci / G`. A grouped stage is planned as G independent
/// convolutions of `Ci/G -> Co/G` channels (see [`plan_for`]).
fn reduction(stage: &Stage) -> usize {
    stage.input.c / stage.groups()
}

/// The blocking decisions for `stage` on `target`. The one place to
/// change them.
pub fn schedule_for(stage: &Stage, target: &Target) -> Schedule {
    let target = &stage_target(stage, target);
    let stage = &*planned_stage(stage, target);
    if target.direct() {
        return direct_schedule(stage, target);
    }
    let vectors = |n: usize| positions(n, LANES).len();
    let units = match stage.kind {
        StageKind::Conv { .. } | StageKind::Pointwise { .. } => reduce_units(stage).0,
        // One channel vector (m accumulators) per block: blocks of more
        // pixels ran as fast as blocks of more channel vectors.
        StageKind::Depthwise { multiplier: m } if m <= 3 => m,
        StageKind::Depthwise { multiplier } => vectors(multiplier).min(3),
    };
    let reduce = matches!(
        stage.kind,
        StageKind::Conv { .. } | StageKind::Pointwise { .. }
    );
    let (max_acc, k_unroll) = match stage.kind {
        // Long reductions amortise the loop's counter and pointer updates
        // over 8 steps: 4-7% faster than 4 on pointwise 512/1024 and 3x3
        // 64->64 (examples/cmp.rs); short ones would only get a longer tail.
        _ if reduce && reduction(stage) >= 64 => (REDUCE_ACCUMULATORS, 8),
        _ if reduce => (REDUCE_ACCUMULATORS, 4),
        StageKind::Depthwise { multiplier: 1 } => (DW_ACCUMULATORS, 1),
        StageKind::Depthwise { multiplier: 2..=3 } => (DW_SHARED_ACCUMULATORS, 1),
        _ => (MAX_ACCUMULATORS, 1),
    };
    Schedule {
        lanes: LANES,
        px: (max_acc / units).max(1),
        units,
        k_unroll,
    }
}

/// Output vectors per conv/pointwise register block (of
/// [`REDUCE_ACCUMULATORS`] accumulators): 2 (4 pixels) or 1 (8 pixels),
/// whichever the cost model prefers.
///
/// The model counts cycles per reduction step of each register block of a
/// row (`n` pixels of a column segment, `units` vectors, `nkx` taps),
/// over all passes through the output channels: the most of its loads
/// (`n * units` fresh broadcasts, `units` weight vectors) at
/// [`VECTOR_LOADS`] per cycle, its `n * units` FMAs at [`FMA_PIPES`] per
/// cycle, and the FMA latency that a block with few accumulator chains
/// waits on. It predicts what `examples/cmp.rs` measured: 8x1 (one load
/// fewer per 8 FMAs) 4-9% faster on pointwise 28x28x256 to 112x112x32 and
/// on 3x3 / 5x5 convolutions, 4x2 far faster where narrow border blocks
/// dominate (7x7 on 17x17: 8x1 33% slower). Above 512 output channels 8x1
/// is not tried: it doubles the passes over the input, and ran 6-8% slower
/// on 7x7x1024 (at 512, 14x14x512, it still ran 7% faster).
fn reduce_units(stage: &Stage) -> (usize, String) {
    let cout = stage.output.c / stage.groups();
    let vectors = positions(cout, LANES).len();
    if vectors == 1 {
        return (1, "one output vector".into());
    }
    if cout > 512 {
        return (
            2,
            "more than 512 output channels: 4x2 (fewer passes over the input)".into(),
        );
    }
    let cost = |units: usize| block_cost(stage, vectors, REDUCE_ACCUMULATORS / units, units);
    let (c1, c2) = (cost(1), cost(2));
    let units = if c1 <= c2 { 1 } else { 2 };
    let per = if is_flat(stage) {
        "image"
    } else {
        "output row"
    };
    let why = format!(
        "cost model: 8x1 {:.0} vs 4x2 {:.0} estimated cycles per {per}",
        c1 * stage.kernel[0] as f64 * reduction(stage) as f64,
        c2 * stage.kernel[0] as f64 * reduction(stage) as f64,
    );
    (units, why)
}

/// Estimated cycles per reduction step over a row (an image, for a flat
/// stage) of register blocks of `px` pixels x `units` of the stage's
/// `vectors` output vectors (see [`reduce_units`]): Cranelift's blocks load
/// a pixel's input once per FMA (see [`REDUCE_ACCUMULATORS`]).
fn block_cost(stage: &Stage, vectors: usize, px: usize, units: usize) -> f64 {
    // A flat stage's calls are mostly long runs of pixels across rows.
    let (wo, w) = if is_flat(stage) {
        let n = stage.output.h * stage.output.w;
        (n, n)
    } else {
        (stage.output.w, stage.input.w)
    };
    let cols: Vec<(usize, usize)> = (0..wo)
        .map(|ox| {
            tap_range(
                ox,
                stage.stride[1],
                stage.dilation[1],
                stage.padding.left,
                stage.kernel[1],
                w,
            )
        })
        .collect();
    let block = |n: usize, nkx: usize| {
        let fmas = (n * units) as f64;
        let step = ((fmas + units as f64) / VECTOR_LOADS)
            .max(fmas / FMA_PIPES)
            .max(FMA_LATENCY);
        nkx as f64 * step
    };
    let mut row = 0.0;
    let mut a = 0;
    while a < wo {
        let mut b = a;
        while b < wo && cols[b] == cols[a] {
            b += 1;
        }
        let (n, nkx) = (b - a, cols[a].1);
        row += (n / px) as f64 * block(px, nkx);
        if n % px > 0 {
            row += block(n % px, nkx);
        }
        a = b;
    }
    vectors.div_ceil(units) as f64 * row
}

/// Most pixels of a depthwise register block of a direct generator: more
/// only lengthen the remainder blocks of a row (16 x 1 ran best of 16x1,
/// 12x2, 8x3, 6x4 on depthwise 56x56x144 and 28x28x144).
const DIRECT_MAX_PX: usize = 16;

/// Blocking of a direct generator, which allocates its own registers:
/// accumulators, the weight vectors of one step and one broadcast (or
/// input) register fill the register file, with no spills.
fn direct_schedule(stage: &Stage, t: &Target) -> Schedule {
    if super::inputs_in_lanes_ok(stage, t) {
        // A block's sums (pixels x outputs) fill one vector.
        return Schedule {
            lanes: t.lanes,
            px: t.lanes / stage.output.c,
            units: 1,
            k_unroll: 1,
        };
    }
    let regs = t.vector_registers;
    let (px, units) = match stage.kind {
        StageKind::Conv { .. } | StageKind::Pointwise { .. } => {
            let (px, units, _) = direct_reduce_block(stage, t);
            (px, units)
        }
        // Pixels of one channel vector; the row's weights in registers
        // beside them where they fit (see the generators).
        StageKind::Depthwise { multiplier: 1 } => ((regs / 2).min(DIRECT_MAX_PX), 1),
        // One accumulator per multiplier; the units share the input and
        // hold one kernel column's weights.
        StageKind::Depthwise { multiplier: m } if m <= 3 => {
            (((regs - m - 2) / m).min(DIRECT_MAX_PX), m)
        }
        StageKind::Depthwise { multiplier } => {
            let units = positions(multiplier, t.lanes).len().min(4);
            let px = ((regs - units - 1) / units).min((regs - 4) / units);
            (px.min(DIRECT_MAX_PX), units)
        }
    };
    let reduce = matches!(
        stage.kind,
        StageKind::Conv { .. } | StageKind::Pointwise { .. }
    );
    Schedule {
        lanes: t.lanes,
        px: px.max(1),
        units,
        k_unroll: match () {
            _ if reduce && reduction(stage) >= 64 => 8,
            _ if reduce => 4,
            _ => 1,
        },
    }
}

/// A direct generator's conv/pointwise block: for 1 to 4 output vectors
/// per block, the most pixels whose accumulators leave four registers for
/// the epilogue, and the weight vectors of a step and a broadcast
/// register beside them (AVX-512 can do without the broadcast register:
/// `{1to16}` operands), and a few narrower blocks that may divide a row
/// better; the cheapest by [`direct_cost`]. Returns `(pixels, vectors, why)`.
/// Bytes of weights a block of more than one vector of output channels may
/// have (all its taps and input channels): every pixel block reads them
/// again, so past this they would come from L3 each time. On Intel, half
/// of L2: Inception's 7x7 128 -> 128 with 4 vectors a block (1.6 MB) ran
/// 2.5x slower than with 2 (0.8 MB) on a 2 MiB L2 (Sapphire Rapids). On
/// AMD, four fifths of it: on a Zen 5 (1 MiB L2, its L3 closer) 2
/// vectors against 1 vector of 28 pixels ran 3x3 28x28x512 -> 512 (590
/// KB a block) 13.8-14.3 against 20.0-21.9 ms and Inception's 7x7 (802
/// KB) 1.52-1.55 against 1.61-1.75 ms (`bench`, one thread, alternating).
pub fn block_weight_bytes() -> usize {
    let l2 = crate::layer_plan::host_l2_bytes();
    match crate::backend::is_amd() {
        true => l2 / 5 * 4,
        false => l2 / 2,
    }
}

fn direct_reduce_block(stage: &Stage, t: &Target) -> (usize, usize, String) {
    let cout = stage.output.c / stage.groups();
    let vectors = positions(cout, t.lanes).len();
    let regs = t.vector_registers;
    let cols: Vec<(usize, usize)> = (0..stage.output.w)
        .map(|ox| {
            tap_range(
                ox,
                stage.stride[1],
                stage.dilation[1],
                stage.padding.left,
                stage.kernel[1],
                stage.input.w,
            )
        })
        .collect();
    let mut costs: Vec<(f64, usize, usize)> = Vec::new();
    let taps_ci = stage.kernel[0] * stage.kernel[1] * reduction(stage);
    let most_bytes = block_weight_bytes();
    let l1d = crate::layer_plan::host_l1d_bytes();
    for units in 1..=vectors.min(4) {
        if units > 1 && taps_ci * units * t.lanes * 4 > most_bytes {
            continue;
        }
        let most = (regs - 4) / units;
        let fits = |px: usize| {
            let embedded = px * units + units + 1 > regs;
            !embedded || (t.lanes == 16 && px * units + units <= regs)
        };
        let Some(top) = (1..=most).rev().find(|&px| fits(px)) else {
            continue;
        };
        // And the widths that split a short row (or a flat stage's whole
        // image) evenly: 7 pixels take 7x2, not 14x2 half empty
        // (Winograd's point products on 7 tiles of 128 -> 32: 197 against
        // 82-90 us for the layer).
        let low = (top * 2 / 3).max(1);
        let n = match is_flat(stage) {
            true => stage.output.h * stage.output.w,
            false => stage.output.w,
        };
        let even = (1..=8).map(|k| n.div_ceil(k)).filter(|&px| px < low);
        let mut widths: Vec<usize> = (low..=top).chain(even).collect();
        widths.dedup();
        for px in widths {
            let embedded = px * units + units + 1 > regs;
            let mut c = direct_cost(stage, &cols, vectors, px, units, embedded, t.lanes);
            if stage.kernel == [1, 1] && px * taps_ci * 4 > l1d {
                c *= INPUT_BEYOND_L1;
            }
            costs.push((c, px, units));
        }
    }
    // Ties go to more pixels per block: each weight vector loaded serves
    // more FMAs (4x4 ran 10-20% slower than 14x2 on pointwise 512->512,
    // which the model rated equal before it priced the weights streamed
    // from L2).
    costs.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then((b.1 * b.2).cmp(&(a.1 * a.2)))
            .then(b.1.cmp(&a.1))
    });
    let (_, px, units) = costs[0];
    let scale = stage.kernel[0] as f64 * reduction(stage) as f64 * stage.groups() as f64;
    let mut best_per_units: Vec<String> = Vec::new();
    for u in 1..=4 {
        if let Some(&(c, px, _)) = costs.iter().find(|c| c.2 == u) {
            best_per_units.push(format!("{px}x{u} {:.0}", c * scale));
        }
    }
    let per = if is_flat(stage) {
        "image"
    } else {
        "output row"
    };
    let why = format!(
        "cost model ({}-bit, {} registers): {} estimated cycles per {per} (best pixels per vector count)",
        t.lanes * 32,
        t.vector_registers,
        best_per_units.join(", ")
    );
    (px, units, why)
}

/// Estimated cycles per input channel and kernel row for a direct
/// generator's conv/pointwise blocks of `px` pixels x `units` of the
/// stage's `vectors` output vectors (`cols`: each output column's valid
/// kernel columns), over a row (an image, for a flat
/// stage), as the generator runs them: a flat stage's pixels in blocks of
/// exactly `px` (the last moved back over its predecessor), a row's in
/// [`StagePlan::col_blocks`]-like blocks of near-equal width whose pixels each
/// take only their valid kernel columns. A step of `n` pixels costs its
/// loads (a broadcast per pixel, or per FMA with `embedded` broadcasts,
/// and the weight vectors) at [`VECTOR_LOADS`] per cycle, its FMAs at
/// [`FMA_PIPES`], and at least the FMA latency.
fn direct_cost(
    stage: &Stage,
    cols: &[(usize, usize)],
    vectors: usize,
    px: usize,
    units: usize,
    embedded: bool,
    lanes: usize,
) -> f64 {
    // A 1x1's channel block's weights: from L2 where past L1d (measured
    // on 1x1s only; a conv's border steps of a few pixels would be
    // priced by their weights alone).
    let from_l2 = stage.kernel == [1, 1]
        && units * lanes * 4 * reduction(stage) > crate::layer_plan::host_l1d_bytes();
    let step = |n: usize, u: usize| -> f64 {
        if n == 0 || u == 0 {
            return 0.0;
        }
        let fmas = (n * u) as f64;
        let loads = if embedded { fmas } else { n as f64 } + u as f64;
        let streamed = match from_l2 {
            true => (u * lanes * 4) as f64 / L2_WEIGHT_BYTES_PER_CYCLE,
            false => 0.0,
        };
        (loads / VECTOR_LOADS)
            .max(fmas / FMA_PIPES)
            .max(FMA_LATENCY)
            .max(streamed)
    };
    let row = |u: usize| -> f64 {
        if is_flat(stage) {
            let n = stage.output.h * stage.output.w;
            return if n >= px {
                n.div_ceil(px) as f64 * step(px, u)
            } else {
                n as f64 * step(1, u)
            };
        }
        // Per block, per kernel column: its valid pixels.
        let wo = cols.len();
        let width = wo.div_ceil(wo.div_ceil(px));
        cols.chunks(width)
            .map(|b| {
                (0..stage.kernel[1])
                    .map(|kx| {
                        let n = b.iter().filter(|&&(k0, n)| (k0..k0 + n).contains(&kx));
                        step(n.count(), u)
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    (vectors / units) as f64 * row(units) + row(vectors % units)
}

/// Why [`schedule_for`] blocks `stage` as it does on `target`, for the plan dump.
pub fn schedule_reason_for(stage: &Stage, target: &Target) -> String {
    if !target.direct() {
        return schedule_reason(stage);
    }
    let planned = planned_stage(stage, target);
    if planned.kind != stage.kind {
        let n = stage.output.c;
        return format!(
            "one input channel, {n} output{}: planned as {}; {}",
            if n == 1 { "" } else { "s" },
            planned.describe_op(),
            schedule_reason_for(&planned, target)
        );
    }
    if super::inputs_in_lanes_ok(stage, target) {
        let co = stage.output.c;
        return format!(
            "{co} output{}: vectors over each kernel row's inputs ({} input channels x the \
             kernel columns, contiguous) and its weights alike, an accumulator per pixel and \
             output, the {} pixels' sums across lanes stored as one vector",
            if co == 1 { "" } else { "s" },
            stage.input.c,
            target.lanes / co
        );
    }
    let narrowed = stage_target(stage, target);
    if narrowed != *target {
        let why = schedule_reason_for(stage, &narrowed);
        let bits = narrowed.lanes * 32;
        // (Only grouped stages are narrowed.)
        return format!(
            "groups of {} outputs fill a {bits}-bit vector: {bits}-bit code; {why}",
            stage.output.c / stage.groups()
        );
    }
    let s = direct_schedule(stage, target);
    match stage.kind {
        StageKind::Conv { .. } | StageKind::Pointwise { .. } => {
            direct_reduce_block(stage, target).2
        }
        StageKind::Depthwise { multiplier: 1 } => format!(
            "depthwise: {} pixels of one channel vector, a kernel row's weights in registers",
            s.px
        ),
        StageKind::Depthwise { multiplier: 2..=3 } => format!(
            "depthwise multiplier 2-3: {} pixels x one accumulator per multiplier, the units share each input load",
            s.px
        ),
        StageKind::Depthwise { .. } => format!(
            "depthwise multiplier >= 4: {} pixels x {} vectors over the multiplier, the input broadcast once per pixel",
            s.px, s.units
        ),
    }
}

/// Why [`schedule`] blocks `stage` as it does, for the plan dump.
pub fn schedule_reason(stage: &Stage) -> String {
    match stage.kind {
        StageKind::Conv { .. } | StageKind::Pointwise { .. } => reduce_units(stage).1,
        StageKind::Depthwise { multiplier: 1 } => {
            "depthwise: 8 pixels of one channel vector (4 and 6 ran slower)".into()
        }
        StageKind::Depthwise { multiplier: 2..=3 } => {
            "depthwise multiplier 2-3: one accumulator per multiplier, the units share each input load".into()
        }
        StageKind::Depthwise { .. } => {
            "depthwise multiplier >= 4: vectors over the multiplier, the input broadcast".into()
        }
    }
}
