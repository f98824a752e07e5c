//! One register block: accumulators from the bias, the loop over its
//! valid kernel rows (conv and pointwise reductions, depthwise taps), and
//! the epilogue; and the reduction over input channels that conv and
//! pointwise blocks run per kernel row or column.

use super::{
    pxs_of, BlockArgs, Count, Ctr, Gen, Slot, Src, CKX, CKY, CRED, IP, RUN_B, RUN_I, RUN_W, WP,
};
use convjit_plan::stage_plan::{Run, Strategy};
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
    /// or zero.
    fn init_accumulators(&mut self, run: &Run, npx: usize) -> Vec<Vec<R>> {
        let nu = run.units.len();
        let acc: Vec<Vec<R>> = (0..npx)
            .map(|px| (0..nu).map(|u| self.v(px * nu + u)).collect())
            .collect();
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

    /// One register block: `k.npx` pixels x the run's units, from the
    /// input at `r13`, weights at `r15` (its run repetition's), output at
    /// `r12`, bias at `r14`. Leaves r12-r15 as they were.
    pub(super) fn block(&mut self, run: &Run, k: &BlockArgs) {
        let p = self.p;
        let nu = run.units.len();
        let npx = k.npx;
        let acc = self.init_accumulators(run, npx);
        let tap_bytes = run.tap_bytes(p.ci_per_tap) as i64;
        self.mov_rr(IP, RUN_I);
        self.mov_rr(WP, RUN_W);
        if k.wk0 {
            self.load(CKY, Slot::Wk0);
            self.add_reg_imm(CKY, k.kx0 as i64);
            self.mul_imm(CKY, tap_bytes);
            self.add_rr(WP, CKY);
        } else {
            self.add_reg_imm(WP, k.kx0 as i64 * tap_bytes);
        }
        let in_ky = (p.dil_h * p.w * p.ci * 4) as i64;
        let w_ky = p.kw as i64 * tap_bytes;
        let last_row = matches!(k.nky, Count::Const(1));
        // Channel blocks outermost: their weights come from L3 or memory,
        // each block's while the previous one computes.
        let ahead = p.channels_outer().then_some(run.w_stride as i64);
        if let (Some(cols), Strategy::Reduce) = (&k.cols, p.strategy) {
            self.repeat(k.nky, Ctr::Reg(CKY), &mut |g| {
                for kx in 0..p.kw {
                    let pxs = pxs_of(cols, kx);
                    if pxs.is_empty() {
                        continue;
                    }
                    let rows: Vec<&[R]> = pxs.iter().map(|&px| &acc[px][..]).collect();
                    let in_off = (kx * p.dil_w * p.ci * 4) as i64;
                    g.add_reg_imm(IP, in_off);
                    g.add_reg_imm(WP, kx as i64 * tap_bytes);
                    g.reduce(&rows, &pxs, run, p.ci_per_tap, npx * nu, ahead);
                    g.add_reg_imm(IP, -in_off - (p.ci_per_tap * 4) as i64);
                    g.add_reg_imm(WP, -(kx as i64 + 1) * tap_bytes);
                }
                if !last_row {
                    g.add_reg_imm(IP, in_ky);
                    g.add_reg_imm(WP, w_ky);
                }
            });
        } else if let Some(cols) = &k.cols {
            self.repeat(k.nky, Ctr::Reg(CKY), &mut |g| {
                g.dw_taps(run, &acc, cols);
                if !last_row {
                    g.add_reg_imm(IP, in_ky);
                    g.add_reg_imm(WP, w_ky);
                }
            });
            // `rax` is now a kernel row below the last one read (the same
            // row with one kernel row).
            let at_last = if last_row { 0 } else { -in_ky };
            self.prefetch_next_rows(run, cols, at_last);
        } else if k.nkx > 0 {
            let rows: Vec<&[R]> = acc.iter().map(|r| &r[..]).collect();
            let pxs: Vec<usize> = (0..npx).collect();
            self.repeat(k.nky, Ctr::Reg(CKY), &mut |g| {
                // The taps of a kernel row are one run of input scalars
                // when they are adjacent and each reads all the channels
                // (no dilation, no groups).
                let cpt = p.ci_per_tap;
                let moved = if (p.dil_w == 1 && cpt == p.ci) || k.nkx == 1 {
                    g.reduce(&rows, &pxs, run, k.nkx * cpt, npx * nu, ahead);
                    (k.nkx * cpt * 4) as i64
                } else {
                    g.repeat(Count::Const(k.nkx), Ctr::Reg(CKX), &mut |g| {
                        g.reduce(&rows, &pxs, run, cpt, npx * nu, ahead);
                        g.add_reg_imm(IP, ((p.dil_w * p.ci - cpt) * 4) as i64);
                    });
                    (k.nkx * p.dil_w * p.ci * 4) as i64
                };
                if !last_row {
                    g.add_reg_imm(IP, in_ky - moved);
                    g.add_reg_imm(WP, w_ky - k.nkx as i64 * tap_bytes);
                }
            });
        }
        self.epilogue(run, &acc);
    }

    /// Conv/pointwise accumulation over `len` contiguous input scalars per
    /// pixel: per step, the units' weight vectors into registers, then per
    /// pixel one broadcast shared by the units' FMAs (of `run`). Advances
    /// `rax` by `len` floats and `rbx` by `len` steps of weights.
    /// `acc` are the rows of the pixels `pxs` of a block whose
    /// accumulators take registers `0..free`.
    ///
    /// `ahead`: bytes from these weights to those of the next channel
    /// block, to prefetch into L2 while this one computes.
    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &mut self,
        acc: &[&[R]],
        pxs: &[usize],
        run: &Run,
        len: usize,
        free: usize,
        ahead: Option<i64>,
    ) {
        let p = self.p;
        let nu = run.units.len();
        let pstride = (p.sw * p.ci * 4) as i64;
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
            for (i, (row, &px)) in acc.iter().zip(pxs).enumerate() {
                let off = px as i64 * pstride + j as i64 * 4;
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
