//! Vector instructions at either level (the AVX-512 EVEX form on zmm, or
//! the AVX2 VEX form on ymm, picked per instruction), and the lane masks
//! of channel tails: AVX-512 `k` registers, AVX2 masks in the stack frame.

use super::{Gen, Src, MASKS};
use crate::asm::mem;
use crate::Isa;
use convjit_plan::stage_plan::{InSrc, OutDst};
use iced_x86::{Code, Instruction as I, MemoryOperand, Register as R};

impl Gen<'_> {
    pub(super) fn v(&self, i: usize) -> R {
        assert!(i < self.regs, "vector register {i} of {}", self.regs);
        let base = match self.isa {
            Isa::Avx2 => R::YMM0,
            Isa::Avx512 => R::ZMM0,
        };
        nth_register(base, i)
    }

    pub(super) fn x(&self, i: usize) -> R {
        nth_register(R::XMM0, i)
    }

    pub(super) fn evex(&self) -> bool {
        self.isa == Isa::Avx512
    }

    /// The AVX-512 (EVEX, zmm) or AVX2 (VEX, ymm) form of an instruction.
    fn pick(&self, evex: Code, vex: Code) -> Code {
        if self.evex() {
            evex
        } else {
            vex
        }
    }

    pub(super) fn vload(&mut self, d: R, m: MemoryOperand) {
        let c = self.pick(
            Code::EVEX_Vmovups_zmm_k1z_zmmm512,
            Code::VEX_Vmovups_ymm_ymmm256,
        );
        self.a.emit(I::with2(c, d, m));
    }

    /// `d` = the 16 bf16 values at `m` as f32 (exact: a bf16 is the
    /// upper half of its f32): zero-extended to 32 bits, shifted up.
    /// AVX-512 only (bf16 intermediates come from AMX tile stages).
    pub(super) fn vload_bf16(&mut self, d: R, m: MemoryOperand) {
        assert!(self.evex(), "bf16 input on the AVX-512 generator only");
        self.a
            .emit(I::with2(Code::EVEX_Vpmovzxwd_zmm_k1z_ymmm256, d, m));
        self.a.emit(I::with3(
            Code::EVEX_Vpslld_zmm_k1z_zmmm512b32_imm8,
            d,
            d,
            16u32,
        ));
    }

    pub(super) fn vstore(&mut self, m: MemoryOperand, s: R) {
        let c = self.pick(
            Code::EVEX_Vmovups_zmmm512_k1z_zmm,
            Code::VEX_Vmovups_ymmm256_ymm,
        );
        self.a.emit(I::with2(c, m, s));
    }

    pub(super) fn vcopy(&mut self, d: R, s: R) {
        let c = self.pick(
            Code::EVEX_Vmovaps_zmm_k1z_zmmm512,
            Code::VEX_Vmovaps_ymm_ymmm256,
        );
        self.a.emit(I::with2(c, d, s));
    }

    pub(super) fn vzero(&mut self, d: R) {
        let c = self.pick(
            Code::EVEX_Vpxord_zmm_k1z_zmm_zmmm512b32,
            Code::VEX_Vxorps_ymm_ymm_ymmm256,
        );
        self.a.emit(I::with3(c, d, d, d));
    }

    pub(super) fn vbroadcast(&mut self, d: R, m: MemoryOperand) {
        let c = self.pick(
            Code::EVEX_Vbroadcastss_zmm_k1z_xmmm32,
            Code::VEX_Vbroadcastss_ymm_m32,
        );
        self.a.emit(I::with2(c, d, m));
    }

    /// `acc += a * b`; on channel pairs (`StagePlan::pairs`, AVX-512
    /// only) `acc += a.even * b.even + a.odd * b.odd`, each 32-bit lane a
    /// pair of bf16: `vdpbf16ps`.
    pub(super) fn fma(&mut self, acc: R, a: R, b: Src) {
        let c = match self.p.pairs {
            Some(_) => {
                assert!(self.evex(), "vdpbf16ps is AVX-512");
                Code::EVEX_Vdpbf16ps_zmm_k1z_zmm_zmmm512b32
            }
            None => self.pick(
                Code::EVEX_Vfmadd231ps_zmm_k1z_zmm_zmmm512b32_er,
                Code::VEX_Vfmadd231ps_ymm_ymm_ymmm256,
            ),
        };
        self.op3(c, acc, a, b);
    }

    /// `v`'s floats rounded to bf16 in place (AVX-512 with AVX512_BF16: a
    /// plan on pairs): `vcvtneps2bf16` rounds to nearest even and keeps
    /// NaN a NaN, as `convjit_ir::round_bf16` does, but flushes denormals
    /// to zero. Uses `t`, which may be `v`.
    pub(super) fn round_bf16(&mut self, v: R, t: R) {
        assert!(self.evex(), "vcvtneps2bf16 is AVX-512");
        let half = nth_register(R::YMM0, self.index(t));
        self.a.emit(I::with2(
            Code::EVEX_Vcvtneps2bf16_ymm_k1z_zmmm512b32,
            half,
            v,
        ));
        self.a
            .emit(I::with2(Code::EVEX_Vpmovzxwd_zmm_k1z_ymmm256, v, half));
        self.a.emit(I::with3(
            Code::EVEX_Vpslld_zmm_k1z_zmmm512b32_imm8,
            v,
            v,
            16u32,
        ));
    }

    fn op3(&mut self, c: Code, d: R, a: R, b: Src) {
        match b {
            Src::R(r) => self.a.emit(I::with3(c, d, a, r)),
            Src::M(m) => self.a.emit(I::with3(c, d, a, m)),
        }
    }

    /// `d = max(d, b)`, NaN in `d` kept: x86's max returns its second
    /// source when either is NaN (`src1 > src2 ? src1 : src2`), so `d` goes
    /// second: `vmaxps d, b, d`. (`relu(-0.0)` is then -0.0, as the
    /// interpreter's.) The same instruction as the other order.
    pub(super) fn vmax(&mut self, d: R, b: R) {
        let c = self.pick(
            Code::EVEX_Vmaxps_zmm_k1z_zmm_zmmm512b32_sae,
            Code::VEX_Vmaxps_ymm_ymm_ymmm256,
        );
        self.op3(c, d, b, Src::R(d));
    }

    /// `d = min(d, b)`, NaN in `d` kept: `vminps d, b, d` (see [`Gen::vmax`]).
    pub(super) fn vmin(&mut self, d: R, b: R) {
        let c = self.pick(
            Code::EVEX_Vminps_zmm_k1z_zmm_zmmm512b32_sae,
            Code::VEX_Vminps_ymm_ymm_ymmm256,
        );
        self.op3(c, d, b, Src::R(d));
    }

    pub(super) fn vadd(&mut self, d: R, b: Src) {
        let c = self.pick(
            Code::EVEX_Vaddps_zmm_k1z_zmm_zmmm512b32_er,
            Code::VEX_Vaddps_ymm_ymm_ymmm256,
        );
        self.op3(c, d, d, b);
    }

    /// All lanes of `d` = `x`.
    pub(super) fn vconst(&mut self, d: R, x: f32) {
        let xd = self.x(self.index(d));
        self.a
            .emit(I::with2(Code::Mov_r32_imm32, R::R11D, x.to_bits()));
        if self.evex() {
            self.a
                .emit(I::with2(Code::EVEX_Vmovd_xmm_rm32, xd, R::R11D));
            self.a
                .emit(I::with2(Code::EVEX_Vbroadcastss_zmm_k1z_xmmm32, d, xd));
        } else {
            self.a.emit(I::with2(Code::VEX_Vmovd_xmm_rm32, xd, R::R11D));
            self.a.emit(I::with2(Code::VEX_Vbroadcastss_ymm_xmm, d, xd));
        }
    }

    /// The number of vector register `r` (`ymm3`, `zmm3`: 3).
    pub(super) fn index(&self, r: R) -> usize {
        let base = match self.isa {
            Isa::Avx2 => R::YMM0,
            Isa::Avx512 => R::ZMM0,
        };
        r as usize - base as usize
    }

    /// Masks of every tail length the plan's units need.
    pub(super) fn setup_masks(&mut self) {
        let ns = self.tail_lengths();
        self.set_masks(ns);
    }

    /// The lengths of the plan's partial vectors (loaded or stored lanes
    /// of fewer than all), ascending.
    fn tail_lengths(&self) -> Vec<usize> {
        let lanes = self.p.sched.lanes;
        let mut ns: Vec<usize> = Vec::new();
        for run in &self.p.runs {
            for u in &run.units {
                if let InSrc::Lanes(_, n) = u.input {
                    ns.push(n);
                }
                if let OutDst::Lanes(l) = &u.out {
                    ns.push(l.len());
                }
            }
        }
        ns.sort();
        ns.dedup();
        ns.retain(|&n| n > 0 && n < lanes);
        // Row vectors shifted by `valignd` (`Gen::shifted_inputs`; with
        // a multiplier of 2, planar: one input channel): the lanes of
        // their last vector, where a mask is left for it.
        let p = self.p;
        if p.row_vectors().is_some() && p.row_multiplier <= 2 && ns.len() < 7 {
            let tail = ((p.kw - 1) * p.dil_w * p.ci) % lanes;
            if tail > 0 && !ns.contains(&tail) {
                ns.push(tail);
                ns.sort();
            }
        }
        ns
    }

    /// Makes the masks of the first `n` lanes for each `n` of `ns`, in
    /// order: AVX-512 in `k1`, `k2`, ..., AVX2 in the frame from `MASKS`,
    /// 32 bytes each.
    pub(super) fn set_masks(&mut self, ns: Vec<usize>) {
        assert!(ns.len() <= 7, "at most 7 tail lengths");
        for (k, &n) in ns.iter().enumerate() {
            if self.evex() {
                self.a
                    .emit(I::with2(Code::Mov_r32_imm32, R::R11D, (1u32 << n) - 1));
                self.a
                    .emit(I::with2(Code::VEX_Kmovw_kr_r32, k_register(k), R::R11D));
            } else {
                for l in 0..8 {
                    let v: i32 = if l < n { -1 } else { 0 };
                    let m = mem(R::RSP, MASKS + 32 * k as i32 + 4 * l as i32);
                    self.a.emit(I::with2(Code::Mov_rm32_imm32, m, v));
                }
            }
        }
        self.masks = ns;
    }

    /// The index of the mask of the first `n` lanes: AVX-512 `k(index +
    /// 1)`, AVX2 the 32 bytes at `MASKS + 32 * index` in the frame.
    fn mask(&self, n: usize) -> usize {
        self.masks
            .iter()
            .position(|&m| m == n)
            .expect("masks are set up for every tail length")
    }

    /// `d` = the first `n` lanes at `m`, zeros beyond: never touches the
    /// memory of the other lanes. `tmp` is free (AVX2's mask register:
    /// may be `d`).
    pub(super) fn vload_masked(&mut self, d: R, m: MemoryOperand, n: usize, tmp: R) {
        let k = self.mask(n);
        if self.evex() {
            let kr = k_register(k);
            self.a
                .emit_with(I::with2(Code::EVEX_Vmovups_zmm_k1z_zmmm512, d, m), |i| {
                    i.set_op_mask(kr);
                    i.set_zeroing_masking(true);
                });
        } else {
            self.vload(tmp, mem(R::RSP, MASKS + 32 * k as i32));
            self.a
                .emit(I::with3(Code::VEX_Vmaskmovps_ymm_ymm_m256, d, tmp, m));
        }
    }

    /// The first `n` lanes of `s` to `m`. `tmp` is free (AVX2's mask).
    pub(super) fn vstore_masked(&mut self, m: MemoryOperand, s: R, n: usize, tmp: R) {
        let k = self.mask(n);
        if self.evex() {
            let kr = k_register(k);
            self.a
                .emit_with(I::with2(Code::EVEX_Vmovups_zmmm512_k1z_zmm, m, s), |i| {
                    i.set_op_mask(kr)
                });
        } else {
            self.vload(tmp, mem(R::RSP, MASKS + 32 * k as i32));
            self.a
                .emit(I::with3(Code::VEX_Vmaskmovps_m256_ymm_ymm, m, tmp, s));
        }
    }
}

/// `k1`, `k2`, ... for mask index 0, 1, ...
fn k_register(i: usize) -> R {
    [R::K1, R::K2, R::K3, R::K4, R::K5, R::K6, R::K7][i]
}

/// The register `i` places after `base` in iced's numbering (registers of
/// one kind are consecutive there).
pub(super) fn nth_register(base: R, i: usize) -> R {
    base + i as u32
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{any_plan, emitted, plan};
    use super::super::MASKS;
    use super::k_register;
    use crate::asm::mem;
    use crate::Isa;
    use iced_x86::{Code, Register as R};

    /// AVX-512: `k1..` hold `n` low bits set, for every tail length of 16
    /// lanes (at most seven masks a function).
    #[test]
    fn avx512_masks_have_the_first_n_lanes_set() {
        let p = any_plan(Isa::Avx512);
        for ns in [
            (1..=7).collect::<Vec<usize>>(),
            (8..=14).collect(),
            vec![15],
        ] {
            let ins = emitted(&p, Isa::Avx512, |g| g.set_masks(ns.clone()));
            assert_eq!(ins.len(), 2 * ns.len());
            for (k, (&n, pair)) in ns.iter().zip(ins.chunks(2)).enumerate() {
                assert_eq!(pair[0].code(), Code::Mov_r32_imm32);
                assert_eq!(pair[0].op0_register(), R::R11D);
                assert_eq!(pair[0].immediate32(), (1 << n) - 1, "{n} lanes");
                assert_eq!(pair[1].code(), Code::VEX_Kmovw_kr_r32);
                assert_eq!(pair[1].op0_register(), k_register(k));
                assert_eq!(pair[1].op1_register(), R::R11D);
            }
        }
    }

    /// AVX2: the frame from `MASKS` holds, per tail length of 8 lanes, 8
    /// dwords of which the first `n` are all ones and the rest zero.
    #[test]
    fn avx2_masks_have_the_first_n_lanes_set() {
        let p = any_plan(Isa::Avx2);
        let ns: Vec<usize> = (1..=7).collect();
        let ins = emitted(&p, Isa::Avx2, |g| g.set_masks(ns.clone()));
        let mut frame = vec![None; (MASKS + 7 * 32) as usize];
        for i in &ins {
            assert_eq!(i.code(), Code::Mov_rm32_imm32);
            assert_eq!(i.memory_base(), R::RSP);
            let at = i.memory_displacement64() as usize;
            assert!(
                at >= MASKS as usize && at.is_multiple_of(4),
                "a store at {at}"
            );
            assert!(frame[at].is_none(), "{at} stored twice");
            frame[at] = Some(i.immediate32());
        }
        for (k, &n) in ns.iter().enumerate() {
            for l in 0..8 {
                let want = if l < n { u32::MAX } else { 0 };
                assert_eq!(
                    frame[MASKS as usize + 32 * k + 4 * l],
                    Some(want),
                    "{n}, lane {l}"
                );
            }
        }
    }

    /// Masked loads zero the other lanes and masked stores leave their
    /// memory alone, each with the mask of its length.
    #[test]
    fn masked_loads_and_stores_use_their_lengths_mask() {
        let p = any_plan(Isa::Avx512);
        let ins = emitted(&p, Isa::Avx512, |g| {
            g.set_masks(vec![3, 5]);
            g.vload_masked(g.v(0), mem(R::RAX, 8), 5, g.v(1));
            g.vstore_masked(mem(R::RBX, 4), g.v(0), 3, g.v(1));
        });
        let (load, store) = (&ins[4], &ins[5]);
        assert_eq!(load.code(), Code::EVEX_Vmovups_zmm_k1z_zmmm512);
        assert_eq!((load.op_mask(), load.zeroing_masking()), (R::K2, true));
        assert_eq!(store.code(), Code::EVEX_Vmovups_zmmm512_k1z_zmm);
        assert_eq!((store.op_mask(), store.zeroing_masking()), (R::K1, false));
        assert_eq!(store.memory_displacement64(), 4);

        let p = any_plan(Isa::Avx2);
        let ins = emitted(&p, Isa::Avx2, |g| {
            g.set_masks(vec![3, 5]);
            g.vload_masked(g.v(0), mem(R::RAX, 8), 5, g.v(0));
            g.vstore_masked(mem(R::RBX, 4), g.v(2), 3, g.v(1));
        });
        let [mask5, load, mask3, store] = &ins[16..] else {
            panic!("{} instructions", ins.len());
        };
        assert_eq!(mask5.code(), Code::VEX_Vmovups_ymm_ymmm256);
        assert_eq!(mask5.memory_displacement64(), MASKS as u64 + 32);
        assert_eq!(load.code(), Code::VEX_Vmaskmovps_ymm_ymm_m256);
        assert_eq!(load.op1_register(), mask5.op0_register());
        assert_eq!(mask3.memory_displacement64(), MASKS as u64);
        assert_eq!(store.code(), Code::VEX_Vmaskmovps_m256_ymm_ymm);
        assert_eq!(
            (store.op1_register(), store.op2_register()),
            (R::YMM1, R::YMM2)
        );
    }

    /// The tails a plan needs: 5 of 8 or 16 output lanes; none where
    /// channels fill whole vectors (a tail above the lanes overlaps the
    /// vector before instead).
    #[test]
    fn tails_are_those_of_the_plan() {
        for (isa, co, tails) in [
            (Isa::Avx2, 5, vec![5]),
            (Isa::Avx512, 5, vec![5]),
            (Isa::Avx2, 16, vec![]),
            (Isa::Avx512, 16, vec![]),
        ] {
            let src = format!("layer t {{ input 4x4x8\n p: pointwise {co} }}");
            let p = plan(&src, isa);
            let nest = p.nest();
            let g = super::super::Gen::new(&p, &nest, isa);
            assert_eq!(g.tail_lengths(), tails, "{isa:?}, {co} channels");
        }
    }

    /// NaN is kept: x86's max and min return their second source when
    /// either is NaN, so the accumulator goes second.
    #[test]
    fn max_and_min_put_the_accumulator_second() {
        for isa in [Isa::Avx2, Isa::Avx512] {
            let p = any_plan(isa);
            let ins = emitted(&p, isa, |g| {
                g.vmax(g.v(3), g.v(7));
                g.vmin(g.v(3), g.v(7));
            });
            for i in &ins {
                let ops = (i.op0_register(), i.op1_register(), i.op2_register());
                let (acc, b) = match isa {
                    Isa::Avx2 => (R::YMM3, R::YMM7),
                    Isa::Avx512 => (R::ZMM3, R::ZMM7),
                };
                assert_eq!(ops, (acc, b, acc), "{:?}", i.code());
            }
        }
    }

    #[test]
    fn vconst_broadcasts_the_bits_of_its_value() {
        for isa in [Isa::Avx2, Isa::Avx512] {
            let p = any_plan(isa);
            let ins = emitted(&p, isa, |g| g.vconst(g.v(5), 6.0));
            assert_eq!(ins[0].code(), Code::Mov_r32_imm32);
            assert_eq!(ins[0].immediate32(), 6.0f32.to_bits());
            assert_eq!(ins[1].op0_register(), R::XMM5);
            let last = ins.last().unwrap();
            let nest = p.nest();
            assert_eq!(
                (last.op0_register(), last.op1_register()),
                (super::super::Gen::new(&p, &nest, isa).v(5), R::XMM5)
            );
        }
    }

    #[test]
    #[should_panic(expected = "vector register 16 of 16")]
    fn avx2_has_sixteen_vector_registers() {
        let p = any_plan(Isa::Avx2);
        let nest = p.nest();
        super::super::Gen::new(&p, &nest, Isa::Avx2).v(16);
    }
}
