//! 1-4 output channels with their inputs in the lanes
//! ([`StagePlan::inputs_in_lanes`]): a block of up to `lanes / Co`
//! pixels, an accumulator per pixel and output (the bias in its lane 0),
//! over every kernel row's runs of contiguous inputs (kernel columns x
//! input channels) and each output's weights alike, a masked vector for
//! each run's tail; then the accumulators summed across their lanes into
//! one vector of the block's outputs (side by side in NHWC), which gets
//! the activation and residual and is stored at once.

use super::{BlockArgs, Count, Ctr, Gen, Slot, Src, CKY, CRED, IP, RES, RUN_B, RUN_O, SLIDE, WP};
use crate::asm::mem;
use convjit_ir::Activation;
#[cfg(doc)]
use convjit_plan::stage_plan::StagePlan;
use convjit_plan::stage_plan::{Reduction, RunLoop};
use iced_x86::{Code, Instruction as I, MemoryOperand, Register as R};

/// Whole vectors of a run emitted without a loop up to this many; a
/// longer run loops over groups of [`UNROLL`].
const STRAIGHT: usize = 8;
const UNROLL: usize = 4;

/// A run of `len` contiguous floats that `pixels` read at `in_off` bytes
/// from their inputs, with the weights at `w_off` bytes.
struct Span {
    pixels: Vec<usize>,
    in_off: i64,
    w_off: i64,
    len: usize,
}

impl Gen<'_> {
    /// The block `k` of the run loop `r`, whose repetitions are the
    /// stage's outputs (one unit of one lane each): input at `r13`, the
    /// first output's weights at `r15`, output at `r12`, its bias at
    /// `r14`, as [`Gen::block`] takes them. Leaves r12-r15 as they were.
    pub(super) fn input_lanes_block(&mut self, r: &RunLoop, k: &BlockArgs) {
        let p = self.p;
        let (npx, co) = (k.block.npx, r.count);
        assert!(
            npx * co <= p.sched.lanes && r.run.units.len() == 1 && k.pair.is_none(),
            "a block's sums fill at most a vector"
        );
        // `acc[px][o]`: lane `px * co + o` of the sums.
        let acc: Vec<Vec<R>> = (0..npx)
            .map(|px| (0..co).map(|o| self.v(px * co + o)).collect())
            .collect();
        for o in 0..co {
            // The bias in lane 0 (`vmovss` zeroes the others), summed
            // with the products.
            if p.bias_off.is_some() {
                let m = self.at(RUN_B, o as i64 * r.step.bias);
                self.load_scalar(acc[0][o], m);
            } else {
                self.vzero(acc[0][o]);
            }
            for row in &acc[1..] {
                self.vcopy(row[o], acc[0][o]);
            }
        }
        let (ins, outs) = self.pixel_offsets(k);
        let (in_ky, w_ky, last_row) = self.block_pointers(r.run, k);
        let all: Vec<usize> = (0..npx).collect();
        let spans: Vec<Span> = match p.reduction(r.run, &k.block.cols) {
            Reduction::None => Vec::new(),
            Reduction::Contiguous { len } => vec![Span {
                pixels: all,
                in_off: 0,
                w_off: 0,
                len,
            }],
            Reduction::Columns { len, columns } => columns
                .into_iter()
                .map(|c| Span {
                    pixels: c.pixels,
                    in_off: c.in_off,
                    w_off: c.w_off,
                    len,
                })
                .collect(),
            Reduction::Taps {
                taps,
                len,
                in_step,
                w_step,
            } => (0..taps)
                .map(|t| Span {
                    pixels: all.clone(),
                    in_off: t as i64 * in_step,
                    w_off: t as i64 * w_step,
                    len,
                })
                .collect(),
        };
        if !spans.is_empty() {
            self.repeat(k.nky, Ctr::Reg(CKY), &mut |g| {
                for s in &spans {
                    g.span(&acc, &ins, s, r.step.weights);
                }
                if !last_row {
                    g.add_reg_imm(IP, in_ky);
                    g.add_reg_imm(WP, w_ky);
                }
            });
        }
        let flat: Vec<R> = acc.concat();
        let t = self.v(flat.len());
        let sums = self.lane_sums(&flat, t);
        // The pixels' outputs lie side by side: `co` floats a pixel.
        debug_assert!(outs
            .iter()
            .enumerate()
            .all(|(i, &o)| o == outs[0] + (4 * co * i) as i64));
        self.input_lanes_epilogue(sums, npx * co, outs[0]);
    }

    /// The FMAs of one span for every output (weights `w_out` bytes
    /// apart): per vector of it, each output's weights once, then each
    /// pixel's inputs (one output: straight from memory into its FMA);
    /// the tail's lanes masked (zeros, and no load past the span: the
    /// next floats may be another row's, or the buffer's end).
    fn span(&mut self, acc: &[Vec<R>], ins: &[i64], s: &Span, w_out: i64) {
        let lanes = self.p.sched.lanes;
        let vb = self.vb;
        let co = acc[0].len();
        let n = acc.len() * co;
        let w: Vec<R> = (0..co).map(|o| self.v(n + o)).collect();
        let (x, tmp) = (self.v(n + co), self.v(n + co + 1));
        let full = s.len / lanes;
        let step = |g: &mut Self, off: i64| {
            for (o, &wr) in w.iter().enumerate() {
                let m = g.at(WP, s.w_off + o as i64 * w_out + off);
                g.vload(wr, m);
            }
            for &px in &s.pixels {
                let m = g.at(IP, ins[px] + s.in_off + off);
                if co == 1 {
                    g.fma(acc[px][0], w[0], Src::M(m));
                    continue;
                }
                g.vload(x, m);
                for (o, &wr) in w.iter().enumerate() {
                    g.fma(acc[px][o], wr, Src::R(x));
                }
            }
        };
        if full <= STRAIGHT {
            for j in 0..full {
                step(self, j as i64 * vb);
            }
        } else {
            let groups = full / UNROLL;
            self.repeat(Count::Const(groups), Ctr::Reg(CRED), &mut |g| {
                for j in 0..UNROLL {
                    step(g, j as i64 * vb);
                }
                g.add_reg_imm(IP, UNROLL as i64 * vb);
                g.add_reg_imm(WP, UNROLL as i64 * vb);
            });
            let done = (groups * UNROLL) as i64 * vb;
            for j in groups * UNROLL..full {
                step(self, j as i64 * vb - done);
            }
            self.add_reg_imm(IP, -done);
            self.add_reg_imm(WP, -done);
        }
        let rest = s.len % lanes;
        if rest > 0 {
            let off = (full * lanes * 4) as i64;
            let mask = self.lane_mask(rest, tmp);
            for (o, &wr) in w.iter().enumerate() {
                let m = self.at(WP, s.w_off + o as i64 * w_out + off);
                self.load_under(wr, m, mask);
            }
            for &px in &s.pixels {
                let m = self.at(IP, ins[px] + s.in_off + off);
                self.load_under(x, m, mask);
                for (o, &wr) in w.iter().enumerate() {
                    self.fma(acc[px][o], wr, Src::R(x));
                }
            }
        }
    }

    /// `d` = the float at `m` in lane 0, zeros in the others.
    fn load_scalar(&mut self, d: R, m: MemoryOperand) {
        let x = self.x(self.index(d));
        let c = if self.evex() {
            Code::EVEX_Vmovss_xmm_k1z_m32
        } else {
            Code::VEX_Vmovss_xmm_m32
        };
        self.a.emit(I::with2(c, x, m));
    }

    /// The mask of the first `n` lanes: AVX-512 in `k7` (the plan's own
    /// tails take `k1` onwards: one here), AVX2 loaded into `tmp` from
    /// the frame's sliding table (`SLIDE`: eight -1s then eight zeros).
    fn lane_mask(&mut self, n: usize, tmp: R) -> R {
        // (Also the bound of the sliding table's `n as i32`: n < 8.)
        assert!(n > 0 && n < self.p.sched.lanes, "a tail of {n} lanes");
        if self.evex() {
            assert!(self.masks.len() < 7, "k7 is free");
            self.a
                .emit(I::with2(Code::Mov_r32_imm32, R::R11D, (1u32 << n) - 1));
            self.a
                .emit(I::with2(Code::VEX_Kmovw_kr_r32, R::K7, R::R11D));
            R::K7
        } else {
            self.vload(tmp, mem(R::RSP, SLIDE + 4 * (8 - n as i32)));
            tmp
        }
    }

    /// `d` = the lanes of `m` under `mask` ([`Gen::lane_mask`]), zeros
    /// elsewhere; masked-off lanes are not read.
    fn load_under(&mut self, d: R, m: MemoryOperand, mask: R) {
        if self.evex() {
            self.a
                .emit_with(I::with2(Code::EVEX_Vmovups_zmm_k1z_zmmm512, d, m), |i| {
                    i.set_op_mask(mask);
                    i.set_zeroing_masking(true);
                });
        } else {
            self.a
                .emit(I::with3(Code::VEX_Vmaskmovps_ymm_ymm_m256, d, mask, m));
        }
    }

    /// The lanes of `mask` of `s` to `m`.
    fn store_under(&mut self, m: MemoryOperand, s: R, mask: R) {
        if self.evex() {
            self.a
                .emit_with(I::with2(Code::EVEX_Vmovups_zmmm512_k1z_zmm, m, s), |i| {
                    i.set_op_mask(mask)
                });
        } else {
            self.a
                .emit(I::with3(Code::VEX_Vmaskmovps_m256_ymm_ymm, m, mask, s));
        }
    }

    /// One vector whose lane `i` is the sum of the lanes of `acc[i]`
    /// (lanes past `acc.len()`: anything), in `acc`'s registers and `t`.
    /// Pairs of vectors interleaved and added, twice within 128-bit
    /// chunks (4 sums of 4 vectors a chunk), then the chunks of two
    /// vectors gathered and added, once (AVX2) or twice (AVX-512): lane
    /// `i` of the result is vector `i`'s, lane order kept throughout. A
    /// missing partner is the last vector again (its lanes are spare).
    fn lane_sums(&mut self, acc: &[R], t: R) -> R {
        let evex = self.evex();
        let pick = |e: Code, v: Code| if evex { e } else { v };
        let unpck = [
            (
                pick(
                    Code::EVEX_Vunpcklps_zmm_k1z_zmm_zmmm512b32,
                    Code::VEX_Vunpcklps_ymm_ymm_ymmm256,
                ),
                pick(
                    Code::EVEX_Vunpckhps_zmm_k1z_zmm_zmmm512b32,
                    Code::VEX_Vunpckhps_ymm_ymm_ymmm256,
                ),
            ),
            (
                pick(
                    Code::EVEX_Vunpcklpd_zmm_k1z_zmm_zmmm512b64,
                    Code::VEX_Vunpcklpd_ymm_ymm_ymmm256,
                ),
                pick(
                    Code::EVEX_Vunpckhpd_zmm_k1z_zmm_zmmm512b64,
                    Code::VEX_Vunpckhpd_ymm_ymm_ymmm256,
                ),
            ),
        ];
        let mut vs: Vec<R> = acc.to_vec();
        let pairs = |vs: &[R]| -> Vec<(R, R)> {
            vs.chunks(2)
                .map(|c| (c[0], *c.get(1).unwrap_or(&c[0])))
                .collect()
        };
        for (lo, hi) in unpck {
            let mut next = Vec::new();
            for (a, b) in pairs(&vs) {
                self.a.emit(I::with3(lo, t, a, b));
                self.a.emit(I::with3(hi, a, a, b));
                self.vadd(a, Src::R(t));
                next.push(a);
            }
            vs = next;
        }
        // Chunk gathers: AVX-512's chunks 0 and 2, then 1 and 3, of both
        // (twice: 4 chunks); AVX2's low halves, then the high ones.
        let gathers: &[(u32, u32)] = if evex {
            &[(0x88, 0xDD), (0x88, 0xDD)]
        } else {
            &[(0x20, 0x31)]
        };
        let shuf = pick(
            Code::EVEX_Vshuff32x4_zmm_k1z_zmm_zmmm512b32_imm8,
            Code::VEX_Vperm2f128_ymm_ymm_ymmm256_imm8,
        );
        for &(first, second) in gathers {
            let mut next = Vec::new();
            for (a, b) in pairs(&vs) {
                self.a.emit(I::with4(shuf, t, a, b, first));
                self.a.emit(I::with4(shuf, a, a, b, second));
                self.vadd(a, Src::R(t));
                next.push(a);
            }
            vs = next;
        }
        debug_assert_eq!(vs.len(), 1);
        vs[0]
    }

    /// The block's sums `v` (`n` outputs side by side at `out` bytes
    /// from `r12`, the bias in them): activation, bf16 rounding for a
    /// depthwise reader, residual and the store.
    fn input_lanes_epilogue(&mut self, v: R, n: usize, out: i64) {
        let p = self.p;
        // The sums are in the first accumulator ([`Gen::lane_sums`]);
        // the others are free now.
        assert_eq!(self.index(v), 0);
        let (t0, t1) = (self.v(1), self.v(2));
        if p.activation != Activation::None {
            // NaN stays NaN (the contract): see `vmax`.
            self.vzero(t0);
            self.vmax(v, t0);
        }
        if p.activation == Activation::Relu6 {
            self.vconst(t0, 6.0);
            self.vmin(v, t0);
        }
        if p.round_output && !p.bf16_output {
            self.round_bf16(v, t0);
        }
        if p.residual {
            self.load(RES, Slot::ResDelta);
            self.add_rr(RES, RUN_O);
        }
        if n == p.sched.lanes {
            if p.residual {
                let m = self.at(RES, out);
                self.vadd(v, Src::M(m));
            }
            let m = self.at(RUN_O, out);
            self.vstore(m, v);
            return;
        }
        let mask = self.lane_mask(n, t1);
        if p.residual {
            let m = self.at(RES, out);
            self.load_under(t0, m, mask);
            self.vadd(v, Src::R(t0));
        }
        let m = self.at(RUN_O, out);
        self.store_under(m, v, mask);
    }

    /// Whether the function has the sliding table of [`Gen::lane_mask`]
    /// (AVX2, inputs in lanes): 64 bytes more of frame.
    pub(super) fn slide(&self) -> bool {
        !self.evex() && self.p.inputs_in_lanes
    }

    /// AVX2: the sliding table of [`Gen::lane_mask`] in the frame.
    pub(super) fn setup_slide(&mut self) {
        if !self.slide() {
            return;
        }
        for l in 0..16 {
            let v: i32 = if l < 8 { -1 } else { 0 };
            let m = mem(R::RSP, SLIDE + 4 * l);
            self.a.emit(I::with2(Code::Mov_rm32_imm32, m, v));
        }
    }
}
