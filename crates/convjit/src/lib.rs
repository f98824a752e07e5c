//! convjit: a code-generating compiler for convolution kernels.
//!
//! This crate is the library embedders depend on (the `convjit` command
//! line is a separate package over it). The pipeline, one crate per step
//! (see ARCHITECTURE.md):
//!
//! ```text
//! .conv text --convjit_lang::parse--> syntax tree --convjit_ir::lower--> Layer
//! Layer + Weights --interpret--> output (the reference)
//! Layer + Weights --Kernel::compile--> Kernel --run--> output (machine code
//!     for this CPU: convjit-x86's AVX2 / AVX-512 code, or Cranelift's)
//! ```
//!
//! ```
//! use convjit::{Layer, Weights};
//! let layers = convjit::parse_layers("example.conv", "
//!     layer textbook {
//!       input 12x12x3
//!       sep: conv 5x5 -> 256, separable depthwise
//!     }").unwrap();
//! let layer: &Layer = &layers[0];
//! assert_eq!(layer.macs(), 4_800 + 49_152);
//! let weights = Weights::random(layer, 42);
//! let input = vec![0.5f32; layer.input.len()];
//! let reference = convjit::interpret(layer, &weights, &input, 1).unwrap();
//!
//! // Machine code specialised to this layer, for this CPU:
//! let kernel = convjit::Kernel::compile(layer, &weights).unwrap();
//! let mut out = vec![0.0; layer.output().len()];
//! kernel.run(&input, &mut out, 1).unwrap();
//! assert!(out.iter().zip(&reference).all(|(a, b)| (a - b).abs() < 1e-4));
//! // Buffer lengths are checked before generated code is entered:
//! assert!(kernel.run(&input, &mut out, 2).is_err());
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod plan_json;
pub mod plan_text;
pub mod verify;

pub use convjit_ir::budget;
pub use convjit_ir::separate::{Note as SeparationNote, Separated, Separation};
pub use convjit_ir::winograd;
pub use convjit_ir::{
    check_work, compare, interpret, interpret_in, separate, Activation, Comparison, DataError,
    Layer, Padding, Precision, Rng, Shape, Stage, StageKind, StageWeights, Weights,
};
pub use convjit_jit::{
    bf16_peaks, separation, tiles_refused, winograd_plan, winograd_stages, CompileStats, JitError,
    Kernel, Network, PeakLoop, WinogradPlan,
};
pub use convjit_plan::layer_plan::SeparationCost;
pub use convjit_plan::stage_plan::Bf16Units;
pub use convjit_plan::{
    Backend, Fusion, Group, Host, LayerPlan, Options, Schedule, Split, Winograd,
};

/// The plan the JIT would follow for `layer` on this machine (its host
/// read once: `convjit plan` plans every layer of a file), with AMX tiles
/// where the JIT would use them.
pub fn plan_layer(layer: &Layer, options: &Options) -> LayerPlan {
    convjit_plan::layer_plan::plan_layer(layer, options, &convjit_jit::planning_host(options))
}

/// The register blocking of one stage, as the code generator of `plan`
/// will emit it.
pub fn stage_schedule(stage: &Stage, plan: &LayerPlan) -> Schedule {
    let target = convjit_jit::stage_target(
        plan.options.backend,
        plan.options.precision,
        plan.options.bf16_units,
    );
    convjit_plan::stage_plan::schedule_for(stage, &target)
}

/// What the plan says of one stage, for printing: its register blocking,
/// why, and its packed-weight layout, from one plan of the stage for the
/// plan's generator ([`stage_schedule`], [`stage_schedule_reason`] and
/// [`stage_packing`] together, without planning the stage three times).
#[derive(Clone, Debug)]
pub struct StageReport {
    pub schedule: Schedule,
    pub reason: String,
    pub packing: String,
    /// In bf16: the AMX tile blocking (`Ok`), or why the stage runs as f32
    /// code on bf16 values (`Err`); `None` in f32.
    pub tiles: Option<Result<String, String>>,
    /// Narrow conv rows two at a time in each register block: which rows,
    /// and the blocks' pixels (`StagePlan::pair_col_blocks`).
    pub row_pairs: Option<String>,
    /// In bf16 on channel pairs (`StagePlan::pairs`): the real input
    /// channels.
    pub pairs: Option<usize>,
    /// The passes a 1x1 stage's reduction runs in
    /// (`StagePlan::k_chunks`; 1: one).
    pub reduction_chunks: usize,
}

impl StageReport {
    pub fn new(stage: &Stage, plan: &LayerPlan) -> StageReport {
        let target = convjit_jit::stage_target(
            plan.options.backend,
            plan.options.precision,
            plan.options.bf16_units,
        );
        let p = convjit_plan::stage_plan::plan_for(stage, &target);
        StageReport {
            // `plan_for` blocks the stage by `schedule_for`.
            schedule: p.sched,
            reason: convjit_plan::stage_plan::schedule_reason_for(stage, &target),
            packing: p.packing(),
            tiles: tile_report(stage, plan, &p),
            row_pairs: row_pairs_report(&p),
            pairs: p.pairs,
            reduction_chunks: p.k_chunks(),
        }
    }
}

/// [`StageReport::row_pairs`]: `None` where rows run one at a time (or
/// on tiles).
fn row_pairs_report(p: &convjit_plan::stage_plan::StagePlan) -> Option<String> {
    let blocks = p.pair_col_blocks().filter(|_| p.tiles.is_none())?;
    let (a, b) = p.full_rows();
    let px: Vec<String> = blocks
        .iter()
        .map(|c| match c.count {
            1 => format!("{}", 2 * c.cols.len()),
            n => format!("{n}x{}", 2 * c.cols.len()),
        })
        .collect();
    Some(format!(
        "output rows {a}..{b} two at a time, blocks of {} pixels (each a row's and the next's)",
        px.join(" + ")
    ))
}

/// [`StageReport::tiles`]: what a bf16 stage runs on, and why.
fn tile_report(
    stage: &Stage,
    plan: &LayerPlan,
    p: &convjit_plan::stage_plan::StagePlan,
) -> Option<Result<String, String>> {
    use convjit_plan::stage_plan::{K_CHUNK, M_BLOCK, N_BLOCK};
    if plan.options.precision != Precision::Bf16 {
        return None;
    }
    // The cost model's price of the stage alone (one call), as the plan
    // priced it and as f32 code.
    let target = plan.target();
    let cycles = |t: &convjit_plan::stage_plan::Target| {
        convjit_plan::layer_plan::stage_cycles(stage, t, 1) / 1e3
    };
    let f32_code = convjit_plan::stage_plan::Target {
        tiles: false,
        dot: false,
        pairs: false,
        ..target
    };
    let units = plan.options.bf16_units;
    if let Some(ci) = p.pairs {
        return Some(Ok(format!(
            "none, vdpbf16ps (AVX512_BF16, {}) on the blocking above: {} input channel \
             pairs{} broadcast; estimated {:.0}k cycles \
             per image alone ({:.0}k as f32 code)",
            match units {
                Bf16Units::Dot => "asked for",
                _ => "the default on AMD hosts",
            },
            ci.div_ceil(2),
            match ci % 2 {
                1 => " (the last a channel and a zero)",
                _ => "",
            },
            cycles(&target),
            cycles(&f32_code),
        )));
    }
    Some(match (&p.tiles, convjit_jit::tiles_refused()) {
        (Some(t), _) if t.dot => Ok(format!(
            "none, vdpbf16ps (AVX512_BF16, {}): the tile blocking's {M_BLOCK} pixels x \
             {N_BLOCK} channels in zmm accumulators, 16 per pass ({} channel blocks{}), \
             input channel pairs broadcast, {} pairs a tap{}, {} KiB scratch per thread",
            match units {
                Bf16Units::Dot => "asked for",
                _ => "the default on AMD hosts",
            },
            t.n_blocks,
            match t.m_blocks {
                0 => ", 32 pixels of the range at a time".to_string(),
                m => format!(", {m} pixel blocks per output row"),
            },
            (t.red_chunks - 1) * K_CHUNK / 2 + t.tail_pairs,
            match p.groups {
                1 => String::new(),
                g => format!(" of its group's channels ({g} groups)"),
            },
            t.scratch_bytes.div_ceil(1024),
        )),
        (Some(t), _) => Ok(format!(
            "AMX bf16: 2x2 accumulator tiles of {M_BLOCK} pixels x {N_BLOCK} channels \
             ({} channel blocks{}), reduction in chunks of {K_CHUNK} channels ({}), \
             {} KiB scratch per thread{}; \
             estimated {:.0}k cycles per image alone ({:.0}k as f32 code)",
            t.n_blocks,
            match (t.grid, t.m_blocks) {
                (true, _) => format!(
                    ", pixel blocks run along rows of {} positions (padding columns computed, never stored)",
                    t.staged_width
                ),
                (false, 0) => ", 32 pixels of the range at a time".to_string(),
                (false, m) => format!(", {m} pixel blocks per output row"),
            },
            match (t.padded_groups(), t.group_blocks) {
                (true, Some((per_group, _))) => format!(
                    "{} per tap of its group's channels, {} groups of {} input channels each \
                     padded to {} and {per_group} channel blocks{}",
                    t.red_chunks,
                    p.groups,
                    p.ci / p.groups,
                    t.red_chunks * K_CHUNK,
                    match per_group {
                        1 => " (each alone)",
                        n if n % 2 == 1 => " (paired within a group, its last alone)",
                        _ => "",
                    },
                ),
                _ => format!("{} per tap, input channels padded to {}", t.k_chunks, t.cp),
            },
            t.scratch_bytes.div_ceil(1024),
            match t.prefetch_b {
                true => ", weight tiles prefetched two reduction steps ahead",
                false => "",
            },
            cycles(&target),
            cycles(&f32_code),
        )),
        (None, _) if units == Bf16Units::Fma => {
            Err("f32 code on bf16 values: asked for (--bf16-units fma)".into())
        }
        (None, _) if units == Bf16Units::Dot || p.target.dot => Err(format!(
            "f32 code on bf16 values: {}",
            convjit_plan::stage_plan::dot_plan_on(stage, &p.target)
                .err()
                .unwrap_or("not the AVX-512 generator")
        )),
        (None, refused) => {
            let why = refused.unwrap_or_else(|| {
                convjit_plan::stage_plan::tile_plan(stage)
                    .err()
                    .unwrap_or("not the AVX-512 generator")
            });
            // Not on an AMD host: vdpbf16ps was not asked for.
            let dot = match units {
                Bf16Units::Auto => {
                    "; vdpbf16ps only where asked (--bf16-units dot) on \
                                   this non-AMD CPU, where it computes at half the FMAs' rate"
                }
                _ => "",
            };
            Err(format!("f32 code on bf16 values: {why}{dot}"))
        }
    })
}

/// Where the threads of `stage`'s group share its output channels
/// ([`Split::Channels`]), each share's channels and blocking (a share is
/// planned for its own channel count); empty otherwise.
pub fn share_schedules(
    layer: &Layer,
    stage: usize,
    plan: &LayerPlan,
) -> Vec<((usize, usize), Schedule)> {
    let target = convjit_jit::stage_target(
        plan.options.backend,
        plan.options.precision,
        plan.options.bf16_units,
    );
    let s = &layer.stages[stage];
    // The groups are the layer's stages in order: the first that ends at
    // or after `stage` holds it (a lookup, not a scan: `plan` asks for
    // every stage).
    let g = plan.groups.partition_point(|g| g.last < stage);
    plan.groups
        .get(g)
        .filter(|g| g.split == Split::Channels && (g.first..=g.last).contains(&stage))
        .and_then(|g| convjit_plan::stage_plan::channel_shares(s, &target, g.threads))
        .into_iter()
        .flatten()
        .map(|(c0, c1)| {
            let p = convjit_plan::stage_plan::plan_channels(s, &target, c0, c1);
            ((c0, c1), p.sched)
        })
        .collect()
}

/// How `stage`'s weights are packed for the plan's generator
/// ([`convjit_plan::stage_plan::StagePlan::packing`]).
pub fn stage_packing(stage: &Stage, plan: &LayerPlan) -> String {
    let target = convjit_jit::stage_target(
        plan.options.backend,
        plan.options.precision,
        plan.options.bf16_units,
    );
    convjit_plan::stage_plan::plan_for(stage, &target).packing()
}

/// Why [`stage_schedule`] chose that blocking.
pub fn stage_schedule_reason(stage: &Stage, plan: &LayerPlan) -> String {
    let target = convjit_jit::stage_target(
        plan.options.backend,
        plan.options.precision,
        plan.options.bf16_units,
    );
    convjit_plan::stage_plan::schedule_reason_for(stage, &target)
}

/// Refuses a batch of `layer` whose tensors (`copies` of the batch's
/// input and output: a caller may hold several, a reference beside a
/// result) would not fit in memory, before any is made.
pub fn check_batch(layer: &Layer, batch: usize, copies: u64) -> Result<(), DataError> {
    let bytes = (layer.input.len() as u64 + layer.output().len() as u64)
        .checked_mul(batch as u64)
        .and_then(|n| n.checked_mul(4 * copies));
    budget::check(
        format_args!("layer '{}' with batch {batch}", layer.name),
        bytes,
    )
}
pub use convjit_lang::{Diagnostic, Diagnostics, SourceFile};
pub use convjit_npy as npy;
pub use error::Error;

use std::path::Path;

/// Parses and validates `.conv` text; `name` is the file name used in
/// diagnostics.
pub fn parse_layers(name: &str, text: &str) -> Result<Vec<Layer>, Error> {
    convjit_ir::compile_source(text).map_err(|diagnostics| Error::Source {
        file: SourceFile::new(name, text),
        diagnostics,
    })
}

/// The largest `.conv` file read: 4 MiB (a layer of 20,000 stages is
/// about 1 MB, ImageNet models' imported files tens of KB). Larger files,
/// and endless ones (`/dev/zero`), are refused before they fill memory;
/// the syntax tree of a file at the limit takes at most a few hundred MB
/// (about 27 bytes a byte for a file of stages).
pub const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// Reads, parses and validates a `.conv` file (at most [`MAX_SOURCE_BYTES`]).
pub fn load_layers(path: impl AsRef<Path>) -> Result<Vec<Layer>, Error> {
    let path = path.as_ref();
    let bytes =
        convjit_npy::read_limited(path, MAX_SOURCE_BYTES, |_| Ok(())).map_err(DataError::from)?;
    let name = path.display().to_string();
    let text = source_text(&name, bytes)?;
    parse_layers(&path.display().to_string(), &text)
}

/// `.conv` bytes as text; invalid UTF-8 is a diagnostic at the first bad
/// byte (`FILE:LINE:COL: error: invalid UTF-8 byte 0xff`), the line shown
/// with that byte as U+FFFD.
fn source_text(name: &str, bytes: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bad = e.as_bytes()[at];
        // The lossy text keeps the valid prefix byte for byte, so `at` is
        // where the (3-byte) replacement character starts.
        let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
        Error::Source {
            file: SourceFile::new(name, text),
            diagnostics: vec![Diagnostic::new(
                convjit_lang::Span::new(at, at + '\u{FFFD}'.len_utf8()),
                format!("invalid UTF-8 byte 0x{bad:02x}"),
            )
            .with_help(".conv files are UTF-8 text")]
            .into(),
        }
    })
}

/// The layer called `name`, or the only layer when `name` is `None`.
pub fn select_layer(layers: Vec<Layer>, name: Option<&str>) -> Result<Layer, Error> {
    // The first names (cut short): a file of 100,000 layers made a
    // message of 789 KB.
    const SHOWN: usize = 20;
    let names = || {
        let mut list: Vec<String> = layers
            .iter()
            .take(SHOWN)
            .map(
                |l| match l.name.char_indices().nth(convjit_lang::MAX_QUOTED) {
                    Some((cut, _)) => format!("{}...", &l.name[..cut]),
                    None => l.name.clone(),
                },
            )
            .collect();
        if layers.len() > SHOWN {
            list.push(format!("and {} more", layers.len() - SHOWN));
        }
        list.join(", ")
    };
    match name {
        Some(name) => match layers.iter().position(|l| l.name == name) {
            Some(i) => Ok(layers.into_iter().nth(i).expect("index found above")),
            None => Err(Error::NoSuchLayer {
                message: format!(
                    "no layer {} in the file (it has: {})",
                    convjit_lang::quoted(name),
                    names()
                ),
            }),
        },
        None if layers.len() == 1 => Ok(layers.into_iter().next().expect("one layer")),
        None => Err(Error::NoSuchLayer {
            message: format!(
                "the file holds {} layers ({}): choose one with --layer NAME",
                layers.len(),
                names()
            ),
        }),
    }
}

/// Reads a `.npz` weights archive and binds it to `layer` (names and
/// shapes checked before any array is inflated).
pub fn load_weights(layer: &Layer, path: impl AsRef<Path>) -> Result<Weights, Error> {
    let mut npz = convjit_npy::NpzArchive::open(path).map_err(DataError::from)?;
    Ok(Weights::from_npz(layer, &mut npz)?)
}

/// Reads an NHWC `float32 [N, H, W, C]` input for `layer`; returns the
/// values and N.
pub fn load_input(layer: &Layer, path: impl AsRef<Path>) -> Result<(Vec<f32>, usize), Error> {
    let path = path.as_ref();
    let a = convjit_npy::read_npy(path).map_err(DataError::from)?;
    let s = layer.input;
    match a.shape[..] {
        [n, h, w, c] if n >= 1 && [h, w, c] == [s.h, s.w, s.c] => Ok((a.data, n)),
        _ => Err(DataError::tensor(
            path.display().to_string(),
            format!(
                "expected float32 [N, {}, {}, {}] (NHWC, N >= 1) for layer '{}', found {:?}",
                s.h, s.w, s.c, layer.name, a.shape
            ),
        )
        .into()),
    }
}
