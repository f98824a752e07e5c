//! Per-stage code plan: the blocking decisions ([`Schedule`]), the stage's
//! geometry with its border classes, and the channel "units" (one
//! accumulator vector per output pixel each) with the packed-weight layout
//! the generated loops read. Everything here depends only on the stage's
//! shapes, never on weight values, so the machine code can be cached.

use crate::backend::Backend;
use convjit_ir::{Activation, Stage, StageKind};

/// f32 lanes of the Cranelift generator's vectors: its x64 backend lowers
/// only 128-bit vectors (and NEON has no wider ones).
pub const LANES: usize = 4;

/// The most f32 lanes of any target (AVX-512: 16).
pub const MAX_LANES: usize = 16;

/// What a code generator offers the plan: vector width and registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// A concrete generator (never `Auto`).
    pub backend: Backend,
    /// f32 lanes per vector.
    pub lanes: usize,
    /// Vector registers the generator may use.
    pub vector_registers: usize,
}

impl Target {
    /// Cranelift: 128-bit vectors, 16 registers on x64 (32 on AArch64,
    /// which its register allocator uses on its own).
    pub const CRANELIFT: Target = Target {
        backend: Backend::Cranelift,
        lanes: LANES,
        vector_registers: 16,
    };
    pub const AVX2: Target = Target {
        backend: Backend::Avx2,
        lanes: 8,
        vector_registers: 16,
    };
    pub const AVX512: Target = Target {
        backend: Backend::Avx512,
        lanes: 16,
        vector_registers: 32,
    };

    /// The target of a concrete generator (`Auto` is Cranelift's).
    pub fn of(backend: Backend) -> Target {
        match backend {
            Backend::Avx2 => Target::AVX2,
            Backend::Avx512 => Target::AVX512,
            Backend::Auto | Backend::Cranelift => Target::CRANELIFT,
        }
    }

    /// The generator writes its own machine code (and allocates its own
    /// registers): `vfmadd231ps` accumulates in place, a broadcast is
    /// shared by a row of accumulators.
    pub fn direct(&self) -> bool {
        self.backend != Backend::Cranelift
    }

    /// Bytes per vector.
    pub fn vector_bytes(&self) -> usize {
        self.lanes * 4
    }
}

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

/// Conv/pointwise weights (bytes) above which channel blocks are walked
/// outside the pixels ([`Plan::channels_outer`]): a typical L2 (Zen 3:
/// 512 KiB per core).
pub const CHANNELS_OUTER_BYTES: usize = 512 << 10;

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

/// The generator that writes `stage` when `target` is the layer's: the
/// AVX-512 one hands grouped stages of at most 8 outputs per group to the
/// AVX2 one (its code runs on any AVX-512 host). Such a group fills a
/// 256-bit vector but only half a 512-bit one, and its padded weights
/// twice the cache: 3x3 56x56x128 with 16 groups ran 643 us on AVX2 and
/// 1466 on AVX-512, pointwise 28x28x256 with 32 groups 41 and 57 us (with
/// 8 groups of 32 outputs AVX-512 won, 806 against 1370 us). Depthwise
/// rows of 2 to 7 channels (an RGB image's filter) stay 512-bit, though
/// their taps shifted by C floats make most loads straddle cache lines:
/// an earlier hand-off to AVX2 rested on a `bench` that timed "jit" right
/// after its 512-bit FMA loop (slowed by it); called back to back,
/// 1920x1080x3, tenth percentiles of two or three runs each, 512-bit
/// against 256-bit: 5x5 separated 3.53-3.66 ms against 3.82-4.01, 7x7
/// 4.21-4.67 against 4.53-4.97, box 9x9 5.26-5.38 against 6.36-6.44, 5x5
/// whole 6.04-6.21 against 7.61-7.71.
pub fn stage_target(stage: &Stage, target: &Target) -> Target {
    let grouped = stage.groups() > 1 && stage.output.c / stage.groups() <= Target::AVX2.lanes;
    if target.backend == Backend::Avx512 && grouped {
        Target::AVX2
    } else {
        *target
    }
}

/// Bytes that a stage's packed weights may spend on zero lanes (units
/// of fewer channels than lanes, see [`Plan::compact`]) beyond a tenth of
/// the floats the units use. A whole vector per unit keeps its loads
/// within cache lines; ordinary layers (channels a multiple of the lanes,
/// or overlapping tails, which use all their lanes) have no zero lanes or
/// few, so only layers whose padding costs real memory (a one-channel
/// kernel on 16 lanes: 16x) are packed otherwise. Overlapping tails stay:
/// they copy at most `lanes - 1` channels of a group again, less than its
/// channels (a tail exists only above `lanes` of them), so at most twice.
pub const PACK_SLACK_BYTES: usize = 256 << 10;

/// Bytes of row-vector weights ([`Plan::row_weights_off`]) a stage may
/// have: they copy every weight `lanes / C` times or more, and run
/// few-channel filters about twice as fast as the per-pixel code (RGB
/// 40x40 on 128x128, AVX-512: 4.6 against 9.8 ms), so they are worth
/// more memory than zero lanes: RGB kernels up to 147x147 on 16 lanes.
pub const PACK_ROW_BYTES: usize = 4 << 20;

/// Whether `padded` floats are cheap enough against the `used` floats
/// they hold (see [`PACK_SLACK_BYTES`]).
fn padding_ok(padded: usize, used: usize) -> bool {
    padded.saturating_sub(used) <= (used / 10).max(PACK_SLACK_BYTES / 4)
}

/// Whether the row-vector weights `[tap][phase][lane]` of `phases` phases
/// (and a bias, counted as one more tap) fit [`PACK_ROW_BYTES`]; a larger
/// kernel runs its rows per pixel.
fn row_weights_ok(taps: usize, phases: usize, t: &Target) -> bool {
    (taps + 1) * phases * t.lanes * 4 <= PACK_ROW_BYTES
}

/// Outputs of a one-channel stage that a direct generator runs as
/// vectors along the row ([`Plan::row_multiplier`]): each input pixel
/// feeds that many consecutive lanes, from a load of at least 4 pixels;
/// its `taps` per output packed as a vector each must fit
/// [`row_weights_ok`].
fn row_multiplier_ok(m: usize, taps: usize, t: &Target) -> bool {
    t.direct() && matches!(m, 2 | 4) && t.lanes / m >= 4 && row_weights_ok(taps, 1, t)
}

/// `stage` as the generator for `target` plans it: a conv on one input
/// channel with 2 or 4 outputs (a filter bank on a grey image: Sobel's
/// dx and dy) is a depthwise stage with that multiplier, the same
/// weights `[Kh][Kw][1][M]`, so a direct generator runs its interior
/// columns as vectors along the row instead of 2 or 4 lanes of a vector
/// over its outputs.
pub fn planned_stage<'a>(stage: &'a Stage, target: &Target) -> std::borrow::Cow<'a, Stage> {
    match stage.kind {
        // Not a flat 1x1: its function takes pixel ranges (`call_range`,
        // decided on the layer's stage), a depthwise one takes rows.
        StageKind::Conv { cout, groups: 1 }
            if stage.input.c == 1
                && !is_flat(stage)
                && stage.stride[1] == 1
                && row_multiplier_ok(
                    cout,
                    stage.kernel[0] * stage.kernel[1],
                    &stage_target(stage, target),
                ) =>
        {
            let mut s = stage.clone();
            s.kind = StageKind::Depthwise { multiplier: cout };
            std::borrow::Cow::Owned(s)
        }
        _ => std::borrow::Cow::Borrowed(stage),
    }
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
    // A block's weights (one channel block: all taps and input channels)
    // are read again by every pixel block: beyond half of L2 they come
    // from L3 each time (7x7 128->128: 4 vectors a block, 1.6 MB, ran
    // 2.5x slower than 2 vectors, 0.8 MB, on a 2 MB L2).
    let taps_ci = stage.kernel[0] * stage.kernel[1] * reduction(stage);
    let l2 = crate::layer_plan::host_l2_bytes();
    for units in 1..=vectors.min(4) {
        if units > 1 && taps_ci * units * t.lanes * 4 > l2 / 2 {
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
        for px in (top * 2 / 3).max(1)..=top {
            let embedded = px * units + units + 1 > regs;
            let c = direct_cost(stage, &cols, vectors, px, units, embedded);
            costs.push((c, px, units));
        }
    }
    // Ties go to more pixels per block: each weight vector loaded serves
    // more FMAs (4x4 ran 10-20% slower than 14x2 on pointwise 512->512,
    // which the model rates equal).
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
/// [`Plan::col_blocks`]-like blocks of near-equal width whose pixels each
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
) -> f64 {
    let step = |n: usize, u: usize| -> f64 {
        if n == 0 || u == 0 {
            return 0.0;
        }
        let fmas = (n * u) as f64;
        let loads = if embedded { fmas } else { n as f64 } + u as f64;
        (loads / VECTOR_LOADS)
            .max(fmas / FMA_PIPES)
            .max(FMA_LATENCY)
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
        return format!(
            "one input channel, {} outputs: planned as {}; {}",
            stage.output.c,
            planned.describe_op(),
            schedule_reason_for(&planned, target)
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

/// Vector start offsets covering `n` channels with vectors of `lanes`:
/// `0, lanes, 2*lanes, ...`; when `n` is not a multiple of `lanes` (and at
/// least `lanes`) the last vector overlaps the one before it and ends
/// exactly at `n`, so no load or store leaves the channel range. `n <
/// lanes` gives one partial vector `(0, n)`. Returns `(start, valid_lanes)`.
pub fn positions(n: usize, lanes: usize) -> Vec<(usize, usize)> {
    if n < lanes {
        return vec![(0, n)];
    }
    let mut v: Vec<(usize, usize)> = (0..n / lanes).map(|i| (i * lanes, lanes)).collect();
    if !n.is_multiple_of(lanes) {
        v.push((n - lanes, lanes));
    }
    v
}

/// Where a unit's input vector comes from (depthwise only), as a channel
/// offset from the block's input base.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InSrc {
    /// Conv/pointwise: inputs are broadcast scalars of the reduction.
    None,
    /// A vector of contiguous channels.
    Vector(usize),
    /// One channel broadcast to all lanes.
    Splat(usize),
    /// `n < lanes` contiguous channels (a full vector could read past the
    /// end of the buffer): loaded one by one, or by a masked load.
    Lanes(usize, usize),
}

/// Where a unit's result goes, as channel offsets from the block's output base.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OutDst {
    /// A vector of contiguous channels.
    Vector(usize),
    /// `(lane, channel)` pairs stored one by one (or by a masked store
    /// where they are lanes `0..n` to channels `c..c+n`).
    Lanes(Vec<(u8, usize)>),
    /// Depthwise with multiplier 2: this unit (`m = 0` of `lanes`
    /// channels) and the next (`m = 1`) interleave into `2 * lanes`
    /// contiguous channels from this one: shuffles and two stores instead
    /// of one store per lane.
    Pair(usize),
    /// The second unit of a [`OutDst::Pair`], stored by the first.
    Paired,
}

/// One accumulator vector per pixel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unit {
    pub input: InSrc,
    pub out: OutDst,
    /// Output channel of each lane (for the first repetition of the run in
    /// group 0); `None` lanes get zero weights and bias (or, in a
    /// [`Plan::compact`] plan, whatever follows: their results are never
    /// stored).
    pub lanes: [Option<usize>; MAX_LANES],
    /// Float offset of the unit's weight vector in each (tap, reduction
    /// channel) step of its run, and of its bias vector in the run's bias:
    /// `u * lanes` (aligned), or where its lanes' floats are in a compact
    /// step (see [`Plan::compact`]).
    pub w_off: usize,
}

impl Unit {
    /// Lanes holding an output channel (the first ones).
    pub fn used(&self) -> usize {
        self.lanes.iter().take_while(|l| l.is_some()).count()
    }
}

/// A run of identical register blocks repeated `count` times, pointers
/// advancing by the strides each time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Run {
    pub count: usize,
    pub units: Vec<Unit>,
    /// Offsets of the first repetition: input/output channels, weight and
    /// bias bytes (relative to the group's base).
    pub in_base: usize,
    pub out_base: usize,
    pub w_base: usize,
    pub bias_base: usize,
    /// Per-repetition advances (channels, channels, bytes, bytes).
    pub in_stride: usize,
    pub out_stride: usize,
    pub w_stride: usize,
    pub bias_stride: usize,
    /// Output-channel shift per repetition (for packing).
    pub o_stride: usize,
    /// Floats per (tap, reduction channel) step of a repetition's weights
    /// (and of its bias): `units x lanes`, or fewer in a compact plan.
    pub w_step: usize,
}

impl Run {
    /// Bytes of weights per tap (all `ci_per_tap` reduction channels).
    pub fn tap_bytes(&self, ci_per_tap: usize) -> usize {
        ci_per_tap * self.w_step * 4
    }

    /// Bytes from a step's weights (or a repetition's bias) to unit `u`'s vector.
    pub fn unit_bytes(&self, u: usize) -> usize {
        self.units[u].w_off * 4
    }
}

/// Output columns `a..b` that all read the kernel columns `kx0..kx0+nkx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    pub a: usize,
    pub b: usize,
    pub kx0: usize,
    pub nkx: usize,
}

/// Everything code generation and packing need for one stage.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The generator and vectors this plan is made for.
    pub target: Target,
    pub sched: Schedule,
    pub strategy: Strategy,
    /// Geometry.
    pub h: usize,
    pub w: usize,
    pub ci: usize,
    pub ho: usize,
    pub wo: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pt: usize,
    pub pl: usize,
    /// Reduction channels per tap in the packed layout (Ci for Reduce, 1 else).
    pub ci_per_tap: usize,
    /// Every output row reads all `kh` kernel rows.
    pub rows_full: bool,
    /// The function takes a range of pixels ([`is_flat`]).
    pub flat: bool,
    pub segments: Vec<Segment>,
    /// Channel groups and their strides: a grouped conv/pointwise stage's
    /// groups, DwMultiplier's input channels, else 1.
    pub groups: usize,
    pub g_in: usize,
    pub g_out: usize,
    pub g_w: usize,
    pub g_bias: usize,
    pub g_o: usize,
    pub runs: Vec<Run>,
    /// Float offset of the packed bias, if any; total packed floats.
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
    /// [`Plan::row_vectors`]), 2 or more channels: float offset of their
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
    pub packed_len: usize,
    pub activation: Activation,
    pub residual: bool,
    /// The output channels `c0..c1` the function computes: all, `(0,
    /// co)`, but for a thread's share of a conv/pointwise stage
    /// ([`plan_channels`]), whose packed weights hold only those.
    pub channels: (usize, usize),
}

/// Valid kernel positions `k` (`0 <= o*s + k*d - p < n`) as `(k0, count)`.
pub fn tap_range(o: usize, s: usize, d: usize, p: usize, k: usize, n: usize) -> (usize, usize) {
    let base = (o * s) as i64 - p as i64;
    let valid = |t: usize| {
        let i = base + (t * d) as i64;
        i >= 0 && i < n as i64
    };
    match ((0..k).find(|&t| valid(t)), (0..k).rev().find(|&t| valid(t))) {
        (Some(a), Some(b)) => (a, b - a + 1),
        _ => (0, 0),
    }
}

/// A 1x1 stride-1 unpadded conv or pointwise stage is *flat*: its pixels
/// are independent, so its function takes a range of pixels (in row-major
/// order) rather than of rows, and its register blocks run on across rows
/// (14x14: 49 blocks of 4 pixels rather than 4+4+4+2 per row).
pub fn is_flat(stage: &Stage) -> bool {
    let p = stage.padding;
    let unpadded = p.top == 0 && p.bottom == 0 && p.left == 0 && p.right == 0;
    let reduce = matches!(
        stage.kind,
        StageKind::Conv { .. } | StageKind::Pointwise { .. }
    );
    reduce && stage.kernel == [1, 1] && stage.stride == [1, 1] && unpadded
}

/// The `(row0, rows)` arguments that make `stage`'s function compute its
/// output rows `a..b`: pixels for a flat stage ([`is_flat`]), else rows.
pub fn call_range(stage: &Stage, a: usize, b: usize) -> (usize, usize) {
    if is_flat(stage) {
        let w = stage.output.w;
        (a * w, (b - a) * w)
    } else {
        (a, b - a)
    }
}

/// The plan of `stage` for Cranelift's vectors.
pub fn plan(stage: &Stage) -> Plan {
    plan_for(stage, &Target::CRANELIFT)
}

/// The plan of `stage` for the vectors and registers of `target`.
pub fn plan_for(stage: &Stage, target: &Target) -> Plan {
    plan_with(stage, target, None)
}

/// [`plan_for`], its units packed compact or aligned as `compact` says
/// (`None`: as [`Plan::compact`] decides), for tests of both layouts.
fn plan_with(stage: &Stage, target: &Target, compact: Option<bool>) -> Plan {
    let target = &stage_target(stage, target);
    let stage = &*planned_stage(stage, target);
    let sched = schedule_for(stage, target);
    let lanes = target.lanes;
    let (si, so) = (stage.input, stage.output);
    let [kh, kw] = stage.kernel;
    let [sh, sw] = stage.stride;
    let [dh, dw] = stage.dilation;
    let p = stage.padding;
    let (h, w, ho, wo) = (si.h, si.w, so.h, so.w);
    let (pt, pl) = (p.top, p.left);
    let rows_full = (0..ho).all(|oy| tap_range(oy, sh, dh, pt, kh, h) == (0, kh));
    let mut segments: Vec<Segment> = Vec::new();
    for ox in 0..wo {
        let (kx0, nkx) = tap_range(ox, sw, dw, pl, kw, w);
        match segments.last_mut() {
            Some(s) if s.kx0 == kx0 && s.nkx == nkx => s.b = ox + 1,
            _ => segments.push(Segment {
                a: ox,
                b: ox + 1,
                kx0,
                nkx,
            }),
        }
    }
    let (ci, co) = (si.c, so.c);
    let taps = kh * kw;
    let u = sched.units;
    let (strategy, ci_per_tap, groups) = match stage.kind {
        StageKind::Conv { groups, .. } | StageKind::Pointwise { groups, .. } => {
            (Strategy::Reduce, ci / groups, groups)
        }
        StageKind::Depthwise { multiplier } if multiplier <= 3 => (Strategy::DwChannels, 1, 1),
        StageKind::Depthwise { .. } => (Strategy::DwMultiplier, 1, ci),
    };
    let mut runs = Vec::new();
    // Builds runs from vector positions: full blocks of `per_block`
    // position-groups, then a remainder; `mk` makes the units of one position.
    let mut add_runs = |pos: &[(usize, usize)],
                        per_block: usize,
                        in_per_pos: usize,
                        out_per_pos: usize,
                        mk: &dyn Fn(usize, usize) -> Vec<Unit>| {
        let regular = pos
            .iter()
            .take_while(|&&(s, v)| v == lanes && s.is_multiple_of(lanes));
        let nreg = regular.count();
        let full = nreg / per_block;
        if full > 0 {
            let units: Vec<Unit> = pos[..per_block]
                .iter()
                .flat_map(|&(s, v)| mk(s, v))
                .collect();
            runs.push(Run {
                count: full,
                units,
                in_base: 0,
                out_base: 0,
                in_stride: per_block * in_per_pos,
                out_stride: per_block * out_per_pos,
                o_stride: per_block * out_per_pos,
                // The weight layout: see `layout_runs`.
                w_base: 0,
                bias_base: 0,
                w_stride: 0,
                bias_stride: 0,
                w_step: 0,
            });
        }
        let rest = &pos[full * per_block..];
        if !rest.is_empty() {
            let (in_base, out_base) = (
                rest[0].0 / lanes * in_per_pos,
                rest[0].0 / lanes * out_per_pos,
            );
            // Offsets inside the remainder are relative to its base.
            let units: Vec<Unit> = rest
                .iter()
                .flat_map(|&(s, v)| mk(s, v))
                .map(|mut un| {
                    un.input = match un.input {
                        InSrc::Vector(c) => InSrc::Vector(c - in_base),
                        InSrc::Lanes(c, n) => InSrc::Lanes(c - in_base, n),
                        other => other,
                    };
                    un.out = match un.out {
                        OutDst::Vector(c) => OutDst::Vector(c - out_base),
                        OutDst::Lanes(l) => {
                            OutDst::Lanes(l.into_iter().map(|(k, c)| (k, c - out_base)).collect())
                        }
                        OutDst::Pair(c) => OutDst::Pair(c - out_base),
                        OutDst::Paired => OutDst::Paired,
                    };
                    un
                })
                .collect();
            runs.push(Run {
                count: 1,
                units,
                in_base,
                out_base,
                in_stride: 0,
                out_stride: 0,
                o_stride: 0,
                w_base: 0,
                bias_base: 0,
                w_stride: 0,
                bias_stride: 0,
                w_step: 0,
            });
        }
    };
    let lanes_of = |f: &dyn Fn(usize) -> usize, v: usize| {
        let mut l = [None; MAX_LANES];
        for (i, slot) in l.iter_mut().enumerate().take(v) {
            *slot = Some(f(i));
        }
        l
    };
    // One unit whose lanes are the output channels `s..s + v`: a vector
    // store, or a masked (or lane by lane) one when `v` is short.
    let contiguous = |input: InSrc, s: usize, v: usize| {
        vec![Unit {
            input,
            out: if v == lanes {
                OutDst::Vector(s)
            } else {
                OutDst::Lanes((0..v).map(|l| (l as u8, s + l)).collect())
            },
            lanes: lanes_of(&|l| s + l, v),
            w_off: 0,
        }]
    };
    let (g_in, g_out, g_o);
    match strategy {
        // Per group: vectors over its `Co/G` outputs, reducing over its
        // `Ci/G` inputs (one group, the whole stage, without `groups`).
        Strategy::Reduce => {
            let pos = positions(co / groups, lanes);
            let mk = |s: usize, v: usize| contiguous(InSrc::None, s, v);
            add_runs(&pos, u, 0, lanes, &mk);
            // Strides between groups: none with one.
            let (gi, go) = match groups {
                1 => (0, 0),
                _ => (ci / groups, co / groups),
            };
            (g_in, g_out, g_o) = (gi, go, go);
        }
        Strategy::DwChannels => {
            let m = co / ci;
            let pos = positions(ci, lanes);
            let mk = |s: usize, v: usize| {
                (0..m)
                    .map(|mm| Unit {
                        input: if v == lanes {
                            InSrc::Vector(s)
                        } else {
                            InSrc::Lanes(s, v)
                        },
                        out: if m == 1 && v == lanes {
                            OutDst::Vector(s)
                        } else if m == 2 && v == lanes {
                            [OutDst::Pair(s * 2), OutDst::Paired][mm].clone()
                        } else {
                            OutDst::Lanes((0..v).map(|l| (l as u8, (s + l) * m + mm)).collect())
                        },
                        lanes: lanes_of(&|l| (s + l) * m + mm, v),
                        w_off: 0,
                    })
                    .collect()
            };
            add_runs(&pos, (u / m).max(1), lanes, lanes * m, &mk);
            (g_in, g_out, g_o) = (0, 0, 0);
        }
        Strategy::DwMultiplier => {
            let m = co / ci;
            let pos = positions(m, lanes);
            // Fewer outputs than lanes (wide vectors only): a whole vector
            // would write the next group's.
            let mk = |s: usize, v: usize| contiguous(InSrc::Splat(0), s, v);
            add_runs(&pos, u, 0, lanes, &mk);
            (g_in, g_out, g_o) = (1, m, m);
        }
    }
    let steps = taps * ci_per_tap;
    let has_bias = stage.bias_key.is_some();
    // Floats of the units' weights and bias with each layout.
    let floats = |runs: &[Run]| {
        let per_step: usize = runs.iter().map(|r| r.count * r.w_step).sum();
        groups * (steps + usize::from(has_bias)) * per_step
    };
    for run in &mut runs {
        aligned_units(run, lanes);
    }
    // Zero lanes beyond the lanes the units use (overlapping tails use
    // all theirs: at most twice the channels, see `positions`).
    let used: usize = runs
        .iter()
        .map(|r| r.count * r.units.iter().map(Unit::used).sum::<usize>())
        .sum();
    let padded = floats(&runs);
    let used = groups * (steps + usize::from(has_bias)) * used;
    let mut tight = runs.clone();
    for run in &mut tight {
        compact_units(run);
    }
    let compact = compact.unwrap_or(!padding_ok(padded, used));
    if compact {
        runs = tight;
    }
    let (g_w, g_bias) = layout_runs(&mut runs, steps);
    let w_floats = groups * g_w / 4;
    // The bias and the row vectors start on a vector (after compact
    // weights too): the row vectors are FMA operands, and loads split
    // across cache lines cost (RGB 72x72 on 128x128, AVX-512, four runs:
    // 18.3-18.6 ms aligned, 19.3-20.9 not).
    let bias_off = has_bias.then_some(w_floats.next_multiple_of(lanes));
    let mut packed_len = bias_off.map_or(w_floats, |off| off + groups * g_bias / 4);
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
    let row_weights_off = (few_channels || row_multiplier > 1).then(|| {
        let off = packed_len.next_multiple_of(lanes);
        packed_len = off
            + if row_multiplier > 1 {
                // [tap][lane], then the bias [lane].
                (taps + usize::from(bias_off.is_some())) * lanes
            } else {
                (taps + usize::from(bias_off.is_some())) * ci * lanes
            };
        off
    });
    if compact {
        // Every unit's last vector load ends inside the buffer.
        let end = |base: usize, run: &Run, last_step: usize| {
            let top = run.units.iter().map(|u| u.w_off).max().unwrap_or(0);
            base + last_step * run.w_step + top + lanes
        };
        for run in &runs {
            let g = groups - 1;
            let rep = run.count - 1;
            let w = (g * g_w + run.w_base + rep * run.w_stride) / 4;
            packed_len = packed_len.max(end(w, run, steps - 1));
            if let Some(off) = bias_off {
                let b = off + (g * g_bias + run.bias_base + rep * run.bias_stride) / 4;
                packed_len = packed_len.max(end(b, run, 0));
            }
        }
    }
    Plan {
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
        dh,
        dw,
        pt,
        pl,
        ci_per_tap,
        rows_full,
        flat: is_flat(stage),
        segments,
        groups,
        g_in,
        g_out,
        g_w,
        g_bias,
        g_o,
        runs,
        bias_off,
        compact,
        row_weights_off,
        row_multiplier,
        packed_len,
        activation: stage.activation,
        residual: stage.residual,
        channels: (0, co),
    }
}

/// Every unit of `run` a whole vector of `lanes` floats per step.
fn aligned_units(run: &mut Run, lanes: usize) {
    for (u, unit) in run.units.iter_mut().enumerate() {
        unit.w_off = u * lanes;
    }
    run.w_step = run.units.len() * lanes;
}

/// Only the floats `run`'s units use per step ([`Plan::compact`]): units
/// of contiguous output channels (all but depthwise multipliers 2-3) at
/// their first channel's offset from the run's first channel, so
/// overlapping tails share floats; otherwise their used lanes one after
/// the other.
fn compact_units(run: &mut Run) {
    let used = Unit::used;
    let first = |u: &Unit| u.lanes[0].expect("a unit has a first lane");
    let contiguous = run.units.iter().all(|u| {
        let v = used(u);
        u.lanes
            .iter()
            .enumerate()
            .all(|(l, &o)| o == (l < v).then(|| first(u) + l))
    });
    if contiguous {
        let lo = run.units.iter().map(first).min().unwrap_or(0);
        let hi = run.units.iter().map(|u| first(u) + used(u)).max();
        for unit in &mut run.units {
            unit.w_off = first(unit) - lo;
        }
        run.w_step = hi.unwrap_or(lo) - lo;
    } else {
        let mut off = 0;
        for unit in &mut run.units {
            unit.w_off = off;
            off += used(unit);
        }
        run.w_step = off;
    }
}

/// Places the runs' weights (`[run][repetition][step]` per group, `steps`
/// steps each) and bias (`[run][repetition]`) one after the other from
/// their `w_step`; returns the bytes per group of each.
fn layout_runs(runs: &mut [Run], steps: usize) -> (usize, usize) {
    let (mut w, mut b) = (0, 0);
    for run in runs {
        run.w_base = w;
        run.bias_base = b;
        run.w_stride = steps * run.w_step * 4;
        run.bias_stride = run.w_step * 4;
        w += run.count * run.w_stride;
        b += run.count * run.bias_stride;
    }
    (w, b)
}

/// A conv or pointwise stage of one group: the stages whose output
/// channels threads may share ([`channel_shares`], [`plan_channels`]).
fn one_group_reduce(stage: &Stage) -> bool {
    matches!(
        stage.kind,
        StageKind::Conv { groups: 1, .. } | StageKind::Pointwise { groups: 1, .. }
    )
}

/// `stage` (conv or pointwise, one group) computing only its output
/// channels `c0..c1`: the stage [`plan_channels`] plans and
/// [`channel_shares`] checks.
fn channel_stage(stage: &Stage, c0: usize, c1: usize) -> Stage {
    let mut s = stage.clone();
    s.output.c = c1 - c0;
    s.kind = match s.kind {
        StageKind::Conv { groups, .. } => StageKind::Conv {
            cout: c1 - c0,
            groups,
        },
        StageKind::Pointwise { groups, .. } => StageKind::Pointwise {
            cout: c1 - c0,
            groups,
        },
        k => k,
    };
    s
}

/// The output channels of a conv/pointwise stage (one group) that each of
/// `threads` threads computes when they split them
/// ([`crate::layer_plan::Split::Channels`]): contiguous ranges of whole
/// vectors of `target`'s lanes, as even as they go (`V = ceil(Co /
/// lanes)` vectors, thread `t` from vector `V*t/T` to `V*(t+1)/T`, the
/// last ending at Co). Each share is planned as a stage of its own
/// channels ([`plan_channels`]), so no two threads write the same float
/// (a tail vector overlaps only its own share's). `None` where the stage
/// cannot split so: depthwise or grouped, fewer vectors than threads, or
/// a share that would be planned as another kind of stage (2 or 4
/// channels of a one-channel input: [`planned_stage`]).
pub fn channel_shares(
    stage: &Stage,
    target: &Target,
    threads: usize,
) -> Option<Vec<(usize, usize)>> {
    let t = stage_target(stage, target);
    if !one_group_reduce(stage) || threads < 2 || planned_stage(stage, &t).kind != stage.kind {
        return None;
    }
    let (co, lanes) = (stage.output.c, t.lanes);
    let v = co.div_ceil(lanes);
    if v < threads {
        return None;
    }
    let shares: Vec<(usize, usize)> = (0..threads)
        .map(|i| {
            (
                v * i / threads * lanes,
                (v * (i + 1) / threads * lanes).min(co),
            )
        })
        .collect();
    let kept = shares.iter().all(|&(a, b)| {
        let s = channel_stage(stage, a, b);
        planned_stage(&s, &t).kind == s.kind
    });
    kept.then_some(shares)
}

/// The plan of `stage` (conv or pointwise, one group; see
/// [`channel_shares`]) for its output channels `c0..c1` only: planned as
/// the stage with `c1 - c0` outputs (its blocking, runs and packed
/// weights are that stage's), then placed among all the channels: `co`
/// is the stage's (the output pixel stride), every run's output channels
/// and every unit's lanes start at `c0` (packing picks those channels'
/// weights and bias).
pub fn plan_channels(stage: &Stage, target: &Target, c0: usize, c1: usize) -> Plan {
    assert!(
        one_group_reduce(stage) && c0 < c1 && c1 <= stage.output.c,
        "stage '{}': channels {c0}..{c1} of a {:?}",
        stage.name,
        stage.kind
    );
    let mut p = plan_for(&channel_stage(stage, c0, c1), target);
    assert_eq!(
        p.strategy,
        Strategy::Reduce,
        "stage '{}': channels {c0}..{c1} planned as another kind of stage",
        stage.name
    );
    p.co = stage.output.c;
    for run in &mut p.runs {
        run.out_base += c0;
        for unit in &mut run.units {
            for o in unit.lanes.iter_mut().flatten() {
                *o += c0;
            }
        }
    }
    p.channels = (c0, c1);
    p
}

/// Vectors per block of a few-channel depthwise row (`c` channels, see
/// [`Plan::row_vectors`]): a multiple of the vectors after which the
/// channel pattern repeats (`c / gcd(c, lanes)`), so every repetition of
/// a block reads the same phases of the weights; 0 where that many
/// accumulators do not fit.
pub fn row_block_vectors(c: usize, t: &Target) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let period = c / gcd(c, t.lanes);
    let most = (t.vector_registers - 4).min(12);
    most / period * period
}

/// `count` consecutive register blocks of output columns starting at
/// `start`, each of `cols.len()` pixels with the valid kernel columns
/// `cols[px] = (kx0, nkx)` (the same for every repetition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColBlock {
    pub start: usize,
    pub count: usize,
    pub cols: Vec<(usize, usize)>,
}

impl Plan {
    /// Conv/pointwise loop order: channel blocks outside the pixels (each
    /// block's weights read from cache by every pixel, the input read once
    /// per channel block) rather than all channel blocks for each block of
    /// pixels (the input reused from L1, all the weights read again). Only
    /// when the weights exceed [`CHANNELS_OUTER_BYTES`]: the whole weight
    /// set then comes from L3 or memory per pixel block (3x3 512->512 on
    /// 14x14: +8-20%); below it both orders ran equally fast (pointwise
    /// 24<->144, 3x3 64->64 and 256->256). A thread's share of the
    /// channels ([`plan_channels`]) counts its own weights only.
    ///
    /// Grouped stages keep channel blocks inside: a group's weights are a
    /// G-th of the stage's.
    pub fn channels_outer(&self) -> bool {
        self.strategy == Strategy::Reduce
            && self.groups == 1
            && self.kh * self.kw * self.ci * (self.channels.1 - self.channels.0) * 4
                > CHANNELS_OUTER_BYTES
    }

    /// Depthwise: an output row cut into register blocks of at most
    /// `sched.px` pixels, each pixel with its own valid kernel
    /// columns, so border pixels share a block with interior ones instead
    /// of forming short, latency-bound blocks of their own. Consecutive
    /// blocks with equal columns become one repeated block.
    pub fn col_blocks(&self) -> Vec<ColBlock> {
        self.col_blocks_in(0, self.wo)
    }

    /// A one-channel depthwise stage (a grey image's filter) on a direct
    /// generator: the output columns `a..b` whose kernel columns are all
    /// valid, to be computed with vectors along the row (16 pixels a
    /// vector, each tap's weight broadcast) rather than one lane of a
    /// channel vector per pixel; the border columns keep the per-pixel
    /// code. `None` where the row has fewer such columns than lanes, or
    /// for strided columns.
    pub fn row_vectors(&self) -> Option<(usize, usize)> {
        let one = self.strategy == Strategy::DwChannels && self.ci == 1 && self.co == 1;
        // One channel: a kernel row's weights in registers beside at least
        // 2 accumulators; more: their own packed weights.
        let one = one
            && self.target.direct()
            && self.sw == 1
            && self.kw + 6 <= self.target.vector_registers;
        if !one && self.row_weights_off.is_none() {
            return None;
        }
        let m = self.row_multiplier;
        let full =
            |ox: usize| tap_range(ox, self.sw, self.dw, self.pl, self.kw, self.w) == (0, self.kw);
        let a = (0..self.wo).find(|&ox| full(ox))?;
        let b = (a..self.wo).find(|&ox| !full(ox)).unwrap_or(self.wo);
        ((b - a) * self.ci * m >= self.sched.lanes).then_some((a, b))
    }

    /// [`Plan::col_blocks`] of the output columns `a..b`.
    pub fn col_blocks_in(&self, a: usize, b: usize) -> Vec<ColBlock> {
        if b <= a {
            return Vec::new();
        }
        // Blocks of near-equal size: fewer accumulators than the schedule
        // allows in every block rather than a short last one.
        let n = (b - a).div_ceil(self.sched.px.max(1));
        let px = (b - a).div_ceil(n);
        let mut blocks: Vec<ColBlock> = Vec::new();
        let mut start = a;
        while start < b {
            let end = (start + px).min(b);
            let cols: Vec<(usize, usize)> = (start..end)
                .map(|ox| tap_range(ox, self.sw, self.dw, self.pl, self.kw, self.w))
                .collect();
            match blocks.last_mut() {
                Some(b) if b.cols == cols => b.count += 1,
                _ => blocks.push(ColBlock {
                    start,
                    count: 1,
                    cols,
                }),
            }
            start = end;
        }
        blocks
    }
}

/// The fewest instructions [`code_size`] counts for any plan: a stage
/// function's setup and loop control, whatever its shape.
pub const MIN_CODE_SIZE: usize = 100;

/// A rough count of the instructions code generation will emit for `plan`:
/// every column segment (conv, pointwise; for full and border rows) or
/// column block with its per-pixel taps of one kernel row unrolled
/// (depthwise) costs code.
pub fn code_size(plan: &Plan) -> usize {
    let acc = plan.sched.units * plan.sched.px;
    match plan.strategy {
        // A direct generator's blocks mix border and interior pixels: a
        // reduction loop per kernel column where their columns differ.
        Strategy::Reduce if plan.target.direct() && !plan.flat => {
            let blocks: usize = plan
                .col_blocks()
                .iter()
                .map(|b| {
                    let uniform = b.cols.iter().all(|&c| c == b.cols[0]);
                    let loops = if uniform { 1 } else { plan.kw };
                    loops * (4 * acc + 40) + 4 * acc + 40
                })
                .sum();
            blocks + 100
        }
        Strategy::Reduce => plan.segments.len() * 2 * (4 * acc + 64),
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

/// The array a [`PackCopy`] reads: the stage's weights (TensorFlow
/// layout, `[kh][kw][ci/groups][co]`, depthwise `[kh][kw][ci][m]`) or bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackSource {
    Weight,
    Bias,
}

/// One step of packing a stage's weights, as data: for every `i0`, `i1`,
/// `i2` below the counts of `loops`, the `len` floats of the array at
/// `src + i0*s0 + i1*s1 + i2*s2` go to the packed floats at
/// `dst + i0*d0 + i1*d1 + i2*d2` (`loops[k] = (count, dk, sk)`, all in
/// floats). The
/// copies of a plan ([`Plan::pack_copies`]) touch every packed float that
/// holds a weight or bias exactly once or with the same value; the others
/// stay zero. The AOT builder runs the same list in the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PackCopy {
    pub source: PackSource,
    pub dst: usize,
    pub src: usize,
    pub len: usize,
    pub loops: [(usize, usize, usize); 3],
}

impl Plan {
    /// How the weights are packed, for the plan dump: floats against the
    /// stage's weights and bias, aligned or compact and why.
    pub fn packing(&self) -> String {
        let arrays = self.kh * self.kw * self.ci_per_tap * self.groups * (self.co / self.groups)
            + self.bias_off.map_or(0, |_| self.co);
        let rows = match self.row_weights_off {
            Some(_) => ", plus each tap's row vectors",
            None => "",
        };
        let layout = if self.compact {
            format!(
                "compact: per step only the floats the units use (whole vectors would hold more than {} KiB and a tenth in zero lanes)",
                PACK_SLACK_BYTES >> 10
            )
        } else {
            "a whole vector per unit and step".to_string()
        };
        format!(
            "{} floats for {arrays} weights and bias: {layout}{rows}",
            self.packed_len
        )
    }

    /// The copies that pack this stage's weights and bias ([`PackCopy`]):
    /// per run, one per stretch of consecutive step floats holding
    /// consecutive output channels, looping over groups, repetitions and
    /// (tap, channel) steps; for row-vector weights, one per stretch of
    /// lanes holding consecutive channels, looping over taps. Their number
    /// depends on the runs and lanes only, never on the kernel's size, the
    /// input channels or the groups.
    pub fn pack_copies(&self) -> Vec<PackCopy> {
        let lanes = self.sched.lanes;
        let taps = self.kh * self.kw;
        let steps = taps * self.ci_per_tap;
        let mut copies = Vec::new();
        for run in &self.runs {
            // (float of the step, output channel) of every used lane, in
            // stretches of consecutive floats and channels.
            let mut slots: Vec<(usize, usize)> = run
                .units
                .iter()
                .flat_map(|u| {
                    let lanes = u.lanes.iter().enumerate();
                    lanes.filter_map(move |(l, o)| o.map(|o| (u.w_off + l, o)))
                })
                .collect();
            slots.sort_unstable();
            slots.dedup();
            let mut stretches: Vec<(usize, usize, usize)> = Vec::new();
            for (at, o) in slots {
                match stretches.last_mut() {
                    Some((a0, o0, len)) if *a0 + *len == at && *o0 + *len == o => *len += 1,
                    Some((a0, _, len)) if *a0 + *len > at => {
                        panic!("stage plan: two channels packed at float {at} of a step")
                    }
                    _ => stretches.push((at, o, 1)),
                }
            }
            for &(at, o, len) in &stretches {
                copies.push(PackCopy {
                    source: PackSource::Weight,
                    dst: run.w_base / 4 + at,
                    src: o,
                    len,
                    loops: [
                        (self.groups, self.g_w / 4, self.g_o),
                        (run.count, run.w_stride / 4, run.o_stride),
                        (steps, run.w_step, self.co),
                    ],
                });
            }
            if let Some(off) = self.bias_off {
                for &(at, o, len) in &stretches {
                    copies.push(PackCopy {
                        source: PackSource::Bias,
                        dst: off + run.bias_base / 4 + at,
                        src: o,
                        len,
                        loops: [
                            (self.groups, self.g_bias / 4, self.g_o),
                            (run.count, run.bias_stride / 4, run.o_stride),
                            (1, 0, 0),
                        ],
                    });
                }
            }
        }
        let Some(off) = self.row_weights_off else {
            return copies;
        };
        // Row vectors: per tap, `phases` vectors; lane `l` of phase `r`
        // holds channel `(r + l) % c` (a multiplier's: output `l % m`).
        let (c, phases) = match self.row_multiplier {
            1 => (self.ci, self.ci),
            m => (m, 1),
        };
        let once = (1, 0, 0);
        for r in 0..phases {
            let mut l = 0;
            while l < lanes {
                let ch = (r + l) % c;
                let len = (c - ch).min(lanes - l);
                copies.push(PackCopy {
                    source: PackSource::Weight,
                    dst: off + r * lanes + l,
                    src: ch,
                    len,
                    loops: [once, once, (taps, phases * lanes, c)],
                });
                if self.bias_off.is_some() {
                    copies.push(PackCopy {
                        source: PackSource::Bias,
                        dst: off + (taps * phases + r) * lanes + l,
                        src: ch,
                        len,
                        loops: [once, once, once],
                    });
                }
                l += len;
            }
        }
        copies
    }
}

/// Packs one stage's TensorFlow-layout weights (and bias) into the layout
/// the generated code reads: per group, per run repetition, a block
/// `[ky][kx][ci_per_tap][step]` (a step: every unit's vector, or in a
/// [`Plan::compact`] plan only the floats they use), zeros in unused
/// floats; then the bias as `[group][run repetition][step]`; then any
/// row-vector weights ([`Plan::row_weights_off`]).
pub fn pack(plan: &Plan, weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0f32; plan.packed_len];
    pack_into(plan, weight, bias, &mut out);
    out
}

/// [`pack`] into `out` (`plan.packed_len` zeroed f32s), e.g. aligned
/// storage: runs [`Plan::pack_copies`].
pub fn pack_into(plan: &Plan, weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let copies = plan.pack_copies();
    // (Tap, channel) steps outermost, whatever the copy: each step's
    // weights are one contiguous row over the output channels, read once
    // while every copy takes its channels (the copies commute).
    let steps = copies.iter().map(|c| c.loops[2].0).max().unwrap_or(0);
    for i2 in 0..steps {
        for c in copies.iter().filter(|c| i2 < c.loops[2].0) {
            let array = match (c.source, bias) {
                (PackSource::Weight, _) => weight,
                (PackSource::Bias, Some(b)) => b,
                // No bias given: its floats stay zero.
                (PackSource::Bias, None) => continue,
            };
            let [(n0, d0, s0), (n1, d1, s1), (_, d2, s2)] = c.loops;
            for i0 in 0..n0 {
                for i1 in 0..n1 {
                    let d = c.dst + i0 * d0 + i1 * d1 + i2 * d2;
                    let s = c.src + i0 * s0 + i1 * s1 + i2 * s2;
                    out[d..d + c.len].copy_from_slice(&array[s..s + c.len]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_overlap_the_tail() {
        assert_eq!(positions(3, 4), [(0, 3)]);
        assert_eq!(positions(4, 4), [(0, 4)]);
        assert_eq!(positions(9, 4), [(0, 4), (4, 4), (5, 4)]);
        assert_eq!(positions(24, 16), [(0, 16), (8, 16)]);
    }

    /// Every packed weight and bias of a plan (one group) by (tap x input
    /// channel, output channel), read back through its runs and units.
    fn unpack(p: &Plan, packed: &[f32]) -> std::collections::BTreeMap<(usize, usize), f32> {
        let mut m = std::collections::BTreeMap::new();
        for run in &p.runs {
            for rep in 0..run.count {
                let base = (run.w_base + rep * run.w_stride) / 4;
                let bias = (run.bias_base + rep * run.bias_stride) / 4;
                for unit in &run.units {
                    for (l, o) in unit.lanes.iter().enumerate() {
                        let Some(o) = o else { continue };
                        let o = o + rep * run.o_stride;
                        for tc in 0..p.kh * p.kw * p.ci_per_tap {
                            let v = packed[base + tc * run.w_step + unit.w_off + l];
                            assert_eq!(m.insert((tc, o), v).unwrap_or(v), v);
                        }
                        if let Some(off) = p.bias_off {
                            let tc = usize::MAX;
                            let v = packed[off + bias + unit.w_off + l];
                            assert_eq!(m.insert((tc, o), v).unwrap_or(v), v);
                        }
                    }
                }
            }
        }
        m
    }

    /// The packing as written before [`PackCopy`] (per float, the (tap,
    /// channel) rows outermost), with the units' offsets: the oracle of
    /// [`pack_into`].
    fn pack_reference(plan: &Plan, weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0f32; plan.packed_len];
        let lanes = plan.sched.lanes;
        if let (Some(off), m @ 2..) = (plan.row_weights_off, plan.row_multiplier) {
            let taps = plan.kh * plan.kw;
            for t in 0..taps {
                for l in 0..lanes {
                    out[off + t * lanes + l] = weight[t * m + l % m];
                }
            }
            if let Some(b) = bias {
                for l in 0..lanes {
                    out[off + taps * lanes + l] = b[l % m];
                }
            }
        } else if let Some(off) = plan.row_weights_off {
            let (c, taps) = (plan.ci, plan.kh * plan.kw);
            for t in 0..taps {
                for r in 0..c {
                    for l in 0..lanes {
                        out[off + (t * c + r) * lanes + l] = weight[t * c + (r + l) % c];
                    }
                }
            }
            if let Some(b) = bias {
                for r in 0..c {
                    for l in 0..lanes {
                        out[off + (taps * c + r) * lanes + l] = b[(r + l) % c];
                    }
                }
            }
        }
        // Every block: its weights, step, and (float in a step, channel).
        type Block = (usize, usize, Vec<(usize, usize)>);
        let mut blocks: Vec<Block> = Vec::new();
        for g in 0..plan.groups {
            for run in &plan.runs {
                for rep in 0..run.count {
                    let base = (g * plan.g_w + run.w_base + rep * run.w_stride) / 4;
                    let bbase = (g * plan.g_bias + run.bias_base + rep * run.bias_stride) / 4;
                    let slots: Vec<(usize, usize)> = run
                        .units
                        .iter()
                        .flat_map(|unit| {
                            unit.lanes.iter().enumerate().filter_map(move |(l, o)| {
                                o.map(|o| (unit.w_off + l, o + g * plan.g_o + rep * run.o_stride))
                            })
                        })
                        .collect();
                    if let (Some(off), Some(b)) = (plan.bias_off, bias) {
                        for &(at, o) in &slots {
                            out[off + bbase + at] = b[o];
                        }
                    }
                    blocks.push((base, run.w_step, slots));
                }
            }
        }
        for tc in 0..plan.kh * plan.kw * plan.ci_per_tap {
            for (base, step, slots) in &blocks {
                for &(at, o) in slots {
                    out[base + tc * step + at] = weight[tc * plan.co + o];
                }
            }
        }
        out
    }

    /// `plan`'s packing by its copies against the oracle, bit for bit,
    /// and every unit's vector loads inside `packed_len`.
    fn check_packing(stage: &Stage, p: &Plan, seed: u64) {
        let mut rng = convjit_ir::Rng::new(seed);
        let w = rng.vec(stage.weight_len(), 1.0);
        let b = stage
            .bias_key
            .as_ref()
            .map(|_| rng.vec(stage.output.c, 1.0));
        let got = pack(p, &w, b.as_deref());
        let want = pack_reference(p, &w, b.as_deref());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{stage:?} on {:?}", p.target);
        // Vectors read as whole vectors start on one.
        let lanes = p.sched.lanes;
        assert!(p.bias_off.is_none_or(|o| o % lanes == 0));
        assert!(p.row_weights_off.is_none_or(|o| o % lanes == 0));
        let steps = p.kh * p.kw * p.ci_per_tap;
        for g in 0..p.groups {
            for run in &p.runs {
                let rep = run.count - 1;
                let top = run.units.iter().map(|u| u.w_off).max().unwrap();
                let w = (g * p.g_w + run.w_base + rep * run.w_stride) / 4;
                let end = w + (steps - 1) * run.w_step + top + p.sched.lanes;
                assert!(end <= p.packed_len, "{stage:?}: a load ends at {end}");
                if let Some(off) = p.bias_off {
                    let b = off + (g * p.g_bias + run.bias_base + rep * run.bias_stride) / 4;
                    assert!(b + top + p.sched.lanes <= p.packed_len);
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Random stages on every target, packed aligned and compact:
        /// the copies give the oracle's floats, and both layouts hold the
        /// same weight for every (tap, channel, output) the units read.
        #[test]
        fn copies_pack_as_the_oracle(
            case in convjit_ir::random_layer::layer_case(convjit_ir::random_layer::Limits::PROPTEST)
        ) {
            let Ok(mut layers) = convjit_ir::compile_source(&case.src) else {
                return Ok(());
            };
            let layer = layers.remove(0);
            for (i, stage) in layer.stages.iter().enumerate() {
                for target in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                    let seed = case.seed ^ i as u64;
                    let natural = plan_for(stage, &target);
                    check_packing(stage, &natural, seed);
                    let mut held = Vec::new();
                    for compact in [false, true] {
                        let p = plan_with(stage, &target, Some(compact));
                        check_packing(stage, &p, seed);
                        let mut rng = convjit_ir::Rng::new(seed);
                        let w = rng.vec(stage.weight_len(), 1.0);
                        let b = stage.bias_key.as_ref().map(|_| rng.vec(stage.output.c, 1.0));
                        held.push(unpack(&p, &pack(&p, &w, b.as_deref())));
                    }
                    proptest::prop_assert_eq!(&held[0], &held[1]);
                }
            }
        }
    }

    /// One stage of `src`, a layer of one stage.
    fn one_stage(src: &str) -> Stage {
        convjit_ir::compile_source(src).unwrap().remove(0).stages[0].clone()
    }

    /// Every kind of stage with a 2048x2048 kernel (or as many weights),
    /// one channel or one output per group: its packed floats stay within
    /// a tenth of its weights and bias, plus [`PACK_SLACK_BYTES`],
    /// [`PACK_ROW_BYTES`] and a
    /// vector, on every target; its copies are a handful.
    #[test]
    fn one_channel_kernels_pack_without_padding() {
        let k = 2048;
        let stages = [
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, bias }}"),
            format!(
                "layer a {{ input {k}x{}x1\n d: depthwise {k}x{k}, pad same }}",
                k + 40
            ),
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, stride 2, bias }}"),
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, multiplier 2 }}"),
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, multiplier 4, bias }}"),
            format!(
                "layer a {{ input 40x{}x3\n d: depthwise 32x1024, pad same, bias }}",
                k
            ),
            format!("layer a {{ input {k}x{k}x1\n c: conv {k}x{k} -> 1, bias }}"),
            format!(
                "layer a {{ input {k}x{}x1\n c: conv {k}x{k} -> 2, pad same }}",
                k + 40
            ),
            "layer a { input 512x512x1\n c: conv 512x512 -> 4 }".to_string(),
            "layer a { input 64x64x1\n c: conv 512x512 -> 3, pad same, bias }".to_string(),
            "layer a { input 4x4x65536\n c: conv 8x8 -> 1, pad same, bias }".to_string(),
            "layer a { input 4x4x65536\n c: conv 8x8 -> 65536, groups 65536, pad same }"
                .to_string(),
            "layer a { input 4x4x65536\n p: pointwise 65536, groups 65536, bias }".to_string(),
            "layer a { input 4x4x65536\n p: pointwise 1, bias }".to_string(),
            "layer a { input 4x4x8192\n c: conv 16x16 -> 24576, groups 8192, pad same }"
                .to_string(),
        ];
        // Overlapping tails copy fewer channels than they follow: less
        // than twice the weights.
        let tails = [
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, multiplier 5 }}"),
            "layer a { input 4x4x1024\n c: conv 32x32 -> 17, pad same, bias }".to_string(),
            "layer a { input 4x4x17\n d: depthwise 1024x1024, pad same, bias }".to_string(),
        ];
        let tail = stages.len();
        for (i, src) in stages.iter().chain(&tails).enumerate() {
            let stage = one_stage(src);
            let arrays = stage.weight_len() + stage.bias_key.as_ref().map_or(0, |_| stage.output.c);
            for target in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                let p = plan_for(&stage, &target);
                let most = if i < tail {
                    arrays + arrays / 10
                } else {
                    2 * arrays
                };
                let bound = most + (PACK_SLACK_BYTES + PACK_ROW_BYTES) / 4 + MAX_LANES;
                assert!(
                    p.packed_len <= bound,
                    "{src} on {:?}: {} packed floats for {arrays} weights",
                    target.backend,
                    p.packed_len
                );
                assert!(p.pack_copies().len() <= 64, "{src}: {:?}", p.pack_copies());
            }
        }
    }

    /// A small one-channel stage keeps whole vectors per unit (and its row
    /// vectors); above [`PACK_SLACK_BYTES`] of zero lanes it is compact,
    /// and row vectors of more than [`PACK_ROW_BYTES`] are not made.
    #[test]
    fn only_costly_padding_is_compacted() {
        let t = Target::AVX512;
        let small = plan_for(
            &one_stage("layer a { input 9x40x3\n d: depthwise 3x3, pad same }"),
            &t,
        );
        assert!(!small.compact && small.row_weights_off.is_some());
        let pw = one_stage("layer a { input 7x7x144\n p: pointwise 24 }");
        assert!(!plan_for(&pw, &t).compact);
        // 4900 taps x 15 zero lanes: 294 KB on 16 lanes, 137 KB on 8.
        let dw = one_stage("layer a { input 80x80x1\n d: depthwise 70x70 }");
        assert!(plan_for(&dw, &t).compact);
        assert!(!plan_for(&dw, &Target::AVX2).compact);
        let rgb = one_stage("layer a { input 90x90x3\n d: depthwise 40x40, pad same }");
        assert!(plan_for(&rgb, &t).row_weights_off.is_some());
        let rgb = one_stage("layer a { input 190x190x3\n d: depthwise 160x160, pad same }");
        let p = plan_for(&rgb, &t);
        assert_eq!((p.compact, p.row_weights_off), (true, None));
    }

    #[test]
    fn a_share_of_the_channels_packs_their_weights() {
        for (src, threads) in [
            ("layer p { input 7x7x20\n p: pointwise 37, bias }", 2),
            ("layer p { input 7x7x20\n p: pointwise 37, bias }", 3),
            (
                "layer c { input 9x8x5\n c: conv 3x3 -> 100, pad same, bias }",
                3,
            ),
            (
                "layer c { input 9x8x3\n c: conv 3x3 -> 64, stride 2, pad same }",
                2,
            ),
        ] {
            let stage = convjit_ir::compile_source(src).unwrap().remove(0).stages[0].clone();
            let taps = stage.kernel[0] * stage.kernel[1] * stage.input.c;
            let (co, n) = (stage.output.c, taps * stage.output.c);
            let weight: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
            let bias: Vec<f32> = (0..co).map(|i| -(i as f32) - 1.0).collect();
            let bias = stage.bias_key.as_ref().map(|_| &bias[..]);
            for target in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                let whole = plan_for(&stage, &target);
                let all = unpack(&whole, &pack(&whole, &weight, bias));
                let shares = channel_shares(&stage, &target, threads).unwrap();
                let mut covered = 0;
                for &(c0, c1) in &shares {
                    assert!(
                        c0.is_multiple_of(target.lanes) && c0 == covered,
                        "{shares:?}"
                    );
                    covered = c1;
                    let p = plan_channels(&stage, &target, c0, c1);
                    assert_eq!((p.co, p.channels), (co, (c0, c1)));
                    // Its stores stay among its channels.
                    for run in &p.runs {
                        for rep in 0..run.count {
                            let base = run.out_base + rep * run.out_stride;
                            for unit in &run.units {
                                let stored: Vec<usize> = match &unit.out {
                                    OutDst::Vector(c) => (0..target.lanes).map(|l| c + l).collect(),
                                    OutDst::Lanes(l) => l.iter().map(|&(_, c)| c).collect(),
                                    other => panic!("{other:?}"),
                                };
                                assert!(
                                    stored.iter().all(|c| (c0..c1).contains(&(base + c))),
                                    "{src}, {target:?}, channels {c0}..{c1}: {stored:?} from {base}"
                                );
                            }
                        }
                    }
                    let got = unpack(&p, &pack(&p, &weight, bias));
                    let want: std::collections::BTreeMap<_, _> = all
                        .iter()
                        .filter(|((_, o), _)| (c0..c1).contains(o))
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    assert_eq!(got, want, "{src}, {target:?}, channels {c0}..{c1}");
                }
                assert_eq!(covered, co);
            }
        }
    }

    #[test]
    fn channels_split_only_where_every_share_stays_a_conv() {
        let stage =
            |src: &str| convjit_ir::compile_source(src).unwrap().remove(0).stages[0].clone();
        let t = Target::AVX512;
        let dw = stage("layer d { input 7x7x64\n d: depthwise 3x3 }");
        assert_eq!(channel_shares(&dw, &t, 2), None);
        let grouped = stage("layer g { input 7x7x64\n p: pointwise 64, groups 2 }");
        assert_eq!(channel_shares(&grouped, &t, 2), None);
        let narrow = stage("layer n { input 7x7x64\n p: pointwise 16 }");
        assert_eq!(channel_shares(&narrow, &t, 2), None);
        // 16 + 4 channels of a grey image: the share of 4 would be a
        // depthwise stage with multiplier 4.
        let grey = stage("layer f { input 9x40x1\n f: conv 3x3 -> 20, pad same }");
        assert_eq!(channel_shares(&grey, &t, 2), None);
        let pw = stage("layer p { input 7x7x1024\n p: pointwise 1000 }");
        assert_eq!(
            channel_shares(&pw, &t, 3),
            Some(vec![(0, 336), (336, 672), (672, 1000)])
        );
    }

    #[test]
    fn tap_ranges_omit_padding() {
        // 3 taps, pad 1, input 5: first output sees taps 1..3, last taps 0..2.
        assert_eq!(tap_range(0, 1, 1, 1, 3, 5), (1, 2));
        assert_eq!(tap_range(2, 1, 1, 1, 3, 5), (0, 3));
        assert_eq!(tap_range(4, 1, 1, 1, 3, 5), (0, 2));
        // All padding.
        assert_eq!(tap_range(0, 1, 1, 9, 3, 5), (0, 0));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// `MIN_CODE_SIZE` bounds the stages a layer may have
        /// (`convjit_jit::MAX_STAGES`): no stage function, whole or a
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
