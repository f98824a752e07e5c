//! The portable code generator: a stage plan as Cranelift IR, compiled by
//! Cranelift to machine code for its target (128-bit vectors; AArch64,
//! and any x86 without AVX2+FMA). The x86 generators (`convjit-x86`)
//! write the same stage functions directly; the JIT (`convjit-jit`) and
//! the AOT builder (`convjit-aot`) install either's code.
//!
//! Every stage function is
//!
//! ```text
//! extern "C" fn(input: *const f32, weights: *const f32, output: *mut f32,
//!               residual: *const f32, row0: usize, rows: usize)
//! ```
//!
//! computing output rows `row0..row0 + rows` of one image (see
//! `codegen.rs`). For the JIT: [`compile_all`] (machine code, no
//! relocations, on several threads), [`clif_text`] on request; for any
//! other `cranelift_module::Module` (an object file): [`define_stages`].
#![forbid(unsafe_code)]

mod codegen;

use convjit_plan::limits::{check_code_size, TooLarge};
use convjit_plan::stage_plan::{self, StagePlan};
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AbiParam, Signature, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// Why Cranelift made no code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The layer would need too much code (`convjit_plan::limits`).
    TooLarge(String),
    /// Cranelift could not build the ISA or compile a function (a bug, or
    /// a host or operation it does not support).
    Codegen(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::TooLarge(m) | Error::Codegen(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<TooLarge> for Error {
    fn from(e: TooLarge) -> Error {
        Error::TooLarge(e.0)
    }
}

fn codegen_err(e: impl fmt::Display) -> Error {
    Error::Codegen(e.to_string())
}

/// Integer parameters of a stage function (see `codegen.rs`): the six
/// every generator reads and `scratch`, which only the x86 generator's
/// AMX functions use (one signature for all, so the runtime and objects
/// call any function the same way).
const STAGE_PARAMS: usize = 7;

/// The host ISA with our flags, built once.
pub fn isa() -> Result<OwnedTargetIsa, Error> {
    static ISA: OnceLock<Result<OwnedTargetIsa, String>> = OnceLock::new();
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
        builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())
    });
    r.clone().map_err(Error::Codegen)
}

/// Declares and defines one function per stage plan in `module` (the JIT's
/// or an object file's), with the signature
/// `(input, weights, output, residual: *const f32 / *mut f32, row0, rows: usize)`.
/// Returns the function ids; appends the functions' CLIF text to `clif` if
/// given (printing costs a fifth of the compile time, so the JIT does not).
pub fn define_stages<M: Module>(
    module: &mut M,
    plans: &[StagePlan],
    name: impl Fn(usize) -> String,
    linkage: Linkage,
    mut clif: Option<&mut String>,
) -> Result<Vec<FuncId>, Error> {
    check_code_size(plans)?;
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let sig = stage_signature(module);
    let mut ids = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let id = module
            .declare_function(&name(i), linkage, &sig)
            .map_err(codegen_err)?;
        ctx.func.signature = sig.clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        // Always `fma`: an object for x86 without FMA calls `fmaf` (its
        // header says to link libm), keeping results fused.
        emit_function(&mut ctx.func, &mut fctx, p, module.target_config(), true);
        if let Some(text) = clif.as_deref_mut() {
            text.push_str(&ctx.func.display().to_string());
            text.push('\n');
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| Error::Codegen(format!("{e:?}")))?;
        module.clear_context(&mut ctx);
        ids.push(id);
    }
    Ok(ids)
}

/// Builds the body of one stage function into `func` (signature set).
fn emit_function(
    func: &mut cranelift_codegen::ir::Function,
    fctx: &mut FunctionBuilderContext,
    p: &StagePlan,
    config: cranelift_codegen::isa::TargetFrontendConfig,
    fused: bool,
) {
    let mut b = FunctionBuilder::new(func, fctx);
    codegen::emit(p, &mut b, fused);
    b.seal_all_blocks();
    b.finalize(config);
    // Print values rather than the SSA builder's alias chains.
    func.dfg.resolve_all_aliases();
}

/// Whether `isa` lowers a vector `fma` to one instruction. Cranelift's x64
/// backend needs the FMA extension for that and otherwise calls `fmaf`,
/// which JIT code cannot link (nor would it be fast): there the generator
/// emits a multiply and an add (rounded twice, within the tests'
/// tolerance). Other targets (aarch64) always have a fused multiply-add.
pub fn fused_fma(isa: &dyn cranelift_codegen::isa::TargetIsa) -> bool {
    isa.name() != "x64"
        || isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_fma" && f.as_bool() == Some(true))
}

/// The CLIF text of the stage functions of `plans`, as the JIT compiles
/// them for the host (functions `u0:0`, `u0:1`, ... in order); empty if
/// Cranelift does not support the host.
pub fn clif_text(plans: &[StagePlan]) -> String {
    let Ok(isa) = isa() else {
        return String::new();
    };
    let sig = host_signature(&isa);
    let mut fctx = FunctionBuilderContext::new();
    let mut text = String::new();
    for (i, p) in plans.iter().enumerate() {
        // A name, not an offset: i < the layer's stages, far below 2^32.
        let mut func = cranelift_codegen::ir::Function::with_name_signature(
            UserFuncName::user(0, i as u32),
            sig.clone(),
        );
        emit_function(
            &mut func,
            &mut fctx,
            p,
            isa.frontend_config(),
            fused_fma(&*isa),
        );
        text.push_str(&func.display().to_string());
        text.push('\n');
    }
    text
}

/// `(i64 x 6) -> ()` in the module's default calling convention: the
/// stage functions' signature on 64-bit targets.
pub fn stage_signature<M: Module>(module: &M) -> Signature {
    let mut sig = module.make_signature();
    sig.params = vec![AbiParam::new(I64); STAGE_PARAMS];
    sig
}

/// [`stage_signature`] for an ISA's default calling convention.
fn host_signature(isa: &OwnedTargetIsa) -> Signature {
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params = vec![AbiParam::new(I64); STAGE_PARAMS];
    sig
}

/// Estimated instructions below which a layer's functions are compiled on
/// the calling thread alone: a thread costs tens of microseconds, and
/// Cranelift about 2-3 us per instruction here.
const PARALLEL_CODE_SIZE: usize = 500;

thread_local! {
    /// Cranelift's contexts, kept between compiles on this thread: they
    /// own the compiler's (register allocator's) working memory, which a
    /// fresh context allocates again.
    static COMPILER: std::cell::RefCell<(cranelift_codegen::Context, FunctionBuilderContext)> =
        std::cell::RefCell::new((cranelift_codegen::Context::new(), FunctionBuilderContext::new()));
}

/// Machine code of one stage function and its alignment (bytes).
pub type Machine = (Vec<u8>, u64);

/// Compiles the stage functions of `plans` to machine code for `isa`, on
/// up to `threads` threads (the host's cores: the functions of a fused
/// layer, e.g. its row bands, are independent), largest first. The bytes
/// need no relocation: they reference nothing outside themselves.
pub fn compile_all(
    plans: &[StagePlan],
    isa: &OwnedTargetIsa,
    threads: usize,
) -> Result<Vec<Machine>, Error> {
    check_code_size(plans)?;
    let sizes: Vec<usize> = plans.iter().map(stage_plan::code_size).collect();
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let threads = if sizes.iter().sum::<usize>() < PARALLEL_CODE_SIZE {
        1
    } else {
        threads.clamp(1, plans.len().max(1))
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = Mutex::new(vec![None; plans.len()]);
    let work = || -> Result<(), Error> {
        COMPILER.with(|c| {
            let (ctx, fctx) = &mut *c.borrow_mut();
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&i) = order.get(k) else {
                    return Ok(());
                };
                let m = compile_one(ctx, fctx, &plans[i], isa)?;
                done.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(m);
            }
        })
    };
    if threads == 1 {
        work()?;
    } else {
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mut r = work();
            for h in helpers {
                let hr = h
                    .join()
                    .unwrap_or_else(|_| Err(codegen_err("compiler thread panicked")));
                r = r.and(hr);
            }
            r
        })?;
    }
    let done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(done.into_iter().flatten().collect())
}

/// One stage function's machine code. Our functions reference nothing
/// outside themselves (constants live in the function's own pool), so the
/// bytes need no relocation.
fn compile_one(
    ctx: &mut cranelift_codegen::Context,
    fctx: &mut FunctionBuilderContext,
    p: &StagePlan,
    isa: &OwnedTargetIsa,
) -> Result<Machine, Error> {
    ctx.clear();
    ctx.func.signature = host_signature(isa);
    emit_function(
        &mut ctx.func,
        fctx,
        p,
        isa.frontend_config(),
        fused_fma(&**isa),
    );
    let code = ctx
        .compile(&**isa, &mut Default::default())
        .map_err(|e| Error::Codegen(format!("{:?}", e.inner)))?;
    if !code.buffer.relocs().is_empty() {
        return Err(codegen_err("a stage function needs relocations"));
    }
    Ok((code.code_buffer().to_vec(), code.buffer.alignment as u64))
}
