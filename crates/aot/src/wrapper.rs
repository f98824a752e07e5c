//! The exported functions, written in Cranelift IR: the entry point that
//! chains the stage functions image by image, and (for builds without
//! weights) the packing function with its permutation table.

use crate::{cg_err, AotError, PackLayout};
use convjit_ir::{Layer, Rng};
use convjit_jit::plan::{self, Plan};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value,
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
fn fill_return(b: &mut FunctionBuilder, blk: cranelift_codegen::ir::Block, code: i64) {
    b.switch_to_block(blk);
    let v = b.ins().iconst(I32, code);
    b.ins().return_(&[v]);
}

/// Branches to `fail` if any of `ptrs` is NULL, else continues in a new block.
fn null_check(b: &mut FunctionBuilder, ptrs: &[Value], fail: cranelift_codegen::ir::Block) {
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

/// `int convjit_LAYER([const float *packed,] const float *input, float *output, size_t batch)`.
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
        Some((m, f))
    } else {
        None
    };

    let mut func = Function::with_name_signature(
        UserFuncName::user(0, id.as_u32()),
        sig(module, nparams, ret),
    );
    let stage_refs: Vec<_> = stages
        .iter()
        .map(|&s| module.declare_func_in_func(s, &mut func))
        .collect();
    let mf_refs = malloc_free.map(|(m, f)| {
        (
            module.declare_func_in_func(m, &mut func),
            module.declare_func_in_func(f, &mut func),
        )
    });
    let weights_gv = match source {
        WeightsSource::Baked(d) => Some(module.declare_data_in_func(*d, &mut func)),
        WeightsSource::Runtime => None,
    };

    let cfg = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (packed, input, output, batch) = if runtime {
        (Some(params[0]), params[1], params[2], params[3])
    } else {
        (None, params[0], params[1], params[2])
    };
    let (ret_ok, ret_nomem, ret_inval) = (b.create_block(), b.create_block(), b.create_block());

    // batch == 0: nothing to do (NULL pointers allowed).
    let nonempty = b.create_block();
    b.ins().brif(batch, nonempty, &[], ret_ok, &[]);
    b.switch_to_block(nonempty);
    let mut ptrs = vec![input, output];
    ptrs.extend(packed);
    null_check(&mut b, &ptrs, ret_inval);

    let scratch_ptr = match mf_refs {
        Some((malloc, _)) => {
            let n = b.ins().iconst(I64, scratch_bytes as i64);
            let call = b.ins().call(malloc, &[n]);
            let p = b.inst_results(call)[0];
            let ok = b.create_block();
            b.ins().brif(p, ok, &[], ret_nomem, &[]);
            b.switch_to_block(ok);
            Some(p)
        }
        None => None,
    };
    let bufs = scratch_ptr.map(|p| [p, b.ins().iadd_imm_s(p, b1_off as i64)]);
    let wbase = match (weights_gv, packed) {
        (Some(gv), _) => b.ins().symbol_value(I64, gv),
        (None, Some(p)) => p,
        (None, None) => unreachable!("weights come from somewhere"),
    };
    let zero = b.ins().iconst(I64, 0);

    // The loop over images: (input, output, images left), images left > 0.
    let head = b.create_block();
    let done = b.create_block();
    let (in_p, out_p, left) = (
        b.append_block_param(head, I64),
        b.append_block_param(head, I64),
        b.append_block_param(head, I64),
    );
    b.ins().jump(head, &args(&[input, output, batch]));
    b.switch_to_block(head);
    let last = stage_refs.len() - 1;
    let mut src = in_p;
    for (i, &f) in stage_refs.iter().enumerate() {
        let dst = if i == last {
            out_p
        } else {
            bufs.expect("scratch for more than one stage")[i % 2]
        };
        let w = b.ins().iadd_imm_s(wbase, (layout.stages[i].0 * 4) as i64);
        // (input, weights, output, residual = this image's layer input,
        // all output rows (pixels for a flat stage): row0 = 0, rows)
        let s = &layer.stages[i];
        let (_, n) = convjit_jit::plan::call_range(s, 0, s.output.h);
        let rows = b.ins().iconst(I64, n as i64);
        b.ins().call(f, &[src, w, dst, in_p, zero, rows]);
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
    if let (Some((_, free)), Some(p)) = (mf_refs, scratch_ptr) {
        b.ins().call(free, &[p]);
    }
    b.ins().jump(ret_ok, &[]);
    fill_return(&mut b, ret_ok, OK);
    fill_return(&mut b, ret_nomem, ENOMEM);
    fill_return(&mut b, ret_inval, EINVAL);
    b.seal_all_blocks();
    b.finalize(cfg);
    let clif = define(module, id, func)?;
    Ok(Entry {
        clif,
        scratch_bytes,
    })
}

/// The permutation table of the packing function: for every float of each
/// stage's packed weights, 0 (zero padding), `1 + i` (element `i` of the
/// weight array) or `1 + nw + i` (element `i` of the bias array).
pub struct PackTable {
    pub stages: Vec<Vec<u32>>,
    /// Packed floats per stage.
    pub lens: Vec<usize>,
    /// Weight elements per stage, bias elements (if any).
    pub arrays: Vec<(usize, Option<usize>)>,
}

impl PackTable {
    /// Derives the table from [`plan::pack`] applied to index-valued
    /// arrays (the index in two 12-bit halves, so every value is exact in
    /// f32), then checks it against `pack` on random weights.
    pub fn new(layer: &Layer, plans: &[Plan]) -> Result<PackTable, AotError> {
        let mut t = PackTable {
            stages: Vec::new(),
            lens: Vec::new(),
            arrays: Vec::new(),
        };
        for (s, p) in layer.stages.iter().zip(plans) {
            let nw = s.weight_len();
            let nb = s.bias_key.as_ref().map(|_| s.output.c);
            if nw as u64 + nb.unwrap_or(0) as u64 >= u32::MAX as u64 {
                return Err(AotError::Layer(format!(
                    "stage '{}' has too many weights for a build without weights",
                    s.name
                )));
            }
            let lo = |n: usize| -> Vec<f32> { (0..n).map(|i| ((i & 0xfff) + 1) as f32).collect() };
            let hi = |n: usize| -> Vec<f32> { (0..n).map(|i| ((i >> 12) + 1) as f32).collect() };
            let idx = |l: f32, h: f32| ((h as usize - 1) << 12) | (l as usize - 1);
            let wl = plan::pack(p, &lo(nw), None);
            let wh = plan::pack(p, &hi(nw), None);
            let (bl, bh) = match nb {
                Some(nb) => {
                    let z = vec![0f32; nw];
                    (
                        plan::pack(p, &z, Some(&lo(nb))),
                        plan::pack(p, &z, Some(&hi(nb))),
                    )
                }
                None => (vec![0f32; wl.len()], vec![0f32; wl.len()]),
            };
            let mut entries = Vec::with_capacity(wl.len());
            for i in 0..wl.len() {
                let e = match (wl[i] != 0.0, bl[i] != 0.0) {
                    (true, false) => 1 + idx(wl[i], wh[i]),
                    (false, true) => 1 + nw + idx(bl[i], bh[i]),
                    (false, false) => 0,
                    (true, true) => {
                        return Err(AotError::Codegen(format!(
                            "stage '{}': packed float {i} mixes weight and bias",
                            s.name
                        )))
                    }
                };
                // At most 1 + 2^28 weights + 2^16 biases (the IR's limits).
                entries.push(u32::try_from(e).map_err(|_| {
                    AotError::Codegen(format!(
                        "stage '{}': gather index {e} beyond 32 bits",
                        s.name
                    ))
                })?);
            }
            // `pack` must be a gather (with zeros) for the table to express it.
            let mut rng = Rng::new(0x5eed ^ nw as u64);
            let w = rng.vec(nw, 1.0);
            let bias = nb.map(|n| rng.vec(n, 1.0));
            let want = plan::pack(p, &w, bias.as_deref());
            let got: Vec<f32> = entries
                .iter()
                .map(|&e| match e as usize {
                    0 => 0.0,
                    e if e <= nw => w[e - 1],
                    e => bias.as_ref().map_or(f32::NAN, |b| b[e - 1 - nw]),
                })
                .collect();
            if got.len() != want.len()
                || got
                    .iter()
                    .zip(&want)
                    .any(|(g, w)| g.to_bits() != w.to_bits())
            {
                return Err(AotError::Codegen(format!(
                    "stage '{}': weight packing is not a permutation of the arrays, \
                     so it cannot be done by a table at run time; build with weights",
                    s.name
                )));
            }
            t.lens.push(entries.len());
            t.stages.push(entries);
            t.arrays.push((nw, nb));
        }
        Ok(t)
    }
}

/// Bytes of one stage's entry in [`pack_stages`]: five little-endian u64s.
const PACK_STAGE_BYTES: usize = 40;

/// What the packing function needs of each stage, as read-only data
/// (one entry per stage, [`PACK_STAGE_BYTES`] each): the byte range of its
/// packed floats and alignment padding in the packed buffer and the table
/// (`start`, `end`), its weight elements (`nw`), and the byte offsets in
/// `arrays[]` of its weight and bias pointers (the bias offset is the
/// weight's where there is none: entries never exceed `nw` then).
pub fn pack_stages(layout: &PackLayout, table: &PackTable) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(table.arrays.len() * PACK_STAGE_BYTES);
    let mut k = 0;
    for (s, &(nw, nb)) in table.arrays.iter().enumerate() {
        let start = layout.stages[s].0 * 4;
        let end = layout.stages.get(s + 1).map_or(layout.total, |&(o, _)| o) * 4;
        let bias = if nb.is_some() { k + 1 } else { k };
        for v in [start, end, nw, k * 8, bias * 8] {
            bytes.extend_from_slice(&(v as u64).to_le_bytes());
        }
        k += 1 + nb.is_some() as usize;
    }
    bytes
}

/// `int convjit_LAYER_pack(const float *const arrays[], float *packed)`:
/// fills the whole packed buffer (`layout.total` floats) from the arrays
/// (per stage: weight, then bias if any) through the table. The code is
/// the same for any number of stages: a loop over `stages_id`'s entries
/// ([`pack_stages`]) around the gather loop (code per stage put values
/// and block parameters in every stage's blocks, and register allocation
/// took seconds for a thousand stages).
pub fn define_pack<M: Module>(
    module: &mut M,
    name: &str,
    table: &PackTable,
    table_id: DataId,
    stages_id: DataId,
) -> Result<String, AotError> {
    let ret = Some(AbiParam::new(I32));
    let id = module
        .declare_function(name, Linkage::Export, &sig(module, 2, ret))
        .map_err(cg_err)?;
    let mut func =
        Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig(module, 2, ret));
    let table_gv = module.declare_data_in_func(table_id, &mut func);
    let stages_gv = module.declare_data_in_func(stages_id, &mut func);
    let cfg = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let (arrays, packed) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let ret_inval = b.create_block();
    null_check(&mut b, &[arrays, packed], ret_inval);
    // Caller memory: loads that may trap (no flags). Our tables: notrap.
    let mf = MemFlagsData::new();
    let ours = MemFlagsData::new().with_notrap();
    let nptr = table
        .arrays
        .iter()
        .map(|(_, b)| 1 + b.is_some() as usize)
        .sum::<usize>();
    let done = b.create_block();
    // Every array pointer is checked before anything is written.
    let check = b.create_block();
    let off = b.append_block_param(check, I64);
    let check_next = b.create_block();
    let first_stage = b.create_block();
    let zero_i = b.ins().iconst(I64, 0);
    match nptr {
        0 => b.ins().jump(done, &[]),
        _ => b.ins().jump(check, &args(&[zero_i])),
    };
    b.switch_to_block(check);
    let a = b.ins().iadd(arrays, off);
    let p = b.ins().load(I64, mf, a, 0);
    b.ins().brif(p, check_next, &[], ret_inval, &[]);
    b.switch_to_block(check_next);
    let off_next = b.ins().iadd_imm_s(off, 8);
    let more = b
        .ins()
        .icmp_imm_u(IntCC::NotEqual, off_next, (nptr * 8) as i64);
    b.ins()
        .brif(more, check, &args(&[off_next]), first_stage, &[]);

    // The loop over stages: `d` is the byte offset of the stage's entry.
    b.switch_to_block(first_stage);
    let tbl = b.ins().symbol_value(I64, table_gv);
    let desc = b.ins().symbol_value(I64, stages_gv);
    let zero = b.ins().f32const(0.0);
    let stage = b.create_block();
    let d = b.append_block_param(stage, I64);
    let gather = b.create_block();
    let pos = b.append_block_param(gather, I64);
    let nonzero = b.create_block();
    let from_w = b.create_block();
    let from_b = b.create_block();
    let join = b.create_block();
    let v = b.append_block_param(join, F32);
    let next_stage = b.create_block();
    let zero_d = b.ins().iconst(I64, 0);
    b.ins().jump(stage, &args(&[zero_d]));

    b.switch_to_block(stage);
    let e_at = b.ins().iadd(desc, d);
    let [start, end, nw, wk, bk] = [0, 8, 16, 24, 32].map(|o| b.ins().load(I64, ours, e_at, o));
    let wa = b.ins().iadd(arrays, wk);
    let wptr = b.ins().load(I64, mf, wa, 0);
    let ba = b.ins().iadd(arrays, bk);
    let bptr = b.ins().load(I64, mf, ba, 0);
    let empty = b.ins().icmp(IntCC::Equal, start, end);
    b.ins()
        .brif(empty, next_stage, &[], gather, &args(&[start]));

    b.switch_to_block(gather);
    let ta = b.ins().iadd(tbl, pos);
    let e = b.ins().uload32(ours, ta, 0);
    b.ins().brif(e, nonzero, &[], join, &args(&[zero]));

    b.switch_to_block(nonzero);
    let off = b.ins().ishl_imm_u(e, 2);
    let is_w = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, e, nw);
    b.ins().brif(is_w, from_w, &[], from_b, &[]);

    b.switch_to_block(from_b);
    // bias[e - 1 - nw]
    let a = b.ins().iadd(bptr, off);
    let nw4 = b.ins().ishl_imm_u(nw, 2);
    let a = b.ins().isub(a, nw4);
    let x = b.ins().load(F32, mf, a, -4);
    b.ins().jump(join, &args(&[x]));

    b.switch_to_block(from_w);
    // weight[e - 1]
    let a = b.ins().iadd(wptr, off);
    let x = b.ins().load(F32, mf, a, -4);
    b.ins().jump(join, &args(&[x]));

    b.switch_to_block(join);
    let pa = b.ins().iadd(packed, pos);
    b.ins().store(mf, v, pa, 0);
    let pos_next = b.ins().iadd_imm_s(pos, 4);
    let more = b.ins().icmp(IntCC::NotEqual, pos_next, end);
    b.ins()
        .brif(more, gather, &args(&[pos_next]), next_stage, &[]);

    b.switch_to_block(next_stage);
    let d_next = b.ins().iadd_imm_s(d, PACK_STAGE_BYTES as i64);
    let n = (table.arrays.len() * PACK_STAGE_BYTES) as i64;
    let more = b.ins().icmp_imm_u(IntCC::NotEqual, d_next, n);
    b.ins().brif(more, stage, &args(&[d_next]), done, &[]);

    b.switch_to_block(done);
    let ok = b.ins().iconst(I32, OK);
    b.ins().return_(&[ok]);
    fill_return(&mut b, ret_inval, EINVAL);
    b.seal_all_blocks();
    b.finalize(cfg);
    define(module, id, func)
}
