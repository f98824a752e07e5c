//! A tile stage's epilogue: the accumulator tiles through the scratch to
//! the output, with bias, activation, residual and (for a non-tile reader)
//! the rounding to bf16.
//!
//! On AMX the epilogue of a block runs while the matrix unit computes the
//! next one: the block's tiles are stored to the scratch and described by
//! one record per tile (where its rows go, how many, its channels' bias
//! and mask); the next block's reduction then runs one record's rows every
//! few reduction steps ([`Tiles::epilogue_step`]), vector code the core
//! executes while the tile products it follows in program order are still
//! queued, and the records left when it ends are run before that block's
//! own tiles are stored over them ([`Tiles::drain`]). A block's tiles are
//! stored only after the previous block's records are done: the loads
//! precede the stores in program order, so one scratch area serves both.
//! Without AMX (`TilePlan::dot`), and in flat stages, the records run
//! right after the block's reduction ([`Tiles::deferred`]).

use super::{imm32, sib, slot, tmm, zmm, Count, Slot, Tiles, CONFIG};
use crate::asm::mem;
use crate::helpers::RoundRegs;
use convjit_ir::Activation;
use convjit_plan::stage_plan::{M_BLOCK, N_BLOCK};
use iced_x86::{Code, Instruction as I, MemoryOperand, Register as R};

/// A record's fields (8 bytes each), from its first byte.
#[derive(Clone, Copy)]
enum Field {
    /// The tile's first stored row in the scratch.
    Src,
    /// Where its first row's output (first channel) goes.
    Dst,
    /// Rows to store: 0..=16.
    Count,
    /// A grid's column of the first row.
    Col,
    /// The bias of the tile's first channel.
    Bias,
    /// The tile's channels below `co`, a 16-bit mask.
    Mask,
}

const FIELDS: i32 = 6;
/// Bytes of one record.
pub(super) const RECORD: i32 = FIELDS * 8;

/// Field `f` of the record at `base + at` (a field's number is below
/// `FIELDS`, `at` a stack frame's offset: the narrowing cannot wrap).
fn field(base: R, at: i32, f: Field) -> MemoryOperand {
    mem(base, at + f as i32 * 8)
}

/// The vector registers of the epilogue: the constants (loaded once,
/// [`Tiles::epilogue_constants`]), the bias, the value and the residual.
const ZERO: usize = 4;
const SIX: usize = 5;
const BIAS: usize = 6;
const VALUE: usize = 7;
const RESIDUAL: usize = 3;

fn round_regs() -> RoundRegs {
    RoundRegs {
        consts: [zmm(8), zmm(9), zmm(10), zmm(11), zmm(12), zmm(13)],
        tmp: zmm(14),
        mask: R::K4,
    }
}

impl Tiles<'_> {
    /// Whether a block's epilogue runs during the next block's reduction
    /// (AMX, a conv's taps), or right after its own: `vdpbf16ps`, whose
    /// reduction uses the vector registers, and flat stages, where it
    /// measured no faster (pointwise 14x14x512 -> 512, 12 runs each
    /// alternating: median 114.7 against 111.3 us; BENCHMARKS.md, issue
    /// 22).
    pub(super) fn deferred(&self) -> bool {
        !self.t.dot && !self.p.flat
    }

    /// Reduction steps between two records run during a reduction of
    /// `steps` steps: four records spread over four fifths of it (the
    /// last records must be done before the block's tiles are stored).
    pub(super) fn record_interval(steps: usize) -> usize {
        (steps / 5).max(1)
    }

    /// The epilogue's constants: zero and six for the activation, the
    /// rounding's. Uses rax.
    pub(super) fn epilogue_constants(&mut self) {
        let p = self.p;
        let (zero, six) = (zmm(ZERO), zmm(SIX));
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
        if self.t.round_output {
            round_regs().load_constants(&mut self.a);
        }
    }

    /// The block's epilogue after its reduction: its accumulator tiles
    /// stored to the scratch (after the previous block's records are
    /// done), one record per tile, then (not deferred) the records run.
    /// `first(g, m)` puts pixel block `m`'s first output pixel index (from
    /// output pixel 0) in rax and returns how many of its 16 are real.
    ///
    /// On a `grid`, `first` gives a grid position in rax (of the chunk
    /// from output row `[Row]`) and a register count: positions past the
    /// row's `wo` pixels are skipped (the record's column counts them).
    pub(super) fn epilogue(&mut self, grid: bool, first: impl Fn(&mut Self, usize) -> Count) {
        let t = self.t;
        if self.deferred() {
            // The previous block's records read the scratch stored over now.
            self.drain();
        }
        self.load(R::RBX, Slot::Scratch);
        self.add_imm(R::RBX, t.acc_offset as i64);
        // (`vdpbf16ps` passes stored theirs already.)
        for &i in self.accumulators().iter().filter(|_| !t.dot) {
            let m = sib(R::RBX, R::R13, (i * M_BLOCK * N_BLOCK * 4) as i64);
            self.a
                .emit(I::with2(Code::VEX_Tilestored_sibmem_tmm, m, tmm(i)));
        }
        let records = self.accumulators();
        for (r, &i) in records.iter().enumerate() {
            self.record(r, i, grid, &first);
        }
        self.a
            .emit(I::with2(Code::Lea_r64_m, R::RAX, slot(Slot::Records)));
        self.store(Slot::Next, R::RAX);
        self.add_imm(R::RAX, records.len() as i64 * RECORD as i64);
        self.store(Slot::Last, R::RAX);
        if self.deferred() {
            self.store_imm(Slot::Countdown, self.interval as i64);
        } else {
            self.epilogue_constants();
            self.drain();
        }
    }

    /// Record `r` (of the block's): accumulator tile `i`, stored at the
    /// scratch's accumulators (rbx). (`r` < 4, a block's tiles: its
    /// narrowing to a displacement cannot wrap.)
    fn record(
        &mut self,
        r: usize,
        i: usize,
        grid: bool,
        first: &impl Fn(&mut Self, usize) -> Count,
    ) {
        let (p, t) = (self.p, self.t);
        let (m_sel, n_sel) = (i / 2, i % 2);
        let rec = CONFIG + Slot::Records as i32 * 8 + r as i32 * RECORD;
        let at = |f: Field| field(R::RSP, rec, f);
        self.lea(R::RAX, R::RBX, imm32(i * M_BLOCK * N_BLOCK * 4));
        self.a
            .emit(I::with2(Code::Mov_rm64_r64, at(Field::Src), R::RAX));
        // rdx: the block's first channel; its channels < co, a mask.
        let n_slot = if n_sel == 0 { Slot::N0 } else { Slot::N1 };
        self.load(R::RDX, n_slot);
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
        self.a
            .emit(I::with2(Code::Mov_rm64_r64, at(Field::Mask), R::RAX));
        // The bias of those channels (zeros when the stage has none).
        self.load(R::RSI, Slot::Weights);
        let m = MemoryOperand::with_base_index_scale_displ_size(
            R::RSI,
            R::RDX,
            4,
            (t.bias_off * 4) as i64,
            1,
        );
        self.a.emit(I::with2(Code::Lea_r64_m, R::RSI, m));
        self.a
            .emit(I::with2(Code::Mov_rm64_r64, at(Field::Bias), R::RSI));
        // rsi: output of (first pixel, first channel); rcx: valid pixels.
        let count = first(self, m_sel);
        if grid {
            // rax = q: row Row + q / width, column q % width (rdx).
            self.mov_rr(R::R10, R::RCX);
            self.a.emit(I::with2(Code::Xor_r32_rm32, R::EDX, R::EDX));
            self.mov_imm(R::R11, t.staged_width as i64);
            self.a.emit(I::with1(Code::Div_rm64, R::R11));
            self.a
                .emit(I::with2(Code::Mov_rm64_r64, at(Field::Col), R::RDX));
            self.a
                .emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::Row)));
            self.mul_imm(R::RAX, p.wo as i64);
            self.a.emit(I::with2(Code::Add_r64_rm64, R::RAX, R::RDX));
            self.mov_rr(R::RCX, R::R10);
            self.load(R::RDX, n_slot);
            self.a.emit(I::with2(Code::Shl_rm64_imm8, R::RDX, 4u32));
        }
        // Bytes of an output value: 4, or 2 stored as bf16.
        let value = t.out_bytes();
        let px_bytes = (p.co * value) as i64;
        self.mul_imm(R::RAX, px_bytes);
        self.add_imm(R::RAX, (p.channels.0 * value) as i64);
        self.a
            .emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::OutBase)));
        // `value` is 2 or 4 (`TilePlan::out_bytes`): an index scale.
        let scale = if value == 2 { 2 } else { 4 };
        self.lea_scaled(R::RSI, R::RAX, R::RDX, scale);
        self.a
            .emit(I::with2(Code::Mov_rm64_r64, at(Field::Dst), R::RSI));
        match count {
            Count::Const(c) => self.mov_imm(R::RCX, c.min(M_BLOCK) as i64),
            Count::Reg(r) => {
                self.mov_rr(R::RCX, r);
                // At most a tile's rows; none where the count is not positive.
                self.mov_imm(R::RAX, M_BLOCK as i64);
                self.a.emit(I::with2(Code::Cmp_r64_rm64, R::RCX, R::RAX));
                self.a.emit(I::with2(Code::Cmovg_r64_rm64, R::RCX, R::RAX));
                self.a.emit(I::with2(Code::Xor_r32_rm32, R::EAX, R::EAX));
                self.a.emit(I::with2(Code::Test_rm64_r64, R::RCX, R::RCX));
                self.a.emit(I::with2(Code::Cmovl_r64_rm64, R::RCX, R::RAX));
            }
        }
        self.a
            .emit(I::with2(Code::Mov_rm64_r64, at(Field::Count), R::RCX));
    }

    /// Every record from `[Next]` to `[Last]` run.
    pub(super) fn drain(&mut self) {
        let (top, done) = (self.a.label(), self.a.label());
        self.a.bind(top);
        self.next_record(done);
        self.run_record();
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, top);
        self.a.bind(done);
    }

    /// During a reduction step: every `interval` steps, the next record
    /// (if any) run. Uses what [`Tiles::run_record`] uses.
    pub(super) fn epilogue_step(&mut self) {
        let skip = self.a.label();
        self.a
            .emit(I::with2(Code::Sub_rm64_imm32, slot(Slot::Countdown), 1i32));
        self.a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, skip);
        self.a.emit(I::with2(
            Code::Mov_rm64_imm32,
            slot(Slot::Countdown),
            imm32(self.interval),
        ));
        self.next_record(skip);
        self.run_record();
        self.a.bind(skip);
    }

    /// r8: the record at `[Next]`, which moves on; to `none` where it is
    /// `[Last]`.
    fn next_record(&mut self, none: crate::asm::Label) {
        self.load(R::R8, Slot::Next);
        self.a
            .emit(I::with2(Code::Cmp_r64_rm64, R::R8, slot(Slot::Last)));
        self.a.branch(Code::Jae_rel8_64, Code::Jae_rel32_64, none);
        self.a
            .emit(I::with2(Code::Add_rm64_imm32, slot(Slot::Next), RECORD));
    }

    /// `dst` = field `f` of the record at r8.
    fn load_field(&mut self, dst: R, f: Field) {
        self.a
            .emit(I::with2(Code::Mov_r64_rm64, dst, field(R::R8, 0, f)));
    }

    /// The record at r8: its tile's rows + bias, activation, + residual,
    /// rounded to bf16 where the plan says (`TilePlan::round_output`),
    /// stored (as bf16, 2 bytes a value, with `TilePlan::bf16_output`).
    /// Uses r8, r9, r15, rsi, rdi, rbx (a grid's column), zmm3, zmm6,
    /// zmm7, zmm14, k1 and k4; the constants in zmm4, zmm5, zmm8-13.
    fn run_record(&mut self) {
        let (p, t) = (self.p, self.t);
        let (zero, six, bias, v) = (zmm(ZERO), zmm(SIX), zmm(BIAS), zmm(VALUE));
        let done = self.a.label();
        self.load_field(R::R15, Field::Count);
        self.a.emit(I::with2(Code::Test_rm64_r64, R::R15, R::R15));
        self.a.branch(Code::Je_rel8_64, Code::Je_rel32_64, done);
        self.a.emit(I::with2(
            Code::VEX_Kmovw_kr_km16,
            R::K1,
            field(R::R8, 0, Field::Mask),
        ));
        self.load_field(R::R9, Field::Bias);
        self.vload_masked_m(bias, mem(R::R9, 0), R::K1);
        self.load_field(R::RSI, Field::Dst);
        if t.grid {
            self.load_field(R::RBX, Field::Col);
        }
        self.load_field(R::R8, Field::Src);
        if p.residual {
            self.load(R::RDI, Slot::ResDelta);
        }
        let round = t.round_output.then(round_regs);
        let value = t.out_bytes();
        let px_bytes = imm32(p.co * value);
        let top = self.a.label();
        self.a.bind(top);
        let skip = self.a.label();
        if t.grid {
            self.a
                .emit(I::with2(Code::Cmp_rm64_imm32, R::RBX, imm32(p.wo)));
            self.a.branch(Code::Jae_rel8_64, Code::Jae_rel32_64, skip);
        }
        self.a.emit(I::with3(
            Code::EVEX_Vaddps_zmm_k1z_zmm_zmmm512b32_er,
            v,
            bias,
            mem(R::R8, 0),
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
            let res = MemoryOperand::with_base_index_scale_displ_size(R::RSI, R::RDI, 1, 0, 1);
            self.vload_masked_m(zmm(RESIDUAL), res, R::K1);
            self.a.emit(I::with3(
                Code::EVEX_Vaddps_zmm_k1z_zmm_zmmm512b32_er,
                v,
                v,
                zmm(RESIDUAL),
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
        self.a
            .emit(I::with2(Code::Add_rm64_imm32, R::RSI, px_bytes));
        self.a.emit(I::with2(Code::Add_rm64_imm32, R::R8, 64i32));
        if t.grid {
            // Past the grid row's end: the next output row.
            let same_row = self.a.label();
            self.a.emit(I::with2(Code::Add_rm64_imm32, R::RBX, 1i32));
            self.a.emit(I::with2(
                Code::Cmp_rm64_imm32,
                R::RBX,
                imm32(t.staged_width),
            ));
            self.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, same_row);
            self.a.emit(I::with2(Code::Xor_r32_rm32, R::EBX, R::EBX));
            let back = (p.wo as i64 - t.staged_width as i64) * px_bytes as i64;
            self.a.emit(I::with2(
                Code::Add_rm64_imm32,
                R::RSI,
                i32::try_from(back).expect("a grid row's bytes fit 32 bits"),
            ));
            self.a.bind(same_row);
        }
        self.a.emit(I::with1(Code::Dec_rm64, R::R15));
        self.a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, top);
        self.a.bind(done);
    }
}
