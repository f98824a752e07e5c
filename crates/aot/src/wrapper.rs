//! The exported functions, written in Cranelift IR: the entry point that
//! chains the stage functions image by image, and (for builds without
//! weights) the packing function with its table of copies.

use crate::{cg_err, AotError, PackLayout};
use convjit_ir::{Layer, Precision};
use convjit_plan::stage_plan::{self, StagePlan};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{
    AbiParam, Block, BlockArg, FuncRef, Function, GlobalValue, InstBuilder, MemFlagsData,
    Signature, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataId, FuncId, Linkage, Module};

/// Return codes of the exported functions.
pub const OK: i64 = 0;
pub const ENOMEM: i64 = 1;
pub const EINVAL: i64 = 2;
pub const ENOTILES: i64 = 3;

/// Where the entry point finds the packed weights.
pub enum WeightsSource {
    /// In the object (a read-only data symbol).
    Baked(DataId),
    /// Passed by the caller as the first parameter.
    Runtime,
}

pub struct Entry {
    pub clif: String,
    /// What each call `malloc`s.
    pub scratch: Scratch,
}

/// The functions a bf16 object calls beside its stages
/// (`convjit_x86::helpers`), where it has them.
#[derive(Clone, Copy, Default)]
pub struct Helpers {
    /// `round(src, dst, n)`: bf16 rounding of `n` floats.
    pub round: Option<FuncId>,
    /// `tiles() -> i64`: asks for the AMX tile state, 0 when granted.
    pub tiles: Option<FuncId>,
}

/// What a call `malloc`s, one block: two buffers of intermediates
/// (stage `i < last` writes buffer `i % 2`), in bf16 the image's input
/// rounded (where the first stage does not round it itself, on tiles)
/// and the tile stages' scratch; each part 64-byte aligned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scratch {
    /// Byte offsets of the two intermediate buffers.
    pub bufs: [usize; 2],
    /// Byte offset of the rounded input image.
    pub rounded_input: Option<usize>,
    /// Byte offset of the tile stages' scratch.
    pub tiles: Option<usize>,
    /// Bytes in all; 0 for one f32 stage.
    pub bytes: usize,
}

impl Scratch {
    pub fn new(layer: &Layer, plans: &[StagePlan], precision: Precision) -> Scratch {
        let n = layer.stages.len();
        let mut size = [0usize; 2];
        for (i, s) in layer.stages[..n - 1].iter().enumerate() {
            // 2 bytes a value where the stage stores bf16 for the next.
            let value = plans[i].out_bytes();
            size[i % 2] = size[i % 2].max(s.output.len() * value);
        }
        let align = |b: usize| b.div_ceil(64) * 64;
        let b1 = align(size[0]);
        let mut bytes = if size[1] == 0 { size[0] } else { b1 + size[1] };
        let mut part = |len: usize| {
            let at = align(bytes);
            bytes = at + len;
            at
        };
        let rounded_input = (precision == Precision::Bf16 && plans[0].tiles.is_none())
            .then(|| part(layer.input.len() * 4));
        let tile_bytes = plans
            .iter()
            .filter_map(|p| p.tiles.as_ref())
            .map(|t| t.scratch_bytes)
            .max();
        let tiles = tile_bytes.map(&mut part);
        Scratch {
            bufs: [0, b1],
            rounded_input,
            tiles,
            bytes,
        }
    }
}

fn sig<M: Module>(module: &M, params: usize, ret: Option<AbiParam>) -> Signature {
    let mut s = module.make_signature();
    s.params.extend((0..params).map(|_| AbiParam::new(I64)));
    s.returns.extend(ret);
    s
}

fn args(vals: &[Value]) -> Vec<BlockArg> {
    vals.iter().map(|&v| BlockArg::Value(v)).collect()
}

/// Finishes `func`, defines it as `id` and returns its CLIF text.
fn define<M: Module>(module: &mut M, id: FuncId, func: Function) -> Result<String, AotError> {
    let mut ctx = module.make_context();
    ctx.func = func;
    ctx.func.dfg.resolve_all_aliases();
    let text = format!("{}\n", ctx.func.display());
    module.define_function(id, &mut ctx).map_err(cg_err)?;
    Ok(text)
}

/// Fills `blk` (created earlier, still empty) with `return code`; call
/// last, after the other blocks (a block must be filled before the
/// builder leaves it, and the entry block must come first).
fn fill_return(b: &mut FunctionBuilder, blk: Block, code: i64) {
    b.switch_to_block(blk);
    let v = b.ins().iconst(I32, code);
    b.ins().return_(&[v]);
}

/// Branches to `fail` if any of `ptrs` is NULL, else continues in a new block.
fn null_check(b: &mut FunctionBuilder, ptrs: &[Value], fail: Block) {
    let mut any = None;
    for &p in ptrs {
        let z = b.ins().icmp_imm_u(IntCC::Equal, p, 0);
        any = Some(match any {
            None => z,
            Some(a) => b.ins().bor(a, z),
        });
    }
    let Some(any) = any else { return };
    let ok = b.create_block();
    b.ins().brif(any, fail, &[], ok, &[]);
    b.switch_to_block(ok);
}

/// The entry point's parameters (`packed` only when weights come at run time).
#[derive(Clone, Copy)]
struct EntryParams {
    packed: Option<Value>,
    input: Value,
    output: Value,
    batch: Value,
}

/// What the entry point calls and reads, as references inside it.
struct EntryRefs {
    stages: Vec<FuncRef>,
    malloc_free: Option<(FuncRef, FuncRef)>,
    round: Option<FuncRef>,
    tiles: Option<FuncRef>,
    /// The baked weights' symbol.
    weights: Option<GlobalValue>,
}

/// The blocks returning each code.
struct Exits {
    ok: Block,
    nomem: Block,
    inval: Block,
    notiles: Block,
}

/// What the entry point is made of.
pub struct EntrySpec<'a> {
    pub symbol: &'a str,
    pub layer: &'a Layer,
    pub plans: &'a [StagePlan],
    pub stages: &'a [FuncId],
    pub helpers: Helpers,
    pub layout: &'a PackLayout,
    pub source: &'a WeightsSource,
    pub precision: Precision,
}

/// `int convjit_LAYER([const float *packed,] const float *input, float *output, size_t batch)`:
/// checks its arguments, asks for the tile state if a stage uses tiles,
/// allocates the scratch, runs every stage on each image in turn, frees
/// the scratch.
pub fn define_entry<M: Module>(module: &mut M, spec: &EntrySpec) -> Result<Entry, AotError> {
    let runtime = matches!(spec.source, WeightsSource::Runtime);
    let nparams = if runtime { 4 } else { 3 };
    let ret = Some(AbiParam::new(I32));
    let id = module
        .declare_function(spec.symbol, Linkage::Export, &sig(module, nparams, ret))
        .map_err(cg_err)?;
    let scratch = Scratch::new(spec.layer, spec.plans, spec.precision);
    let malloc_free = if scratch.bytes > 0 {
        Some(declare_malloc_free(module)?)
    } else {
        None
    };

    let mut func = Function::with_name_signature(
        UserFuncName::user(0, id.as_u32()),
        sig(module, nparams, ret),
    );
    let refs = entry_refs(module, &mut func, spec, malloc_free);

    let cfg = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let params = entry_params(&mut b, runtime);
    let exits = Exits {
        ok: b.create_block(),
        nomem: b.create_block(),
        inval: b.create_block(),
        notiles: b.create_block(),
    };
    check_arguments(&mut b, params, &exits);
    if let Some(tiles) = refs.tiles {
        let call = b.ins().call(tiles, &[]);
        let refused = b.inst_results(call)[0];
        let granted = b.create_block();
        b.ins().brif(refused, exits.notiles, &[], granted, &[]);
        b.switch_to_block(granted);
    }
    let scratch_ptr = refs
        .malloc_free
        .map(|(malloc, _)| allocate_scratch(&mut b, malloc, scratch.bytes, exits.nomem));
    let wbase = match (refs.weights, params.packed) {
        (Some(gv), _) => b.ins().symbol_value(I64, gv),
        (None, Some(p)) => p,
        (None, None) => unreachable!("weights come from somewhere"),
    };
    run_images(&mut b, spec, &refs, params, (scratch_ptr, &scratch), wbase);
    if let (Some((_, free)), Some(p)) = (refs.malloc_free, scratch_ptr) {
        b.ins().call(free, &[p]);
    }
    b.ins().jump(exits.ok, &[]);
    fill_return(&mut b, exits.ok, OK);
    fill_return(&mut b, exits.nomem, ENOMEM);
    fill_return(&mut b, exits.inval, EINVAL);
    fill_return(&mut b, exits.notiles, ENOTILES);
    b.seal_all_blocks();
    b.finalize(cfg);
    let clif = define(module, id, func)?;
    Ok(Entry { clif, scratch })
}

/// Imports `malloc` and `free`.
fn declare_malloc_free<M: Module>(module: &mut M) -> Result<(FuncId, FuncId), AotError> {
    let m = module
        .declare_function(
            "malloc",
            Linkage::Import,
            &sig(module, 1, Some(AbiParam::new(I64))),
        )
        .map_err(cg_err)?;
    let f = module
        .declare_function("free", Linkage::Import, &sig(module, 1, None))
        .map_err(cg_err)?;
    Ok((m, f))
}

/// Declares in `func` the stage functions, the helpers, `malloc` and
/// `free`, and the baked weights.
fn entry_refs<M: Module>(
    module: &mut M,
    func: &mut Function,
    spec: &EntrySpec,
    malloc_free: Option<(FuncId, FuncId)>,
) -> EntryRefs {
    let stage_refs: Vec<_> = spec
        .stages
        .iter()
        .map(|&s| module.declare_func_in_func(s, func))
        .collect();
    let mf_refs = malloc_free.map(|(m, f)| {
        (
            module.declare_func_in_func(m, func),
            module.declare_func_in_func(f, func),
        )
    });
    let weights = match spec.source {
        WeightsSource::Baked(d) => Some(module.declare_data_in_func(*d, func)),
        WeightsSource::Runtime => None,
    };
    EntryRefs {
        stages: stage_refs,
        malloc_free: mf_refs,
        round: spec
            .helpers
            .round
            .map(|f| module.declare_func_in_func(f, func)),
        tiles: spec
            .helpers
            .tiles
            .map(|f| module.declare_func_in_func(f, func)),
        weights,
    }
}

/// Creates the entry block and returns the parameters.
fn entry_params(b: &mut FunctionBuilder, runtime: bool) -> EntryParams {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (packed, input, output, batch) = if runtime {
        (Some(params[0]), params[1], params[2], params[3])
    } else {
        (None, params[0], params[1], params[2])
    };
    EntryParams {
        packed,
        input,
        output,
        batch,
    }
}

/// Returns OK at once for batch 0 (NULL pointers allowed), else EINVAL if a
/// pointer is NULL.
fn check_arguments(b: &mut FunctionBuilder, p: EntryParams, exits: &Exits) {
    let nonempty = b.create_block();
    b.ins().brif(p.batch, nonempty, &[], exits.ok, &[]);
    b.switch_to_block(nonempty);
    let mut ptrs = vec![p.input, p.output];
    ptrs.extend(p.packed);
    null_check(b, &ptrs, exits.inval);
}

/// Calls `malloc` for `bytes` and branches to `nomem` if it fails.
fn allocate_scratch(b: &mut FunctionBuilder, malloc: FuncRef, bytes: usize, nomem: Block) -> Value {
    let n = b.ins().iconst(I64, bytes as i64);
    let call = b.ins().call(malloc, &[n]);
    let p = b.inst_results(call)[0];
    let ok = b.create_block();
    b.ins().brif(p, ok, &[], nomem, &[]);
    b.switch_to_block(ok);
    p
}

/// The loop over images: each stage reads the previous one's output (the
/// first the image, the last writes the output), intermediates in the
/// scratch. In bf16, what a stage multiplies is rounded first (the image
/// into the scratch, an intermediate in place) unless the stage is on
/// tiles (it rounds as it converts); the residual reads the image itself.
/// Leaves the builder after the loop.
fn run_images(
    b: &mut FunctionBuilder,
    spec: &EntrySpec,
    refs: &EntryRefs,
    p: EntryParams,
    (scratch_ptr, scratch): (Option<Value>, &Scratch),
    wbase: Value,
) {
    let at = |b: &mut FunctionBuilder, off: usize| {
        let base = scratch_ptr.expect("a scratch block for the parts it has");
        b.ins().iadd_imm_s(base, off as i64)
    };
    let bufs = match spec.layer.stages.len() {
        1 => None,
        _ => Some(scratch.bufs.map(|off| at(b, off))),
    };
    let rounded_input = scratch.rounded_input.map(|off| at(b, off));
    let tile_scratch = scratch.tiles.map(|off| at(b, off));
    let zero = b.ins().iconst(I64, 0);
    let round = |b: &mut FunctionBuilder, src: Value, dst: Value, floats: usize| {
        let f = refs.round.expect("a rounding function in bf16");
        let n = b.ins().iconst(I64, floats as i64);
        b.ins().call(f, &[src, dst, n]);
    };
    // Block parameters: (input, output, images left), images left > 0.
    let head = b.create_block();
    let done = b.create_block();
    let (in_p, out_p, left) = (
        b.append_block_param(head, I64),
        b.append_block_param(head, I64),
        b.append_block_param(head, I64),
    );
    b.ins().jump(head, &args(&[p.input, p.output, p.batch]));
    b.switch_to_block(head);
    let last = refs.stages.len() - 1;
    let mut src = in_p;
    if let Some(r) = rounded_input {
        round(b, in_p, r, spec.layer.input.len());
        src = r;
    }
    for (i, &f) in refs.stages.iter().enumerate() {
        let dst = if i == last {
            out_p
        } else {
            bufs.expect("scratch for more than one stage")[i % 2]
        };
        let w = b.ins().iadd_imm_s(wbase, (spec.layer_offset(i) * 4) as i64);
        // (input, weights, output, residual = this image's layer input,
        // all output rows (pixels for a flat stage): row0 = 0, rows,
        // scratch: the tile stages')
        let s = &spec.layer.stages[i];
        let (_, n) = stage_plan::call_range(s, 0, s.output.h);
        let rows = b.ins().iconst(I64, n as i64);
        let tiles = match spec.plans[i].tiles {
            Some(_) => tile_scratch.expect("tile scratch for a tile stage"),
            None => zero,
        };
        b.ins().call(f, &[src, w, dst, in_p, zero, rows, tiles]);
        let next_rounds = spec.plans.get(i + 1).is_some_and(|p| p.tiles.is_none());
        let rounds_itself = spec.plans[i].out_bytes() == 2
            || spec.plans[i].tiles.as_ref().is_some_and(|t| t.round_output);
        if spec.precision == Precision::Bf16 && next_rounds && !rounds_itself {
            round(b, dst, dst, s.output.len());
        }
        src = dst;
    }
    let in_next = b
        .ins()
        .iadd_imm_s(in_p, (spec.layer.input.len() * 4) as i64);
    let out_next = b
        .ins()
        .iadd_imm_s(out_p, (spec.layer.output().len() * 4) as i64);
    let left_next = b.ins().iadd_imm_s(left, -1);
    b.ins().brif(
        left_next,
        head,
        &args(&[in_next, out_next, left_next]),
        done,
        &[],
    );
    b.switch_to_block(done);
}

impl EntrySpec<'_> {
    /// Float offset of stage `i`'s packed weights.
    fn layer_offset(&self, i: usize) -> usize {
        self.layout.stages[i].0
    }
}

/// Fields of one copy in the packing function's table: the index of its
/// array in the caller's `arrays[]`, then [`stage_plan::PackCopy`]'s `dst`
/// (from the start of the whole packed buffer), `src`, `len` and its
/// three loops as (count, dst stride, src stride), all in floats; then 1
/// where the floats are rounded to bf16 (a bf16 build's weights), else 0.
const COPY_FIELDS: usize = 14;

/// Fields of one tile stage's weights in the packing function's second
/// table (see `stage_plan::pack_into`): its array, the float where its
/// B tiles start, taps, input channels, the array's output channels, the
/// first one taken and how many, reduction chunks, channel blocks.
const TILE_FIELDS: usize = 9;

/// The packing function's tables: every stage's [`StagePlan::pack_copies`]
/// ([`COPY_FIELDS`] little-endian u64s each), and the tile stages' weights
/// ([`TILE_FIELDS`] each). Their size depends on the stages' runs, never on
/// their weight counts.
pub struct PackCopies {
    pub records: Vec<[u64; COPY_FIELDS]>,
    pub tiles: Vec<[u64; TILE_FIELDS]>,
    /// Pointers in `arrays[]`: per stage its weight, then its bias if any.
    pub arrays: usize,
}

impl PackCopies {
    /// The copies of every stage, placed at its offset of `layout`; each
    /// checked to stay inside its stage's packed floats and its arrays.
    pub fn new(
        layer: &Layer,
        plans: &[StagePlan],
        layout: &PackLayout,
        precision: Precision,
    ) -> Result<PackCopies, AotError> {
        let mut records = Vec::new();
        let mut tiles = Vec::new();
        let mut k = 0;
        for ((s, p), &(off, len)) in layer.stages.iter().zip(plans).zip(&layout.stages) {
            let nb = s.bias_key.as_ref().map(|_| s.output.c);
            let copies = match &p.tiles {
                Some(t) => {
                    tiles.push([
                        k,
                        off,
                        p.kh * p.kw,
                        // A group's input channels: a grouped stage's
                        // tiles (AMX or `vdpbf16ps`) reduce its group's.
                        p.ci / p.groups,
                        p.co,
                        p.channels.0,
                        t.co,
                        t.red_chunks,
                        t.n_blocks,
                    ]);
                    // The f32 bias after the tiles.
                    vec![stage_plan::PackCopy {
                        source: stage_plan::PackSource::Bias,
                        dst: t.bias_off,
                        src: p.channels.0,
                        len: t.co,
                        loops: [(1, 0, 0); 3],
                    }]
                }
                None => p.pack_copies(),
            };
            for c in copies {
                let (array, n) = match (c.source, nb) {
                    (stage_plan::PackSource::Weight, _) => (k, s.weight_len()),
                    (stage_plan::PackSource::Bias, Some(nb)) => (k + 1, nb),
                    (stage_plan::PackSource::Bias, None) => continue,
                };
                let last = |base: usize, stride: fn(&(usize, usize, usize)) -> usize| {
                    c.loops
                        .iter()
                        .fold(base, |a, l| a + (l.0.max(1) - 1) * stride(l))
                        + c.len
                };
                if c.loops.iter().any(|l| l.0 == 0)
                    || c.len == 0
                    || last(c.dst, |l| l.1) > len
                    || last(c.src, |l| l.2) > n
                {
                    return Err(AotError::Codegen(format!(
                        "stage '{}': a packing copy leaves its arrays: {c:?}",
                        s.name
                    )));
                }
                let rounded = precision == Precision::Bf16
                    && matches!(c.source, stage_plan::PackSource::Weight);
                let [(n0, d0, s0), (n1, d1, s1), (n2, d2, s2)] = c.loops;
                let fields = [
                    array,
                    off + c.dst,
                    c.src,
                    c.len,
                    n0,
                    d0,
                    s0,
                    n1,
                    d1,
                    s1,
                    n2,
                    d2,
                    s2,
                    usize::from(rounded),
                ];
                records.push(fields.map(|f| f as u64));
            }
            k += 1 + usize::from(nb.is_some());
        }
        Ok(PackCopies {
            records,
            tiles: tiles.into_iter().map(|t| t.map(|f| f as u64)).collect(),
            arrays: k,
        })
    }

    /// The copies' table as `.rodata` bytes.
    pub fn bytes(&self) -> Vec<u8> {
        le_bytes(&self.records)
    }

    /// The tile stages' table as `.rodata` bytes (empty: none).
    pub fn tile_bytes(&self) -> Vec<u8> {
        le_bytes(&self.tiles)
    }
}

fn le_bytes<const N: usize>(records: &[[u64; N]]) -> Vec<u8> {
    records
        .iter()
        .flatten()
        .flat_map(|f| f.to_le_bytes())
        .collect()
}

/// `u` (the bits of an f32) rounded to bf16 as `convjit_ir::round_bf16`
/// does: nearest even, a NaN made quiet.
fn round_bits(b: &mut FunctionBuilder, u: Value) -> Value {
    let c = |b: &mut FunctionBuilder, v: u32| b.ins().iconst(I32, i64::from(v));
    let magnitude_mask = c(b, 0x7fff_ffff);
    let magnitude = b.ins().band(u, magnitude_mask);
    let inf = c(b, 0x7f80_0000);
    let nan = b.ins().icmp(IntCC::UnsignedGreaterThan, magnitude, inf);
    let half = b.ins().ushr_imm_u(u, 16);
    let one = c(b, 1);
    let lsb = b.ins().band(half, one);
    let bias = c(b, 0x7fff);
    let rounded = b.ins().iadd(u, bias);
    let rounded = b.ins().iadd(rounded, lsb);
    let quiet_bit = c(b, 0x0040_0000);
    let quiet = b.ins().bor(u, quiet_bit);
    let r = b.ins().select(nan, quiet, rounded);
    let kept = c(b, 0xffff_0000);
    b.ins().band(r, kept)
}

/// A loop `for i in 0..n` (`n` an I64 value) around `body(b, i)`.
fn counted(b: &mut FunctionBuilder, n: Value, body: &mut dyn FnMut(&mut FunctionBuilder, Value)) {
    let i = b.declare_var(I64);
    let zero = b.ins().iconst(I64, 0);
    b.def_var(i, zero);
    let (head, inside, exit) = (b.create_block(), b.create_block(), b.create_block());
    b.ins().jump(head, &[]);
    b.switch_to_block(head);
    let iv = b.use_var(i);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, iv, n);
    b.ins().brif(more, inside, &[], exit, &[]);
    b.switch_to_block(inside);
    body(b, iv);
    let next = b.ins().iadd_imm_s(iv, 1);
    b.def_var(i, next);
    b.ins().jump(head, &[]);
    b.switch_to_block(exit);
}

/// The `n` u64 fields of record `r` of a `.rodata` table at `table`.
fn record_fields(b: &mut FunctionBuilder, table: Value, r: Value, n: usize) -> Vec<Value> {
    let ro = MemFlagsData::new().with_notrap().with_readonly();
    let rec = b.ins().imul_imm_s(r, (n * 8) as i64);
    let rec = b.ins().iadd(table, rec);
    // Offsets of a record's fields: at most COPY_FIELDS * 8 bytes.
    (0..n)
        .map(|i| {
            let at = i32::try_from(i * 8).expect("a record's fields are few");
            b.ins().load(I64, ro, rec, at)
        })
        .collect()
}

/// One tile stage's B tiles (`stage_plan::pack_into`'s layout) from its
/// weight array at `array` to `dst`: per tap, reduction chunk of 32 input
/// channels and block of 16 output channels, 16 rows of 16 channel pairs,
/// each pair two rounded bf16 (the lower channel in the low half), zero
/// past the input channels or the outputs taken. `f`: taps, input
/// channels, the array's output channels, the first taken, how many,
/// chunks, blocks.
fn pack_tile_weights(b: &mut FunctionBuilder, array: Value, dst: Value, f: &[Value; 7]) {
    let [taps, ci, co_all, c0, co, k_chunks, n_blocks] = *f;
    let mf = MemFlagsData::new();
    let pairs = b.ins().iconst(I64, (stage_plan::K_CHUNK / 2) as i64);
    let lanes = b.ins().iconst(I64, stage_plan::N_BLOCK as i64);
    // The B tiles are written in order: `at` counts their 32-bit elements.
    let at = b.declare_var(I64);
    let zero = b.ins().iconst(I64, 0);
    b.def_var(at, zero);
    counted(b, taps, &mut |b, tap| {
        counted(b, k_chunks, &mut |b, chunk| {
            counted(b, n_blocks, &mut |b, nb| {
                counted(b, pairs, &mut |b, row| {
                    counted(b, lanes, &mut |b, col| {
                        let o = b.ins().imul_imm_s(nb, stage_plan::N_BLOCK as i64);
                        let o = b.ins().iadd(o, col);
                        let c = b.ins().imul_imm_s(chunk, stage_plan::K_CHUNK as i64);
                        let two_rows = b.ins().ishl_imm_u(row, 1);
                        let c = b.ins().iadd(c, two_rows);
                        let o_ok = b.ins().icmp(IntCC::UnsignedLessThan, o, co);
                        let half = |b: &mut FunctionBuilder, c: Value| {
                            // weight[(tap * ci + c) * co_all + c0 + o], or 0.
                            let ok = b.ins().icmp(IntCC::UnsignedLessThan, c, ci);
                            let ok = b.ins().band(ok, o_ok);
                            let i = b.ins().imul(tap, ci);
                            let i = b.ins().iadd(i, c);
                            let i = b.ins().imul(i, co_all);
                            let i = b.ins().iadd(i, c0);
                            let i = b.ins().iadd(i, o);
                            // Index 0 where out of range: always readable.
                            let i = b.ins().select(ok, i, zero);
                            let i = b.ins().ishl_imm_u(i, 2);
                            let from = b.ins().iadd(array, i);
                            let x = b.ins().load(I32, mf, from, 0);
                            let r = round_bits(b, x);
                            let r = b.ins().ushr_imm_u(r, 16);
                            let none = b.ins().iconst(I32, 0);
                            b.ins().select(ok, r, none)
                        };
                        let lo = half(b, c);
                        let c1 = b.ins().iadd_imm_s(c, 1);
                        let hi = half(b, c1);
                        let hi = b.ins().ishl_imm_u(hi, 16);
                        let pair = b.ins().bor(lo, hi);
                        let k = b.use_var(at);
                        let to = b.ins().ishl_imm_u(k, 2);
                        let to = b.ins().iadd(dst, to);
                        b.ins().store(mf, pair, to, 0);
                        let k = b.ins().iadd_imm_s(k, 1);
                        b.def_var(at, k);
                    });
                });
            });
        });
    });
}

/// `int convjit_LAYER_pack(const float *const arrays[], float *packed)`:
/// fills the whole packed buffer (`layout.total` floats): zeros, then
/// every copy of the table (see [`PackCopies`]), by loops that do not
/// depend on the layer: the object is the size of its code.
pub fn define_pack<M: Module>(
    module: &mut M,
    name: &str,
    layout: &PackLayout,
    copies: &PackCopies,
    (table_id, tile_table_id): (DataId, Option<DataId>),
) -> Result<String, AotError> {
    let ret = Some(AbiParam::new(I32));
    let id = module
        .declare_function(name, Linkage::Export, &sig(module, 2, ret))
        .map_err(cg_err)?;
    let mut func =
        Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig(module, 2, ret));
    let gv = module.declare_data_in_func(table_id, &mut func);
    let tile_gv = tile_table_id.map(|t| module.declare_data_in_func(t, &mut func));
    let cfg = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let (arrays, packed) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let ret_inval = b.create_block();
    null_check(&mut b, &[arrays, packed], ret_inval);
    // Caller memory: loads and stores that may trap (no flags).
    let mf = MemFlagsData::new();
    // Every array pointer checked, in a loop: code per array made the
    // function, and its register allocation, grow with the stages.
    let narrays = b.ins().iconst(I64, copies.arrays as i64);
    counted(&mut b, narrays, &mut |b, k| {
        let at = b.ins().ishl_imm_u(k, 3);
        let at = b.ins().iadd(arrays, at);
        let p = b.ins().load(I64, mf, at, 0);
        null_check(b, &[p], ret_inval);
    });
    // Zeros everywhere (unused lanes, alignment padding), as i32 stores.
    let total = b.ins().iconst(I64, layout.total as i64);
    counted(&mut b, total, &mut |b, i| {
        let at = b.ins().ishl_imm_u(i, 2);
        let at = b.ins().iadd(packed, at);
        let z = b.ins().iconst(I32, 0);
        b.ins().store(mf, z, at, 0);
    });
    // The copies: bit patterns moved as i32.
    let table = b.ins().symbol_value(I64, gv);
    let nrec = b.ins().iconst(I64, copies.records.len() as i64);
    counted(&mut b, nrec, &mut |b, r| {
        let f = record_fields(b, table, r, COPY_FIELDS);
        let at = b.ins().ishl_imm_u(f[0], 3);
        let at = b.ins().iadd(arrays, at);
        let array = b.ins().load(I64, mf, at, 0);
        let (len, loops) = (
            f[3],
            [
                (f[4], f[5], f[6]),
                (f[7], f[8], f[9]),
                (f[10], f[11], f[12]),
            ],
        );
        counted(b, loops[0].0, &mut |b, i0| {
            let d0 = b.ins().imul(i0, loops[0].1);
            let d0 = b.ins().iadd(f[1], d0);
            let s0 = b.ins().imul(i0, loops[0].2);
            let s0 = b.ins().iadd(f[2], s0);
            counted(b, loops[1].0, &mut |b, i1| {
                let d1 = b.ins().imul(i1, loops[1].1);
                let d1 = b.ins().iadd(d0, d1);
                let s1 = b.ins().imul(i1, loops[1].2);
                let s1 = b.ins().iadd(s0, s1);
                counted(b, loops[2].0, &mut |b, i2| {
                    let d2 = b.ins().imul(i2, loops[2].1);
                    let d2 = b.ins().iadd(d1, d2);
                    let s2 = b.ins().imul(i2, loops[2].2);
                    let s2 = b.ins().iadd(s1, s2);
                    let dst = b.ins().ishl_imm_u(d2, 2);
                    let dst = b.ins().iadd(packed, dst);
                    let src = b.ins().ishl_imm_u(s2, 2);
                    let src = b.ins().iadd(array, src);
                    counted(b, len, &mut |b, j| {
                        let off = b.ins().ishl_imm_u(j, 2);
                        let from = b.ins().iadd(src, off);
                        let x = b.ins().load(I32, mf, from, 0);
                        let r = round_bits(b, x);
                        let x = b.ins().select(f[13], r, x);
                        let to = b.ins().iadd(dst, off);
                        b.ins().store(mf, x, to, 0);
                    });
                });
            });
        });
    });
    if let Some(tile_gv) = tile_gv {
        let table = b.ins().symbol_value(I64, tile_gv);
        let n = b.ins().iconst(I64, copies.tiles.len() as i64);
        counted(&mut b, n, &mut |b, r| {
            let f = record_fields(b, table, r, TILE_FIELDS);
            let at = b.ins().ishl_imm_u(f[0], 3);
            let at = b.ins().iadd(arrays, at);
            let array = b.ins().load(I64, mf, at, 0);
            let dst = b.ins().ishl_imm_u(f[1], 2);
            let dst = b.ins().iadd(packed, dst);
            pack_tile_weights(b, array, dst, &f[2..].try_into().expect("seven fields"));
        });
    }
    let ok = b.ins().iconst(I32, OK);
    b.ins().return_(&[ok]);
    fill_return(&mut b, ret_inval, EINVAL);
    b.seal_all_blocks();
    b.finalize(cfg);
    define(module, id, func)
}
