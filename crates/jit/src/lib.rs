//! The kernel runtime: a layer compiled for the host CPU, with its
//! packed weights, run on the host's threads.
//!
//! [`Kernel::compile`] plans the layer ([`layer_plan`]: which stages run
//! fused, in row bands of what height, on how many threads) and every stage
//! ([`stage_plan::plan_for`]: register blocking, packed-weight layout), packs the
//! weights into the layout the generated loops read, has one function per
//! stage written by a generator (`convjit-x86`'s AVX2 or AVX-512 code, or
//! `convjit-cranelift`'s) and installs the bytes in one `JITModule`
//! ([`program`] lists the functions and the steps that run them: whole
//! stages or row bands of them, [`rows`]). Each function is
//!
//! ```text
//! extern "C" fn(input: *const f32, weights: *const f32, output: *mut f32,
//!               residual: *const f32, row0: usize, rows: usize,
//!               scratch: *mut u8)
//! ```
//!
//! computing output rows `row0..row0 + rows` of one image (`scratch`: the
//! calling thread's, for AMX functions, `tiles.rs`). Every size is
//! a compile-time constant except the row range; the weights are passed
//! by pointer, so the code depends only on the layer's shapes and is
//! cached process-wide: compiling the same layer again (with any weights)
//! reuses it. `exec.rs` runs a kernel's steps on its threads, `pool.rs`
//! owns the threads.
//!
//! [`layer_plan`]: convjit_plan::layer_plan
//! [`stage_plan::plan_for`]: convjit_plan::stage_plan::plan_for
//! [`program`]: convjit_plan::program
//! [`rows`]: convjit_plan::rows

mod bf16;
mod exec;
mod network;
mod packed;
mod pairs;
mod peak;
mod pieces;
mod pool;
mod scratch;
mod tiles;
mod winograd;

pub use network::Network;
pub use peak::{bf16_peaks, PeakLoop};
pub use tiles::tiles_refused;
pub use winograd::{winograd_plan, winograd_stages, WinogradPlan};
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

use convjit_cranelift::Machine;
use convjit_ir::separate::Note as SeparationNote;
use convjit_ir::{DataError, Layer, Precision, Separation, Stage, Weights};
use convjit_plan::layer_plan::{self, Host, LayerPlan, Options};
use convjit_plan::limits::{check_stage_count, TooLarge};
use convjit_plan::stage_plan::Bf16Units;
use convjit_plan::{program, stage_plan, Backend, Schedule, Winograd};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

#[cfg(not(feature = "testing"))]
pub(crate) use packed::Aligned;
use packed::Packed;

/// Errors of compiling or running a kernel.
#[derive(Debug)]
pub enum JitError {
    /// Weights or buffers that do not fit the layer.
    Data(DataError),
    /// A code generator (x86 or Cranelift) could not write or compile a
    /// stage function, or the code could not be installed: a bug, or a
    /// host the generator does not support; never the layer's fault.
    Codegen(String),
    /// The specialised code would be too large to compile in reasonable
    /// time (very wide kernels, where every output column differs).
    TooLarge(String),
    /// The host cannot run the code generator asked for.
    Unsupported(String),
    /// A thread of a run panicked (a bug): the run's other threads stopped
    /// instead of waiting for it, the output is incomplete, and the kernel
    /// can run again.
    Panicked(String),
}

impl fmt::Display for JitError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            JitError::Data(e) => e.fmt(f),
            JitError::Codegen(m) => write!(f, "code generation failed: {m}"),
            JitError::TooLarge(m) | JitError::Unsupported(m) => f.write_str(m),
            JitError::Panicked(m) => write!(f, "a kernel thread panicked: {m}"),
        }
    }
}

impl std::error::Error for JitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JitError::Data(e) => Some(e),
            JitError::Codegen(_)
            | JitError::TooLarge(_)
            | JitError::Unsupported(_)
            | JitError::Panicked(_) => None,
        }
    }
}

impl From<DataError> for JitError {
    fn from(e: DataError) -> JitError {
        JitError::Data(e)
    }
}

impl From<TooLarge> for JitError {
    fn from(e: TooLarge) -> JitError {
        JitError::TooLarge(e.0)
    }
}

impl From<convjit_cranelift::Error> for JitError {
    fn from(e: convjit_cranelift::Error) -> JitError {
        match e {
            convjit_cranelift::Error::TooLarge(m) => JitError::TooLarge(m),
            convjit_cranelift::Error::Codegen(m) => JitError::Codegen(m),
        }
    }
}

impl From<convjit_x86::Error> for JitError {
    fn from(e: convjit_x86::Error) -> JitError {
        match e {
            convjit_x86::Error::TooLarge(m) => JitError::TooLarge(m),
            convjit_x86::Error::Encode(m) => JitError::Codegen(m),
        }
    }
}

fn codegen_err(e: impl fmt::Display) -> JitError {
    JitError::Codegen(e.to_string())
}

/// How a [`Kernel`] came to be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompileStats {
    /// Seconds to get the machine code: planning, generating and compiling
    /// it, or on a cache hit the lookup.
    pub seconds: f64,
    /// The machine code was reused from an earlier compile of the same shapes.
    pub cache_hit: bool,
    /// Seconds spent on this kernel's weights: finding rank-1 kernels
    /// (`Options::separate`) and packing them (every compile, hit or not:
    /// the code is shared, the weights are the kernel's own).
    pub pack_seconds: f64,
}

type StageFn =
    unsafe extern "C" fn(*const f32, *const f32, *mut f32, *const f32, usize, usize, *mut u8);

/// Finalized machine code of one layer: never mutated after construction.
struct Code {
    /// Owns the executable memory; freed on drop.
    module: Option<JITModule>,
    fns: Vec<StageFn>,
}

// SAFETY: the module is finalized before `Code` is built and never touched
// again except to free it in `drop` (when no other reference exists); the
// function pointers point at immutable executable memory, and the generated
// functions keep no state, so calling them from several threads is fine.
unsafe impl Send for Code {}
// SAFETY: as above: shared access only reads immutable data.
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: `Code` is dropped only when the last `Arc` (held by
            // kernels or the cache) goes away, so none of its functions can
            // be running or called afterwards.
            unsafe { m.free_memory() };
        }
    }
}

/// A layer compiled for the host CPU, with its packed weights.
/// `Send + Sync`: one kernel may run on several threads at once.
pub struct Kernel {
    layer: Layer,
    options: Options,
    /// Made on first request: a cache hit needs no plan (it is a function
    /// of the stages and options, which the cache key holds).
    plan: OnceLock<LayerPlan>,
    compiled: Arc<Compiled>,
    /// This kernel's weights, packed for each function of the program.
    packed: Vec<Packed>,
    /// Buffers of finished runs, for the next ones (one set per concurrent run).
    scratch: Mutex<Vec<scratch::Scratch>>,
    stats: CompileStats,
    /// Asked for and planned: the layer runs as Winograd's (`winograd/`),
    /// the direct code above only for images where a sum is not finite.
    winograd: Option<winograd::Winograd>,
    /// Asked for, in a layer of several stages: the layer runs as kernels
    /// cut at its 3x3 or 5x5 convs that run as Winograd's (`winograd/chain.rs`).
    chain: Option<winograd::Chain>,
    #[cfg(feature = "testing")]
    testing: testing::Hooks,
}

/// What compiling a layer's shapes with some options gives: independent of
/// names and weight values, so shared by every kernel of those shapes.
struct Compiled {
    program: program::Program,
    /// One per function of `program` (a stage, or a thread's share of its
    /// channels): how it packs its stage's weights, and its CLIF on request.
    plans: Vec<stage_plan::StagePlan>,
    code: Code,
    /// Per function, in bf16: how to round the output it writes for the
    /// stage that reads it (`bf16.rs`); all `None` in f32.
    rounded: Vec<Option<bf16::RoundedOutput>>,
    /// In bf16, unless the first stage runs on tiles: the layer's input
    /// is rounded before the first stage reads it.
    round_input: bool,
    /// Bytes of scratch each thread passes its functions: the most any AMX
    /// function needs (`TilePlan::scratch_bytes`) or any function on channel
    /// pairs converts its input into (`pairs.rs`), else 0.
    tile_scratch: usize,
}

impl Compiled {
    fn new(layer: &Layer, layer_plan: &LayerPlan, backend: Backend) -> Result<Compiled, JitError> {
        Compiled::with_isa(layer, layer_plan, backend, convjit_cranelift::isa()?)
    }

    /// [`Compiled::new`] with Cranelift's target ISA given (it also
    /// owns the executable memory of the x86 generators' code).
    fn with_isa(
        layer: &Layer,
        layer_plan: &LayerPlan,
        backend: Backend,
        isa: OwnedTargetIsa,
    ) -> Result<Compiled, JitError> {
        let (program, mut plans) = function_plans(layer, layer_plan, backend);
        // The program calls a flat stage's function with pixel ranges and
        // any other with rows, deciding on the layer's stage; a plan that
        // disagreed would compute rows past its output.
        for (p, f) in plans.iter().zip(&program.functions) {
            if p.flat != stage_plan::is_flat(&f.stage) {
                return Err(codegen_err(format!(
                    "stage '{}': its plan and the program disagree on pixel ranges",
                    f.stage.name
                )));
            }
        }
        // Functions that convert their input to bf16 themselves.
        let converts: Vec<bool> = plans
            .iter()
            .map(|p| p.tiles.is_some() || p.pairs.is_some() || p.round_input)
            .collect();
        let bf16 = layer_plan.options.precision == Precision::Bf16;
        let mut rounded = match bf16 {
            false => vec![None; program.functions.len()],
            true => bf16::RoundedOutput::of(layer, &program, &converts),
        };
        // A tile function rounds what it stores itself (in its epilogue,
        // while the values are in registers): no pass after the call.
        let reads: Vec<bool> = rounded.iter().map(Option::is_some).collect();
        let still = stage_plan::round_outputs(&mut plans, &reads);
        for (r, still) in rounded.iter_mut().zip(still) {
            if !still {
                *r = None;
            }
        }
        let code = build(&plans, backend, isa)?;
        let round_input = bf16 && !bf16::reads_only_converted(&program, &converts, 0);
        // (A first stage that reads the input rounded on one thread rounds
        // each call's rows into the same scratch: `exec::LazyRound`.)
        let tile_scratch = plans
            .iter()
            .zip(&program.functions)
            .filter_map(|(p, f)| match (&p.tiles, p.pairs) {
                (Some(t), _) => Some(t.scratch_bytes),
                (None, Some(_)) => Some(pairs::scratch_bytes(&f.stage)),
                (None, None) if round_input && f.index == 0 => {
                    Some(exec::LazyRound::scratch_bytes(&f.stage))
                }
                (None, None) => None,
            })
            .max()
            .unwrap_or(0);
        Ok(Compiled {
            program,
            plans,
            code,
            rounded,
            round_input,
            tile_scratch,
        })
    }
}

/// The program of `layer` as `layer_plan` runs it on `backend`
/// (resolved), and one plan per function: a stage, or a thread's share of
/// its output channels (packing only those channels' weights). In bf16,
/// with the option on, the intermediates kept in bf16 are decided and
/// marked in both ([`stage_plan::bf16_intermediates`]).
fn function_plans(
    layer: &Layer,
    layer_plan: &LayerPlan,
    backend: Backend,
) -> (program::Program, Vec<stage_plan::StagePlan>) {
    let mut program = program::program(layer, layer_plan);
    let options = &layer_plan.options;
    let target = stage_target(backend, options.precision, options.bf16_units);
    let mut plans: Vec<stage_plan::StagePlan> =
        program.functions.iter().map(|f| f.plan(&target)).collect();
    stage_plan::mark_streamed_outputs(&mut plans, &program);
    if options.precision == Precision::Bf16 && options.bf16_intermediates {
        let stage_of: Vec<usize> = program.functions.iter().map(|f| f.index).collect();
        program.bf16 = stage_plan::bf16_intermediates(&mut plans, &stage_of, layer.stages.len());
    }
    if options.precision == Precision::Bf16 {
        // A depthwise first stage rounds what it loads: the image is not
        // rounded in a pass first (read from memory and written once more,
        // then read again: the depthwise stage is memory-bound).
        for (p, f) in plans.iter_mut().zip(&program.functions) {
            p.round_input = f.index == 0 && stage_plan::reads_bf16(p);
        }
    }
    (program, plans)
}

/// What the kernel compiled with `layer_plan` keeps in bf16 (what `plan`
/// prints): per stage of `layer`, whether its output is stored as bf16
/// between stages, and whether its first stage rounds the layer's input
/// as it loads it ([`StagePlan::round_input`]). All false in f32.
///
/// [`StagePlan::round_input`]: stage_plan::StagePlan::round_input
pub fn bf16_layout(layer: &Layer, layer_plan: &LayerPlan) -> (Vec<bool>, bool) {
    match Backend::resolve(layer_plan.options.backend) {
        Ok(backend) => {
            let (program, plans) = function_plans(layer, layer_plan, backend);
            (program.bf16, plans.iter().any(|p| p.round_input))
        }
        Err(_) => (vec![false; layer.stages.len()], false),
    }
}

/// The stage plans' target for `backend` (resolved) in `precision`: in
/// bf16 on the AVX-512 generator, AMX tiles where this process may use
/// them ([`tiles_refused`]) and `units` allows, `vdpbf16ps` where `units`
/// asks for it (`Auto`: on an AMD host, see [`Bf16Units`]).
pub fn stage_target(
    backend: Backend,
    precision: Precision,
    units: Bf16Units,
) -> stage_plan::Target {
    // The tile state is asked of Linux only where tiles would be used.
    let wanted = precision == Precision::Bf16
        && backend == Backend::Avx512
        && matches!(units, Bf16Units::Auto | Bf16Units::Tiles);
    stage_plan::Target::planned(
        backend,
        precision,
        units,
        wanted && tiles_refused().is_none(),
    )
}

/// The host the cost model plans `options` for: this machine ([`host`])
/// and, where the plan would use AMX tiles (bf16 on the AVX-512
/// generator), whether this process may ([`tiles_refused`]), so the
/// planner prices the stages the generator puts on tiles as tiles run
/// them ([`stage_target`], the same decision).
pub fn planning_host(options: &Options) -> Host {
    let backend = options.backend.resolve().unwrap_or(Backend::Cranelift);
    Host {
        tiles: stage_target(backend, options.precision, options.bf16_units).tiles,
        ..host()
    }
}

/// The cache key: what the machine code depends on, which is the stages
/// without names and the planner's options (the host and the ISA are
/// fixed per process).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    stages: Vec<StageShape>,
    options: Options,
}

/// A stage without its names.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct StageShape {
    kind: convjit_ir::StageKind,
    input: convjit_ir::Shape,
    output: convjit_ir::Shape,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: convjit_ir::Padding,
    bias: bool,
    activation: convjit_ir::Activation,
    residual: bool,
}

impl StageShape {
    fn of(s: &Stage) -> StageShape {
        StageShape {
            kind: s.kind,
            input: s.input,
            output: s.output,
            kernel: s.kernel,
            stride: s.stride,
            dilation: s.dilation,
            padding: s.padding,
            bias: s.bias_key.is_some(),
            activation: s.activation,
            residual: s.residual,
        }
    }
}

/// Entries kept at most; beyond, the cache starts over (kernels keep their code).
const CACHE_CAPACITY: usize = 256;

fn cache() -> &'static Mutex<HashMap<Key, Arc<Compiled>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<Compiled>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The host's parameters for the cost model, read once.
fn host() -> Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    *HOST.get_or_init(Host::detect)
}

/// The separation `Kernel::compile_with` weighs (`Options::separate`
/// not off): `layer` with its rank-1 stages split, or with
/// `Separation::Rank` its kernels approximated (`convjit_ir::separate`), and
/// the cost model's estimates for it and for `layer` whole; the kernel
/// runs it where [`layer_plan::SeparationCost::runs_separated`] (the
/// estimate wins, or an approximation was asked for). Where no stage
/// splits, the notes on the stages looked at (`Err`). (Sobel's dx and dy, `conv 3x3 -> 2` on a grey image,
/// saves only a third of its MACs separated, and adds a stage: on
/// 1920x1080, AVX2, separated ran 1.44-1.49 ms against 1.60-1.69 whole, as
/// estimated; on AVX-512 the two are within 5%, whole ahead, where the
/// estimate has separated 6% ahead.)
pub fn separation(
    layer: &Layer,
    weights: &Weights,
    options: &Options,
) -> Result<(convjit_ir::Separated, layer_plan::SeparationCost), Vec<SeparationNote>> {
    // Exact separation is exact to f32 rounding; in bf16 the factors,
    // rounded apart, and the rounded intermediate are not the kernel's
    // bf16 product: only a rank asked for (an approximation) runs.
    let how = match (options.precision, options.separate) {
        (Precision::Bf16, Separation::Exact) => Separation::Off,
        (_, how) => how,
    };
    let s = convjit_ir::separate::try_separate(layer, weights, how)?;
    let cost = layer_plan::separation_cost(layer, &s.layer, options, &planning_host(options));
    Ok((s, cost))
}

/// `options` with `Backend::Auto` resolved to the generator it stands for,
/// refused where this host lacks it or it cannot compute the precision.
fn resolved(options: &Options) -> Result<Options, JitError> {
    let options = Options {
        backend: options.backend.resolve().map_err(JitError::Unsupported)?,
        ..options.clone()
    };
    options
        .backend
        .check_precision(options.precision)
        .map_err(JitError::Unsupported)?;
    Ok(options)
}

impl Kernel {
    /// What [`Kernel::compile_with`] would refuse for `layer`'s shapes
    /// alone (its stage count, its estimated code, a generator this host
    /// lacks), found by planning without weights: a caller about to make
    /// gigabytes of random data for a layer refuses first. Where weights
    /// may change the layer compiled (a rank asked for, Winograd), only
    /// the stage count and the generator are checked. `plan`: the layer's
    /// plan with these options where the caller has made it (`convjit
    /// plan` shows it), else it is made here.
    pub fn check_size(
        layer: &Layer,
        options: &Options,
        plan: Option<&LayerPlan>,
    ) -> Result<(), JitError> {
        convjit_ir::check_layer(layer)?;
        check_stage_count(layer)?;
        let options = &resolved(options)?;
        if matches!(options.separate, Separation::Rank(_)) || options.winograd != Winograd::Off {
            return Ok(());
        }
        let planned;
        let layer_plan = match plan {
            Some(p) => p,
            None => {
                planned = layer_plan::plan_layer(layer, options, &planning_host(options));
                &planned
            }
        };
        let (_, plans) = function_plans(layer, layer_plan, options.backend);
        // Named: a caller checks every layer of a file before any runs.
        convjit_plan::limits::check_code_size(&plans)
            .map_err(|e| JitError::TooLarge(format!("layer '{}': {e}", layer.name)))
    }

    /// Compile `layer` for the host CPU with packed `weights` (checked
    /// against the layer first), planned by the cost model.
    pub fn compile(layer: &Layer, weights: &Weights) -> Result<Kernel, JitError> {
        Kernel::compile_with(layer, weights, &Options::default())
    }

    /// Compile with planner overrides (no fusion, threads, band height).
    /// Unless `options.separate` is off, stages whose kernels `weights`
    /// shows to have rank 1 (or, with `Separation::Rank`, every candidate
    /// stage) are first split in two (`convjit_ir::separate`) where the
    /// cost model expects a gain ([`separation`]):
    /// [`Kernel::layer`] is then the rewritten layer.
    pub fn compile_with(
        layer: &Layer,
        weights: &Weights,
        options: &Options,
    ) -> Result<Kernel, JitError> {
        // A hand-built layer (public fields) must be one `lower` could
        // give: generated code trusts its shapes. O(stages).
        convjit_ir::check_layer(layer)?;
        check_stage_count(layer)?;
        weights.check(layer)?;
        // Kernels of rank 1 run as two 1-D stages: the code is that of the
        // rewritten layer, cached by its stages. Looking at the weights is
        // work of this kernel's, timed with packing them.
        let seen = Instant::now();
        let separated = separation(layer, weights, options);
        let (layer, weights) = match &separated {
            Ok((s, cost)) if cost.runs_separated() => (&s.layer, &s.weights),
            _ => (layer, weights),
        };
        let seen = seen.elapsed().as_secs_f64();
        let start = Instant::now();
        // `Auto` and the generator it stands for share cache entries, and
        // so do layers compiled with and without `separate` (the stages
        // say which ran).
        let options = &resolved(options)?;
        if let Some(m) = options.winograd_tile {
            if m != 2 && m != 4 {
                let why = format!("Winograd's output tile is 2 or 4, not {m}");
                return Err(JitError::Unsupported(why));
            }
        }
        let key = Key {
            stages: layer.stages.iter().map(StageShape::of).collect(),
            options: Options {
                separate: Separation::Exact,
                // The direct code is the same either way.
                winograd: Winograd::Off,
                winograd_tile: None,
                ..options.clone()
            },
        };
        let hit = cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let cache_hit = hit.is_some();
        let plan = OnceLock::new();
        let compiled = match hit {
            Some(c) => c,
            None => {
                let layer_plan = layer_plan::plan_layer(layer, options, &planning_host(options));
                let c = Arc::new(Compiled::new(layer, &layer_plan, options.backend)?);
                let _ = plan.set(layer_plan);
                let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(key, c.clone());
                c
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let asked = options.winograd != Winograd::Off && options.precision == Precision::F32;
        // A layer cut into parts runs only them: no direct weights of its own.
        let chain = match asked {
            true => winograd::Chain::new(layer, weights, options)?,
            false => None,
        };
        let packed = match chain {
            Some(_) => Vec::new(),
            None => {
                convjit_ir::budget::check(
                    format_args!("the packed weights of layer '{}'", layer.name),
                    compiled
                        .plans
                        .iter()
                        .try_fold(0u64, |n, p| n.checked_add(p.packed_len as u64 * 4)),
                )?;
                compiled
                    .program
                    .functions
                    .iter()
                    .zip(&compiled.plans)
                    .map(|(f, p)| {
                        let w = weights.stages();
                        let col = f.column.as_ref().map(|_| &w[f.index - 1]);
                        Packed::new(p, &w[f.index], col, options.precision)
                    })
                    .collect()
            }
        };
        let winograd = match asked {
            true => {
                // The direct plan's judgement of what threads pay.
                let groups = &compiled.program.groups;
                let threads = groups.iter().map(|g| g.threads.len()).max().unwrap_or(1);
                winograd::Winograd::new(layer, weights, options, threads)?
            }
            false => None,
        };
        Ok(Kernel {
            layer: layer.clone(),
            options: options.clone(),
            plan,
            compiled,
            packed,
            scratch: Mutex::new(Vec::new()),
            stats: CompileStats {
                seconds,
                cache_hit,
                pack_seconds: seen + start.elapsed().as_secs_f64(),
            },
            winograd,
            chain,
            #[cfg(feature = "testing")]
            testing: Default::default(),
        })
    }

    /// How the layer runs as Winograd's (F(4x4, 3x3), F(2x2, 3x3) or F(2x2, 5x5)), if it does
    /// (`Options::winograd`, [`winograd_plan`]).
    pub fn winograd(&self) -> Option<WinogradPlan> {
        match &self.chain {
            Some(c) => c.plans().first().map(|p| p.1),
            None => self.winograd.as_ref().map(|w| w.plan()),
        }
    }

    /// Bytes of weights this kernel holds, packed for its code: the
    /// direct program's; beside them, a Winograd layer's transformed
    /// weights (the direct code still runs images whose sums are not
    /// finite); a layer cut into parts at its Winograd stages, only the
    /// parts' (`winograd_stages`).
    pub fn weight_bytes(&self) -> usize {
        let own: usize = self.packed.iter().map(|p| p.0.len() * 4).sum();
        let winograd = self.winograd.as_ref().map_or(0, |w| w.weight_bytes());
        let chain = self.chain.as_ref().map_or(0, |c| c.weight_bytes());
        own + winograd + chain
    }

    /// The stages that run as Winograd's, by name, and how (one for a
    /// lone 3x3 conv, any number in a longer layer: [`winograd_stages`]).
    pub fn winograd_stages(&self) -> Vec<(String, WinogradPlan)> {
        match (&self.chain, &self.winograd) {
            (Some(c), _) => c.plans(),
            (None, Some(w)) => vec![(self.layer.stages[0].name.clone(), w.plan())],
            (None, None) => Vec::new(),
        }
    }

    /// The layer this kernel runs: the one compiled, or its rewrite with
    /// rank-1 stages separated (`Options::separate`); same input and output.
    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// Convenience: allocates the output.
    pub fn run_alloc(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, JitError> {
        let n = batch
            .checked_mul(self.layer.output().len())
            .ok_or_else(|| DataError::tensor("output", "batch too large"))?;
        let mut out = convjit_ir::budget::zeroed(
            format_args!(
                "the output of layer '{}' for {batch} images",
                self.layer.name
            ),
            n,
        )?;
        self.run(input, &mut out, batch)?;
        Ok(out)
    }

    /// The Cranelift IR text of every generated function (generated again
    /// on request: compiling does not print it); empty for the other
    /// generators (see [`Kernel::asm`]).
    pub fn clif(&self) -> String {
        if self.options.backend != Backend::Cranelift {
            return String::new();
        }
        convjit_cranelift::clif_text(&self.compiled.plans)
    }

    /// The arithmetic this kernel was compiled for.
    pub fn precision(&self) -> Precision {
        self.options.precision
    }

    /// The code generator that wrote this kernel's code.
    pub fn backend(&self) -> Backend {
        self.options.backend
    }

    /// The disassembly of every generated function (x86 generators:
    /// emitted again on request), one `function N:` section each.
    pub fn asm(&self) -> String {
        let Some(isa) = convjit_x86::Isa::of(self.options.backend) else {
            return String::new();
        };
        let mut text = String::new();
        for (i, p) in self.compiled.plans.iter().enumerate() {
            text.push_str(&format!("function {i}:\n"));
            // A stage's plan may be for a narrower generator (`stage_plan::stage_target`).
            let isa = convjit_x86::Isa::of(p.target.backend).unwrap_or(isa);
            match convjit_x86::emit(p, isa) {
                Ok(code) => text.push_str(&convjit_x86::disassemble(&code)),
                Err(e) => text.push_str(&format!("  ({e})\n")),
            }
        }
        text
    }

    /// Time to get the code and to pack the weights, and whether the code
    /// came from the cache.
    pub fn compile_stats(&self) -> CompileStats {
        self.stats
    }

    /// The layer plan: fusion groups, bands, threads, and why.
    pub fn layer_plan(&self) -> &LayerPlan {
        self.plan.get_or_init(|| {
            layer_plan::plan_layer(&self.layer, &self.options, &planning_host(&self.options))
        })
    }

    /// The blocking decisions of each stage.
    pub fn schedules(&self) -> Vec<Schedule> {
        let target = stage_plan::Target::of(self.options.backend);
        self.layer
            .stages
            .iter()
            .map(|s| stage_plan::schedule_for(s, &target))
            .collect()
    }
}

pub(crate) fn check_len(
    what: &str,
    got: usize,
    batch: usize,
    per_image: usize,
    shape: convjit_ir::Shape,
) -> Result<(), DataError> {
    let want = batch.checked_mul(per_image);
    if want == Some(got) {
        return Ok(());
    }
    Err(DataError::tensor(
        what,
        format!(
            "expected {batch} x {shape} = {} values, found {got}",
            want.map_or("too many".into(), |n| n.to_string())
        ),
    ))
}

/// The machine code of every stage function of `plans`, from the x86
/// generator or Cranelift.
fn machine_code(
    plans: &[stage_plan::StagePlan],
    backend: Backend,
    isa: &OwnedTargetIsa,
) -> Result<Vec<Machine>, JitError> {
    match convjit_x86::Isa::of(backend) {
        Some(x86) => Ok(convjit_x86::x86_stage_code(plans, x86)?
            .into_iter()
            .map(|code| (code, convjit_x86::X86_CODE_ALIGN))
            .collect()),
        None => Ok(convjit_cranelift::compile_all(plans, isa, host().cores)?),
    }
}

fn build(
    plans: &[stage_plan::StagePlan],
    backend: Backend,
    isa: OwnedTargetIsa,
) -> Result<Code, JitError> {
    let machine = machine_code(plans, backend, &isa)?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let sig = convjit_cranelift::stage_signature(&module);
    let mut ids = Vec::new();
    for (i, (bytes, align)) in machine.iter().enumerate() {
        let id = module
            .declare_function(&format!("stage{i}"), Linkage::Local, &sig)
            .map_err(codegen_err)?;
        module
            .define_function_bytes(id, *align, bytes, &[])
            .map_err(codegen_err)?;
        ids.push(id);
    }
    module.finalize_definitions().map_err(codegen_err)?;
    let fns = ids
        .iter()
        .map(|&id| {
            let ptr = module.get_finalized_function(id);
            // SAFETY: `id` was defined above with the signature
            // (i64 x 7) -> () in the host's default calling convention,
            // which is `extern "C"` with pointer-sized arguments.
            unsafe { std::mem::transmute::<*const u8, StageFn>(ptr) }
        })
        .collect();
    Ok(Code {
        module: Some(module),
        fns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::{compile_source, interpret, Rng};
    use convjit_plan::limits::MAX_STAGES;
    use cranelift_codegen::settings::{self, Configurable};

    /// A layer of more than `MAX_STAGES` stages is refused with the
    /// reason, and one of as many compiles or is refused for its code.
    #[test]
    fn a_layer_of_too_many_stages_is_refused_with_the_reason() {
        let layer = |n: usize| {
            let stages: String = (0..n).map(|i| format!(" s{i}: depthwise 1x1\n")).collect();
            compile_source(&format!("layer many {{ input 1x1x1\n{stages} }}"))
                .unwrap()
                .remove(0)
        };
        let l = layer(MAX_STAGES + 1);
        let Err(JitError::TooLarge(m)) = Kernel::compile(&l, &Weights::random(&l, 1)) else {
            panic!("a layer of {} stages compiled", MAX_STAGES + 1)
        };
        assert!(
            m.starts_with("layer 'many' has 4001 stages: more than 4000 never compile (each stage is a function of at least 100 instructions"),
            "{m}"
        );
        // At the limit the stage count passes, and the code size decides.
        let l = layer(MAX_STAGES);
        assert!(check_stage_count(&l).is_ok());
        let Err(JitError::TooLarge(m)) = Kernel::compile(&l, &Weights::random(&l, 1)) else {
            panic!("4000 depthwise stages fit in the code size")
        };
        assert!(m.contains("instructions of specialised code"), "{m}");
        // The same refusal, naming the layer.
        assert_eq!(
            Kernel::check_size(&l, &Options::default(), None)
                .unwrap_err()
                .to_string(),
            format!("layer 'many': {m}")
        );
        let l = layer(MAX_STAGES + 1);
        assert!(Kernel::check_size(&l, &Options::default(), None).is_err());
    }

    /// `check_size` refuses a kernel too wide to compile from its shapes
    /// alone (no weights made: 16384^2 of them would be 1 GiB), and
    /// passes what compiles.
    #[test]
    fn check_size_refuses_before_weights_exist() {
        let src = "layer wide { input 16384x16384x1\n c: conv 16384x16384 -> 1, pad same }\n\
                   layer small { input 8x8x4\n c: conv 3x3 -> 8 }";
        let layers = compile_source(src).unwrap();
        let o = Options::default();
        let Err(JitError::TooLarge(m)) = Kernel::check_size(&layers[0], &o, None) else {
            panic!("a 16384x16384 kernel passed the size check")
        };
        assert!(m.contains("instructions of specialised code"), "{m}");
        assert!(Kernel::check_size(&layers[1], &o, None).is_ok());
        let l = &layers[1];
        assert!(Kernel::compile_with(l, &Weights::random(l, 1), &o).is_ok());
    }

    /// The host ISA with FMA switched off, as on x86 CPUs without it.
    fn isa_without_fma() -> OwnedTargetIsa {
        let mut flags = settings::builder();
        flags.set("opt_level", "none").unwrap();
        flags.set("is_pic", "false").unwrap();
        let mut builder = cranelift_native::builder().unwrap();
        if builder.triple().architecture.to_string() == "x86_64" {
            builder.set("has_fma", "false").unwrap();
        }
        builder.finish(settings::Flags::new(flags)).unwrap()
    }

    /// Without FMA, vector `fma` would become calls of `fmaf` (and the
    /// compile would fail: "a stage function needs relocations"); the
    /// generator emits a multiply and an add, which compile and run right.
    #[test]
    fn compiles_and_runs_without_fma() {
        let isa = isa_without_fma();
        if isa.name() == "x64" {
            assert!(!convjit_cranelift::fused_fma(&*isa));
        }
        for body in [
            "input 6x7x5\n d: depthwise 3x3, pad same, bias, relu6",
            "input 5x6x9\n d: depthwise 3x3, multiplier 2, stride 2, pad same",
            "input 5x6x7\n c: conv 3x3 -> 9, pad same, bias\n p: pointwise 5, relu",
        ] {
            let l = compile_source(&format!("layer l {{ {body} }}"))
                .unwrap()
                .remove(0);
            let options = Options {
                backend: Backend::Cranelift,
                ..Options::default()
            };
            let lp = layer_plan::plan_layer(&l, &options, &host());
            let compiled =
                Arc::new(Compiled::with_isa(&l, &lp, Backend::Cranelift, isa.clone()).unwrap());
            let w = Weights::random(&l, 3);
            let packed = compiled
                .program
                .functions
                .iter()
                .zip(&compiled.plans)
                .map(|(f, p)| Packed::new(p, &w.stages()[f.index], None, Precision::F32))
                .collect();
            let k = Kernel {
                layer: l.clone(),
                options,
                plan: OnceLock::new(),
                compiled,
                packed,
                scratch: Mutex::new(Vec::new()),
                stats: CompileStats {
                    seconds: 0.0,
                    cache_hit: false,
                    pack_seconds: 0.0,
                },
                winograd: None,
                chain: None,
                #[cfg(feature = "testing")]
                testing: Default::default(),
            };
            let x = Rng::new(4).vec(2 * l.input.len(), 1.0);
            let got = k.run_alloc(&x, 2).unwrap();
            let want = interpret(&l, &w, &x, 2).unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{body}: {a} vs {b}"
                );
            }
        }
    }
}
