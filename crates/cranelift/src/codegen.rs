//! CLIF emission for one stage, following its [`StagePlan`].
//!
//! The generated function is
//! `extern "C" fn(input: *const f32, weights: *const f32, output: *mut f32,
//! residual: *const f32, row0: usize, rows: usize)`: it computes output
//! rows `row0..row0 + rows` of one image (pixels, for a flat 1x1 stage:
//! [`convjit_plan::stage_plan::is_flat`]), `input` pointing at the image's input row 0
//! (for a band held in a buffer, where row 0 would be: only the rows those
//! outputs read are touched), `output` and `residual` at the first output
//! computed; `weights` points at the packed layout of
//! [`convjit_plan::stage_plan::pack`]. One function thus serves whole stages and every
//! row band of them (fusion, threads).
//!
//! The loops are the plan's [`LoopNest`] ([`StagePlan::nest`], shared with
//! the x86 generators), emitted as CLIF:
//!
//! ```text
//! [for each channel block]                   (here instead, for weights beyond
//!                                             L2: LoopNest::channels_outer)
//!   for oy in row0..row0+rows                (kernel rows valid for oy: computed per row;
//!                                             flat stages: blocks of the pixel range)
//!     for each PixelBlocks of the row        (compile time: conv rows per column
//!                                             segment, full blocks then the rest;
//!                                             depthwise rows in column blocks)
//!       for each channel group / run / repetition
//!         accumulators = bias
//!         for ky in valid rows               (run-time count)
//!           taps of the valid columns        (unrolled for depthwise; a reduction
//!                                             loop over kx*Ci for conv/pointwise)
//!         activation, + residual, store
//! ```
//! No bounds test is executed inside the accumulation: out-of-range taps
//! are simply not emitted (columns) or not iterated (rows).
//!
//! What is this generator's own: the SSA values and loop shape Cranelift
//! needs to select good instructions (see [`Gen::repeat`]), a reduction's
//! unrolling by `k_unroll` only, which depthwise rows it walks input
//! column by input column (at most [`MAX_ROW_WEIGHTS`] kernel columns),
//! and that broadcasts are never shared.

use convjit_ir::Activation;
use convjit_plan::stage_plan::{
    Block, BlockCols, InSrc, KernelRows, LoopNest, Offsets, OutDst, Pixels, Reduction, Run,
    RunLoop, StagePlan, Strategy, LANES,
};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I64, I8X16};
use cranelift_codegen::ir::{
    BlockArg, ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};

/// A loop trip count, known at compile time or not.
#[derive(Clone, Copy)]
enum Count {
    Const(usize),
    Dyn(Value),
}

struct Gen<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    p: &'a StagePlan,
    /// The plan's loops.
    n: &'a LoopNest<'a>,
    mf: MemFlagsData,
    /// Accumulators live in the loops being emitted (see [`Gen::repeat`]).
    carried: Vec<Variable>,
    /// The target has a fused multiply-add instruction; without one (x86
    /// without FMA) Cranelift would lower `fma` to calls of `fmaf`, so the
    /// generator emits a multiply and an add instead.
    fused: bool,
}

/// Kernel columns up to which [`Gen::dw_taps`] walks input columns
/// ([`StagePlan::dw_input_columns`]), keeping a kernel row's weight
/// vectors in registers beside 8 accumulators, an input and its copy (16
/// vector registers; at 6 the allocator spilled).
const MAX_ROW_WEIGHTS: usize = 5;

/// Emits the body of the stage function into `b` (whose signature has the
/// parameters already: the first six are read, `scratch` is not). `fused`: emit `fma` (else `fmul` + `fadd`, for
/// targets without a fused multiply-add instruction).
pub fn emit(plan: &StagePlan, b: &mut FunctionBuilder, fused: bool) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let (input, weights, output, residual, row0, rows) = (
        params[0], params[1], params[2], params[3], params[4], params[5],
    );
    let nest = plan.nest();
    let mut g = Gen {
        b,
        p: plan,
        n: &nest,
        mf: MemFlagsData::new().with_notrap(),
        carried: Vec::new(),
        fused,
    };
    // Output rows (pixels, flat) are addressed from where row 0 would be.
    let unit = if plan.flat { 1 } else { plan.wo };
    let skip = g.b.ins().imul_imm_s(row0, (unit * plan.co * 4) as i64);
    let out_base = g.b.ins().isub(output, skip);
    let res_delta = plan.residual.then(|| g.b.ins().isub(residual, output));
    let rows = Rows { row0, count: rows };
    g.body(input, weights, out_base, res_delta, rows);
    g.b.ins().return_(&[]);
}

impl Gen<'_, '_> {
    fn var(&mut self, init: Value) -> Variable {
        let v = self.b.declare_var(I64);
        self.b.def_var(v, init);
        v
    }

    fn get(&mut self, v: Variable) -> Value {
        self.b.use_var(v)
    }

    fn add_imm(&mut self, v: Variable, imm: i64) {
        if imm != 0 {
            let x = self.b.use_var(v);
            let y = self.b.ins().iadd_imm_s(x, imm);
            self.b.def_var(v, y);
        }
    }

    fn offset(&mut self, base: Value, imm: i64) -> Value {
        if imm == 0 {
            base
        } else {
            self.b.ins().iadd_imm_s(base, imm)
        }
    }

    /// `x * y + a`, fused where the target can.
    fn fma(&mut self, x: Value, y: Value, a: Value) -> Value {
        if self.fused {
            self.b.ins().fma(x, y, a)
        } else {
            let m = self.b.ins().fmul(x, y);
            self.b.ins().fadd(m, a)
        }
    }

    /// Loads `ty` at `ptr + off` bytes (see [`mem`]).
    fn load(&mut self, ty: Type, ptr: Value, off: i64) -> Value {
        load(self.b, self.mf, ty, ptr, off)
    }

    /// Runs `body` `count` times: straight-line for 0 or 1, else a loop
    /// tested at the top (so a zero run-time count runs nothing):
    ///
    /// ```text
    ///     jump head(acc_init..)
    /// head(acc..):  brif ctr, body, exit      ; exit reads head's params
    /// body:         ...; jump head(acc_new..)
    /// ```
    ///
    /// The vector variables in `self.carried` (accumulators) travel as
    /// explicit parameters of `head`. This shape matters for instruction
    /// selection: Cranelift folds a load into its user (`vbroadcastss mem`,
    /// `vfmadd132ps mem`) only if the loaded value is used once, and it
    /// counts a value as used more than once whenever anything computed from
    /// it is (transitively, up to block parameters). A bottom-tested loop
    /// passes the body's final accumulators to both the back edge and the
    /// exit (Cranelift removes any single-predecessor "latch" block that
    /// would hide this), which marks every load of the body as used twice.
    /// Here the body's values reach only the back edge.
    fn repeat(&mut self, count: Count, body: &mut dyn FnMut(&mut Self)) {
        let n = match count {
            Count::Const(0) => return,
            Count::Const(1) => return body(self),
            Count::Const(n) => self.b.ins().iconst(I64, n as i64),
            Count::Dyn(v) => v,
        };
        let carried = self.carried.clone();
        let ctr = self.var(n);
        let head = self.b.create_block();
        let blk = self.b.create_block();
        let exit = self.b.create_block();
        let hp: Vec<Value> = carried
            .iter()
            .map(|_| self.b.append_block_param(head, F32X4))
            .collect();
        let args = |g: &mut Self| -> Vec<BlockArg> {
            carried
                .iter()
                .map(|&v| BlockArg::Value(g.b.use_var(v)))
                .collect()
        };
        let init = args(self);
        self.b.ins().jump(head, &init);
        self.b.switch_to_block(head);
        for (&var, &v) in carried.iter().zip(&hp) {
            self.b.def_var(var, v);
        }
        let c = self.get(ctr);
        self.b.ins().brif(c, blk, &[], exit, &[]);
        self.b.switch_to_block(blk);
        self.b.seal_block(blk);
        body(self);
        let c = self.get(ctr);
        let c = self.b.ins().iadd_imm_s(c, -1);
        self.b.def_var(ctr, c);
        let fin = args(self);
        self.b.ins().jump(head, &fin);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// The whole loop nest. `out_base` is where output row 0 would be.
    fn body(
        &mut self,
        input: Value,
        weights: Value,
        out_base: Value,
        res_delta: Option<Value>,
        rows: Rows,
    ) {
        if self.n.channels_outer {
            // Each channel block's weights stay in cache while every
            // pixel of the rows streams past them.
            let grouped = self.n.groups > 1;
            self.channel_blocks(weights, &mut |g, r, w, bias, choff, group_in| {
                g.pixel_blocks(input, out_base, res_delta, rows, &mut |g, k, i, o| {
                    let o = g.b.ins().iadd(o, choff);
                    let i = match grouped {
                        true => g.b.ins().iadd(i, group_in),
                        false => i,
                    };
                    let w0 = g.tap_weights(r.run, k, w);
                    g.block(r.run, k, i, w0, o, bias);
                });
            });
        } else {
            self.pixel_blocks(input, out_base, res_delta, rows, &mut |g, k, i, o| {
                g.channels(k, i, o, weights);
            });
        }
    }

    /// Every register block of pixels of the rows ([`Pixels`]), calling
    /// `inner` with the block's arguments and its input and output pixel
    /// pointers.
    #[allow(clippy::type_complexity)]
    fn pixel_blocks(
        &mut self,
        img: Value,
        oimg: Value,
        res_delta: Option<Value>,
        rows: Rows,
        inner: &mut dyn FnMut(&mut Self, &BlockArgs, Value, Value),
    ) {
        let p = self.p;
        let r = match &self.n.pixels {
            &Pixels::Flat { px, in_px, out_px } => {
                return self.flat_blocks((px, in_px, out_px), img, oimg, res_delta, rows, inner)
            }
            Pixels::Rows(r) => r,
        };
        assert!(r.row_vectors.is_none(), "row vectors are x86's");
        let oy = self.var(rows.row0);
        self.repeat(Count::Dyn(rows.count), &mut |g| {
            let oyv = g.get(oy);
            let (nky, wk0, in_row) = match r.kernel_rows {
                KernelRows::All => {
                    let off = g.b.ins().imul_imm_s(oyv, p.sh as i64 * r.in_row);
                    let row = g.b.ins().iadd(img, off);
                    (Count::Const(p.kh), None, row)
                }
                KernelRows::PerRow => {
                    let (ky0, nky, iy) = g.row_taps(oyv);
                    let off = g.b.ins().imul_imm_s(iy, r.in_row);
                    let row = g.b.ins().iadd(img, off);
                    let wk0 = g.b.ins().imul_imm_s(ky0, p.kw as i64);
                    (Count::Dyn(nky), Some(wk0), row)
                }
            };
            let off = g.b.ins().imul_imm_s(oyv, r.out_row);
            let out_row = g.b.ins().iadd(oimg, off);
            for blocks in &r.blocks {
                let ip = g.offset(in_row, blocks.in_off);
                let ip = g.var(ip);
                let op = g.offset(out_row, blocks.out_off);
                let op = g.var(op);
                g.repeat(Count::Const(blocks.count), &mut |g| {
                    let (i, o) = (g.get(ip), g.get(op));
                    let k = BlockArgs {
                        block: &blocks.block,
                        nky,
                        wk0,
                        res_delta,
                    };
                    inner(g, &k, i, o);
                    g.add_imm(ip, blocks.in_step);
                    g.add_imm(op, blocks.out_step);
                });
            }
            g.add_imm(oy, 1);
        });
    }

    /// A flat stage ([`Pixels::Flat`]: `px` pixels a block, `in_px` and
    /// `out_px` bytes a pixel): the pixels `rows.row0..+rows.count` (a
    /// run-time range, across rows) in blocks of `px`. The last block is
    /// moved back to end at the last pixel, recomputing a few pixels with
    /// the same result, so every block is full; a range shorter than a
    /// block runs pixel by pixel.
    #[allow(clippy::type_complexity)]
    fn flat_blocks(
        &mut self,
        (px, in_px, out_px): (usize, i64, i64),
        img: Value,
        out_base: Value,
        res_delta: Option<Value>,
        rows: Rows,
        inner: &mut dyn FnMut(&mut Self, &BlockArgs, Value, Value),
    ) {
        let n = rows.count;
        let end = self.b.ins().iadd(rows.row0, n);
        let last = self.b.ins().iadd_imm_s(end, -(px as i64));
        let long = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, n, px as i64);
        let zero = self.b.ins().iconst(I64, 0);
        let blocks = self.b.ins().iadd_imm_s(n, px as i64 - 1);
        let blocks = self.b.ins().udiv_imm_s(blocks, px as i64);
        let blocks = self.b.ins().select(long, blocks, zero);
        let singles = self.b.ins().select(long, zero, n);
        for (count, npx) in [(blocks, px), (singles, 1)] {
            let block = Block::flat(npx);
            let at = self.var(rows.row0);
            self.repeat(Count::Dyn(count), &mut |g| {
                let a = g.get(at);
                // Full blocks only: the last starts at end - px at most.
                let a = if npx > 1 { g.b.ins().smin(a, last) } else { a };
                let i = g.b.ins().imul_imm_s(a, in_px);
                let i = g.b.ins().iadd(img, i);
                let o = g.b.ins().imul_imm_s(a, out_px);
                let o = g.b.ins().iadd(out_base, o);
                // A 1x1 kernel: one kernel row.
                let k = BlockArgs {
                    block: &block,
                    nky: Count::Const(1),
                    wk0: None,
                    res_delta,
                };
                inner(g, &k, i, o);
                g.add_imm(at, npx as i64);
            });
        }
    }

    /// Conv/pointwise with channel blocks outermost: every group and run
    /// repetition ([`LoopNest::runs`]), calling `inner` with its run,
    /// weights, bias, output channel byte offset and its group's input
    /// channel byte offset.
    #[allow(clippy::type_complexity)]
    fn channel_blocks(
        &mut self,
        weights: Value,
        inner: &mut dyn FnMut(&mut Self, &RunLoop, Value, Option<Value>, Value, Value),
    ) {
        let n = self.n;
        // Every output of a group reads all of the group's inputs.
        debug_assert!(n
            .runs
            .iter()
            .all(|r| r.base.input == 0 && r.step.input == 0));
        let zero = self.b.ins().iconst(I64, 0);
        let (gi, go, gw) = (self.var(zero), self.var(zero), self.var(weights));
        let gb = n.bias.map(|off| {
            let v = self.offset(weights, off);
            self.var(v)
        });
        self.repeat(Count::Const(n.groups), &mut |g| {
            let (gov, gwv) = (g.get(go), g.get(gw));
            let gbv = gb.map(|v| g.get(v));
            for r in &n.runs {
                let rw = g.offset(gwv, r.base.weights);
                let rw = g.var(rw);
                let rb = gbv.map(|b| {
                    let v = g.offset(b, r.base.bias);
                    g.var(v)
                });
                let ro = g.offset(gov, r.base.output);
                let ro = g.var(ro);
                g.repeat(Count::Const(r.count), &mut |g| {
                    let (w, o, i) = (g.get(rw), g.get(ro), g.get(gi));
                    let bias = rb.map(|v| g.get(v));
                    inner(g, r, w, bias, o, i);
                    g.advance([None, Some(ro), Some(rw), rb], r.step);
                });
            }
            g.advance([Some(gi), Some(go), Some(gw), gb], n.group_step);
        });
    }

    /// Moves the input, output, weights and bias variables that are
    /// given on by `step`'s offsets.
    fn advance(&mut self, vars: [Option<Variable>; 4], step: Offsets) {
        let [i, o, w, b] = vars;
        for (v, d) in [
            (i, step.input),
            (o, step.output),
            (w, step.weights),
            (b, step.bias),
        ] {
            if let Some(v) = v {
                self.add_imm(v, d);
            }
        }
    }

    /// A block's weights: its run repetition's weights `w` advanced to the
    /// first valid tap (the row's first valid kernel row, the block's
    /// first kernel column).
    fn tap_weights(&mut self, run: &Run, k: &BlockArgs, w: Value) -> Value {
        let tap_bytes = run.tap_bytes(self.p.ci_per_tap) as i64;
        let kx0 = k.block.cols.kx0() as i64;
        match k.wk0 {
            Some(wk0) => {
                let t = self.b.ins().iadd_imm_s(wk0, kx0);
                let t = self.b.ins().imul_imm_s(t, tap_bytes);
                self.b.ins().iadd(w, t)
            }
            None => self.offset(w, kx0 * tap_bytes),
        }
    }

    /// For output row `oy` (run time): first valid kernel row, number of
    /// valid kernel rows, and the input row of the first valid one.
    fn row_taps(&mut self, oy: Value) -> (Value, Value, Value) {
        let p = self.p;
        let (sh, dil_h, kh) = (p.sh as i64, p.dil_h as i64, p.kh as i64);
        let b = &mut *self.b;
        let zero = b.ins().iconst(I64, 0);
        let oys = b.ins().imul_imm_s(oy, sh);
        // Rows above the input: t = pt - oy*sh; ky0 = ceil(max(t, 0) / dil_h).
        let pt = b.ins().iconst(I64, p.pt as i64);
        let t = b.ins().isub(pt, oys);
        let tpos = b.ins().smax(t, zero);
        let ky0 = if dil_h == 1 {
            tpos
        } else {
            let x = b.ins().iadd_imm_s(tpos, dil_h - 1);
            b.ins().udiv_imm_s(x, dil_h)
        };
        // Rows below: u = (h - 1 + pt) - oy*sh; ky1 = min(floor(u / dil_h) + 1, kh), 0 if u < 0.
        let last = b.ins().iconst(I64, p.h as i64 - 1 + p.pt as i64);
        let u = b.ins().isub(last, oys);
        let upos = b.ins().smax(u, zero);
        let q = if dil_h == 1 {
            upos
        } else {
            b.ins().udiv_imm_s(upos, dil_h)
        };
        let q = b.ins().iadd_imm_s(q, 1);
        let khv = b.ins().iconst(I64, kh);
        let ky1 = b.ins().umin(q, khv);
        let neg = b.ins().icmp_imm_s(IntCC::SignedLessThan, u, 0);
        let ky1 = b.ins().select(neg, zero, ky1);
        let d = b.ins().isub(ky1, ky0);
        let nky = b.ins().smax(d, zero);
        // Input row of the first valid tap: oy*sh - pt + ky0*dil_h.
        let k = b.ins().imul_imm_s(ky0, dil_h);
        let iy = b.ins().isub(k, t);
        (ky0, nky, iy)
    }

    /// All channel blocks of one pixel block: groups, runs, repetitions
    /// ([`LoopNest::runs`]).
    fn channels(&mut self, k: &BlockArgs, in_px: Value, out_px: Value, weights: Value) {
        let n = self.n;
        let gin = self.var(in_px);
        let gout = self.var(out_px);
        let gw = self.var(weights);
        let gb = match n.bias {
            Some(off) => {
                let v = self.offset(weights, off);
                Some(self.var(v))
            }
            None => None,
        };
        self.repeat(Count::Const(n.groups), &mut |g| {
            let (gi, go, gwv) = (g.get(gin), g.get(gout), g.get(gw));
            let gbv = gb.map(|v| g.get(v));
            for r in &n.runs {
                let ri = g.offset(gi, r.base.input);
                let ri = g.var(ri);
                let ro = g.offset(go, r.base.output);
                let ro = g.var(ro);
                let rw = g.offset(gwv, r.base.weights);
                let rw = g.var(rw);
                let rb = gbv.map(|b| {
                    let v = g.offset(b, r.base.bias);
                    g.var(v)
                });
                g.repeat(Count::Const(r.count), &mut |g| {
                    let w0 = g.get(rw);
                    let w0 = g.tap_weights(r.run, k, w0);
                    let (i, o) = (g.get(ri), g.get(ro));
                    let bias = rb.map(|v| g.get(v));
                    g.block(r.run, k, i, w0, o, bias);
                    g.advance([Some(ri), Some(ro), Some(rw), rb], r.step);
                });
            }
            g.advance([Some(gin), Some(gout), Some(gw), gb], n.group_step);
        });
    }

    /// One register block: `k.block.npx` pixels x `run.units` vectors.
    fn block(
        &mut self,
        run: &Run,
        k: &BlockArgs,
        in_ptr: Value,
        w_ptr: Value,
        out_ptr: Value,
        bias: Option<Value>,
    ) {
        let p = self.p;
        let nu = run.units.len();
        let npx = k.block.npx;
        let init: Vec<Value> = (0..nu)
            .map(|u| match bias {
                Some(b) => self.load(F32X4, b, run.unit_bytes(u) as i64),
                None => {
                    let z = self.b.ins().f32const(0.0);
                    self.b.ins().splat(F32X4, z)
                }
            })
            .collect();
        let acc: Vec<Vec<Variable>> = (0..npx)
            .map(|_| {
                init.iter()
                    .map(|&v| {
                        let var = self.b.declare_var(F32X4);
                        self.b.def_var(var, v);
                        var
                    })
                    .collect()
            })
            .collect();
        self.carried = acc.iter().flatten().copied().collect();
        let in_ky = self.n.in_kernel_row;
        let w_ky = p.kw as i64 * run.tap_bytes(p.ci_per_tap) as i64;
        // The valid kernel rows, `each` emitting one's taps.
        let kernel_rows = |g: &mut Self, each: &mut dyn FnMut(&mut Self, Value, Value)| {
            let iky = g.var(in_ptr);
            let wky = g.var(w_ptr);
            g.repeat(k.nky, &mut |g| {
                let (i, w) = (g.get(iky), g.get(wky));
                each(g, i, w);
                g.add_imm(iky, in_ky);
                g.add_imm(wky, w_ky);
            });
        };
        match (p.strategy, &k.block.cols) {
            (Strategy::Reduce, cols) => match p.reduction(run, cols) {
                Reduction::None => {}
                Reduction::Contiguous { len } => kernel_rows(self, &mut |g, i, w| {
                    g.reduce(&acc, npx, run, len, i, w);
                }),
                Reduction::Taps {
                    taps,
                    len,
                    in_step,
                    w_step,
                } => kernel_rows(self, &mut |g, i, w| {
                    let it = g.var(i);
                    let wt = g.var(w);
                    g.repeat(Count::Const(taps), &mut |g| {
                        let (i, w) = (g.get(it), g.get(wt));
                        g.reduce(&acc, npx, run, len, i, w);
                        g.add_imm(it, in_step);
                        g.add_imm(wt, w_step);
                    });
                }),
                Reduction::Columns { .. } => {
                    unreachable!("Cranelift's conv blocks read the same kernel columns")
                }
            },
            (_, BlockCols::PerPixel(cols)) => kernel_rows(self, &mut |g, i, w| {
                g.dw_taps(run, &acc, cols, i, w);
            }),
            (_, BlockCols::Same { .. }) => unreachable!("depthwise blocks have per-pixel columns"),
        }
        self.carried.clear();
        self.epilogue(run, &acc, k, out_ptr);
    }

    /// Conv/pointwise accumulation over `len` contiguous input scalars per
    /// pixel (input stride 4 bytes, weights a step of `run`'s units apart).
    ///
    /// Each FMA gets its own scalar load + splat: used once, the load folds
    /// into `vbroadcastss mem`, and the broadcast register (which `fma`
    /// overwrites with its result) is dead anyway, so no register copy is
    /// needed. A shared broadcast would cost a `movaps` per FMA.
    fn reduce(
        &mut self,
        acc: &[Vec<Variable>],
        npx: usize,
        run: &Run,
        len: usize,
        i: Value,
        w: Value,
    ) {
        let p = self.p;
        let nu = run.units.len();
        let w_step = run.tap_bytes(1) as i64;
        let pstride = (p.sw * p.ci * 4) as i64;
        let unroll = p.sched.k_unroll.max(1);
        let step = |g: &mut Self, i: Value, w: Value, j: usize| {
            for u in 0..nu {
                let wv = g.load(F32X4, w, j as i64 * w_step + run.unit_bytes(u) as i64);
                for (px, row) in acc.iter().enumerate().take(npx) {
                    let s = g.load(F32, i, px as i64 * pstride + j as i64 * 4);
                    let x = g.b.ins().splat(F32X4, s);
                    let a = g.b.use_var(row[u]);
                    let r = g.fma(x, wv, a);
                    g.b.def_var(row[u], r);
                }
            }
        };
        let full = len / unroll;
        let rest = len % unroll;
        let iv = self.var(i);
        let wv = self.var(w);
        if full > 0 {
            self.repeat(Count::Const(full), &mut |g| {
                let (i, w) = (g.get(iv), g.get(wv));
                for j in 0..unroll {
                    step(g, i, w, j);
                }
                g.add_imm(iv, (unroll * 4) as i64);
                g.add_imm(wv, unroll as i64 * w_step);
            });
        }
        let (i, w) = (self.get(iv), self.get(wv));
        for j in 0..rest {
            step(self, i, w, j);
        }
    }

    /// Depthwise taps of one kernel row (`i`, `w` point at its input and
    /// weights), unrolled: input column by input column where the plan
    /// has them and the row's weights fit ([`StagePlan::dw_input_columns`]),
    /// else kernel column by kernel column ([`StagePlan::dw_taps`]): each
    /// unit's weight vector, then one FMA per pixel for which that column
    /// is valid.
    ///
    /// Each input vector is loaded into a fresh register that `fma` (which
    /// ties its result to a multiplicand) overwrites with the new
    /// accumulator, so the weight vectors, shared by the block's pixels,
    /// need no copies; an input shared by several units is copied instead.
    fn dw_taps(
        &mut self,
        run: &Run,
        acc: &[Vec<Variable>],
        cols: &[(usize, usize)],
        i: Value,
        w: Value,
    ) {
        let p = self.p;
        if p.kw <= MAX_ROW_WEIGHTS {
            if let Some(by_input) = p.dw_input_columns(run, cols) {
                return self.dw_taps_by_column(&run.units[0].input, &by_input, acc, i, w);
            }
        }
        let taps = p.dw_taps(run, cols);
        for col in &taps.columns {
            let wv: Vec<Value> = col
                .weights
                .iter()
                .map(|&at| self.load(F32X4, w, at))
                .collect();
            for &(px, base) in &col.pixels {
                // Units reading the same channels (multiplier 2, 3) share
                // one load. Broadcasts are not shared: a shared splat
                // cannot fold its load (`vbroadcastss mem`) and costs a
                // shuffle instead.
                for t in &taps.inputs {
                    let mut shared = None;
                    for u in t.units.clone() {
                        let x = match shared {
                            Some(x) => x,
                            None => {
                                let x = self.input(&t.src, i, base);
                                if !matches!(t.src, InSrc::Splat(_)) {
                                    shared = Some(x);
                                }
                                x
                            }
                        };
                        let a = self.b.use_var(acc[px][u]);
                        let r = self.fma(x, wv[u], a);
                        self.b.def_var(acc[px][u], r);
                    }
                }
            }
        }
    }

    /// [`Gen::dw_taps`] input column by input column (`src` the one
    /// unit's input): each input vector is loaded once and feeds every
    /// (pixel, kernel column) pair that reads it, with all the row's
    /// weight vectors in registers.
    fn dw_taps_by_column(
        &mut self,
        src: &InSrc,
        by_input: &convjit_plan::stage_plan::DwInputColumns,
        acc: &[Vec<Variable>],
        i: Value,
        w: Value,
    ) {
        let wv: Vec<Value> = by_input
            .weights
            .iter()
            .map(|&at| self.load(F32X4, w, at))
            .collect();
        for column in &by_input.columns {
            let x = self.input(src, i, column.in_off);
            for &(px, kx) in &column.uses {
                let a = self.b.use_var(acc[px][0]);
                let r = self.fma(x, wv[kx], a);
                self.b.def_var(acc[px][0], r);
            }
        }
    }

    fn input(&mut self, src: &InSrc, ptr: Value, base: i64) -> Value {
        let mf = self.mf;
        let b = &mut *self.b;
        match *src {
            InSrc::Vector(c) => load(b, mf, F32X4, ptr, base + c as i64 * 4),
            InSrc::Splat(c) => {
                let s = load(b, mf, F32, ptr, base + c as i64 * 4);
                b.ins().splat(F32X4, s)
            }
            InSrc::Lanes(c, n) => {
                let s = load(b, mf, F32, ptr, base + c as i64 * 4);
                let mut v = b.ins().scalar_to_vector(F32X4, s);
                for l in 1..n {
                    let s = load(b, mf, F32, ptr, base + (c + l) as i64 * 4);
                    v = b.ins().insertlane(v, s, l as u8);
                }
                v
            }
            InSrc::None => unreachable!("conv units have no vector input"),
        }
    }

    fn epilogue(&mut self, run: &Run, acc: &[Vec<Variable>], k: &BlockArgs, out_ptr: Value) {
        let p = self.p;
        let mf = self.mf;
        let consts = |b: &mut FunctionBuilder, x: f32| {
            let s = b.ins().f32const(x);
            b.ins().splat(F32X4, s)
        };
        let zero = (p.activation != Activation::None).then(|| consts(self.b, 0.0));
        let six = (p.activation == Activation::Relu6).then(|| consts(self.b, 6.0));
        let res = k.res_delta.map(|d| self.b.ins().iadd(out_ptr, d));
        for (px, row) in acc.iter().enumerate().take(k.block.npx) {
            let pix = (px * p.co * 4) as i64;
            let b = &mut *self.b;
            let vals: Vec<Value> = row
                .iter()
                .take(run.units.len())
                .map(|&var| {
                    let mut v = b.use_var(var);
                    // NaN propagates (the contract): a comparison with NaN
                    // is false, so each select keeps `v` then. On x64 the
                    // two shapes lower to one `maxps zero, v` and one
                    // `minps six, v` (x86 returns the second source for
                    // NaN); Cranelift's `fmax`/`fmin` propagate NaN too,
                    // but lower there to eight instructions each.
                    if let Some(z) = zero {
                        // bitselect(v < 0, 0, v)
                        let m = b.ins().fcmp(FloatCC::LessThan, v, z);
                        let m = b.ins().bitcast(F32X4, MemFlagsData::new(), m);
                        v = b.ins().bitselect(m, z, v);
                    }
                    if let Some(six) = six {
                        // bitselect(6 < v, 6, v)
                        let m = b.ins().fcmp(FloatCC::LessThan, six, v);
                        let m = b.ins().bitcast(F32X4, MemFlagsData::new(), m);
                        v = b.ins().bitselect(m, six, v);
                    }
                    v
                })
                .collect();
            // Stores a whole vector at output channel `c`, plus the residual.
            let put = |b: &mut FunctionBuilder, mut v: Value, c: usize| {
                let off = pix + c as i64 * 4;
                if let Some(r) = res {
                    let rv = load(b, mf, F32X4, r, off);
                    v = b.ins().fadd(v, rv);
                }
                store(b, mf, v, out_ptr, off);
            };
            for (u, unit) in run.units.iter().enumerate() {
                let v = vals[u];
                match &unit.out {
                    OutDst::Vector(c) => put(b, v, *c),
                    OutDst::Lanes(lanes) => {
                        for &(l, c) in lanes {
                            let off = pix + c as i64 * 4;
                            let mut s = b.ins().extractlane(v, l);
                            if let Some(r) = res {
                                let rs = load(b, mf, F32, r, off);
                                s = b.ins().fadd(s, rs);
                            }
                            store(b, mf, s, out_ptr, off);
                        }
                    }
                    OutDst::Pair(c) => {
                        let (lo, hi) = interleave(b, v, vals[u + 1]);
                        put(b, lo, *c);
                        put(b, hi, c + LANES);
                    }
                    OutDst::Paired => {}
                }
            }
        }
    }
}

/// The address `ptr + off` as a base and a 32-bit immediate, the only
/// form a load or store encodes. Every load and store of the generated
/// code goes through here: an offset that fits i32 becomes the immediate,
/// any other is first added to the base in a 64-bit register (never cast:
/// `as i32` on 2^31 bytes wrapped to an access 4 GiB below the buffer).
///
/// Why the i64 arithmetic itself cannot overflow (here and in every
/// `imul_imm`/`iadd_imm` of this file): a validated layer
/// ([`convjit_ir::check_layer`]) has every size, stride, dilation and
/// multiplier at most 2^16, padding at most a kernel's extent (< 2^32),
/// and at most 2^28 elements (2^30 bytes) per tensor or weight array. An
/// offset is a sum of a few terms, each a position (a row or column with
/// padding, a kernel tap times a dilation: < 2^33) times a byte stride
/// (at most a row, 2^30 bytes, or a pixel, 2^18), or a weight offset
/// (< 2^34 bytes even with lane padding): below 2^63 with a wide margin.
fn mem(b: &mut FunctionBuilder, ptr: Value, off: i64) -> (Value, i32) {
    match i32::try_from(off) {
        Ok(imm) => (ptr, imm),
        Err(_) => (b.ins().iadd_imm_s(ptr, off), 0),
    }
}

fn load(b: &mut FunctionBuilder, mf: MemFlagsData, ty: Type, ptr: Value, off: i64) -> Value {
    let (p, imm) = mem(b, ptr, off);
    b.ins().load(ty, mf, p, imm)
}

fn store(b: &mut FunctionBuilder, mf: MemFlagsData, v: Value, ptr: Value, off: i64) {
    let (p, imm) = mem(b, ptr, off);
    b.ins().store(mf, v, p, imm);
}

/// `([a0 b0 a1 b1], [a2 b2 a3 b3])`: two shuffles (`unpcklps`/`unpckhps`
/// patterns, which x64 lowers to `punpck{l,h}dq`).
fn interleave(b: &mut FunctionBuilder, a: Value, c: Value) -> (Value, Value) {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let bytes = |v: Value, b: &mut FunctionBuilder| b.ins().bitcast(I8X16, le, v);
    let (x, y) = (bytes(a, b), bytes(c, b));
    // Byte masks: lane i of `a` is bytes 4i..4i+4, lane i of `c` 16+4i...
    let mask = |lanes: [u8; 4], b: &mut FunctionBuilder| {
        let m: Vec<u8> = lanes
            .iter()
            .flat_map(|&l| (0..4).map(move |k| l * 4 + k))
            .collect();
        b.func.dfg.immediates.push(ConstantData::from(m))
    };
    let lo = mask([0, 4, 1, 5], b);
    let hi = mask([2, 6, 3, 7], b);
    let lo = b.ins().shuffle(x, y, lo);
    let hi = b.ins().shuffle(x, y, hi);
    (
        b.ins().bitcast(F32X4, le, lo),
        b.ins().bitcast(F32X4, le, hi),
    )
}

/// The output rows a function call computes (run-time values).
#[derive(Clone, Copy)]
struct Rows {
    row0: Value,
    count: Value,
}

/// A register block to emit: the plan's [`Block`] and this generator's
/// run-time values for it.
struct BlockArgs<'n> {
    /// Its pixels and their kernel columns.
    block: &'n Block,
    /// Valid kernel rows.
    nky: Count,
    /// `ky0 * kw` at run time when rows have borders
    /// ([`KernelRows::PerRow`]).
    wk0: Option<Value>,
    res_delta: Option<Value>,
}

#[cfg(test)]
mod tests {
    use convjit_ir::compile_source;
    use convjit_plan::stage_plan;

    /// On x64 each activation is one `maxps` (and one `minps` for relu6)
    /// per vector: Cranelift matches the `bitselect(fcmp)` shapes of
    /// [`Gen::epilogue`] (in their NaN-propagating operand order) rather
    /// than emitting compares and blends.
    #[test]
    fn activations_lower_to_one_max_and_one_min_on_x64() {
        use cranelift_codegen::control::ControlPlane;
        use cranelift_codegen::ir::{Function, UserFuncName};
        use cranelift_codegen::Context;
        let isa = crate::isa().unwrap();
        if isa.name() != "x64" {
            return println!("note: not an x64 host: lowering not checked");
        }
        let l = compile_source("layer l { input 3x5x8\n p: pointwise 8, bias, relu6 }")
            .unwrap()
            .remove(0);
        let p = stage_plan::plan_for_cranelift(&l.stages[0]);
        let mut func =
            Function::with_name_signature(UserFuncName::user(0, 0), crate::host_signature(&isa));
        let mut fctx = cranelift_frontend::FunctionBuilderContext::new();
        let fused = crate::fused_fma(&*isa);
        crate::emit_function(&mut func, &mut fctx, &p, isa.frontend_config(), fused);
        let mut ctx = Context::for_function(func);
        ctx.set_disasm(true);
        let code = ctx.compile(&*isa, &mut ControlPlane::default()).unwrap();
        let vcode = code.vcode.clone().unwrap();
        let count = |op: &str| vcode.lines().filter(|l| l.contains(op)).count();
        let (max, min) = (count("maxps"), count("minps"));
        assert!(max > 0 && max == min, "{max} maxps, {min} minps:\n{vcode}");
        assert_eq!(count("cmpps") + count("blendv"), 0, "{vcode}");
    }
}
