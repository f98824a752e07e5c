//! Threads sharing a stage's output channels: the shares
//! ([`channel_shares`]) and the plan of one share ([`plan_channels`]),
//! for a conv or pointwise stage alone whose rows divide badly among the
//! threads ([`crate::layer_plan::Split::Channels`]).

use super::geometry::MAX_IN_LANES_OUTPUTS;
use super::stage::{plan_for, planned_stage, StagePlan, Strategy};
use super::target::{stage_target, Target};
use convjit_ir::{Stage, StageKind};

/// A conv or pointwise stage of one group: the stages whose output
/// channels threads may share ([`channel_shares`], [`plan_channels`]).
fn one_group_reduce(stage: &Stage) -> bool {
    matches!(
        stage.kind,
        StageKind::Conv { groups: 1, .. } | StageKind::Pointwise { groups: 1, .. }
    )
}

/// `stage` (conv or pointwise, one group) computing only its output
/// channels `c0..c1`: the stage [`plan_channels`] plans and
/// [`channel_shares`] checks.
fn channel_stage(stage: &Stage, c0: usize, c1: usize) -> Stage {
    let mut s = stage.clone();
    s.output.c = c1 - c0;
    s.kind = match s.kind {
        StageKind::Conv { groups, .. } => StageKind::Conv {
            cout: c1 - c0,
            groups,
        },
        StageKind::Pointwise { groups, .. } => StageKind::Pointwise {
            cout: c1 - c0,
            groups,
        },
        k => k,
    };
    s
}

/// The output channels of a conv/pointwise stage (one group) that each of
/// `threads` threads computes when they split them
/// ([`crate::layer_plan::Split::Channels`]): contiguous ranges of whole
/// vectors of `target`'s lanes, as even as they go (`V = ceil(Co /
/// lanes)` vectors, thread `t` from vector `V*t/T` to `V*(t+1)/T`, the
/// last ending at Co). Each share is planned as a stage of its own
/// channels ([`plan_channels`]), so no two threads write the same float
/// (a tail vector overlaps only its own share's). `None` where the stage
/// cannot split so: depthwise or grouped, fewer vectors than threads, or
/// a share that would be planned as another kind of stage (2 or 4
/// channels of a one-channel input: [`planned_stage`]) or of a few
/// ([`super::inputs_in_lanes_ok`]).
pub fn channel_shares(
    stage: &Stage,
    target: &Target,
    threads: usize,
) -> Option<Vec<(usize, usize)>> {
    let t = stage_target(stage, target);
    if !one_group_reduce(stage) || threads < 2 || planned_stage(stage, &t).kind != stage.kind {
        return None;
    }
    let (co, lanes) = (stage.output.c, t.lanes);
    let v = co.div_ceil(lanes);
    if v < threads {
        return None;
    }
    let shares: Vec<(usize, usize)> = (0..threads)
        .map(|i| {
            (
                v * i / threads * lanes,
                (v * (i + 1) / threads * lanes).min(co),
            )
        })
        .collect();
    // A share of up to 4 channels could put its inputs in lanes, its
    // pixels' outputs stored side by side, where they are `co` apart.
    // (Asked of the generator alone: the runtime's program and the layer
    // plan ask with and without the precision's units.)
    let kept = shares.iter().all(|&(a, b)| {
        let s = channel_stage(stage, a, b);
        planned_stage(&s, &t).kind == s.kind && !(b - a <= MAX_IN_LANES_OUTPUTS && t.direct())
    });
    kept.then_some(shares)
}

/// The plan of `stage` (conv or pointwise, one group; see
/// [`channel_shares`]) for its output channels `c0..c1` only: planned as
/// the stage with `c1 - c0` outputs (its blocking, runs and packed
/// weights are that stage's), then placed among all the channels: `co`
/// is the stage's (the output pixel stride), every run's output channels
/// and every unit's lanes start at `c0` (packing picks those channels'
/// weights and bias).
pub fn plan_channels(stage: &Stage, target: &Target, c0: usize, c1: usize) -> StagePlan {
    assert!(
        one_group_reduce(stage) && c0 < c1 && c1 <= stage.output.c,
        "stage '{}': channels {c0}..{c1} of a {:?}",
        stage.name,
        stage.kind
    );
    let mut p = plan_for(&channel_stage(stage, c0, c1), target);
    assert_eq!(
        p.strategy,
        Strategy::Reduce,
        "stage '{}': channels {c0}..{c1} planned as another kind of stage",
        stage.name
    );
    p.co = stage.output.c;
    for run in &mut p.runs {
        run.out_base += c0;
        for unit in &mut run.units {
            for o in unit.lanes.iter_mut().flatten() {
                *o += c0;
            }
        }
    }
    p.channels = (c0, c1);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage_plan::packing::{pack, tests::unpack};
    use crate::stage_plan::runs::OutDst;

    #[test]
    fn a_share_of_the_channels_packs_their_weights() {
        for (src, threads) in [
            ("layer p { input 7x7x20\n p: pointwise 37, bias }", 2),
            ("layer p { input 7x7x20\n p: pointwise 37, bias }", 3),
            (
                "layer c { input 9x8x5\n c: conv 3x3 -> 100, pad same, bias }",
                3,
            ),
            (
                "layer c { input 9x8x3\n c: conv 3x3 -> 64, stride 2, pad same }",
                2,
            ),
        ] {
            let stage = convjit_ir::compile_source(src).unwrap().remove(0).stages[0].clone();
            let taps = stage.kernel[0] * stage.kernel[1] * stage.input.c;
            let (co, n) = (stage.output.c, taps * stage.output.c);
            let weight: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
            let bias: Vec<f32> = (0..co).map(|i| -(i as f32) - 1.0).collect();
            let bias = stage.bias_key.as_ref().map(|_| &bias[..]);
            for target in [Target::CRANELIFT, Target::AVX2, Target::AVX512] {
                let whole = plan_for(&stage, &target);
                let all = unpack(&whole, &pack(&whole, &weight, bias));
                let shares = channel_shares(&stage, &target, threads).unwrap();
                let mut covered = 0;
                for &(c0, c1) in &shares {
                    assert!(
                        c0.is_multiple_of(target.lanes) && c0 == covered,
                        "{shares:?}"
                    );
                    covered = c1;
                    let p = plan_channels(&stage, &target, c0, c1);
                    assert_eq!((p.co, p.channels), (co, (c0, c1)));
                    // Its stores stay among its channels.
                    for run in &p.runs {
                        for rep in 0..run.count {
                            let base = run.out_base + rep * run.out_stride;
                            for unit in &run.units {
                                let stored: Vec<usize> = match &unit.out {
                                    OutDst::Vector(c) => (0..target.lanes).map(|l| c + l).collect(),
                                    OutDst::Lanes(l) => l.iter().map(|&(_, c)| c).collect(),
                                    other => panic!("{other:?}"),
                                };
                                assert!(
                                    stored.iter().all(|c| (c0..c1).contains(&(base + c))),
                                    "{src}, {target:?}, channels {c0}..{c1}: {stored:?} from {base}"
                                );
                            }
                        }
                    }
                    let got = unpack(&p, &pack(&p, &weight, bias));
                    let want: std::collections::BTreeMap<_, _> = all
                        .iter()
                        .filter(|((_, o), _)| (c0..c1).contains(o))
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    assert_eq!(got, want, "{src}, {target:?}, channels {c0}..{c1}");
                }
                assert_eq!(covered, co);
            }
        }
    }

    #[test]
    fn channels_split_only_where_every_share_stays_a_conv() {
        let stage =
            |src: &str| convjit_ir::compile_source(src).unwrap().remove(0).stages[0].clone();
        let t = Target::AVX512;
        let dw = stage("layer d { input 7x7x64\n d: depthwise 3x3 }");
        assert_eq!(channel_shares(&dw, &t, 2), None);
        let grouped = stage("layer g { input 7x7x64\n p: pointwise 64, groups 2 }");
        assert_eq!(channel_shares(&grouped, &t, 2), None);
        let narrow = stage("layer n { input 7x7x64\n p: pointwise 16 }");
        assert_eq!(channel_shares(&narrow, &t, 2), None);
        // 16 + 4 channels of a grey image: the share of 4 would be a
        // depthwise stage with multiplier 4.
        let grey = stage("layer f { input 9x40x1\n f: conv 3x3 -> 20, pad same }");
        assert_eq!(channel_shares(&grey, &t, 2), None);
        // 8 + 1 on AVX2: the share of one would put its inputs in lanes.
        let nine = stage("layer p { input 7x7x64\n p: pointwise 9 }");
        assert_eq!(channel_shares(&nine, &Target::AVX2, 2), None);
        let pw = stage("layer p { input 7x7x1024\n p: pointwise 1000 }");
        assert_eq!(
            channel_shares(&pw, &t, 3),
            Some(vec![(0, 336), (336, 672), (672, 1000)])
        );
    }
}
