//! One register block: accumulators from the bias, the loop over its
//! valid kernel rows (conv and pointwise reductions, depthwise taps), and
//! the epilogue; and the reduction over input channels that conv and
//! pointwise blocks run per kernel row or column.

use super::{
    BlockArgs, Count, Ctr, Gen, Slot, Src, CKX, CKY, CRED, IP, RUN_B, RUN_I, RUN_O, RUN_W, WP,
};
#[cfg(doc)]
use convjit_plan::stage_plan::StagePlan;
use convjit_plan::stage_plan::{BlockCols, NextWeights, OutDst, Reduction, Run, Strategy};
use iced_x86::{Code, Instruction as I, Register as R};

/// Reduction steps emitted without a loop (see [`Gen::reduce`]): 3x3x3
/// and 5x5x3 tap rows (conv1 224x224x3 151 -> 131 us). Not more: 32 steps
/// (about 1,400 instructions of 6-7 bytes a block) made MobileNet v1's
/// 112x112x32 -> 64 layer run 486 -> 622 us, likely decoded again each
/// time instead of replayed from the micro-op cache.
const MAX_STRAIGHT_STEPS: usize = 16;

impl Gen<'_> {
    /// The accumulators of a block of `npx` pixels x the run's units
    /// (`[pixel][unit]`, registers from 0), each unit's bias (at `r14`)
    /// or zero; in a chunked reduction's later passes, the partial sums
    /// the pass before stored at the output (`r12`, each pixel's at its
    /// byte offset in `outs`).
    fn init_accumulators(&mut self, run: &Run, npx: usize, outs: &[i64]) -> Vec<Vec<R>> {
        let nu = run.units.len();
        let acc: Vec<Vec<R>> = (0..npx)
            .map(|px| (0..nu).map(|u| self.v(px * nu + u)).collect())
            .collect();
        if self.chunk.resumes() {
            self.partial_sums(run, &acc, outs, false);
            return acc;
        }
        for u in 0..nu {
            if self.p.bias_off.is_some() {
                let m = self.at(RUN_B, run.unit_bytes(u) as i64);
                self.vload(acc[0][u], m);
            } else {
                self.vzero(acc[0][u]);
            }
            for row in &acc[1..] {
                self.vcopy(row[u], acc[0][u]);
            }
        }
        acc
    }

    /// A chunked reduction's partial sums ([`StagePlan::k_chunks`]): the
    /// accumulators loaded from the output at `r12` (each pixel's at its
    /// byte offset in `outs`), or stored there as they are.
    pub(super) fn partial_sums(&mut self, run: &Run, acc: &[Vec<R>], outs: &[i64], store: bool) {
        for (row, &pix) in acc.iter().zip(outs) {
            for (unit, &a) in run.units.iter().zip(row) {
                let OutDst::Vector(c) = unit.out else {
                    unreachable!("a chunked plan stores whole vectors (`k_chunks`)")
                };
                let m = self.at(RUN_O, pix + c as i64 * 4);
                match store {
                    true => self.vstore(m, a),
                    false => self.vload(a, m),
                }
            }
        }
    }

    /// One register block: `k.block.npx` pixels x the run's units, from
    /// the input at `r13`, weights at `r15` (its run repetition's), output
    /// at `r12`, bias at `r14`; per valid kernel row, the plan's taps
    /// ([`StagePlan::reduction`], or depthwise [`Gen::dw_taps`]). Leaves
    /// r12-r15 as they were.
    pub(super) fn block(&mut self, run: &Run, k: &BlockArgs) {
        let p = self.p;
        let npx = k.block.npx;
        let (ins, outs) = self.pixel_offsets(k);
        let acc = self.init_accumulators(run, npx, &outs);
        let (in_ky, w_ky, last_row) = self.block_pointers(run, k);
        match (p.strategy, &k.block.cols) {
            (Strategy::Reduce, cols) => {
                let reduction = p.reduction(run, cols);
                self.repeat_reduction(run, k, &acc, &ins, &reduction, last_row);
            }
            (_, BlockCols::PerPixel(cols)) => {
                self.repeat(k.nky, Ctr::Reg(CKY), &mut |g| {
                    g.dw_taps(run, &acc, cols);
                    if !last_row {
                        g.add_reg_imm(IP, in_ky);
                        g.add_reg_imm(WP, w_ky);
                    }
                });
                // `rax` is now a kernel row below the last one read (the
                // same row with one kernel row).
                let at_last = if last_row { 0 } else { -in_ky };
                self.prefetch_next_rows(run, cols, at_last);
            }
            (_, BlockCols::Same { .. }) => unreachable!("depthwise blocks have per-pixel columns"),
        }
        self.epilogue(run, &acc, &outs);
    }

    /// `rax` and `rbx` at the block's input and its first valid kernel
    /// row's weights; returns how far they move on a kernel row, and
    /// whether there is just one (they then need not move).
    pub(super) fn block_pointers(&mut self, run: &Run, k: &BlockArgs) -> (i64, i64, bool) {
        let tap_bytes = run.tap_bytes(self.p.ci_per_tap) as i64;
        self.mov_rr(IP, RUN_I);
        self.mov_rr(WP, RUN_W);
        let kx0 = k.block.cols.kx0() as i64;
        if k.wk0 {
            self.load(CKY, Slot::Wk0);
            self.add_reg_imm(CKY, kx0);
            self.mul_imm(CKY, tap_bytes);
            self.add_rr(WP, CKY);
        } else {
            self.add_reg_imm(WP, kx0 * tap_bytes);
        }
        let in_ky = self.n.in_kernel_row;
        let w_ky = self.p.kw as i64 * tap_bytes;
        (in_ky, w_ky, matches!(k.nky, Count::Const(1)))
    }

    /// Each pixel's input and output bytes from the block's: along the
    /// row, or for a pair of rows the second half's on the next row.
    pub(super) fn pixel_offsets(&self, k: &BlockArgs) -> (Vec<i64>, Vec<i64>) {
        let p = self.p;
        let pixel_in = (p.sw * p.ci * p.in_bytes()) as i64;
        let pixel_out = (p.co * p.out_bytes()) as i64;
        let npx = k.block.npx;
        let ((in_row, out_row), n) = match k.pair {
            Some(rows) => (rows, npx / 2),
            None => ((0, 0), npx),
        };
        (0..npx)
            .map(|px| {
                let (row, col) = ((px / n) as i64, (px % n) as i64);
                (
                    col * pixel_in + row * in_row,
                    col * pixel_out + row * out_row,
                )
            })
            .unzip()
    }

    /// A conv/pointwise block's loop over its valid kernel rows, each
    /// emitting `reduction` (from `rax`, `rbx`, moved on a kernel row
    /// unless `last_row`).
    fn repeat_reduction(
        &mut self,
        run: &Run,
        k: &BlockArgs,
        acc: &[Vec<R>],
        ins: &[i64],
        reduction: &Reduction,
        last_row: bool,
    ) {
        let p = self.p;
        let (nu, npx) = (run.units.len(), k.block.npx);
        let tap_bytes = run.tap_bytes(p.ci_per_tap) as i64;
        let (in_ky, w_ky) = (self.n.in_kernel_row, p.kw as i64 * tap_bytes);
        // Channel blocks outermost: their weights come from L3 or memory,
        // each block's while the previous one computes.
        let ahead = (self.n.channels_outer && self.n.next_weights == NextWeights::PerStep)
            .then_some(run.w_stride as i64);
        let rows: Vec<&[R]> = acc.iter().map(|r| &r[..]).collect();
        // Each reduction of `len` floats moves `rax` by them and `rbx` by
        // as many steps of weights.
        let step = run.tap_bytes(1) as i64;
        match *reduction {
            Reduction::None => {}
            Reduction::Columns { len, ref columns } => {
                self.repeat(k.nky, Ctr::Reg(CKY), &mut |g| {
                    for c in columns {
                        let rows: Vec<&[R]> = c.pixels.iter().map(|&px| &acc[px][..]).collect();
                        let ins: Vec<i64> = c.pixels.iter().map(|&px| ins[px]).collect();
                        g.add_reg_imm(IP, c.in_off);
                        g.add_reg_imm(WP, c.w_off);
                        g.reduce(&rows, &ins, run, len, npx * nu, ahead);
                        g.add_reg_imm(IP, -c.in_off - (len * 4) as i64);
                        g.add_reg_imm(WP, -c.w_off - len as i64 * step);
                    }
                    if !last_row {
                        g.add_reg_imm(IP, in_ky);
                        g.add_reg_imm(WP, w_ky);
                    }
                });
            }
            Reduction::Contiguous { len } => {
                self.repeat(k.nky, Ctr::Reg(CKY), &mut |g| {
                    g.reduce(&rows, ins, run, len, npx * nu, ahead);
                    if !last_row {
                        g.add_reg_imm(IP, in_ky - (len * 4) as i64);
                        g.add_reg_imm(WP, w_ky - len as i64 * step);
                    }
                });
            }
            Reduction::Taps {
                taps,
                len,
                in_step,
                w_step,
            } => {
                // The reduction of a tap moves the weights to the next.
                debug_assert_eq!(w_step, len as i64 * step);
                self.repeat(k.nky, Ctr::Reg(CKY), &mut |g| {
                    g.repeat(Count::Const(taps), Ctr::Reg(CKX), &mut |g| {
                        g.reduce(&rows, ins, run, len, npx * nu, ahead);
                        g.add_reg_imm(IP, in_step - (len * 4) as i64);
                    });
                    if !last_row {
                        g.add_reg_imm(IP, in_ky - taps as i64 * in_step);
                        g.add_reg_imm(WP, w_ky - taps as i64 * w_step);
                    }
                });
            }
        }
    }

    /// Conv/pointwise accumulation over `len` contiguous input scalars per
    /// pixel: per step, the units' weight vectors into registers, then per
    /// pixel one broadcast shared by the units' FMAs (of `run`). Advances
    /// `rax` by `len` floats and `rbx` by `len` steps of weights.
    /// `acc` are the rows of the pixels at input bytes `ins` of a block
    /// whose accumulators take registers `0..free`.
    ///
    /// `ahead`: bytes from these weights to those of the next channel
    /// block, to prefetch into L2 while this one computes.
    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &mut self,
        acc: &[&[R]],
        ins: &[i64],
        run: &Run,
        len: usize,
        free: usize,
        ahead: Option<i64>,
    ) {
        let p = self.p;
        let nu = run.units.len();
        let unroll = p.sched.k_unroll.max(1);
        let w: Vec<R> = (0..nu).map(|u| self.v(free + u)).collect();
        // Broadcast registers: two where they fit, else (AVX-512 blocks
        // that fill the register file) `{1to16}` operands of every FMA.
        let nb = (self.regs - free - nu).min(2);
        assert!(nb > 0 || self.evex(), "no broadcast register");
        let b: Vec<R> = (0..nb).map(|i| self.v(free + nu + i)).collect();
        let w_step = run.tap_bytes(1) as i64;
        let step = |g: &mut Self, j: usize| {
            for (u, &wr) in w.iter().enumerate() {
                let at = j as i64 * w_step + run.unit_bytes(u) as i64;
                let m = g.at(WP, at);
                g.vload(wr, m);
                if let Some(d) = ahead {
                    let m = g.at(WP, d + at);
                    g.a.emit(I::with1(Code::Prefetcht1_m8, m));
                }
            }
            for (i, (row, &at)) in acc.iter().zip(ins).enumerate() {
                let off = at + j as i64 * 4;
                if nb == 0 {
                    for (u, &a) in row.iter().enumerate() {
                        let m = g.at_bcst(IP, off);
                        g.fma(a, w[u], Src::M(m));
                    }
                    continue;
                }
                let br = b[i % nb];
                let m = g.at(IP, off);
                g.vbroadcast(br, m);
                for (u, &a) in row.iter().enumerate() {
                    g.fma(a, br, Src::R(w[u]));
                }
            }
        };
        // Short reductions (a few input channels, or one 3x3 tap row of
        // them) run straight through: a loop's counter and pointer updates
        // would cost as much as a step.
        let unroll = if len <= MAX_STRAIGHT_STEPS {
            len.max(1)
        } else {
            unroll
        };
        let full = len / unroll;
        let rest = len % unroll;
        self.repeat(Count::Const(full), Ctr::Reg(CRED), &mut |g| {
            for j in 0..unroll {
                step(g, j);
            }
            g.add_reg_imm(IP, (unroll * 4) as i64);
            g.add_reg_imm(WP, unroll as i64 * w_step);
        });
        for j in 0..rest {
            step(self, j);
        }
        self.add_reg_imm(IP, (rest * 4) as i64);
        self.add_reg_imm(WP, rest as i64 * w_step);
    }
}
