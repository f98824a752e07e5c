//! General-purpose instructions: moves, stack slots, immediates and
//! addresses. A displacement or immediate of the layer's size goes
//! through [`Gen::at`], [`Gen::add_imm`] or [`Gen::mul_imm`], which form
//! it in `r10` or `r11` when it does not fit an instruction's 32 bits.

use super::{slot, Ctr, Gen, Slot, ADDR, IMM};
use crate::asm::{bcst, mem};
use iced_x86::{Code, Instruction as I, MemoryOperand, Register as R};

impl Gen<'_> {
    pub(super) fn mov_rr(&mut self, d: R, s: R) {
        self.a.emit(I::with2(Code::Mov_r64_rm64, d, s));
    }

    pub(super) fn mov_imm(&mut self, d: R, v: i64) {
        if let Ok(v) = i32::try_from(v) {
            // mov r64, imm32 sign-extends.
            self.a.emit(I::with2(Code::Mov_rm64_imm32, d, v));
        } else {
            self.a.emit(I::with2(Code::Mov_r64_imm64, d, v));
        }
    }

    pub(super) fn load(&mut self, d: R, s: Slot) {
        self.a.emit(I::with2(Code::Mov_r64_rm64, d, slot(s)));
    }

    pub(super) fn store(&mut self, s: Slot, r: R) {
        self.a.emit(I::with2(Code::Mov_rm64_r64, slot(s), r));
    }

    pub(super) fn add_rr(&mut self, d: R, s: R) {
        self.a.emit(I::with2(Code::Add_r64_rm64, d, s));
    }

    pub(super) fn add_slot(&mut self, d: R, s: Slot) {
        self.a.emit(I::with2(Code::Add_r64_rm64, d, slot(s)));
    }

    /// `d += v`, through `r11` when `v` does not fit 32 bits.
    pub(super) fn add_imm(&mut self, d: Ctr, v: i64) {
        if v == 0 {
            return;
        }
        match (d, i32::try_from(v)) {
            (Ctr::Reg(r), Ok(v)) => self.a.emit(I::with2(Code::Add_rm64_imm32, r, v)),
            (Ctr::Slot(s), Ok(v)) => self.a.emit(I::with2(Code::Add_rm64_imm32, slot(s), v)),
            (d, Err(_)) => {
                self.mov_imm(IMM, v);
                match d {
                    Ctr::Reg(r) => self.add_rr(r, IMM),
                    Ctr::Slot(s) => self.a.emit(I::with2(Code::Add_rm64_r64, slot(s), IMM)),
                }
            }
        }
    }

    pub(super) fn add_reg_imm(&mut self, r: R, v: i64) {
        self.add_imm(Ctr::Reg(r), v);
    }

    /// `r *= v`, through `r11` when `v` does not fit 32 bits.
    pub(super) fn mul_imm(&mut self, r: R, v: i64) {
        match i32::try_from(v) {
            Ok(1) => {}
            Ok(v) => self.a.emit(I::with3(Code::Imul_r64_rm64_imm32, r, r, v)),
            Err(_) => {
                self.mov_imm(IMM, v);
                self.a.emit(I::with2(Code::Imul_r64_rm64, r, IMM));
            }
        }
    }

    /// `[base + disp]`; beyond 32 bits the address is formed in `r10`
    /// (so use the operand before the next call).
    pub(super) fn at(&mut self, base: R, disp: i64) -> MemoryOperand {
        match i32::try_from(disp) {
            Ok(d) => mem(base, d),
            Err(_) => {
                self.mov_imm(ADDR, disp);
                self.add_rr(ADDR, base);
                mem(ADDR, 0)
            }
        }
    }

    /// [`Gen::at`] with an embedded broadcast of one f32 (AVX-512).
    pub(super) fn at_bcst(&mut self, base: R, disp: i64) -> MemoryOperand {
        match i32::try_from(disp) {
            Ok(d) => bcst(base, d),
            Err(_) => {
                self.mov_imm(ADDR, disp);
                self.add_rr(ADDR, base);
                bcst(ADDR, 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{any_plan, emitted};
    use super::super::{slot, Ctr, Slot};
    use crate::Isa;
    use iced_x86::{Code, Instruction, Register as R};

    /// Immediates at and beyond the edges of 32 bits.
    const EDGES: [i64; 12] = [
        0,
        1,
        -1,
        i32::MAX as i64,
        i32::MIN as i64,
        i32::MAX as i64 + 1,
        i32::MIN as i64 - 1,
        u32::MAX as i64,
        1 << 40,
        -(1 << 40),
        i64::MAX,
        i64::MIN,
    ];

    fn fits(v: i64) -> bool {
        i32::try_from(v).is_ok()
    }

    /// The value a `mov r64, imm` loads (imm32 forms sign-extend).
    fn loaded(i: &Instruction) -> i64 {
        match i.code() {
            Code::Mov_rm64_imm32 => i.immediate32() as i32 as i64,
            Code::Mov_r64_imm64 => i.immediate64() as i64,
            c => panic!("not a mov of an immediate: {c:?}"),
        }
    }

    #[test]
    fn mov_imm_loads_every_value_exactly() {
        let p = any_plan(Isa::Avx2);
        for v in EDGES {
            let ins = emitted(&p, Isa::Avx2, |g| g.mov_imm(R::RCX, v));
            assert_eq!(ins.len(), 1, "{v}");
            assert_eq!(ins[0].op0_register(), R::RCX);
            assert_eq!(loaded(&ins[0]), v);
            // The sign-extended short form only where it means `v`.
            assert_eq!(ins[0].code() == Code::Mov_rm64_imm32, fits(v), "{v}");
        }
    }

    #[test]
    fn add_imm_adds_wide_values_through_r11() {
        let p = any_plan(Isa::Avx2);
        for v in EDGES {
            let ins = emitted(&p, Isa::Avx2, |g| g.add_imm(Ctr::Reg(R::RAX), v));
            if v == 0 {
                assert!(ins.is_empty(), "adding 0 emits nothing");
            } else if fits(v) {
                assert_eq!(ins.len(), 1);
                assert_eq!(ins[0].code(), Code::Add_rm64_imm32);
                assert_eq!(ins[0].op0_register(), R::RAX);
                assert_eq!(ins[0].immediate32() as i32 as i64, v);
            } else {
                assert_eq!(ins.len(), 2, "{v}");
                assert_eq!(ins[0].op0_register(), R::R11);
                assert_eq!(loaded(&ins[0]), v);
                assert_eq!(ins[1].code(), Code::Add_r64_rm64);
                assert_eq!(
                    (ins[1].op0_register(), ins[1].op1_register()),
                    (R::RAX, R::R11)
                );
            }
        }
    }

    #[test]
    fn add_imm_to_a_slot_adds_in_memory() {
        let p = any_plan(Isa::Avx512);
        let at = slot(Slot::SegO).displacement as u64;
        for v in EDGES.into_iter().filter(|&v| v != 0) {
            let ins = emitted(&p, Isa::Avx512, |g| g.add_imm(Ctr::Slot(Slot::SegO), v));
            let add = ins.last().unwrap();
            assert_eq!(add.memory_base(), R::RSP);
            assert_eq!(add.memory_displacement64(), at);
            if fits(v) {
                assert_eq!(ins.len(), 1);
                assert_eq!(add.code(), Code::Add_rm64_imm32);
                assert_eq!(add.immediate32() as i32 as i64, v);
            } else {
                assert_eq!(loaded(&ins[0]), v);
                assert_eq!(add.code(), Code::Add_rm64_r64);
                assert_eq!(add.op1_register(), R::R11);
            }
        }
    }

    #[test]
    fn mul_imm_multiplies_by_wide_values_through_r11() {
        let p = any_plan(Isa::Avx2);
        for v in EDGES {
            let ins = emitted(&p, Isa::Avx2, |g| g.mul_imm(R::R15, v));
            if v == 1 {
                assert!(ins.is_empty(), "multiplying by 1 emits nothing");
            } else if fits(v) {
                assert_eq!(ins.len(), 1);
                assert_eq!(ins[0].code(), Code::Imul_r64_rm64_imm32);
                assert_eq!(
                    (ins[0].op0_register(), ins[0].op1_register()),
                    (R::R15, R::R15)
                );
                assert_eq!(ins[0].immediate32() as i32 as i64, v);
            } else {
                assert_eq!(ins.len(), 2, "{v}");
                assert_eq!(loaded(&ins[0]), v);
                assert_eq!(ins[1].code(), Code::Imul_r64_rm64);
                assert_eq!(
                    (ins[1].op0_register(), ins[1].op1_register()),
                    (R::R15, R::R11)
                );
            }
        }
    }

    /// `at(base, disp)` addresses `base + disp` for any i64 `disp`: the
    /// operand itself where `disp` fits 32 bits, else `[r10]` after `r10 =
    /// disp + base`.
    #[test]
    fn at_addresses_base_plus_any_displacement() {
        for isa in [Isa::Avx2, Isa::Avx512] {
            let p = any_plan(isa);
            for disp in EDGES {
                for bcst in [false, true] {
                    if bcst && isa == Isa::Avx2 {
                        continue;
                    }
                    let ins = emitted(&p, isa, |g| {
                        let (d, a) = (g.v(0), g.v(1));
                        let m = if bcst {
                            g.at_bcst(R::RAX, disp)
                        } else {
                            g.at(R::RAX, disp)
                        };
                        g.fma(d, a, super::super::Src::M(m));
                    });
                    let fma = ins.last().unwrap();
                    assert_eq!(fma.is_broadcast(), bcst);
                    if fits(disp) {
                        assert_eq!(ins.len(), 1, "{disp}");
                        assert_eq!(fma.memory_base(), R::RAX);
                        assert_eq!(fma.memory_displacement64() as i64, disp);
                    } else {
                        assert_eq!(ins.len(), 3, "{disp}");
                        assert_eq!(ins[0].op0_register(), R::R10);
                        assert_eq!(loaded(&ins[0]), disp);
                        assert_eq!(ins[1].code(), Code::Add_r64_rm64);
                        assert_eq!(
                            (ins[1].op0_register(), ins[1].op1_register()),
                            (R::R10, R::RAX)
                        );
                        assert_eq!(fma.memory_base(), R::R10);
                        assert_eq!(fma.memory_displacement64(), 0);
                    }
                }
            }
        }
    }
}
