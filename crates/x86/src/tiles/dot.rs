//! A tile stage's reduction on `vdpbf16ps` (AVX512_BF16) instead of AMX
//! ([`convjit_plan::stage_plan::TilePlan::dot`]): the same converted
//! input, weights and epilogue; each accumulator tile's 16 pixels x 16
//! channels computed in zmm registers and stored where `TILESTORED`
//! would have put it.
//!
//! A pass holds 16 accumulators: 8 pixels x the two channel blocks of a
//! pair, or 16 pixels x the one block of an odd count's last; a 2x2 (or
//! smaller) block of tiles is 1 to 4 passes, run as loops (`r15` over
//! pixel blocks, `r8` over halves) so the code holds one pass. Per
//! channel pair `k` of a reduction chunk: the blocks' B tile rows `k`
//! (16 outputs x the pair) into zmm16-17, then per pixel `vdpbf16ps acc,
//! w, [a + 4k]{1to16}` (its pair broadcast). Pairs past the input
//! channels in the last chunk are skipped.
//!
//! Registers: rsi the pass's first pixel (converted), rdi the same moved
//! along the taps and chunks, rbx its accumulators in the scratch, r10,
//! r11 the B rows, rcx, rdx, rbp the kernel rows, columns and chunks.

use super::{imm32, slot, zmm, Slot, Tiles};
use crate::asm::bcst;
use convjit_plan::stage_plan::{B_TILE_BYTES, K_CHUNK, M_BLOCK, N_BLOCK};
use iced_x86::{Code, Instruction as I, Register as R};

/// Accumulators per pass (zmm0..15); the B rows follow.
const ACCS: usize = 16;

impl Tiles<'_> {
    /// The reduction of the block whose first pixel block's A tile is at
    /// rax (the second's at rax + r14): every tap of a conv (not `flat`),
    /// every chunk, into the scratch's accumulator tiles.
    pub(super) fn dot_reduction(&mut self) {
        let (p, t) = (self.p, self.t);
        let cp2 = (t.cp * 2) as i64;
        // Bytes from one computed pixel to the next in the converted input.
        let stride = match p.flat || t.grid {
            true => cp2,
            false => p.sw as i64 * cp2,
        };
        let blocks = if self.n_pair { 2 } else { 1 };
        let npx = ACCS / blocks;
        let tile = (M_BLOCK * N_BLOCK * 4) as i64;
        self.mov_rr(R::RSI, R::RAX);
        self.load(R::RBX, Slot::Scratch);
        self.add_imm(R::RBX, t.acc_offset as i64);
        // A grouped stage: the block's pairs from its group's first
        // channel.
        self.add_group_offset(R::RSI);
        let m_pair = self.m_pair;
        // Passes run in pixel order: past the block's `[Real]` positions
        // (the end of a chunk, or of an output row) they would compute
        // accumulators the epilogue never stores.
        let done = self.a.label();
        self.counted(R::R15, if m_pair { 2 } else { 1 }, |g| {
            g.counted(R::R8, blocks, |g| {
                g.a.emit(I::with2(Code::Cmp_rm64_imm32, slot(Slot::Real), 0i32));
                g.a.branch(Code::Jle_rel8_64, Code::Jle_rel32_64, done);
                g.dot_pass(npx, blocks, stride);
                g.a.emit(I::with2(Code::Sub_rm64_imm32, slot(Slot::Real), imm32(npx)));
                if blocks == 2 {
                    // The block's other 8 pixels.
                    g.add_imm(R::RSI, npx as i64 * stride);
                    g.add_imm(R::RBX, npx as i64 * 64);
                }
            });
            if m_pair {
                // The second pixel block: tiles 2 and 3.
                match blocks {
                    2 => g.add_imm(R::RBX, tile),
                    _ => {
                        g.a.emit(I::with2(Code::Add_r64_rm64, R::RSI, R::R14));
                        g.add_imm(R::RBX, 2 * tile);
                    }
                }
            }
        });
        self.a.bind(done);
    }

    /// One pass: `npx` pixels from rsi (`stride` bytes apart) x `blocks`
    /// channel blocks (`[N0]`, `[N1]`), over every tap and chunk, stored
    /// to rbx (block `b`'s tile `b` tiles on, a pixel's row 64 bytes).
    fn dot_pass(&mut self, npx: usize, blocks: usize, stride: i64) {
        let (p, t) = (self.p, self.t);
        let cp2 = (t.cp * 2) as i64;
        let acc = |j: usize, b: usize| zmm(j * blocks + b);
        self.b_pointers();
        self.mov_rr(R::RDI, R::RSI);
        for i in 0..npx * blocks {
            self.a.emit(I::with3(
                Code::EVEX_Vpxord_zmm_k1z_zmm_zmmm512b32,
                zmm(i),
                zmm(i),
                zmm(i),
            ));
        }
        let chunks = t.red_chunks;
        if p.flat {
            self.dot_chunks(npx, blocks, stride);
        } else {
            let kx_bytes = p.dil_w as i64 * cp2;
            let ky_back = (p.dil_h * t.staged_row_bytes) as i64 - p.kw as i64 * kx_bytes;
            self.counted(R::RCX, p.kh, |g| {
                g.counted(R::RDX, p.kw, |g| {
                    g.dot_chunks(npx, blocks, stride);
                    g.add_imm(R::RDI, kx_bytes - (chunks * 64) as i64);
                });
                g.add_imm(R::RDI, ky_back);
            });
        }
        for j in 0..npx {
            for b in 0..blocks {
                let at = (b * M_BLOCK * N_BLOCK * 4 + j * 64) as i64;
                let m = self.at(R::RBX, at);
                self.a
                    .emit(I::with2(Code::EVEX_Vmovups_zmmm512_k1z_zmm, m, acc(j, b)));
            }
        }
    }

    /// One tap's chunks: the full ones in a loop, the last (where its
    /// pairs do not all hold channels) alone with its pairs; advances rdi
    /// by 64 bytes a chunk and r10, r11 by a chunk's B tiles.
    fn dot_chunks(&mut self, npx: usize, blocks: usize, stride: i64) {
        let t = self.t;
        let full_pairs = K_CHUNK / 2;
        let tail = t.tail_pairs;
        let full = t.red_chunks - usize::from(tail < full_pairs);
        let step = (t.n_blocks * B_TILE_BYTES) as i64;
        let next = |g: &mut Self| {
            g.add_imm(R::RDI, 64);
            g.add_imm(R::R10, step);
            if blocks == 2 {
                g.add_imm(R::R11, step);
            }
        };
        self.counted(R::RBP, full, |g| {
            g.dot_pairs(full_pairs, npx, blocks, stride);
            next(g);
        });
        if tail < full_pairs {
            self.dot_pairs(tail, npx, blocks, stride);
            next(self);
        }
    }

    /// Pairs `0..pairs` of the chunk at rdi (B rows at r10, r11).
    fn dot_pairs(&mut self, pairs: usize, npx: usize, blocks: usize, stride: i64) {
        let w = [zmm(ACCS), zmm(ACCS + 1)];
        for k in 0..pairs {
            let row = (k * 64) as i64;
            for (b, base) in [R::R10, R::R11].into_iter().take(blocks).enumerate() {
                let m = self.at(base, row);
                self.a
                    .emit(I::with2(Code::EVEX_Vmovups_zmm_k1z_zmmm512, w[b], m));
            }
            for j in 0..npx {
                // Pixel j's pair k: offsets bounded by 16 pixels of the
                // converted rows (within the tile scratch).
                let a = bcst(R::RDI, imm32(j * stride as usize + 4 * k));
                for (b, &wb) in w.iter().enumerate().take(blocks) {
                    self.a.emit(I::with3(
                        Code::EVEX_Vdpbf16ps_zmm_k1z_zmm_zmmm512b32,
                        zmm(j * blocks + b),
                        wb,
                        a,
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::tiles::emit_tiles;
    use convjit_plan::stage_plan::{plan_for, Target};
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    const DOT: Target = Target {
        dot: true,
        dot_all: true,
        ..Target::AVX512
    };

    /// The dot functions use no tile instruction and multiply with
    /// `vdpbf16ps`, one broadcast operand each; a stage of 3 input
    /// channels runs 2 pairs a tap (9 taps, 16 accumulators a pass: 288
    /// products in the pass body), not 16.
    #[test]
    fn dot_functions_use_no_tiles_and_skip_empty_pairs() {
        for src in [
            "layer a { input 14x14x40\n p: pointwise 50, bias, relu6 }",
            "layer b { input 19x37x3\n c: conv 3x3 -> 8, stride 2x2, pad same }",
            "layer c { input 17x17x32\n c: conv 3x3 -> 32, groups 2, pad same, residual }",
        ] {
            let layer = convjit_ir::compile_source(src).unwrap().remove(0);
            let p = plan_for(&layer.stages[0], &DOT);
            let t = p.tiles.as_ref().expect("a dot plan");
            assert!(t.dot, "{src}");
            let code = emit_tiles(&p).expect("encodes");
            let ins: Vec<_> = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE)
                .into_iter()
                .collect();
            assert!(ins.iter().all(|i| !i.is_invalid()), "{src}");
            let count = |m: Mnemonic| ins.iter().filter(|i| i.mnemonic() == m).count();
            assert_eq!(count(Mnemonic::Ldtilecfg) + count(Mnemonic::Tdpbf16ps), 0);
            assert_eq!(
                count(Mnemonic::Tilerelease) + count(Mnemonic::Tilestored),
                0
            );
            let dots: Vec<_> = ins
                .iter()
                .filter(|i| i.mnemonic() == Mnemonic::Vdpbf16ps)
                .collect();
            assert!(dots.iter().all(|i| i.is_broadcast()), "{src}");
            if src.starts_with("layer b") {
                // One column block of 8 outputs (alone): 16 pixels a pass,
                // 2 pairs, per body; a body per pixel block pair (2 of 1
                // and 1 pixel blocks for 19 outputs... 10 columns: 1 block).
                assert_eq!(t.tail_pairs, 2);
                assert_eq!(dots.len() % (16 * 2), 0, "{}", dots.len());
            }
        }
    }
}
