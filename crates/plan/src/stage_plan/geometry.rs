//! Column geometry of a stage: which kernel taps each output column
//! reads ([`tap_range`]; the border classes, [`Segment`]), the register
//! blocks of a row ([`StagePlan::col_blocks`]), the columns run as vectors
//! along the row ([`StagePlan::row_vectors`]), channel vectors with
//! overlapping tails ([`positions`]), and flat stages, whose functions
//! take pixels rather than rows ([`is_flat`]).

use super::packing::row_weights_ok;
use super::stage::{StagePlan, Strategy};
use super::target::Target;
use convjit_ir::{Stage, StageKind};

/// Valid kernel positions `k` (`0 <= o*s + k*d - p < n`) as `(k0, count)`.
pub fn tap_range(o: usize, s: usize, d: usize, p: usize, k: usize, n: usize) -> (usize, usize) {
    let base = (o * s) as i64 - p as i64;
    let valid = |t: usize| {
        let i = base + (t * d) as i64;
        i >= 0 && i < n as i64
    };
    match ((0..k).find(|&t| valid(t)), (0..k).rev().find(|&t| valid(t))) {
        (Some(a), Some(b)) => (a, b - a + 1),
        _ => (0, 0),
    }
}

/// Output columns `a..b` that all read the kernel columns `kx0..kx0+nkx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    /// First output column.
    pub a: usize,
    /// One past the last output column.
    pub b: usize,
    /// First valid kernel column.
    pub kx0: usize,
    /// Valid kernel columns.
    pub nkx: usize,
}

/// The output columns of `stage`'s rows in [`Segment`]s, left to right:
/// consecutive columns that read the same kernel columns form one (the
/// left border's columns each their own where padding cuts different
/// taps, then the interior, then the right border's).
pub(super) fn segments(stage: &Stage) -> Vec<Segment> {
    let [_, kw] = stage.kernel;
    let (sw, dil_w, pl, w) = (
        stage.stride[1],
        stage.dilation[1],
        stage.padding.left,
        stage.input.w,
    );
    let mut segments: Vec<Segment> = Vec::new();
    for ox in 0..stage.output.w {
        let (kx0, nkx) = tap_range(ox, sw, dil_w, pl, kw, w);
        match segments.last_mut() {
            Some(s) if s.kx0 == kx0 && s.nkx == nkx => s.b = ox + 1,
            _ => segments.push(Segment {
                a: ox,
                b: ox + 1,
                kx0,
                nkx,
            }),
        }
    }
    segments
}

/// A 1x1 stride-1 unpadded conv or pointwise stage is *flat*: its pixels
/// are independent, so its function takes a range of pixels (in row-major
/// order) rather than of rows, and its register blocks run on across rows
/// (14x14: 49 blocks of 4 pixels rather than 4+4+4+2 per row).
pub fn is_flat(stage: &Stage) -> bool {
    let p = stage.padding;
    let unpadded = p.top == 0 && p.bottom == 0 && p.left == 0 && p.right == 0;
    let reduce = matches!(
        stage.kind,
        StageKind::Conv { .. } | StageKind::Pointwise { .. }
    );
    reduce && stage.kernel == [1, 1] && stage.stride == [1, 1] && unpadded
}

/// The `(row0, rows)` arguments that make `stage`'s function compute its
/// output rows `a..b`: pixels for a flat stage ([`is_flat`]), else rows.
pub fn call_range(stage: &Stage, a: usize, b: usize) -> (usize, usize) {
    if is_flat(stage) {
        let w = stage.output.w;
        (a * w, (b - a) * w)
    } else {
        (a, b - a)
    }
}

/// Vector start offsets covering `n` channels with vectors of `lanes`:
/// `0, lanes, 2*lanes, ...`; when `n` is not a multiple of `lanes` (and at
/// least `lanes`) the last vector overlaps the one before it and ends
/// exactly at `n`, so no load or store leaves the channel range. `n <
/// lanes` gives one partial vector `(0, n)`. Returns `(start, valid_lanes)`.
pub fn positions(n: usize, lanes: usize) -> Vec<(usize, usize)> {
    if n < lanes {
        return vec![(0, n)];
    }
    let mut v: Vec<(usize, usize)> = (0..n / lanes).map(|i| (i * lanes, lanes)).collect();
    if !n.is_multiple_of(lanes) {
        v.push((n - lanes, lanes));
    }
    v
}

/// `count` consecutive register blocks of output columns starting at
/// `start`, each of `cols.len()` pixels with the valid kernel columns
/// `cols[px] = (kx0, nkx)` (the same for every repetition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColBlock {
    /// First output column of the first block.
    pub start: usize,
    /// Consecutive blocks alike.
    pub count: usize,
    /// Each pixel's valid kernel columns `(kx0, nkx)`.
    pub cols: Vec<(usize, usize)>,
}

impl StagePlan {
    /// Depthwise: an output row cut into register blocks of at most
    /// `sched.px` pixels, each pixel with its own valid kernel
    /// columns, so border pixels share a block with interior ones instead
    /// of forming short, latency-bound blocks of their own. Consecutive
    /// blocks with equal columns become one repeated block.
    pub fn col_blocks(&self) -> Vec<ColBlock> {
        self.col_blocks_in(0, self.wo)
    }

    /// A one-channel depthwise stage (a grey image's filter) on a direct
    /// generator: the output columns `a..b` whose kernel columns are all
    /// valid, to be computed with vectors along the row (16 pixels a
    /// vector, each tap's weight broadcast) rather than one lane of a
    /// channel vector per pixel; the border columns keep the per-pixel
    /// code. `None` where the row has fewer such columns than lanes, or
    /// for strided columns.
    pub fn row_vectors(&self) -> Option<(usize, usize)> {
        let one = self.strategy == Strategy::DwChannels && self.ci == 1 && self.co == 1;
        let one = one && self.sw == 1 && row_one_ok(self.kw, &self.target);
        if !one && self.row_weights_off.is_none() {
            return None;
        }
        let m = self.row_multiplier;
        let full = |ox: usize| {
            tap_range(ox, self.sw, self.dil_w, self.pl, self.kw, self.w) == (0, self.kw)
        };
        let a = (0..self.wo).find(|&ox| full(ox))?;
        let b = (a..self.wo).find(|&ox| !full(ox)).unwrap_or(self.wo);
        ((b - a) * self.ci * m >= self.sched.lanes).then_some((a, b))
    }

    /// [`StagePlan::col_blocks`] of the output columns `a..b`.
    pub fn col_blocks_in(&self, a: usize, b: usize) -> Vec<ColBlock> {
        self.col_blocks_of(a, b, self.sched.px)
    }

    /// A direct generator's conv rows two at a time: the column blocks of
    /// one row of a pair, of at most half the schedule's pixels, where a
    /// pair of rows then takes fewer blocks than two rows apart. Each
    /// block reads its weights once for up to twice the pixels: 7-wide
    /// rows of a 3x3 on 512 channels ran at 65% of the FMA peak, 14-wide
    /// ones at 82%. `None` for other stages, or where fewer than two rows
    /// read every kernel row ([`StagePlan::full_rows`]).
    pub fn pair_col_blocks(&self) -> Option<Vec<ColBlock>> {
        let (px, wo) = (self.sched.px, self.wo);
        let conv = self.strategy == Strategy::Reduce
            && self.target.direct()
            && !self.flat
            && !self.inputs_in_lanes;
        let (a, b) = self.full_rows();
        if !conv || px < 2 || b < a + 2 || wo.div_ceil(px / 2) >= 2 * wo.div_ceil(px) {
            return None;
        }
        Some(self.col_blocks_of(0, wo, px / 2))
    }

    /// The output rows `a..b` that read every kernel row (`a == b`: none).
    pub fn full_rows(&self) -> (usize, usize) {
        let full = |oy: usize| {
            tap_range(oy, self.sh, self.dil_h, self.pt, self.kh, self.h) == (0, self.kh)
        };
        let a = (0..self.ho).find(|&oy| full(oy)).unwrap_or(self.ho);
        let b = (a..self.ho).find(|&oy| !full(oy)).unwrap_or(self.ho);
        (a, b)
    }

    /// The output columns `a..b` in blocks of at most `most` pixels.
    fn col_blocks_of(&self, a: usize, b: usize, most: usize) -> Vec<ColBlock> {
        if b <= a {
            return Vec::new();
        }
        // Blocks of near-equal size: fewer accumulators than the schedule
        // allows in every block rather than a short last one.
        let n = (b - a).div_ceil(most.max(1));
        let px = (b - a).div_ceil(n);
        let mut blocks: Vec<ColBlock> = Vec::new();
        let mut start = a;
        while start < b {
            let end = (start + px).min(b);
            let cols: Vec<(usize, usize)> = (start..end)
                .map(|ox| tap_range(ox, self.sw, self.dil_w, self.pl, self.kw, self.w))
                .collect();
            match blocks.last_mut() {
                Some(b) if b.cols == cols => b.count += 1,
                _ => blocks.push(ColBlock {
                    start,
                    count: 1,
                    cols,
                }),
            }
            start = end;
        }
        blocks
    }
}

/// Vectors per block of a few-channel depthwise row (`c` channels, see
/// [`StagePlan::row_vectors`]): a multiple of the vectors after which the
/// channel pattern repeats (`c / gcd(c, lanes)`), so every repetition of
/// a block reads the same phases of the weights; 0 where that many
/// accumulators do not fit.
pub fn row_block_vectors(c: usize, t: &Target) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let period = c / gcd(c, t.lanes);
    let most = (t.vector_registers - 4).min(12);
    most / period * period
}

/// Whether a direct generator runs a one-channel depthwise row of `kw`
/// kernel columns (stride 1) as vectors along the row: a kernel row's
/// weights in registers beside at least 2 accumulators.
pub(super) fn row_one_ok(kw: usize, t: &Target) -> bool {
    t.direct() && kw + 6 <= t.vector_registers
}

/// The most outputs of a stage whose inputs go in the lanes
/// ([`inputs_in_lanes_ok`]): vectors over 4 outputs use a quarter of 16
/// lanes; more outputs leave fewer pixels a block (their accumulators
/// share the registers) and more sums to gather across lanes.
pub const MAX_IN_LANES_OUTPUTS: usize = 4;

/// Whether a direct generator runs `stage`, an ungrouped conv or
/// pointwise stage with 1 to [`MAX_IN_LANES_OUTPUTS`] output channels,
/// with vectors over its reduction ([`StagePlan::inputs_in_lanes`])
/// rather than over its few outputs (1-4 lanes of each FMA used). Not
/// where the plan runs tiles (AMX, or `vdpbf16ps` asked for every stage).
///
/// And only where a kernel row's run of inputs fills at least twice as
/// many lanes a vector as the outputs do: short runs pay for their masks
/// and the sums across lanes. Measured on Zen 5 (us, vectors over
/// outputs against inputs in lanes): runs of 3 to 3 outputs (a 3x3 on
/// one channel, a 1x1 on three to four) 84 -> 124 and 40 -> 92, of 5 to
/// 4 (5x5 stride 2) 51 -> 64; runs of 6 to 3 and 2 outputs 156 -> 125 and
/// 165 -> 93, of 3 to one output 22 -> 19, of 9 to one 233 -> 72.
pub fn inputs_in_lanes_ok(stage: &Stage, t: &Target) -> bool {
    let few_out = match stage.kind {
        StageKind::Conv { cout, groups: 1 } | StageKind::Pointwise { cout, groups: 1 } => {
            // With a dilation, a run is one kernel column's channels.
            let run = match stage.dilation[1] {
                1 => stage.kernel[1] * stage.input.c,
                _ => stage.input.c,
            };
            let fill = run as f64 / run.div_ceil(t.lanes) as f64;
            cout <= MAX_IN_LANES_OUTPUTS.min(t.lanes / 2) && fill >= 2.0 * cout as f64
        }
        _ => false,
    };
    let tiles = (t.tiles && super::tiles::tile_plan(stage).is_ok()) || t.dot_all;
    t.direct() && few_out && !tiles
}

/// Outputs of a one-channel stage that a direct generator runs as
/// vectors along the row ([`StagePlan::row_multiplier`]): each input pixel
/// feeds that many consecutive lanes, from a load of at least 4 pixels;
/// its `taps` per output packed as a vector each must fit
/// [`row_weights_ok`].
pub(super) fn row_multiplier_ok(m: usize, taps: usize, t: &Target) -> bool {
    t.direct() && matches!(m, 2 | 4) && t.lanes / m >= 4 && row_weights_ok(taps, 1, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_overlap_the_tail() {
        assert_eq!(positions(3, 4), [(0, 3)]);
        assert_eq!(positions(4, 4), [(0, 4)]);
        assert_eq!(positions(9, 4), [(0, 4), (4, 4), (5, 4)]);
        assert_eq!(positions(24, 16), [(0, 16), (8, 16)]);
    }

    #[test]
    fn tap_ranges_omit_padding() {
        // 3 taps, pad 1, input 5: first output sees taps 1..3, last taps 0..2.
        assert_eq!(tap_range(0, 1, 1, 1, 3, 5), (1, 2));
        assert_eq!(tap_range(2, 1, 1, 1, 3, 5), (0, 3));
        assert_eq!(tap_range(4, 1, 1, 1, 3, 5), (0, 2));
        // All padding.
        assert_eq!(tap_range(0, 1, 1, 9, 3, 5), (0, 0));
    }
}
