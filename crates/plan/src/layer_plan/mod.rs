//! The layer plan: which stages run fused, in bands of how many rows, on how
//! many threads, and why. Halide's "schedule", kept apart from the layer (the
//! "algorithm"): a plain value that can be printed, compared and overridden.
//! Per-stage blocking is [`crate::stage_plan::schedule`]; this decides the rest,
//! from the host's real parameters ([`Host`]).
//!
//! This file has the plan's types and the fusion decisions
//! ([`plan_layer`]); `host.rs` the machine ([`Host`]), `cost.rs` the fusion
//! cost model ([`fusion_cost`]), `bands.rs` the band heights and bands
//! ([`chunks`]), `threads.rs` the threads and their split, `separation.rs`
//! the price of running a layer separated ([`separation_cost`]).

mod bands;
mod cost;
mod host;
mod separation;
mod threads;

pub use bands::chunks;
pub use cost::{fusion_cost, stage_cycles, FusionCost};
pub use host::{host_l1d_bytes, host_l2_bytes, host_l3_bytes, Host};
pub use separation::{separation_cost, SeparationCost};

use crate::backend::Backend;
use crate::stage_plan::{Bf16Units, Target};
use convjit_ir::{Layer, Precision, Separation};
use cost::group_cycles;
use threads::choose_bands_and_threads;

/// Whether consecutive stages may run fused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fusion {
    /// Where the cost model expects a gain.
    Auto,
    /// Every stage of the layer in one group (for experiments and tests).
    Always,
    /// Every stage on its own.
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
    /// Whether consecutive stages may run fused.
    pub fuse: Fusion,
    /// Threads sharing the work: 0 (the default) for every core of the
    /// host ([`Host::cores`]), 1 for the calling thread only. The planner
    /// gives a group fewer where each would get too little work
    /// (`min_thread_cycles`).
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
    /// The arithmetic (`convjit_ir::Precision`): bf16 rounds the weights
    /// when packed and every stage's input values, and needs a generator
    /// and CPU with bf16 instructions ([`Backend::check_precision`]).
    pub precision: Precision,
    /// In bf16: a tile stage whose only reader is a many-channel depthwise
    /// stage stores its output as bf16, which the depthwise stage widens
    /// (`stage_plan::bf16_intermediates`); off, every intermediate is f32
    /// (the same values: they are rounded either way).
    pub bf16_intermediates: bool,
    /// In bf16: what runs conv, pointwise and grouped stages (AMX tiles,
    /// `vdpbf16ps`, f32 FMAs on bf16 values; `Auto`: as the host suits,
    /// see [`Bf16Units`]). Ignored in f32.
    pub bf16_units: Bf16Units,
    /// Whether a 3x3 stride-1 conv (alone, or a stage of a longer layer)
    /// runs as Winograd's F(2x2, 3x3) or F(4x4, 3x3)
    /// (`convjit_ir::winograd`): 16 products per 2x2 outputs instead of 36,
    /// or 36 per 4x4 instead of 144, rounded differently from the direct
    /// sum (within `convjit_ir::winograd::magnitude`), so only when asked;
    /// f32 only.
    pub winograd: Winograd,
    /// Winograd's output tile side (2 or 4) for every stage that runs so;
    /// `None`: chosen per stage by the planner. Another value is an error
    /// when a kernel is compiled.
    pub winograd_tile: Option<usize>,
}

/// When a layer that Winograd's F(m x m, 3x3) can compute runs that way (ordered from
/// the most reluctant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Winograd {
    /// Never: the direct sum (the default: exact as f32 FMAs go).
    #[default]
    Off,
    /// Where it pays: 16 channels a side and 2M multiply-accumulates or
    /// more, and tiles that cover at most 25% more outputs than the layer
    /// has unless it has 256 channels a side (measured, `BENCHMARKS.md`).
    Auto,
    /// Every layer it can compute, however small: what the tests and
    /// `convjit fuzz --winograd` check, and for users who measured.
    Always,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fuse: Fusion::Auto,
            threads: 0,
            band_rows: None,
            min_thread_cycles: MIN_CYCLES_PER_THREAD,
            backend: Backend::Auto,
            separate: Separation::Exact,
            precision: Precision::F32,
            bf16_intermediates: true,
            bf16_units: Bf16Units::Auto,
            winograd: Winograd::Off,
            winograd_tile: None,
        }
    }
}

impl Options {
    /// The threads asked for on `host`: [`Options::threads`], with 0 for
    /// all its cores.
    pub fn resolved_threads(&self, host: &Host) -> usize {
        match self.threads {
            0 => host.cores.max(1),
            n => n,
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
    /// (`stage_plan::channel_shares`): each thread computes every pixel of its
    /// channels, with only their weights (a function per share,
    /// `stage_plan::plan_channels`). Only for a conv or pointwise stage (one
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
    /// The group's first stage (its index in the layer).
    pub first: usize,
    /// The group's last stage: its output is the group's.
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

/// How a layer runs ([`plan_layer`]): its stages in fusion groups, each
/// with its band height and threads and the planner's reasons.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayerPlan {
    /// The machine planned for, with the chosen generator's vectors.
    pub host: Host,
    /// The options planned with, the generator made concrete.
    pub options: Options,
    /// The groups, in stage order, covering every stage once.
    pub groups: Vec<Group>,
}

impl LayerPlan {
    /// The stage plans' target: the generator's vectors, and in bf16 on
    /// the AVX-512 generator AMX tiles where the host may run them
    /// ([`Host::tiles`]). The cost model priced the plan's stages for it.
    pub fn target(&self) -> Target {
        Target::planned(
            self.options.backend,
            self.options.precision,
            self.options.bf16_units,
            self.host.tiles,
        )
    }

    /// Group `g` of `layer` is a filter's separated pair that one function
    /// computes, its column sums in registers
    /// ([`crate::stage_plan::column_pair`]): no bands, no intermediate.
    pub fn in_registers(&self, layer: &Layer, g: &Group) -> bool {
        g.last == g.first + 1
            && crate::stage_plan::column_pair(
                &layer.stages[g.first],
                &layer.stages[g.last],
                &self.target(),
            )
            .is_some()
    }
}

/// Decides fusion groups and band heights for `layer` on `host`, with
/// the vectors of the code generator `options` name (`Auto` made
/// concrete; one the host cannot run falls back to Cranelift: compiling
/// refuses it with the reason) and, in bf16, AMX tiles where
/// [`Host::tiles`] allows them.
pub fn plan_layer(layer: &Layer, options: &Options, host: &Host) -> LayerPlan {
    let backend = options.backend.resolve().unwrap_or(Backend::Cranelift);
    // Tiles where the generator takes them: every decision below prices
    // the stages as the code that runs them.
    let target = Target::planned(backend, options.precision, options.bf16_units, host.tiles);
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
    let threads = options.resolved_threads(host);
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
            choose_bands_and_threads(layer, g, options, host, &target, why, threads)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_plan::bands::tests::WALKED;

    /// A host of 128-bit vectors, 32 KiB L1d, 1 MiB L2, 2 cores.
    pub(super) fn host() -> Host {
        Host {
            lanes: 4,
            vector_registers: 16,
            l1d_bytes: 32 << 10,
            l2_bytes: 1 << 20,
            cores: 2,
            tiles: false,
        }
    }

    /// Sapphire Rapids, as measured: 48 KiB L1d, 2 MiB L2, 2 cores, AMX
    /// tiles granted.
    pub(super) fn sapphire_rapids() -> Host {
        Host {
            lanes: 16,
            vector_registers: 32,
            l1d_bytes: 48 << 10,
            l2_bytes: 2 << 20,
            cores: 2,
            tiles: true,
        }
    }

    /// The f32 plans of the suite's and MobileNet v2's layers for
    /// `backend` on two threads: groups, bands, threads and every reason
    /// with its estimates.
    fn f32_plans(backend: Backend) -> String {
        plans_text(backend, Precision::F32)
    }

    fn plans_text(backend: Backend, precision: Precision) -> String {
        let src = [
            include_str!("../../../../benches/suite.conv"),
            include_str!("../../../../examples/mobilenet_v2.conv"),
        ];
        let mut out = format!("== {backend}\n");
        for src in src {
            for l in convjit_ir::compile_source(src).unwrap() {
                let options = Options {
                    backend,
                    threads: 2,
                    precision,
                    ..Options::default()
                };
                let p = plan_layer(&l, &options, &sapphire_rapids());
                out += &format!("{}\n", l.name);
                for g in &p.groups {
                    out += &format!(
                        "  {}..={} band {} threads {} {:?}: {}\n",
                        g.first, g.last, g.band_rows, g.threads, g.split, g.why
                    );
                }
            }
        }
        out
    }

    #[test]
    fn f32_plans_are_those_of_the_f32_cost_model() {
        // The f32 plans (first written by the cost model before it priced
        // tiles): tiles, granted or not, change nothing of f32. A change
        // of the f32 model rewrites it with `UPDATE_F32_PLANS=1`, on a
        // host with every generator, and its diff shows what moved. A generator this host
        // lacks plans as Cranelift: its section is not compared.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/layer_plan/f32_plans.txt");
        let backends = [Backend::Avx512, Backend::Avx2, Backend::Cranelift];
        if std::env::var_os("UPDATE_F32_PLANS").is_some() {
            let all: String = backends.into_iter().map(f32_plans).collect();
            std::fs::write(path, all).unwrap();
        }
        let expected = std::fs::read_to_string(path).unwrap();
        for b in backends.into_iter().filter(|b| b.resolve().is_ok()) {
            let head = format!("== {b}\n");
            let start = expected.find(&head).unwrap();
            let section = expected[start..].split_inclusive('\n').skip(1);
            let section: Vec<&str> = section.take_while(|l| !l.starts_with("== ")).collect();
            let plans = f32_plans(b);
            let plans: Vec<&str> = plans.split_inclusive('\n').skip(1).collect();
            for (i, (a, e)) in plans.iter().zip(&section).enumerate() {
                assert_eq!(a, e, "{b}, line {}", i + 1);
            }
            assert_eq!(plans.len(), section.len(), "{b}");
        }
    }

    #[test]
    fn bf16_prices_tile_stages_and_a_whole_band_fuses_no_longer() {
        // MobileNet v2's block 9: f32 fuses expand -> dw in one band of
        // the whole 14 rows (its margin, 3% of the f32 compute, hides that
        // the band holds whole intermediates); in bf16 on tiles it runs
        // apart, which measured 1-8% faster than the fused plan (bench,
        // old and new binaries alternating, one thread).
        if Backend::Avx512.resolve().is_err() {
            eprintln!("skipped: a host without AVX-512 plans as Cranelift");
            return;
        }
        let l = convjit_ir::compile_source(
            "layer b { input 14x14x64\n expand: pointwise 384, bias, relu6\n \
             dw: depthwise 3x3, pad same, bias, relu6\n project: pointwise 64, bias, residual }",
        )
        .unwrap()
        .remove(0);
        let spans = |precision, tiles| {
            // Tiles where they fill, else f32 FMAs: Intel's default, on
            // any host (on AMD the default runs vdpbf16ps).
            let options = Options {
                backend: Backend::Avx512,
                threads: 1,
                precision,
                bf16_units: crate::stage_plan::Bf16Units::Tiles,
                ..Options::default()
            };
            let host = Host {
                tiles,
                ..sapphire_rapids()
            };
            let p = plan_layer(&l, &options, &host);
            let spans: Vec<(usize, usize)> = p.groups.iter().map(|g| (g.first, g.last)).collect();
            let why: Vec<String> = p.groups.into_iter().map(|g| g.why).collect();
            (spans, why)
        };
        let fused = vec![(0, 1), (2, 2)];
        assert_eq!(spans(Precision::F32, true).0, fused);
        // bf16 without tiles granted: f32 code, the f32 plan.
        assert_eq!(spans(Precision::Bf16, false), spans(Precision::F32, false));
        let (apart, why) = spans(Precision::Bf16, true);
        assert_eq!(apart, [(0, 0), (1, 1), (2, 2)]);
        assert!(why[1].ends_with(": not fused"), "{}", why[1]);
        // The tile stages' price is what the planner weighed: below their
        // f32 code's.
        let tiles = LayerPlan {
            host: sapphire_rapids(),
            options: Options {
                backend: Backend::Avx512,
                precision: Precision::Bf16,
                ..Options::default()
            },
            groups: Vec::new(),
        }
        .target();
        assert!(tiles.tiles);
        let expand = &l.stages[0];
        assert!(stage_cycles(expand, &tiles, 1) * 2.0 < stage_cycles(expand, &Target::AVX512, 1));
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
    fn an_intermediate_its_writer_streamed_past_l2_is_priced_from_beyond() {
        // The stride-2 depthwise reads 3.1 MiB to write 784 KiB: by the
        // time the pointwise reads it, most has left a 2 MiB L2, so run
        // apart it comes from L3 and fusing pays (MobileNet v1's block
        // ran 6-8% faster fused). With an L2 that holds all the writer
        // streamed, the same intermediate is priced from L2: apart.
        let src = "layer s2 { input 112x112x64\n dw: depthwise 3x3, stride 2, pad same\n pw: pointwise 128 }";
        let layer = convjit_ir::compile_source(src).unwrap().remove(0);
        let t = Target::AVX512;
        let on = |l2_bytes: usize| Host {
            l2_bytes,
            l1d_bytes: 48 << 10,
            ..host()
        };
        let small = fusion_cost(&layer, 0, 1, &on(2 << 20), &t);
        let large = fusion_cost(&layer, 0, 1, &on(16 << 20), &t);
        assert!(small.pays() && !large.pays(), "{small:?} {large:?}");
        assert!(small.apart > large.apart, "{small:?} {large:?}");
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
}
