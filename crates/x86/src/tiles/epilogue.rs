//! A tile stage's epilogue: the accumulator tiles through the scratch to
//! the output, with bias, activation, residual and (for a non-tile reader)
//! the rounding to bf16.

use super::{imm32, sib, slot, tmm, zmm, Count, Slot, Tiles};
use crate::asm::mem;
use crate::helpers::RoundRegs;
use convjit_ir::Activation;
use convjit_plan::stage_plan::{M_BLOCK, N_BLOCK};
use iced_x86::{Code, Instruction as I, MemoryOperand, Register as R};

impl Tiles<'_> {
    /// The accumulator tiles stored to the scratch, then per tile its
    /// valid pixels' channels: + bias, activation, + residual, rounded to
    /// bf16 where the plan says (`TilePlan::round_output`), stored (as
    /// bf16, 2 bytes a value, with `TilePlan::bf16_output`).
    /// `first(g, m)` puts pixel block `m`'s first output pixel index (from
    /// output pixel 0) in rax and returns how many of its 16 are real.
    ///
    /// On a `grid`, `first` gives a grid position in rax (of the chunk
    /// from output row `[Row]`) and a register count: positions past the
    /// row's `wo` pixels are skipped (r11 counts the column).
    pub(super) fn epilogue(&mut self, grid: bool, first: impl Fn(&mut Self, usize) -> Count) {
        let (p, t) = (self.p, self.t);
        self.load(R::RBX, Slot::Scratch);
        self.add_imm(R::RBX, t.acc_offset as i64);
        // (`vdpbf16ps` passes stored theirs already.)
        for &i in self.accumulators().iter().filter(|_| !t.dot) {
            let m = sib(R::RBX, R::R13, (i * M_BLOCK * N_BLOCK * 4) as i64);
            self.a
                .emit(I::with2(Code::VEX_Tilestored_sibmem_tmm, m, tmm(i)));
        }
        let (zero, six, bias, v) = (zmm(4), zmm(5), zmm(6), zmm(7));
        if p.activation != Activation::None {
            self.a.emit(I::with3(
                Code::EVEX_Vpxord_zmm_k1z_zmm_zmmm512b32,
                zero,
                zero,
                zero,
            ));
        }
        if p.activation == Activation::Relu6 {
            self.mov_imm(R::RAX, 6.0f32.to_bits() as i64);
            self.a
                .emit(I::with2(Code::EVEX_Vpbroadcastd_zmm_k1z_r32, six, R::EAX));
        }
        let round = t.round_output.then_some(RoundRegs {
            consts: [zmm(8), zmm(9), zmm(10), zmm(11), zmm(12), zmm(13)],
            tmp: zmm(14),
            mask: R::K4,
        });
        if let Some(r) = &round {
            r.load_constants(&mut self.a);
        }
        // Bytes of an output value: 4, or 2 stored as bf16.
        let value = t.out_bytes();
        let px_bytes = (p.co * value) as i64;
        for &i in self.accumulators() {
            let (m_sel, n_sel) = (i / 2, i % 2);
            // rdx: the block's first channel; k1: its channels < co.
            self.load(R::RDX, if n_sel == 0 { Slot::N0 } else { Slot::N1 });
            self.a.emit(I::with2(Code::Shl_rm64_imm8, R::RDX, 4u32));
            self.mov_imm(R::RCX, t.co as i64);
            self.a.emit(I::with2(Code::Sub_r64_rm64, R::RCX, R::RDX));
            // bzhi reads the index's low byte: at most 16 first.
            self.mov_imm(R::RAX, N_BLOCK as i64);
            self.a.emit(I::with2(Code::Cmp_r64_rm64, R::RCX, R::RAX));
            self.a.emit(I::with2(Code::Cmovg_r64_rm64, R::RCX, R::RAX));
            self.mov_imm(R::RAX, 0xffff);
            self.a.emit(I::with3(
                Code::VEX_Bzhi_r32_rm32_r32,
                R::EAX,
                R::EAX,
                R::ECX,
            ));
            self.a.emit(I::with2(Code::VEX_Kmovw_kr_r32, R::K1, R::EAX));
            // The bias of those channels (zeros when the stage has none).
            self.load(R::RSI, Slot::Weights);
            let m = MemoryOperand::with_base_index_scale_displ_size(
                R::RSI,
                R::RDX,
                4,
                (t.bias_off * 4) as i64,
                1,
            );
            self.vload_masked_m(bias, m, R::K1);
            // rsi: output of (first pixel, first channel); rdi: its
            // residual; rcx: valid pixels.
            let count = first(self, m_sel);
            if grid {
                // rax = q: row Row + q / width, column r11 = q % width.
                self.mov_rr(R::R10, R::RCX);
                self.a.emit(I::with2(Code::Xor_r32_rm32, R::EDX, R::EDX));
                self.mov_imm(R::R11, t.staged_width as i64);
                self.a.emit(I::with1(Code::Div_rm64, R::R11));
                self.mov_rr(R::R11, R::RDX);
                self.a
                    .emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::Row)));
                self.mul_imm(R::RAX, p.wo as i64);
                self.a.emit(I::with2(Code::Add_r64_rm64, R::RAX, R::R11));
                self.mov_rr(R::RCX, R::R10);
                self.load(R::RDX, if n_sel == 0 { Slot::N0 } else { Slot::N1 });
                self.a.emit(I::with2(Code::Shl_rm64_imm8, R::RDX, 4u32));
            }
            self.mul_imm(R::RAX, px_bytes);
            self.add_imm(R::RAX, (p.channels.0 * value) as i64);
            self.a
                .emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::OutBase)));
            // `value` is 2 or 4 (`TilePlan::out_bytes`): an index scale.
            let scale = if value == 2 { 2 } else { 4 };
            self.lea_scaled(R::RSI, R::RAX, R::RDX, scale);
            match count {
                Count::Const(c) => self.mov_imm(R::RCX, c as i64),
                Count::Reg(r) => self.mov_rr(R::RCX, r),
            }
            // rbx + r8: this tile's stored rows.
            self.mov_imm(R::R8, (i * M_BLOCK * N_BLOCK * 4) as i64);
            let top = self.a.label();
            let done = self.a.label();
            self.a.emit(I::with2(Code::Cmp_rm64_imm32, R::RCX, 0i32));
            self.a.branch(Code::Jle_rel8_64, Code::Jle_rel32_64, done);
            self.a
                .emit(I::with2(Code::Cmp_rm64_imm32, R::RCX, imm32(M_BLOCK)));
            self.mov_imm(R::RAX, M_BLOCK as i64);
            self.a.emit(I::with2(Code::Cmovg_r64_rm64, R::RCX, R::RAX));
            self.a.bind(top);
            let skip = self.a.label();
            if grid {
                self.a
                    .emit(I::with2(Code::Cmp_rm64_imm32, R::R11, imm32(p.wo)));
                self.a.branch(Code::Jae_rel8_64, Code::Jae_rel32_64, skip);
            }
            let acc = MemoryOperand::with_base_index_scale_displ_size(R::RBX, R::R8, 1, 0, 0);
            self.a.emit(I::with3(
                Code::EVEX_Vaddps_zmm_k1z_zmm_zmmm512b32_er,
                v,
                bias,
                acc,
            ));
            if p.activation != Activation::None {
                self.a.emit(I::with3(
                    Code::EVEX_Vmaxps_zmm_k1z_zmm_zmmm512b32_sae,
                    v,
                    zero,
                    v,
                ));
            }
            if p.activation == Activation::Relu6 {
                self.a.emit(I::with3(
                    Code::EVEX_Vminps_zmm_k1z_zmm_zmmm512b32_sae,
                    v,
                    six,
                    v,
                ));
            }
            if p.residual {
                self.load(R::RDI, Slot::ResDelta);
                let res = MemoryOperand::with_base_index_scale_displ_size(R::RSI, R::RDI, 1, 0, 0);
                self.vload_masked_m(zmm(3), res, R::K1);
                self.a.emit(I::with3(
                    Code::EVEX_Vaddps_zmm_k1z_zmm_zmmm512b32_er,
                    v,
                    v,
                    zmm(3),
                ));
            }
            if let Some(r) = &round {
                r.round(&mut self.a, v, v);
            }
            if t.bf16_output {
                // The rounded floats' upper halves: their bf16 bits.
                self.a.emit(I::with3(
                    Code::EVEX_Vpsrld_zmm_k1z_zmmm512b32_imm8,
                    v,
                    v,
                    16u32,
                ));
                self.a.emit_with(
                    I::with2(Code::EVEX_Vpmovdw_ymmm256_k1z_zmm, mem(R::RSI, 0), v),
                    |i| i.set_op_mask(R::K1),
                );
            } else {
                self.a.emit_with(
                    I::with2(Code::EVEX_Vmovups_zmmm512_k1z_zmm, mem(R::RSI, 0), v),
                    |i| i.set_op_mask(R::K1),
                );
            }
            self.a.bind(skip);
            self.add_imm(R::RSI, px_bytes);
            self.add_imm(R::R8, 64);
            if grid {
                // Past the grid row's end: the next output row.
                let same_row = self.a.label();
                self.add_imm(R::R11, 1);
                self.a.emit(I::with2(
                    Code::Cmp_rm64_imm32,
                    R::R11,
                    imm32(t.staged_width),
                ));
                self.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, same_row);
                self.mov_imm(R::R11, 0);
                self.add_imm(R::RSI, (p.wo as i64 - t.staged_width as i64) * px_bytes);
                self.a.bind(same_row);
            }
            self.a.emit(I::with1(Code::Dec_rm64, R::RCX));
            self.a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, top);
            self.a.bind(done);
        }
    }
}
