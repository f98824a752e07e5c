//! Random layers as `.conv` text (proptest strategies): the one generator
//! that the JIT's property tests (`crates/jit/tests/prop.rs`) and
//! `convjit fuzz` share. Each draws a [`LayerCase`] from [`layer_case`]; the
//! property tests shrink failures with proptest's runner, `convjit fuzz`
//! with the same value trees ([`case_runner`], [`draw_valid`], [`shrink`]).
//! Built with this crate's `proptest` feature.

use crate::{Layer, Rng};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The ranges a random layer's numbers are drawn from (upper bounds
/// exclusive, lower bounds 1 or 0 as the language needs).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Input height below this.
    pub size: usize,
    /// Input width below this.
    pub width: usize,
    /// Input channels and conv / pointwise outputs below this.
    pub channels: usize,
    /// Kernel height and width below this.
    pub kernel: usize,
    /// Strides and dilations below this.
    pub step: usize,
    /// Explicit padding below this.
    pub pad: usize,
    /// Depth multipliers below this.
    pub multiplier: usize,
    /// Stages (before the optional residual one) below this.
    pub stages: usize,
    /// Batch below this.
    pub batch: usize,
}

impl Limits {
    /// The property tests': up to 24x40x70 (every tail and border class
    /// of 4, 8 and 16 lanes), 7x7 kernels, three stages.
    pub const PROPTEST: Limits = Limits {
        size: 25,
        width: 41,
        channels: 71,
        kernel: 8,
        step: 4,
        pad: 4,
        multiplier: 5,
        stages: 4,
        batch: 4,
    };

    /// `convjit fuzz`'s: small enough to compile and check thousands a
    /// second, large enough for channel tails of 16-lane vectors and
    /// every border class of a 3x3 kernel.
    pub const SMALL: Limits = Limits {
        size: 7,
        width: 7,
        channels: 18,
        kernel: 4,
        step: 3,
        pad: 3,
        multiplier: 3,
        stages: 3,
        batch: 3,
    };
}

#[derive(Debug, Clone)]
struct StageSpec {
    op: u8, // 0 conv, 1 depthwise, 2 pointwise, 3 separable depthwise, 4 separable spatial
    k: (usize, usize),
    cout: usize,
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: u8, // 0 same, 1 valid, 2 explicit
    explicit: (usize, usize, usize, usize),
    multiplier: usize,
    /// A conv or pointwise stage is grouped when this is below 3 (one in
    /// three); it then picks among the divisors of its input channels.
    groups: (u8, usize),
    bias: bool,
    act: u8,
}

fn stage_spec(l: Limits) -> impl Strategy<Value = StageSpec> {
    (
        (0u8..5, 1..l.kernel, 1..l.kernel, 1..l.channels),
        (1..l.step, 1..l.step, 1..l.step, 1..l.step),
        (0u8..3, (0..l.pad, 0..l.pad, 0..l.pad, 0..l.pad)),
        (1..l.multiplier, any::<bool>(), 0u8..3, any::<bool>()),
        (0u8..9, 0..64usize),
    )
        .prop_map(
            |(
                (op, kh, kw, cout),
                (sh, sw, dh, dw),
                (pad, explicit),
                (m, bias, act, square),
                groups,
            )| {
                StageSpec {
                    op,
                    k: if square { (kh, kh) } else { (kh, kw) },
                    cout,
                    stride: if square { (sh, sh) } else { (sh, sw) },
                    dilation: if square { (dh, dh) } else { (dh, dw) },
                    pad,
                    explicit,
                    multiplier: m,
                    groups,
                    bias,
                    act,
                }
            },
        )
}

/// The text of stage `i` reading `ci` channels, and its output channels.
fn stage_text(i: usize, s: &StageSpec, ci: usize) -> (String, usize) {
    let (kh, kw) = s.k;
    // Grouped conv / pointwise: G a divisor of `ci` (more than one where
    // `ci` has any), the outputs rounded up to a multiple of G.
    let (mut groups, mut cout) = (1, s.cout);
    if matches!(s.op, 0 | 2) && s.groups.0 < 3 {
        let divisors: Vec<usize> = (2..=ci).filter(|g| ci.is_multiple_of(*g)).collect();
        if !divisors.is_empty() {
            groups = divisors[s.groups.1 % divisors.len()];
            cout = cout.div_ceil(groups) * groups;
        }
    }
    let mut t = match s.op {
        0 | 3 | 4 => format!("s{i}: conv {kh}x{kw} -> {cout}"),
        1 => format!("s{i}: depthwise {kh}x{kw}"),
        _ => format!("s{i}: pointwise {cout}"),
    };
    if groups > 1 {
        t += &format!(", groups {groups}");
    }
    if s.op != 2 {
        t += &format!(", stride {}x{}", s.stride.0, s.stride.1);
        t += &format!(", dilation {}x{}", s.dilation.0, s.dilation.1);
        t += match s.pad {
            0 => ", pad same".to_string(),
            1 => ", pad valid".to_string(),
            _ => {
                let (a, b, c, d) = s.explicit;
                format!(", pad {a} {b} {c} {d}")
            }
        }
        .as_str();
    }
    if (s.op == 1 || s.op == 3) && s.multiplier > 1 {
        t += &format!(", multiplier {}", s.multiplier);
    }
    if s.op == 3 {
        t += ", separable depthwise";
    }
    if s.op == 4 {
        t += ", separable spatial";
    }
    if s.bias {
        t += ", bias";
    }
    t += ["", ", relu", ", relu6"][s.act as usize];
    let out = match s.op {
        1 => ci * if s.multiplier > 1 { s.multiplier } else { 1 },
        _ => cout,
    };
    (t, out)
}

/// A random layer (`.conv` text with one layer, `t`) and the data to run
/// it on. The text may not validate (an output can come out empty): users
/// skip those.
#[derive(Debug, Clone)]
pub struct LayerCase {
    /// The layer's `.conv` text.
    pub src: String,
    /// Images per run.
    pub batch: usize,
    /// Seed of the weights (`Weights::random`) and, xor `0x5555`, of the input.
    pub seed: u64,
    /// Input scale: large values make relu6 clamp and relu cut.
    pub scale: f32,
}

/// Random layers within `limits`: one to `limits.stages - 1` random stages,
/// sometimes followed by a stage that restores the input shape and adds
/// the residual.
pub fn layer_case(limits: Limits) -> impl Strategy<Value = LayerCase> {
    (
        (1..limits.size, 1..limits.width, 1..limits.channels),
        prop::collection::vec(stage_spec(limits), 1..limits.stages),
        (0u8..3, 1..limits.kernel.min(6)),
        (
            1..limits.batch,
            any::<u64>(),
            prop::sample::select(vec![0.5f32, 4.0, 20.0]),
        ),
    )
        .prop_map(|((h, w, c), stages, (res, rk), (batch, seed, scale))| {
            let mut ci = c;
            let mut lines: Vec<String> = stages
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let (t, out) = stage_text(i, s, ci);
                    ci = out;
                    t
                })
                .collect();
            // A final stage that restores the input shape, with a residual.
            let n = lines.len();
            match res {
                1 => lines.push(format!("r{n}: pointwise {c}, bias, residual")),
                2 => lines.push(format!(
                    "r{n}: depthwise {rk}x{rk}, pad same, relu, residual"
                )),
                _ => {}
            }
            let src = format!(
                "layer t {{\n  input {h}x{w}x{c}\n  {}\n}}\n",
                lines.join("\n  ")
            );
            LayerCase {
                src,
                batch,
                seed,
                scale,
            }
        })
}

/// Random layers that Winograd computes (`crate::winograd`): one
/// ungrouped 3x3 or 5x5 conv of stride 1 within `limits`' sizes and channels,
/// `same`, `valid` or explicit padding, bias, activation and, where the
/// output has the input's shape, sometimes the residual.
pub fn winograd_case(limits: Limits) -> impl Strategy<Value = LayerCase> {
    (
        (1..limits.size, 1..limits.width),
        (1..limits.channels, 1..limits.channels),
        (
            0u8..3,
            (0..limits.pad, 0..limits.pad, 0..limits.pad, 0..limits.pad),
        ),
        (
            any::<bool>(),
            0u8..3,
            any::<bool>(),
            prop::sample::select(vec![3usize, 5]),
        ),
        (
            1..limits.batch,
            any::<u64>(),
            prop::sample::select(vec![0.5f32, 4.0, 20.0]),
        ),
    )
        .prop_map(
            |(
                (h, w),
                (c, cout),
                (pad, (a, b, l, r)),
                (bias, act, residual, k),
                (batch, seed, scale),
            )| {
                // The residual needs the output to have the input's shape.
                let residual = residual && pad == 0;
                let cout = if residual { c } else { cout };
                let pad = match pad {
                    0 => "same".to_string(),
                    1 => "valid".to_string(),
                    _ => format!("{a} {b} {l} {r}"),
                };
                let mut t = format!("w: conv {k}x{k} -> {cout}, pad {pad}");
                t += if bias { ", bias" } else { "" };
                t += ["", ", relu", ", relu6"][act as usize];
                t += if residual { ", residual" } else { "" };
                LayerCase {
                    src: format!("layer t {{\n  input {h}x{w}x{c}\n  {t}\n}}\n"),
                    batch,
                    seed,
                    scale,
                }
            },
        )
}

/// Random layers of two to five stages around a 3x3 stride-1 conv that
/// Winograd computes (an imported ResNet bottleneck's shape): a
/// pointwise stage before it or not; after it nothing, a pointwise, a
/// depthwise or a second such conv; and, where the shapes allow, a
/// pointwise stage that restores the input's channels and adds the
/// residual. At least two stages.
pub fn winograd_chain_case(limits: Limits) -> impl Strategy<Value = LayerCase> {
    (
        (1..limits.size, 1..limits.width, 1..limits.channels),
        (any::<bool>(), 1..limits.channels, 1..limits.channels),
        (
            0u8..3,
            (0..limits.pad, 0..limits.pad, 0..limits.pad, 0..limits.pad),
        ),
        (0u8..4, 1..limits.channels, any::<bool>(), 0u8..3),
        (
            1..limits.batch,
            any::<u64>(),
            prop::sample::select(vec![0.5f32, 4.0, 20.0]),
        ),
    )
        .prop_map(
            |(
                (h, w, c),
                (pre, pc, cc),
                (pad, (a, b, l, r)),
                (after, ac, residual, act),
                (batch, seed, scale),
            )| {
                let act = ["", ", relu", ", relu6"][act as usize];
                let mut lines = Vec::new();
                if pre {
                    lines.push(format!("p: pointwise {pc}, bias{act}"));
                }
                let pad_text = match pad {
                    0 => "same".to_string(),
                    1 => "valid".to_string(),
                    _ => format!("{a} {b} {l} {r}"),
                };
                lines.push(format!("w: conv 3x3 -> {cc}, pad {pad_text}, bias{act}"));
                match after {
                    1 => lines.push(format!("q: pointwise {ac}, bias{act}")),
                    2 => lines.push(format!("d: depthwise 3x3, pad same{act}")),
                    3 => lines.push(format!("v: conv 3x3 -> {ac}, pad same, bias{act}")),
                    _ => {}
                }
                // The residual needs the input's height and width back.
                if (residual && pad == 0) || lines.len() == 1 {
                    let res = if pad == 0 { ", residual" } else { "" };
                    lines.push(format!("r: pointwise {c}, bias{res}"));
                }
                LayerCase {
                    src: format!(
                        "layer t {{\n  input {h}x{w}x{c}\n  {}\n}}\n",
                        lines.join("\n  ")
                    ),
                    batch,
                    seed,
                    scale,
                }
            },
        )
}

/// Case `i` of seed `seed`: its own proptest runner, so a case does not
/// depend on which thread drew it or what was drawn before (`convjit
/// fuzz --seed S`: case i is the same on every machine).
pub fn case_runner(seed: u64, i: u64) -> TestRunner {
    let mut rng = Rng::new(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let bytes: Vec<u8> = (0..4).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// A case of `strategy` whose text validates, drawn again until one does
/// (an output can come out empty): its value tree, to shrink, and its layer.
pub fn draw_valid<S: Strategy<Value = LayerCase>>(
    strategy: &S,
    runner: &mut TestRunner,
) -> (S::Tree, Layer) {
    loop {
        let tree = strategy
            .new_tree(runner)
            .expect("the strategies have no filters");
        if let Ok(mut l) = crate::compile_source(&tree.current().src) {
            return (tree, l.remove(0));
        }
    }
}

/// [`shrink`] stops after this many simplification steps.
pub const MAX_SHRINK_STEPS: usize = 2000;

/// proptest's shrinking, driven by hand (a fuzz loop has no test runner
/// around it): simplify while the case fails (`fails` gives its failure),
/// step back (complicate) when a simplification passes. Returns the
/// smallest failing case found and its failure; `message` is the failure
/// of the tree's current case.
pub fn shrink<T: ValueTree<Value = LayerCase>>(
    tree: &mut T,
    message: String,
    mut fails: impl FnMut(&LayerCase) -> Option<String>,
) -> (LayerCase, String) {
    let mut best = (tree.current(), message);
    let mut steps = 0;
    if !tree.simplify() {
        return best;
    }
    while steps < MAX_SHRINK_STEPS {
        steps += 1;
        let current = tree.current();
        match fails(&current) {
            Some(m) => {
                best = (current, m);
                if !tree.simplify() {
                    break;
                }
            }
            None => {
                if !tree.complicate() {
                    break;
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_small_cases_validate_and_some_are_grouped() {
        let mut runner = TestRunner::deterministic();
        let strategy = layer_case(Limits::SMALL);
        let (mut valid, mut grouped) = (0, 0);
        for _ in 0..200 {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            if crate::compile_source(&case.src).is_ok() {
                valid += 1;
                grouped += usize::from(case.src.contains("groups"));
            }
        }
        assert!(valid > 50, "only {valid} of 200 random layers validate");
        assert!(
            grouped > 10,
            "only {grouped} valid layers have a grouped stage"
        );
    }

    fn input_channels(case: &LayerCase) -> usize {
        let line = case
            .src
            .lines()
            .find(|l| l.trim().starts_with("input"))
            .unwrap();
        line.rsplit('x').next().unwrap().parse().unwrap()
    }

    #[test]
    fn shrinking_finds_the_smallest_failing_case() {
        // A "bug" that shows with 5 or more input channels: shrinking ends
        // at exactly 5, with one stage and the smallest batch.
        let strategy = layer_case(Limits::SMALL);
        let mut r = case_runner(1, 0);
        let mut tree = loop {
            let t = strategy.new_tree(&mut r).unwrap();
            if input_channels(&t.current()) >= 9 {
                break t;
            }
        };
        let (small, message) = shrink(&mut tree, "first".into(), |c| {
            (input_channels(c) >= 5).then(|| format!("{} channels", input_channels(c)))
        });
        assert_eq!(input_channels(&small), 5, "{}", small.src);
        assert_eq!(message, "5 channels");
        assert_eq!(small.batch, 1);
        assert_eq!(
            small.src.lines().filter(|l| l.contains(':')).count(),
            1,
            "{}",
            small.src
        );
    }

    #[test]
    fn cases_do_not_depend_on_order() {
        let strategy = layer_case(Limits::SMALL);
        let a = strategy.new_tree(&mut case_runner(9, 4)).unwrap().current();
        let _ = strategy.new_tree(&mut case_runner(9, 3)).unwrap().current();
        let b = strategy.new_tree(&mut case_runner(9, 4)).unwrap().current();
        assert_eq!(a.src, b.src);
        assert_eq!(a.seed, b.seed);
    }

    #[test]
    fn drawn_cases_validate() {
        let strategy = layer_case(Limits::SMALL);
        for i in 0..20 {
            let (tree, layer) = draw_valid(&strategy, &mut case_runner(3, i));
            let again = crate::compile_source(&tree.current().src).unwrap();
            assert_eq!(again[0], layer);
        }
    }

    #[test]
    fn winograd_cases_are_layers_winograd_computes() {
        let strategy = winograd_case(Limits::SMALL);
        let (mut residual, mut explicit, mut five) = (0, 0, 0);
        for i in 0..100 {
            let (tree, layer) = draw_valid(&strategy, &mut case_runner(5, i));
            let src = tree.current().src;
            assert_eq!(crate::winograd::refusal(&layer), None, "{src}");
            residual += usize::from(layer.stages[0].residual);
            explicit += usize::from(!src.contains("same") && !src.contains("valid"));
            five += usize::from(layer.stages[0].kernel == [5, 5]);
        }
        assert!(
            residual > 5 && explicit > 5 && five > 20,
            "{residual} residual, {explicit} explicit, {five} 5x5"
        );
    }
}
