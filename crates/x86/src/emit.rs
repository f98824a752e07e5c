//! One stage function in x86-64 machine code, following its [`Plan`]: the
//! same loops as the Cranelift generator (see `convjit-jit`'s codegen.rs),
//! with our own registers.
//!
//! Signature (System V): `fn(input rdi, weights rsi, output rdx, residual
//! rcx, row0 r8, rows r9)`. Registers:
//!
//! | register | holds |
//! | --- | --- |
//! | rdi, rsi | the image's input (row 0), the packed weights: never change |
//! | r8, r9 | the output row (pixel, flat) being computed, rows left |
//! | r13, r15, r12, r14 | a register block's input, weights, output, bias |
//! | rax, rbx | the block's input and weight pointers, advanced by its loops |
//! | rcx, rdx, rbp | the block's loop counters (kernel rows, columns, reduction) |
//! | r10, r11 | scratch: addresses and immediates too wide for 32 bits |
//!
//! Everything of the outer loops (rows' pointers, column blocks, channel
//! groups and runs) lives in stack slots: those loops run once per
//! register block, which does hundreds of FMAs. Vector registers:
//! accumulators from 0, then the weight vectors of one step and the
//! broadcast (input) registers; the schedule leaves at least four free
//! for the epilogue (zero, six, two temporaries).
//!
//! Every displacement and immediate goes through [`Gen::at`] or
//! [`Gen::add_imm`]: one that does not fit 32 bits is added in a 64-bit
//! register instead, so no offset wraps.

use crate::asm::{bcst, mem, Asm};
use crate::Isa;
use convjit_ir::Activation;
use convjit_plan::plan::{tap_range, InSrc, OutDst, Plan, Run, Strategy};
use iced_x86::{Code, Instruction as I, MemoryOperand, Register as R};

const IMG: R = R::RDI;
const WTS: R = R::RSI;
const OY: R = R::R8;
const LEFT: R = R::R9;
const RUN_I: R = R::R13;
const RUN_W: R = R::R15;
const RUN_O: R = R::R12;
const RUN_B: R = R::R14;
const IP: R = R::RAX;
const WP: R = R::RBX;
const CKY: R = R::RCX;
const CKX: R = R::RDX;
const CRED: R = R::RBP;
/// The residual pointer in the epilogue (the column counter is done then).
const RES: R = R::RDX;
const ADDR: R = R::R10;
const IMM: R = R::R11;

const SAVED: [R; 6] = [R::RBX, R::RBP, R::R12, R::R13, R::R14, R::R15];

/// Reduction steps emitted without a loop (see [`Gen::reduce`]): 3x3x3
/// and 5x5x3 tap rows (conv1 224x224x3 151 -> 131 us). Not more: 32 steps
/// (about 1,400 instructions of 6-7 bytes a block) made MobileNet v1's
/// 112x112x32 -> 64 layer run 486 -> 622 us, likely decoded again each
/// time instead of replayed from the micro-op cache.
const MAX_STRAIGHT_STEPS: usize = 16;

/// Prefetch instructions per depthwise register block at most: 16 pixels
/// of a 3-wide kernel at stride 2 read 33 lines of each of 2 new rows.
const MAX_PREFETCHES: usize = 72;

/// 64-bit stack slots of the outer loops' state (slot `s` at `rsp + 8*s`).
/// Pointers are byte addresses; counters count down a loop's trips
/// ([`Gen::repeat`]).
#[derive(Clone, Copy)]
enum Slot {
    /// Where output row (pixel, for a flat stage) 0 would be: the output
    /// argument less `row0` rows (pixels).
    OutBase,
    /// The residual argument less the output argument: added to an output
    /// address, the address of what the residual adds there.
    ResDelta,
    /// The `row0` argument: the first output row (pixel) to compute.
    Row0,
    /// The `rows` argument: how many.
    Rows,
    /// Where the input row that the current output row's first valid
    /// kernel row reads starts (the first kernel row but in a border row:
    /// [`Gen::row_taps`]).
    InRow,
    /// Where the current output row starts.
    OutRow,
    /// The current output row's first valid kernel row, times the kernel
    /// width: its tap offset into a unit's weights.
    Wk0,
    /// The current output row's valid kernel rows (a border row reads
    /// fewer than `kh`).
    Nky,
    /// The current pixel block's input: where its first pixel's first
    /// kernel column reads in row `InRow` (a flat stage: its first pixel).
    SegI,
    /// The current pixel block's output: its first pixel.
    SegO,
    /// Trips left of a row's repeated column blocks.
    SegC,
    /// The current channel group's input (grouped stages).
    GrpI,
    /// The current channel group's output.
    GrpO,
    /// The current channel group's weights.
    GrpW,
    /// The current channel group's bias.
    GrpB,
    /// Channel groups left.
    GrpC,
    /// Repetitions left of the current run (channel blocks inside the
    /// pixels).
    RunC,
    /// The current run repetition's weights (channel blocks outside the
    /// pixels: [`Plan::channels_outer`]).
    ChW,
    /// Its bias.
    ChB,
    /// Its first output channel, as a byte offset from a pixel.
    ChO,
    /// Repetitions left of the run (channel blocks outside the pixels).
    ChC,
    /// A flat stage: the next pixel block's first pixel.
    At,
    /// A flat stage: one past the last pixel to compute.
    End,
    /// A flat stage: the last first pixel of a full block (`End - px`).
    Last,
}

const SLOTS: i32 = 24;
/// AVX2 lane masks (32 bytes each) after the slots, one per tail length.
const MASKS: i32 = SLOTS * 8;
/// Stack frame: slots, up to 8 masks, and 8 bytes that (with the six
/// saved registers and the return address) keep rsp 16-byte aligned.
const FRAME: i32 = MASKS + 8 * 32 + 8;

/// Every `as i32`/`as u32` in this file narrows a value bounded by the
/// generator itself, never by the layer: a slot number (< 24), a mask
/// index (< 7) and lane (< 16), a block's pixels (<= 28), a vector lane's
/// 128-bit chunk (< 4), a register number (< 32). Layer-sized offsets go
/// through [`Gen::at`] and [`Gen::add_imm`].
fn slot(s: Slot) -> MemoryOperand {
    mem(R::RSP, s as i32 * 8)
}

/// A loop trip count: known now, or in a slot at run time.
#[derive(Clone, Copy)]
enum Count {
    Const(usize),
    Slot(Slot),
}

/// Where a loop keeps its counter.
#[derive(Clone, Copy)]
enum Ctr {
    Reg(R),
    Slot(Slot),
}

/// A vector instruction's last source: a register or memory.
#[derive(Clone, Copy)]
enum Src {
    R(R),
    M(MemoryOperand),
}

/// What a register block computes (see the Cranelift generator's `BlockArgs`).
struct BlockArgs {
    npx: usize,
    /// Depthwise: each pixel's valid kernel columns `(kx0, nkx)`.
    cols: Option<Vec<(usize, usize)>>,
    nky: Count,
    /// Kernel rows have borders: the weights start at `[Wk0] + kx0` taps.
    wk0: bool,
    kx0: usize,
    nkx: usize,
}

pub struct Gen<'a> {
    pub a: Asm,
    p: &'a Plan,
    isa: Isa,
    /// Bytes per vector.
    vb: i64,
    regs: usize,
    /// Tail lengths with masks: AVX-512 `k1..`, AVX2 stack masks.
    masks: Vec<usize>,
}

impl<'a> Gen<'a> {
    pub fn new(p: &'a Plan, isa: Isa) -> Gen<'a> {
        Gen {
            a: Asm::new(),
            p,
            isa,
            vb: (p.sched.lanes * 4) as i64,
            regs: match isa {
                Isa::Avx2 => 16,
                Isa::Avx512 => 32,
            },
            masks: Vec::new(),
        }
    }

    // ---- general-purpose instructions ----

    fn mov_rr(&mut self, d: R, s: R) {
        self.a.emit(I::with2(Code::Mov_r64_rm64, d, s));
    }

    fn mov_imm(&mut self, d: R, v: i64) {
        if let Ok(v) = i32::try_from(v) {
            // mov r64, imm32 sign-extends.
            self.a.emit(I::with2(Code::Mov_rm64_imm32, d, v));
        } else {
            self.a.emit(I::with2(Code::Mov_r64_imm64, d, v));
        }
    }

    fn load(&mut self, d: R, s: Slot) {
        self.a.emit(I::with2(Code::Mov_r64_rm64, d, slot(s)));
    }

    fn store(&mut self, s: Slot, r: R) {
        self.a.emit(I::with2(Code::Mov_rm64_r64, slot(s), r));
    }

    fn add_rr(&mut self, d: R, s: R) {
        self.a.emit(I::with2(Code::Add_r64_rm64, d, s));
    }

    fn add_slot(&mut self, d: R, s: Slot) {
        self.a.emit(I::with2(Code::Add_r64_rm64, d, slot(s)));
    }

    /// `d += v`, through `r11` when `v` does not fit 32 bits.
    fn add_imm(&mut self, d: Ctr, v: i64) {
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

    fn add_reg_imm(&mut self, r: R, v: i64) {
        self.add_imm(Ctr::Reg(r), v);
    }

    /// `r *= v`, through `r11` when `v` does not fit 32 bits.
    fn mul_imm(&mut self, r: R, v: i64) {
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
    fn at(&mut self, base: R, disp: i64) -> MemoryOperand {
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
    fn at_bcst(&mut self, base: R, disp: i64) -> MemoryOperand {
        match i32::try_from(disp) {
            Ok(d) => bcst(base, d),
            Err(_) => {
                self.mov_imm(ADDR, disp);
                self.add_rr(ADDR, base);
                bcst(ADDR, 0)
            }
        }
    }

    // ---- vector instructions ----

    fn v(&self, i: usize) -> R {
        assert!(i < self.regs, "vector register {i} of {}", self.regs);
        let base = match self.isa {
            Isa::Avx2 => R::YMM0,
            Isa::Avx512 => R::ZMM0,
        };
        nth_register(base, i)
    }

    fn x(&self, i: usize) -> R {
        nth_register(R::XMM0, i)
    }

    fn evex(&self) -> bool {
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

    fn vload(&mut self, d: R, m: MemoryOperand) {
        let c = self.pick(
            Code::EVEX_Vmovups_zmm_k1z_zmmm512,
            Code::VEX_Vmovups_ymm_ymmm256,
        );
        self.a.emit(I::with2(c, d, m));
    }

    fn vstore(&mut self, m: MemoryOperand, s: R) {
        let c = self.pick(
            Code::EVEX_Vmovups_zmmm512_k1z_zmm,
            Code::VEX_Vmovups_ymmm256_ymm,
        );
        self.a.emit(I::with2(c, m, s));
    }

    fn vcopy(&mut self, d: R, s: R) {
        let c = self.pick(
            Code::EVEX_Vmovaps_zmm_k1z_zmmm512,
            Code::VEX_Vmovaps_ymm_ymmm256,
        );
        self.a.emit(I::with2(c, d, s));
    }

    fn vzero(&mut self, d: R) {
        let c = self.pick(
            Code::EVEX_Vpxord_zmm_k1z_zmm_zmmm512b32,
            Code::VEX_Vxorps_ymm_ymm_ymmm256,
        );
        self.a.emit(I::with3(c, d, d, d));
    }

    fn vbroadcast(&mut self, d: R, m: MemoryOperand) {
        let c = self.pick(
            Code::EVEX_Vbroadcastss_zmm_k1z_xmmm32,
            Code::VEX_Vbroadcastss_ymm_m32,
        );
        self.a.emit(I::with2(c, d, m));
    }

    /// `acc += a * b`.
    fn fma(&mut self, acc: R, a: R, b: Src) {
        let c = self.pick(
            Code::EVEX_Vfmadd231ps_zmm_k1z_zmm_zmmm512b32_er,
            Code::VEX_Vfmadd231ps_ymm_ymm_ymmm256,
        );
        self.op3(c, acc, a, b);
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
    fn vmax(&mut self, d: R, b: R) {
        let c = self.pick(
            Code::EVEX_Vmaxps_zmm_k1z_zmm_zmmm512b32_sae,
            Code::VEX_Vmaxps_ymm_ymm_ymmm256,
        );
        self.op3(c, d, b, Src::R(d));
    }

    /// `d = min(d, b)`, NaN in `d` kept: `vminps d, b, d` (see [`Gen::vmax`]).
    fn vmin(&mut self, d: R, b: R) {
        let c = self.pick(
            Code::EVEX_Vminps_zmm_k1z_zmm_zmmm512b32_sae,
            Code::VEX_Vminps_ymm_ymm_ymmm256,
        );
        self.op3(c, d, b, Src::R(d));
    }

    fn vadd(&mut self, d: R, b: Src) {
        let c = self.pick(
            Code::EVEX_Vaddps_zmm_k1z_zmm_zmmm512b32_er,
            Code::VEX_Vaddps_ymm_ymm_ymmm256,
        );
        self.op3(c, d, d, b);
    }

    /// All lanes of `d` = `x`.
    fn vconst(&mut self, d: R, x: f32) {
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
    fn index(&self, r: R) -> usize {
        let base = match self.isa {
            Isa::Avx2 => R::YMM0,
            Isa::Avx512 => R::ZMM0,
        };
        r as usize - base as usize
    }

    /// The mask of the first `n` lanes: AVX-512 a k register, AVX2 the
    /// offset of a 32-byte mask on the stack.
    fn mask(&self, n: usize) -> usize {
        self.masks
            .iter()
            .position(|&m| m == n)
            .expect("masks are set up for every tail length")
    }

    /// `d` = the first `n` lanes at `m`, zeros beyond: never touches the
    /// memory of the other lanes. `tmp` is free (AVX2's mask register:
    /// may be `d`).
    fn vload_masked(&mut self, d: R, m: MemoryOperand, n: usize, tmp: R) {
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
    fn vstore_masked(&mut self, m: MemoryOperand, s: R, n: usize, tmp: R) {
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

    // ---- loops ----

    /// Runs `body` `count` times, counting in `ctr`: straight-line for a
    /// count of 0 or 1, else a loop tested at the bottom, and at the top
    /// too for a run-time count (which may be 0).
    fn repeat(&mut self, count: Count, ctr: Ctr, body: &mut dyn FnMut(&mut Self)) {
        let exit = self.a.label();
        match count {
            Count::Const(0) => return,
            Count::Const(1) => return body(self),
            Count::Const(n) => match ctr {
                Ctr::Reg(r) => self.mov_imm(r, n as i64),
                Ctr::Slot(s) => {
                    self.mov_imm(IMM, n as i64);
                    self.store(s, IMM);
                }
            },
            Count::Slot(src) => {
                self.load(IMM, src);
                match ctr {
                    Ctr::Reg(r) => self.mov_rr(r, IMM),
                    Ctr::Slot(s) => self.store(s, IMM),
                }
                self.a.emit(I::with2(Code::Test_rm64_r64, IMM, IMM));
                self.a.branch(Code::Je_rel8_64, Code::Je_rel32_64, exit);
            }
        }
        let top = self.a.label();
        self.a.bind(top);
        body(self);
        match ctr {
            Ctr::Reg(r) => self.a.emit(I::with1(Code::Dec_rm64, r)),
            Ctr::Slot(s) => self.a.emit(I::with1(Code::Dec_rm64, slot(s))),
        }
        self.a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, top);
        self.a.bind(exit);
    }

    // ---- the function ----

    pub fn function(&mut self) {
        let p = self.p;
        for r in SAVED {
            self.a.emit(I::with1(Code::Push_r64, r));
        }
        self.a.emit(I::with2(Code::Sub_rm64_imm32, R::RSP, FRAME));
        // Output rows (pixels, flat) are addressed from where row 0 would be.
        let unit = if p.flat { 1 } else { p.wo };
        self.mov_rr(R::RAX, R::R8);
        self.mul_imm(R::RAX, (unit * p.co * 4) as i64);
        self.mov_rr(ADDR, R::RDX);
        self.a.emit(I::with2(Code::Sub_r64_rm64, ADDR, R::RAX));
        self.store(Slot::OutBase, ADDR);
        if p.residual {
            self.mov_rr(ADDR, R::RCX);
            self.a.emit(I::with2(Code::Sub_r64_rm64, ADDR, R::RDX));
            self.store(Slot::ResDelta, ADDR);
        }
        self.store(Slot::Row0, R::R8);
        self.store(Slot::Rows, R::R9);
        self.setup_masks();
        if p.strategy == Strategy::Reduce {
            self.reduce_body();
        } else {
            self.dw_body();
        }
        self.a.emit(I::with2(Code::Add_rm64_imm32, R::RSP, FRAME));
        for r in SAVED.iter().rev() {
            self.a.emit(I::with1(Code::Pop_r64, *r));
        }
        // The caller's SSE code must not pay for dirty upper halves.
        self.a.emit(Ok(I::with(Code::VEX_Vzeroupper)));
        self.a.emit(Ok(I::with(Code::Retnq)));
    }

    /// Masks of every tail length the plan's units need.
    fn setup_masks(&mut self) {
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

    /// Rows `row0..row0 + rows` one by one: `row` emits one row's work
    /// (it may use every register but rdi, rsi, r8, r9).
    fn rows(&mut self, row: &mut dyn FnMut(&mut Self)) {
        self.load(OY, Slot::Row0);
        self.load(LEFT, Slot::Rows);
        let top = self.a.label();
        let exit = self.a.label();
        self.a.bind(top);
        self.a.emit(I::with2(Code::Test_rm64_r64, LEFT, LEFT));
        self.a.branch(Code::Je_rel8_64, Code::Je_rel32_64, exit);
        row(self);
        self.a.emit(I::with2(Code::Add_rm64_imm32, OY, 1));
        self.a.emit(I::with1(Code::Dec_rm64, LEFT));
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, top);
        self.a.bind(exit);
    }

    /// For output row `OY`: `[Nky]` valid kernel rows from `[Wk0]/kw`
    /// (stored times `kw`), and `[InRow]` the input row of the first.
    fn row_taps(&mut self) {
        let p = self.p;
        let (sh, dh, kh) = (p.sh as i64, p.dh as i64, p.kh as i64);
        let zero = R::RCX;
        self.a.emit(I::with2(Code::Xor_r32_rm32, R::ECX, R::ECX));
        // r15 = oy*sh; rbx = t = pt - oy*sh (rows above the input).
        self.mov_rr(R::R15, OY);
        self.mul_imm(R::R15, sh);
        self.mov_imm(R::RAX, p.pt as i64);
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::RAX, R::R15));
        self.mov_rr(R::RBX, R::RAX);
        // ky0 = ceil(max(t, 0) / dh) in r12.
        self.a.emit(I::with2(Code::Test_rm64_r64, R::RAX, R::RAX));
        self.a.emit(I::with2(Code::Cmovl_r64_rm64, R::RAX, zero));
        if dh > 1 {
            self.add_reg_imm(R::RAX, dh - 1);
            self.divide(dh);
        }
        self.mov_rr(R::R12, R::RAX);
        // u = (h - 1 + pt) - oy*sh in r13 (rows below);
        // ky1 = min(floor(max(u, 0) / dh) + 1, kh), 0 if u < 0.
        self.mov_imm(R::RAX, p.h as i64 - 1 + p.pt as i64);
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::RAX, R::R15));
        self.mov_rr(R::R13, R::RAX);
        self.a.emit(I::with2(Code::Test_rm64_r64, R::RAX, R::RAX));
        self.a.emit(I::with2(Code::Cmovl_r64_rm64, R::RAX, zero));
        if dh > 1 {
            self.divide(dh);
        }
        self.add_reg_imm(R::RAX, 1);
        self.mov_imm(IMM, kh);
        self.a.emit(I::with2(Code::Cmp_r64_rm64, R::RAX, IMM));
        self.a.emit(I::with2(Code::Cmovg_r64_rm64, R::RAX, IMM));
        self.a.emit(I::with2(Code::Test_rm64_r64, R::R13, R::R13));
        self.a.emit(I::with2(Code::Cmovl_r64_rm64, R::RAX, zero));
        // nky = max(ky1 - ky0, 0).
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::RAX, R::R12));
        self.a.emit(I::with2(Code::Test_rm64_r64, R::RAX, R::RAX));
        self.a.emit(I::with2(Code::Cmovl_r64_rm64, R::RAX, zero));
        self.store(Slot::Nky, R::RAX);
        // Input row of the first valid tap: ky0*dh - t.
        self.mov_rr(R::RAX, R::R12);
        self.mul_imm(R::RAX, dh);
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::RAX, R::RBX));
        self.mul_imm(R::RAX, (p.w * p.ci * 4) as i64);
        self.add_rr(R::RAX, IMG);
        self.store(Slot::InRow, R::RAX);
        self.mov_rr(R::RAX, R::R12);
        self.mul_imm(R::RAX, p.kw as i64);
        self.store(Slot::Wk0, R::RAX);
    }

    /// `rax /= d` (unsigned; rax >= 0 here), clobbering rdx and r11.
    fn divide(&mut self, d: i64) {
        self.a.emit(I::with2(Code::Xor_r32_rm32, R::EDX, R::EDX));
        self.mov_imm(IMM, d);
        self.a.emit(I::with1(Code::Div_rm64, IMM));
    }

    /// `[OutRow]` = where output row `OY` starts.
    fn out_row(&mut self) {
        let p = self.p;
        self.mov_rr(R::RAX, OY);
        self.mul_imm(R::RAX, (p.wo * p.co * 4) as i64);
        self.add_slot(R::RAX, Slot::OutBase);
        self.store(Slot::OutRow, R::RAX);
    }

    /// `[s] = [from] + v`.
    fn slot_plus(&mut self, s: Slot, from: Slot, v: i64) {
        self.load(R::RAX, from);
        self.add_reg_imm(R::RAX, v);
        self.store(s, R::RAX);
    }

    // ---- conv / pointwise ----

    fn reduce_body(&mut self) {
        if self.p.channels_outer() {
            // Each channel block's weights stay in cache while every
            // pixel of the rows streams past them.
            self.channel_blocks(&mut |g, run| {
                g.pixel_blocks(&mut |g, k| {
                    g.load(RUN_I, Slot::SegI);
                    g.load(RUN_O, Slot::SegO);
                    g.add_slot(RUN_O, Slot::ChO);
                    g.load(RUN_W, Slot::ChW);
                    if g.p.bias_off.is_some() {
                        g.load(RUN_B, Slot::ChB);
                    }
                    g.block(run, k);
                });
            });
        } else {
            self.pixel_blocks(&mut |g, k| g.channels(k));
        }
    }

    /// Every register block of pixels of the rows, with `[SegI]`/`[SegO]`
    /// pointing at its input and output pixels.
    fn pixel_blocks(&mut self, inner: &mut dyn FnMut(&mut Self, &BlockArgs)) {
        let p = self.p;
        if p.flat {
            return self.flat_blocks(inner);
        }
        let in_row_bytes = (p.w * p.ci * 4) as i64;
        let cols = p.col_blocks();
        self.rows(&mut |g| {
            let rows_full = p.rows_full;
            if rows_full {
                g.mov_rr(R::RAX, OY);
                g.mul_imm(R::RAX, p.sh as i64 * in_row_bytes);
                g.add_rr(R::RAX, IMG);
                g.store(Slot::InRow, R::RAX);
            } else {
                g.row_taps();
            }
            g.out_row();
            // Blocks of near-equal width with border pixels among interior
            // ones (each pixel with its own kernel columns), rather than
            // short blocks per border column: full blocks keep the FMA
            // pipes busy (7x7 on 17x17: 7 column classes).
            for c in &cols {
                let npx = c.cols.len();
                let (kx0, nkx) = c.cols[0];
                let uniform = c.cols.iter().all(|&cc| cc == (kx0, nkx));
                let (kx0, nkx) = if uniform { (kx0, nkx) } else { (0, 0) };
                let in_off =
                    ((c.start * p.sw + kx0 * p.dw) as i64 - p.pl as i64) * (p.ci * 4) as i64;
                g.slot_plus(Slot::SegI, Slot::InRow, in_off);
                g.slot_plus(Slot::SegO, Slot::OutRow, (c.start * p.co * 4) as i64);
                let k = BlockArgs {
                    npx,
                    cols: (!uniform).then(|| c.cols.clone()),
                    nky: if rows_full {
                        Count::Const(p.kh)
                    } else {
                        Count::Slot(Slot::Nky)
                    },
                    wk0: !rows_full,
                    kx0,
                    nkx,
                };
                g.repeat(Count::Const(c.count), Ctr::Slot(Slot::SegC), &mut |g| {
                    inner(g, &k);
                    g.add_imm(Ctr::Slot(Slot::SegI), (npx * p.sw * p.ci * 4) as i64);
                    g.add_imm(Ctr::Slot(Slot::SegO), (npx * p.co * 4) as i64);
                });
            }
        });
    }

    /// A flat stage: the pixels `row0..row0 + rows` in blocks of `px`, the
    /// last moved back to end at the last pixel (recomputing a few with
    /// the same result) so every block is full; a range shorter than a
    /// block runs pixel by pixel.
    fn flat_blocks(&mut self, inner: &mut dyn FnMut(&mut Self, &BlockArgs)) {
        let p = self.p;
        let px = p.sched.px;
        let (in_px, out_px) = ((p.ci * 4) as i64, (p.co * 4) as i64);
        self.load(R::RAX, Slot::Row0);
        self.store(Slot::At, R::RAX);
        self.add_slot(R::RAX, Slot::Rows);
        self.store(Slot::End, R::RAX);
        self.add_reg_imm(R::RAX, -(px as i64));
        self.store(Slot::Last, R::RAX);
        let singles = self.a.label();
        let done = self.a.label();
        let args = |npx: usize| BlockArgs {
            npx,
            cols: None,
            nky: Count::Const(1),
            wk0: false,
            kx0: 0,
            nkx: 1,
        };
        for npx in [px, 1] {
            if npx == 1 {
                self.a.bind(singles);
            } else if px > 1 {
                self.a
                    .emit(I::with2(Code::Cmp_rm64_imm32, slot(Slot::Rows), px as i32));
                self.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, singles);
            } else {
                continue;
            }
            let top = self.a.label();
            self.a.bind(top);
            self.load(R::RAX, Slot::At);
            self.a
                .emit(I::with2(Code::Cmp_r64_rm64, R::RAX, slot(Slot::End)));
            self.a.branch(Code::Jge_rel8_64, Code::Jge_rel32_64, done);
            if npx > 1 {
                // Full blocks only: the last starts at end - px at most.
                self.a
                    .emit(I::with2(Code::Cmp_r64_rm64, R::RAX, slot(Slot::Last)));
                self.a
                    .emit(I::with2(Code::Cmovg_r64_rm64, R::RAX, slot(Slot::Last)));
            }
            self.mov_rr(R::RCX, R::RAX);
            self.mul_imm(R::RAX, in_px);
            self.add_rr(R::RAX, IMG);
            self.store(Slot::SegI, R::RAX);
            self.mul_imm(R::RCX, out_px);
            self.add_slot(R::RCX, Slot::OutBase);
            self.store(Slot::SegO, R::RCX);
            inner(self, &args(npx));
            self.add_imm(Ctr::Slot(Slot::At), npx as i64);
            self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, top);
        }
        self.a.bind(done);
    }

    /// Conv/pointwise with channel blocks outermost: every run
    /// repetition, with `[ChW]`, `[ChB]` its weights and bias and `[ChO]`
    /// its output channel byte offset.
    fn channel_blocks(&mut self, inner: &mut dyn FnMut(&mut Self, &Run)) {
        let p = self.p;
        for run in &p.runs {
            self.mov_rr(R::RAX, WTS);
            self.add_reg_imm(R::RAX, run.w_base as i64);
            self.store(Slot::ChW, R::RAX);
            if let Some(off) = p.bias_off {
                self.mov_rr(R::RAX, WTS);
                self.add_reg_imm(R::RAX, (off * 4 + run.bias_base) as i64);
                self.store(Slot::ChB, R::RAX);
            }
            self.mov_imm(R::RAX, (run.out_base * 4) as i64);
            self.store(Slot::ChO, R::RAX);
            self.repeat(Count::Const(run.count), Ctr::Slot(Slot::ChC), &mut |g| {
                inner(g, run);
                g.add_imm(Ctr::Slot(Slot::ChO), (run.out_stride * 4) as i64);
                g.add_imm(Ctr::Slot(Slot::ChW), run.w_stride as i64);
                if p.bias_off.is_some() {
                    g.add_imm(Ctr::Slot(Slot::ChB), run.bias_stride as i64);
                }
            });
        }
    }

    /// All channel blocks (groups, runs, repetitions) of the pixel block
    /// at `[SegI]`, `[SegO]`.
    fn channels(&mut self, k: &BlockArgs) {
        let p = self.p;
        let groups = p.groups > 1;
        if groups {
            self.load(R::RAX, Slot::SegI);
            self.store(Slot::GrpI, R::RAX);
            self.load(R::RAX, Slot::SegO);
            self.store(Slot::GrpO, R::RAX);
            self.store(Slot::GrpW, WTS);
            if let Some(off) = p.bias_off {
                self.mov_rr(R::RAX, WTS);
                self.add_reg_imm(R::RAX, (off * 4) as i64);
                self.store(Slot::GrpB, R::RAX);
            }
        }
        self.repeat(Count::Const(p.groups), Ctr::Slot(Slot::GrpC), &mut |g| {
            for run in &p.runs {
                if groups {
                    g.load(RUN_I, Slot::GrpI);
                    g.load(RUN_O, Slot::GrpO);
                    g.load(RUN_W, Slot::GrpW);
                } else {
                    g.load(RUN_I, Slot::SegI);
                    g.load(RUN_O, Slot::SegO);
                    g.mov_rr(RUN_W, WTS);
                }
                g.add_reg_imm(RUN_I, (run.in_base * 4) as i64);
                g.add_reg_imm(RUN_O, (run.out_base * 4) as i64);
                g.add_reg_imm(RUN_W, run.w_base as i64);
                if let Some(off) = p.bias_off {
                    if groups {
                        g.load(RUN_B, Slot::GrpB);
                        g.add_reg_imm(RUN_B, run.bias_base as i64);
                    } else {
                        g.mov_rr(RUN_B, WTS);
                        g.add_reg_imm(RUN_B, (off * 4 + run.bias_base) as i64);
                    }
                }
                g.repeat(Count::Const(run.count), Ctr::Slot(Slot::RunC), &mut |g| {
                    g.block(run, k);
                    g.add_reg_imm(RUN_I, (run.in_stride * 4) as i64);
                    g.add_reg_imm(RUN_O, (run.out_stride * 4) as i64);
                    g.add_reg_imm(RUN_W, run.w_stride as i64);
                    if p.bias_off.is_some() {
                        g.add_reg_imm(RUN_B, run.bias_stride as i64);
                    }
                });
            }
            if groups {
                g.add_imm(Ctr::Slot(Slot::GrpI), (p.g_in * 4) as i64);
                g.add_imm(Ctr::Slot(Slot::GrpO), (p.g_out * 4) as i64);
                g.add_imm(Ctr::Slot(Slot::GrpW), p.g_w as i64);
                if p.bias_off.is_some() {
                    g.add_imm(Ctr::Slot(Slot::GrpB), p.g_bias as i64);
                }
            }
        });
    }

    /// One register block: `k.npx` pixels x the run's units, from the
    /// input at `r13`, weights at `r15` (its run repetition's), output at
    /// `r12`, bias at `r14`. Leaves r12-r15 as they were.
    fn block(&mut self, run: &Run, k: &BlockArgs) {
        let p = self.p;
        let nu = run.units.len();
        let npx = k.npx;
        let acc: Vec<Vec<R>> = (0..npx)
            .map(|px| (0..nu).map(|u| self.v(px * nu + u)).collect())
            .collect();
        for u in 0..nu {
            if p.bias_off.is_some() {
                let m = self.at(RUN_B, run.unit_bytes(u) as i64);
                self.vload(acc[0][u], m);
            } else {
                self.vzero(acc[0][u]);
            }
            for row in &acc[1..] {
                self.vcopy(row[u], acc[0][u]);
            }
        }
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
        let in_ky = (p.dh * p.w * p.ci * 4) as i64;
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
                    let in_off = (kx * p.dw * p.ci * 4) as i64;
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
                let moved = if (p.dw == 1 && cpt == p.ci) || k.nkx == 1 {
                    g.reduce(&rows, &pxs, run, k.nkx * cpt, npx * nu, ahead);
                    (k.nkx * cpt * 4) as i64
                } else {
                    g.repeat(Count::Const(k.nkx), Ctr::Reg(CKX), &mut |g| {
                        g.reduce(&rows, &pxs, run, cpt, npx * nu, ahead);
                        g.add_reg_imm(IP, ((p.dw * p.ci - cpt) * 4) as i64);
                    });
                    (k.nkx * p.dw * p.ci * 4) as i64
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

    // ---- depthwise ----

    /// Depthwise: every output row alike, a run-time loop over its valid
    /// kernel rows; each row walks the plan's column blocks.
    fn dw_body(&mut self) {
        let p = self.p;
        let vectors = p.row_vectors();
        let cols = match vectors {
            Some((a, b)) => [p.col_blocks_in(0, a), p.col_blocks_in(b, p.wo)].concat(),
            None => p.col_blocks(),
        };
        let px_in = (p.sw * p.ci * 4) as i64;
        let px_out = (p.co * 4) as i64;
        let borders = |g: &mut Self| {
            for c in &cols {
                // Input column start*sw - pl: every tap offset is >= 0.
                let in_off = (c.start * p.sw) as i64 * (p.ci * 4) as i64 - (p.pl * p.ci * 4) as i64;
                g.slot_plus(Slot::SegI, Slot::InRow, in_off);
                g.slot_plus(Slot::SegO, Slot::OutRow, c.start as i64 * px_out);
                let npx = c.cols.len();
                let k = BlockArgs {
                    npx,
                    cols: Some(c.cols.clone()),
                    nky: Count::Slot(Slot::Nky),
                    wk0: true,
                    kx0: 0,
                    nkx: 0,
                };
                g.repeat(Count::Const(c.count), Ctr::Slot(Slot::SegC), &mut |g| {
                    g.channels(&k);
                    g.add_imm(Ctr::Slot(Slot::SegI), npx as i64 * px_in);
                    g.add_imm(Ctr::Slot(Slot::SegO), npx as i64 * px_out);
                });
            }
        };
        let pairs = vectors.and_then(|(a, b)| Some((a, b, self.row_pair_rows()?)));
        self.rows(&mut |g| {
            g.row_taps();
            g.out_row();
            if let Some((a, b, (first, last))) = pairs {
                // Rows `OY` and `OY + 1` both read all kernel rows, and
                // both are in this call: their interior together, then
                // each row's borders, and the loop moves on by two.
                let single = g.a.label();
                let done = g.a.label();
                g.a.emit(I::with2(Code::Cmp_rm64_imm32, LEFT, 2));
                g.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, single);
                g.mov_imm(IMM, first as i64);
                g.a.emit(I::with2(Code::Cmp_r64_rm64, OY, IMM));
                g.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, single);
                g.mov_imm(IMM, last as i64);
                g.a.emit(I::with2(Code::Cmp_r64_rm64, OY, IMM));
                g.a.branch(Code::Jge_rel8_64, Code::Jge_rel32_64, single);
                g.row_vector_blocks(a, b, true);
                borders(g);
                g.a.emit(I::with2(Code::Add_rm64_imm32, OY, 1));
                g.a.emit(I::with1(Code::Dec_rm64, LEFT));
                g.row_taps();
                g.out_row();
                borders(g);
                g.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, done);
                g.a.bind(single);
                g.row_vector_blocks(a, b, false);
                borders(g);
                g.a.bind(done);
            } else {
                if let Some((a, b)) = vectors {
                    g.row_vector_blocks(a, b, false);
                }
                borders(g);
            }
        });
    }

    /// Grey-image rows run in pairs ([`Gen::row_pair_block`]) between
    /// output rows `first` and `last` (every kernel row valid): where one
    /// channel runs along the row, rows are consecutive input rows
    /// (stride and dilation 1), the kernel at most 16 rows tall, and two
    /// rows' accumulators and kernel rows fit the register file beside 2
    /// vectors each.
    fn row_pair_rows(&self) -> Option<(usize, usize)> {
        let p = self.p;
        let one = p.ci == 1 && p.co == 1 && p.row_multiplier == 1;
        // Unrolled over kernel rows: a tall kernel would be too much code.
        if !one || p.sh != 1 || p.dh != 1 || p.kh > 16 || self.pair_vectors() < 2 {
            return None;
        }
        let full = |oy: usize| tap_range(oy, p.sh, p.dh, p.pt, p.kh, p.h) == (0, p.kh);
        let first = (0..p.ho).find(|&oy| full(oy))?;
        let last = (first..p.ho).take_while(|&oy| full(oy)).last()?;
        (last > first).then_some((first, last))
    }

    /// Vectors per row of a pair block: two rows of accumulators, two
    /// kernel rows of broadcast weights and two input registers.
    fn pair_vectors(&self) -> usize {
        (self.regs.saturating_sub(2 * self.p.kw + 2) / 2).min(8)
    }

    /// A one-channel depthwise row's interior columns `a..b` (see
    /// [`Plan::row_vectors`]) in blocks of up to 8 vectors of consecutive
    /// output pixels: per kernel row, its weights broadcast into
    /// registers, then per tap and vector one load and one FMA. The last
    /// block is moved back to end at `b` (recomputing a few pixels, with
    /// the same result).
    fn row_vector_blocks(&mut self, a: usize, b: usize, pair: bool) {
        let p = self.p;
        let lanes = p.sched.lanes;
        let vl = (lanes * 4) as i64;
        // The output row as floats (pixels x channels, interleaved); the
        // input row has `m` times fewer with a multiplier.
        let m = p.row_multiplier;
        let (a, b) = (a * p.co, b * p.co);
        let nv_most = if pair {
            self.pair_vectors()
        } else if m > 1 {
            (self.regs - 4).min(8)
        } else if p.ci == 1 {
            (self.regs - p.kw - 2).min(8)
        } else {
            convjit_plan::plan::row_block_vectors(p.ci, &p.target)
        };
        let n = b - a;
        let per_block = nv_most * lanes;
        // Full blocks, a block of the whole vectors left, and the last
        // vector moved back to end at `b` (n >= lanes: it starts at `a`
        // or later, so it reads no border column).
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        if n / per_block > 0 {
            pieces.push((a, n / per_block, nv_most));
        }
        let rest = n % per_block;
        if rest / lanes > 0 {
            pieces.push((a + n / per_block * per_block, 1, rest / lanes));
        }
        if !rest.is_multiple_of(lanes) {
            pieces.push((b - lanes, 1, 1));
        }
        for (start, count, nv) in pieces {
            let in_off = ((start / m) as i64 - (p.pl * p.ci) as i64) * 4;
            self.slot_plus(Slot::SegI, Slot::InRow, in_off);
            self.slot_plus(Slot::SegO, Slot::OutRow, start as i64 * 4);
            // Channel of lane 0 of each vector: the same in every
            // repetition (a block is a whole number of channel periods).
            let phases: Vec<usize> = (0..nv).map(|v| (start + v * lanes) % p.ci).collect();
            self.repeat(Count::Const(count), Ctr::Slot(Slot::SegC), &mut |g| {
                if pair {
                    g.row_pair_block(nv);
                } else if m > 1 {
                    g.row_multiplier_block(nv);
                } else if p.ci == 1 {
                    g.row_vector_block(nv);
                } else {
                    g.row_channels_block(&phases);
                }
                g.add_imm(Ctr::Slot(Slot::SegI), nv as i64 * vl / m as i64);
                g.add_imm(Ctr::Slot(Slot::SegO), nv as i64 * vl);
            });
        }
    }

    /// One block of [`Gen::row_vector_blocks`]: `nv` vectors of output
    /// pixels at `[SegO]`, their first kernel row's input at `[SegI]`.
    fn row_vector_block(&mut self, nv: usize) {
        let p = self.p;
        let acc: Vec<R> = (0..nv).map(|v| self.v(v)).collect();
        let w: Vec<R> = (0..p.kw).map(|kx| self.v(nv + kx)).collect();
        let xs = [self.v(nv + p.kw), self.v(nv + p.kw + 1)];
        let vl = self.vb;
        // One channel: each tap's weight is lane 0 of its packed unit (a
        // step apart: a vector, or one float where packed compact).
        let tap = p.runs[0].tap_bytes(1) as i64;
        if let Some(off) = p.bias_off {
            let m = self.at(WTS, (off * 4) as i64);
            self.vbroadcast(acc[0], m);
        } else {
            self.vzero(acc[0]);
        }
        for &r in &acc[1..] {
            self.vcopy(r, acc[0]);
        }
        self.load(IP, Slot::SegI);
        self.load(WP, Slot::Wk0);
        self.mul_imm(WP, tap);
        self.add_rr(WP, WTS);
        let in_ky = (p.dh * p.w * 4) as i64;
        self.repeat(Count::Slot(Slot::Nky), Ctr::Reg(CKY), &mut |g| {
            for (kx, &wr) in w.iter().enumerate() {
                let m = g.at(WP, kx as i64 * tap);
                g.vbroadcast(wr, m);
            }
            let mut n = 0;
            for (kx, &wr) in w.iter().enumerate() {
                for (v, &a) in acc.iter().enumerate() {
                    let x = xs[n % 2];
                    n += 1;
                    let m = g.at(IP, v as i64 * vl + (kx * p.dw * 4) as i64);
                    g.vload(x, m);
                    g.fma(a, x, Src::R(wr));
                }
            }
            g.add_reg_imm(IP, in_ky);
            g.add_reg_imm(WP, p.kw as i64 * tap);
        });
        self.row_epilogue(&acc);
    }

    /// [`Gen::row_vector_block`] for output rows `OY` and `OY + 1` at once
    /// (see [`Gen::row_pair_rows`]): each of the `kh + 1` input rows is
    /// loaded once per tap and vector and feeds both rows, kernel row `j`
    /// of the first and `j - 1` of the second: 15 loads per output vector
    /// of a 5x5 instead of 25. Fully unrolled (every kernel row valid).
    // `kx` indexes both rows' weights, chosen per input row.
    #[allow(clippy::needless_range_loop)]
    fn row_pair_block(&mut self, nv: usize) {
        let p = self.p;
        let (kh, kw) = (p.kh, p.kw);
        let vl = self.vb;
        let tap = p.runs[0].tap_bytes(1) as i64;
        let acc: [Vec<R>; 2] = [
            (0..nv).map(|v| self.v(v)).collect(),
            (nv..2 * nv).map(|v| self.v(v)).collect(),
        ];
        let w: [Vec<R>; 2] = [
            (0..kw).map(|kx| self.v(2 * nv + kx)).collect(),
            (0..kw).map(|kx| self.v(2 * nv + kw + kx)).collect(),
        ];
        let xs = [self.v(2 * nv + 2 * kw), self.v(2 * nv + 2 * kw + 1)];
        if let Some(off) = p.bias_off {
            let m = self.at(WTS, (off * 4) as i64);
            self.vbroadcast(acc[0][0], m);
        } else {
            self.vzero(acc[0][0]);
        }
        for &r in acc[0][1..].iter().chain(&acc[1]) {
            self.vcopy(r, acc[0][0]);
        }
        self.load(IP, Slot::SegI);
        let row = (p.w * 4) as i64;
        let mut n = 0;
        for j in 0..=kh {
            // Input row j: kernel row j of output row 0, j - 1 of row 1.
            let rows: Vec<(usize, usize)> = [(0, j), (1, j.wrapping_sub(1))]
                .into_iter()
                .filter(|&(_, ky)| ky < kh)
                .collect();
            for &(r, ky) in &rows {
                for (kx, &wr) in w[r].iter().enumerate() {
                    let m = self.at(WTS, ((ky * kw + kx) as i64) * tap);
                    self.vbroadcast(wr, m);
                }
            }
            for kx in 0..kw {
                for v in 0..nv {
                    let x = xs[n % 2];
                    n += 1;
                    let m = self.at(IP, j as i64 * row + v as i64 * vl + (kx * p.dw * 4) as i64);
                    self.vload(x, m);
                    for &(r, _) in &rows {
                        self.fma(acc[r][v], x, Src::R(w[r][kx]));
                    }
                }
            }
        }
        let (zero, six) = (w[0][0], w[0][1.min(kw - 1)]);
        let six = if six == zero { xs[0] } else { six };
        self.row_epilogue_at(&acc[0], zero, six, 0);
        self.row_epilogue_at(&acc[1], zero, six, (p.wo * 4) as i64);
    }

    /// [`Gen::row_vector_block`] for one channel and multiplier `M` (2 or
    /// 4): vector `v` holds outputs of `lanes / M` pixels, lane `l` output
    /// `l % M` of pixel `l / M`. Per tap and vector, a load of those
    /// pixels (a half or quarter vector: never past the row's last
    /// input), a permutation spreading each to its `M` lanes (the index
    /// vector packed after the weights), and an FMA with the tap's
    /// weights `[tap][lane]` as a memory operand.
    ///
    /// The indices `l / M` are made in registers (bytes from immediates,
    /// zero-extended to dwords), not packed: the packed weights stay
    /// copies of the layer's weights ([`Plan::pack_copies`]), which an AOT
    /// object without weights runs.
    fn row_multiplier_block(&mut self, nv: usize) {
        let p = self.p;
        let (m, lanes) = (p.row_multiplier, p.sched.lanes);
        let off = p.row_weights_off.expect("row multiplier weights") as i64 * 4;
        let vl = self.vb;
        let taps = (p.kh * p.kw) as i64;
        let acc: Vec<R> = (0..nv).map(|v| self.v(v)).collect();
        let idx = self.v(nv);
        let x = self.v(nv + 1);
        let bias = p.bias_off.is_some();
        for &a in &acc {
            if bias {
                let mem = self.at(WTS, off + taps * vl);
                self.vload(a, mem);
            } else {
                self.vzero(a);
            }
        }
        self.spread_indices(idx, m);
        self.load(IP, Slot::SegI);
        // `[Wk0]`: the first valid kernel row's first tap.
        self.load(WP, Slot::Wk0);
        self.mul_imm(WP, vl);
        self.add_rr(WP, WTS);
        self.add_reg_imm(WP, off);
        let in_ky = (p.dh * p.w * 4) as i64;
        let (narrow, perm) = match (self.isa, lanes / m) {
            (Isa::Avx512, 8) => (
                Code::EVEX_Vmovups_ymm_k1z_ymmm256,
                Code::EVEX_Vpermps_zmm_k1z_zmm_zmmm512b32,
            ),
            (Isa::Avx512, 4) => (
                Code::EVEX_Vmovups_xmm_k1z_xmmm128,
                Code::EVEX_Vpermps_zmm_k1z_zmm_zmmm512b32,
            ),
            (Isa::Avx2, 4) => (
                Code::VEX_Vmovups_xmm_xmmm128,
                Code::VEX_Vpermps_ymm_ymm_ymmm256,
            ),
            other => panic!("no row multiplier load for {other:?}"),
        };
        let part = match lanes / m {
            8 => nth_register(R::YMM0, self.index(x)),
            _ => self.x(self.index(x)),
        };
        self.repeat(Count::Slot(Slot::Nky), Ctr::Reg(CKY), &mut |g| {
            for kx in 0..p.kw {
                for (v, &a) in acc.iter().enumerate() {
                    let mem = g.at(IP, ((v * lanes / m + kx * p.dw) * 4) as i64);
                    g.a.emit(I::with2(narrow, part, mem));
                    g.a.emit(I::with3(perm, x, idx, x));
                    let w = g.at(WP, kx as i64 * vl);
                    g.fma(a, x, Src::M(w));
                }
            }
            g.add_reg_imm(IP, in_ky);
            g.add_reg_imm(WP, p.kw as i64 * vl);
        });
        self.row_epilogue(&acc);
    }

    /// `d`'s dword lanes to `l / m`: the lane's byte from two 64-bit
    /// immediates (one with 8 lanes), zero-extended.
    fn spread_indices(&mut self, d: R, m: usize) {
        let lanes = self.p.sched.lanes;
        let bytes: Vec<u8> = (0..lanes).map(|l| (l / m) as u8).collect();
        let qword = |q: &[u8]| i64::from_le_bytes(q.try_into().expect("8 bytes"));
        let x = self.x(self.index(d));
        let e = self.evex();
        self.a
            .emit(I::with2(Code::Mov_r64_imm64, IMM, qword(&bytes[..8])));
        let movq = if e {
            Code::EVEX_Vmovq_xmm_rm64
        } else {
            Code::VEX_Vmovq_xmm_rm64
        };
        self.a.emit(I::with2(movq, x, IMM));
        if lanes == 16 {
            self.a
                .emit(I::with2(Code::Mov_r64_imm64, IMM, qword(&bytes[8..])));
            self.a.emit(I::with4(
                Code::EVEX_Vpinsrq_xmm_xmm_rm64_imm8,
                x,
                x,
                IMM,
                1u32,
            ));
            self.a
                .emit(I::with2(Code::EVEX_Vpmovzxbd_zmm_k1z_xmmm128, d, x));
        } else {
            self.a.emit(I::with2(Code::VEX_Vpmovzxbd_ymm_xmmm64, d, x));
        }
    }

    /// [`Gen::row_vector_block`] for 2 or more channels: vector `v`'s lane
    /// 0 holds channel `phases[v]`, and its weights and bias are the
    /// plan's row weights of that phase, read as memory operands.
    fn row_channels_block(&mut self, phases: &[usize]) {
        let p = self.p;
        let (c, lanes) = (p.ci, p.sched.lanes);
        let off = p.row_weights_off.expect("few-channel row weights") as i64 * 4;
        let vl = self.vb;
        let taps = (p.kh * p.kw) as i64;
        let acc: Vec<R> = (0..phases.len()).map(|v| self.v(v)).collect();
        let xs = [self.v(acc.len()), self.v(acc.len() + 1)];
        for (&a, &r) in acc.iter().zip(phases) {
            if p.bias_off.is_some() {
                let m = self.at(WTS, off + (taps * c as i64 + r as i64) * vl);
                self.vload(a, m);
            } else {
                self.vzero(a);
            }
        }
        self.load(IP, Slot::SegI);
        self.load(WP, Slot::Wk0);
        self.mul_imm(WP, c as i64 * vl);
        self.add_rr(WP, WTS);
        self.add_reg_imm(WP, off);
        let in_ky = (p.dh * p.w * c * 4) as i64;
        self.repeat(Count::Slot(Slot::Nky), Ctr::Reg(CKY), &mut |g| {
            let mut n = 0;
            for kx in 0..p.kw {
                for (v, (&a, &r)) in acc.iter().zip(phases).enumerate() {
                    let x = xs[n % 2];
                    n += 1;
                    let m = g.at(IP, (v * lanes + kx * p.dw * c) as i64 * 4);
                    g.vload(x, m);
                    let m = g.at(WP, (kx * c + r) as i64 * vl);
                    g.fma(a, x, Src::M(m));
                }
            }
            g.add_reg_imm(IP, in_ky);
            g.add_reg_imm(WP, (p.kw * c) as i64 * vl);
        });
        self.row_epilogue(&acc);
    }

    /// Activation, residual and stores of a row-vector block's
    /// accumulators (consecutive vectors from `[SegO]`); its zero and six
    /// registers follow the accumulators (the weights are dead by now).
    fn row_epilogue(&mut self, acc: &[R]) {
        let (zero, six) = (self.v(acc.len()), self.v(acc.len() + 1));
        self.row_epilogue_at(acc, zero, six, 0);
    }

    /// [`Gen::row_epilogue`] with its zero and six registers given, the
    /// vectors stored from `[SegO] + out` (and the residual's likewise).
    fn row_epilogue_at(&mut self, acc: &[R], zero: R, six: R, out: i64) {
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
    }

    /// The taps of one kernel row (`rax`, `rbx` at its input and weights).
    fn dw_taps(&mut self, run: &Run, acc: &[Vec<R>], cols: &[(usize, usize)]) {
        let p = self.p;
        let nu = run.units.len();
        let free = acc.len() * nu;
        let vector_input = matches!(run.units[0].input, InSrc::Vector(_) | InSrc::Lanes(..));
        if nu == 1 && vector_input && free + p.kw < self.regs {
            return self.dw_taps_by_column(run, acc, cols);
        }
        let pstride = (p.sw * p.ci * 4) as i64;
        let w: Vec<R> = (0..nu).map(|u| self.v(free + u)).collect();
        let x = self.v(free + nu);
        for kx in 0..p.kw {
            let pxs = pxs_of(cols, kx);
            if pxs.is_empty() {
                continue;
            }
            let tap_in = (kx * p.dw * p.ci * 4) as i64;
            for (u, &wr) in w.iter().enumerate() {
                let at = (kx * run.w_step * 4 + run.unit_bytes(u)) as i64;
                let m = self.at(WP, at);
                self.vload(wr, m);
            }
            for &px in &pxs {
                let base = px as i64 * pstride + tap_in;
                // Units reading the same input share one load.
                let mut done = vec![false; nu];
                for u in 0..nu {
                    if done[u] {
                        continue;
                    }
                    let src = run.units[u].input.clone();
                    let b = match src {
                        InSrc::Splat(c) if self.evex() => {
                            Src::M(self.at_bcst(IP, base + c as i64 * 4))
                        }
                        _ => {
                            self.input(&src, x, base);
                            Src::R(x)
                        }
                    };
                    for v in u..nu {
                        if run.units[v].input == src {
                            done[v] = true;
                            let b = match b {
                                // Recompute: `at` may have used r10 for another operand since.
                                Src::M(_) => match src {
                                    InSrc::Splat(c) => {
                                        Src::M(self.at_bcst(IP, base + c as i64 * 4))
                                    }
                                    _ => b,
                                },
                                r => r,
                            };
                            self.fma(acc[px][v], w[v], b);
                        }
                    }
                }
            }
        }
    }

    /// Depthwise: prefetches into L2 the input rows that the next output
    /// row reads and this one did not (`sh` rows below the last read,
    /// which is at `rax + at_last`), one line per column and input vector
    /// of the block. A band of a fused dw -> 1x1 group is one output row:
    /// without this its next input row comes from L3 only when the next
    /// band asks for it, after the 1x1 stage, instead of meanwhile
    /// (MobileNet v2's 56x56x144 dw + project: 290-303 -> 260-277 us).
    /// A prefetch never faults, so rows past the image are harmless.
    fn prefetch_next_rows(&mut self, run: &Run, cols: &[(usize, usize)], at_last: i64) {
        let p = self.p;
        let row = (p.w * p.ci * 4) as i64;
        let vb = self.vb as usize;
        // The bytes of a row the block reads, as merged ranges.
        let mut ranges: Vec<(usize, usize)> = cols
            .iter()
            .enumerate()
            .flat_map(|(px, &(kx0, nkx))| (kx0..kx0 + nkx).map(move |kx| px * p.sw + kx * p.dw))
            .flat_map(|x| {
                run.units.iter().filter_map(move |u| match u.input {
                    InSrc::Vector(c) | InSrc::Lanes(c, _) => Some((x * p.ci + c) * 4),
                    _ => None,
                })
            })
            .map(|a| (a, a + vb))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(m) if a <= m.1 => m.1 = m.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        // One per 64 bytes: every line of a range where rows start on a
        // line (run buffers do), all but a range's last one else. Not for
        // wide kernels: a few loads' worth of instructions at most.
        let lines: usize = merged.iter().map(|&(a, b)| (b - a).div_ceil(64)).sum();
        if lines * p.sh > MAX_PREFETCHES {
            return;
        }
        for j in 1..=p.sh as i64 {
            for &(a, b) in &merged {
                for off in (a..b).step_by(64) {
                    let m = self.at(IP, at_last + j * row + off as i64);
                    self.a.emit(I::with1(Code::Prefetcht1_m8, m));
                }
            }
        }
    }

    /// [`Gen::dw_taps`] for one unit, input column by input column: each
    /// input vector is loaded once and feeds every (pixel, kernel column)
    /// that reads it, the row's weight vectors in registers.
    fn dw_taps_by_column(&mut self, run: &Run, acc: &[Vec<R>], cols: &[(usize, usize)]) {
        let p = self.p;
        let unit = &run.units[0];
        let free = acc.len();
        let w: Vec<R> = (0..p.kw).map(|kx| self.v(free + kx)).collect();
        let nx = (self.regs - free - p.kw).min(2);
        let xs: Vec<R> = (0..nx).map(|i| self.v(free + p.kw + i)).collect();
        let mut used = vec![false; p.kw];
        for &(kx0, nkx) in cols {
            for u in used.iter_mut().skip(kx0).take(nkx) {
                *u = true;
            }
        }
        for (kx, &wr) in w.iter().enumerate() {
            if used[kx] {
                let m = self.at(WP, (kx * run.w_step * 4 + run.unit_bytes(0)) as i64);
                self.vload(wr, m);
            }
        }
        let mut uses: Vec<(usize, usize, usize)> = Vec::new();
        for (px, &(kx0, nkx)) in cols.iter().enumerate() {
            for kx in kx0..kx0 + nkx {
                uses.push((px * p.sw + kx * p.dw, px, kx));
            }
        }
        uses.sort();
        let mut k = 0;
        let mut n = 0;
        while k < uses.len() {
            let c = uses[k].0;
            let x = xs[n % nx];
            n += 1;
            self.input(&unit.input, x, (c * p.ci * 4) as i64);
            while k < uses.len() && uses[k].0 == c {
                let (_, px, kx) = uses[k];
                self.fma(acc[px][0], x, Src::R(w[kx]));
                k += 1;
            }
        }
    }

    /// Loads a unit's input at `rax + base` into `x`.
    fn input(&mut self, src: &InSrc, x: R, base: i64) {
        match *src {
            InSrc::Vector(c) => {
                let m = self.at(IP, base + c as i64 * 4);
                self.vload(x, m);
            }
            InSrc::Splat(c) => {
                let m = self.at(IP, base + c as i64 * 4);
                self.vbroadcast(x, m);
            }
            InSrc::Lanes(c, n) => {
                let m = self.at(IP, base + c as i64 * 4);
                self.vload_masked(x, m, n, x);
            }
            InSrc::None => unreachable!("conv units have no vector input"),
        }
    }

    // ---- results ----

    /// Activation, residual and stores of a block's accumulators, to the
    /// output at `r12`.
    fn epilogue(&mut self, run: &Run, acc: &[Vec<R>]) {
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
        for (px, row) in acc.iter().enumerate() {
            let pix = (px * p.co * 4) as i64;
            for &v in row {
                if p.activation != Activation::None {
                    // NaN stays NaN (the contract): see `vmax`.
                    self.vmax(v, zero);
                }
                if p.activation == Activation::Relu6 {
                    self.vmin(v, six);
                }
            }
            for (u, unit) in run.units.iter().enumerate() {
                let v = row[u];
                match &unit.out {
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

    /// `v` (+ the residual) to the output at byte offset `off`.
    fn store_vector(&mut self, v: R, off: i64) {
        if self.p.residual {
            let m = self.at(RES, off);
            self.vadd(v, Src::M(m));
        }
        let m = self.at(RUN_O, off);
        self.vstore(m, v);
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

/// The pixels of a block whose kernel columns include `kx`.
fn pxs_of(cols: &[(usize, usize)], kx: usize) -> Vec<usize> {
    (0..cols.len())
        .filter(|&px| (cols[px].0..cols[px].0 + cols[px].1).contains(&kx))
        .collect()
}

/// `k1`, `k2`, ... for mask index 0, 1, ...
fn k_register(i: usize) -> R {
    [R::K1, R::K2, R::K3, R::K4, R::K5, R::K6, R::K7][i]
}

/// The register `i` places after `base` in iced's numbering (registers of
/// one kind are consecutive there).
fn nth_register(base: R, i: usize) -> R {
    base + i as u32
}
