//! Ahead-of-time compilation: one layer as an ELF object file plus a C
//! header (`convjit build`).
//!
//! The object holds one stage function per stage (local symbols, the same
//! code the JIT runs): on x86_64 the machine code of convjit's AVX2 or
//! AVX-512 generator ([`convjit_x86::x86_stage_code`], defined with
//! `define_function_bytes`), or Cranelift's ([`convjit_cranelift::define_stages`];
//! always on aarch64). [`choice`] says which, from the target, the CPU level
//! ([`Cpu`]) and the [`Backend`] asked for; the stage plans, and so the
//! packed weights, are made for that generator. The exported functions are
//! written here in Cranelift IR (they are not hot):
//!
//! - with weights ([`BuildOptions::weights`]): the packed weights are baked
//!   into `.rodata` (64-byte aligned) and the object exports
//!   `int convjit_LAYER(const float *input, float *output, size_t batch);`
//! - without: the object exports
//!   `int convjit_LAYER_pack(const float *const arrays[], float *packed);`,
//!   which copies the TensorFlow-layout arrays into the packed layout
//!   by loops over a short table of copies in `.rodata` (the stages'
//!   [`stage_plan::StagePlan::pack_copies`]: a few per run, whatever the kernel
//!   size), and
//!   `int convjit_LAYER(const float *packed, const float *input, float *output, size_t batch);`.
//!
//! The entry point processes the batch image by image: stage `i` reads the
//! previous stage's output and writes the next; intermediates live in one
//! `malloc`ed block of two buffers (stages alternate between them), sized
//! for one image, freed before returning. No global mutable state: the
//! functions are reentrant. Return codes: 0 success, 1 `malloc` failed,
//! 2 a NULL pointer. The generated header documents all of this for C.
#![forbid(unsafe_code)]

pub mod choice;
pub mod facts;
mod header;
mod record;
pub mod verify;
mod wrapper;

pub use choice::Cpu;

use convjit_ir::{DataError, Layer, Weights};
use convjit_plan::limits::{check_stage_count, TooLarge};
use convjit_plan::{stage_plan, Backend};
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_module::{DataDescription, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use std::fmt;
use std::str::FromStr;
use target_lexicon::{Architecture, BinaryFormat, OperatingSystem, PointerWidth, Triple};

/// The target triples [`build`] accepts (besides `None`, the host).
pub const SUPPORTED_TARGETS: &[&str] = &["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// A target triple (see [`SUPPORTED_TARGETS`]); `None` (or `"host"`)
    /// is the host, with the host CPU's features (like `-march=native`).
    /// An explicit `x86_64` triple targets x86-64-v3 (AVX2 + FMA) unless
    /// [`BuildOptions::cpu`] says otherwise; an explicit `aarch64` triple the
    /// base ARMv8-A (NEON). Other Linux ELF triples of these two
    /// architectures (e.g. `-linux-musl`) work too.
    pub target: Option<String>,
    /// Weights to bake into the object; `None` builds the variant that
    /// takes packed weights at run time.
    pub weights: Option<Weights>,
    /// The x86-64 level (x86_64 targets only; see [`choice`]); `None`: the
    /// host's CPU for a host build, else the level `backend` implies
    /// (x86-64-v3 unless it is `Avx512`).
    pub cpu: Option<Cpu>,
    /// The stage functions' code generator; `Auto`: the widest the level
    /// has (Cranelift on aarch64).
    pub backend: Backend,
    /// The arithmetic (see `convjit_ir::Precision`); bf16 needs a level
    /// with AVX512_BF16 ([`choice`]).
    pub precision: convjit_ir::Precision,
}

/// What [`build`] returns in [`Artifact::object`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// An ELF relocatable object.
    Object,
    /// The Cranelift IR of every function Cranelift compiles, as text
    /// (the x86 generators' stage functions are named, with a note).
    Clif,
    /// The machine code of every function as text: the x86 generators'
    /// disassembly (Intel syntax), Cranelift's VCode listing (after
    /// register allocation) for the functions Cranelift compiles.
    Asm,
}

/// The result of [`build`].
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The object file, or the CLIF / assembly text (UTF-8).
    pub object: Vec<u8>,
    /// The C header declaring the exported function(s).
    pub header: String,
    /// The exported kernel function: `convjit_LAYER`.
    pub symbol: String,
    /// The generator of the stage functions: `Cranelift`, `Avx2` or `Avx512`.
    pub generator: Backend,
    /// The x86-64 level the object was built for (`None`: aarch64).
    pub cpu: Option<Cpu>,
    /// Whether some stage runs on AMX tiles (the object then asks Linux
    /// for the tile state when it runs).
    pub tiles: bool,
}

/// Why [`build`] failed.
#[derive(Debug)]
pub enum AotError {
    /// The target triple is unknown or unsupported.
    Target(String),
    /// Options that contradict each other or the target (e.g. `--cpu` for
    /// aarch64, AVX-512 at x86-64-v3).
    Usage(String),
    /// The host cannot run the code generator named for it (`native`).
    Host(String),
    /// The precision asked for needs instructions the CPU (named, or the
    /// host's) or the generator does not have: bf16 without AVX512_BF16.
    Precision(String),
    /// The layer cannot be built (no stages, too large for the tables).
    Layer(String),
    /// The weights do not fit the layer.
    Data(DataError),
    /// A code generator (x86 or Cranelift) could not write or compile a
    /// stage function, or the object could not be written: a bug, or an
    /// operation the target does not lower; never the layer's fault.
    Codegen(String),
}

impl fmt::Display for AotError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            AotError::Target(m) | AotError::Usage(m) | AotError::Host(m) => write!(f, "{m}"),
            AotError::Precision(m) => write!(f, "{m}"),
            AotError::Layer(m) => write!(f, "{m}"),
            AotError::Data(e) => e.fmt(f),
            AotError::Codegen(m) => write!(f, "code generation failed: {m}"),
        }
    }
}

impl std::error::Error for AotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AotError::Data(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DataError> for AotError {
    fn from(e: DataError) -> AotError {
        AotError::Data(e)
    }
}

impl From<TooLarge> for AotError {
    fn from(e: TooLarge) -> AotError {
        AotError::Layer(e.0)
    }
}

impl From<convjit_cranelift::Error> for AotError {
    fn from(e: convjit_cranelift::Error) -> AotError {
        match e {
            convjit_cranelift::Error::TooLarge(m) => AotError::Layer(m),
            convjit_cranelift::Error::Codegen(m) => AotError::Codegen(m),
        }
    }
}

impl From<convjit_x86::Error> for AotError {
    fn from(e: convjit_x86::Error) -> AotError {
        match e {
            convjit_x86::Error::TooLarge(m) => AotError::Layer(m),
            convjit_x86::Error::Encode(m) => AotError::Codegen(m),
        }
    }
}

pub(crate) fn cg_err(e: impl fmt::Debug) -> AotError {
    AotError::Codegen(format!("{e:?}"))
}

/// Alignment (bytes) of the baked weights and of each stage's part of the
/// packed buffer. The generated code does not need it (its loads carry no
/// alignment flag); it keeps vectors within cache lines, as the JIT does.
pub const PACK_ALIGN: usize = 64;
const PACK_ALIGN_FLOATS: usize = PACK_ALIGN / 4;

/// The packed weights of all stages, one after the other, each stage at a
/// multiple of [`PACK_ALIGN`] bytes.
pub(crate) struct PackLayout {
    /// Float offset and packed length of each stage.
    pub stages: Vec<(usize, usize)>,
    /// Total floats, a multiple of 16.
    pub total: usize,
}

impl PackLayout {
    fn new(lens: impl Iterator<Item = usize>) -> PackLayout {
        let mut stages = Vec::new();
        let mut off = 0;
        for len in lens {
            stages.push((off, len));
            off += len.div_ceil(PACK_ALIGN_FLOATS) * PACK_ALIGN_FLOATS;
        }
        PackLayout { stages, total: off }
    }
}

/// The packing function of a build without weights: `convjitpack_LAYER`.
/// Any name `convjit_..._pack` is also the run function of some layer
/// (`convjit_L_pack` of layer `L_pack`), so the two families differ in
/// their prefix.
pub fn pack_symbol(ident: &str) -> String {
    format!("convjitpack_{ident}")
}

/// A valid C identifier from a layer name (the language's names already
/// are; anything else is replaced by `_`).
pub fn c_identifier(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

/// The target: its ISA (with our flags), the generator of its stage
/// functions, and a description for the header.
pub(crate) struct Target {
    pub isa: OwnedTargetIsa,
    pub triple: Triple,
    /// The enabled ISA features, e.g. `has_avx has_fma`.
    pub features: String,
    /// Vector `fma` lowers to calls of `fmaf` (x86-64 without FMA).
    pub fma_libcall: bool,
    /// Who writes the stage functions, and the x86-64 level.
    pub choice: choice::Choice,
}

fn supported_list() -> String {
    format!(
        "supported targets: {} (default: the host)",
        SUPPORTED_TARGETS.join(", ")
    )
}

fn check_triple(triple: &Triple, what: &str) -> Result<(), AotError> {
    let bad = |why: String| Err(AotError::Target(format!("{why}; {}", supported_list())));
    if triple.pointer_width() != Ok(PointerWidth::U64) {
        return bad(format!(
            "{what} '{triple}' is not a 64-bit target: the generated code passes \
             pointers and sizes as 64-bit integers"
        ));
    }
    let arch_ok = matches!(
        triple.architecture,
        Architecture::X86_64 | Architecture::Aarch64(target_lexicon::Aarch64Architecture::Aarch64)
    );
    if !arch_ok {
        return bad(format!(
            "{what} '{triple}': architecture '{}' is not supported",
            triple.architecture
        ));
    }
    if triple.binary_format != BinaryFormat::Elf
        || triple.operating_system != OperatingSystem::Linux
    {
        return bad(format!(
            "{what} '{triple}': only Linux ELF objects are supported"
        ));
    }
    Ok(())
}

/// Parses and checks `target`, chooses the generator and level
/// ([`choice::choose`]) and builds the ISA for that level.
pub(crate) fn target(
    target: Option<&str>,
    cpu: Option<Cpu>,
    backend: Backend,
    precision: convjit_ir::Precision,
) -> Result<Target, AotError> {
    let target = target.filter(|t| !matches!(*t, "host" | "native"));
    let triple = match target {
        None => {
            let triple = Triple::host();
            check_triple(&triple, "the host")?;
            triple
        }
        Some(t) => {
            let triple = Triple::from_str(t).map_err(|e| {
                AotError::Target(format!("unknown target '{t}' ({e}); {}", supported_list()))
            })?;
            check_triple(&triple, "target")?;
            triple
        }
    };
    let x86_64 = triple.architecture == Architecture::X86_64;
    let choice = choice::choose(x86_64, target.is_none(), cpu, backend, precision)?;
    let mut builder = cranelift_codegen::isa::lookup(triple.clone())
        .map_err(|e| AotError::Target(format!("target '{triple}': {e}; {}", supported_list())))?;
    let native = || AotError::Target("the host is not supported by Cranelift".into());
    match choice.cpu {
        // A host build for aarch64: the host's features, as before levels.
        None if target.is_none() => {
            cranelift_native::infer_native_flags(&mut builder).map_err(|_| native())?
        }
        None => {}
        Some(Cpu::Native) => {
            cranelift_native::infer_native_flags(&mut builder).map_err(|_| native())?
        }
        Some(level) => {
            // The named CPUs are x86-64-v4 to Cranelift: the wrapper and
            // packing functions use nothing of bf16 or AMX.
            let preset = match level.has_avx512() {
                true => Cpu::X86_64V4,
                false => Cpu::X86_64V3,
            };
            builder.enable(preset.name()).map_err(cg_err)?;
            // AVX itself is no part of Cranelift's presets but of v3; nor
            // AVX-512F (the presets' v4 names only DQ and VL).
            builder.enable("has_avx").map_err(cg_err)?;
            if preset == Cpu::X86_64V4 {
                builder.enable("has_avx512f").map_err(cg_err)?;
            }
        }
    }
    let mut flags = settings::builder();
    for (k, v) in [
        // As the JIT: the code generator emits instructions in the order it wants.
        ("opt_level", "none"),
        ("is_pic", "true"),
        ("use_colocated_libcalls", "false"),
        ("enable_verifier", "true"),
    ] {
        flags
            .set(k, v)
            .map_err(|e| AotError::Codegen(format!("setting {k}={v}: {e}")))?;
    }
    let isa = builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| AotError::Codegen(e.to_string()))?;
    let on: Vec<String> = isa
        .isa_flags()
        .iter()
        .filter(|v| v.as_bool() == Some(true))
        .map(|v| v.name.to_string())
        .collect();
    let fma_libcall =
        isa.triple().architecture == Architecture::X86_64 && !on.iter().any(|f| f == "has_fma");
    Ok(Target {
        triple: isa.triple().clone(),
        features: match (on.is_empty(), isa.triple().architecture) {
            (false, _) => on.join(" "),
            (true, Architecture::X86_64) => "baseline x86-64".into(),
            (true, _) => "baseline ARMv8-A with NEON".into(),
        },
        fma_libcall,
        isa,
        choice,
    })
}

/// Compiles `layer` for `opts.target` and returns the object (or its text
/// forms, see [`Emit`]) and its C header.
pub fn build(layer: &Layer, opts: &BuildOptions, emit: Emit) -> Result<Artifact, AotError> {
    check_buildable(layer, opts)?;
    let target = target(
        opts.target.as_deref(),
        opts.cpu,
        opts.backend,
        opts.precision,
    )?;
    let ident = c_identifier(&layer.name);
    let symbol = format!("convjit_{ident}");
    let generator = target.choice.generator;
    let precision = target.choice.precision;
    let x86 = convjit_x86::Isa::of(generator);
    let mut plans = stage_plans(layer, x86, (target.choice.tiles, target.choice.dot))?;
    // The tile state is asked for where a stage runs on AMX (not on
    // `vdpbf16ps`, which has the same plan).
    let tiles = plans
        .iter()
        .any(|p| p.tiles.as_ref().is_some_and(|t| !t.dot));
    if precision == convjit_ir::Precision::Bf16 {
        // A tile stage whose output a non-tile stage multiplies rounds it
        // as it stores it (the wrapper rounds the others' outputs).
        let reads: Vec<bool> = (0..plans.len())
            .map(|i| plans.get(i + 1).is_some_and(|next| next.tiles.is_none()))
            .collect();
        stage_plan::round_outputs(&mut plans, &reads);
        // A tile stage, or a direct one that stores whole vectors, read by
        // a many-channel depthwise stage stores bf16 (the wrapper's
        // buffers follow the plans: `wrapper::Scratch`).
        let n = plans.len();
        stage_plan::bf16_intermediates(&mut plans, &(0..n).collect::<Vec<_>>(), n);
    }

    // No `.eh_frame` (`unwind_info`): cranelift-object 0.135 writes it with
    // absolute relocations, which make PIE executables need text relocations.
    let builder = ObjectBuilder::new(
        target.isa.clone(),
        format!("{symbol}.o"),
        cranelift_module::default_libcall_names(),
    )
    .map_err(cg_err)?;
    let mut module = record::Recording::new(ObjectModule::new(builder), emit == Emit::Asm);
    let mut texts = Texts::default();
    let stage_ids = define_stage_functions(&mut module, &plans, x86, &symbol, emit, &mut texts)?;
    let helpers = define_helpers(&mut module, precision, tiles, &symbol, &mut texts)?;
    let facts = facts::Facts::of(layer, opts.weights.is_some(), precision);
    define_rodata(&mut module, &format!("{symbol}_facts"), facts.bytes())?;
    let (layout, weights_source) = match &opts.weights {
        Some(w) => bake_weights(&mut module, &plans, w, &symbol, precision)?,
        None => define_packing(
            &mut module,
            layer,
            &plans,
            (&ident, &symbol),
            precision,
            &mut texts,
        )?,
    };
    let entry = wrapper::define_entry(
        &mut module,
        &wrapper::EntrySpec {
            symbol: &symbol,
            layer,
            plans: &plans,
            stages: &stage_ids,
            helpers,
            layout: &layout,
            source: &weights_source,
            precision,
        },
    )?;
    texts.clif.push_str(&entry.clif);

    let header = header::header(
        layer,
        &ident,
        &target,
        (&layout, opts.weights.is_some()),
        &entry.scratch,
        tiles,
    );
    let clif = name_functions(&module, &texts.clif);
    let (module, asm) = module.into_parts();
    let object = match emit {
        Emit::Clif => clif.into_bytes(),
        Emit::Asm => (texts.x86_asm + &asm.unwrap_or_default()).into_bytes(),
        Emit::Object => {
            // cranelift-object marks the stack non-executable (.note.GNU-stack).
            let product = module.finish();
            product.emit().map_err(cg_err)?
        }
    };
    Ok(Artifact {
        object,
        header,
        symbol,
        generator,
        cpu: target.choice.cpu,
        tiles,
    })
}

/// The text forms [`build`] gathers while it defines the functions.
#[derive(Default)]
struct Texts {
    /// The CLIF of every function Cranelift compiles (a note for the others).
    clif: String,
    /// The x86 generator's disassembly.
    x86_asm: String,
}

/// Refuses, before anything is planned and with the reason, a layer
/// without stages, an inconsistent hand-built one, one too large for the
/// tables, and weights that do not fit it.
fn check_buildable(layer: &Layer, opts: &BuildOptions) -> Result<(), AotError> {
    if layer.stages.is_empty() {
        return Err(AotError::Layer(format!(
            "layer '{}' has no stages",
            layer.name
        )));
    }
    // A hand-built layer must be consistent before code is made for it.
    convjit_ir::check_layer(layer)?;
    // Refused before anything is planned, with the reason.
    check_stage_count(layer)?;
    if let Some(w) = &opts.weights {
        w.check(layer)?;
    }
    Ok(())
}

/// The plans of the generator that writes the stage functions (`x86`, else
/// Cranelift): its vector width decides the blocking and the packed-weight
/// layout.
fn stage_plans(
    layer: &Layer,
    x86: Option<convjit_x86::Isa>,
    (tiles, dot): (bool, bool),
) -> Result<Vec<stage_plan::StagePlan>, AotError> {
    let plan_target = stage_plan::Target {
        tiles,
        dot,
        dot_all: false,
        ..x86.map_or(stage_plan::Target::CRANELIFT, |i| i.target())
    };
    let plans: Vec<stage_plan::StagePlan> = layer
        .stages
        .iter()
        .map(|s| stage_plan::StagePlan {
            // The wrapper runs each stage whole, into a tensor.
            prefetch_stores: stage_plan::streams_past_caches(s.input, s.output),
            ..stage_plan::plan_for(s, &plan_target)
        })
        .collect();
    // The wrapper calls a flat stage with pixel ranges and any other with
    // rows, deciding on the layer's stage (as the JIT's program does).
    for (p, s) in plans.iter().zip(&layer.stages) {
        if p.flat != stage_plan::is_flat(s) {
            return Err(AotError::Codegen(format!(
                "stage '{}': its plan and the wrapper disagree on pixel ranges",
                s.name
            )));
        }
    }
    Ok(plans)
}

/// One local function per stage, `SYMBOL_stageI`, from the x86 generator
/// (`x86`) or Cranelift; their text forms go to `texts` as `emit` asks.
fn define_stage_functions<M: Module>(
    module: &mut M,
    plans: &[stage_plan::StagePlan],
    x86: Option<convjit_x86::Isa>,
    symbol: &str,
    emit: Emit,
    texts: &mut Texts,
) -> Result<Vec<cranelift_module::FuncId>, AotError> {
    let stage_name = |i: usize| format!("{symbol}_stage{i}");
    Ok(match x86 {
        Some(isa) => {
            let listing = match emit {
                Emit::Clif => Listing::Clif(&mut texts.clif),
                Emit::Asm => Listing::Asm(&mut texts.x86_asm),
                Emit::Object => Listing::None,
            };
            define_x86_stages(module, plans, isa, &stage_name, listing)?
        }
        None => convjit_cranelift::define_stages(
            module,
            plans,
            stage_name,
            Linkage::Local,
            (emit == Emit::Clif).then_some(&mut texts.clif),
        )?,
    })
}

/// The packed weights as read-only data, `SYMBOL_weights`.
fn bake_weights<M: Module>(
    module: &mut M,
    plans: &[stage_plan::StagePlan],
    w: &Weights,
    symbol: &str,
    precision: convjit_ir::Precision,
) -> Result<(PackLayout, wrapper::WeightsSource), AotError> {
    let packed: Vec<Vec<f32>> = plans
        .iter()
        .zip(w.stages())
        .map(|(p, s)| {
            // The multiplies' weights in `precision` (bf16: rounded; the
            // bias not, it is added in f32).
            let weight: Vec<f32> = s.weight.iter().map(|&x| precision.round(x)).collect();
            stage_plan::pack(p, &weight, s.bias.as_deref())
        })
        .collect();
    let layout = PackLayout::new(packed.iter().map(Vec::len));
    let mut bytes = vec![0u8; layout.total * 4];
    for (p, &(off, _)) in packed.iter().zip(&layout.stages) {
        for (i, x) in p.iter().enumerate() {
            bytes[(off + i) * 4..(off + i + 1) * 4].copy_from_slice(&x.to_le_bytes());
        }
    }
    let id = define_rodata(module, &format!("{symbol}_weights"), bytes)?;
    Ok((layout, wrapper::WeightsSource::Baked(id)))
}

/// For weights given at run time: the packing function (its CLIF to
/// `texts`) and its table of copies, `SYMBOL_pack_copies`.
fn define_packing<M: Module>(
    module: &mut M,
    layer: &Layer,
    plans: &[stage_plan::StagePlan],
    (ident, symbol): (&str, &str),
    precision: convjit_ir::Precision,
    texts: &mut Texts,
) -> Result<(PackLayout, wrapper::WeightsSource), AotError> {
    let layout = PackLayout::new(plans.iter().map(|p| p.packed_len));
    let copies = wrapper::PackCopies::new(layer, plans, &layout, precision)?;
    let id = define_rodata(module, &format!("{symbol}_pack_copies"), copies.bytes())?;
    let tile_id = match copies.tiles.is_empty() {
        true => None,
        false => Some(define_rodata(
            module,
            &format!("{symbol}_pack_tiles"),
            copies.tile_bytes(),
        )?),
    };
    texts.clif.push_str(&wrapper::define_pack(
        module,
        &pack_symbol(ident),
        &layout,
        &copies,
        (id, tile_id),
    )?);
    Ok((layout, wrapper::WeightsSource::Runtime))
}

/// The helpers a bf16 object calls (`convjit_x86::helpers`), as local
/// functions `SYMBOL_round_bf16` and (with tile stages) `SYMBOL_tiles`.
fn define_helpers<M: Module>(
    module: &mut M,
    precision: convjit_ir::Precision,
    tiles: bool,
    symbol: &str,
    texts: &mut Texts,
) -> Result<wrapper::Helpers, AotError> {
    let mut helpers = wrapper::Helpers::default();
    if precision == convjit_ir::Precision::F32 {
        return Ok(helpers);
    }
    let mut define = |name: String, code: Vec<u8>, params: usize, ret: bool| {
        let mut sig = module.make_signature();
        sig.params
            .extend((0..params).map(|_| cranelift_codegen::ir::AbiParam::new(I64)));
        sig.returns
            .extend(ret.then(|| cranelift_codegen::ir::AbiParam::new(I64)));
        let id = module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(cg_err)?;
        // Position-independent, no data, no calls: no relocations.
        module
            .define_function_bytes(id, convjit_x86::X86_CODE_ALIGN, &code, &[])
            .map_err(cg_err)?;
        texts.x86_asm.push_str(&format!(
            "; function {name}\n; written by convjit's x86 helpers\n{}\n",
            convjit_x86::disassemble(&code)
        ));
        Ok::<_, AotError>(id)
    };
    let round = convjit_x86::helpers::round_bf16_code().map_err(AotError::Codegen)?;
    helpers.round = Some(define(format!("{symbol}_round_bf16"), round, 3, false)?);
    if tiles {
        let code = convjit_x86::helpers::tile_permission_code().map_err(AotError::Codegen)?;
        helpers.tiles = Some(define(format!("{symbol}_tiles"), code, 0, true)?);
    }
    Ok(helpers)
}

/// Where [`define_x86_stages`] describes the functions it defines.
enum Listing<'a> {
    None,
    /// A note in place of each function's CLIF (it has none).
    Clif(&'a mut String),
    /// Each function's disassembly.
    Asm(&'a mut String),
}

/// Defines one local function per stage plan from the x86 generator's
/// bytes (64-byte aligned, no relocations) and returns their ids.
fn define_x86_stages<M: Module>(
    module: &mut M,
    plans: &[stage_plan::StagePlan],
    isa: convjit_x86::Isa,
    name: &dyn Fn(usize) -> String,
    mut listing: Listing,
) -> Result<Vec<cranelift_module::FuncId>, AotError> {
    let code = convjit_x86::x86_stage_code(plans, isa)?;
    let sig = convjit_cranelift::stage_signature(module);
    let generator = match isa {
        convjit_x86::Isa::Avx2 => Backend::Avx2,
        convjit_x86::Isa::Avx512 => Backend::Avx512,
    };
    let note = format!(
        "; written by convjit's {generator} generator: x86-64 machine code, not Cranelift\n"
    );
    let mut ids = Vec::with_capacity(code.len());
    for (i, bytes) in code.iter().enumerate() {
        let name = name(i);
        let id = module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(cg_err)?;
        // Position-independent, calls nothing, reads no data of the
        // object: no relocations.
        module
            .define_function_bytes(id, convjit_x86::X86_CODE_ALIGN, bytes, &[])
            .map_err(cg_err)?;
        match &mut listing {
            Listing::None => {}
            Listing::Clif(text) => {
                text.push_str(&format!("; {name}\n{note}; (no CLIF: see --emit asm)\n\n"))
            }
            Listing::Asm(text) => text.push_str(&format!(
                "; function {name}\n{note}{}\n",
                convjit_x86::disassemble(bytes)
            )),
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Puts a comment with the symbol name before each `function u0:N`.
fn name_functions<M: Module>(module: &M, clif: &str) -> String {
    let mut out = String::with_capacity(clif.len() + 256);
    for line in clif.lines() {
        let id = line
            .strip_prefix("function u0:")
            .and_then(|r| r.split('(').next())
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(id) = id {
            let decls = module.declarations();
            let name = decls
                .get_functions()
                .find(|(f, _)| f.as_u32() == id)
                .and_then(|(_, d)| d.name.clone());
            if let Some(name) = name {
                out.push_str(&format!("; {name}\n"));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn define_rodata<M: Module>(
    module: &mut M,
    name: &str,
    bytes: Vec<u8>,
) -> Result<cranelift_module::DataId, AotError> {
    let id = module
        .declare_data(name, Linkage::Local, false, false)
        .map_err(cg_err)?;
    let mut d = DataDescription::new();
    d.define(bytes.into_boxed_slice());
    d.set_align(PACK_ALIGN as u64);
    module.define_data(id, &d).map_err(cg_err)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_c_identifiers() {
        assert_eq!(c_identifier("mbv2_block"), "mbv2_block");
        assert_eq!(c_identifier("9lives"), "_9lives");
        assert_eq!(c_identifier("a.b-c"), "a_b_c");
        assert_eq!(c_identifier(""), "_");
    }

    #[test]
    fn layout_aligns_each_stage() {
        let l = PackLayout::new([5, 16, 17].into_iter());
        assert_eq!(l.stages, [(0, 5), (16, 16), (32, 17)]);
        assert_eq!(l.total, 64);
    }

    #[test]
    fn targets_are_checked() {
        let err = |t: &str| {
            target(Some(t), None, Backend::Auto, Default::default())
                .err()
                .expect(t)
                .to_string()
        };
        let e = err("sparc-sun-solaris");
        assert!(e.contains("not a 64-bit target"), "{e}");
        assert!(e.contains("aarch64-unknown-linux-gnu"), "{e}");
        let e = err("i686-unknown-linux-gnu");
        assert!(e.contains("not a 64-bit target"), "{e}");
        let e = err("no-such-thing");
        assert!(e.contains("unknown target 'no-such-thing'"), "{e}");
        assert!(e.contains("x86_64-unknown-linux-gnu"), "{e}");
        let e = err("riscv64gc-unknown-linux-gnu");
        assert!(
            e.contains("architecture 'riscv64gc' is not supported"),
            "{e}"
        );
        let e = err("aarch64-apple-darwin");
        assert!(e.contains("only Linux ELF"), "{e}");
        for t in SUPPORTED_TARGETS {
            target(Some(t), None, Backend::Auto, Default::default())
                .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        let x = target(
            Some("x86_64-unknown-linux-gnu"),
            None,
            Backend::Auto,
            Default::default(),
        )
        .ok()
        .unwrap();
        assert!(x.features.contains("has_fma"), "{}", x.features);
        assert!(!x.features.contains("has_avx512f"), "{}", x.features);
        assert!(!x.fma_libcall);
        assert_eq!(x.choice.generator, Backend::Avx2);
        let x = target(
            Some("x86_64-unknown-linux-gnu"),
            Some(Cpu::X86_64V4),
            Backend::Auto,
            Default::default(),
        )
        .ok()
        .unwrap();
        assert!(x.features.contains("has_avx512f"), "{}", x.features);
        assert_eq!(x.choice.generator, Backend::Avx512);
    }
}
