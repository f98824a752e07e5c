//! The fusion cost model: estimated cycles per image of a group of
//! stages ([`group_cycles`]: each stage's arithmetic ([`stage_cycles`]),
//! stalls of streaming tensors, band calls and kept rows), and of a stage
//! fused to the group before it or apart ([`fusion_cost`]).
//!
//! A stage's arithmetic is priced as the code that runs it: f32 code
//! (bf16 values too, where no tiles are taken) as its FMAs at a measured
//! share of the FMA peak, at the lanes of its generator; a bf16 stage on
//! AMX tiles (where [`tile_plan`] gives it tiles for the plan's target,
//! the generator's own decision) as the tile products its blocking
//! computes (channels and pixels padded to whole tiles) at a measured
//! share of the `TDPBF16PS` peak, plus the conversion of the input rows
//! it stages, the f32 epilogue per output value and a tile configuration
//! per call, each call of a band paying again for what it converts and
//! pads; a fused group of tile stages in one band of the whole image
//! streams its intermediates as groups apart would. Streamed tensors are
//! f32 (4 bytes a value) in either precision. f32 plans price nothing of
//! this: `f32_plans.txt` pins them.

use super::bands::band_rows;
use super::{Host, MARGIN};
use crate::stage_plan::{
    column_pair, paired_stage, planned_stage, stage_target, tile_plan, Target, TilePlan, K_CHUNK,
    M_BLOCK, N_BLOCK,
};
use convjit_ir::{Layer, Stage, StageKind};

/// The cost model's estimates (cycles per image) for adding a stage to the
/// fusion group before it: the group and the stage run apart, or fused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusionCost {
    /// The group and the stage, each run on its own.
    pub apart: f64,
    /// The group with the stage, run in bands.
    pub fused: f64,
}

impl FusionCost {
    /// Fusing must win by more than the model's noise: a fused group runs
    /// bands of short calls, so a tie goes to whole stages.
    pub fn pays(&self) -> bool {
        self.fused < self.apart * MARGIN
    }
}

impl std::fmt::Display for FusionCost {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "estimated {:.0}k cycles apart, {:.0}k fused",
            self.apart / 1e3,
            self.fused / 1e3
        )
    }
}

/// Bytes per cycle one core streams from its L2, and from L3 or memory
/// (a tensor beyond half of L2 is evicted before the next stage reads
/// it): Sapphire Rapids at ~3.7 GHz copies ~27 GB/s from beyond L2, and
/// depthwise 56x56x144 (3.6 MB in and out) ran at that rate.
pub(super) const L2_BYTES_PER_CYCLE: f64 = 32.0;
const FAR_BYTES_PER_CYCLE: f64 = 7.0;
/// The share of streaming time the FMAs do not hide: pointwise
/// 56x56x144 -> 24 ran 142 us, its FMAs alone ~106 us at the measured
/// efficiency and its 1.8 MB input ~69 us at the rate above.
const STALL: f64 = 0.5;
/// Fraction of the FMA peak a stage's loops reach: conv and pointwise
/// blocks measured 80-90% of it, depthwise (a load per FMA) about half.
const REDUCE_EFFICIENCY: f64 = 0.85;
const DEPTHWISE_EFFICIENCY: f64 = 0.55;
/// A stage call of a band: the function's setup and its row loops' state.
pub(super) const CALL_CYCLES: f64 = 400.0;
/// bf16 MACs a cycle of `TDPBF16PS` at its peak: 16x32 by 32x16 (8,192
/// MACs) in 16 cycles; `bench`'s `amx-bf16-peak` measures ~3,300 GFLOP/s,
/// 1,024 FLOP a cycle at ~3.2 GHz (f32 FMAs: 32 MACs a cycle, ~220).
const AMX_MACS_PER_CYCLE: f64 = 512.0;
/// Fraction of that peak the tile products reach on the MACs a stage's
/// tiles compute: 3x3 56x56x64 (167.7 us, 120M MACs computed on its grid)
/// and Inception's 7x7 17x17x128 (329.7 us, 314M), less their epilogue
/// and conversion priced below, 0.52 and 0.58 (BENCHMARKS.md, bf16).
const AMX_EFFICIENCY: f64 = 0.55;
/// A tile stage's f32 epilogue per output value: the accumulators stored,
/// then bias, activation, residual and the store (3x3 56x56x64's 200,704
/// values: the epilogue done twice added 20-30 us, 0.3-0.5 cycles each).
/// On AMX a conv's runs during the next block's tile products, which
/// saved 8% there (quiet machine; 0-4% loaded): what it costs is its
/// stores to the output, which the matrix unit waits for wherever they
/// are (with them aimed at the scratch, in L1, that layer ran 167 against
/// 204-210 us; without them 161-167; BENCHMARKS.md, issue 22), so the
/// price stays.
const TILE_EPILOGUE_CYCLES: f64 = 0.4;
/// bf16 bytes a cycle a tile stage converts its input into its scratch:
/// converting 3x3 56x56x64's 420 KiB twice took the same time (within
/// ~5 us: at least ~27 bytes a cycle).
const CONVERT_BYTES_PER_CYCLE: f64 = 32.0;
/// A tile stage call's own cost beyond [`CALL_CYCLES`]: the tile
/// configuration. Small: a 1x16x32 pointwise 32 ran 0.63 us on tiles and
/// 0.64-0.66 us as f32 code, whose FMAs alone take ~600 cycles.
const TILE_CALL_CYCLES: f64 = 200.0;
/// Fraction of the FMA peak a filter's separated pair reaches in
/// registers ([`column_pair`]): Sobel's pair (per 16 pixels 12 FMAs beside
/// 4 shifts and 2 permutations on their ports) and a 5x5 grey one, 54
/// rows of 1920 (in L2), ran at 65% and 68% of `bench`'s `fma512-peak`.
const PAIR_EFFICIENCY: f64 = 0.65;

/// Estimated cycles per image of `stage`'s arithmetic, as the code
/// `target`'s generator writes for it runs it, called `calls` times per
/// image (once alone, once per band fused): f32 code on vectors, or AMX
/// tiles where the stage takes them (bf16 on a target with
/// [`Target::tiles`]: [`tile_plan`] of the planned stage, as the generator
/// decides). Streaming its tensors and the calls' setup are the group's
/// ([`group_cycles`]).
pub fn stage_cycles(stage: &Stage, target: &Target, calls: usize) -> f64 {
    // At the lanes of the code that runs it (an AVX-512 layer hands some
    // stages to the AVX2 code), as the stage it runs as.
    let t = stage_target(stage, target);
    let planned = planned_stage(stage, &t);
    if t.tiles {
        if let Ok(tp) = tile_plan(&planned) {
            return tile_cycles(&planned, &tp, calls);
        }
    }
    let (eff, lanes) = match planned.kind {
        StageKind::Depthwise { .. } => (DEPTHWISE_EFFICIENCY, t.lanes),
        // 1-4 outputs, their inputs in the lanes: a kernel row's run of
        // them fills the lanes. With one output every FMA loads its input
        // (3x3 256x256x64 -> 1: 60% of the FMA peak); with more, each
        // input feeds several (-> 3: 91-93%).
        StageKind::Conv { cout, .. } | StageKind::Pointwise { cout, .. }
            if crate::stage_plan::inputs_in_lanes_ok(&planned, &t) =>
        {
            (
                if cout == 1 {
                    REDUCE_EFFICIENCY * 0.65
                } else {
                    REDUCE_EFFICIENCY
                },
                (planned.kernel[1] * planned.input.c).clamp(1, t.lanes),
            )
        }
        // Vectors over a group's outputs: fewer outputs than lanes
        // leave lanes idle (one output per group, a rank-R
        // separation's row stage, uses 1 of 16).
        StageKind::Conv { cout, groups } | StageKind::Pointwise { cout, groups } => {
            (REDUCE_EFFICIENCY, (cout / groups.max(1)).clamp(1, t.lanes))
        }
    };
    // On channel pairs each `vdpbf16ps` does two products a lane, at an
    // FMA's rate on AMD (the only default host of pairs).
    let per_lane = match paired_stage(&planned, &t) {
        Some(_) => 2.0,
        None => 1.0,
    };
    stage.macs() as f64 / (lanes as f64 * 2.0 * eff * per_lane)
}

/// [`stage_cycles`] of a stage on tiles: per call, its output rows (flat:
/// pixels) in chunks of the plan's, each converting the input its taps
/// read and computing whole pixel blocks (a grid's positions run on
/// through the padding columns; a flat range rounds up to a block).
fn tile_cycles(s: &Stage, tp: &TilePlan, calls: usize) -> f64 {
    let (h, wo) = (s.output.h, s.output.w);
    let calls = calls.clamp(1, h.max(1));
    let flat = crate::stage_plan::is_flat(s);
    // A call's rows, or a flat stage's pixels: chunks of the plan's.
    let per_call = match flat {
        true => h.div_ceil(calls) * wo,
        false => h.div_ceil(calls),
    };
    let block = |n: usize| n.div_ceil(M_BLOCK) * M_BLOCK;
    let [kh, kw] = s.kernel;
    // (positions computed, bf16 bytes converted) of a chunk of `r` rows
    // (flat: pixels).
    let chunk = |r: usize| -> (usize, usize) {
        match (flat, tp.grid) {
            (true, _) => (block(r), r * tp.cp * 2),
            (false, grid) => {
                let staged = (r - 1) * s.stride[0] + (kh - 1) * s.dilation[0] + 1;
                let positions = match grid {
                    true => block((r - 1) * tp.staged_width + wo),
                    false => r * tp.m_blocks * M_BLOCK,
                };
                (positions, staged * tp.staged_row_bytes)
            }
        }
    };
    let size = tp.chunk_rows.max(1);
    let (full, rest) = (per_call / size, per_call % size);
    let (fp, fb) = chunk(size);
    let (rp, rb) = match rest {
        0 => (0, 0),
        r => chunk(r),
    };
    let (positions, converted) = (full * fp + rp, full * fb + rb);
    // Each block reduces its group's chunks (all `cp` channels, one group).
    let macs = positions * kh * kw * tp.red_chunks * K_CHUNK * tp.n_blocks * N_BLOCK;
    let call = macs as f64 / (AMX_MACS_PER_CYCLE * AMX_EFFICIENCY)
        + converted as f64 / CONVERT_BYTES_PER_CYCLE
        + TILE_CALL_CYCLES;
    calls as f64 * call + s.output.len() as f64 * TILE_EPILOGUE_CYCLES
}

/// Cycles lost to streaming `bytes` of one tensor between stages: from
/// L2 where `streamed`, the bytes its writer read and wrote, fit in half
/// of it (what the writer streamed last is what L2 still holds), else
/// from L3 or memory.
fn stall_cycles(bytes: usize, streamed: usize, host: &Host) -> f64 {
    let rate = if streamed <= host.l2_bytes / 2 {
        L2_BYTES_PER_CYCLE
    } else {
        FAR_BYTES_PER_CYCLE
    };
    STALL * bytes as f64 / rate
}

/// The bytes streamed by the stage that writes the input of stage `i`
/// (its input and output), or for the layer's input the input alone.
/// A depthwise stride-2 stage reads four times what it writes: a
/// 784 KiB intermediate (MobileNet v1's 112x112x64 stride 2) had mostly
/// left L2 by the time the next stage read it, and fusing them ran 8%
/// faster (481-505 against 527-541 us, `bench`, three runs each).
fn written_with(layer: &Layer, i: usize) -> usize {
    let bytes = |shape: convjit_ir::Shape| shape.len() * 4;
    match i.checked_sub(1) {
        Some(w) => bytes(layer.stages[w].input) + bytes(layer.stages[w].output),
        None => bytes(layer.stages[0].input),
    }
}

/// Estimated cycles per image of stages `first..=last` as one group: their
/// FMAs, the stalls of streaming the group's input and output, and when
/// fused, per band a call of each stage and the copy of the rows the next
/// band reads again (the price of never recomputing them).
pub(super) fn group_cycles(
    layer: &Layer,
    first: usize,
    last: usize,
    host: &Host,
    target: &Target,
) -> f64 {
    let stages = &layer.stages[first..=last];
    let bytes = |shape: convjit_ir::Shape| shape.len() * 4;
    let ends = |host: &Host| {
        stall_cycles(bytes(stages[0].input), written_with(layer, first), host)
            + stall_cycles(
                bytes(stages[stages.len() - 1].output),
                written_with(layer, last + 1),
                host,
            )
    };
    // A filter's pair in registers: one function, no band, no intermediate.
    if last == first + 1 && column_pair(&stages[0], &stages[1], target).is_some() {
        let macs = (stages[0].macs() + stages[1].macs()) as f64;
        return macs / (target.lanes as f64 * 2.0 * PAIR_EFFICIENCY) + ends(host);
    }
    let bands = match last > first {
        true => layer.stages[last]
            .output
            .h
            .div_ceil(band_rows(layer, first, last, host)),
        false => 1,
    };
    let compute: f64 = stages.iter().map(|s| stage_cycles(s, target, bands)).sum();
    let mut stalls = ends(host);
    // One band of a whole image holds whole intermediates, streamed as
    // between groups. Priced for tile plans only: f32 plans, whose
    // margin (a share of their larger compute) hid it, stay as they
    // were. In bf16, MobileNet v2's 14x14 and 7x7 blocks fused so (their
    // tile stages' compute too small for the margin to) ran 2-8% slower
    // than apart in four of six, with `bench`'s `jit` against
    // `jit-unfused` in the same rounds.
    if target.tiles && last > first && bands == 1 {
        stalls += (first..last)
            .map(|i| {
                let out = bytes(layer.stages[i].output);
                2.0 * stall_cycles(out, written_with(layer, i + 1), host)
            })
            .sum::<f64>();
    }
    let calls = if last > first {
        let kept: usize = stages[1..]
            .iter()
            .map(|s| (s.kernel[0] - 1) * s.dilation[0] * s.input.w * s.input.c * 4)
            .sum();
        bands as f64 * (stages.len() as f64 * CALL_CYCLES + kept as f64 / L2_BYTES_PER_CYCLE)
    } else {
        0.0
    };
    compute + stalls + calls
}

/// The cost of fusing stage `i` into the group `first..i` against
/// running it apart.
pub fn fusion_cost(
    layer: &Layer,
    first: usize,
    i: usize,
    host: &Host,
    target: &Target,
) -> FusionCost {
    FusionCost {
        apart: group_cycles(layer, first, i - 1, host, target)
            + group_cycles(layer, i, i, host, target),
        fused: group_cycles(layer, first, i, host, target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AVX-512 with AMX tiles: a bf16 plan's target where they are granted.
    const TILES: Target = Target {
        tiles: true,
        ..Target::AVX512
    };

    fn stage(src: &str) -> Stage {
        let mut l = convjit_ir::compile_source(src).unwrap().remove(0);
        l.stages.remove(0)
    }

    #[test]
    fn a_tile_stage_is_priced_as_tiles_run_it() {
        let s = stage("layer l { input 56x56x64\n c: conv 3x3 -> 64, pad same, bias, relu }");
        // f32 code, as before tiles were priced.
        let f32 = stage_cycles(&s, &Target::AVX512, 1);
        assert_eq!(f32, s.macs() as f64 / (16.0 * 2.0 * REDUCE_EFFICIENCY));
        // On tiles: measured 167.7 us, ~540k cycles at 3.2 GHz.
        let tiles = stage_cycles(&s, &TILES, 1);
        assert!((450e3..650e3).contains(&tiles), "{tiles}");
        assert!(tiles * 5.0 < f32, "{tiles} {f32}");
        // Called in bands of two rows: each call converts its rows' taps
        // again and configures the tiles.
        let banded = stage_cycles(&s, &TILES, 28);
        assert!(banded > tiles * 1.1, "{banded} {tiles}");
        // Without tiles granted, or in f32 (no tiles in its target), f32
        // code.
        assert_eq!(stage_cycles(&s, &Target::AVX512, 28), f32);
    }

    #[test]
    fn a_flat_tile_stage_pays_for_partial_pixel_blocks() {
        // 14x14 = 196 pixels: 13 blocks of 16 alone, in bands of one row
        // 14 calls of one block each.
        let s = stage("layer l { input 14x14x512\n p: pointwise 512 }");
        let whole = stage_cycles(&s, &TILES, 1);
        let rows = stage_cycles(&s, &TILES, 14);
        assert!(whole * 5.0 < stage_cycles(&s, &Target::AVX512, 1));
        assert!(rows > whole * 1.05, "{rows} {whole}");
    }

    /// A grouped tile stage is priced for its groups' reduction: each
    /// block reduces its group's chunks, not all channels.
    #[test]
    fn a_grouped_tile_stage_prices_its_groups_chunks() {
        let one = stage("layer l { input 13x13x384\n c: conv 3x3 -> 384, pad same }");
        let two = stage("layer l { input 13x13x384\n c: conv 3x3 -> 384, groups 2, pad same }");
        let tp = tile_plan(&two).unwrap();
        let (t1, t2) = (stage_cycles(&one, &TILES, 1), stage_cycles(&two, &TILES, 1));
        // Half the tile products; the same conversion and epilogue.
        assert!((0.45..0.6).contains(&(t2 / t1)), "{t2} {t1}");
        let positions = tp.chunk_rows.min(13) * tp.staged_width - 2;
        let macs = positions.div_ceil(M_BLOCK) * M_BLOCK * 9 * 192 * 384;
        assert!(t2 > macs as f64 / (AMX_MACS_PER_CYCLE * AMX_EFFICIENCY));
        assert!(t2 * 5.0 < stage_cycles(&two, &Target::AVX512, 1));
    }

    #[test]
    fn stages_without_tiles_are_priced_as_f32_code_in_bf16() {
        for src in [
            "layer l { input 56x56x144\n d: depthwise 3x3, pad same }",
            "layer l { input 224x224x3\n c: conv 3x3 -> 32, stride 2, pad same }",
            "layer l { input 28x28x64\n c: conv 3x3 -> 64, groups 8, pad same }",
            "layer l { input 56x56x144\n p: pointwise 8 }",
            "layer l { input 8x20000x512\n c: conv 3x3 -> 32 }",
        ] {
            let s = stage(src);
            assert!(tile_plan(&s).is_err(), "{src}");
            for calls in [1, 4] {
                assert_eq!(
                    stage_cycles(&s, &TILES, calls),
                    stage_cycles(&s, &Target::AVX512, calls),
                    "{src}"
                );
            }
        }
    }
}
