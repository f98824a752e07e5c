//! The packed-weight layout of a stage plan and the packing itself:
//! where each unit's weights and bias lie (aligned or compact,
//! [`layout_weights`]; bias and row vectors after them,
//! [`packed_extent`]), and the copies that fill it from the TensorFlow
//! layout ([`StagePlan::pack_copies`], [`pack_into`]), which the JIT runs in
//! Rust and an AOT object in C.

use super::runs::{Run, Unit};
use super::stage::StagePlan;
use super::target::Target;

/// Bytes that a stage's packed weights may spend on zero lanes (units
/// of fewer channels than lanes, see [`StagePlan::compact`]) beyond a tenth of
/// the floats the units use. A whole vector per unit keeps its loads
/// within cache lines; ordinary layers (channels a multiple of the lanes,
/// or overlapping tails, which use all their lanes) have no zero lanes or
/// few, so only layers whose padding costs real memory (a one-channel
/// kernel on 16 lanes: 16x) are packed otherwise. Overlapping tails stay:
/// they copy at most `lanes - 1` channels of a group again, less than its
/// channels (a tail exists only above `lanes` of them), so at most twice.
pub const PACK_SLACK_BYTES: usize = 256 << 10;

/// Bytes of row-vector weights ([`StagePlan::row_weights_off`]) a stage may
/// have: they copy every weight `lanes / C` times or more, and run
/// few-channel filters about twice as fast as the per-pixel code (RGB
/// 40x40 on 128x128, AVX-512: 4.6 against 9.8 ms), so they are worth
/// more memory than zero lanes: RGB kernels up to 147x147 on 16 lanes.
pub const PACK_ROW_BYTES: usize = 4 << 20;

/// Whether `padded` floats are cheap enough against the `used` floats
/// they hold (see [`PACK_SLACK_BYTES`]).
fn padding_ok(padded: usize, used: usize) -> bool {
    padded.saturating_sub(used) <= (used / 10).max(PACK_SLACK_BYTES / 4)
}

/// Whether the row-vector weights `[tap][phase][lane]` of `phases` phases
/// (and a bias, counted as one more tap) fit [`PACK_ROW_BYTES`]; a larger
/// kernel runs its rows per pixel.
pub(super) fn row_weights_ok(taps: usize, phases: usize, t: &Target) -> bool {
    (taps + 1) * phases * t.lanes * 4 <= PACK_ROW_BYTES
}

/// Every unit of `run` a whole vector of `lanes` floats per step.
fn aligned_units(run: &mut Run, lanes: usize) {
    for (u, unit) in run.units.iter_mut().enumerate() {
        unit.w_off = u * lanes;
    }
    run.w_step = run.units.len() * lanes;
}

/// Only the floats `run`'s units use per step ([`StagePlan::compact`]): units
/// of contiguous output channels (all but depthwise multipliers 2-3) at
/// their first channel's offset from the run's first channel, so
/// overlapping tails share floats; otherwise their used lanes one after
/// the other.
fn compact_units(run: &mut Run) {
    let used = Unit::used;
    let first = |u: &Unit| u.lanes[0].expect("a unit has a first lane");
    let contiguous = run.units.iter().all(|u| {
        let v = used(u);
        u.lanes
            .iter()
            .enumerate()
            .all(|(l, &o)| o == (l < v).then(|| first(u) + l))
    });
    if contiguous {
        let lo = run.units.iter().map(first).min().unwrap_or(0);
        let hi = run.units.iter().map(|u| first(u) + used(u)).max();
        for unit in &mut run.units {
            unit.w_off = first(unit) - lo;
        }
        run.w_step = hi.unwrap_or(lo) - lo;
    } else {
        let mut off = 0;
        for unit in &mut run.units {
            unit.w_off = off;
            off += used(unit);
        }
        run.w_step = off;
    }
}

/// Places the runs' weights (`[run][repetition][step]` per group, `steps`
/// steps each) and bias (`[run][repetition]`) one after the other from
/// their `w_step`; returns the bytes per group of each.
fn layout_runs(runs: &mut [Run], steps: usize) -> (usize, usize) {
    let (mut w, mut b) = (0, 0);
    for run in runs {
        run.w_base = w;
        run.bias_base = b;
        run.w_stride = steps * run.w_step * 4;
        run.bias_stride = run.w_step * 4;
        w += run.count * run.w_stride;
        b += run.count * run.bias_stride;
    }
    (w, b)
}

/// The units' weights placed ([`layout_weights`]): the runs with their
/// offsets and strides, whether compact, and the bytes per group of the
/// weights ([`StagePlan::g_w`]) and of the bias ([`StagePlan::g_bias`]).
pub(super) struct WeightLayout {
    pub runs: Vec<Run>,
    pub compact: bool,
    pub g_w: usize,
    pub g_bias: usize,
}

/// Places the weights of `runs` (`groups` groups of `steps` (tap,
/// channel) steps, and a bias if `has_bias`): a whole vector of `lanes`
/// floats per unit and step, or compact where that would hold too many
/// zero lanes ([`padding_ok`]), or as `compact` says (`None`: as
/// [`StagePlan::compact`] decides).
pub(super) fn layout_weights(
    mut runs: Vec<Run>,
    groups: usize,
    steps: usize,
    has_bias: bool,
    lanes: usize,
    compact: Option<bool>,
) -> WeightLayout {
    // Floats of the units' weights and bias with each layout.
    let floats = |runs: &[Run]| {
        let per_step: usize = runs.iter().map(|r| r.count * r.w_step).sum();
        groups * (steps + usize::from(has_bias)) * per_step
    };
    for run in &mut runs {
        aligned_units(run, lanes);
    }
    // Zero lanes beyond the lanes the units use (overlapping tails use
    // all theirs: at most twice the channels, see `positions`).
    let used: usize = runs
        .iter()
        .map(|r| r.count * r.units.iter().map(Unit::used).sum::<usize>())
        .sum();
    let padded = floats(&runs);
    let used = groups * (steps + usize::from(has_bias)) * used;
    let mut tight = runs.clone();
    for run in &mut tight {
        compact_units(run);
    }
    let compact = compact.unwrap_or(!padding_ok(padded, used));
    if compact {
        runs = tight;
    }
    let (g_w, g_bias) = layout_runs(&mut runs, steps);
    WeightLayout {
        runs,
        compact,
        g_w,
        g_bias,
    }
}

/// Where the packed floats lie beyond the units' weights
/// ([`packed_extent`]): [`StagePlan::bias_off`], [`StagePlan::row_weights_off`],
/// [`StagePlan::packed_len`].
pub(super) struct PackedExtent {
    pub bias_off: Option<usize>,
    pub row_weights_off: Option<usize>,
    pub packed_len: usize,
}

/// The packed buffer of the weights laid out as `weights` (`groups`
/// groups of `steps` steps): the bias after them, then row-vector weights
/// of `row_phases` phases per tap (`taps` taps) if any, and its length,
/// which for a compact layout reaches past every unit's last whole-vector
/// load (of `lanes` floats).
pub(super) fn packed_extent(
    weights: &WeightLayout,
    groups: usize,
    steps: usize,
    has_bias: bool,
    taps: usize,
    row_phases: Option<usize>,
    lanes: usize,
) -> PackedExtent {
    let WeightLayout {
        runs, g_w, g_bias, ..
    } = weights;
    let (g_w, g_bias) = (*g_w, *g_bias);
    let w_floats = groups * g_w / 4;
    // The bias and the row vectors start on a vector (after compact
    // weights too): the row vectors are FMA operands, and loads split
    // across cache lines cost (RGB 72x72 on 128x128, AVX-512, four runs:
    // 18.3-18.6 ms aligned, 19.3-20.9 not).
    let bias_off = has_bias.then_some(w_floats.next_multiple_of(lanes));
    let mut packed_len = bias_off.map_or(w_floats, |off| off + groups * g_bias / 4);
    let row_weights_off = row_phases.map(|phases| {
        // [tap][phase][lane], then the bias [phase][lane].
        let off = packed_len.next_multiple_of(lanes);
        packed_len = off + (taps + usize::from(bias_off.is_some())) * phases * lanes;
        off
    });
    if weights.compact {
        // Every unit's last vector load ends inside the buffer.
        let end = |base: usize, run: &Run, last_step: usize| {
            let top = run.units.iter().map(|u| u.w_off).max().unwrap_or(0);
            base + last_step * run.w_step + top + lanes
        };
        for run in runs {
            let g = groups - 1;
            let rep = run.count - 1;
            let w = (g * g_w + run.w_base + rep * run.w_stride) / 4;
            packed_len = packed_len.max(end(w, run, steps - 1));
            if let Some(off) = bias_off {
                let b = off + (g * g_bias + run.bias_base + rep * run.bias_stride) / 4;
                packed_len = packed_len.max(end(b, run, 0));
            }
        }
    }
    PackedExtent {
        bias_off,
        row_weights_off,
        packed_len,
    }
}

/// The array a [`PackCopy`] reads: the stage's weights (TensorFlow
/// layout, `[kh][kw][ci/groups][co]`, depthwise `[kh][kw][ci][m]`) or bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackSource {
    /// The stage's weight array.
    Weight,
    /// The stage's bias (a copy of it is skipped when none is given).
    Bias,
}

/// One step of packing a stage's weights, as data: for every `i0`, `i1`,
/// `i2` below the counts of `loops`, the `len` floats of the array at
/// `src + i0*s0 + i1*s1 + i2*s2` go to the packed floats at
/// `dst + i0*d0 + i1*d1 + i2*d2` (`loops[k] = (count, dk, sk)`, all in
/// floats). The
/// copies of a plan ([`StagePlan::pack_copies`]) touch every packed float that
/// holds a weight or bias exactly once or with the same value; the others
/// stay zero. The AOT builder runs the same list in the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PackCopy {
    /// The array it reads.
    pub source: PackSource,
    /// First packed float written (at `i0 = i1 = i2 = 0`).
    pub dst: usize,
    /// First float of the array read.
    pub src: usize,
    /// Consecutive floats per copy.
    pub len: usize,
    /// `(count, packed stride, array stride)` of the three loops, outermost
    /// first; the innermost is the (tap, channel) steps.
    pub loops: [(usize, usize, usize); 3],
}

impl StagePlan {
    /// How the weights are packed, for the plan dump: floats against the
    /// stage's weights and bias, aligned or compact and why.
    pub fn packing(&self) -> String {
        let arrays = self.kh * self.kw * self.ci_per_tap * self.groups * (self.co / self.groups)
            + self.bias_off.map_or(0, |_| self.co);
        let rows = match self.row_weights_off {
            Some(_) => ", plus each tap's row vectors",
            None => "",
        };
        let layout = if self.compact {
            format!(
                "compact: per step only the floats the units use (whole vectors would hold more than {} KiB and a tenth in zero lanes)",
                PACK_SLACK_BYTES >> 10
            )
        } else {
            "a whole vector per unit and step".to_string()
        };
        let layout = match &self.tiles {
            Some(t) => format!(
                "bf16 tiles: per tap, {} chunks of 32 input channels, {} blocks of 16 output channels, channel pairs in each 32-bit element{}, then the f32 bias",
                t.red_chunks,
                t.n_blocks,
                match self.groups {
                    1 => String::new(),
                    g => format!(" (chunks of a group's channels, {g} groups)"),
                },
            ),
            None => layout,
        };
        format!(
            "{} floats for {arrays} weights and bias: {layout}{rows}",
            self.packed_len
        )
    }

    /// The copies that pack this stage's weights and bias ([`PackCopy`]):
    /// per run, one per stretch of consecutive step floats holding
    /// consecutive output channels, looping over groups, repetitions and
    /// (tap, channel) steps; for row-vector weights, one per stretch of
    /// lanes holding consecutive channels, looping over taps. Their number
    /// depends on the runs and lanes only, never on the kernel's size, the
    /// input channels or the groups.
    pub fn pack_copies(&self) -> Vec<PackCopy> {
        let lanes = self.sched.lanes;
        let taps = self.kh * self.kw;
        let steps = taps * self.ci_per_tap;
        let mut copies = Vec::new();
        for run in &self.runs {
            // (float of the step, output channel) of every used lane, in
            // stretches of consecutive floats and channels.
            let mut slots: Vec<(usize, usize)> = run
                .units
                .iter()
                .flat_map(|u| {
                    let lanes = u.lanes.iter().enumerate();
                    lanes.filter_map(move |(l, o)| o.map(|o| (u.w_off + l, o)))
                })
                .collect();
            slots.sort_unstable();
            slots.dedup();
            let mut stretches: Vec<(usize, usize, usize)> = Vec::new();
            for (at, o) in slots {
                match stretches.last_mut() {
                    Some((a0, o0, len)) if *a0 + *len == at && *o0 + *len == o => *len += 1,
                    Some((a0, _, len)) if *a0 + *len > at => {
                        panic!("stage plan: two channels packed at float {at} of a step")
                    }
                    _ => stretches.push((at, o, 1)),
                }
            }
            for &(at, o, len) in &stretches {
                copies.push(PackCopy {
                    source: PackSource::Weight,
                    dst: run.w_base / 4 + at,
                    src: o,
                    len,
                    loops: [
                        (self.groups, self.g_w / 4, self.g_weight_channel),
                        (run.count, run.w_stride / 4, run.weight_channel_stride),
                        (steps, run.w_step, self.co),
                    ],
                });
            }
            if let Some(off) = self.bias_off {
                for &(at, o, len) in &stretches {
                    copies.push(PackCopy {
                        source: PackSource::Bias,
                        dst: off + run.bias_base / 4 + at,
                        src: o,
                        len,
                        loops: [
                            (self.groups, self.g_bias / 4, self.g_weight_channel),
                            (run.count, run.bias_stride / 4, run.weight_channel_stride),
                            (1, 0, 0),
                        ],
                    });
                }
            }
        }
        let Some(off) = self.row_weights_off else {
            return copies;
        };
        // Row vectors: per tap, `phases` vectors; lane `l` of phase `r`
        // holds channel `(r + l) % c` (a multiplier's: output `l % m`).
        let (c, phases) = match self.row_multiplier {
            1 => (self.ci, self.ci),
            m => (m, 1),
        };
        let once = (1, 0, 0);
        for r in 0..phases {
            let mut l = 0;
            while l < lanes {
                let ch = (r + l) % c;
                let len = (c - ch).min(lanes - l);
                copies.push(PackCopy {
                    source: PackSource::Weight,
                    dst: off + r * lanes + l,
                    src: ch,
                    len,
                    loops: [once, once, (taps, phases * lanes, c)],
                });
                if self.bias_off.is_some() {
                    copies.push(PackCopy {
                        source: PackSource::Bias,
                        dst: off + (taps * phases + r) * lanes + l,
                        src: ch,
                        len,
                        loops: [once, once, once],
                    });
                }
                l += len;
            }
        }
        copies
    }
}

/// Packs one stage's TensorFlow-layout weights (and bias) into the layout
/// the generated code reads: per group, per run repetition, a block
/// `[ky][kx][ci_per_tap][step]` (a step: every unit's vector, or in a
/// [`StagePlan::compact`] plan only the floats they use), zeros in unused
/// floats; then the bias as `[group][run repetition][step]`; then any
/// row-vector weights ([`StagePlan::row_weights_off`]).
pub fn pack(plan: &StagePlan, weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0f32; plan.packed_len];
    pack_into(plan, weight, bias, &mut out);
    out
}

/// [`pack`] into `out` (`plan.packed_len` zeroed f32s), e.g. aligned
/// storage: runs [`StagePlan::pack_copies`].
pub fn pack_into(plan: &StagePlan, weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    if let Some(t) = &plan.tiles {
        return super::tiles::pack_tiles(plan, t, weight, bias, out);
    }
    let paired;
    let weight = match plan.pairs {
        Some(ci) => {
            paired = pair_weights(weight, ci, plan.co);
            &paired[..]
        }
        None => weight,
    };
    let copies = plan.pack_copies();
    // (Tap, channel) steps outermost, whatever the copy: each step's
    // weights are one contiguous row over the output channels, read once
    // while every copy takes its channels (the copies commute).
    let steps = copies.iter().map(|c| c.loops[2].0).max().unwrap_or(0);
    for i2 in 0..steps {
        for c in copies.iter().filter(|c| i2 < c.loops[2].0) {
            let array = match (c.source, bias) {
                (PackSource::Weight, _) => weight,
                (PackSource::Bias, Some(b)) => b,
                // No bias given: its floats stay zero.
                (PackSource::Bias, None) => continue,
            };
            let [(n0, d0, s0), (n1, d1, s1), (_, d2, s2)] = c.loops;
            for i0 in 0..n0 {
                for i1 in 0..n1 {
                    let d = c.dst + i0 * d0 + i1 * d1 + i2 * d2;
                    let s = c.src + i0 * s0 + i1 * s1 + i2 * s2;
                    out[d..d + c.len].copy_from_slice(&array[s..s + c.len]);
                }
            }
        }
    }
}

/// `[tap][ci][co]` weights as `[tap][ci/2][co]` pairs of bf16 (rounded,
/// the even channel in the low half, a zero after an odd count), each
/// pair's bits a float's ([`StagePlan::pairs`]).
fn pair_weights(weight: &[f32], ci: usize, co: usize) -> Vec<f32> {
    let pairs = ci.div_ceil(2);
    let taps = weight.len() / (ci * co);
    let mut v = vec![0f32; taps * pairs * co];
    for t in 0..taps {
        for p in 0..pairs {
            for o in 0..co {
                let at = |c: usize| match c < ci {
                    true => u32::from(convjit_ir::bf16_bits(weight[(t * ci + c) * co + o])),
                    false => 0,
                };
                v[(t * pairs + p) * co + o] = f32::from_bits(at(2 * p) | at(2 * p + 1) << 16);
            }
        }
    }
    v
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::stage_plan::stage::{plan_for, plan_with};
    use crate::stage_plan::target::MAX_LANES;
    use convjit_ir::Stage;

    /// Every packed weight and bias of a plan (one group) by (tap x input
    /// channel, output channel), read back through its runs and units.
    pub(in crate::stage_plan) fn unpack(
        p: &StagePlan,
        packed: &[f32],
    ) -> std::collections::BTreeMap<(usize, usize), f32> {
        let mut m = std::collections::BTreeMap::new();
        for run in &p.runs {
            for rep in 0..run.count {
                let base = (run.w_base + rep * run.w_stride) / 4;
                let bias = (run.bias_base + rep * run.bias_stride) / 4;
                for unit in &run.units {
                    for (l, o) in unit.lanes.iter().enumerate() {
                        let Some(o) = o else { continue };
                        let o = o + rep * run.weight_channel_stride;
                        for tc in 0..p.kh * p.kw * p.ci_per_tap {
                            let v = packed[base + tc * run.w_step + unit.w_off + l];
                            assert_eq!(m.insert((tc, o), v).unwrap_or(v), v);
                        }
                        if let Some(off) = p.bias_off {
                            let tc = usize::MAX;
                            let v = packed[off + bias + unit.w_off + l];
                            assert_eq!(m.insert((tc, o), v).unwrap_or(v), v);
                        }
                    }
                }
            }
        }
        m
    }

    /// The packing as written before [`PackCopy`] (per float, the (tap,
    /// channel) rows outermost), with the units' offsets: the oracle of
    /// [`pack_into`].
    fn pack_reference(plan: &StagePlan, weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0f32; plan.packed_len];
        let lanes = plan.sched.lanes;
        if let (Some(off), m @ 2..) = (plan.row_weights_off, plan.row_multiplier) {
            let taps = plan.kh * plan.kw;
            for t in 0..taps {
                for l in 0..lanes {
                    out[off + t * lanes + l] = weight[t * m + l % m];
                }
            }
            if let Some(b) = bias {
                for l in 0..lanes {
                    out[off + taps * lanes + l] = b[l % m];
                }
            }
        } else if let Some(off) = plan.row_weights_off {
            let (c, taps) = (plan.ci, plan.kh * plan.kw);
            for t in 0..taps {
                for r in 0..c {
                    for l in 0..lanes {
                        out[off + (t * c + r) * lanes + l] = weight[t * c + (r + l) % c];
                    }
                }
            }
            if let Some(b) = bias {
                for r in 0..c {
                    for l in 0..lanes {
                        out[off + (taps * c + r) * lanes + l] = b[(r + l) % c];
                    }
                }
            }
        }
        // Every block: its weights, step, and (float in a step, channel).
        type Block = (usize, usize, Vec<(usize, usize)>);
        let mut blocks: Vec<Block> = Vec::new();
        for g in 0..plan.groups {
            for run in &plan.runs {
                for rep in 0..run.count {
                    let base = (g * plan.g_w + run.w_base + rep * run.w_stride) / 4;
                    let bbase = (g * plan.g_bias + run.bias_base + rep * run.bias_stride) / 4;
                    let slots: Vec<(usize, usize)> = run
                        .units
                        .iter()
                        .flat_map(|unit| {
                            unit.lanes.iter().enumerate().filter_map(move |(l, o)| {
                                o.map(|o| {
                                    (
                                        unit.w_off + l,
                                        o + g * plan.g_weight_channel
                                            + rep * run.weight_channel_stride,
                                    )
                                })
                            })
                        })
                        .collect();
                    if let (Some(off), Some(b)) = (plan.bias_off, bias) {
                        for &(at, o) in &slots {
                            out[off + bbase + at] = b[o];
                        }
                    }
                    blocks.push((base, run.w_step, slots));
                }
            }
        }
        for tc in 0..plan.kh * plan.kw * plan.ci_per_tap {
            for (base, step, slots) in &blocks {
                for &(at, o) in slots {
                    out[base + tc * step + at] = weight[tc * plan.co + o];
                }
            }
        }
        out
    }

    /// `plan`'s packing by its copies against the oracle, bit for bit,
    /// and every unit's vector loads inside `packed_len`.
    fn check_packing(stage: &Stage, p: &StagePlan, seed: u64) {
        let mut rng = convjit_ir::Rng::new(seed);
        let w = rng.vec(stage.weight_len(), 1.0);
        let b = stage
            .bias_key
            .as_ref()
            .map(|_| rng.vec(stage.output.c, 1.0));
        let got = pack(p, &w, b.as_deref());
        let want = pack_reference(p, &w, b.as_deref());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{stage:?} on {:?}", p.target);
        // Vectors read as whole vectors start on one.
        let lanes = p.sched.lanes;
        assert!(p.bias_off.is_none_or(|o| o % lanes == 0));
        assert!(p.row_weights_off.is_none_or(|o| o % lanes == 0));
        let steps = p.kh * p.kw * p.ci_per_tap;
        for g in 0..p.groups {
            for run in &p.runs {
                let rep = run.count - 1;
                let top = run.units.iter().map(|u| u.w_off).max().unwrap();
                let w = (g * p.g_w + run.w_base + rep * run.w_stride) / 4;
                let end = w + (steps - 1) * run.w_step + top + p.sched.lanes;
                assert!(end <= p.packed_len, "{stage:?}: a load ends at {end}");
                if let Some(off) = p.bias_off {
                    let b = off + (g * p.g_bias + run.bias_base + rep * run.bias_stride) / 4;
                    assert!(b + top + p.sched.lanes <= p.packed_len);
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Random stages on every target, packed aligned and compact:
        /// the copies give the oracle's floats, and both layouts hold the
        /// same weight for every (tap, channel, output) the units read.
        #[test]
        fn copies_pack_as_the_oracle(
            case in convjit_ir::random_layer::layer_case(convjit_ir::random_layer::Limits::PROPTEST)
        ) {
            let Ok(mut layers) = convjit_ir::compile_source(&case.src) else {
                return Ok(());
            };
            let layer = layers.remove(0);
            for (i, stage) in layer.stages.iter().enumerate() {
                for target in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                    let seed = case.seed ^ i as u64;
                    let natural = plan_for(stage, &target);
                    check_packing(stage, &natural, seed);
                    let mut held = Vec::new();
                    for compact in [false, true] {
                        let p = plan_with(stage, &target, Some(compact));
                        check_packing(stage, &p, seed);
                        let mut rng = convjit_ir::Rng::new(seed);
                        let w = rng.vec(stage.weight_len(), 1.0);
                        let b = stage.bias_key.as_ref().map(|_| rng.vec(stage.output.c, 1.0));
                        held.push(unpack(&p, &pack(&p, &w, b.as_deref())));
                    }
                    proptest::prop_assert_eq!(&held[0], &held[1]);
                }
            }
        }
    }

    /// One stage of `src`, a layer of one stage.
    fn one_stage(src: &str) -> Stage {
        convjit_ir::compile_source(src).unwrap().remove(0).stages[0].clone()
    }

    /// Every kind of stage with a 2048x2048 kernel (or as many weights),
    /// one channel or one output per group: its packed floats stay within
    /// a tenth of its weights and bias, plus [`PACK_SLACK_BYTES`],
    /// [`PACK_ROW_BYTES`] and a
    /// vector, on every target; its copies are a handful.
    #[test]
    fn one_channel_kernels_pack_without_padding() {
        let k = 2048;
        let stages = [
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, bias }}"),
            format!(
                "layer a {{ input {k}x{}x1\n d: depthwise {k}x{k}, pad same }}",
                k + 40
            ),
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, stride 2, bias }}"),
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, multiplier 2 }}"),
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, multiplier 4, bias }}"),
            format!(
                "layer a {{ input 40x{}x3\n d: depthwise 32x1024, pad same, bias }}",
                k
            ),
            format!("layer a {{ input {k}x{k}x1\n c: conv {k}x{k} -> 1, bias }}"),
            format!(
                "layer a {{ input {k}x{}x1\n c: conv {k}x{k} -> 2, pad same }}",
                k + 40
            ),
            "layer a { input 512x512x1\n c: conv 512x512 -> 4 }".to_string(),
            "layer a { input 64x64x1\n c: conv 512x512 -> 3, pad same, bias }".to_string(),
            "layer a { input 4x4x65536\n c: conv 8x8 -> 1, pad same, bias }".to_string(),
            "layer a { input 4x4x65536\n c: conv 8x8 -> 65536, groups 65536, pad same }"
                .to_string(),
            "layer a { input 4x4x65536\n p: pointwise 65536, groups 65536, bias }".to_string(),
            "layer a { input 4x4x65536\n p: pointwise 1, bias }".to_string(),
            "layer a { input 4x4x8192\n c: conv 16x16 -> 24576, groups 8192, pad same }"
                .to_string(),
        ];
        // Overlapping tails copy fewer channels than they follow: less
        // than twice the weights.
        let tails = [
            format!("layer a {{ input {k}x{k}x1\n d: depthwise {k}x{k}, multiplier 5 }}"),
            "layer a { input 4x4x1024\n c: conv 32x32 -> 17, pad same, bias }".to_string(),
            "layer a { input 4x4x17\n d: depthwise 1024x1024, pad same, bias }".to_string(),
        ];
        let tail = stages.len();
        for (i, src) in stages.iter().chain(&tails).enumerate() {
            let stage = one_stage(src);
            let arrays = stage.weight_len() + stage.bias_key.as_ref().map_or(0, |_| stage.output.c);
            for target in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                let p = plan_for(&stage, &target);
                let most = if i < tail {
                    arrays + arrays / 10
                } else {
                    2 * arrays
                };
                let bound = most + (PACK_SLACK_BYTES + PACK_ROW_BYTES) / 4 + MAX_LANES;
                assert!(
                    p.packed_len <= bound,
                    "{src} on {:?}: {} packed floats for {arrays} weights",
                    target.backend,
                    p.packed_len
                );
                assert!(p.pack_copies().len() <= 64, "{src}: {:?}", p.pack_copies());
            }
        }
    }

    /// A small one-channel stage keeps whole vectors per unit (and its row
    /// vectors); above [`PACK_SLACK_BYTES`] of zero lanes it is compact,
    /// and row vectors of more than [`PACK_ROW_BYTES`] are not made.
    #[test]
    fn only_costly_padding_is_compacted() {
        let t = Target::AVX512;
        let small = plan_for(
            &one_stage("layer a { input 9x40x3\n d: depthwise 3x3, pad same }"),
            &t,
        );
        assert!(!small.compact && small.row_weights_off.is_some());
        let pw = one_stage("layer a { input 7x7x144\n p: pointwise 24 }");
        assert!(!plan_for(&pw, &t).compact);
        // 4900 taps x 15 zero lanes: 294 KB on 16 lanes, 137 KB on 8.
        let dw = one_stage("layer a { input 80x80x1\n d: depthwise 70x70 }");
        assert!(plan_for(&dw, &t).compact);
        assert!(!plan_for(&dw, &Target::AVX2).compact);
        let rgb = one_stage("layer a { input 90x90x3\n d: depthwise 40x40, pad same }");
        assert!(plan_for(&rgb, &t).row_weights_off.is_some());
        let rgb = one_stage("layer a { input 190x190x3\n d: depthwise 160x160, pad same }");
        let p = plan_for(&rgb, &t);
        assert_eq!((p.compact, p.row_weights_off), (true, None));
    }
}
