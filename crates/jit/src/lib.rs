//! The Cranelift code generator: machine code specialised to one layer.
//!
//! [`Kernel::compile`] plans the layer ([`layer_plan`]: which stages run
//! fused, in row bands of what height, on how many threads) and every stage
//! ([`plan::schedule`]: register blocking), packs the weights into the layout
//! the generated loops read, and JIT-compiles one function per stage or row
//! band of a stage ([`rows`]; [`program`] lists them and the steps that run
//! them):
//!
//! ```text
//! extern "C" fn(input: *const f32, weights: *const f32, output: *mut f32,
//!               residual: *const f32, batch: usize)
//! ```
//!
//! Every size is a compile-time constant except `batch`; the weights are
//! passed by pointer, so the code depends only on the layer's shapes and
//! is cached process-wide: compiling the same layer again (with any
//! weights) reuses it.

mod codegen;
mod exec;
pub mod layer_plan;
pub mod plan;
pub mod program;
pub mod rows;

use convjit_ir::{DataError, Layer, Stage, Weights};
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AbiParam, Signature, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

pub use layer_plan::{Fusion, Group, Host, LayerPlan, Options};
pub use plan::{Schedule, Strategy};

/// Errors of compiling or running a kernel.
#[derive(Debug)]
pub enum JitError {
    /// Weights or buffers that do not fit the layer.
    Data(DataError),
    /// Cranelift could not compile the generated code (a bug or an
    /// unsupported host).
    Codegen(String),
    /// The specialised code would be too large to compile in reasonable
    /// time (very wide kernels, where every output column differs).
    TooLarge(String),
}

impl fmt::Display for JitError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            JitError::Data(e) => e.fmt(f),
            JitError::Codegen(m) => write!(f, "code generation failed: {m}"),
            JitError::TooLarge(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for JitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JitError::Data(e) => Some(e),
            JitError::Codegen(_) | JitError::TooLarge(_) => None,
        }
    }
}

impl From<DataError> for JitError {
    fn from(e: DataError) -> JitError {
        JitError::Data(e)
    }
}

fn codegen_err(e: impl fmt::Display) -> JitError {
    JitError::Codegen(e.to_string())
}

/// How a [`Kernel`] came to be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompileStats {
    /// Seconds spent generating and compiling code (0 on a cache hit).
    pub seconds: f64,
    /// The machine code was reused from an earlier compile of the same shapes.
    pub cache_hit: bool,
}

type StageFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, *const f32, usize);

/// Finalized machine code of one layer: never mutated after construction.
struct Code {
    /// Owns the executable memory; freed on drop.
    module: Option<JITModule>,
    fns: Vec<StageFn>,
    clif: String,
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

/// 64-byte aligned storage for packed weights.
#[derive(Clone)]
#[repr(C, align(64))]
struct Line([f32; 16]);

struct Packed(Vec<Line>);

impl Packed {
    /// A stage's weights packed by `p`, written straight into aligned storage.
    fn new(p: &plan::Plan, w: &convjit_ir::StageWeights) -> Packed {
        let mut lines = vec![Line([0.0; 16]); p.packed_len.div_ceil(16).max(1)];
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]` (64 bytes, the
        // same as its alignment, so no padding): the lines are exactly
        // `16 * len` initialised f32s, borrowed mutably once.
        let flat = unsafe {
            std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<f32>(), lines.len() * 16)
        };
        plan::pack_into(p, &w.weight, w.bias.as_deref(), &mut flat[..p.packed_len]);
        Packed(lines)
    }

    fn ptr(&self) -> *const f32 {
        self.0.as_ptr().cast()
    }
}

/// A layer compiled for the host CPU, with its packed weights.
/// `Send + Sync`: one kernel may run on several threads at once.
pub struct Kernel {
    layer: Layer,
    plan: LayerPlan,
    compiled: Arc<Compiled>,
    /// This kernel's weights, one per slot of `compiled.slots`.
    packed: Vec<Packed>,
    /// Buffers of finished runs, for the next ones (one set per concurrent run).
    scratch: Mutex<Vec<exec::Scratch>>,
    stats: CompileStats,
}

/// What compiling a layer's shapes with some options gives: independent of
/// names and weight values, so shared by every kernel of those shapes.
struct Compiled {
    program: program::Program,
    /// Packed-weight slots: the stage and the plan that packs it (row
    /// bands of one stage usually share one).
    slots: Vec<(usize, plan::Plan)>,
    /// For each function of `program`, its slot.
    slot_of: Vec<usize>,
    code: Code,
}

impl Compiled {
    fn new(
        layer: &Layer,
        layer_plan: &LayerPlan,
        isa: OwnedTargetIsa,
    ) -> Result<Compiled, JitError> {
        let program = program::program(layer, layer_plan);
        let plans: Vec<plan::Plan> = program
            .functions
            .iter()
            .map(|(_, s)| plan::plan(s))
            .collect();
        let mut slots: Vec<(usize, plan::Plan)> = Vec::new();
        let mut slot_of = Vec::new();
        for ((k, _), p) in program.functions.iter().zip(&plans) {
            let same =
                |(j, q): &(usize, plan::Plan)| j == k && plan::pack_key(q) == plan::pack_key(p);
            let i = match slots.iter().position(same) {
                Some(i) => i,
                None => {
                    slots.push((*k, p.clone()));
                    slots.len() - 1
                }
            };
            slot_of.push(i);
        }
        let code = build(&plans, isa)?;
        Ok(Compiled {
            program,
            slots,
            slot_of,
            code,
        })
    }
}

/// The cache key: the stages without names or keys, the planner's
/// options (the host is fixed per process), the ISA.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    stages: Vec<Stage>,
    options: Options,
    isa: String,
}

/// Estimated instructions (see [`plan::code_size`]) beyond which a layer
/// is refused: about a second of compile time.
const MAX_CODE_SIZE: usize = 400_000;

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

/// The host ISA with our flags, built once.
fn isa() -> Result<(OwnedTargetIsa, &'static str), JitError> {
    static ISA: OnceLock<Result<(OwnedTargetIsa, String), String>> = OnceLock::new();
    let r = ISA.get_or_init(|| {
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| {
            f.set(k, v).map_err(|e| format!("setting {k}={v}: {e}"))
        };
        // The e-graph optimiser moves arithmetic below loads in unrolled
        // kernels and causes spills: we emit code in the order we want.
        set(&mut flags, "opt_level", "none")?;
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        let verify = if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        };
        set(&mut flags, "enable_verifier", verify)?;
        let builder = cranelift_native::builder().map_err(|e| e.to_string())?;
        let isa = builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())?;
        let key = format!(
            "{} {} {:?}",
            isa.triple(),
            isa.flags(),
            isa.isa_flags()
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
        );
        Ok((isa, key))
    });
    match r {
        Ok((isa, key)) => Ok((isa.clone(), key.as_str())),
        Err(e) => Err(JitError::Codegen(e.clone())),
    }
}

impl Kernel {
    /// Compile `layer` for the host CPU with packed `weights` (checked
    /// against the layer first), planned by the cost model.
    pub fn compile(layer: &Layer, weights: &Weights) -> Result<Kernel, JitError> {
        Kernel::compile_with(layer, weights, &Options::default())
    }

    /// Compile with planner overrides (no fusion, threads, band height).
    pub fn compile_with(
        layer: &Layer,
        weights: &Weights,
        options: &Options,
    ) -> Result<Kernel, JitError> {
        weights.check(layer)?;
        let start = Instant::now();
        // Planned every time: cheap, and its reasons name this layer's stages.
        let layer_plan = layer_plan::plan_layer(layer, options, &host());
        let (isa, isa_key) = isa()?;
        let key = Key {
            stages: layer.stages.iter().map(anonymous).collect(),
            options: options.clone(),
            isa: isa_key.to_string(),
        };
        let hit = cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let cache_hit = hit.is_some();
        let compiled = match hit {
            Some(c) => c,
            None => {
                let c = Arc::new(Compiled::new(layer, &layer_plan, isa)?);
                let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(key, c.clone());
                c
            }
        };
        let packed = compiled
            .slots
            .iter()
            .map(|(k, p)| Packed::new(p, &weights.stages()[*k]))
            .collect();
        Ok(Kernel {
            layer: layer.clone(),
            plan: layer_plan,
            compiled,
            packed,
            scratch: Mutex::new(Vec::new()),
            stats: CompileStats {
                seconds: if cache_hit {
                    0.0
                } else {
                    start.elapsed().as_secs_f64()
                },
                cache_hit,
            },
        })
    }

    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// Convenience: allocates the output.
    pub fn run_alloc(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, JitError> {
        let n = batch
            .checked_mul(self.layer.output().len())
            .ok_or_else(|| DataError::tensor("output", "batch too large"))?;
        let mut out = vec![0f32; n];
        self.run(input, &mut out, batch)?;
        Ok(out)
    }

    /// The Cranelift IR text of every generated function.
    pub fn clif(&self) -> &str {
        &self.compiled.code.clif
    }

    /// Seconds spent compiling (0 on a cache hit) and whether it was a cache hit.
    pub fn compile_stats(&self) -> CompileStats {
        self.stats
    }

    /// The layer plan: fusion groups, bands, threads, and why.
    pub fn plan(&self) -> &LayerPlan {
        &self.plan
    }

    /// The blocking decisions of each stage.
    pub fn schedules(&self) -> Vec<Schedule> {
        self.layer.stages.iter().map(plan::schedule).collect()
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

/// Declares and defines one function per stage plan in `module` (the JIT's
/// or an object file's), with the signature
/// `(input, weights, output, residual: *const f32 / *mut f32, batch: usize)`.
/// Returns the function ids and the functions' CLIF text.
pub fn define_stages<M: Module>(
    module: &mut M,
    plans: &[plan::Plan],
    name: impl Fn(usize) -> String,
    linkage: Linkage,
) -> Result<(Vec<FuncId>, String), JitError> {
    // Refused before emitting: a very wide kernel would otherwise take
    // minutes (and gigabytes) to generate and compile.
    let size: usize = plans.iter().map(plan::code_size).sum();
    if size > MAX_CODE_SIZE {
        return Err(JitError::TooLarge(format!(
            "the layer would need about {size} instructions of specialised code \
             (limit {MAX_CODE_SIZE}): its kernels are too wide to compile; \
             the interpreter (--engine interp) runs it"
        )));
    }
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let sig = stage_signature(module);
    let mut ids = Vec::new();
    let mut clif = String::new();
    for (i, p) in plans.iter().enumerate() {
        let id = module
            .declare_function(&name(i), linkage, &sig)
            .map_err(codegen_err)?;
        ctx.func.signature = sig.clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            codegen::emit(p, &mut b);
            b.seal_all_blocks();
            b.finalize(module.target_config());
        }
        // Print values rather than the SSA builder's alias chains.
        ctx.func.dfg.resolve_all_aliases();
        clif.push_str(&ctx.func.display().to_string());
        clif.push('\n');
        module
            .define_function(id, &mut ctx)
            .map_err(|e| JitError::Codegen(format!("{e:?}")))?;
        module.clear_context(&mut ctx);
        ids.push(id);
    }
    Ok((ids, clif))
}

/// `(i64 x 5) -> ()` in the module's default calling convention: the
/// stage functions' signature on 64-bit targets.
pub fn stage_signature<M: Module>(module: &M) -> Signature {
    let mut sig = module.make_signature();
    for _ in 0..5 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// A stage without its names, for the cache key.
fn anonymous(s: &Stage) -> Stage {
    Stage {
        name: String::new(),
        weight_key: String::new(),
        bias_key: s.bias_key.as_ref().map(|_| String::new()),
        ..s.clone()
    }
}

fn build(plans: &[plan::Plan], isa: OwnedTargetIsa) -> Result<Code, JitError> {
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let (ids, clif) = define_stages(&mut module, plans, |i| format!("stage{i}"), Linkage::Local)?;
    module.finalize_definitions().map_err(codegen_err)?;
    let fns = ids
        .iter()
        .map(|&id| {
            let ptr = module.get_finalized_function(id);
            // SAFETY: `id` was defined above with the signature
            // (i64 x 5) -> () in the host's default calling convention,
            // which is `extern "C"` with pointer-sized arguments.
            unsafe { std::mem::transmute::<*const u8, StageFn>(ptr) }
        })
        .collect();
    Ok(Code {
        module: Some(module),
        fns,
        clif,
    })
}
