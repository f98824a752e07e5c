//! A layer plan turned into what `Kernel::run` replays for every image:
//! the stage functions to compile (one per stage, each computing any
//! range of its output rows; one per thread's share of the output
//! channels where threads split those) and, per group and thread, a list
//! of steps: which rows of which stage, from where to where. Everything
//! is decided here, at compile time; running is a loop over steps.

use crate::layer_plan::{chunks, Group, LayerPlan, Split};
use crate::stage_plan::{StagePlan, Target};
use crate::{rows, stage_plan};
use convjit_ir::{Layer, Stage};
use std::collections::HashMap;

/// Where a step reads or writes, as an offset in values (f32s, or bf16s
/// where the stage's output is kept in bf16: [`Program::value_bytes`])
/// from the start of the group's input image, output image, or a band
/// buffer of its thread.
/// A call's input is where its stage's input row 0 is or would be: for a
/// band of rows held in a buffer that can lie before the buffer (a
/// negative offset); the function reads only the rows it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// In the group's input image (the layer's, or the previous group's
    /// output tensor).
    GroupIn(isize),
    /// In the group's output image.
    GroupOut(isize),
    /// In band buffer `.0` of the thread.
    Buf(usize, isize),
}

/// One step of a thread's part of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run function `f` on output rows `row0..row0 + rows` of its stage
    /// (pixels for a flat stage: `stage_plan::call_range`); `dst` is where the
    /// first goes.
    Call {
        /// The function ([`Program::functions`]).
        f: usize,
        /// Where its stage's input row 0 is (or would be).
        src: Loc,
        /// Where its first output row goes.
        dst: Loc,
        /// Offset in the layer's input image of what `residual` adds.
        residual: usize,
        /// First output row (pixel) computed.
        row0: usize,
        /// Output rows (pixels) computed.
        rows: usize,
    },
    /// Move `len` values of buffer `buf` from `from` to its start, keeping
    /// rows the next band needs again.
    Shift {
        /// The band buffer.
        buf: usize,
        /// First value moved.
        from: usize,
        /// Values moved.
        len: usize,
    },
}

/// The steps of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupProgram {
    /// Stage index of the group's last stage (its output is the group's).
    pub last: usize,
    /// One list of steps per thread.
    pub threads: Vec<Vec<Step>>,
    /// Values of each band buffer (the same for every thread), one per
    /// stage of the group but its last: f32s, or bf16s where
    /// [`Program::bf16`] says ([`Program::buffer_floats`]).
    pub buffers: Vec<usize>,
}

/// A function to compile: a layer stage, or a thread's share of its
/// output channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// The stage's index in the layer (whose weights it packs).
    pub index: usize,
    /// The stage (all its output channels, whatever the share).
    pub stage: Stage,
    /// The output channels it computes: `(0, Co)`, or a share
    /// ([`Split::Channels`]).
    pub channels: (usize, usize),
    /// The stage before, which it computes first in registers (a
    /// filter's pair, [`stage_plan::column_pair`]): the function reads
    /// that stage's input.
    pub column: Option<Stage>,
}

impl Function {
    /// Its plan for `target`'s generator ([`stage_plan::plan_channels`] for a
    /// share of the channels).
    pub fn plan(&self, target: &Target) -> StagePlan {
        if let Some(col) = &self.column {
            return stage_plan::plan_pair(col, &self.stage, target);
        }
        match self.channels {
            (0, c) if c == self.stage.output.c => stage_plan::plan_for(&self.stage, target),
            (c0, c1) => stage_plan::plan_channels(&self.stage, target, c0, c1),
        }
    }
}

/// What a kernel compiles and replays for every image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The functions to compile, each once; steps name them by index.
    pub functions: Vec<Function>,
    /// The steps of each group of the layer plan, in order.
    pub groups: Vec<GroupProgram>,
    /// Per layer stage, whether its output is stored as bf16 (2 bytes a
    /// value) wherever it is held, band buffer or tensor between groups
    /// (`stage_plan::bf16_intermediates`; all false unless the compiler
    /// sets them). Offsets and lengths stay in values: a value of such
    /// a stage is 2 bytes, not 4 ([`Program::value_bytes`]).
    pub bf16: Vec<bool>,
}

impl Program {
    /// Bytes of one value of stage `k`'s output as held between stages.
    pub fn value_bytes(&self, k: usize) -> usize {
        match self.bf16.get(k) {
            Some(true) => 2,
            _ => 4,
        }
    }

    /// Floats (4 bytes) of each band buffer of `g`: its values, halved
    /// (rounded up) where they are bf16.
    pub fn buffer_floats<'a>(
        &'a self,
        g: &'a GroupProgram,
    ) -> impl ExactSizeIterator<Item = usize> + 'a {
        let first = g.first();
        g.buffers
            .iter()
            .enumerate()
            .map(move |(j, &values)| (values * self.value_bytes(first + j)).div_ceil(4))
    }
}

impl GroupProgram {
    /// The group's first stage: buffer `j` holds stage `first + j`'s rows.
    pub fn first(&self) -> usize {
        self.last - self.buffers.len()
    }
}

/// The functions to compile for `layer` as `plan` runs it, and the steps
/// of each group.
pub fn program(layer: &Layer, plan: &LayerPlan) -> Program {
    let mut functions: Vec<Function> = Vec::new();
    let mut index: HashMap<(usize, (usize, usize)), usize> = HashMap::new();
    // The plans' target: where threads split channels, their shares.
    let target = Target::of(plan.options.backend);
    let mut pairs = vec![false; layer.stages.len()];
    for g in plan.groups.iter().filter(|g| plan.in_registers(layer, g)) {
        pairs[g.last] = true;
    }
    let mut function = |k: usize, channels: (usize, usize)| {
        *index.entry((k, channels)).or_insert_with(|| {
            functions.push(Function {
                index: k,
                stage: layer.stages[k].clone(),
                channels,
                column: pairs[k].then(|| layer.stages[k - 1].clone()),
            });
            functions.len() - 1
        })
    };
    let groups = plan
        .groups
        .iter()
        .map(|g| match pairs[g.last] {
            true => pair_steps(
                layer,
                g,
                function(g.last, (0, layer.stages[g.last].output.c)),
            ),
            false => group_steps(layer, g, &target, &mut function),
        })
        .collect();
    Program {
        functions,
        groups,
        bf16: vec![false; layer.stages.len()],
    }
}

/// Rows `[lo, hi)` of a buffered stage output, held from buffer row `base`.
#[derive(Clone, Copy)]
struct Held {
    lo: usize,
    hi: usize,
    base: usize,
}

/// The steps of group `g`, thread by thread: one call per thread for a
/// stage alone on whole tensors ([`whole_stage_calls`], [`flat_shares`]),
/// else its bands ([`band_steps`]). `function` gives the index of the
/// function of a stage and its output channels.
fn group_steps(
    layer: &Layer,
    g: &Group,
    target: &Target,
    function: &mut impl FnMut(usize, (usize, usize)) -> usize,
) -> GroupProgram {
    let last = &layer.stages[g.last];
    let all = (0, last.output.c);
    let alone = g.first == g.last && g.band_rows >= last.output.h;
    // One call over every row per thread: the whole stage on one thread,
    // or each thread's share of the output channels.
    let shares = match g.split {
        Split::Channels => {
            assert!(alone, "threads split the channels of a stage alone");
            stage_plan::channel_shares(last, target, g.threads)
                .expect("the layer plan split channels that split")
        }
        Split::Rows if alone && g.threads == 1 => vec![all],
        Split::Rows => vec![],
    };
    if !shares.is_empty() {
        return whole_stage_calls(last, g, shares, function);
    }
    if alone && stage_plan::is_flat(last) {
        return flat_shares(last, g, function(g.last, all));
    }
    band_steps(layer, g, function)
}

/// A stage alone computing every row: one call per thread, each of its
/// output channels `shares` (all of them, on one thread).
fn whole_stage_calls(
    stage: &Stage,
    g: &Group,
    shares: Vec<(usize, usize)>,
    function: &mut impl FnMut(usize, (usize, usize)) -> usize,
) -> GroupProgram {
    let (row0, rows) = stage_plan::call_range(stage, 0, stage.output.h);
    let threads = shares
        .into_iter()
        .map(|channels| {
            vec![Step::Call {
                f: function(g.last, channels),
                src: Loc::GroupIn(0),
                dst: Loc::GroupOut(0),
                residual: 0,
                row0,
                rows,
            }]
        })
        .collect();
    GroupProgram {
        last: g.last,
        threads,
        buffers: vec![],
    }
}

/// The rows of each stage of group `g` that the band `(a, b)` of its last
/// stage's output rows needs, by stage from `g.first`.
fn band_needs(layer: &Layer, g: &Group, (a, b): (usize, usize)) -> Vec<(usize, usize)> {
    let mut need = vec![(0, 0); g.last - g.first + 1];
    need[g.last - g.first] = (a, b);
    for k in (g.first + 1..=g.last).rev() {
        let (a, b) = need[k - g.first];
        let (lo, hi, _, _) = rows::input_rows(&layer.stages[k], a, b);
        need[k - 1 - g.first] = (lo, hi);
    }
    need
}

/// Group `g` band by band, each thread its contiguous share of the bands:
/// per band, a call of each stage on the rows it has not computed yet,
/// intermediate rows in band buffers (holding two of their largest bands,
/// so rows kept for the next band are shifted only when the end is
/// reached).
fn band_steps(
    layer: &Layer,
    g: &Group,
    function: &mut impl FnMut(usize, (usize, usize)) -> usize,
) -> GroupProgram {
    let stages = &layer.stages;
    let row = |k: usize| (stages[k].output.w * stages[k].output.c) as isize;
    let bands = chunks(stages[g.last].output.h, g.band_rows, g.threads);
    let mut cap = vec![0usize; g.last - g.first];
    for &band in bands.iter().flatten() {
        let need = band_needs(layer, g, band);
        for (k, &(a, b)) in need.iter().enumerate().take(cap.len()) {
            cap[k] = cap[k].max(2 * (b - a));
        }
    }
    let threads = bands
        .iter()
        .map(|chunk| thread_band_steps(layer, g, chunk, &cap, function))
        .collect();
    GroupProgram {
        last: g.last,
        threads,
        buffers: cap
            .iter()
            .enumerate()
            .map(|(j, &rows)| rows * row(g.first + j) as usize)
            .collect(),
    }
}

/// One thread's steps for its bands `chunk` of group `g`, its band
/// buffers of `cap` rows each.
// `k` indexes the layer's stages and, offset by `g.first`, the group's
// needs, held rows and buffers: a range loop says that best.
#[allow(clippy::needless_range_loop)]
fn thread_band_steps(
    layer: &Layer,
    g: &Group,
    chunk: &[(usize, usize)],
    cap: &[usize],
    function: &mut impl FnMut(usize, (usize, usize)) -> usize,
) -> Vec<Step> {
    let stages = &layer.stages;
    let row = |k: usize| (stages[k].output.w * stages[k].output.c) as isize;
    let in_row = |k: usize| (stages[k].input.w * stages[k].input.c) as isize;
    let mut steps = Vec::new();
    let mut held: Vec<Option<Held>> = vec![None; cap.len()];
    for &band in chunk {
        let need = band_needs(layer, g, band);
        for k in g.first..=g.last {
            let j = k - g.first;
            let (a, b) = need[j];
            // Rows of stage k to compute now, and where they go.
            let (from, dst_row) = if k == g.last {
                (a, Loc::GroupOut(a as isize * row(k)))
            } else {
                let keep = match held[j] {
                    Some(h) if a >= h.lo && a < h.hi => Some(h),
                    _ => None,
                };
                let (base, from) = match keep {
                    Some(h) => {
                        let base = h.base + (a - h.lo);
                        if base + (b - a) <= cap[j] {
                            (base, h.hi.min(b))
                        } else {
                            let len = (h.hi.min(b) - a) * row(k) as usize;
                            steps.push(Step::Shift {
                                buf: j,
                                from: base * row(k) as usize,
                                len,
                            });
                            (0, h.hi.min(b))
                        }
                    }
                    None => (0, a),
                };
                held[j] = Some(Held { lo: a, hi: b, base });
                (from, Loc::Buf(j, (base + from - a) as isize * row(k)))
            };
            if from >= b {
                continue;
            }
            // Where input row 0 is, or would be in the buffer that
            // holds rows lo.. of it.
            let src = if k == g.first {
                Loc::GroupIn(0)
            } else {
                let h = held[j - 1].expect("the previous stage's rows are held");
                Loc::Buf(j - 1, (h.base as isize - h.lo as isize) * in_row(k))
            };
            let (row0, rows) = stage_plan::call_range(&stages[k], from, b);
            steps.push(Step::Call {
                f: function(k, (0, stages[k].output.c)),
                src,
                dst: dst_row,
                residual: from * row(k) as usize,
                row0,
                rows,
            });
        }
    }
    steps
}

/// A filter's pair in registers (function `f`: the row stage's, reading
/// the column stage's input): each thread one call on its share of the
/// rows, the bands' rows put together (no band buffers).
fn pair_steps(layer: &Layer, g: &Group, f: usize) -> GroupProgram {
    let stage = &layer.stages[g.last];
    let row = stage.output.w * stage.output.c;
    let threads = chunks(stage.output.h, g.band_rows, g.threads)
        .iter()
        .map(|bands| match (bands.first(), bands.last()) {
            (Some(&(a, _)), Some(&(_, b))) => vec![Step::Call {
                f,
                src: Loc::GroupIn(0),
                dst: Loc::GroupOut((a * row) as isize),
                residual: a * row,
                row0: a,
                rows: b - a,
            }],
            _ => vec![],
        })
        .collect();
    GroupProgram {
        last: g.last,
        threads,
        buffers: vec![0],
    }
}

/// A flat stage (`stage_plan::is_flat`) alone on whole tensors: its threads
/// share the pixels evenly, not whole rows (7 rows on 2 threads would be
/// 4 against 3, and MobileNet's last pointwise stages are 7x7).
fn flat_shares(stage: &Stage, g: &Group, f: usize) -> GroupProgram {
    let (pixels, c) = (stage.output.h * stage.output.w, stage.output.c);
    let threads = (0..g.threads)
        .map(|t| {
            let (p0, p1) = (pixels * t / g.threads, pixels * (t + 1) / g.threads);
            vec![Step::Call {
                f,
                src: Loc::GroupIn(0),
                dst: Loc::GroupOut((p0 * c) as isize),
                residual: p0 * c,
                row0: p0,
                rows: p1 - p0,
            }]
        })
        .collect();
    GroupProgram {
        last: g.last,
        threads,
        buffers: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_plan::{plan_layer, Host, Options};
    use crate::Backend;

    #[test]
    fn a_flat_stage_shares_pixels_and_others_rows() {
        let host = Host {
            lanes: 4,
            vector_registers: 16,
            l1d_bytes: 32 << 10,
            l2_bytes: 1 << 20,
            cores: 2,
            tiles: false,
        };
        let options = Options {
            threads: 2,
            min_thread_cycles: 0,
            ..Options::default()
        };
        let calls = |src: &str| {
            let l = convjit_ir::compile_source(src).unwrap().remove(0);
            let p = program(&l, &plan_layer(&l, &options, &host));
            p.groups[0]
                .threads
                .iter()
                .map(|steps| match steps[..] {
                    [Step::Call {
                        dst, row0, rows, ..
                    }] => (dst, row0, rows),
                    _ => panic!("one call per thread: {steps:?}"),
                })
                .collect::<Vec<_>>()
        };
        // 49 pixels: 24 and 25, not rows 3 and 4.
        assert_eq!(
            calls("layer p { input 7x7x4\n p: pointwise 4, residual }"),
            [(Loc::GroupOut(0), 0, 24), (Loc::GroupOut(24 * 4), 24, 25)]
        );
        assert_eq!(
            calls("layer d { input 7x7x4\n d: depthwise 3x3, pad same }"),
            [(Loc::GroupOut(0), 0, 3), (Loc::GroupOut(3 * 7 * 4), 3, 4)]
        );
    }

    /// Threads split the output channels of MobileNet's 7x7x1024
    /// pointwise stage and of Inception's 17x17 7x1 conv (rows divide
    /// badly), not of a 56x56 one (they divide evenly), nor of a 7x7
    /// depthwise stage (only rows split).
    #[test]
    fn threads_split_channels_where_rows_divide_badly() {
        let host = Host {
            lanes: 16,
            vector_registers: 32,
            l1d_bytes: 48 << 10,
            l2_bytes: 2 << 20,
            cores: 2,
            tiles: false,
        };
        for backend in [Backend::Cranelift, Backend::Avx2, Backend::Avx512] {
            let split = |src: &str, threads: usize| {
                let l = convjit_ir::compile_source(src).unwrap().remove(0);
                let options = Options {
                    threads,
                    min_thread_cycles: 0,
                    backend,
                    ..Options::default()
                };
                let lp = plan_layer(&l, &options, &host);
                let p = program(&l, &lp);
                let g = &lp.groups[0];
                (g.split, g.threads, g.why.clone(), p)
            };
            // AVX2's blocks of 5 pixels divide 24 and 25 pixels as well as
            // 49: 5 and 5 blocks of 10.
            let (s, t, why, p) = split("layer p { input 7x7x1024\n p: pointwise 1024 }", 2);
            if backend.resolve() == Ok(Backend::Avx2) {
                assert_eq!((s, t), (Split::Rows, 2), "{backend}: {why}");
            } else {
                assert_eq!((s, t), (Split::Channels, 2), "{backend}: {why}");
                assert!(why.contains("2 threads share the output channels"), "{why}");
                assert_eq!(
                    p.functions.iter().map(|f| f.channels).collect::<Vec<_>>(),
                    [(0, 512), (512, 1024)]
                );
                for (i, steps) in p.groups[0].threads.iter().enumerate() {
                    assert_eq!(
                        steps[..],
                        [Step::Call {
                            f: i,
                            src: Loc::GroupIn(0),
                            dst: Loc::GroupOut(0),
                            residual: 0,
                            row0: 0,
                            rows: 49,
                        }]
                    );
                }
            }
            let (s, t, why, p) = split(
                "layer c { input 17x17x128\n c: conv 7x1 -> 128, pad same, bias, relu }",
                2,
            );
            assert_eq!((s, t), (Split::Channels, 2), "{backend}: {why}");
            assert!(why.contains("(rows: 8 and 9 of 17 rows)"), "{why}");
            let rows: Vec<_> = p.groups[0].threads.iter().map(|s| s[0].clone()).collect();
            assert!(
                rows.iter().all(|c| matches!(
                    c,
                    Step::Call {
                        row0: 0,
                        rows: 17,
                        ..
                    }
                )),
                "{rows:?}"
            );
            // 3 threads: rows 5, 6 and 6 of 17 do as well as vectors 2, 3
            // and 3 of 8 (16 lanes), 5, 5 and 6 of 16, 10, 11 and 11 of 32.
            let (s, _, why, _) = split(
                "layer c { input 17x17x128\n c: conv 7x1 -> 128, pad same, bias, relu }",
                3,
            );
            assert_eq!(s, Split::Rows, "{backend}: {why}");
            // Even rows: a tie, rows (each thread reads only its own).
            let (s, t, why, p) = split(
                "layer p { input 56x56x64\n p: conv 3x3 -> 64, pad same }",
                2,
            );
            assert_eq!((s, t), (Split::Rows, 2), "{backend}: {why}");
            assert!(
                why.contains("share the rows: 28 and 28 of 56 rows"),
                "{why}"
            );
            assert_eq!(p.functions.len(), 1);
            let (s, _, why, _) =
                split("layer d { input 7x7x1024\n d: depthwise 3x3, pad same }", 2);
            assert_eq!(s, Split::Rows, "{backend}: {why}");
            // One row: only channels can be shared.
            let (s, t, why, _) = split("layer p { input 1x1x256\n p: pointwise 256 }", 4);
            assert_eq!((s, t), (Split::Channels, 4), "{backend}: {why}");
            let (s, t, why, _) = split("layer p { input 1x3x256\n p: conv 1x3 -> 4 }", 4);
            assert_eq!((s, t), (Split::Rows, 1), "{backend}: {why}");
        }
    }
}
