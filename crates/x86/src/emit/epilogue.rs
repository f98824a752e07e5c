//! The end of a register block: activation (NaN kept), the residual, and
//! the stores of whole vectors, masked tails, single lanes and
//! interleaved pairs.

use super::vector::nth_register;
use super::{Gen, Slot, Src, RES, RUN_O};
use convjit_ir::Activation;
use convjit_plan::stage_plan;
use convjit_plan::stage_plan::{OutDst, Run};
use iced_x86::{Code, Instruction as I, Register as R};

impl Gen<'_> {
    /// Activation, residual and stores of a block's accumulators, to the
    /// output at `r12` (each pixel's at its byte offset in `outs`).
    pub(super) fn epilogue(&mut self, run: &Run, acc: &[Vec<R>], outs: &[i64]) {
        if !self.chunk.finishes() {
            // A chunked reduction's partial sums, as they are.
            return self.partial_sums(run, acc, outs, true);
        }
        let p = self.p;
        let lanes = p.sched.lanes;
        let free = acc.len() * run.units.len();
        let (zero, six, t0, t1) = (
            self.v(free),
            self.v(free + 1),
            self.v(free + 2),
            self.v(free + 3),
        );
        if p.activation != Activation::None {
            self.vzero(zero);
        }
        if p.activation == Activation::Relu6 {
            self.vconst(six, 6.0);
        }
        if p.residual {
            self.load(RES, Slot::ResDelta);
            self.add_rr(RES, RUN_O);
        }
        for (row, &pix) in acc.iter().zip(outs) {
            for &v in row {
                if p.activation != Activation::None {
                    // NaN stays NaN (the contract): see `vmax`.
                    self.vmax(v, zero);
                }
                if p.activation == Activation::Relu6 {
                    self.vmin(v, six);
                }
                if p.round_output && !p.bf16_output {
                    // (No residual: the value stored is final.)
                    self.round_bf16(v, t0);
                }
            }
            for (u, unit) in run.units.iter().enumerate() {
                let v = row[u];
                match &unit.out {
                    // Whole vectors only ([`stage_plan::writes_bf16`]).
                    OutDst::Vector(c) if p.bf16_output => {
                        self.store_bf16(v, pix + *c as i64 * 2, t0)
                    }
                    OutDst::Vector(c) => self.store_vector(v, pix + *c as i64 * 4),
                    OutDst::Lanes(l) => {
                        let contiguous = l
                            .iter()
                            .enumerate()
                            .all(|(i, &(lane, c))| lane as usize == i && c == l[0].1 + i);
                        if contiguous {
                            let off = pix + l[0].1 as i64 * 4;
                            if p.residual {
                                let m = self.at(RES, off);
                                self.vload_masked(t0, m, l.len(), t1);
                                self.vadd(v, Src::R(t0));
                            }
                            let m = self.at(RUN_O, off);
                            self.vstore_masked(m, v, l.len(), t1);
                        } else {
                            for &(lane, c) in l {
                                self.store_lane(v, lane as usize, pix + c as i64 * 4, t0);
                            }
                        }
                    }
                    OutDst::Pair(c) => {
                        let w = row[u + 1];
                        self.interleave(v, w, t0);
                        self.store_vector(v, pix + *c as i64 * 4);
                        self.store_vector(w, pix + (c + lanes) as i64 * 4);
                    }
                    OutDst::Paired => {}
                }
            }
        }
    }

    /// Activation, residual and stores of a row-vector block's
    /// accumulators (consecutive vectors from `[SegO]`); its zero and six
    /// registers follow the accumulators (the weights are dead by now).
    pub(super) fn row_epilogue(&mut self, acc: &[R]) {
        let (zero, six) = (self.v(acc.len()), self.v(acc.len() + 1));
        self.row_epilogue_at(acc, zero, six, 0);
    }

    /// [`Gen::row_epilogue`] with its zero and six registers given, the
    /// vectors stored from `[SegO] + out` (and the residual's likewise).
    pub(super) fn row_epilogue_at(&mut self, acc: &[R], zero: R, six: R, out: i64) {
        let p = self.p;
        if p.activation != Activation::None {
            self.vzero(zero);
        }
        if p.activation == Activation::Relu6 {
            self.vconst(six, 6.0);
        }
        self.load(RUN_O, Slot::SegO);
        if p.residual {
            self.load(RES, Slot::ResDelta);
            self.add_rr(RES, RUN_O);
        }
        for (v, &a) in acc.iter().enumerate() {
            if p.activation != Activation::None {
                self.vmax(a, zero);
            }
            if p.activation == Activation::Relu6 {
                self.vmin(a, six);
            }
            self.store_vector(a, out + v as i64 * self.vb);
        }
        if p.prefetch_stores {
            // The lines these stores reach a few KiB on, asked for
            // writing now (`stage_plan::mark_streamed_outputs`); past the
            // row or the output, a prefetch never faults.
            let end = out + acc.len() as i64 * self.vb;
            for off in (out..end).step_by(64) {
                let m = self.at(RUN_O, off + stage_plan::PREFETCH_STORES_AHEAD);
                self.a.emit(I::with1(Code::Prefetchw_m8, m));
            }
        }
    }

    /// `v` (+ the residual) to the output at byte offset `off`.
    fn store_vector(&mut self, v: R, off: i64) {
        if self.p.residual {
            let m = self.at(RES, off);
            self.vadd(v, Src::M(m));
        }
        let m = self.at(RUN_O, off);
        self.vstore(m, v);
    }

    /// `v` rounded to bf16 (`vcvtneps2bf16`: to nearest even, NaN kept,
    /// denormals flushed), 2 bytes a value, to the output at byte offset
    /// `off` (no residual: [`stage_plan::writes_bf16`]). Uses `t`.
    fn store_bf16(&mut self, v: R, off: i64, t: R) {
        let half = nth_register(R::YMM0, self.index(t));
        self.a.emit(I::with2(
            Code::EVEX_Vcvtneps2bf16_ymm_k1z_zmmm512b32,
            half,
            v,
        ));
        let m = self.at(RUN_O, off);
        self.a
            .emit(I::with2(Code::EVEX_Vmovdqu16_ymmm256_k1z_ymm, m, half));
    }

    /// Lane `lane` of `v` (+ the residual) to the output at byte offset `off`.
    fn store_lane(&mut self, v: R, lane: usize, off: i64, tmp: R) {
        let (chunk, sub) = (lane / 4, (lane % 4) as u32);
        let t = self.x(self.index(tmp));
        let src = if chunk == 0 {
            self.x(self.index(v))
        } else {
            if self.evex() {
                self.a.emit(I::with3(
                    Code::EVEX_Vextractf32x4_xmmm128_k1z_zmm_imm8,
                    t,
                    v,
                    chunk as u32,
                ));
            } else {
                self.a.emit(I::with3(
                    Code::VEX_Vextractf128_xmmm128_ymm_imm8,
                    t,
                    v,
                    chunk as u32,
                ));
            }
            t
        };
        let (perm, add, movss) = if self.evex() {
            (
                Code::EVEX_Vpermilps_xmm_k1z_xmmm128b32_imm8,
                Code::EVEX_Vaddss_xmm_k1z_xmm_xmmm32_er,
                Code::EVEX_Vmovss_m32_k1_xmm,
            )
        } else {
            (
                Code::VEX_Vpermilps_xmm_xmmm128_imm8,
                Code::VEX_Vaddss_xmm_xmm_xmmm32,
                Code::VEX_Vmovss_m32_xmm,
            )
        };
        self.a.emit(I::with3(perm, t, src, sub * 0x55));
        if self.p.residual {
            let m = self.at(RES, off);
            self.a.emit(I::with3(add, t, t, m));
        }
        let m = self.at(RUN_O, off);
        self.a.emit(I::with2(movss, m, t));
    }

    /// `(a, b)` := the lanes of `a` and `b` interleaved: `a` the first
    /// half `[a0 b0 a1 b1 ..]`, `b` the second. Uses `t`.
    fn interleave(&mut self, a: R, b: R, t: R) {
        if self.evex() {
            let unpck = |g: &mut Self, c: Code, d: R| g.a.emit(I::with3(c, d, a, b));
            unpck(self, Code::EVEX_Vunpcklps_zmm_k1z_zmm_zmmm512b32, t);
            unpck(self, Code::EVEX_Vunpckhps_zmm_k1z_zmm_zmmm512b32, b);
            // t = [T0 T1 T2 T3], b = [B0 B1 B2 B3] (128-bit chunks); the
            // halves are [T0 B0 T1 B1] and [T2 B2 T3 B3].
            let shuf = Code::EVEX_Vshuff32x4_zmm_k1z_zmm_zmmm512b32_imm8;
            self.a.emit(I::with4(shuf, a, t, b, 0x44u32));
            self.a.emit(I::with4(shuf, a, a, a, 0xD8u32));
            self.a.emit(I::with4(shuf, b, t, b, 0xEEu32));
            self.a.emit(I::with4(shuf, b, b, b, 0xD8u32));
        } else {
            self.a
                .emit(I::with3(Code::VEX_Vunpcklps_ymm_ymm_ymmm256, t, a, b));
            self.a
                .emit(I::with3(Code::VEX_Vunpckhps_ymm_ymm_ymmm256, b, a, b));
            let perm = Code::VEX_Vperm2f128_ymm_ymm_ymmm256_imm8;
            self.a.emit(I::with4(perm, a, t, b, 0x20u32));
            self.a.emit(I::with4(perm, b, t, b, 0x31u32));
        }
    }
}
