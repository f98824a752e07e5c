//! The register blocks of a stage plan: the accumulator vectors of a
//! block ([`Unit`]: where its input comes from, where its lanes go) and
//! the runs of identical blocks across the channels ([`Run`]), as
//! [`unit_runs`] lays them out for each [`Strategy`].

use super::geometry::positions;
#[cfg(doc)]
use super::stage::StagePlan;
use super::stage::Strategy;
use super::target::MAX_LANES;
use convjit_ir::Stage;

/// Where a unit's input vector comes from (depthwise only), as a channel
/// offset from the block's input base.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InSrc {
    /// Conv/pointwise: inputs are broadcast scalars of the reduction.
    None,
    /// A vector of contiguous channels.
    Vector(usize),
    /// One channel broadcast to all lanes.
    Splat(usize),
    /// `n < lanes` contiguous channels (a full vector could read past the
    /// end of the buffer): loaded one by one, or by a masked load.
    Lanes(usize, usize),
}

/// Where a unit's result goes, as channel offsets from the block's output base.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OutDst {
    /// A vector of contiguous channels.
    Vector(usize),
    /// `(lane, channel)` pairs stored one by one (or by a masked store
    /// where they are lanes `0..n` to channels `c..c+n`).
    Lanes(Vec<(u8, usize)>),
    /// Depthwise with multiplier 2: this unit (`m = 0` of `lanes`
    /// channels) and the next (`m = 1`) interleave into `2 * lanes`
    /// contiguous channels from this one: shuffles and two stores instead
    /// of one store per lane.
    Pair(usize),
    /// The second unit of a [`OutDst::Pair`], stored by the first.
    Paired,
}

/// One accumulator vector per pixel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unit {
    /// Where its input vector comes from.
    pub input: InSrc,
    /// Where its result goes.
    pub out: OutDst,
    /// Output channel of each lane (for the first repetition of the run in
    /// group 0); `None` lanes get zero weights and bias (or, in a
    /// [`StagePlan::compact`] plan, whatever follows: their results are never
    /// stored).
    pub lanes: [Option<usize>; MAX_LANES],
    /// Float offset of the unit's weight vector in each (tap, reduction
    /// channel) step of its run, and of its bias vector in the run's bias:
    /// `u * lanes` (aligned), or where its lanes' floats are in a compact
    /// step (see [`StagePlan::compact`]).
    pub w_off: usize,
}

impl Unit {
    /// Lanes holding an output channel (the first ones).
    pub fn used(&self) -> usize {
        self.lanes.iter().take_while(|l| l.is_some()).count()
    }
}

/// A run of identical register blocks repeated `count` times, pointers
/// advancing by the strides each time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Run {
    /// Repetitions of the register block.
    pub count: usize,
    /// The block's accumulator vectors per pixel, in register order.
    pub units: Vec<Unit>,
    /// Input channel of the first repetition, from the group's first.
    pub in_base: usize,
    /// Output channel of the first repetition, from the group's first.
    pub out_base: usize,
    /// Byte offset of the first repetition's weights in the group's.
    pub w_base: usize,
    /// Byte offset of the first repetition's bias in the group's.
    pub bias_base: usize,
    /// Input channels from one repetition to the next.
    pub in_stride: usize,
    /// Output channels from one repetition to the next (where the code
    /// stores).
    pub out_stride: usize,
    /// Weight bytes from one repetition to the next.
    pub w_stride: usize,
    /// Bias bytes from one repetition to the next.
    pub bias_stride: usize,
    /// Output-channel shift per repetition (for packing: which channels'
    /// weights a repetition holds).
    pub weight_channel_stride: usize,
    /// Floats per (tap, reduction channel) step of a repetition's weights
    /// (and of its bias): `units x lanes`, or fewer in a compact plan.
    pub w_step: usize,
}

impl Run {
    /// Bytes of weights per tap (all `ci_per_tap` reduction channels).
    pub fn tap_bytes(&self, ci_per_tap: usize) -> usize {
        ci_per_tap * self.w_step * 4
    }

    /// Bytes from a step's weights (or a repetition's bias) to unit `u`'s vector.
    pub fn unit_bytes(&self, u: usize) -> usize {
        self.units[u].w_off * 4
    }
}

/// A run of `count` register blocks of `units` from the given channel
/// bases and strides; its weight layout is placed later
/// ([`super::packing::layout_weights`]).
fn run(
    count: usize,
    units: Vec<Unit>,
    (in_base, out_base): (usize, usize),
    (in_stride, out_stride): (usize, usize),
) -> Run {
    Run {
        count,
        units,
        in_base,
        out_base,
        in_stride,
        out_stride,
        weight_channel_stride: out_stride,
        w_base: 0,
        bias_base: 0,
        w_stride: 0,
        bias_stride: 0,
        w_step: 0,
    }
}

impl Unit {
    /// This unit with its channels relative to `in_base` and `out_base`
    /// (those of a remainder run's first repetition).
    fn rebased(mut self, in_base: usize, out_base: usize) -> Unit {
        self.input = match self.input {
            InSrc::Vector(c) => InSrc::Vector(c - in_base),
            InSrc::Lanes(c, n) => InSrc::Lanes(c - in_base, n),
            other => other,
        };
        self.out = match self.out {
            OutDst::Vector(c) => OutDst::Vector(c - out_base),
            OutDst::Lanes(l) => {
                OutDst::Lanes(l.into_iter().map(|(k, c)| (k, c - out_base)).collect())
            }
            OutDst::Pair(c) => OutDst::Pair(c - out_base),
            OutDst::Paired => OutDst::Paired,
        };
        self
    }
}

/// Appends to `runs` the runs of vector positions `pos` (see
/// [`positions`]): full blocks of `per_block` positions repeated (the
/// whole, aligned vectors), then one remainder block; each position
/// advances the input by `in_per_pos` channels and the output by
/// `out_per_pos`, and `mk` makes its units.
fn push_runs(
    runs: &mut Vec<Run>,
    lanes: usize,
    pos: &[(usize, usize)],
    per_block: usize,
    (in_per_pos, out_per_pos): (usize, usize),
    mk: &dyn Fn(usize, usize) -> Vec<Unit>,
) {
    let regular = pos
        .iter()
        .take_while(|&&(s, v)| v == lanes && s.is_multiple_of(lanes));
    let nreg = regular.count();
    let full = nreg / per_block;
    if full > 0 {
        let units: Vec<Unit> = pos[..per_block]
            .iter()
            .flat_map(|&(s, v)| mk(s, v))
            .collect();
        let strides = (per_block * in_per_pos, per_block * out_per_pos);
        runs.push(run(full, units, (0, 0), strides));
    }
    let rest = &pos[full * per_block..];
    if !rest.is_empty() {
        let (in_base, out_base) = (
            rest[0].0 / lanes * in_per_pos,
            rest[0].0 / lanes * out_per_pos,
        );
        // Offsets inside the remainder are relative to its base.
        let units: Vec<Unit> = rest
            .iter()
            .flat_map(|&(s, v)| mk(s, v))
            .map(|un| un.rebased(in_base, out_base))
            .collect();
        runs.push(run(1, units, (in_base, out_base), (0, 0)));
    }
}

/// The lanes `0..v` holding output channels `f(0)..f(v - 1)`, the others
/// none.
fn lanes_of(f: &dyn Fn(usize) -> usize, v: usize) -> [Option<usize>; MAX_LANES] {
    let mut l = [None; MAX_LANES];
    for (i, slot) in l.iter_mut().enumerate().take(v) {
        *slot = Some(f(i));
    }
    l
}

/// One unit whose lanes are the output channels `s..s + v`: a vector
/// store, or a masked (or lane by lane) one when `v` is short.
fn contiguous(input: InSrc, lanes: usize, s: usize, v: usize) -> Vec<Unit> {
    vec![Unit {
        input,
        out: if v == lanes {
            OutDst::Vector(s)
        } else {
            OutDst::Lanes((0..v).map(|l| (l as u8, s + l)).collect())
        },
        lanes: lanes_of(&|l| s + l, v),
        w_off: 0,
    }]
}

/// The runs of a stage planned with `strategy` over `groups` channel
/// groups, on vectors of `lanes` with `units` accumulator vectors per
/// pixel ([`super::Schedule::units`]), their weight layout not yet placed;
/// and the channel strides between groups `(g_in, g_out, g_weight_channel)` (see
/// [`StagePlan::groups`]).
pub(super) fn unit_runs(
    stage: &Stage,
    strategy: Strategy,
    groups: usize,
    lanes: usize,
    units: usize,
) -> (Vec<Run>, (usize, usize, usize)) {
    let (ci, co) = (stage.input.c, stage.output.c);
    let u = units;
    let mut runs = Vec::new();
    let strides = match strategy {
        // Per group: vectors over its `Co/G` outputs, reducing over its
        // `Ci/G` inputs (one group, the whole stage, without `groups`).
        Strategy::Reduce => {
            let pos = positions(co / groups, lanes);
            let mk = |s: usize, v: usize| contiguous(InSrc::None, lanes, s, v);
            push_runs(&mut runs, lanes, &pos, u, (0, lanes), &mk);
            // Strides between groups: none with one.
            let (gi, go) = match groups {
                1 => (0, 0),
                _ => (ci / groups, co / groups),
            };
            (gi, go, go)
        }
        Strategy::DwChannels => {
            let m = co / ci;
            let pos = positions(ci, lanes);
            let mk = |s: usize, v: usize| {
                (0..m)
                    .map(|mm| Unit {
                        input: if v == lanes {
                            InSrc::Vector(s)
                        } else {
                            InSrc::Lanes(s, v)
                        },
                        out: if m == 1 && v == lanes {
                            OutDst::Vector(s)
                        } else if m == 2 && v == lanes {
                            [OutDst::Pair(s * 2), OutDst::Paired][mm].clone()
                        } else {
                            OutDst::Lanes((0..v).map(|l| (l as u8, (s + l) * m + mm)).collect())
                        },
                        lanes: lanes_of(&|l| (s + l) * m + mm, v),
                        w_off: 0,
                    })
                    .collect()
            };
            push_runs(
                &mut runs,
                lanes,
                &pos,
                (u / m).max(1),
                (lanes, lanes * m),
                &mk,
            );
            (0, 0, 0)
        }
        Strategy::DwMultiplier => {
            let m = co / ci;
            let pos = positions(m, lanes);
            // Fewer outputs than lanes (wide vectors only): a whole vector
            // would write the next group's.
            let mk = |s: usize, v: usize| contiguous(InSrc::Splat(0), lanes, s, v);
            push_runs(&mut runs, lanes, &pos, u, (0, lanes), &mk);
            (1, m, m)
        }
    };
    (runs, strides)
}
