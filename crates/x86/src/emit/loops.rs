//! The loop nest above a register block, as the plan lists it
//! ([`LoopNest`]): counted loops, output rows and their valid kernel
//! rows, pixel blocks (a row's blocks, or a flat stage's pixel range)
//! and channel blocks (groups, runs, repetitions).

use super::{
    slot, BlockArgs, Chunk, Count, Ctr, Gen, Slot, IMG, IMM, LEFT, OY, RUN_B, RUN_I, RUN_O, RUN_W,
    WTS,
};
#[cfg(doc)]
use convjit_plan::stage_plan::LoopNest;
use convjit_plan::stage_plan::{
    Block, KernelRows, NextWeights, PixelBlocks, Pixels, RowPairs, Rows, RunLoop,
};
use iced_x86::{Code, Instruction as I, Register as R};

/// Rows ahead that a column strip prefetches its input ([`Gen::strip_rows`]):
/// a 5x1 depthwise pass on 1080x1920x3 took 2,315-2,369 us without, 1,549
/// with 4 rows ahead (1,589-1,592 with 2, 1,586-1,615 with 8); fused with
/// its 1x5 pass 3,171-3,308 against 2,595-2,624 (Zen 5, one thread).
const STRIP_AHEAD: usize = 4;
/// Input images from this size on are prefetched down a strip: the RGB
/// filters' 24 MiB ran 12-21% faster, the grey ones' 8 MiB (still in a
/// 32 MiB L3 from the call before) 0-13% slower for the instructions.
const STRIP_PREFETCH_BYTES: i64 = 16 << 20;

impl Gen<'_> {
    /// Runs `body` `count` times, counting in `ctr`: straight-line for a
    /// count of 0 or 1, else a loop tested at the bottom, and at the top
    /// too for a run-time count (which may be 0).
    pub(super) fn repeat(&mut self, count: Count, ctr: Ctr, body: &mut dyn FnMut(&mut Self)) {
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

    /// Rows `row0..row0 + rows` one by one: `row` emits one row's work
    /// (it may use every register but rdi, rsi, r8, r9).
    pub(super) fn rows(&mut self, row: &mut dyn FnMut(&mut Self)) {
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
    pub(super) fn row_taps(&mut self) {
        let p = self.p;
        let (sh, dil_h, kh) = (p.sh as i64, p.dil_h as i64, p.kh as i64);
        let zero = R::RCX;
        self.a.emit(I::with2(Code::Xor_r32_rm32, R::ECX, R::ECX));
        // r15 = oy*sh; rbx = t = pt - oy*sh (rows above the input).
        self.mov_rr(R::R15, OY);
        self.mul_imm(R::R15, sh);
        self.mov_imm(R::RAX, p.pt as i64);
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::RAX, R::R15));
        self.mov_rr(R::RBX, R::RAX);
        // ky0 = ceil(max(t, 0) / dil_h) in r12.
        self.a.emit(I::with2(Code::Test_rm64_r64, R::RAX, R::RAX));
        self.a.emit(I::with2(Code::Cmovl_r64_rm64, R::RAX, zero));
        if dil_h > 1 {
            self.add_reg_imm(R::RAX, dil_h - 1);
            self.divide(dil_h);
        }
        self.mov_rr(R::R12, R::RAX);
        // u = (h - 1 + pt) - oy*sh in r13 (rows below);
        // ky1 = min(floor(max(u, 0) / dil_h) + 1, kh), 0 if u < 0.
        self.mov_imm(R::RAX, p.h as i64 - 1 + p.pt as i64);
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::RAX, R::R15));
        self.mov_rr(R::R13, R::RAX);
        self.a.emit(I::with2(Code::Test_rm64_r64, R::RAX, R::RAX));
        self.a.emit(I::with2(Code::Cmovl_r64_rm64, R::RAX, zero));
        if dil_h > 1 {
            self.divide(dil_h);
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
        // Input row of the first valid tap: ky0*dil_h - t.
        self.mov_rr(R::RAX, R::R12);
        self.mul_imm(R::RAX, dil_h);
        self.a.emit(I::with2(Code::Sub_r64_rm64, R::RAX, R::RBX));
        self.mul_imm(R::RAX, p.in_row_bytes());
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
    pub(super) fn out_row(&mut self) {
        let p = self.p;
        self.mov_rr(R::RAX, OY);
        self.mul_imm(R::RAX, (p.wo * p.co * p.out_bytes()) as i64);
        self.add_slot(R::RAX, Slot::OutBase);
        self.store(Slot::OutRow, R::RAX);
    }

    /// `[s] = [from] + v`.
    pub(super) fn slot_plus(&mut self, s: Slot, from: Slot, v: i64) {
        self.load(R::RAX, from);
        self.add_reg_imm(R::RAX, v);
        self.store(s, R::RAX);
    }

    /// The plan's whole loop nest ([`LoopNest`]).
    pub(super) fn body(&mut self) {
        if let Some(c) = self.p.column {
            return self.column_pair(&c);
        }
        let chunks = self.p.k_chunks();
        if self.n.channels_outer && chunks > 1 {
            return self.chunked(chunks);
        }
        self.nest_body();
    }

    /// A reduction in `chunks` passes over every channel block and pixel
    /// ([`StagePlan::k_chunks`]): the first from the bias, the others
    /// from the partial sums the pass before stored, the last with the
    /// epilogue's activation and residual; each pass's input `ci /
    /// chunks` channels on (`IMG`), its weights as far on in each block
    /// (`[Chunk]`, `Gen::channel_blocks`).
    fn chunked(&mut self, chunks: usize) {
        let p = self.p;
        let chunk_bytes = (p.ci / chunks * p.in_bytes()) as i64;
        self.mov_imm(R::RAX, 0);
        self.store(Slot::CHUNK, R::RAX);
        for (pass, count) in [
            (Chunk::First, 1),
            (Chunk::Middle, chunks - 2),
            (Chunk::Last, 1),
        ] {
            self.chunk = pass;
            self.repeat(Count::Const(count), Ctr::Slot(Slot::CHUNK_C), &mut |g| {
                g.nest_body();
                g.add_imm(Ctr::Reg(IMG), chunk_bytes);
                g.add_imm(Ctr::Slot(Slot::CHUNK), 1);
            });
        }
        self.chunk = Chunk::Whole;
    }

    /// [`Gen::body`] of one pass.
    fn nest_body(&mut self) {
        if self.n.channels_outer {
            // Each channel block's weights stay in cache while every
            // pixel of the rows streams past them.
            self.channel_blocks(&mut |g, r| {
                g.pixel_blocks(&mut |g, k| {
                    g.load(RUN_I, Slot::SegI);
                    if g.n.groups > 1 {
                        g.add_slot(RUN_I, Slot::GrpI);
                    }
                    g.load(RUN_O, Slot::SegO);
                    g.add_slot(RUN_O, Slot::ChO);
                    g.load(RUN_W, Slot::ChW);
                    if g.n.bias.is_some() {
                        g.load(RUN_B, Slot::ChB);
                    }
                    g.block(r.run, k);
                    g.prefetch_next_weights(r);
                });
            });
        } else {
            self.pixel_blocks(&mut |g, k| g.channels(k));
        }
    }

    /// Every register block of pixels of the rows ([`Pixels`]), with
    /// `[SegI]`/`[SegO]` pointing at its input and output pixels.
    fn pixel_blocks(&mut self, inner: &mut dyn FnMut(&mut Self, &BlockArgs)) {
        let r = match &self.n.pixels {
            &Pixels::Flat { px, in_px, out_px } => {
                return self.flat_blocks((px, in_px, out_px), inner)
            }
            Pixels::Rows(r) => r,
        };
        if let Some((strip, count)) = self.strips(r) {
            return self.strip_rows(r, strip, count, inner);
        }
        if let Some(pairs) = &r.pairs {
            return self.rows_in_pairs(r, pairs, inner);
        }
        let co = self.p.co;
        self.rows(&mut |g| {
            g.row_start(r);
            match r.row_vectors {
                Some((a, b)) => g.vector_row(r, (a * co, b * co), inner),
                None => g.row_blocks(r, inner),
            }
        });
    }

    /// Rows whose every column runs as row vectors (a Kx1 kernel: a
    /// separated filter's column pass), with 2 or more kernel rows, in
    /// column strips of about 256 floats (a whole number of the vectors
    /// after which the channel phases repeat), each strip down all the
    /// call's rows: the `rows + kh - 1` input rows of a strip stay in L1
    /// while the rows below reuse them, where row by row each of the
    /// `kh` rows an output row reads came from L2. `(floats, count)`:
    /// `count` strips of `floats`, the last one longer by the rest; `None`
    /// where the row is shorter than two strips.
    fn strips(&self, r: &Rows) -> Option<(usize, usize)> {
        let p = self.p;
        let whole = r.row_vectors == Some((0, p.wo)) && r.blocks.is_empty();
        if !whole || p.row_multiplier != 1 || p.kh < 2 {
            return None;
        }
        let lanes = p.sched.lanes;
        let gcd = |mut a: usize, mut b: usize| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let period = lanes * (p.co / gcd(p.co, lanes));
        let strip = period * 256usize.div_ceil(period);
        let n = p.wo * p.co;
        (n >= 2 * strip).then_some((strip, n / strip))
    }

    /// [`Gen::strips`]: `count - 1` strips of `strip` floats in a loop,
    /// then the last with the rest, each a loop over the call's rows.
    fn strip_rows(
        &mut self,
        r: &Rows,
        strip: usize,
        count: usize,
        inner: &mut dyn FnMut(&mut Self, &BlockArgs),
    ) {
        let last = self.p.wo * self.p.co - (count - 1) * strip;
        self.strip = true;
        self.mov_imm(R::RAX, 0);
        self.store(Slot::STRIP, R::RAX);
        let mut one = |g: &mut Self, floats: usize| {
            g.rows(&mut |g| {
                g.row_start(r);
                // The strip's piece of the input row `STRIP_AHEAD` rows
                // below the last this output row reads: a strip reads ~1
                // KiB of each row, a new 4 KiB page every row, which the
                // hardware's stream prefetchers do not follow. (Past the
                // image's last row: prefetches never fault.)
                if r.in_row * g.p.h as i64 >= STRIP_PREFETCH_BYTES {
                    g.load(R::RAX, Slot::InRow);
                    let below = r.in_row * (g.p.kh - 1 + STRIP_AHEAD) as i64;
                    for off in (0..floats * 4).step_by(64) {
                        let m = g.at(R::RAX, below + off as i64);
                        g.a.emit(I::with1(Code::Prefetcht0_m8, m));
                    }
                }
                g.vector_row(r, (0, floats), inner);
            });
        };
        self.repeat(
            Count::Const(count - 1),
            Ctr::Slot(Slot::STRIP_C),
            &mut |g| {
                one(g, strip);
                g.add_imm(Ctr::Slot(Slot::STRIP), (strip * 4) as i64);
            },
        );
        one(self, last);
        self.strip = false;
    }

    /// For output row `OY`: `[InRow]` the input row of its first valid
    /// kernel row (with `[Wk0]` and `[Nky]` where rows have borders), and
    /// `[OutRow]`.
    pub(super) fn row_start(&mut self, r: &Rows) {
        match r.kernel_rows {
            KernelRows::All => {
                self.mov_rr(R::RAX, OY);
                self.mul_imm(R::RAX, self.p.sh as i64 * r.in_row);
                self.add_rr(R::RAX, IMG);
                self.store(Slot::InRow, R::RAX);
            }
            KernelRows::PerRow => self.row_taps(),
        }
        self.out_row();
        if self.strip {
            // Row vectors of a Kx1 kernel: input and output floats alike.
            for s in [Slot::InRow, Slot::OutRow] {
                self.load(R::RAX, Slot::STRIP);
                self.a.emit(I::with2(Code::Add_rm64_r64, slot(s), R::RAX));
            }
        }
    }

    /// Output rows `row0..row0 + rows` of a conv ([`RowPairs`]): two at a
    /// time where both read every kernel row, else one at a time.
    fn rows_in_pairs(
        &mut self,
        r: &Rows,
        pairs: &RowPairs,
        inner: &mut dyn FnMut(&mut Self, &BlockArgs),
    ) {
        let p = self.p;
        let (a, b) = pairs.full;
        self.load(OY, Slot::Row0);
        self.load(LEFT, Slot::Rows);
        let (top, single, exit) = (self.a.label(), self.a.label(), self.a.label());
        self.a.bind(top);
        self.a.emit(I::with2(Code::Test_rm64_r64, LEFT, LEFT));
        self.a.branch(Code::Je_rel8_64, Code::Je_rel32_64, exit);
        // A pair: two rows left, OY >= a and OY + 1 < b.
        for (reg, least) in [(LEFT, 2), (OY, a)] {
            self.mov_imm(IMM, least as i64);
            self.a.emit(I::with2(Code::Cmp_r64_rm64, reg, IMM));
            self.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, single);
        }
        self.mov_imm(IMM, b as i64 - 1);
        self.a.emit(I::with2(Code::Cmp_r64_rm64, OY, IMM));
        self.a.branch(Code::Jge_rel8_64, Code::Jge_rel32_64, single);
        // Every kernel row valid: the first is input row oy*sh - pt.
        self.mov_rr(R::RAX, OY);
        self.mul_imm(R::RAX, p.sh as i64 * r.in_row);
        self.add_reg_imm(R::RAX, -(p.pt as i64) * r.in_row);
        self.add_rr(R::RAX, IMG);
        self.store(Slot::InRow, R::RAX);
        self.out_row();
        let rows = Some((pairs.in_rows, r.out_row));
        self.blocks_along(&pairs.blocks, Count::Const(p.kh), false, rows, inner);
        self.a.emit(I::with2(Code::Add_rm64_imm32, OY, 2));
        self.a.emit(I::with2(Code::Sub_rm64_imm32, LEFT, 2));
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, top);
        self.a.bind(single);
        self.row_start(r);
        self.row_blocks(r, inner);
        self.a.emit(I::with2(Code::Add_rm64_imm32, OY, 1));
        self.a.emit(I::with1(Code::Dec_rm64, LEFT));
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, top);
        self.a.bind(exit);
    }

    /// The register blocks of output row `OY` ([`Rows::blocks`]), each
    /// with `[SegI]`/`[SegO]` pointing at its input and output pixels.
    pub(super) fn row_blocks(&mut self, r: &Rows, inner: &mut dyn FnMut(&mut Self, &BlockArgs)) {
        let (nky, wk0) = match r.kernel_rows {
            KernelRows::All => (Count::Const(self.p.kh), false),
            KernelRows::PerRow => (Count::Slot(Slot::Nky), true),
        };
        self.blocks_along(&r.blocks, nky, wk0, None, inner);
    }

    /// `blocks` from `[InRow]`, `[OutRow]` ([`Gen::row_blocks`]), of one
    /// row or of a pair of rows (`pair`: the bytes between them).
    fn blocks_along(
        &mut self,
        blocks: &[PixelBlocks],
        nky: Count,
        wk0: bool,
        pair: Option<(i64, i64)>,
        inner: &mut dyn FnMut(&mut Self, &BlockArgs),
    ) {
        for blocks in blocks {
            self.slot_plus(Slot::SegI, Slot::InRow, blocks.in_off);
            self.slot_plus(Slot::SegO, Slot::OutRow, blocks.out_off);
            let k = BlockArgs {
                block: &blocks.block,
                nky,
                wk0,
                pair,
            };
            self.repeat(
                Count::Const(blocks.count),
                Ctr::Slot(Slot::SegC),
                &mut |g| {
                    inner(g, &k);
                    g.add_imm(Ctr::Slot(Slot::SegI), blocks.in_step);
                    g.add_imm(Ctr::Slot(Slot::SegO), blocks.out_step);
                },
            );
        }
    }

    /// A flat stage ([`Pixels::Flat`]: `px` pixels a block, `in_px` and
    /// `out_px` bytes a pixel): the pixels `row0..row0 + rows` in blocks
    /// of `px`, the last moved back to end at the last pixel (recomputing
    /// a few with the same result) so every block is full; a range
    /// shorter than a block runs pixel by pixel.
    fn flat_blocks(
        &mut self,
        (px, in_px, out_px): (usize, i64, i64),
        inner: &mut dyn FnMut(&mut Self, &BlockArgs),
    ) {
        self.load(R::RAX, Slot::Row0);
        self.store(Slot::At, R::RAX);
        self.add_slot(R::RAX, Slot::Rows);
        self.store(Slot::End, R::RAX);
        self.add_reg_imm(R::RAX, -(px as i64));
        self.store(Slot::Last, R::RAX);
        let singles = self.a.label();
        let done = self.a.label();
        for npx in [px, 1] {
            if npx == 1 {
                self.a.bind(singles);
            } else if px > 1 {
                // px: pixels of a register block, at most the registers.
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
            if npx > 1 && self.chunk != Chunk::Whole {
                // A pass adds its chunk to what the output holds: a block
                // moved back would add it twice to the pixels it shares;
                // the rest go one by one.
                self.a
                    .emit(I::with2(Code::Cmp_r64_rm64, R::RAX, slot(Slot::Last)));
                self.a.branch(Code::Jg_rel8_64, Code::Jg_rel32_64, singles);
            } else if npx > 1 {
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
            // A 1x1 kernel: one kernel row.
            let block = Block::flat(npx);
            let k = BlockArgs {
                block: &block,
                nky: Count::Const(1),
                wk0: false,
                pair: None,
            };
            inner(self, &k);
            self.add_imm(Ctr::Slot(Slot::At), npx as i64);
            self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, top);
        }
        self.a.bind(done);
    }

    /// Conv/pointwise with channel blocks outermost: every group and run
    /// repetition ([`LoopNest::runs`]), with `[ChW]`, `[ChB]` its weights
    /// and bias, `[ChO]` its output channel byte offset and, grouped,
    /// `[GrpI]` its group's input channel byte offset.
    fn channel_blocks(&mut self, inner: &mut dyn FnMut(&mut Self, &RunLoop)) {
        let n = self.n;
        // Every output of a group reads all of the group's inputs.
        debug_assert!(n
            .runs
            .iter()
            .all(|r| r.base.input == 0 && r.step.input == 0));
        let grouped = n.groups > 1;
        if grouped {
            self.mov_imm(R::RAX, 0);
            self.store(Slot::GrpI, R::RAX);
            self.store(Slot::GrpO, R::RAX);
            self.store(Slot::GrpW, WTS);
            if let Some(off) = n.bias {
                self.mov_rr(R::RAX, WTS);
                self.add_reg_imm(R::RAX, off);
                self.store(Slot::GrpB, R::RAX);
            }
        }
        // `[s] = ` the group's (or the stage's) `from` + `v`.
        let base = |g: &mut Self, s: Slot, from: Result<Slot, R>, v: i64| {
            match from {
                Ok(slot) if grouped => g.load(R::RAX, slot),
                Ok(_) => g.mov_imm(R::RAX, 0),
                Err(reg) => g.mov_rr(R::RAX, reg),
            }
            g.add_reg_imm(R::RAX, v);
            g.store(s, R::RAX);
        };
        self.repeat(Count::Const(n.groups), Ctr::Slot(Slot::GrpC), &mut |g| {
            for r in &n.runs {
                let w = if grouped { Ok(Slot::GrpW) } else { Err(WTS) };
                base(g, Slot::ChW, w, r.base.weights);
                if let Some(off) = n.bias {
                    match grouped {
                        true => base(g, Slot::ChB, Ok(Slot::GrpB), r.base.bias),
                        false => base(g, Slot::ChB, Err(WTS), off + r.base.bias),
                    }
                }
                base(g, Slot::ChO, Ok(Slot::GrpO), r.base.output);
                if g.chunk != Chunk::Whole {
                    // This pass's chunk of every block's weights.
                    let chunk = (g.p.ci / g.p.k_chunks()) * r.run.tap_bytes(1);
                    g.load(R::RAX, Slot::CHUNK);
                    g.mul_imm(R::RAX, chunk as i64);
                    g.a.emit(I::with2(Code::Add_rm64_r64, slot(Slot::ChW), R::RAX));
                }
                g.repeat(Count::Const(r.count), Ctr::Slot(Slot::ChC), &mut |g| {
                    if n.next_weights == NextWeights::PerPass {
                        g.slot_plus(Slot::NEXT_W, Slot::ChW, r.step.weights);
                    }
                    inner(g, r);
                    g.add_imm(Ctr::Slot(Slot::ChO), r.step.output);
                    g.add_imm(Ctr::Slot(Slot::ChW), r.step.weights);
                    if n.bias.is_some() {
                        g.add_imm(Ctr::Slot(Slot::ChB), r.step.bias);
                    }
                });
            }
            if grouped {
                g.add_imm(Ctr::Slot(Slot::GrpI), n.group_step.input);
                g.add_imm(Ctr::Slot(Slot::GrpO), n.group_step.output);
                g.add_imm(Ctr::Slot(Slot::GrpW), n.group_step.weights);
                if n.bias.is_some() {
                    g.add_imm(Ctr::Slot(Slot::GrpB), n.group_step.bias);
                }
            }
        });
    }

    /// Channel blocks outermost, [`NextWeights::PerPass`]: after each
    /// pixel block, prefetch into L2 the next slice of the next channel
    /// block's weights, so that it arrives once, over one pass of this
    /// block's pixels (a call on all rows).
    fn prefetch_next_weights(&mut self, r: &RunLoop) {
        let passes = match &self.n.pixels {
            Pixels::Flat { px, .. } => (self.p.ho * self.p.wo).div_ceil(*px),
            Pixels::Rows(rows) => {
                let blocks = |b: &[PixelBlocks]| b.iter().map(|b| b.count).sum::<usize>();
                let (pairs, blocks_of_pair) = match &rows.pairs {
                    Some(r) => ((r.full.1 - r.full.0) / 2, blocks(&r.blocks)),
                    None => (0, 0),
                };
                (self.p.ho - 2 * pairs) * blocks(&rows.blocks) + pairs * blocks_of_pair
            }
        };
        // (A chunked reduction's pass prefetches that chunk.)
        let bytes = r.run.w_stride / self.p.k_chunks();
        let lines = bytes.div_ceil(64).div_ceil(passes.max(1));
        if lines == 0 || self.n.next_weights != NextWeights::PerPass {
            return;
        }
        self.load(R::RAX, Slot::NEXT_W);
        self.repeat(Count::Const(lines), Ctr::Reg(R::RCX), &mut |g| {
            g.a.emit(I::with1(
                Code::Prefetcht1_m8,
                iced_x86::MemoryOperand::with_base(R::RAX),
            ));
            g.add_reg_imm(R::RAX, 64);
        });
        self.store(Slot::NEXT_W, R::RAX);
    }

    /// All channel blocks (groups, runs, repetitions: [`LoopNest::runs`])
    /// of the pixel block at `[SegI]`, `[SegO]`.
    pub(super) fn channels(&mut self, k: &BlockArgs) {
        let n = self.n;
        let groups = n.groups > 1;
        if groups {
            self.load(R::RAX, Slot::SegI);
            self.store(Slot::GrpI, R::RAX);
            self.load(R::RAX, Slot::SegO);
            self.store(Slot::GrpO, R::RAX);
            self.store(Slot::GrpW, WTS);
            if let Some(off) = n.bias {
                self.mov_rr(R::RAX, WTS);
                self.add_reg_imm(R::RAX, off);
                self.store(Slot::GrpB, R::RAX);
            }
        }
        self.repeat(Count::Const(n.groups), Ctr::Slot(Slot::GrpC), &mut |g| {
            for r in &n.runs {
                if groups {
                    g.load(RUN_I, Slot::GrpI);
                    g.load(RUN_O, Slot::GrpO);
                    g.load(RUN_W, Slot::GrpW);
                } else {
                    g.load(RUN_I, Slot::SegI);
                    g.load(RUN_O, Slot::SegO);
                    g.mov_rr(RUN_W, WTS);
                }
                g.add_reg_imm(RUN_I, r.base.input);
                g.add_reg_imm(RUN_O, r.base.output);
                g.add_reg_imm(RUN_W, r.base.weights);
                if let Some(off) = n.bias {
                    if groups {
                        g.load(RUN_B, Slot::GrpB);
                        g.add_reg_imm(RUN_B, r.base.bias);
                    } else {
                        g.mov_rr(RUN_B, WTS);
                        g.add_reg_imm(RUN_B, off + r.base.bias);
                    }
                }
                if g.p.inputs_in_lanes {
                    // Its repetitions are its outputs: one block for all.
                    g.input_lanes_block(r, k);
                    continue;
                }
                g.repeat(Count::Const(r.count), Ctr::Slot(Slot::RunC), &mut |g| {
                    g.block(r.run, k);
                    g.add_reg_imm(RUN_I, r.step.input);
                    g.add_reg_imm(RUN_O, r.step.output);
                    g.add_reg_imm(RUN_W, r.step.weights);
                    if n.bias.is_some() {
                        g.add_reg_imm(RUN_B, r.step.bias);
                    }
                });
            }
            if groups {
                g.add_imm(Ctr::Slot(Slot::GrpI), n.group_step.input);
                g.add_imm(Ctr::Slot(Slot::GrpO), n.group_step.output);
                g.add_imm(Ctr::Slot(Slot::GrpW), n.group_step.weights);
                if n.bias.is_some() {
                    g.add_imm(Ctr::Slot(Slot::GrpB), n.group_step.bias);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{any_plan, emitted};
    use super::super::{Count, Ctr, Slot};
    use crate::Isa;
    use iced_x86::{Code, Register as R};

    /// A body `repeat` runs: one recognisable instruction.
    fn body(g: &mut super::super::Gen) {
        g.a.emit(iced_x86::Instruction::with2(
            Code::Add_rm64_imm32,
            R::RSI,
            7,
        ));
    }

    #[test]
    fn a_count_of_zero_or_one_emits_no_loop() {
        let p = any_plan(Isa::Avx2);
        let none = emitted(&p, Isa::Avx2, |g| {
            g.repeat(Count::Const(0), Ctr::Reg(R::RCX), &mut body)
        });
        assert!(none.is_empty());
        let once = emitted(&p, Isa::Avx2, |g| {
            g.repeat(Count::Const(1), Ctr::Reg(R::RCX), &mut body)
        });
        assert_eq!(once.len(), 1);
        assert_eq!(once[0].immediate32(), 7);
    }

    /// `n` in the counter, the body, `dec`, and `jne` back to the body.
    #[test]
    fn a_known_count_loops_tested_at_the_bottom() {
        let p = any_plan(Isa::Avx2);
        let ins = emitted(&p, Isa::Avx2, |g| {
            g.repeat(Count::Const(5), Ctr::Reg(R::RCX), &mut body)
        });
        let [init, add, dec, jne] = &ins[..] else {
            panic!("{ins:?}");
        };
        assert_eq!((init.op0_register(), init.immediate32()), (R::RCX, 5));
        assert_eq!(add.immediate32(), 7);
        assert_eq!((dec.code(), dec.op0_register()), (Code::Dec_rm64, R::RCX));
        assert_eq!(jne.code(), Code::Jne_rel8_64);
        assert_eq!(jne.near_branch_target(), add.ip());
    }

    /// A count known only at run time may be 0: tested at the top too,
    /// jumping past the loop; the counter in a slot.
    #[test]
    fn a_run_time_count_is_tested_at_the_top_too() {
        let p = any_plan(Isa::Avx512);
        let ins = emitted(&p, Isa::Avx512, |g| {
            g.repeat(Count::Slot(Slot::Nky), Ctr::Slot(Slot::SegC), &mut body)
        });
        let [load, store, test, je, add, dec, jne] = &ins[..] else {
            panic!("{ins:?}");
        };
        let at = |s: Slot| super::super::slot(s).displacement as u64;
        assert_eq!(load.memory_displacement64(), at(Slot::Nky));
        assert_eq!(store.memory_displacement64(), at(Slot::SegC));
        assert_eq!(store.op1_register(), load.op0_register());
        assert_eq!(test.code(), Code::Test_rm64_r64);
        assert_eq!(je.code(), Code::Je_rel32_64);
        assert_eq!(je.near_branch_target(), jne.ip() + jne.len() as u64);
        assert_eq!(add.immediate32(), 7);
        assert_eq!(dec.memory_displacement64(), at(Slot::SegC));
        assert_eq!(jne.near_branch_target(), add.ip());
    }
}
