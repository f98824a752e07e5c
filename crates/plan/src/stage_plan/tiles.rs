//! AMX tiles for a bf16 conv or pointwise stage ([`TilePlan`]): the
//! reduction (taps x input channels) in chunks of 32 bf16 channels (one
//! 64-byte tile row), the output channels in blocks of 16 (one tile's
//! columns), the output pixels in blocks of 16 (one tile's rows).
//!
//! The stage function converts its input to bf16 in a scratch area (the
//! values are already bf16: the runtime rounded them, so the conversion
//! is exact) and runs `TDPBF16PS` on 2x2 accumulator tiles: two pixel
//! blocks by two channel blocks, each A tile (pixels x 32 channels) used
//! twice and each B tile (32 channels x 16 outputs) twice. Then bias,
//! activation and residual in f32 on the stored accumulators.
//!
//! - A flat stage (1x1, a range of pixels) converts a chunk of pixels at
//!   a time: `[P][Cp]` bf16.
//! - Any other converts, per chunk of output rows, the input rows their
//!   taps read into `[rows][Ws][Cp]` bf16 with zero columns for the
//!   padding: a tap's A tile is 16 pixels `sw` columns apart, a tile row
//!   stride of `sw * Cp * 2` bytes (any stride and dilation).
//!
//! Chunks are as large as [`TILE_STAGING_BYTES`] allows: each pair of
//! channel blocks then runs over all of a chunk's pixel blocks, its
//! weights read from cache after the first.
//!
//! Pixels past the row's (or the range's) end are computed from whatever
//! the scratch holds and never stored: a tile's rows are independent.
//!
//! Without AMX (`TilePlan::dot`, [`dot_plan`]) the same function runs
//! `vdpbf16ps` (AVX512_BF16) instead of the tile products: the same
//! conversion, chunks, blocks, packed weights and epilogue, each tile's
//! 16 x 16 accumulators computed in zmm registers (8 pixels x 2 channel
//! blocks, or 16 pixels x 1, per pass: 16 accumulators) and stored where
//! the epilogue reads the tiles. A B tile's row `k` is the 16 output
//! channels' weights of input channels `2k, 2k + 1`: the vector
//! `vdpbf16ps` multiplies with one pixel's pair broadcast
//! (`[a]{1to16}`). Its reduction skips the pairs past the input channels
//! (a stage of 3 channels runs 2 pairs a tap, not 16). Any channel counts;
//! grouped stages whose groups have an even number of input channels and
//! a multiple of 16 outputs: each channel block then lies in one group and
//! reduces that group's channels only (`TilePlan::group_blocks`), its
//! input pairs from the group's first channel (other groups' values, an
//! infinity say, never meet a zero weight).
//!
//! Grouped stages on AMX tiles ([`TilePlan::padded_groups`]): groups of at
//! least 16 input channels and a multiple of 16 outputs. A tile row reads
//! 32 channels whole (no pair can be skipped), so the conversion stores
//! each group's channels padded with zeros to whole chunks (`[pixel][G]
//! [ceil(Ci / G / 32) * 32]`): a group's chunks hold its channels and
//! zeros, never another group's (0 x inf would be NaN). Each channel block
//! lies in one group; its A tiles start at its group's padded channels.
//! Blocks run in pairs within a group; a group's odd last block alone.

use super::stage::StagePlan;
use super::target::Target;
use convjit_ir::{Stage, StageKind};

/// bf16 channels per tile row (64 bytes): one reduction chunk.
pub const K_CHUNK: usize = 32;
/// Output channels per accumulator tile (16 f32 columns).
pub const N_BLOCK: usize = 16;
/// Output pixels per tile (16 rows).
pub const M_BLOCK: usize = 16;
/// Bytes of one B tile: 16 rows of 16 channel pairs.
pub const B_TILE_BYTES: usize = 1024;
/// The most scratch an AMX stage function may need: its `Kh` converted
/// input rows and four accumulator tiles. Wider stages run as f32 code
/// on rounded values.
pub const MAX_TILE_SCRATCH: usize = 1 << 20;

/// Bytes of a channel-block pair's B tiles above which the reduction
/// prefetches them (twice Sapphire Rapids' 48 KiB L1d). Measured, bf16,
/// `bench --precision bf16`, with and without, two runs each: Inception's
/// 7x7 17x17x128 (392 KiB) 345 -> 290 us, a 5x5 28x28x128 (200 KiB)
/// 410-425 -> 356-378 us, a 3x3 14x14x256 (144 KiB) 156-160 -> 148-150 us;
/// 7x1+1x7 (56 KiB) unchanged; below, where the pair's tiles stay in L1, the
/// prefetches only cost: 3x3 56x56x64 (36 KiB) 162-169 -> 167-175 us, a
/// pointwise 512 -> 512 (32 KiB) 132-138 -> 150-155 us.
pub const PREFETCH_B_ABOVE: usize = 96 << 10;
/// Grid positions after a chunk's converted rows that its last pair of
/// pixel blocks may read (16 past the last computed position, 16 more for
/// the pair's second block, less than 16 of rounding): 64, to be safe.
pub const GRID_SLACK: usize = 64;
/// Converted input rows per chunk of output rows, at most (unless one
/// output row needs more): with a pair of channel blocks' weights, within
/// L2 (2 MiB on Sapphire Rapids).
pub const TILE_STAGING_BYTES: usize = 512 << 10;

/// How a stage runs on AMX tiles.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TilePlan {
    /// Input channels padded to [`K_CHUNK`].
    pub cp: usize,
    /// Reduction chunks per tap: `cp / K_CHUNK`.
    pub k_chunks: usize,
    /// Output channels computed (a thread's share, or all).
    pub co: usize,
    /// Channel blocks of [`N_BLOCK`]: `ceil(co / 16)`.
    pub n_blocks: usize,
    /// Pixel blocks per output row (not flat, not a grid): `ceil(wo / 16)`.
    pub m_blocks: usize,
    /// Stride 1 both ways (not flat): the converted rows are one grid of
    /// `staged_width` pixels a row, and pixel blocks run along it across
    /// rows (output pixel `(oy, ox)` at grid position `oy * staged_width +
    /// ox`; positions with `ox >= wo` are computed and never stored), so
    /// a row of 17 pixels costs 23 grid positions, not 32.
    pub grid: bool,
    /// Converted input columns per kernel row (not flat): every column a
    /// tap of a computed pixel reads, from the left padding on.
    pub staged_width: usize,
    /// Bytes of one converted input row (`staged_width * cp * 2`).
    pub staged_row_bytes: usize,
    /// Output rows (flat: pixels, a multiple of 32) computed per
    /// conversion: their input converted once, then each pair of channel
    /// blocks over all their pixel blocks (the pair's weights stay in
    /// cache across them).
    pub chunk_rows: usize,
    /// Input rows converted for a chunk: `(chunk_rows - 1) * sh +
    /// (kh - 1) * dh + 1`.
    pub staged_rows: usize,
    /// Where the four f32 accumulator tiles are stored for the epilogue,
    /// in bytes from the scratch's start (after the converted input).
    pub acc_offset: usize,
    /// Scratch bytes the function needs (a multiple of 64).
    pub scratch_bytes: usize,
    /// The B tiles of a pair of channel blocks, over all taps and chunks,
    /// exceed [`PREFETCH_B_ABOVE`]: each reduction step prefetches the B
    /// tiles of the step two ahead into L1 (they stream from L2, and a
    /// tile load waits for the products reading the tile it replaces).
    pub prefetch_b: bool,
    /// Float offset of the f32 bias in the packed weights
    /// (`n_blocks * 16` floats, zero past `co`).
    pub bias_off: usize,
    /// Floats of the packed weights: B tiles `[tap][chunk][n block]`, each
    /// 16 rows of 16 channel pairs (bf16, the lower channel in the low
    /// half), then the bias.
    pub packed_len: usize,
    /// The function rounds what it stores to bf16 (`round_bf16`'s bits),
    /// for a next stage that multiplies it and does not round it itself
    /// (not on tiles): no pass over the output after the call. Set by
    /// the compilers ([`round_outputs`]), never by [`tile_plan`].
    pub round_output: bool,
    /// The function stores its rounded output as bf16, 2 bytes a value
    /// (the upper half of the rounded f32: exact), for a depthwise stage
    /// that widens it back ([`StagePlan::bf16_input`]): the intermediate
    /// takes half the bytes. Set with `round_output` by the compilers
    /// ([`bf16_intermediates`]), never by [`tile_plan`].
    pub bf16_output: bool,
    /// `vdpbf16ps` on zmm accumulators instead of AMX tiles ([`dot_plan`]).
    pub dot: bool,
    /// Reduction chunks per tap of the packed weights and of a block's
    /// reduction: `k_chunks`, but for a grouped stage a group's
    /// `ceil(Ci / G / 32)`.
    pub red_chunks: usize,
    /// Channel pairs of the last reduction chunk that hold input channels
    /// (of a group's, grouped; 1..=16): the dot reduction skips the rest,
    /// which are zero.
    pub tail_pairs: usize,
    /// A grouped stage: channel blocks per group (`Co / G / 16`) and
    /// bytes of converted channels per group (dot: `Ci / G * 2`; tiles,
    /// padded: `red_chunks * 64`): a block's pairs, or its A tiles, start
    /// at its group's first channel.
    pub group_blocks: Option<(usize, usize)>,
    /// Channel blocks run in pairs (sharing their input broadcasts); not
    /// for a grouped dot stage with an odd count of blocks per group,
    /// whose pairs would straddle groups (on tiles, such a stage pairs
    /// the blocks within each group, its last block alone).
    pub pair_blocks: bool,
}

impl TilePlan {
    /// A grouped stage on AMX tiles: the converted input holds each
    /// group's channels padded to `red_chunks * 32` (`cp` is `G` times
    /// that), so a tile row of a group's chunk holds its channels and
    /// zeros only; [`TilePlan::group_blocks`]' bytes are a padded group's.
    pub fn padded_groups(&self) -> bool {
        !self.dot && self.group_blocks.is_some()
    }

    /// Bytes of one output value as the function stores it: 4, or 2 as
    /// bf16 ([`TilePlan::bf16_output`]).
    pub fn out_bytes(&self) -> usize {
        if self.bf16_output {
            2
        } else {
            4
        }
    }
}

/// Whether a plan may read its input stored as bf16
/// ([`StagePlan::bf16_input`]): a depthwise stage of one output per
/// channel and at least a vector of channels on the AVX-512 generator,
/// every unit a whole channel vector (no masked tails, no broadcasts),
/// with no row vectors (few-channel rows keep f32).
pub fn reads_bf16(p: &StagePlan) -> bool {
    p.strategy == super::Strategy::DwChannels
        && p.target.backend == crate::Backend::Avx512
        && p.ci == p.co
        && p.ci >= p.target.lanes
        && p.row_multiplier == 1
        && p.row_vectors().is_none()
        && p.runs
            .iter()
            .flat_map(|r| &r.units)
            .all(|u| matches!(u.input, super::InSrc::Vector(_)))
}

/// Whether a direct plan may store its output as bf16
/// ([`StagePlan::bf16_output`]): on the AVX-512 generator (bf16 there
/// has AVX512_BF16), without a residual (the value stored is final),
/// every unit a whole vector of channels (no masked tails, lanes or
/// interleaved pairs), with no row vectors.
pub fn writes_bf16(p: &StagePlan) -> bool {
    p.tiles.is_none()
        && p.target.backend == crate::Backend::Avx512
        && !p.residual
        && p.row_vectors().is_none()
        && p.runs
            .iter()
            .flat_map(|r| &r.units)
            .all(|u| matches!(u.out, super::OutDst::Vector(_)))
}

/// Whether a plan on channel pairs reads its input as stored when that
/// is bf16: an even count of input channels, whose bf16 values two by two
/// are the pairs it reads (an odd count has its last pair's upper half
/// zero, which only the runtime's conversion writes, `pairs.rs`).
pub fn reads_bf16_pairs(p: &StagePlan) -> bool {
    p.tiles.is_none() && p.pairs.is_some_and(|ci| ci % 2 == 0)
}

/// Which stage outputs are stored as bf16 between stages, and the plans
/// marked to write and read them so: `plans` one per function,
/// `stage_of[f]` the layer stage of function `f`, `stages` the layer's
/// stage count. Stage `k`'s output is kept in bf16 where every function
/// of `k` runs on tiles without a residual (its epilogue rounds what it
/// stores anyway, [`TilePlan::round_output`]) or [`writes_bf16`], and
/// every function of the stage reading it, `k + 1`, is a depthwise plan
/// that [`reads_bf16`] or a plan on channel pairs that
/// [`reads_bf16_pairs`]: the depthwise stage is memory-bound, and its
/// input, band rows or a whole tensor, takes half the bytes; the pairs
/// stage reads the producer's stores as they are, where it would
/// otherwise have each call's rows converted first. Not for a tile
/// producer and a pairs reader (no such target: both are AMX's or
/// AMD's). Never the layer's output (f32 to the caller). Returns, per
/// stage, whether its output is bf16.
pub fn bf16_intermediates(plans: &mut [StagePlan], stage_of: &[usize], stages: usize) -> Vec<bool> {
    let all = |k: usize, ok: &dyn Fn(&StagePlan) -> bool| {
        let mut of = plans
            .iter()
            .zip(stage_of)
            .filter(|(_, &s)| s == k)
            .peekable();
        of.peek().is_some() && of.all(|(p, _)| ok(p))
    };
    let keep: Vec<bool> = (0..stages)
        .map(|k| {
            k + 1 < stages
                && (all(k, &|p| p.tiles.is_some() && !p.residual) && all(k + 1, &reads_bf16)
                    || all(k, &writes_bf16)
                        && all(k + 1, &|p| reads_bf16(p) || reads_bf16_pairs(p)))
        })
        .collect();
    for (p, &k) in plans.iter_mut().zip(stage_of) {
        if keep[k] {
            match p.tiles.as_mut() {
                Some(t) => (t.round_output, t.bf16_output) = (true, true),
                None => p.bf16_output = true,
            }
        }
        // A pairs reader's values stay 4 bytes: two bf16 each.
        p.bf16_input = k > 0 && keep[k - 1] && p.pairs.is_none();
    }
    keep
}

/// Marks the tile plans, and the plans on channel pairs without a
/// residual, whose output a stage reads in bf16: `reads[i]` says whether
/// plan `i`'s output is read by a stage that multiplies it without
/// rounding it (neither the layer's output nor the input of a stage that
/// converts it); those plans round it themselves. Returns, per plan,
/// whether its output still needs rounding by its caller.
pub fn round_outputs(plans: &mut [super::StagePlan], reads: &[bool]) -> Vec<bool> {
    plans
        .iter_mut()
        .zip(reads)
        .map(|(p, &reads)| match (&mut p.tiles, reads) {
            // Stored as bf16: rounded as it is stored.
            (None, true) if p.bf16_output => false,
            (Some(t), true) => {
                t.round_output = true;
                false
            }
            (None, true) if p.pairs.is_some() && !p.residual => {
                p.round_output = true;
                false
            }
            (_, reads) => reads,
        })
        .collect()
}

/// Why `stage` does not run on tiles, or its tile plan: a conv or
/// pointwise stage with at least 16 input and 16 output channels a group
/// (fewer would leave most of a tile row or column zero), grouped where
/// each group's outputs are whole blocks of 16, whose scratch fits
/// [`MAX_TILE_SCRATCH`]. `stage` is the planned stage (a thread's share
/// has its channels as outputs).
///
/// The same bound for groups as for one: a group of 16 to 31 input
/// channels fills half a tile row or more (its chunk padded to 32), as
/// a stage of 16 does; the f32 code it would run instead is no better
/// off (vectors over a group's outputs).
pub fn tile_plan(stage: &Stage) -> Result<TilePlan, &'static str> {
    let groups = match stage.kind {
        StageKind::Conv { groups, .. } | StageKind::Pointwise { groups, .. } => groups,
        StageKind::Depthwise { .. } => return Err("depthwise: f32 arithmetic on bf16 values"),
    };
    let (ci, co) = (stage.input.c / groups, stage.output.c / groups);
    if ci < 16 || co < 16 {
        return Err("fewer than 16 input or output channels a group: tiles mostly zero");
    }
    if groups > 1 && !co.is_multiple_of(N_BLOCK) {
        return Err("grouped with outputs not a multiple of 16 a group");
    }
    blocked(stage, false)
}

/// Input channels a group below which a stage runs f32 FMAs rather than
/// `vdpbf16ps` unless asked ([`Target::dot_all`]): a pair per tap of 3
/// channels spends the broadcasts and the conversion on zeros. Measured
/// on a Zen 5 (`bench --precision bf16 --bf16-units dot|fma`, one
/// thread): 3x3 stride 2 224x224x3 -> 32 127 against 108 us, MobileNet
/// v2's stem 155 against 104, 5x5 12x12x3 -> 256 13.7 against 10.6; from
/// 24 channels on `vdpbf16ps` wins (pointwise 56x56x24 -> 144 71 against
/// 99).
pub const MIN_DOT_CHANNELS: usize = 16;

/// [`dot_plan`] where `target` asks for `vdpbf16ps`: by default (not
/// [`Target::dot_all`]) only for [`MIN_DOT_CHANNELS`] input channels a
/// group or more.
pub fn dot_plan_on(stage: &Stage, target: &Target) -> Result<TilePlan, &'static str> {
    if !target.dot {
        return Err("vdpbf16ps not asked for");
    }
    let narrow = match stage.kind {
        StageKind::Conv { groups, .. } | StageKind::Pointwise { groups, .. } => {
            stage.input.c / groups < MIN_DOT_CHANNELS
        }
        StageKind::Depthwise { .. } => false,
    };
    if narrow && !target.dot_all {
        return Err("fewer than 16 input channels a group: f32 FMAs run it faster");
    }
    dot_plan(stage)
}

/// The stage `stage` is planned as where it runs `vdpbf16ps` on the
/// direct generator's blocking ([`Target::pairs`]): an ungrouped conv or
/// pointwise stage of at least [`MIN_DOT_CHANNELS`] input channels becomes
/// the stage of `ceil(Ci / 2)` input channels whose every value (4 bytes)
/// is a pair of bf16: its input converted so (a zero after an odd count),
/// its weights packed so ([`super::pack_into`]), each FMA a `vdpbf16ps`.
/// The tile layout computes every position of its rows of converted
/// columns and every padding tap (Inception's 7x7 on 17x17: 23 of 17
/// columns, 7 of 4-7 kernel rows) and whole passes of 8 pixels (49 as
/// 56); the direct blocking skips them. Measured on Zen 5, one thread:
/// Inception's 7x7 1,352 -> 749 us, pointwise 7x7x1024 -> 1024 262-321 ->
/// 220-238 us, 56x56x128 -> 128 279-314 -> 273-289, 28x28 and 14x14 level.
pub fn paired_stage(stage: &Stage, target: &Target) -> Option<Stage> {
    let conv = matches!(
        stage.kind,
        StageKind::Conv { groups: 1, .. } | StageKind::Pointwise { groups: 1, .. }
    );
    // One output: its inputs in lanes beat pairs in one lane of sixteen.
    let ok = target.pairs
        && target.dot
        && target.backend == crate::backend::Backend::Avx512
        && conv
        && stage.input.c >= MIN_DOT_CHANNELS
        && !super::inputs_in_lanes_ok(stage, target);
    ok.then(|| {
        let mut s = stage.clone();
        s.input.c = stage.input.c.div_ceil(2);
        s
    })
}

/// Why `stage` does not run `vdpbf16ps`, or its plan ([`TilePlan::dot`]):
/// any conv or pointwise stage whose scratch fits [`MAX_TILE_SCRATCH`];
/// grouped, where each group has an even number of input channels and a
/// multiple of 16 outputs.
pub fn dot_plan(stage: &Stage) -> Result<TilePlan, &'static str> {
    match stage.kind {
        StageKind::Conv { groups, cout } | StageKind::Pointwise { groups, cout }
            if groups > 1
                && !((stage.input.c / groups).is_multiple_of(2)
                    && (cout / groups).is_multiple_of(N_BLOCK)) =>
        {
            Err("grouped with an odd count of input channels or outputs not a multiple of 16 a group")
        }
        StageKind::Conv { .. } | StageKind::Pointwise { .. } => blocked(stage, true),
        StageKind::Depthwise { .. } => Err("depthwise: f32 arithmetic on bf16 values"),
    }
}

/// The blocking [`tile_plan`] and [`dot_plan`] share.
fn blocked(stage: &Stage, dot: bool) -> Result<TilePlan, &'static str> {
    let (ci, co) = (stage.input.c, stage.output.c);
    let groups = stage.groups();
    let cig = ci / groups;
    let red_chunks = cig.div_ceil(K_CHUNK);
    // On tiles, each group's channels padded to whole chunks.
    let padded_groups = !dot && groups > 1;
    let cp = match padded_groups {
        true => groups * red_chunks * K_CHUNK,
        false => ci.div_ceil(K_CHUNK) * K_CHUNK,
    };
    let [kh, kw] = stage.kernel;
    let taps = kh * kw;
    let n_blocks = co.div_ceil(N_BLOCK);
    let flat = super::is_flat(stage);
    let wo = stage.output.w;
    let grid = !flat && stage.stride == [1, 1];
    let m_blocks = if flat || grid {
        0
    } else {
        wo.div_ceil(M_BLOCK)
    };
    // Columns read by the last computed pixel's last tap, plus one (a
    // grid: by the row's last output pixel; else by the last pixel of the
    // last block, the 2x2 blocking clamping the pair of an odd count).
    let staged_width = match (flat, grid) {
        (true, _) => 0,
        (false, true) => wo + (kw - 1) * stage.dilation[1],
        (false, false) => {
            (m_blocks * M_BLOCK - 1) * stage.stride[1] + (kw - 1) * stage.dilation[1] + 1
        }
    };
    let staged_row_bytes = staged_width * cp * 2;
    let (sh, dh) = (stage.stride[0], stage.dilation[0]);
    let rows_for = |r: usize| (r - 1) * sh + (kh - 1) * dh + 1;
    // As many output rows as keep the converted rows within
    // TILE_STAGING_BYTES (at least one).
    let chunk_rows = match flat {
        // Pixels: whole pairs of pixel blocks, as many as the budget holds.
        true => {
            let pair = 2 * M_BLOCK;
            let all = (stage.output.h * wo).div_ceil(pair) * pair;
            (TILE_STAGING_BYTES / (cp * 2) / pair * pair).clamp(pair, all.max(pair))
        }
        false => (1..=stage.output.h)
            .take_while(|&r| r == 1 || rows_for(r) * staged_row_bytes <= TILE_STAGING_BYTES)
            .last()
            .unwrap_or(1),
    };
    let staged_rows = if flat { 0 } else { rows_for(chunk_rows) };
    let converted = if flat {
        chunk_rows * cp * 2
    } else {
        // A grid's last pair of blocks reads up to 48 positions past the
        // converted rows (stale values, in rows never stored).
        staged_rows * staged_row_bytes + usize::from(grid) * GRID_SLACK * cp * 2
    };
    let acc_offset = converted.div_ceil(64) * 64;
    let scratch_bytes = acc_offset + 4 * M_BLOCK * N_BLOCK * 4;
    if scratch_bytes > MAX_TILE_SCRATCH {
        return Err("input rows too wide for the tile scratch");
    }
    let group_bytes = match padded_groups {
        true => red_chunks * K_CHUNK * 2,
        false => cig * 2,
    };
    let group_blocks = (groups > 1).then_some((co / groups / N_BLOCK, group_bytes));
    let b_floats = taps * red_chunks * n_blocks * B_TILE_BYTES / 4;
    Ok(TilePlan {
        cp,
        k_chunks: cp / K_CHUNK,
        co,
        n_blocks,
        m_blocks,
        grid,
        staged_width,
        staged_row_bytes,
        chunk_rows,
        staged_rows,
        acc_offset,
        scratch_bytes,
        prefetch_b: taps * red_chunks * 2 * B_TILE_BYTES > PREFETCH_B_ABOVE,
        bias_off: b_floats,
        packed_len: b_floats + n_blocks * N_BLOCK,
        round_output: false,
        bf16_output: false,
        dot,
        red_chunks,
        tail_pairs: (cig - (red_chunks - 1) * K_CHUNK).div_ceil(2),
        group_blocks,
        pair_blocks: !dot || group_blocks.is_none_or(|(b, _)| b % 2 == 0),
    })
}

/// The packed weights of a tile plan: `weight` is the stage's (HWIO, or
/// `[Ci][Co]`), its output channels `c0..c0 + t.co` taken, rounded to
/// bf16 as the tiles read them.
pub(super) fn pack_tiles(
    p: &StagePlan,
    t: &TilePlan,
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    // A grouped stage's weights are `[tap][Ci / G][Co]`: its tiles reduce
    // a group's channels (every block lies in one group).
    let (ci, co_all, c0) = (p.ci / p.groups, p.co, p.channels.0);
    let taps = p.kh * p.kw;
    let mut at = 0;
    for tap in 0..taps {
        for chunk in 0..t.red_chunks {
            for nb in 0..t.n_blocks {
                for row in 0..K_CHUNK / 2 {
                    for col in 0..N_BLOCK {
                        let o = nb * N_BLOCK + col;
                        let w = |c: usize| match c < ci && o < t.co {
                            true => convjit_ir::bf16_bits(weight[(tap * ci + c) * co_all + c0 + o]),
                            false => 0,
                        };
                        let c = chunk * K_CHUNK + 2 * row;
                        let pair = u32::from(w(c)) | u32::from(w(c + 1)) << 16;
                        out[at] = f32::from_bits(pair);
                        at += 1;
                    }
                }
            }
        }
    }
    debug_assert_eq!(at, t.bias_off);
    if let Some(b) = bias {
        out[t.bias_off..t.bias_off + t.co].copy_from_slice(&b[c0..c0 + t.co]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(src: &str) -> Stage {
        convjit_ir::compile_source(src)
            .unwrap()
            .remove(0)
            .stages
            .remove(0)
    }

    #[test]
    fn convs_and_pointwise_stages_of_16_channels_take_tiles() {
        let t = tile_plan(&stage(
            "layer l { input 56x56x64\n c: conv 3x3 -> 64, pad same }",
        ))
        .unwrap();
        assert_eq!((t.cp, t.k_chunks, t.n_blocks, t.grid), (64, 2, 4, true));
        // A grid of the padded rows: 56 + 2 columns.
        assert_eq!(t.staged_width, 58);
        let s2 = tile_plan(&stage(
            "layer l { input 56x56x64\n c: conv 3x3 -> 64, stride 2x2, pad same }",
        ))
        .unwrap();
        // 32 computed pixels (2 blocks for 28) read columns 0..65.
        assert_eq!((s2.m_blocks, s2.grid, s2.staged_width), (2, false, 65));
        assert_eq!(t.bias_off, 9 * 2 * 4 * 256);
        let p = tile_plan(&stage("layer l { input 14x14x24\n p: pointwise 144 }")).unwrap();
        assert_eq!((p.cp, p.n_blocks, p.m_blocks), (32, 9, 0));
        // All 196 pixels in one chunk, rounded up to pairs of blocks.
        assert_eq!(p.chunk_rows, 224);
        let big = tile_plan(&stage("layer l { input 112x112x512\n p: pointwise 64 }")).unwrap();
        assert_eq!(big.chunk_rows, 512);
        let s = tile_plan(&stage(
            "layer l { input 17x17x128\n c: conv 7x7 -> 128, stride 2x2, pad same }",
        ))
        .unwrap();
        assert_eq!(s.staged_width, 15 * 2 + 6 + 1);
        // All 9 output rows at once: their 23 input rows fit.
        assert_eq!((s.chunk_rows, s.staged_rows), (9, 8 * 2 + 6 + 1));
        // 3x3 on 56x56x64: rows of 58 columns x 64 channels, 58 of them.
        assert_eq!((t.chunk_rows, t.staged_rows), (56, 58));
        let wide = tile_plan(&stage(
            "layer l { input 64x256x256\n c: conv 3x3 -> 64, pad same }",
        ))
        .unwrap();
        assert!(wide.staged_rows * wide.staged_row_bytes <= TILE_STAGING_BYTES);
        assert_eq!(wide.staged_rows, wide.chunk_rows + 2);
    }

    #[test]
    fn vdpbf16ps_takes_narrow_stages_and_whole_groups() {
        let d = |src: &str| dot_plan(&stage(src));
        // 3 channels: one chunk, 2 pairs; 8 outputs: one block.
        let t = d("layer l { input 8x8x3\n c: conv 3x3 -> 8, stride 2x2 }").unwrap();
        assert!(t.dot);
        assert_eq!(
            (t.k_chunks, t.red_chunks, t.tail_pairs, t.n_blocks),
            (1, 1, 2, 1)
        );
        // 33 channels: a chunk and one channel (a pair).
        let t = d("layer l { input 8x8x33\n p: pointwise 40 }").unwrap();
        assert_eq!((t.k_chunks, t.tail_pairs, t.group_blocks), (2, 1, None));
        // Groups of 24 inputs and 32 outputs: chunks of a group's channels,
        // two blocks a group (pairs); of 16 outputs, blocks alone.
        let t = d("layer l { input 8x8x72\n c: conv 3x3 -> 96, groups 3 }").unwrap();
        assert_eq!((t.cp, t.red_chunks, t.tail_pairs), (96, 1, 12));
        assert_eq!((t.group_blocks, t.pair_blocks), (Some((2, 48)), true));
        assert_eq!(t.bias_off, 9 * 6 * 256);
        let t = d("layer l { input 8x8x32\n c: conv 3x3 -> 32, groups 2 }").unwrap();
        assert_eq!((t.group_blocks, t.pair_blocks), (Some((1, 32)), false));
        // Odd inputs or outputs not a multiple of 16 a group, depthwise: no.
        assert!(d("layer l { input 8x8x6\n c: conv 3x3 -> 32, groups 2 }").is_err());
        assert!(d("layer l { input 8x8x32\n p: pointwise 16, groups 2 }").is_err());
        assert!(d("layer l { input 8x8x32\n d: depthwise 3x3 }").is_err());
    }

    /// By default a stage of fewer than 16 input channels a group runs
    /// f32 FMAs; asked for (`dot_all`), `vdpbf16ps` like any other.
    #[test]
    fn narrow_stages_take_vdpbf16ps_only_when_asked() {
        let auto = Target {
            dot: true,
            ..Target::AVX512
        };
        let all = Target {
            dot_all: true,
            ..auto
        };
        let stem = stage("layer l { input 16x16x3\n c: conv 3x3 -> 32, stride 2x2 }");
        assert!(dot_plan_on(&stem, &auto).is_err());
        assert!(dot_plan_on(&stem, &all).unwrap().dot);
        let groups = stage("layer l { input 8x8x32\n c: conv 3x3 -> 64, groups 4 }");
        assert!(dot_plan_on(&groups, &auto).is_err());
        assert!(dot_plan_on(&groups, &all).is_ok());
        let expand = stage("layer l { input 8x8x24\n p: pointwise 144 }");
        assert!(dot_plan_on(&expand, &auto).is_ok());
        assert!(dot_plan_on(&expand, &Target::AVX512).is_err());
    }

    /// Where the target asks for pairs, an ungrouped conv or pointwise
    /// stage of 16 or more input channels is planned as the stage of
    /// `ceil(Ci / 2)` (pairs of bf16), off the tiles: half the weight
    /// floats. Grouped and narrow stages keep the tile layout, and so does
    /// every stage of a target without pairs (an AOT object's).
    #[test]
    fn wide_ungrouped_convs_run_on_channel_pairs() {
        let dot = Target {
            dot: true,
            ..Target::AVX512
        };
        let pairs = Target { pairs: true, ..dot };
        let conv = stage("layer l { input 17x17x33\n c: conv 7x7 -> 96, pad same }");
        let p = crate::stage_plan::plan_for(&conv, &pairs);
        assert_eq!((p.pairs, p.ci, p.tiles.is_none()), (Some(33), 17, true));
        let f32_code = crate::stage_plan::plan_for(&conv, &Target::AVX512);
        assert!(p.packed_len * 3 < f32_code.packed_len * 2);
        assert!(crate::stage_plan::plan_for(&conv, &dot).tiles.unwrap().dot);
        let flat = stage("layer l { input 8x8x32\n p: pointwise 64 }");
        assert_eq!(crate::stage_plan::plan_for(&flat, &pairs).pairs, Some(32));
        for src in [
            "layer l { input 8x8x32\n c: conv 3x3 -> 32, groups 2 }",
            "layer l { input 8x8x8\n c: conv 3x3 -> 32 }",
        ] {
            assert!(paired_stage(&stage(src), &pairs).is_none(), "{src}");
        }
    }

    /// Direct stages keep an intermediate in bf16 where the writer stores
    /// whole vectors without a residual and the reader widens it
    /// (depthwise) or reads it as its pairs (an even count of channels):
    /// expand -> dw -> project both ways; not for an odd pairs reader, a
    /// writer with a residual, nor the layer's output.
    #[test]
    fn direct_stages_keep_intermediates_in_bf16() {
        let pairs = Target {
            dot: true,
            pairs: true,
            ..Target::AVX512
        };
        let keep = |src: &str| {
            let l = convjit_ir::compile_source(src).unwrap().remove(0);
            let mut plans: Vec<StagePlan> = l
                .stages
                .iter()
                .map(|s| crate::stage_plan::plan_for(s, &pairs))
                .collect();
            let n = plans.len();
            let keep = bf16_intermediates(&mut plans, &(0..n).collect::<Vec<_>>(), n);
            for (k, p) in plans.iter().enumerate() {
                assert_eq!(p.out_bytes() == 2, keep[k], "{src}: stage {k}");
                // A pairs reader's values stay 4 bytes (two bf16).
                let widens = k > 0 && keep[k - 1] && p.pairs.is_none();
                assert_eq!(p.bf16_input, widens, "{src}: stage {k}");
            }
            keep
        };
        assert_eq!(
            keep("layer l { input 12x12x16\n e: pointwise 96, relu6\n d: depthwise 3x3, pad same\n p: pointwise 16 }"),
            [true, true, false]
        );
        // 33 channels: the pairs reader's last pair holds a zero.
        assert_eq!(
            keep("layer l { input 9x9x33\n d: depthwise 3x3, pad same\n p: pointwise 20 }"),
            [false, false]
        );
        // Residual on the writer; 8 channels: the depthwise reader has
        // less than a vector.
        assert_eq!(
            keep("layer l { input 9x9x32\n p: pointwise 32, residual\n d: depthwise 3x3, pad same\n q: pointwise 8\n e: depthwise 3x3, pad same }"),
            [false, true, false, false]
        );
    }

    #[test]
    fn narrow_grouped_and_depthwise_stages_do_not() {
        let no = |src: &str| tile_plan(&stage(src)).is_err();
        assert!(no("layer l { input 8x8x3\n c: conv 3x3 -> 32 }"));
        assert!(no("layer l { input 8x8x32\n c: conv 3x3 -> 8 }"));
        assert!(no("layer l { input 8x8x32\n d: depthwise 3x3 }"));
        assert!(no("layer l { input 8x20000x512\n c: conv 3x3 -> 32 }"));
        // Groups of fewer than 16 inputs (ResNeXt's 4), of outputs not
        // whole blocks (20), of fewer than 16 outputs.
        assert!(no(
            "layer l { input 56x56x128\n c: conv 3x3 -> 128, groups 32, pad same }"
        ));
        assert!(no("layer l { input 8x8x24\n c: conv 3x3 -> 32, groups 2 }"));
        assert!(no("layer l { input 8x8x64\n c: conv 3x3 -> 40, groups 2 }"));
        assert!(no("layer l { input 8x8x64\n p: pointwise 32, groups 4 }"));
        assert!(no(
            "layer l { input 56x56x24\n p: pointwise 112, groups 4 }"
        ));
    }

    /// Grouped stages on tiles: each group's channels padded to whole
    /// chunks in the converted input (A tiles never read another group's),
    /// a group's chunks per block, blocks paired within a group.
    #[test]
    fn grouped_stages_take_tiles_on_padded_groups() {
        let t = |src: &str| tile_plan(&stage(src)).unwrap();
        // AlexNet's 5x5 96 -> 256 in 2 groups: 48 channels a group, two
        // chunks (the second 16 channels and 16 zeros), 8 blocks a group.
        let a = t("layer l { input 27x27x96\n c: conv 5x5 -> 256, groups 2, pad same }");
        assert!(a.padded_groups() && !a.dot);
        assert_eq!((a.cp, a.k_chunks, a.red_chunks), (128, 4, 2));
        assert_eq!((a.group_blocks, a.pair_blocks), (Some((8, 128)), true));
        assert_eq!(a.staged_row_bytes, a.staged_width * 128 * 2);
        assert_eq!(a.bias_off, 25 * 2 * 16 * 256);
        // 384 -> 384 in 2: 192 channels a group, the layout unpadded.
        let b = t("layer l { input 13x13x384\n c: conv 3x3 -> 384, groups 2, pad same }");
        assert_eq!(
            (b.cp, b.red_chunks, b.group_blocks),
            (384, 6, Some((12, 384)))
        );
        // ShuffleNet's pointwise 240 in 3: 80 channels (3 chunks) and 5
        // blocks a group (pairs within it, its last alone).
        let c = t("layer l { input 28x28x240\n p: pointwise 240, groups 3 }");
        assert_eq!((c.cp, c.red_chunks, c.n_blocks), (288, 3, 15));
        assert_eq!((c.group_blocks, c.pair_blocks), (Some((5, 192)), true));
        // 16 inputs and outputs a group: the bound, as for one group.
        let d = t("layer l { input 8x8x32\n c: conv 3x3 -> 32, groups 2 }");
        assert_eq!((d.cp, d.red_chunks, d.group_blocks), (64, 1, Some((1, 64))));
        // The same stage on vdpbf16ps keeps its groups' channels packed.
        let e = dot_plan(&stage(
            "layer l { input 27x27x96\n c: conv 5x5 -> 256, groups 2 }",
        ));
        let e = e.unwrap();
        assert!(!e.padded_groups());
        assert_eq!((e.cp, e.red_chunks, e.group_blocks), (96, 2, Some((8, 96))));
    }
}
