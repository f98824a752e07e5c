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
