//! A bf16 stage on AMX tiles, following its [`TilePlan`] (see
//! `convjit_plan::stage_plan::tiles` for the layout and why).
//!
//! Signature (System V): the stage functions' six arguments and a
//! seventh, `scratch` (on the stack at entry): at least
//! [`TilePlan::scratch_bytes`] bytes, this thread's (no alignment needed: tile
//! loads and the conversion's stores are unaligned forms).
//!
//! Tiles: `tmm0..3` accumulate pixel block `m` x channel block `n` as
//! `tmm(2m + n)`; `tmm4`, `tmm5` hold the two pixel blocks' A tiles (16
//! pixels x 32 channels), `tmm6`, `tmm7` the two channel blocks' B tiles.
//! The last block of an odd count of channel blocks, or of pixel blocks
//! in a row, is computed alone, with half the tiles (on a grid or flat,
//! the pixel blocks run along the chunk and the last pair's second block
//! may hold positions not stored).
//!
//! Registers inside the reduction: rax, rbx the two A pointers, r10, r11
//! the two B pointers, r12 the A row stride, r13 the constant 64 (the B
//! row stride), rcx, rdx, rbp loop counters; everything of the outer
//! loops lives in stack slots (they run once per 2x2 block of tiles,
//! which does `4 x taps x chunks` tile products).

mod dot;
mod epilogue;
mod pairs;

use crate::asm::{mem, Asm, Label};
use convjit_plan::stage_plan::{StagePlan, TilePlan, B_TILE_BYTES, K_CHUNK, M_BLOCK};
use iced_x86::{Code, Instruction as I, MemoryOperand, Register as R};

const SAVED: [R; 6] = [R::RBX, R::RBP, R::R12, R::R13, R::R14, R::R15];

/// Stack slots (8 bytes each) above the 64-byte tile configuration.
#[derive(Clone, Copy)]
enum Slot {
    Input,
    Weights,
    /// Where output row (flat: pixel) 0 would be.
    OutBase,
    /// `residual - output` in bytes.
    ResDelta,
    Scratch,
    /// The current output row (flat: first pixel of the block).
    Row,
    /// The end of the call's rows (pixels).
    End,
    /// Output rows in the current chunk, and the input rows it converts.
    Chunk,
    Left,
    /// A counter: the input row being converted, or the chunk's output
    /// row being computed.
    At,
    /// Channel block pair: the first block's index and the second's.
    N0,
    N1,
    /// The next epilogue record to run, and the end of the block's
    /// records (addresses of `Records`; see `epilogue`).
    Next,
    Last,
    /// Reduction steps until the next record runs.
    Countdown,
    /// `vdpbf16ps`: positions of the block (both pixel blocks) still to
    /// compute; passes past them are skipped.
    Real,
    /// Up to four records of [`epilogue::RECORD`] bytes.
    Records,
}

/// The slots, the records' included, rounded to an even count.
const SLOTS: i32 = (Slot::Records as i32 + 4 * epilogue::RECORD / 8 + 1) / 2 * 2;
const CONFIG: i32 = 64;
/// Slots after the tile configuration, rounded so that rsp stays 16-byte
/// aligned with the six saved registers and the return address.
const FRAME: i32 = CONFIG + SLOTS * 8 + 8;
const _: () = assert!((FRAME + 8 * SAVED.len() as i32 + 8) % 16 == 0);

/// (A slot's number is below `SLOTS`: the narrowing cannot wrap.)
fn slot(s: Slot) -> MemoryOperand {
    mem(R::RSP, CONFIG + s as i32 * 8)
}

/// `v` as a 32-bit immediate: every value compared or added here is a
/// block size, a block count or a dimension bounded by the layer language
/// (`MAX_DIM`) or by [`convjit_plan::stage_plan::MAX_TILE_SCRATCH`], all
/// far below 2^31; a larger one is a bug of the plan, never wrapped.
fn imm32(v: usize) -> i32 {
    i32::try_from(v).expect("a tile plan's sizes fit 32 bits")
}

/// `[base + index * 1 + disp]`: a tile load or store's operand (the
/// index register is the row stride).
fn sib(base: R, stride: R, disp: i64) -> MemoryOperand {
    MemoryOperand::with_base_index_scale_displ_size(base, stride, 1, disp, 1)
}

/// Tile register `i` (of 8).
fn tmm(i: usize) -> R {
    assert!(i < 8, "tile register {i}");
    R::TMM0 + i as u32
}

/// Vector register `i` (of 32).
pub(crate) fn zmm(i: usize) -> R {
    assert!(i < 32, "vector register {i}");
    R::ZMM0 + i as u32
}

/// Loads the tile configuration every tile function uses, built in the 64
/// bytes at `[base]`: palette 1, all eight tiles 16 rows of 64 bytes.
/// Uses zmm0 and rax.
pub(crate) fn tile_config(a: &mut Asm, base: R) {
    a.emit(I::with3(
        Code::EVEX_Vpxord_zmm_k1z_zmm_zmmm512b32,
        R::ZMM0,
        R::ZMM0,
        R::ZMM0,
    ));
    a.emit(I::with2(
        Code::EVEX_Vmovdqu64_zmmm512_k1z_zmm,
        mem(base, 0),
        R::ZMM0,
    ));
    a.emit(I::with2(Code::Mov_rm8_imm8, mem(base, 0), 1u32));
    // Bytes per row of tiles 0-7 (u16 each), then their rows (u8 each).
    a.emit(I::with2(
        Code::Mov_r64_imm64,
        R::RAX,
        0x0040_0040_0040_0040u64,
    ));
    a.emit(I::with2(Code::Mov_rm64_r64, mem(base, 16), R::RAX));
    a.emit(I::with2(Code::Mov_rm64_r64, mem(base, 24), R::RAX));
    a.emit(I::with2(
        Code::Mov_r64_imm64,
        R::RAX,
        0x1010_1010_1010_1010u64,
    ));
    a.emit(I::with2(Code::Mov_rm64_r64, mem(base, 48), R::RAX));
    a.emit(I::with1(Code::VEX_Ldtilecfg_m512, mem(base, 0)));
}

/// The machine code of a tile plan's stage function.
pub fn emit_tiles(p: &StagePlan) -> Result<Vec<u8>, String> {
    let t = p.tiles.as_ref().ok_or("not a tile plan")?;
    // Reduction steps of a block: taps x chunks.
    let steps = if p.flat { 1 } else { p.kh * p.kw } * t.k_chunks;
    let mut g = Tiles {
        a: Asm::new(),
        p,
        t,
        n_pair: true,
        m_pair: true,
        interval: Tiles::record_interval(steps),
    };
    g.function();
    g.a.finish()
}

struct Tiles<'a> {
    a: Asm,
    p: &'a StagePlan,
    t: &'a TilePlan,
    /// The body being emitted computes two channel blocks (`[N0]`,
    /// `[N1]`) or one (the last of an odd count: B tile 6 alone).
    n_pair: bool,
    /// It computes two pixel blocks or one (the last of an odd count of
    /// a row: A tile 4 alone).
    m_pair: bool,
    /// Reduction steps between two epilogue records run during a block's
    /// reduction ([`Tiles::epilogue_step`]).
    interval: usize,
}

impl Tiles<'_> {
    fn function(&mut self) {
        let p = self.p;
        for r in SAVED {
            self.a.emit(I::with1(Code::Push_r64, r));
        }
        // The seventh argument, above the return address and the pushes.
        let scratch_at = 8 + 8 * SAVED.len() as i32; // (6 registers)
        self.a.emit(I::with2(
            Code::Mov_r64_rm64,
            R::RAX,
            mem(R::RSP, scratch_at),
        ));
        self.a.emit(I::with2(Code::Sub_rm64_imm32, R::RSP, FRAME));
        self.store(Slot::Scratch, R::RAX);
        self.store(Slot::Input, R::RDI);
        self.store(Slot::Weights, R::RSI);
        self.store(Slot::Row, R::R8);
        self.mov_rr(R::R10, R::R8);
        self.a.emit(I::with2(Code::Add_r64_rm64, R::R10, R::R9));
        self.store(Slot::End, R::R10);
        // Output rows (pixels) are addressed from where row 0 would be.
        let unit = if p.flat { 1 } else { p.wo };
        let t = self.t;
        // The residual is addressed from the output: both f32.
        assert!(
            !(t.bf16_output && p.residual),
            "a bf16 output with a residual"
        );
        self.mov_rr(R::RAX, R::R8);
        self.mul_imm(R::RAX, (unit * p.co * t.out_bytes()) as i64);
        self.mov_rr(R::R10, R::RDX);
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::R10, R::RAX));
        self.store(Slot::OutBase, R::R10);
        self.mov_rr(R::R10, R::RCX);
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::R10, R::RDX));
        self.store(Slot::ResDelta, R::R10);
        if !self.t.dot {
            self.tile_config();
        }
        if self.deferred() {
            self.epilogue_constants();
        }
        // No records pending.
        self.store_imm(Slot::Next, 0);
        self.store_imm(Slot::Last, 0);
        self.store_imm(Slot::Countdown, self.interval as i64);
        let done = self.a.label();
        let top = self.a.label();
        self.a.bind(top);
        self.load(R::RAX, Slot::Row);
        self.a
            .emit(I::with2(Code::Cmp_r64_rm64, R::RAX, slot(Slot::End)));
        self.a.branch(Code::Jae_rel8_64, Code::Jae_rel32_64, done);
        if p.flat {
            self.flat_chunk();
        } else {
            self.output_chunk();
        }
        if self.deferred() {
            // The chunk's last block's records, before the next chunk
            // converts its input (which might be where they store).
            self.drain();
        }
        self.load(R::RAX, Slot::Chunk);
        self.a
            .emit(I::with2(Code::Add_rm64_r64, slot(Slot::Row), R::RAX));
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, top);
        self.a.bind(done);
        if !self.t.dot {
            self.a.emit(Ok(I::with(Code::VEX_Tilerelease)));
        }
        self.a.emit(I::with2(Code::Add_rm64_imm32, R::RSP, FRAME));
        for r in SAVED.iter().rev() {
            self.a.emit(I::with1(Code::Pop_r64, *r));
        }
        self.a.emit(Ok(I::with(Code::VEX_Vzeroupper)));
        self.a.emit(Ok(I::with(Code::Retnq)));
    }

    /// Palette 1, all eight tiles 16 rows of 64 bytes, at `[rsp]`.
    fn tile_config(&mut self) {
        tile_config(&mut self.a, R::RSP);
    }

    // ---- rows (any conv): convert Kh input rows, then the tiles ----

    /// Output rows `[Row] ..` (up to `chunk_rows`, `[Chunk]` of them):
    /// the input rows they read converted once, then per pair of channel
    /// blocks every row's pairs of pixel blocks (the pair's weights are
    /// read from cache by all of them).
    fn output_chunk(&mut self) {
        let (p, t) = (self.p, self.t);
        self.chunk_len();
        // Input rows: (Chunk - 1) * sh + (kh - 1) * dh + 1.
        self.mul_imm(R::RCX, p.sh as i64);
        self.add_imm(R::RCX, ((p.kh - 1) * p.dil_h) as i64 + 1 - p.sh as i64);
        self.store(Slot::Left, R::RCX);
        self.store_imm(Slot::At, 0);
        let top = self.a.label();
        self.a.bind(top);
        self.convert_row();
        self.add_slot(Slot::At, 1);
        self.load(R::RAX, Slot::At);
        self.a
            .emit(I::with2(Code::Cmp_r64_rm64, R::RAX, slot(Slot::Left)));
        self.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, top);
        if t.grid {
            // The last grid position computed, plus one: (Chunk - 1) *
            // width + wo.
            self.load(R::RAX, Slot::Chunk);
            self.add_imm(R::RAX, -1);
            self.mul_imm(R::RAX, t.staged_width as i64);
            self.add_imm(R::RAX, p.wo as i64);
            self.store(Slot::Left, R::RAX);
            return self.channel_pairs(|g| g.grid_blocks());
        }
        self.channel_pairs(|g| {
            g.store_imm(Slot::At, 0);
            let row = g.a.label();
            g.a.bind(row);
            let mut m = 0;
            while m < t.m_blocks {
                // The last block of an odd count alone.
                let m1 = (m + 1).min(t.m_blocks - 1);
                g.m_pair = m1 != m;
                g.row_reduction(m, m1);
                g.m_pair = true;
                m += 2;
            }
            g.add_slot(Slot::At, 1);
            g.load(R::RAX, Slot::At);
            g.a.emit(I::with2(Code::Cmp_r64_rm64, R::RAX, slot(Slot::Chunk)));
            g.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, row);
        });
    }

    /// Input row `[Row] * sh - pt + [At]` converted to bf16 at `scratch +
    /// [At] * staged_row_bytes`: zero columns for the padding (and rows
    /// outside the image), channels zero past `Ci`.
    fn convert_row(&mut self) {
        let (p, t) = (self.p, self.t);
        let row_bytes = t.staged_row_bytes as i64;
        // rbx: where the converted row goes.
        self.load(R::RBX, Slot::At);
        self.mul_imm(R::RBX, row_bytes);
        self.a
            .emit(I::with2(Code::Add_r64_rm64, R::RBX, slot(Slot::Scratch)));
        // rax: the input row; outside the image: all zeros.
        self.load(R::RAX, Slot::Row);
        self.mul_imm(R::RAX, p.sh as i64);
        self.a
            .emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::At)));
        self.add_imm(R::RAX, -(p.pt as i64));
        let zeros = self.a.label();
        let done = self.a.label();
        self.a.emit(I::with2(Code::Cmp_rm64_imm32, R::RAX, 0i32));
        self.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, zeros);
        self.a
            .emit(I::with2(Code::Cmp_rm64_imm32, R::RAX, imm32(p.h)));
        self.a.branch(Code::Jge_rel8_64, Code::Jge_rel32_64, zeros);
        // The row's columns: padding, the image's, padding again.
        let left = p.pl.min(t.staged_width);
        let inside = p.w.min(t.staged_width - left);
        let right = t.staged_width - left - inside;
        self.zero_bytes((left * t.cp * 2) as i64);
        // rsi: the input pixel (iy, 0).
        self.mul_imm(R::RAX, (p.w * p.ci * 4) as i64);
        self.load(R::RSI, Slot::Input);
        self.a.emit(I::with2(Code::Add_r64_rm64, R::RSI, R::RAX));
        self.convert_pixels(Count::Const(inside));
        self.zero_bytes((right * t.cp * 2) as i64);
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, done);
        self.a.bind(zeros);
        self.zero_bytes(row_bytes);
        self.a.bind(done);
    }

    /// The reduction of one 2x2 block of a row: pixel blocks `m`, `m1`,
    /// channel blocks `[N0]`, `[N1]`, over every tap and chunk.
    fn row_reduction(&mut self, m: usize, m1: usize) {
        let (p, t) = (self.p, self.t);
        let cp2 = (t.cp * 2) as i64;
        let px_bytes = (M_BLOCK * p.sw) as i64 * cp2;
        // A pointers: rax (block m of output row Row + At, whose first
        // kernel row is converted row At * sh) and the distance to block
        // m1 in r14.
        if t.dot {
            // Blocks m and m1 = m + 1 (or m alone) are contiguous.
            let real = p.wo.saturating_sub(m * M_BLOCK).min((m1 - m + 1) * M_BLOCK);
            self.store_imm(Slot::Real, real as i64);
        }
        self.load(R::RAX, Slot::At);
        self.mul_imm(R::RAX, (p.sh * t.staged_row_bytes) as i64);
        self.a
            .emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::Scratch)));
        self.add_imm(R::RAX, m as i64 * px_bytes);
        self.mov_imm(R::R14, (m1 - m) as i64 * px_bytes);
        self.mov_imm(R::R12, p.sw as i64 * cp2);
        self.reduction();
        self.epilogue(false, |g, m_sel| {
            // The block's first pixel of the output row, and how many.
            let mb = if m_sel == 0 { m } else { m1 };
            let valid = p.wo.saturating_sub(mb * M_BLOCK).min(M_BLOCK);
            g.load(R::RAX, Slot::Row);
            g.a.emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::At)));
            g.mul_imm(R::RAX, p.wo as i64);
            g.add_imm(R::RAX, (mb * M_BLOCK) as i64);
            Count::Const(valid)
        });
    }

    /// The block's reduction (every tap of a conv, every chunk) into the
    /// accumulators: on tiles, or on `vdpbf16ps` ([`TilePlan::dot`],
    /// stored to the scratch where the epilogue reads the tiles).
    fn reduction(&mut self) {
        if !self.t.dot && self.t.group_blocks.is_some() {
            // A grouped stage: A tiles from the blocks' group's channels.
            self.mov_rr(R::RSI, R::RAX);
            self.add_group_offset(R::RSI);
            self.mov_rr(R::RAX, R::RSI);
        }
        match (self.t.dot, self.p.flat) {
            (true, _) => self.dot_reduction(),
            (false, false) => self.tap_reduction(),
            (false, true) => {
                self.b_pointers();
                self.zero_accumulators();
                let step = (self.t.n_blocks * B_TILE_BYTES) as i64;
                self.chunk_loop(self.t.red_chunks, step);
            }
        }
    }

    /// The 2x2 block's reduction over every tap and chunk, its A tiles at
    /// rax and rax + r14 (row stride r12) for the first tap: the B
    /// pointers set, the accumulators zeroed, the loops over kernel rows,
    /// columns and chunks.
    fn tap_reduction(&mut self) {
        let (p, t) = (self.p, self.t);
        let cp2 = (t.cp * 2) as i64;
        self.b_pointers();
        let step = (t.n_blocks * B_TILE_BYTES) as i64;
        // A group's chunks (grouped), at its padded channels.
        let chunks = t.red_chunks;
        let kx_bytes = p.dil_w as i64 * cp2;
        let ky_back = (p.dil_h * t.staged_row_bytes) as i64 - p.kw as i64 * kx_bytes;
        self.zero_accumulators();
        self.counted(R::RCX, p.kh, |g| {
            g.counted(R::RDX, p.kw, |g| {
                g.chunk_loop(chunks, step);
                g.add_imm(R::RAX, kx_bytes - (chunks * 64) as i64);
            });
            g.add_imm(R::RAX, ky_back);
        });
    }

    /// A stride-1 chunk on the grid of its converted rows: every pair of
    /// 16-position blocks from position `[At]` up to `[Left]` (the
    /// chunk's last output pixel, plus one).
    fn grid_blocks(&mut self) {
        self.block_pairs(Slot::Left, |g| {
            g.real_from(Slot::Left);
            g.a_pointers();
            g.reduction();
            g.epilogue(true, |g, m_sel| {
                // Grid positions At + 16 m .., Left - At - 16 m of them real.
                let first = (m_sel * M_BLOCK) as i64;
                g.load(R::RAX, Slot::At);
                g.add_imm(R::RAX, first);
                g.load(R::RCX, Slot::Left);
                g.a.emit(I::with2(Code::Sub_r64_rm64, R::RCX, slot(Slot::At)));
                g.add_imm(R::RCX, -first);
                Count::Reg(R::RCX)
            });
        });
    }

    /// `body` for each pair of 16-position blocks from `[At]` = 0 while
    /// `[At] < [limit]` (at least one position), then `[At]` += 32; where
    /// at most 16 positions remain, the last block alone (`m_pair`
    /// false: half the tile products, where a pair would compute a block
    /// of nothing).
    fn block_pairs(&mut self, limit: Slot, body: impl Fn(&mut Self)) {
        self.store_imm(Slot::At, 0);
        let (top, single, end) = (self.a.label(), self.a.label(), self.a.label());
        self.a.bind(top);
        self.load(R::RAX, limit);
        self.a
            .emit(I::with2(Code::Sub_r64_rm64, R::RAX, slot(Slot::At)));
        self.a
            .emit(I::with2(Code::Cmp_rm64_imm32, R::RAX, imm32(M_BLOCK)));
        self.a.branch(Code::Jbe_rel8_64, Code::Jbe_rel32_64, single);
        body(self);
        self.add_slot(Slot::At, 2 * M_BLOCK);
        self.load(R::RAX, Slot::At);
        self.a
            .emit(I::with2(Code::Cmp_r64_rm64, R::RAX, slot(limit)));
        self.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, top);
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, end);
        self.a.bind(single);
        self.m_pair = false;
        body(self);
        self.m_pair = true;
        self.a.bind(end);
    }

    /// `vdpbf16ps`: `[Real]` = `[limit] - [At]`, the positions from the
    /// block's first on that are computed (a pass past them is skipped).
    /// Uses rax: before [`Tiles::a_pointers`].
    fn real_from(&mut self, limit: Slot) {
        if self.t.dot {
            self.load(R::RAX, limit);
            self.a
                .emit(I::with2(Code::Sub_r64_rm64, R::RAX, slot(Slot::At)));
            self.store(Slot::Real, R::RAX);
        }
    }

    // ---- flat (pointwise): convert a chunk of pixels, then the tiles ----

    /// Pixels `[Row] ..` (up to `chunk_rows`, `[Chunk]` of them):
    /// converted, then per pair of channel blocks every 32 of them.
    fn flat_chunk(&mut self) {
        self.chunk_len();
        self.load(R::RBX, Slot::Scratch);
        self.load(R::RSI, Slot::Row);
        self.mul_imm(R::RSI, (self.p.ci * 4) as i64);
        self.a
            .emit(I::with2(Code::Add_r64_rm64, R::RSI, slot(Slot::Input)));
        self.convert_pixels(Count::Reg(R::RCX));
        self.channel_pairs(|g| {
            g.block_pairs(Slot::Chunk, |g| {
                g.real_from(Slot::Chunk);
                g.a_pointers();
                g.reduction();
                g.epilogue(false, |g, m_sel| {
                    // Pixels Row + At + 16 m .., Chunk - At - 16 m of them real.
                    let first = (m_sel * M_BLOCK) as i64;
                    g.load(R::RAX, Slot::Row);
                    g.a.emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::At)));
                    g.add_imm(R::RAX, first);
                    g.load(R::RCX, Slot::Chunk);
                    g.a.emit(I::with2(Code::Sub_r64_rm64, R::RCX, slot(Slot::At)));
                    g.add_imm(R::RCX, -first);
                    Count::Reg(R::RCX)
                });
            });
        });
    }

    // ---- shared: conversion, channel pairs, reduction, epilogue ----

    /// Converts `n` pixels of `Ci` f32s from rsi (advancing) to `Cp` bf16s
    /// each at rbx (advancing), channels past `Ci` zero (tiles, grouped:
    /// past each group's, [`TilePlan::padded_groups`]). Uses zmm0-2,
    /// k2/k3 (the last chunk's masks) and rcx (a counter: `n` in it or
    /// a constant).
    fn convert_pixels(&mut self, n: Count) {
        let (p, t) = (self.p, self.t);
        if let Count::Const(0) = n {
            return;
        }
        // Segments of channels each padded to whole chunks: the groups'
        // (tiles, grouped), or all `Ci` as one.
        let (segments, seg_ci, seg_chunks) = match t.padded_groups() {
            true => (p.groups, p.ci / p.groups, t.red_chunks),
            false => (1, p.ci, t.k_chunks),
        };
        let tail = seg_ci - (seg_chunks - 1) * K_CHUNK;
        self.set_mask(R::K2, tail.min(16));
        self.set_mask(R::K3, tail.saturating_sub(16));
        let top = self.a.label();
        let done = self.a.label();
        if let Count::Const(c) = n {
            self.mov_imm(R::RCX, c as i64);
        }
        self.a.emit(I::with2(Code::Test_rm64_r64, R::RCX, R::RCX));
        self.a.branch(Code::Jle_rel8_64, Code::Jle_rel32_64, done);
        self.a.bind(top);
        for (seg, chunk) in (0..segments).flat_map(|g| (0..seg_chunks).map(move |c| (g, c))) {
            let last = chunk + 1 == seg_chunks;
            let (lo_mask, hi_mask) = if last { (R::K2, R::K3) } else { (R::K0, R::K0) };
            let src = ((seg * seg_ci + chunk * K_CHUNK) * 4) as i64;
            self.vload_masked(R::ZMM0, R::RSI, src, lo_mask);
            self.vload_masked(R::ZMM1, R::RSI, src + 64, hi_mask);
            self.a.emit(I::with3(
                Code::EVEX_Vcvtne2ps2bf16_zmm_k1z_zmm_zmmm512b32,
                R::ZMM2,
                R::ZMM1,
                R::ZMM0,
            ));
            let dst = self.at(R::RBX, ((seg * seg_chunks + chunk) * 64) as i64);
            self.a
                .emit(I::with2(Code::EVEX_Vmovdqu64_zmmm512_k1z_zmm, dst, R::ZMM2));
        }
        self.add_imm(R::RSI, (p.ci * 4) as i64);
        self.add_imm(R::RBX, (t.cp * 2) as i64);
        self.a.emit(I::with1(Code::Dec_rm64, R::RCX));
        self.a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, top);
        self.a.bind(done);
    }

    /// `bytes` (a multiple of 64) of zeros at rbx, advancing it.
    fn zero_bytes(&mut self, bytes: i64) {
        if bytes == 0 {
            return;
        }
        self.a.emit(I::with3(
            Code::EVEX_Vpxord_zmm_k1z_zmm_zmmm512b32,
            R::ZMM0,
            R::ZMM0,
            R::ZMM0,
        ));
        self.counted(R::RCX, (bytes / 64) as usize, |g| {
            g.a.emit(I::with2(
                Code::EVEX_Vmovdqu64_zmmm512_k1z_zmm,
                mem(R::RBX, 0),
                R::ZMM0,
            ));
            g.add_imm(R::RBX, 64);
        });
    }

    /// The accumulator tiles the body computes: `i` for pixel block
    /// `i / 2` and channel block `i % 2`.
    fn accumulators(&self) -> &'static [usize] {
        match (self.m_pair, self.n_pair) {
            (true, true) => &[0, 1, 2, 3],
            (true, false) => &[0, 2],
            (false, true) => &[0, 1],
            (false, false) => &[0],
        }
    }

    /// rax: the A tile of converted position `[At]` (a grid's, or a flat
    /// chunk's pixel), rax + r14 the next block's, r12 = their row stride
    /// (one position).
    fn a_pointers(&mut self) {
        let cp2 = (self.t.cp * 2) as i64;
        self.load(R::RAX, Slot::At);
        self.mul_imm(R::RAX, cp2);
        self.a
            .emit(I::with2(Code::Add_r64_rm64, R::RAX, slot(Slot::Scratch)));
        self.mov_imm(R::R14, M_BLOCK as i64 * cp2);
        self.mov_imm(R::R12, cp2);
    }

    /// r10, r11: the B tiles of channel blocks `[N0]`, `[N1]` at the first
    /// reduction step; r13 = 64 (their row stride).
    fn b_pointers(&mut self) {
        self.load(R::R10, Slot::N0);
        self.mul_imm(R::R10, B_TILE_BYTES as i64);
        self.a
            .emit(I::with2(Code::Add_r64_rm64, R::R10, slot(Slot::Weights)));
        self.load(R::R11, Slot::N1);
        self.mul_imm(R::R11, B_TILE_BYTES as i64);
        self.a
            .emit(I::with2(Code::Add_r64_rm64, R::R11, slot(Slot::Weights)));
        self.mov_imm(R::R13, 64);
    }

    fn zero_accumulators(&mut self) {
        for &i in self.accumulators() {
            self.a.emit(I::with1(Code::VEX_Tilezero_tmm, tmm(i)));
        }
    }

    /// The `chunks` reduction steps of one tap: A tiles at rax and rax +
    /// r14 (stride r12), advancing rax by 64 a chunk; B tiles at r10, r11,
    /// advancing by `step` bytes.
    fn chunk_loop(&mut self, chunks: usize, step: i64) {
        let body = |g: &mut Self| {
            g.lea_idx(R::RBX, R::RAX, R::R14);
            // A tiles (stride r12), then B tiles (stride 64, r13).
            let loads = [
                (4, R::RAX, R::R12),
                (5, R::RBX, R::R12),
                (6, R::R10, R::R13),
                (7, R::R11, R::R13),
            ];
            let (m_pair, n_pair) = (g.m_pair, g.n_pair);
            let used = |t: usize| match t {
                5 => m_pair,
                7 => n_pair,
                _ => true,
            };
            for &(t, base, stride) in loads.iter().filter(|l| used(l.0)) {
                let m = sib(base, stride, 0);
                g.a.emit(I::with2(Code::VEX_Tileloadd_tmm_sibmem, tmm(t), m));
            }
            let products = [(0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)];
            let accumulators = g.accumulators();
            for &(c, a, b) in products.iter().filter(|p| accumulators.contains(&p.0)) {
                g.a.emit(I::with3(
                    Code::VEX_Tdpbf16ps_tmm_tmm_tmm,
                    tmm(c),
                    tmm(a),
                    tmm(b),
                ));
            }
            if g.t.prefetch_b {
                // The B tiles two steps ahead (past the last, lines of the
                // next pair's or beyond the weights: prefetches never fault).
                let blocks: &[R] = if g.n_pair {
                    &[R::R10, R::R11]
                } else {
                    &[R::R10]
                };
                for &base in blocks {
                    for line in 0..(B_TILE_BYTES / 64) as i64 {
                        let m = mem(base, imm32((2 * step + 64 * line) as usize));
                        g.a.emit(I::with1(Code::Prefetcht0_m8, m));
                    }
                }
            }
            g.add_imm(R::RAX, 64);
            g.add_imm(R::R10, step);
            g.add_imm(R::R11, step);
            if g.deferred() {
                // The previous block's epilogue while these products run.
                g.epilogue_step();
            }
        };
        self.counted(R::RBP, chunks, body);
    }

    // ---- small helpers ----

    /// `[Chunk]` and rcx = min(chunk_rows, End - Row): this chunk's output
    /// rows (flat: pixels).
    fn chunk_len(&mut self) {
        self.load(R::RCX, Slot::End);
        self.a
            .emit(I::with2(Code::Sub_r64_rm64, R::RCX, slot(Slot::Row)));
        self.mov_imm(R::RAX, self.t.chunk_rows as i64);
        self.a.emit(I::with2(Code::Cmp_r64_rm64, R::RCX, R::RAX));
        self.a.emit(I::with2(Code::Cmovg_r64_rm64, R::RCX, R::RAX));
        self.store(Slot::Chunk, R::RCX);
    }

    /// `body` `n` times with `ctr` counting down (not at all for 0).
    fn counted(&mut self, ctr: R, n: usize, body: impl FnOnce(&mut Self)) {
        if n == 0 {
            return;
        }
        if n == 1 {
            return body(self);
        }
        self.mov_imm(ctr, n as i64);
        let top: Label = self.a.label();
        self.a.bind(top);
        body(self);
        self.a.emit(I::with1(Code::Dec_rm64, ctr));
        self.a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, top);
    }

    /// `k = (1 << n) - 1` (n <= 16 lanes).
    fn set_mask(&mut self, k: R, n: usize) {
        self.mov_imm(R::RAX, ((1u64 << n) - 1) as i64);
        self.a.emit(I::with2(Code::VEX_Kmovw_kr_r32, k, R::EAX));
    }

    /// `v = [base + off]`, lanes outside `k` zero (`k0`: all).
    fn vload_masked(&mut self, v: R, base: R, off: i64, k: R) {
        let m = self.at(base, off);
        self.vload_masked_m(v, m, k);
    }

    fn vload_masked_m(&mut self, v: R, m: MemoryOperand, k: R) {
        self.a
            .emit_with(I::with2(Code::EVEX_Vmovups_zmm_k1z_zmmm512, v, m), |i| {
                if k != R::K0 {
                    i.set_op_mask(k);
                    i.set_zeroing_masking(true);
                }
            });
    }

    /// `[base + off]`; offsets here are bounded by the tile scratch
    /// ([`convjit_plan::stage_plan::MAX_TILE_SCRATCH`]) or a row of the
    /// input, well within 32 bits for the layers tiles take.
    fn at(&mut self, base: R, off: i64) -> MemoryOperand {
        mem(base, i32::try_from(off).expect("offset within 32 bits"))
    }

    fn load(&mut self, r: R, s: Slot) {
        self.a.emit(I::with2(Code::Mov_r64_rm64, r, slot(s)));
    }

    fn store(&mut self, s: Slot, r: R) {
        self.a.emit(I::with2(Code::Mov_rm64_r64, slot(s), r));
    }

    fn store_imm(&mut self, s: Slot, v: i64) {
        self.mov_imm(R::RAX, v);
        self.store(s, R::RAX);
    }

    fn add_slot(&mut self, s: Slot, v: usize) {
        self.a
            .emit(I::with2(Code::Add_rm64_imm32, slot(s), imm32(v)));
    }

    fn mov_rr(&mut self, d: R, s: R) {
        self.a.emit(I::with2(Code::Mov_r64_rm64, d, s));
    }

    fn mov_imm(&mut self, r: R, v: i64) {
        self.a.emit(I::with2(Code::Mov_r64_imm64, r, v as u64));
    }

    fn add_imm(&mut self, r: R, v: i64) {
        if v == 0 {
            return;
        }
        match i32::try_from(v) {
            Ok(v) => self.a.emit(I::with2(Code::Add_rm64_imm32, r, v)),
            Err(_) => {
                self.mov_imm(R::R9, v);
                self.a.emit(I::with2(Code::Add_r64_rm64, r, R::R9));
            }
        }
    }

    fn mul_imm(&mut self, r: R, v: i64) {
        match i32::try_from(v) {
            Ok(v) => self.a.emit(I::with3(Code::Imul_r64_rm64_imm32, r, r, v)),
            Err(_) => {
                self.mov_imm(R::R9, v);
                self.a.emit(I::with2(Code::Imul_r64_rm64, r, R::R9));
            }
        }
    }

    /// `d = s + disp`.
    fn lea(&mut self, d: R, s: R, disp: i32) {
        self.a.emit(I::with2(Code::Lea_r64_m, d, mem(s, disp)));
    }

    /// `d = a + b`.
    fn lea_idx(&mut self, d: R, a: R, b: R) {
        let m = MemoryOperand::with_base_index_scale_displ_size(a, b, 1, 0, 0);
        self.a.emit(I::with2(Code::Lea_r64_m, d, m));
    }

    /// `d = a + b * scale`.
    fn lea_scaled(&mut self, d: R, a: R, b: R, scale: u32) {
        let m = MemoryOperand::with_base_index_scale_displ_size(a, b, scale, 0, 0);
        self.a.emit(I::with2(Code::Lea_r64_m, d, m));
    }
}

/// A trip count known now, or in a register at run time.
#[derive(Clone, Copy)]
enum Count {
    Const(usize),
    Reg(R),
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_plan::stage_plan::{plan_for, Target};
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    const TILES: Target = Target {
        tiles: true,
        ..Target::AVX512
    };

    fn mnemonics(src: &str) -> Vec<Mnemonic> {
        let layer = convjit_ir::compile_source(src).unwrap().remove(0);
        let p = plan_for(&layer.stages[0], &TILES);
        assert!(p.tiles.is_some(), "{src}: no tiles");
        let code = emit_tiles(&p).expect("encodes");
        let ins: Vec<_> = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE)
            .into_iter()
            .collect();
        assert_eq!(ins.iter().map(|i| i.len()).sum::<usize>(), code.len());
        assert!(ins.iter().all(|i| !i.is_invalid()), "{src}");
        ins.iter().map(|i| i.mnemonic()).collect()
    }

    /// Each kind of tile function (flat, rows, grid) configures the tiles
    /// once, releases them before returning, and per body (a pair of
    /// blocks or the last alone) does one tile product per accumulator in
    /// its reduction step and stores each accumulator once; runs on any
    /// host (only emitted and decoded).
    #[test]
    fn every_kind_configures_multiplies_and_releases() {
        for src in [
            "layer a { input 14x14x40\n p: pointwise 50, bias, relu6 }",
            "layer b { input 19x37x48\n c: conv 3x3 -> 40, stride 2x2, pad same, bias, relu }",
            "layer c { input 17x17x128\n c: conv 7x7 -> 128, pad same, residual }",
            // Grouped: blocks paired within groups (odd: the last alone).
            "layer d { input 14x14x240\n p: pointwise 240, groups 3, bias }",
            "layer e { input 19x17x80\n c: conv 3x3 -> 64, groups 2, stride 2x2 }",
        ] {
            let m = mnemonics(src);
            let count = |x: Mnemonic| m.iter().filter(|&&y| y == x).count();
            assert_eq!(count(Mnemonic::Ldtilecfg), 1, "{src}");
            assert_eq!(count(Mnemonic::Tilerelease), 1, "{src}");
            assert!(count(Mnemonic::Tdpbf16ps) > 0, "{src}");
            assert_eq!(
                count(Mnemonic::Tilestored),
                count(Mnemonic::Tdpbf16ps),
                "{src}"
            );
            assert!(count(Mnemonic::Vcvtne2ps2bf16) > 0, "{src}");
            let ret = m.iter().rposition(|&x| x == Mnemonic::Ret).unwrap();
            let release = m.iter().rposition(|&x| x == Mnemonic::Tilerelease).unwrap();
            assert!(release < ret, "{src}");
        }
    }

    /// A conv's block's epilogue runs in the next block's reduction
    /// (AMX): after a reduction step's four tile products, the records'
    /// vector code (the bias added to an accumulator row) comes before the
    /// next tile load or store, on rows or on a grid; a flat stage's comes
    /// after the block's tiles are stored.
    #[test]
    fn the_epilogue_runs_among_the_next_blocks_products() {
        for (src, deferred) in [
            (
                "layer a { input 14x14x64\n p: pointwise 64, bias, relu6 }",
                false,
            ),
            (
                "layer b { input 19x37x48\n c: conv 3x3 -> 40, stride 2x2, pad same, bias, relu }",
                true,
            ),
            (
                "layer c { input 17x17x128\n c: conv 7x7 -> 128, pad same, residual }",
                true,
            ),
        ] {
            let m = mnemonics(src);
            // The first step's last product (of a 2x2 block: the first
            // body is a pair of pairs).
            let tdp = m
                .iter()
                .enumerate()
                .filter(|(_, &x)| x == Mnemonic::Tdpbf16ps);
            let first = tdp.map(|(i, _)| i).nth(3).unwrap();
            let next = m[first..]
                .iter()
                .position(|&x| {
                    matches!(
                        x,
                        Mnemonic::Vaddps | Mnemonic::Tileloadd | Mnemonic::Tilestored
                    )
                })
                .map(|i| m[first + i]);
            let expected = if deferred {
                Mnemonic::Vaddps
            } else {
                Mnemonic::Tilestored
            };
            assert_eq!(next, Some(expected), "{src}");
        }
    }
}
