//! One stage function in x86-64 machine code, following its [`StagePlan`].
//!
//! What this generator shares with the Cranelift one
//! (`convjit-cranelift`'s codegen.rs) is the plan and its loop nest
//! ([`StagePlan::nest`], a [`LoopNest`]), which both only emit: the
//! blocking ([`StagePlan::sched`]), channel groups, runs and repetitions
//! with their byte offsets, flat stages' pixel ranges, channel blocks
//! outermost where weights exceed L2, each output row's kernel rows (all,
//! or computed per row), its register blocks with their pixels' kernel
//! columns and pointer offsets, and per block the taps of a kernel row
//! ([`StagePlan::reduction`], [`StagePlan::dw_taps`],
//! [`StagePlan::dw_input_columns`]); and the signature.
//!
//! Where the nest differs for this generator, the plan makes it so from
//! its target: conv rows cut into column blocks that mix border and
//! interior pixels, each pixel with its own kernel columns (a reduction
//! per kernel column; Cranelift's blocks stay within a column segment);
//! one-channel and few-channel depthwise rows run as vectors along the
//! row ([`StagePlan::row_vectors`], outside the nest's blocks).
//!
//! Only this generator, outside the plan: the row vectors' blocks
//! themselves, two rows at a time for grey images
//! ([`Gen::row_pair_rows`]), a depth multiplier spread by a permutation
//! ([`StagePlan::row_multiplier`]); reductions of up to
//! `MAX_STRAIGHT_STEPS` steps emitted without a loop; depthwise rows
//! walked by input column wherever the row's weights fit the registers
//! (Cranelift: up to 5 kernel columns); prefetches (the input rows a
//! depthwise block's next output row adds, the next channel block's
//! weights); registers, stack slots and instruction selection.
//!
//! The files: this one (registers, stack frame, the function's entry and
//! exit), `ops.rs` (general-purpose instructions, immediates and
//! addresses), `vector.rs` (vector instructions and lane masks),
//! `loops.rs` (counted loops, rows, pixel and channel blocks),
//! `block.rs` (a register block and its reduction), `input_lanes.rs`
//! (a block of 1-4 output channels with their inputs in the lanes),
//! `depthwise.rs`
//! (depthwise rows: taps, prefetch), `row_vectors.rs` (rows as vectors,
//! row pairs, the row multiplier), `column_pair.rs` (a filter's separated
//! pair in one function, its column sums in registers), `epilogue.rs`
//! (activation, residual, stores).
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
//! groups and runs) lives in stack slots ([`Slot`]): those loops run once
//! per register block, which does hundreds of FMAs. Vector registers:
//! accumulators from 0, then the weight vectors of one step and the
//! broadcast (input) registers; the schedule leaves at least four free
//! for the epilogue (zero, six, two temporaries).
//!
//! Every displacement and immediate goes through [`Gen::at`] or
//! [`Gen::add_imm`]: one that does not fit 32 bits is added in a 64-bit
//! register instead, so no offset wraps.

mod block;
mod column_pair;
mod depthwise;
mod epilogue;
mod input_lanes;
mod loops;
mod ops;
mod row_vectors;
mod vector;

use crate::asm::{mem, Asm};
use crate::Isa;
#[cfg(doc)]
use convjit_plan::stage_plan::KernelRows;
use convjit_plan::stage_plan::{Block, LoopNest, StagePlan};
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

/// 64-bit stack slots of the outer loops' state (addresses are absolute,
/// offsets in bytes).
#[derive(Clone, Copy)]
enum Slot {
    /// Where output row (flat: pixel) 0 would be: `output - row0 * row`.
    OutBase,
    /// `residual - output`: the residual of an output address is this
    /// far from it.
    ResDelta,
    /// The first output row (flat: pixel) to compute: the `row0` argument.
    Row0,
    /// How many: the `rows` argument.
    Rows,
    /// The input row that the current output row's first valid kernel
    /// row reads.
    InRow,
    /// Where the current output row starts.
    OutRow,
    /// The current output row's first valid kernel row times the kernel
    /// width: the first tap of the weights its blocks read.
    Wk0,
    /// How many kernel rows are valid for the current output row.
    Nky,
    /// The current pixel block's input (at its first tap) and output.
    SegI,
    SegO,
    /// Repetitions left of the current column block.
    SegC,
    /// A grouped stage: the current group's input, output, weights and
    /// bias, and the groups left (with channel blocks outermost, its
    /// input and output as byte offsets).
    GrpI,
    GrpO,
    GrpW,
    GrpB,
    GrpC,
    /// Repetitions left of the current channel run.
    RunC,
    /// Channel blocks outermost ([`StagePlan::channels_outer`]): the current
    /// block's weights and bias, its output channels' byte offset in a
    /// pixel, and the repetitions left.
    ChW,
    ChB,
    ChO,
    ChC,
    /// A flat stage: the first pixel of the next block, the end of the
    /// range, and the last pixel a full block may start at.
    At,
    End,
    Last,
}

impl Slot {
    /// Row vectors in column strips (`Gen::strips`; never a flat stage,
    /// so in the flat stage's slots): the current strip's byte offset in
    /// a row, and the strips left.
    const STRIP: Slot = Slot::At;
    const STRIP_C: Slot = Slot::End;
    /// Channel blocks outermost (whose blocks never run `Gen::channels`,
    /// so in its repetition counter's slot): the next line of the next
    /// block's weights to prefetch.
    const NEXT_W: Slot = Slot::RunC;
    /// A chunked reduction (`StagePlan::k_chunks`: flat stages only, so
    /// in the row slots): the current chunk, and the passes left.
    const CHUNK: Slot = Slot::Wk0;
    const CHUNK_C: Slot = Slot::Nky;
}

/// Which pass of a chunked reduction ([`StagePlan::k_chunks`]) is being
/// emitted: `Whole` where the reduction is not chunked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Whole,
    First,
    Middle,
    Last,
}

impl Chunk {
    /// The accumulators start from the partial sums in the output.
    fn resumes(self) -> bool {
        matches!(self, Chunk::Middle | Chunk::Last)
    }

    /// The epilogue stores final values (activation, residual, rounding);
    /// else the partial sums as they are.
    fn finishes(self) -> bool {
        matches!(self, Chunk::Whole | Chunk::Last)
    }
}

const SLOTS: i32 = 24;
/// AVX2 lane masks (32 bytes each) after the slots, one per tail length.
const MASKS: i32 = SLOTS * 8;
/// AVX2 masks of any length for a plan with its inputs in lanes: eight
/// -1s then eight zeros, loaded from `SLIDE + 4 * (8 - n)` (`input_lanes.rs`).
const SLIDE: i32 = MASKS + 8 * 32;
/// Stack frame: slots, up to 8 masks, and 8 bytes that (with the six
/// saved registers and the return address) keep rsp 16-byte aligned;
/// 64 more for the sliding table where [`Gen::setup_slide`] makes one.
const FRAME: i32 = MASKS + 8 * 32 + 8;

/// Every `as i32`/`as u32` of this generator narrows a value bounded by the
/// generator itself, never by the layer: a slot number (< 24), a mask
/// index (< 7), length (< 8: the sliding table) and lane (< 16), a block's pixels (<= 28), a vector lane's
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

/// A register block to emit: the plan's [`Block`] and where this
/// generator keeps its kernel rows.
struct BlockArgs<'n> {
    /// Its pixels and their kernel columns.
    block: &'n Block,
    /// Valid kernel rows.
    nky: Count,
    /// Kernel rows have borders ([`KernelRows::PerRow`]): the weights
    /// start at `[Wk0] + kx0` taps.
    wk0: bool,
    /// A block of two rows ([`RowPairs`]): the input and output bytes from
    /// a pixel of the first row to the same column of the second.
    pair: Option<(i64, i64)>,
}

pub struct Gen<'a> {
    pub a: Asm,
    p: &'a StagePlan,
    /// The plan's loops.
    n: &'a LoopNest<'a>,
    isa: Isa,
    /// Bytes per vector.
    vb: i64,
    regs: usize,
    /// Tail lengths with masks: AVX-512 `k1..`, AVX2 stack masks.
    masks: Vec<usize>,
    /// Rows run in column strips: [`Gen::row_start`] adds `[Strip]`.
    strip: bool,
    /// The pass of a chunked reduction being emitted.
    chunk: Chunk,
}

impl<'a> Gen<'a> {
    pub fn new(p: &'a StagePlan, n: &'a LoopNest<'a>, isa: Isa) -> Gen<'a> {
        Gen {
            a: Asm::new(),
            p,
            n,
            isa,
            vb: (p.sched.lanes * 4) as i64,
            regs: match isa {
                Isa::Avx2 => 16,
                Isa::Avx512 => 32,
            },
            masks: Vec::new(),
            strip: false,
            chunk: Chunk::Whole,
        }
    }

    /// The whole function: saves the callee-saved registers, sets up the
    /// frame's slots and masks, emits the stage's body and returns.
    pub fn function(&mut self) {
        let p = self.p;
        for r in SAVED {
            self.a.emit(I::with1(Code::Push_r64, r));
        }
        let frame = FRAME + if self.slide() { 64 } else { 0 };
        self.a.emit(I::with2(Code::Sub_rm64_imm32, R::RSP, frame));
        // Output rows (pixels, flat) are addressed from where row 0 would be.
        let unit = if p.flat { 1 } else { p.wo };
        self.mov_rr(R::RAX, R::R8);
        self.mul_imm(R::RAX, (unit * p.co * p.out_bytes()) as i64);
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
        self.setup_slide();
        self.body();
        self.a.emit(I::with2(Code::Add_rm64_imm32, R::RSP, frame));
        for r in SAVED.iter().rev() {
            self.a.emit(I::with1(Code::Pop_r64, *r));
        }
        // The caller's SSE code must not pay for dirty upper halves.
        self.a.emit(Ok(I::with(Code::VEX_Vzeroupper)));
        self.a.emit(Ok(I::with(Code::Retnq)));
    }
}

/// What the unit tests of the generator's files share: a plan to make a
/// [`Gen`] with, and the decoded code of what a test emits.
#[cfg(test)]
mod test_support {
    use super::Gen;
    use crate::Isa;
    use convjit_plan::stage_plan::{plan_for, StagePlan};
    use iced_x86::{Decoder, DecoderOptions, Instruction};

    /// The plan of the first stage of the layer `src` at `isa`.
    pub(super) fn plan(src: &str, isa: Isa) -> StagePlan {
        let layer = convjit_ir::compile_source(src)
            .unwrap_or_else(|d| panic!("{src}: {d:?}"))
            .remove(0);
        plan_for(&layer.stages[0], &isa.target())
    }

    /// A plan whose shapes do not matter to what is under test.
    pub(super) fn any_plan(isa: Isa) -> StagePlan {
        plan("layer t { input 4x4x8\n p: pointwise 16 }", isa)
    }

    /// The instructions `f` emits with a generator for `plan`.
    pub(super) fn emitted(
        plan: &StagePlan,
        isa: Isa,
        f: impl FnOnce(&mut Gen<'_>),
    ) -> Vec<Instruction> {
        let nest = plan.nest();
        let mut g = Gen::new(plan, &nest, isa);
        f(&mut g);
        decode(&g.a.finish().expect("the code encodes"))
    }

    pub(super) fn decode(code: &[u8]) -> Vec<Instruction> {
        let ins: Vec<Instruction> = Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
            .into_iter()
            .collect();
        assert_eq!(ins.iter().map(|i| i.len()).sum::<usize>(), code.len());
        ins
    }
}
