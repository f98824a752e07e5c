//! The exported functions, written in Cranelift IR: the entry point that
//! chains the stage functions image by image, and (for builds without
//! weights) the packing function with its table of copies.

use crate::{cg_err, AotError, PackLayout};
use convjit_ir::Layer;
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

/// Where the entry point finds the packed weights.
pub enum WeightsSource {
    /// In the object (a read-only data symbol).
    Baked(DataId),
    /// Passed by the caller as the first parameter.
    Runtime,
}

pub struct Entry {
    pub clif: String,
    /// Bytes `malloc`ed per call (0: none).
    pub scratch_bytes: usize,
}

/// Scratch layout: two buffers, stages alternating between them (stage
/// `i < last` writes buffer `i % 2`); buffer 1 starts 64-byte aligned.
/// Returns (offset of buffer 1, total bytes); total 0 for one stage.
pub fn scratch(layer: &Layer) -> (usize, usize) {
    let n = layer.stages.len();
    let mut size = [0usize; 2];
    for (i, s) in layer.stages[..n - 1].iter().enumerate() {
        size[i % 2] = size[i % 2].max(s.output.len() * 4);
    }
    let b1 = size[0].div_ceil(64) * 64;
    if size[1] == 0 {
        (b1, size[0])
    } else {
        (b1, b1 + size[1])
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
    /// The baked weights' symbol.
    weights: Option<GlobalValue>,
}

/// The blocks returning each code.
struct Exits {
    ok: Block,
    nomem: Block,
    inval: Block,
}

/// `int convjit_LAYER([const float *packed,] const float *input, float *output, size_t batch)`:
/// checks its arguments, allocates the scratch, runs every stage on each
/// image in turn, frees the scratch.
pub fn define_entry<M: Module>(
    module: &mut M,
    symbol: &str,
    layer: &Layer,
    stages: &[FuncId],
    layout: &PackLayout,
    source: &WeightsSource,
) -> Result<Entry, AotError> {
    let runtime = matches!(source, WeightsSource::Runtime);
    let nparams = if runtime { 4 } else { 3 };
    let ret = Some(AbiParam::new(I32));
    let id = module
        .declare_function(symbol, Linkage::Export, &sig(module, nparams, ret))
        .map_err(cg_err)?;
    let (b1_off, scratch_bytes) = scratch(layer);
    let malloc_free = if scratch_bytes > 0 {
        Some(declare_malloc_free(module)?)
    } else {
        None
    };

    let mut func = Function::with_name_signature(
        UserFuncName::user(0, id.as_u32()),
        sig(module, nparams, ret),
    );
    let refs = entry_refs(module, &mut func, stages, malloc_free, source);

    let cfg = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let params = entry_params(&mut b, runtime);
    let exits = Exits {
        ok: b.create_block(),
        nomem: b.create_block(),
        inval: b.create_block(),
    };
    check_arguments(&mut b, params, &exits);
    let scratch_ptr = refs
        .malloc_free
        .map(|(malloc, _)| allocate_scratch(&mut b, malloc, scratch_bytes, exits.nomem));
    let bufs = scratch_ptr.map(|p| [p, b.ins().iadd_imm_s(p, b1_off as i64)]);
    let wbase = match (refs.weights, params.packed) {
        (Some(gv), _) => b.ins().symbol_value(I64, gv),
        (None, Some(p)) => p,
        (None, None) => unreachable!("weights come from somewhere"),
    };
    run_images(&mut b, layer, layout, &refs.stages, params, bufs, wbase);
    if let (Some((_, free)), Some(p)) = (refs.malloc_free, scratch_ptr) {
        b.ins().call(free, &[p]);
    }
    b.ins().jump(exits.ok, &[]);
    fill_return(&mut b, exits.ok, OK);
    fill_return(&mut b, exits.nomem, ENOMEM);
    fill_return(&mut b, exits.inval, EINVAL);
    b.seal_all_blocks();
    b.finalize(cfg);
    let clif = define(module, id, func)?;
    Ok(Entry {
        clif,
        scratch_bytes,
    })
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

/// Declares in `func` the stage functions, `malloc` and `free`, and the
/// baked weights.
fn entry_refs<M: Module>(
    module: &mut M,
    func: &mut Function,
    stages: &[FuncId],
    malloc_free: Option<(FuncId, FuncId)>,
    source: &WeightsSource,
) -> EntryRefs {
    let stage_refs: Vec<_> = stages
        .iter()
        .map(|&s| module.declare_func_in_func(s, func))
        .collect();
    let mf_refs = malloc_free.map(|(m, f)| {
        (
            module.declare_func_in_func(m, func),
            module.declare_func_in_func(f, func),
        )
    });
    let weights = match source {
        WeightsSource::Baked(d) => Some(module.declare_data_in_func(*d, func)),
        WeightsSource::Runtime => None,
    };
    EntryRefs {
        stages: stage_refs,
        malloc_free: mf_refs,
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
/// first the image, the last writes the output), intermediates in `bufs`.
/// Leaves the builder after the loop.
fn run_images(
    b: &mut FunctionBuilder,
    layer: &Layer,
    layout: &PackLayout,
    stages: &[FuncRef],
    p: EntryParams,
    bufs: Option<[Value; 2]>,
    wbase: Value,
) {
    let zero = b.ins().iconst(I64, 0);
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
    let last = stages.len() - 1;
    let mut src = in_p;
    for (i, &f) in stages.iter().enumerate() {
        let dst = if i == last {
            out_p
        } else {
            bufs.expect("scratch for more than one stage")[i % 2]
        };
        let w = b.ins().iadd_imm_s(wbase, (layout.stages[i].0 * 4) as i64);
        // (input, weights, output, residual = this image's layer input,
        // all output rows (pixels for a flat stage): row0 = 0, rows,
        // scratch = null: objects hold no AMX functions)
        let s = &layer.stages[i];
        let (_, n) = stage_plan::call_range(s, 0, s.output.h);
        let rows = b.ins().iconst(I64, n as i64);
        b.ins().call(f, &[src, w, dst, in_p, zero, rows, zero]);
        src = dst;
    }
    let in_next = b.ins().iadd_imm_s(in_p, (layer.input.len() * 4) as i64);
    let out_next = b.ins().iadd_imm_s(out_p, (layer.output().len() * 4) as i64);
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

/// Fields of one copy in the packing function's table: the index of its
/// array in the caller's `arrays[]`, then [`stage_plan::PackCopy`]'s `dst`
/// (from the start of the whole packed buffer), `src`, `len` and its
/// three loops as (count, dst stride, src stride), all in floats.
const COPY_FIELDS: usize = 13;

/// The packing function's table: every stage's [`StagePlan::pack_copies`],
/// [`COPY_FIELDS`] little-endian u64s each. Its size depends on the
/// stages' runs, never on their weight counts.
pub struct PackCopies {
    pub records: Vec<[u64; COPY_FIELDS]>,
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
    ) -> Result<PackCopies, AotError> {
        let mut records = Vec::new();
        let mut k = 0;
        for ((s, p), &(off, len)) in layer.stages.iter().zip(plans).zip(&layout.stages) {
            let nb = s.bias_key.as_ref().map(|_| s.output.c);
            for c in p.pack_copies() {
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
                ];
                records.push(fields.map(|f| f as u64));
            }
            k += 1 + usize::from(nb.is_some());
        }
        Ok(PackCopies { records, arrays: k })
    }

    /// The table as `.rodata` bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.records
            .iter()
            .flatten()
            .flat_map(|f| f.to_le_bytes())
            .collect()
    }
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

/// `int convjit_LAYER_pack(const float *const arrays[], float *packed)`:
/// fills the whole packed buffer (`layout.total` floats): zeros, then
/// every copy of the table (see [`PackCopies`]), by loops that do not
/// depend on the layer: the object is the size of its code.
pub fn define_pack<M: Module>(
    module: &mut M,
    name: &str,
    layout: &PackLayout,
    copies: &PackCopies,
    table_id: DataId,
) -> Result<String, AotError> {
    let ret = Some(AbiParam::new(I32));
    let id = module
        .declare_function(name, Linkage::Export, &sig(module, 2, ret))
        .map_err(cg_err)?;
    let mut func =
        Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig(module, 2, ret));
    let gv = module.declare_data_in_func(table_id, &mut func);
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
    let ro = MemFlagsData::new().with_notrap().with_readonly();
    let nrec = b.ins().iconst(I64, copies.records.len() as i64);
    counted(&mut b, nrec, &mut |b, r| {
        let rec = b.ins().imul_imm_s(r, (COPY_FIELDS * 8) as i64);
        let rec = b.ins().iadd(table, rec);
        let f: Vec<Value> = (0..COPY_FIELDS)
            .map(|i| b.ins().load(I64, ro, rec, (i * 8) as i32))
            .collect();
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
                        let to = b.ins().iadd(dst, off);
                        b.ins().store(mf, x, to, 0);
                    });
                });
            });
        });
    });
    let ok = b.ins().iconst(I32, OK);
    b.ins().return_(&[ok]);
    fill_return(&mut b, ret_inval, EINVAL);
    b.seal_all_blocks();
    b.finalize(cfg);
    define(module, id, func)
}
