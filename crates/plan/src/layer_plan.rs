//! The layer plan: which stages run fused, in bands of how many rows, on how
//! many threads, and why. Halide's "schedule", kept apart from the layer (the
//! "algorithm"): a plain value that can be printed, compared and overridden.
//! Per-stage blocking is [`crate::plan::schedule`]; this decides the rest,
//! from the host's real parameters ([`Host`]).

use crate::backend::Backend;
use crate::plan::Target;
use crate::rows;
use convjit_ir::{Layer, Separation, Stage};

/// What the cost model knows of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Host {
    /// f32 lanes of the vectors the code generator emits.
    pub lanes: usize,
    /// Vector registers the register allocator may use.
    pub vector_registers: usize,
    /// Per-core data cache sizes, in bytes.
    pub l1d_bytes: usize,
    pub l2_bytes: usize,
    /// Hardware threads available.
    pub cores: usize,
}

impl Host {
    /// This machine: cache sizes from Linux's sysfs (32 KiB / 1 MiB if unknown).
    pub fn detect() -> Host {
        let cache = |level: &str| -> Option<usize> {
            (0..8).find_map(|i| {
                let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
                let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
                let kind = read("type")?;
                if read("level")?.trim() != level || kind.trim() == "Instruction" {
                    return None;
                }
                parse_size(read("size")?.trim())
            })
        };
        Host {
            lanes: crate::plan::LANES,
            vector_registers: if cfg!(target_arch = "aarch64") {
                32
            } else {
                16
            },
            l1d_bytes: cache("1").unwrap_or(32 << 10),
            l2_bytes: cache("2").unwrap_or(1 << 20),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// This machine's L2 per core ([`Host::detect`]'s), read once: what the
/// stage schedules' working sets are measured against.
pub fn host_l2_bytes() -> usize {
    static L2: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L2.get_or_init(|| Host::detect().l2_bytes)
}

/// `"32K"`, `"2048K"`, `"1M"` in bytes.
fn parse_size(s: &str) -> Option<usize> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = num.parse().ok()?;
    Some(match unit {
        "" => n,
        "K" => n << 10,
        "M" => n << 20,
        _ => return None,
    })
}

/// Whether consecutive stages may run fused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fusion {
    /// Where the cost model expects a gain.
    Auto,
    /// Every stage of the layer in one group (for experiments and tests).
    Always,
    Never,
}

/// Estimated cycles of work each thread of a group needs at the least
/// (a few microseconds): the shared workers spin between runs (waking in
/// well under a microsecond) and a barrier costs about one.
pub const MIN_CYCLES_PER_THREAD: u64 = 10_000;

/// By how much an estimate must beat the default to be taken (fusion
/// against stages apart, channel shares against row shares): more than
/// the model's noise, so a tie keeps the simpler schedule.
const MARGIN: f64 = 0.97;

/// The most stages the cost model prices as one group: `Fusion::Auto`
/// starts a new group there, and a join forced beyond it
/// (`Fusion::Always`) is not priced. Pricing a group walks a band's rows
/// back through each of its stages, so without a bound planning grew as
/// the square of the stages (a layer of 20,000 took a minute). Real
/// layers' groups are far shorter: each band calls every stage of its
/// group, and a longer group's bands hold more rows so are fewer rows
/// tall, and the model stops within a few stages (3 in MobileNet, 36 at
/// most in our tests of stages that compute: `3x1` depthwise on
/// 65536x1x8). Only stages nearly free against the tensors they stream
/// fuse on (depthwise `1x1` on 4x65536x16, 16 MiB each): they run as
/// groups of 64, which still keep 63 of every 64 intermediate tensors
/// out of memory.
pub const MAX_PRICED_STAGES: usize = 64;

/// Overrides for experiments; the defaults let the cost model decide.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    pub fuse: Fusion,
    /// Threads sharing each image's rows (1: the calling thread only).
    pub threads: usize,
    /// Force the band height (output rows of a group's last stage).
    pub band_rows: Option<usize>,
    /// Fewer threads than requested when a group has fewer estimated
    /// cycles than this per thread ([`MIN_CYCLES_PER_THREAD`]; 0 always
    /// uses them all).
    pub min_thread_cycles: u64,
    /// The code generator (`Auto`: the widest the host runs).
    pub backend: Backend,
    /// With weights known at compile time, run a stage whose kernels all
    /// have rank 1 (or, asked for, their best rank-R approximations) as a
    /// `Khx1` then a `1xKw` stage (`convjit_ir::separate`; a rewrite of the
    /// layer before planning).
    pub separate: Separation,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fuse: Fusion::Auto,
            threads: 1,
            band_rows: None,
            min_thread_cycles: MIN_CYCLES_PER_THREAD,
            backend: Backend::Auto,
            separate: Separation::Exact,
        }
    }
}

/// How the threads of a group divide its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Contiguous shares of the output rows (of the pixels, for a flat
    /// stage alone: `program::flat_shares`): each thread reads only the
    /// input rows its share needs.
    Rows,
    /// Contiguous shares of the output channels, in whole vectors
    /// (`plan::channel_shares`): each thread computes every pixel of its
    /// channels, with only their weights (a function per share,
    /// `plan::plan_channels`). Only for a conv or pointwise stage (one
    /// group) alone on whole tensors, where the rows divide worse: 49
    /// pixels of MobileNet's 7x7x1024 in blocks of 7 are 4 blocks and 4
    /// on 2 threads, its 64 vectors 32 and 32.
    Channels,
}

/// Consecutive stages `first..=last` run band by band: each band computes
/// `band_rows` output rows of `last`, keeping the intermediate rows it needs
/// in small buffers instead of whole tensors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    pub first: usize,
    pub last: usize,
    /// Output rows of stage `last` per band; its whole height means one band.
    pub band_rows: usize,
    /// Threads sharing the group's work.
    pub threads: usize,
    /// How they share it.
    pub split: Split,
    /// Why the planner chose this.
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayerPlan {
    pub host: Host,
    pub options: Options,
    pub groups: Vec<Group>,
}

/// Bytes of one output row of a stage.
fn row_bytes(s: &Stage) -> usize {
    s.output.w * s.output.c * 4
}

/// Decides fusion groups and band heights for `layer` on `host`, with
/// the vectors of the code generator `options` name (`Auto` made
/// concrete; one the host cannot run falls back to Cranelift: compiling
/// refuses it with the reason).
pub fn plan_layer(layer: &Layer, options: &Options, host: &Host) -> LayerPlan {
    let backend = options.backend.resolve().unwrap_or(Backend::Cranelift);
    let target = Target::of(backend);
    let host = &Host {
        lanes: target.lanes,
        vector_registers: target.vector_registers,
        ..*host
    };
    let options = &Options {
        backend,
        ..options.clone()
    };
    let mut groups: Vec<Group> = Vec::new();
    // The decision on joining stage `i` to the group before it, by `i`.
    let mut reasons: Vec<String> = vec![String::new(); layer.stages.len()];
    // Estimated cycles of the last group so far, the `apart` side of the
    // next join.
    let mut current = 0.0;
    for (i, s) in layer.stages.iter().enumerate() {
        let fuse = match groups.last() {
            Some(g) if options.fuse != Fusion::Never => {
                let (fuse, why, cycles) =
                    join(layer, g.first, i, current, options.fuse, host, &target);
                reasons[i] = why;
                current = cycles;
                fuse
            }
            Some(_) => false,
            None => {
                if options.fuse != Fusion::Never {
                    current = group_cycles(layer, i, i, host, &target);
                }
                false
            }
        };
        match groups.last_mut() {
            Some(g) if fuse => g.last = i,
            _ => groups.push(Group {
                first: i,
                last: i,
                band_rows: s.output.h,
                threads: 1,
                split: Split::Rows,
                why: String::new(),
            }),
        }
    }
    let threads = options.threads.max(1);
    let groups = groups
        .into_iter()
        .flat_map(|g| {
            // The decisions that joined the group's stages, and the one
            // that started it.
            let why = reasons[g.first..=g.last]
                .iter()
                .filter(|r| !r.is_empty())
                .cloned()
                .collect();
            finish(layer, g, options, host, why, threads)
        })
        .collect();
    LayerPlan {
        host: *host,
        options: options.clone(),
        groups,
    }
}

/// Whether stage `i` joins the group `first..i` before it, of `group`
/// estimated cycles, and why; and the estimated cycles of the group it
/// then ends. Each join prices only the group with its new stage (the
/// group so far was priced by the join before: the same number).
fn join(
    layer: &Layer,
    first: usize,
    i: usize,
    group: f64,
    fuse: Fusion,
    host: &Host,
    target: &Target,
) -> (bool, String, f64) {
    let (prev, s) = (&layer.stages[i - 1], &layer.stages[i]);
    let why = format!(
        "{} -> {}: the intermediate {} is {} KiB per image",
        prev.name,
        s.name,
        prev.output,
        (prev.output.len() * 4) >> 10
    );
    let alone = || group_cycles(layer, i, i, host, target);
    if i - first >= MAX_PRICED_STAGES {
        return match fuse {
            // Not priced, nor needed: a forced group only grows.
            Fusion::Always => (
                true,
                format!(
                    "{why}: fused (forced; not priced: the cost model prices groups \
                     of at most {MAX_PRICED_STAGES} stages)"
                ),
                f64::NAN,
            ),
            _ => (
                false,
                format!("{why}: not fused: a group holds at most {MAX_PRICED_STAGES} stages"),
                alone(),
            ),
        };
    }
    let alone = alone();
    let cost = FusionCost {
        apart: group + alone,
        fused: group_cycles(layer, first, i, host, target),
    };
    match fuse {
        Fusion::Always => (true, format!("{why}: fused (forced); {cost}"), cost.fused),
        _ if cost.pays() => (true, format!("{why}; {cost}: fused"), cost.fused),
        _ => (false, format!("{why}; {cost}: not fused"), alone),
    }
}

/// Chooses a group's band height and threads, with the reasons; a fused
/// group whose bands would read nothing but padding runs unfused instead.
fn finish(
    layer: &Layer,
    mut g: Group,
    options: &Options,
    host: &Host,
    mut why: Vec<String>,
    threads: usize,
) -> Vec<Group> {
    let out_h = layer.stages[g.last].output.h;
    let fused = g.last > g.first;
    g.band_rows = match options.band_rows {
        Some(b) => {
            why.push(format!("band of {b} rows: forced"));
            b.clamp(1, out_h)
        }
        None if fused => {
            let b = band_rows(layer, g.first, g.last, host);
            why.push(format!(
                "band of {b} rows: its intermediate rows take {} KiB, within {}",
                scratch_rows(layer, g.first, g.last, b) >> 10,
                if scratch_rows_from(layer, g.first, g.last, out_h / 2, b) <= host.l1d_bytes {
                    "L1d"
                } else {
                    "L2/4"
                }
            ));
            b
        }
        None => out_h,
    };
    // Each thread must get enough work to be worth its barrier: counted in
    // the cost model's cycles, memory stalls included (a depthwise stage
    // of few MACs may stream megabytes).
    let target = Target::of(options.backend);
    let cycles = group_cycles(layer, g.first, g.last, host, &target);
    let worth = (cycles as u64)
        .checked_div(options.min_thread_cycles)
        .map_or(usize::MAX, |n| n.max(1) as usize);
    // Rows, or a lone conv/pointwise stage's output channels: as many
    // threads as either has shares.
    let stage = &layer.stages[g.last];
    let alone = !fused && g.band_rows >= out_h;
    let vectors = match alone && crate::plan::channel_shares(stage, &target, 2).is_some() {
        true => stage.output.c.div_ceil(target.lanes),
        false => 0,
    };
    let most = threads.min(out_h.max(vectors));
    let n = most.min(worth);
    g.threads = n.min(out_h);
    g.split = Split::Rows;
    let channels = alone
        .then(|| crate::plan::channel_shares(stage, &target, n))
        .flatten();
    match channels {
        Some(shares) => {
            let rows = row_balance(stage, g.threads, alone, &target);
            let vecs: Vec<usize> = shares
                .iter()
                .map(|&(a, b)| (b - a).div_ceil(target.lanes))
                .collect();
            let busiest = vecs.iter().max().copied().unwrap_or(0);
            // The busiest thread's part of the work, rows against channels:
            // channels must win by more than the model's noise (every
            // thread then reads the whole input; rows read only theirs).
            let split_channels =
                ((busiest * rows.total) as f64) < MARGIN * (rows.busiest * vectors) as f64;
            let vecs = format!("{} of {vectors} vectors", counts(&vecs));
            if split_channels {
                g.threads = n;
                g.split = Split::Channels;
                why.push(format!(
                    "{n} threads share the output channels: {vecs} ({})",
                    rows.text
                ));
            } else if g.threads > 1 {
                why.push(format!(
                    "{} threads share the {} (output channels: {vecs})",
                    g.threads, rows.text
                ));
            }
        }
        None if g.threads > 1 => why.push(format!("{} threads share the rows", g.threads)),
        None => {}
    }
    if n < most {
        why.push(format!(
            "{n} thread{} rather than {threads}: {:.0} estimated cycles per image is too little work to share",
            if n == 1 { "" } else { "s" },
            cycles
        ));
    }
    if !bands_ok(layer, &g) {
        if fused {
            return (g.first..=g.last)
                .flat_map(|i| {
                    let single = Group {
                        first: i,
                        last: i,
                        band_rows: layer.stages[i].output.h,
                        threads,
                        split: Split::Rows,
                        why: "a band would read only padding: unfused".into(),
                    };
                    finish(
                        layer,
                        single,
                        &Options {
                            band_rows: None,
                            ..options.clone()
                        },
                        host,
                        Vec::new(),
                        threads,
                    )
                })
                .collect();
        }
        why.push("a band would read only padding: whole stage, one thread".into());
        g.band_rows = out_h;
        g.threads = 1;
        g.split = Split::Rows;
    }
    if !g.why.is_empty() {
        why.insert(0, std::mem::take(&mut g.why));
    }
    g.why = why.join("; ");
    vec![g]
}

/// How evenly `threads` threads share a stage's rows: the busiest
/// thread's rows of all of them, or for a flat stage alone (whose threads
/// share pixels) its register blocks of the schedule's pixels against
/// those of the whole image; and the shares as text.
struct RowBalance {
    busiest: usize,
    total: usize,
    text: String,
}

fn row_balance(stage: &Stage, threads: usize, alone: bool, target: &Target) -> RowBalance {
    let threads = threads.max(1);
    let share = |n: usize, t: usize| n * (t + 1) / threads - n * t / threads;
    // "rows: 8 and 9 of 17 rows", "pixels: 4 and 4 of 7 blocks of 7 pixels".
    let text = |n: &[usize], of: usize, what: &str| match n {
        [_] => format!("all {of} {what} on one thread"),
        _ => format!("{} of {of} {what}", counts(n)),
    };
    if alone && crate::plan::is_flat(stage) {
        let pixels = stage.output.h * stage.output.w;
        let px = crate::plan::schedule_for(stage, target).px.max(1);
        let blocks: Vec<usize> = (0..threads)
            .map(|t| share(pixels, t).div_ceil(px))
            .collect();
        RowBalance {
            busiest: blocks.iter().max().copied().unwrap_or(0),
            total: pixels.div_ceil(px),
            text: format!(
                "pixels: {}",
                text(
                    &blocks,
                    pixels.div_ceil(px),
                    &format!("blocks of {px} pixels")
                )
            ),
        }
    } else {
        let h = stage.output.h;
        let rows: Vec<usize> = (0..threads).map(|t| share(h, t)).collect();
        RowBalance {
            busiest: rows.iter().max().copied().unwrap_or(0),
            total: h,
            text: format!("rows: {}", text(&rows, h, "rows")),
        }
    }
}

/// `4 and 3`, `3, 3 and 2`.
fn counts(n: &[usize]) -> String {
    let s: Vec<String> = n.iter().map(|n| n.to_string()).collect();
    match s.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => s.join(""),
    }
}

/// The band height of stages `first..=last` fused: the largest band whose
/// intermediate rows fit in L1d, where there is one and its calls cost
/// less than streaming the intermediate tensors through L2 would; else the
/// largest whose rows fit in a quarter of L2 (the buffers hold two bands'
/// worth, to shift rows rarely). In L1 the next stage's loads hit: dw ->
/// 1x1 pairs ran 3-13% faster in bands of 1-3 rows than of 16-36; the
/// separated filters, in bands of 2-6 rows, within noise of 22-68.
fn band_rows(layer: &Layer, first: usize, last: usize, host: &Host) -> usize {
    let out_h = layer.stages[last].output.h;
    // The L1 test takes a band from the middle: the top one reads fewer
    // rows (padding), so would let through bands that overflow L1.
    let in_l1 = |b: usize| scratch_rows_from(layer, first, last, out_h / 2, b) <= host.l1d_bytes;
    if let Some(b) = tallest(out_h, in_l1) {
        let calls = out_h.div_ceil(b) as f64 * (last - first + 1) as f64 * CALL_CYCLES;
        let streamed: usize = layer.stages[first..last]
            .iter()
            .map(|s| 2 * s.output.len() * 4)
            .sum();
        if calls < streamed as f64 / L2_BYTES_PER_CYCLE {
            return b;
        }
    }
    let budget = host.l2_bytes / 4;
    tallest(out_h, |b| scratch_rows(layer, first, last, b) <= budget).unwrap_or(1)
}

/// The largest band height in `1..=out_h` that `fits`, by bisection: a
/// band's intermediate rows ([`scratch_rows_from`]) never shrink as it
/// grows (each stage's input rows widen with its output rows), so `fits`
/// holds up to some height and not above.
fn tallest(out_h: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    // `fits(lo)` holds (or `lo` is 0), `fits(hi + 1)` does not (or `hi` is out_h).
    let (mut lo, mut hi) = (0, out_h);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (lo > 0).then_some(lo)
}

/// The cost model's estimates (cycles per image) for adding a stage to the
/// fusion group before it: the group and the stage run apart, or fused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusionCost {
    pub apart: f64,
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
const L2_BYTES_PER_CYCLE: f64 = 32.0;
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
const CALL_CYCLES: f64 = 400.0;

/// Cycles lost to streaming `bytes` of one tensor between stages: from
/// L2 where it fits in half, else from L3 or memory.
fn stall_cycles(bytes: usize, host: &Host) -> f64 {
    let rate = if bytes <= host.l2_bytes / 2 {
        L2_BYTES_PER_CYCLE
    } else {
        FAR_BYTES_PER_CYCLE
    };
    STALL * bytes as f64 / rate
}

/// Estimated cycles per image of stages `first..=last` as one group: their
/// FMAs, the stalls of streaming the group's input and output, and when
/// fused, per band a call of each stage and the copy of the rows the next
/// band reads again (the price of never recomputing them).
fn group_cycles(layer: &Layer, first: usize, last: usize, host: &Host, target: &Target) -> f64 {
    let stages = &layer.stages[first..=last];
    let compute: f64 = stages
        .iter()
        .map(|s| {
            // At the lanes of the code that runs it (an AVX-512 layer
            // hands some stages to the AVX2 code), as the stage it runs as.
            let t = crate::plan::stage_target(s, target);
            let (eff, lanes) = match crate::plan::planned_stage(s, &t).kind {
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
    let stalls = stall_cycles(bytes(stages[0].input), host)
        + stall_cycles(bytes(stages[stages.len() - 1].output), host);
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

/// The cost model's estimates (cycles per image) for a layer run whole
/// and with its rank-1 stages separated (`convjit_ir::separate`), each as
/// planned: separating saves MACs, but adds a stage whose code may be
/// narrower (an AVX-512 layer's 1xK stage on 2-7 channels is AVX2 code).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeparationCost {
    pub whole: f64,
    pub separated: f64,
    /// An approximation the user asked for (`Separation::Rank`): it runs
    /// whatever the estimate (accuracy traded for MACs knowingly).
    pub asked: bool,
}

impl SeparationCost {
    pub fn pays(&self) -> bool {
        self.separated < self.whole
    }

    /// Whether the kernel runs the rewrite.
    pub fn runs_separated(&self) -> bool {
        self.asked || self.pays()
    }

    /// What runs, for `plan` and `bench`: `separated`, `whole`, or an
    /// approximation asked for against the estimate.
    pub fn decision(&self) -> &'static str {
        match (self.pays(), self.asked) {
            (true, _) => "separated",
            (false, true) => "separated (asked for; whole is estimated faster)",
            (false, false) => "whole",
        }
    }
}

impl std::fmt::Display for SeparationCost {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Thousands, but small layers in cycles (not "0k against 0k").
        let n = |c: f64| match c >= 1e5 {
            true => format!("{:.0}k", c / 1e3),
            false => format!("{c:.0}"),
        };
        write!(
            f,
            "estimated {} cycles whole, {} separated",
            n(self.whole),
            n(self.separated)
        )
    }
}

/// Estimated cycles per image of `layer` as `plan_layer` plans it.
fn layer_cycles(layer: &Layer, options: &Options, host: &Host) -> f64 {
    let p = plan_layer(layer, options, host);
    let target = Target::of(p.options.backend);
    p.groups
        .iter()
        .map(|g| group_cycles(layer, g.first, g.last, &p.host, &target))
        .sum()
}

/// `whole` against `separated`, its rewrite with rank-1 stages split.
pub fn separation_cost(
    whole: &Layer,
    separated: &Layer,
    options: &Options,
    host: &Host,
) -> SeparationCost {
    SeparationCost {
        whole: layer_cycles(whole, options, host),
        separated: layer_cycles(separated, options, host),
        asked: matches!(options.separate, Separation::Rank(_)),
    }
}

/// Bytes of intermediate rows one band of `b` rows of stages
/// `first..=last` needs.
fn scratch_rows(layer: &Layer, first: usize, last: usize, b: usize) -> usize {
    scratch_rows_from(layer, first, last, 0, b)
}

/// [`scratch_rows`] of the band starting at output row `a` (the top band
/// reads fewer rows: padding).
fn scratch_rows_from(layer: &Layer, first: usize, last: usize, a: usize, b: usize) -> usize {
    #[cfg(test)]
    tests::WALKED.with(|w| w.set(w.get() + last - first));
    let out_h = layer.stages[last].output.h;
    let mut rows = (a.min(out_h - 1), (a + b).min(out_h));
    let mut bytes = 0;
    for k in (first + 1..=last).rev() {
        let s = &layer.stages[k];
        let (lo, hi, _, _) = rows::input_rows(s, rows.0, rows.1);
        let prev = &layer.stages[k - 1];
        bytes += (hi - lo).max(1) * row_bytes(prev);
        // A band that reads only padding (a middle one, with strides and
        // padding at the limits) still gets a row, inside the stage.
        let lo = lo.min(prev.output.h - 1);
        rows = (lo, hi.max(lo + 1));
    }
    bytes
}

/// Output row ranges of a group's last stage, thread by thread: each
/// thread's contiguous share, cut into bands.
pub fn chunks(out_h: usize, band_rows: usize, threads: usize) -> Vec<Vec<(usize, usize)>> {
    (0..threads)
        .map(|t| {
            let (c0, c1) = (out_h * t / threads, out_h * (t + 1) / threads);
            (c0..c1)
                .step_by(band_rows.max(1))
                .map(|a| (a, (a + band_rows).min(c1)))
                .collect()
        })
        .collect()
}

/// Every band of every stage of the group reads at least one input row.
fn bands_ok(layer: &Layer, g: &Group) -> bool {
    let out_h = layer.stages[g.last].output.h;
    // Threads sharing channels each compute every row.
    let threads = match g.split {
        Split::Rows => g.threads,
        Split::Channels => 1,
    };
    chunks(out_h, g.band_rows, threads)
        .iter()
        .flatten()
        .all(|&(a, b)| {
            let mut rows = (a, b);
            (g.first..=g.last).rev().all(|k| {
                let (lo, hi, _, _) = rows::input_rows(&layer.stages[k], rows.0, rows.1);
                rows = (lo, hi);
                hi > lo
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::random_layer::{layer_case, Limits};
    use proptest::prelude::*;

    thread_local! {
        /// Stages [`scratch_rows_from`] has walked on this thread: the
        /// planner's work, counted rather than timed.
        pub(super) static WALKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn host() -> Host {
        Host {
            lanes: 4,
            vector_registers: 16,
            l1d_bytes: 32 << 10,
            l2_bytes: 1 << 20,
            cores: 2,
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn fuses_where_the_cost_model_expects_a_gain() {
        let src = "layer l { input 112x112x32\n dw: depthwise 3x3, pad same\n pw: pointwise 64 }\n\
                   layer s { input 14x14x64\n dw: depthwise 3x3, pad same\n pw: pointwise 64 }";
        let layers = convjit_ir::compile_source(src).unwrap();
        let p = plan_layer(&layers[0], &Options::default(), &host());
        assert_eq!(p.groups.len(), 1, "{p:?}");
        let g = &p.groups[0];
        assert!(g.band_rows >= 1 && g.band_rows < 112, "{g:?}");
        assert!(
            g.why.contains("fused") && g.why.contains("band of"),
            "{}",
            g.why
        );
        assert!(g.why.contains("cycles apart"), "{}", g.why);
        // 49 KiB of intermediate through L2 saves less than the bands cost.
        let p = plan_layer(&layers[1], &Options::default(), &host());
        assert_eq!(p.groups.len(), 2, "{p:?}");
        assert!(p.groups[1].why.contains("not fused"), "{}", p.groups[1].why);
        let t = Target::CRANELIFT;
        let big = fusion_cost(&layers[0], 0, 1, &host(), &t);
        let small = fusion_cost(&layers[1], 0, 1, &host(), &t);
        assert!(big.pays() && !small.pays(), "{big:?} {small:?}");
        let unfused = Options {
            fuse: Fusion::Never,
            ..Options::default()
        };
        assert_eq!(plan_layer(&layers[0], &unfused, &host()).groups.len(), 2);
    }

    #[test]
    fn chunks_cover_every_row_once() {
        for (h, b, t) in [(10, 3, 1), (10, 3, 2), (1, 4, 2), (7, 7, 3)] {
            let rows: Vec<usize> = chunks(h, b, t)
                .into_iter()
                .flatten()
                .flat_map(|(a, b)| a..b)
                .collect();
            assert_eq!(rows, (0..h).collect::<Vec<_>>());
        }
    }

    #[test]
    fn bands_keep_intermediates_in_l1_when_rows_fit_it() {
        let layer = |src: &str| convjit_ir::compile_source(src).unwrap().remove(0);
        // A 56x144 row is 31.5 KiB: one per band stays in a 32 KiB L1d.
        let l =
            layer("layer d { input 56x56x144\n dw: depthwise 3x3, pad same\n pw: pointwise 24 }");
        assert_eq!(band_rows(&l, 0, 1, &host()), 1);
        // Expanded rows for a 3x3 depthwise: three are needed, L2/4 it is.
        let l = layer(
            "layer r { input 56x56x24\n e: pointwise 144\n dw: depthwise 3x3, pad same\n p: pointwise 24 }",
        );
        let b = band_rows(&l, 0, 2, &host());
        assert!(b > 1 && scratch_rows(&l, 0, 2, b) <= (1 << 20) / 4, "{b}");
    }

    #[test]
    fn a_stage_reading_only_padding_runs_on_one_thread_whatever_its_channels() {
        // From the limits property test: the column stage's rows read only
        // padding, so it runs whole on one thread, though its 150 output
        // channels would split.
        let l = convjit_ir::compile_source(
            "layer t { input 1x1x1\n s0: conv 3x1 -> 150, stride 3x1, dilation 2x1, pad 12 0 0 0, separable spatial\n s1: pointwise 1 }",
        )
        .unwrap()
        .remove(0);
        for backend in [Backend::Cranelift, Backend::Avx2, Backend::Avx512] {
            let options = Options {
                threads: 2,
                min_thread_cycles: 0,
                backend,
                ..Options::default()
            };
            let p = plan_layer(&l, &options, &host());
            assert_eq!((p.groups[0].split, p.groups[0].threads), (Split::Rows, 1));
            crate::program::program(&l, &p);
        }
    }

    #[test]
    fn a_middle_band_reading_only_padding_is_planned() {
        // From the limits property test: the middle band of s1 reads only
        // s0's bottom padding rows.
        let l = convjit_ir::compile_source(
            "layer t { input 46x38x37\n s0: conv 1x1 -> 21, stride 3x341, dilation 27x408, pad 3 12 1023 7, multiplier 6, separable depthwise, bias, relu\n s1: conv 3x1 -> 45, stride 16x2, dilation 1x5666, pad 31 64 8 8, separable spatial, bias, relu }",
        )
        .unwrap()
        .remove(0);
        let host = Host {
            l1d_bytes: 48 << 10,
            ..host()
        };
        for last in 1..l.stages.len() {
            for first in 0..last {
                let b = band_rows(&l, first, last, &host);
                assert!(b >= 1 && b <= l.stages[last].output.h);
            }
        }
        plan_layer(&l, &Options::default(), &host);
    }

    /// A layer of `n` stages, alternately 3x3 depthwise and pointwise.
    fn chain(n: usize, input: &str) -> Layer {
        let stages: Vec<String> = (0..n)
            .map(|i| match i % 2 {
                0 => format!("s{i}: depthwise 3x3, pad same"),
                _ => format!("s{i}: pointwise 8"),
            })
            .collect();
        let src = format!("layer l {{ input {input}\n {} }}", stages.join("\n "));
        convjit_ir::compile_source(&src).unwrap().remove(0)
    }

    /// Stages walked planning `layer`.
    fn walked(layer: &Layer, fuse: Fusion) -> usize {
        WALKED.with(|w| w.set(0));
        let options = Options {
            fuse,
            threads: 2,
            ..Options::default()
        };
        let p = plan_layer(layer, &options, &host());
        assert_eq!(
            p.groups.last().map(|g| g.last),
            Some(layer.stages.len() - 1)
        );
        WALKED.with(|w| w.get())
    }

    #[test]
    fn planning_work_grows_linearly_with_the_stages() {
        // Ten times the stages, ten times the work (it was a hundred:
        // each join priced the whole group, and each group's reasons were
        // found by searching every decision).
        for input in ["8x8x8", "60x8x8"] {
            let (small, large) = (chain(2_000, input), chain(20_000, input));
            for fuse in [Fusion::Auto, Fusion::Always] {
                let (a, b) = (walked(&small, fuse), walked(&large, fuse));
                assert!(b <= 11 * a, "{input} {fuse:?}: {a} then {b} stages walked");
            }
        }
        // Forced, the layer is one group; joins beyond the cost model's
        // bound are not priced, and say so.
        let options = Options {
            fuse: Fusion::Always,
            ..Options::default()
        };
        let l = chain(20_000, "8x8x8");
        let p = plan_layer(&l, &options, &host());
        assert_eq!((p.groups.len(), p.groups[0].last), (1, 19_999));
        let why = &p.groups[0].why;
        assert!(
            why.contains(
                "s62 -> s63: the intermediate 8x8x8 is 2 KiB per image: fused (forced); estimated"
            ),
            "{}",
            &why[..2000]
        );
        assert!(
            why.contains(
                "s63 -> s64: the intermediate 8x8x8 is 2 KiB per image: fused (forced; not priced"
            ),
            "{}",
            &why[..2000]
        );
    }

    #[test]
    fn a_group_holds_at_most_the_stages_the_cost_model_prices() {
        // Nearly free stages on 16 MiB tensors: every join pays.
        let stages: Vec<String> = (0..150).map(|i| format!("s{i}: depthwise 1x1")).collect();
        let src = format!("layer l {{ input 4x65536x16\n {} }}", stages.join("\n "));
        let l = convjit_ir::compile_source(&src).unwrap().remove(0);
        let p = plan_layer(&l, &Options::default(), &host());
        let spans: Vec<(usize, usize)> = p.groups.iter().map(|g| (g.first, g.last)).collect();
        assert_eq!(spans, [(0, 63), (64, 127), (128, 149)]);
        assert!(p.groups[1].why.starts_with(
            "s63 -> s64: the intermediate 4x65536x16 is 16384 KiB per image: not fused: a group holds at most 64 stages; s64 -> s65"
        ), "{}", &p.groups[1].why[..300]);
    }

    #[test]
    fn the_tallest_band_is_found_by_bisection() {
        for h in 1..40 {
            for limit in 0..=h + 1 {
                let fits = |b: usize| b <= limit;
                let scan = (1..=h).rev().find(|&b| fits(b));
                assert_eq!(tallest(h, fits), scan, "{h} {limit}");
            }
        }
    }

    /// Random layers of up to 6 stages, shapes to 24x40x70.
    fn layers() -> impl Strategy<Value = Layer> {
        let limits = Limits {
            stages: 7,
            ..Limits::PROPTEST
        };
        layer_case(limits).prop_filter_map("the layer validates", |c| {
            convjit_ir::compile_source(&c.src)
                .ok()
                .map(|mut l| l.remove(0))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Bisection needs a band's rows never to shrink as it grows: the
        /// band heights are those a scan from the tallest down finds.
        #[test]
        fn band_rows_grow_with_the_band_and_bisection_finds_the_scans_height(
            l in layers(),
            l1d in 1usize..64,
            l2 in 1usize..512,
        ) {
            let host = Host { l1d_bytes: l1d << 8, l2_bytes: l2 << 10, ..host() };
            for last in 0..l.stages.len() {
                let out_h = l.stages[last].output.h;
                for first in 0..=last {
                    for a in [0, out_h / 2] {
                        let rows: Vec<usize> =
                            (1..=out_h).map(|b| scratch_rows_from(&l, first, last, a, b)).collect();
                        prop_assert!(rows.windows(2).all(|w| w[0] <= w[1]), "{first}..={last} from {a}: {rows:?}");
                    }
                    // The scan band_rows did before.
                    let scan = {
                        let in_l1 = |b: usize| scratch_rows_from(&l, first, last, out_h / 2, b) <= host.l1d_bytes;
                        let l1 = (1..=out_h).rev().find(|&b| in_l1(b)).filter(|&b| {
                            let calls = out_h.div_ceil(b) as f64 * (last - first + 1) as f64 * CALL_CYCLES;
                            let streamed: usize = l.stages[first..last].iter().map(|s| 2 * s.output.len() * 4).sum();
                            calls < streamed as f64 / L2_BYTES_PER_CYCLE
                        });
                        l1.unwrap_or_else(|| {
                            (1..=out_h).rev().find(|&b| scratch_rows(&l, first, last, b) <= host.l2_bytes / 4).unwrap_or(1)
                        })
                    };
                    prop_assert_eq!(band_rows(&l, first, last, &host), scan);
                }
            }
        }
    }
}
