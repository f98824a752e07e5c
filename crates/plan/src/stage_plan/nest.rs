//! The loop nest of a stage function as data ([`LoopNest`], made by
//! [`StagePlan::nest`]), which every generator emits and none decides:
//! the loops in order, each with its compile-time trip count and the byte
//! offsets of the pointers it moves, down to the register blocks; and per
//! register block, the taps of one kernel row ([`StagePlan::reduction`]
//! for conv and pointwise, [`StagePlan::dw_taps`] and
//! [`StagePlan::dw_input_columns`] for depthwise).
//!
//! ```text
//! [for each group, run, repetition]   channels_outer: LoopNest::runs
//!   Pixels::Flat: the call's pixels in blocks of px
//!   Pixels::Rows: for each output row of the call, or two (RowPairs)
//!       (its valid kernel rows: all, or computed at run time: KernelRows)
//!     [row vectors a..b]              a direct generator's (Rows::row_vectors)
//!     for each PixelBlocks            count blocks of npx pixels, their columns
//!       [for each group, run, repetition]   unless channels_outer
//!         register block: bias, for each valid kernel row its taps, store
//! ```
//!
//! What a generator adds is its own: instructions and registers, where
//! run-time values live (the output row, its first valid kernel row), how
//! a reduction is unrolled, and what it does beyond the nest (the x86
//! generators' row vectors, row pairs and prefetches).

use super::geometry::ColBlock;
use super::runs::Run;
use super::stage::{StagePlan, Strategy};

/// Byte offsets of the four pointers a channel loop moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// Of the input.
    pub input: i64,
    /// Of the output.
    pub output: i64,
    /// Of the packed weights.
    pub weights: i64,
    /// Of the packed bias.
    pub bias: i64,
}

/// How the next channel block's weights are prefetched into L2 while
/// this block's pixels are computed (channel blocks outermost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextWeights {
    /// Each reduction step prefetches the line one block on from the
    /// weights it loads: the next block arrives during the first pass
    /// over the pixels, and every pass touches it again.
    PerStep,
    /// After each pixel block, the next slice of the next block: it
    /// arrives once, over a whole pass, for blocks whose two copies would
    /// crowd L2 (touched every pass, the next evicts the current).
    PerPass,
}

/// The repetitions of one channel run ([`Run`]) in a channel group.
#[derive(Clone, Debug)]
pub struct RunLoop<'p> {
    /// The run: its register block's units.
    pub run: &'p Run,
    /// Repetitions.
    pub count: usize,
    /// The first repetition's pointers from the group's (the input and
    /// output from the pixel block's, the weights from the packed
    /// weights', the bias from the packed bias').
    pub base: Offsets,
    /// From one repetition to the next.
    pub step: Offsets,
}

/// The stage function's loops, outermost first (see the module's
/// sketch).
#[derive(Clone, Debug)]
pub struct LoopNest<'p> {
    /// Conv/pointwise weights beyond L2: the groups and run repetitions
    /// are the outermost loops, each over every pixel block of the call
    /// ([`StagePlan::channels_outer`]); otherwise every pixel block runs
    /// every group, run and repetition.
    pub channels_outer: bool,
    /// With `channels_outer`, how a direct generator prefetches the next
    /// channel block's weights into L2 ([`StagePlan::next_weights`]).
    pub next_weights: NextWeights,
    /// Channel groups ([`StagePlan::groups`]), each over all the runs.
    pub groups: usize,
    /// From one group to the next.
    pub group_step: Offsets,
    /// Byte offset of the packed bias from the packed weights, if any.
    pub bias: Option<i64>,
    /// The runs of a group, in order.
    pub runs: Vec<RunLoop<'p>>,
    /// The pixel loops.
    pub pixels: Pixels,
    /// Bytes from the input of one kernel row to the next (`dil_h` input
    /// rows).
    pub in_kernel_row: i64,
}

/// The loops over the output pixels of a call.
#[derive(Clone, Debug)]
pub enum Pixels {
    /// A flat stage ([`StagePlan::flat`]): the call's range of pixels in
    /// blocks of `px` (the last one moved back to end at the range's end,
    /// recomputing a few pixels), a range shorter than `px` pixel by pixel;
    /// each block is [`Block::flat`].
    Flat {
        /// Pixels per block.
        px: usize,
        /// Bytes per input pixel.
        in_px: i64,
        /// Bytes per output pixel.
        out_px: i64,
    },
    /// Output rows one at a time.
    Rows(Rows),
}

/// One output row's loops ([`Pixels::Rows`]).
#[derive(Clone, Debug)]
pub struct Rows {
    /// Which kernel rows a row reads.
    pub kernel_rows: KernelRows,
    /// Bytes per input row.
    pub in_row: i64,
    /// Bytes per output row.
    pub out_row: i64,
    /// Output columns `a..b` a direct generator runs as vectors along
    /// the row ([`StagePlan::row_vectors`]: few-channel depthwise rows),
    /// not in [`Rows::blocks`]; never for Cranelift.
    pub row_vectors: Option<(usize, usize)>,
    /// The row's register blocks, left to right.
    pub blocks: Vec<PixelBlocks>,
    /// Rows two at a time, where a direct generator's conv rows are
    /// narrow ([`StagePlan::pair_col_blocks`]).
    pub pairs: Option<RowPairs>,
}

/// Two output rows in each register block ([`Rows::pairs`]): a row `oy`
/// with `full.0 <= oy` and `oy + 1 < full.1`, and the row below it, both
/// reading every kernel row; other rows one at a time.
#[derive(Clone, Debug)]
pub struct RowPairs {
    /// The output rows `a..b` that read every kernel row.
    pub full: (usize, usize),
    /// Input bytes from a pair's first row to its second (`sh` rows).
    pub in_rows: i64,
    /// The blocks of a pair, left to right: a block of `npx` pixels is
    /// `npx / 2` of the first row, then the same columns of the second;
    /// its offsets and steps are the first row's.
    pub blocks: Vec<PixelBlocks>,
}

/// The kernel rows an output row reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelRows {
    /// All `kh` of them, for every output row (conv and pointwise where
    /// [`StagePlan::rows_full`]): output row `oy` starts at input row
    /// `oy * sh`.
    All,
    /// Those valid for the output row, computed at run time: `ky0` the
    /// first (`ceil(max(pt - oy*sh, 0) / dil_h)`), up to
    /// `min(floor((h - 1 + pt - oy*sh) / dil_h) + 1, kh)` (none if that is
    /// negative); the row's input starts at the input row of `ky0`, its
    /// weights at tap `ky0 * kw`. Depthwise rows always: one body serves
    /// border and interior rows.
    PerRow,
}

/// What a register block computes: `npx` consecutive output pixels, and
/// the kernel columns they read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Output pixels.
    pub npx: usize,
    /// Their valid kernel columns.
    pub cols: BlockCols,
}

impl Block {
    /// A block of a flat stage: `npx` pixels of a 1x1 kernel.
    pub fn flat(npx: usize) -> Block {
        Block {
            npx,
            cols: BlockCols::Same { kx0: 0, nkx: 1 },
        }
    }
}

/// The valid kernel columns of a block's pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockCols {
    /// Every pixel reads `kx0..kx0 + nkx` (conv and pointwise): the
    /// block's input and weights start at column `kx0`.
    Same {
        /// First valid kernel column.
        kx0: usize,
        /// Valid kernel columns (0: the block is its bias).
        nkx: usize,
    },
    /// Each pixel its own `(kx0, nkx)` (every depthwise block, a direct
    /// generator's conv block with border pixels): the block's input and
    /// weights start at column 0.
    PerPixel(Vec<(usize, usize)>),
}

impl BlockCols {
    /// The kernel column the block's input and weight pointers start at.
    pub fn kx0(&self) -> usize {
        match *self {
            BlockCols::Same { kx0, .. } => kx0,
            BlockCols::PerPixel(_) => 0,
        }
    }
}

/// `count` consecutive register blocks alike along a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PixelBlocks {
    /// First output column of the first block.
    pub start: usize,
    /// Consecutive blocks.
    pub count: usize,
    /// Each block's pixels and kernel columns.
    pub block: Block,
    /// Bytes from the input row of the row's first valid kernel row to
    /// the first block's input at its first kernel column
    /// ([`BlockCols::kx0`]); negative where that column is padding.
    pub in_off: i64,
    /// Bytes from the output row to the first block's output.
    pub out_off: i64,
    /// Input bytes from one block to the next.
    pub in_step: i64,
    /// Output bytes from one block to the next.
    pub out_step: i64,
}

impl StagePlan {
    /// The loop nest of this plan's stage function.
    pub fn nest(&self) -> LoopNest<'_> {
        let b = |floats: usize| (floats * 4) as i64;
        // Input and output values: 4 bytes, or 2 stored as bf16.
        let bi = |values: usize| (values * self.in_bytes()) as i64;
        let bo = |values: usize| (values * self.out_bytes()) as i64;
        let runs = self
            .runs
            .iter()
            .map(|run| RunLoop {
                run,
                count: run.count,
                base: Offsets {
                    input: bi(run.in_base),
                    output: bo(run.out_base),
                    weights: run.w_base as i64,
                    bias: run.bias_base as i64,
                },
                step: Offsets {
                    input: bi(run.in_stride),
                    output: bo(run.out_stride),
                    weights: run.w_stride as i64,
                    bias: run.bias_stride as i64,
                },
            })
            .collect();
        let pixels = if self.flat {
            Pixels::Flat {
                px: self.sched.px,
                in_px: bi(self.ci),
                out_px: bo(self.co),
            }
        } else {
            Pixels::Rows(self.rows())
        };
        LoopNest {
            channels_outer: self.channels_outer(),
            next_weights: self.next_weights(),
            groups: self.groups,
            group_step: Offsets {
                input: bi(self.g_in),
                output: bo(self.g_out),
                weights: self.g_w as i64,
                bias: self.g_bias as i64,
            },
            bias: self.bias_off.map(b),
            runs,
            pixels,
            in_kernel_row: bi(self.dil_h * self.w * self.ci),
        }
    }

    /// The loops of an output row ([`Pixels::Rows`]). Its register
    /// blocks: depthwise rows, and a direct generator's conv rows, in
    /// [`StagePlan::col_blocks`] (blocks of near-equal width, border
    /// pixels among interior ones: full blocks keep the FMA pipes busy;
    /// 7x7 on 17x17 has 7 column classes); Cranelift's conv rows in
    /// blocks of `px` pixels of one [`StagePlan::segments`] each (then
    /// the segment's remainder), every pixel of a block reading the same
    /// kernel columns.
    fn rows(&self) -> Rows {
        let reduce = self.strategy == Strategy::Reduce;
        let row_vectors = self.row_vectors();
        let blocks = match row_vectors {
            Some((a, b)) => [self.col_blocks_in(0, a), self.col_blocks_in(b, self.wo)].concat(),
            None if reduce && !self.target.direct() => return self.segment_rows(),
            None => self.col_blocks(),
        };
        let blocks = blocks.into_iter().map(|c| self.pixel_blocks(c)).collect();
        Rows {
            kernel_rows: self.kernel_rows(),
            in_row: self.in_row_bytes(),
            out_row: (self.wo * self.co * self.out_bytes()) as i64,
            row_vectors,
            blocks,
            pairs: self.row_pairs(),
        }
    }

    /// [`Rows::pairs`]: each pair block a row's block with its pixels
    /// again on the next row.
    fn row_pairs(&self) -> Option<RowPairs> {
        let blocks = self.pair_col_blocks()?;
        let blocks = blocks
            .into_iter()
            .map(|c| {
                let mut b = self.pixel_blocks(c);
                b.block.npx *= 2;
                if let BlockCols::PerPixel(cols) = &mut b.block.cols {
                    cols.extend_from_within(..);
                }
                b
            })
            .collect();
        Some(RowPairs {
            full: self.full_rows(),
            in_rows: self.sh as i64 * self.in_row_bytes(),
            blocks,
        })
    }

    /// Which kernel rows an output row reads: all where every row reads
    /// all (conv, pointwise), else per row.
    fn kernel_rows(&self) -> KernelRows {
        if self.strategy == Strategy::Reduce && self.rows_full {
            KernelRows::All
        } else {
            KernelRows::PerRow
        }
    }

    /// [`StagePlan::rows`] in segments: per segment, full blocks of `px`
    /// pixels, then one of the rest.
    fn segment_rows(&self) -> Rows {
        let px = self.sched.px;
        let mut blocks = Vec::new();
        for seg in &self.segments {
            let n = seg.b - seg.a;
            for (count, npx, start) in [(n / px, px, seg.a), (1, n % px, seg.a + n / px * px)] {
                if count == 0 || npx == 0 {
                    continue;
                }
                let (kx0, nkx) = (seg.kx0, seg.nkx);
                blocks.push(self.place(start, count, npx, BlockCols::Same { kx0, nkx }));
            }
        }
        Rows {
            kernel_rows: self.kernel_rows(),
            in_row: self.in_row_bytes(),
            out_row: (self.wo * self.co * self.out_bytes()) as i64,
            row_vectors: None,
            blocks,
            pairs: None,
        }
    }

    /// A column block as [`PixelBlocks`]: one kernel-column range for
    /// its pixels where a conv block's all read the same.
    fn pixel_blocks(&self, c: ColBlock) -> PixelBlocks {
        let (npx, first) = (c.cols.len(), c.cols[0]);
        let same = self.strategy == Strategy::Reduce && c.cols.iter().all(|&x| x == first);
        let cols = if same {
            BlockCols::Same {
                kx0: first.0,
                nkx: first.1,
            }
        } else {
            BlockCols::PerPixel(c.cols)
        };
        self.place(c.start, c.count, npx, cols)
    }

    /// `count` blocks of `npx` pixels from output column `start`, their
    /// pointers' offsets and steps.
    fn place(&self, start: usize, count: usize, npx: usize, cols: BlockCols) -> PixelBlocks {
        let pixel_in = (self.ci * self.in_bytes()) as i64;
        let pixel_out = (self.co * self.out_bytes()) as i64;
        let column = (start * self.sw + cols.kx0() * self.dil_w) as i64 - self.pl as i64;
        PixelBlocks {
            start,
            count,
            in_off: column * pixel_in,
            out_off: start as i64 * pixel_out,
            in_step: (npx * self.sw) as i64 * pixel_in,
            out_step: npx as i64 * pixel_out,
            block: Block { npx, cols },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage_plan::geometry::tap_range;
    use crate::stage_plan::runs::InSrc;
    use crate::stage_plan::stage::plan_for;
    use crate::stage_plan::taps::*;
    use crate::stage_plan::target::Target;

    fn plan(src: &str, target: &Target) -> StagePlan {
        let layer = convjit_ir::compile_source(src).unwrap().remove(0);
        plan_for(&layer.stages[0], target)
    }

    fn rows<'n>(n: &'n LoopNest) -> &'n Rows {
        match &n.pixels {
            Pixels::Rows(r) => r,
            Pixels::Flat { .. } => panic!("a flat stage"),
        }
    }

    const CONV: &str = "layer c { input 5x6x3\n c: conv 3x3 -> 4, pad same }";

    /// The next channel block's weights arrive once per pass where two
    /// blocks would crowd L2 (Inception's 7x7: 802 KiB a block, 13%
    /// faster so), else during each step of the first pass (VGG's 3x3 on
    /// 512 channels: 590 KiB a block, 7% faster so).
    #[test]
    fn the_next_blocks_weights_arrive_per_pass_where_two_crowd_l2() {
        let l2 = crate::layer_plan::host_l2_bytes();
        let t = Target::AVX512;
        let inception = plan(
            "layer c { input 17x17x128\n c: conv 7x7 -> 128, pad same }",
            &t,
        );
        let pointwise = plan("layer p { input 14x14x512\n p: pointwise 512 }", &t);
        for p in [&inception, &pointwise] {
            assert!(p.channels_outer());
            let crowds = p.runs.iter().any(|r| 8 * r.w_stride > 3 * l2);
            let want = match crowds {
                true => NextWeights::PerPass,
                false => NextWeights::PerStep,
            };
            assert_eq!(p.nest().next_weights, want);
        }
        // 802 KiB blocks crowd any L2 under 2.1 MiB; 64 KiB ones none
        // over 170 KiB.
        if l2 <= 2 << 20 {
            assert_eq!(inception.nest().next_weights, NextWeights::PerPass);
        }
        assert_eq!(pointwise.nest().next_weights, NextWeights::PerStep);
    }

    /// Narrow conv rows run two at a time on a direct generator, where
    /// a pair takes fewer blocks than two rows: 7 columns one block of 14
    /// pixels (7 then the same 7 below), 17 columns three blocks of 10-12
    /// rather than two of 8-9 a row; never for Cranelift, wide rows,
    /// depthwise stages, or fewer than two rows reading every kernel row.
    #[test]
    fn narrow_conv_rows_run_in_pairs() {
        let t = Target::AVX512;
        let p = plan("layer c { input 7x7x64\n c: conv 3x3 -> 64, pad same }", &t);
        let pairs = rows(&p.nest()).pairs.clone().expect("pairs");
        assert_eq!(pairs.full, (1, 6));
        assert_eq!(pairs.in_rows, 7 * 64 * 4);
        let [b] = &pairs.blocks[..] else {
            panic!("{:?}", pairs.blocks)
        };
        assert_eq!((b.count, b.block.npx, b.in_step), (1, 14, 7 * 64 * 4));
        let BlockCols::PerPixel(cols) = &b.block.cols else {
            panic!("border columns")
        };
        assert_eq!(cols[..7], cols[7..]);
        // Two vectors a block (8-9 pixels) where a block of two vectors'
        // weights (802 KiB) may stay in L2; on a smaller L2 one vector of
        // up to 28 pixels, which a row of 17 fills alone.
        let p = plan(
            "layer c { input 17x17x128\n c: conv 7x7 -> 128, pad same }",
            &t,
        );
        let pairs = rows(&p.nest()).pairs.clone();
        if 49 * 128 * 2 * 16 * 4 <= crate::stage_plan::schedule::block_weight_bytes() {
            let pairs = pairs.expect("pairs");
            let npx: Vec<usize> = pairs.blocks.iter().map(|b| b.block.npx).collect();
            assert_eq!((pairs.full, npx), ((3, 14), vec![12, 12, 10]));
        } else {
            assert_eq!(p.sched.units, 1);
            assert!(pairs.is_none());
        }
        for (src, t) in [
            (
                "layer c { input 7x7x64\n c: conv 3x3 -> 64, pad same }",
                Target::CRANELIFT,
            ),
            (
                "layer c { input 56x56x64\n c: conv 3x3 -> 64, pad same }",
                Target::AVX512,
            ),
            (
                "layer c { input 7x7x64\n d: depthwise 3x3, pad same }",
                Target::AVX512,
            ),
            (
                "layer c { input 3x7x64\n c: conv 3x3 -> 64, pad same }",
                Target::AVX512,
            ),
        ] {
            let p = plan(src, &t);
            if let Pixels::Rows(r) = p.nest().pixels {
                assert!(r.pairs.is_none(), "{src}");
            }
        }
    }

    /// Cranelift cuts a conv row at its column segments: the border
    /// columns are blocks of their own, every pixel of a block reading
    /// the same kernel columns, its input at its first valid one.
    #[test]
    fn cranelift_conv_rows_are_cut_at_segments() {
        let p = plan(CONV, &Target::CRANELIFT);
        let n = p.nest();
        let r = rows(&n);
        // Padding above and below: kernel rows per output row.
        assert_eq!(r.kernel_rows, KernelRows::PerRow);
        assert_eq!((r.in_row, r.out_row), (6 * 3 * 4, 6 * 4 * 4));
        let first = &r.blocks[0];
        assert_eq!((first.start, first.count, first.block.npx), (0, 1, 1));
        assert_eq!(first.block.cols, BlockCols::Same { kx0: 1, nkx: 2 });
        // Output column 0's kernel column 1 reads input column 0.
        assert_eq!((first.in_off, first.out_off), (0, 0));
        let last = r.blocks.last().unwrap();
        assert_eq!((last.start, last.count, last.block.npx), (5, 1, 1));
        assert_eq!(last.block.cols, BlockCols::Same { kx0: 0, nkx: 2 });
        assert_eq!((last.in_off, last.out_off), (4 * 3 * 4, 5 * 4 * 4));
        let interior = &r.blocks[1..r.blocks.len() - 1];
        let mut at = 1;
        for b in interior {
            assert_eq!(b.start, at);
            assert_eq!(b.block.cols, BlockCols::Same { kx0: 0, nkx: 3 });
            let npx = b.block.npx as i64;
            assert_eq!((b.in_step, b.out_step), (npx * 3 * 4, npx * 4 * 4));
            at += b.count * b.block.npx;
        }
        assert_eq!(at, 5);
    }

    /// A direct generator's conv block mixes the border pixel with
    /// interior ones: per-pixel columns, its input at kernel column 0 of
    /// its first pixel (padding, never read), a reduction per kernel
    /// column over the pixels that read it.
    #[test]
    fn direct_conv_blocks_mix_border_and_interior_pixels() {
        let p = plan(CONV, &Target::AVX512);
        let n = p.nest();
        let first = &rows(&n).blocks[0];
        let BlockCols::PerPixel(cols) = &first.block.cols else {
            panic!("{first:?}");
        };
        assert_eq!(cols[..2], [(1, 2), (0, 3)]);
        assert_eq!(first.in_off, -3 * 4);
        let run = &p.runs[0];
        let tap = run.tap_bytes(3) as i64;
        let border = BlockCols::PerPixel(vec![(1, 2), (0, 3), (0, 2)]);
        let columns = |pixels: Vec<usize>, kx: i64| ColumnTaps {
            kx: kx as usize,
            pixels,
            in_off: kx * 3 * 4,
            w_off: kx * tap,
        };
        assert_eq!(
            p.reduction(run, &border),
            Reduction::Columns {
                len: 3,
                columns: vec![
                    columns(vec![1, 2], 0),
                    columns(vec![0, 1, 2], 1),
                    columns(vec![0, 1], 2),
                ],
            }
        );
    }

    /// Adjacent taps reading all channels are one reduction; dilated or
    /// grouped ones a loop over taps; a block whose columns are all
    /// padding reduces nothing.
    #[test]
    fn reductions_run_contiguous_taps_together() {
        let p = plan(CONV, &Target::CRANELIFT);
        let run = &p.runs[0];
        let same = |kx0, nkx| BlockCols::Same { kx0, nkx };
        assert_eq!(
            p.reduction(run, &same(0, 3)),
            Reduction::Contiguous { len: 9 }
        );
        assert_eq!(p.reduction(run, &same(0, 0)), Reduction::None);
        let dilated = plan(
            "layer a { input 9x10x6\n c: conv 4x3 -> 9, stride 2x1, dilation 1x2, pad same }",
            &Target::CRANELIFT,
        );
        let run = &dilated.runs[0];
        assert_eq!(
            dilated.reduction(run, &same(0, 3)),
            Reduction::Taps {
                taps: 3,
                len: 6,
                in_step: 2 * 6 * 4,
                w_step: run.tap_bytes(6) as i64,
            }
        );
        // One column is contiguous however dilated.
        assert_eq!(
            dilated.reduction(run, &same(1, 1)),
            Reduction::Contiguous { len: 6 }
        );
        let grouped = plan(
            "layer g { input 6x6x8\n g: conv 3x3 -> 8, groups 2, pad same }",
            &Target::AVX2,
        );
        let run = &grouped.runs[0];
        let Reduction::Taps { taps, len, .. } = grouped.reduction(run, &same(0, 3)) else {
            panic!("a group's taps are not adjacent");
        };
        assert_eq!((taps, len), (3, 4));
        let n = grouped.nest();
        assert_eq!(n.groups, 2);
        assert_eq!((n.group_step.input, n.group_step.output), (4 * 4, 4 * 4));
    }

    /// Depthwise taps at stride 2 and dilation 2: each pixel's tap at
    /// `(px * sw + kx * dil_w) * ci` floats, each unit's weight vector a
    /// tap's step apart; or by input column, shared by the (pixel, kernel
    /// column) pairs that read it.
    #[test]
    fn strided_dilated_depthwise_taps() {
        let p = plan(
            "layer d { input 9x9x8\n d: depthwise 3x3, stride 2, dilation 2, pad same }",
            &Target::AVX2,
        );
        let run = &p.runs[0];
        assert_eq!(run.units.len(), 1);
        let cols = [(1, 2), (0, 3)];
        let taps = p.dw_taps(run, &cols);
        assert_eq!(
            taps.inputs,
            [TapInput {
                src: InSrc::Vector(0),
                units: 0..1
            }]
        );
        let w = |kx: usize| (kx * run.w_step * 4) as i64;
        let px = |px: usize, kx: usize| (px, ((px * 2 + kx * 2) * 8 * 4) as i64);
        let want = [
            DwColumn {
                kx: 0,
                weights: vec![w(0)],
                pixels: vec![px(1, 0)],
            },
            DwColumn {
                kx: 1,
                weights: vec![w(1)],
                pixels: vec![px(0, 1), px(1, 1)],
            },
            DwColumn {
                kx: 2,
                weights: vec![w(2)],
                pixels: vec![px(0, 2), px(1, 2)],
            },
        ];
        assert_eq!(taps.columns, want);
        let by_input = p.dw_input_columns(run, &cols).unwrap();
        assert_eq!(by_input.weights, [w(0), w(1), w(2)]);
        let column = |c: usize, uses: Vec<(usize, usize)>| InputColumn {
            in_off: (c * 8 * 4) as i64,
            uses,
        };
        assert_eq!(
            by_input.columns,
            [
                column(2, vec![(0, 1), (1, 0)]),
                column(4, vec![(0, 2), (1, 1)]),
                column(6, vec![(1, 2)]),
            ]
        );
    }

    /// Depthwise rows always find their kernel rows at run time and give
    /// every block per-pixel columns; a conv whose rows all read the whole
    /// kernel does neither. Units of one channel's outputs share its input.
    #[test]
    fn depthwise_and_reduce_rows_differ() {
        let dw = plan(
            "layer d { input 6x20x8\n d: depthwise 3x3, multiplier 2 }",
            &Target::AVX2,
        );
        assert!(dw.rows_full);
        let n = dw.nest();
        let r = rows(&n);
        assert_eq!(r.kernel_rows, KernelRows::PerRow);
        assert!(r
            .blocks
            .iter()
            .all(|b| matches!(b.block.cols, BlockCols::PerPixel(_))));
        let run = &dw.runs[0];
        let taps = dw.dw_taps(run, &[(0, 3)]);
        assert_eq!(taps.inputs[0].units, 0..2, "{:?}", taps.inputs);
        assert!(dw.dw_input_columns(run, &[(0, 3)]).is_none());
        let conv = plan("layer c { input 6x20x8\n c: conv 3x3 -> 8 }", &Target::AVX2);
        let n = conv.nest();
        let r = rows(&n);
        assert_eq!(r.kernel_rows, KernelRows::All);
        assert!(r
            .blocks
            .iter()
            .all(|b| b.block.cols == BlockCols::Same { kx0: 0, nkx: 3 }));
        let flat = plan("layer p { input 6x20x8\n p: pointwise 8 }", &Target::AVX2);
        assert!(matches!(flat.nest().pixels, Pixels::Flat { px, .. } if px == flat.sched.px));
    }

    /// The valid `(pixel, kernel column)` taps of a block of `cols`.
    fn valid(cols: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = cols
            .iter()
            .enumerate()
            .flat_map(|(px, &(k0, n))| (k0..k0 + n).map(move |kx| (px, kx)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Every nest of every target: a row's blocks (and row vectors) cover
    /// its output columns once, left to right, each pixel with the kernel
    /// columns [`tap_range`] gives it and pointers at the columns they
    /// name; a block's kernel-row taps are exactly its pixels' valid taps,
    /// at their offsets.
    fn check(p: &StagePlan) -> Result<(), String> {
        let n = p.nest();
        let r = match &n.pixels {
            Pixels::Flat { .. } => return (p.flat).then_some(()).ok_or("flat".into()),
            Pixels::Rows(r) => r,
        };
        let reduce = p.strategy == Strategy::Reduce;
        if (r.kernel_rows == KernelRows::All) != (reduce && p.rows_full) {
            return Err(format!("kernel rows {:?}", r.kernel_rows));
        }
        let mut at = 0;
        let mut pieces: Vec<(usize, usize, Option<&PixelBlocks>)> = r
            .blocks
            .iter()
            .map(|b| (b.start, b.start + b.count * b.block.npx, Some(b)))
            .collect();
        pieces.extend(r.row_vectors.map(|(a, b)| (a, b, None)));
        pieces.sort_by_key(|x| x.0);
        for (a, b, blocks) in pieces {
            if a != at {
                return Err(format!("column {at}: a piece starts at {a}"));
            }
            at = b;
            let Some(blocks) = blocks else { continue };
            for i in 0..blocks.count {
                let start = blocks.start + i * blocks.block.npx;
                let cols: Vec<(usize, usize)> = (start..start + blocks.block.npx)
                    .map(|ox| tap_range(ox, p.sw, p.dil_w, p.pl, p.kw, p.w))
                    .collect();
                let have = match &blocks.block.cols {
                    BlockCols::Same { kx0, nkx } => vec![(*kx0, *nkx); cols.len()],
                    BlockCols::PerPixel(c) => c.clone(),
                };
                if have != cols {
                    return Err(format!("block at {start}: {have:?}, taps {cols:?}"));
                }
            }
            let kx0 = blocks.block.cols.kx0();
            let column = (blocks.start * p.sw + kx0 * p.dil_w) as i64 - p.pl as i64;
            let npx = blocks.block.npx as i64;
            let want = (
                column * (p.ci * p.in_bytes()) as i64,
                (blocks.start * p.co * p.out_bytes()) as i64,
                npx * (p.sw * p.ci * p.in_bytes()) as i64,
                npx * (p.co * p.out_bytes()) as i64,
            );
            let have = (
                blocks.in_off,
                blocks.out_off,
                blocks.in_step,
                blocks.out_step,
            );
            if have != want {
                return Err(format!("block at {}: {have:?}, not {want:?}", blocks.start));
            }
            for run in &p.runs {
                check_taps(p, run, &blocks.block.cols)?;
            }
        }
        if at != p.wo {
            return Err(format!("the row's pieces end at {at}, not {}", p.wo));
        }
        Ok(())
    }

    /// A block's taps of one kernel row for `run` (see [`check`]).
    fn check_taps(p: &StagePlan, run: &Run, cols: &BlockCols) -> Result<(), String> {
        let tap_bytes = run.tap_bytes(p.ci_per_tap) as i64;
        let in_at =
            |px: usize, kx: usize| ((px * p.sw + kx * p.dil_w) * p.ci * p.in_bytes()) as i64;
        match (p.strategy, cols) {
            (Strategy::Reduce, BlockCols::Same { nkx, .. }) => {
                let (cpt, nkx) = (p.ci_per_tap, *nkx);
                let ok = match p.reduction(run, cols) {
                    Reduction::None => nkx == 0,
                    Reduction::Contiguous { len } => {
                        len == nkx * cpt && (nkx == 1 || (p.dil_w == 1 && cpt == p.ci))
                    }
                    Reduction::Taps {
                        taps,
                        len,
                        in_step,
                        w_step,
                    } => (taps, len, in_step, w_step) == (nkx, cpt, in_at(0, 1), tap_bytes),
                    Reduction::Columns { .. } => false,
                };
                ok.then_some(()).ok_or(format!("{cols:?}"))
            }
            (Strategy::Reduce, BlockCols::PerPixel(c)) => {
                if !p.target.direct() {
                    return Err("Cranelift's conv blocks have one column range".into());
                }
                let Reduction::Columns { len, columns } = p.reduction(run, cols) else {
                    return Err(format!("{cols:?}"));
                };
                let mut taps = Vec::new();
                for t in &columns {
                    if (len, t.in_off, t.w_off)
                        != (p.ci_per_tap, in_at(0, t.kx), t.kx as i64 * tap_bytes)
                    {
                        return Err(format!("{t:?}"));
                    }
                    taps.extend(t.pixels.iter().map(|&px| (px, t.kx)));
                }
                taps.sort_unstable();
                (taps == valid(c))
                    .then_some(())
                    .ok_or(format!("{columns:?}"))
            }
            (_, BlockCols::Same { .. }) => Err("a depthwise block with one column range".into()),
            (_, BlockCols::PerPixel(c)) => check_dw_taps(p, run, c),
        }
    }

    /// A depthwise block's taps of one kernel row for `run`, its pixels
    /// reading `c` (see [`check`]).
    fn check_dw_taps(p: &StagePlan, run: &Run, c: &[(usize, usize)]) -> Result<(), String> {
        let in_at =
            |px: usize, kx: usize| ((px * p.sw + kx * p.dil_w) * p.ci * p.in_bytes()) as i64;
        let taps = p.dw_taps(run, c);
        let mut units = 0;
        for (i, t) in taps.inputs.iter().enumerate() {
            // Units reading one input are adjacent: one group each.
            let again = taps.inputs[i + 1..].iter().any(|u| u.src == t.src);
            if t.units.start != units || again {
                return Err(format!("{:?}", taps.inputs));
            }
            units = t.units.end;
        }
        let mut seen = Vec::new();
        for col in &taps.columns {
            let w: Vec<i64> = (0..run.units.len())
                .map(|u| (col.kx * run.w_step * 4 + run.unit_bytes(u)) as i64)
                .collect();
            if col.weights != w {
                return Err(format!("{col:?}"));
            }
            for &(px, off) in &col.pixels {
                if off != in_at(px, col.kx) {
                    return Err(format!("{col:?}"));
                }
                seen.push((px, col.kx));
            }
        }
        seen.sort_unstable();
        if units != run.units.len() || seen != valid(c) {
            return Err(format!("{taps:?}"));
        }
        if let Some(by_input) = p.dw_input_columns(run, c) {
            let mut seen = Vec::new();
            let mut last = -1;
            for column in &by_input.columns {
                if column.in_off <= last {
                    return Err(format!("{:?}", by_input.columns));
                }
                last = column.in_off;
                for &(px, kx) in &column.uses {
                    if in_at(px, kx) != column.in_off {
                        return Err(format!("{column:?}"));
                    }
                    seen.push((px, kx));
                }
            }
            seen.sort_unstable();
            if seen != valid(c) {
                return Err(format!("{:?}", by_input.columns));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// [`check`] holds for every stage of random layers on every target.
        #[test]
        fn every_nest_covers_each_column_with_its_taps(
            case in convjit_ir::random_layer::layer_case(convjit_ir::random_layer::Limits::PROPTEST),
        ) {
            let Ok(layers) = convjit_ir::compile_source(&case.src) else { return Ok(()) };
            for s in &layers[0].stages {
                for t in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                    let p = plan_for(s, &t);
                    if let Err(e) = check(&p) {
                        proptest::prop_assert!(false, "{} at {:?}: {e}", s.name, t.backend);
                    }
                }
            }
        }
    }

    /// The layers of the suite and the examples, whose row vectors,
    /// multipliers and wide kernels random layers rarely draw.
    #[test]
    fn every_suite_nest_covers_each_column_with_its_taps() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for dir in ["benches", "examples"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "conv") {
                    continue;
                }
                let src = std::fs::read_to_string(&path).unwrap();
                for layer in convjit_ir::compile_source(&src).unwrap() {
                    for s in &layer.stages {
                        for t in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                            let p = plan_for(s, &t);
                            if let Err(e) = check(&p) {
                                panic!(
                                    "{}: {} {} at {:?}: {e}",
                                    path.display(),
                                    layer.name,
                                    s.name,
                                    t.backend
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
