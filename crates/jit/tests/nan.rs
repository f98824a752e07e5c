//! NaN and infinities through every generator (the contract: NaN
//! propagates, `relu(NaN)` and `relu6(NaN)` are NaN; infinities follow
//! IEEE, `relu6(+inf) = 6`, `relu(-inf) = 0`): every epilogue shape with
//! known values, and random layers with NaN, +inf and -inf injected into
//! the input, weights and biases, whose outputs must be NaN exactly where
//! the interpreter's are, equal where infinite, and within the tolerance
//! elsewhere (`convjit_ir::compare`). Guard pages around every buffer, as
//! in the other tests.

mod common;

use common::{check_with, input, layer, run_guarded};
use convjit_ir::random_layer::{layer_case, LayerCase, Limits};
use convjit_ir::{compile_source, interpret, Layer, Rng, StageWeights, Weights};
use convjit_jit::Kernel;
use convjit_plan::{Backend, Fusion, Options};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::cell::Cell;

/// Values written over an input or weights: (position seed, value).
type Specials = [(u64, f32)];

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

/// The input values of the known-value layers, repeated along the input
/// (7 is prime to every lane and channel count here: each value reaches
/// every lane position).
const VALUES: [f32; 7] = [NAN, INF, -INF, 7.5, -1.5, 3.0, 0.25];

/// Layers whose output `o` is `act(x[o / M])` (weights 1, no bias; `M`
/// the multiplier), one per epilogue shape of the generators; each is run
/// with every activation, and with a residual where `M` is 1.
const IDENTITY: &[(&str, usize)] = &[
    // Conv/pointwise register blocks (each output reads its own channel).
    ("input 3x9x16\n p: pointwise 16, groups 16", 1),
    ("input 2x11x5\n p: pointwise 5, groups 5", 1),
    ("input 3x7x20\n c: conv 1x1 -> 20, groups 20", 1),
    // Depthwise channel vectors (20: an overlapping tail vector).
    ("input 3x9x20\n d: depthwise 1x1", 1),
    ("input 3x9x3\n d: depthwise 1x1", 1),
    // One channel: vectors along the row, two rows at a time.
    ("input 4x40x1\n d: depthwise 1x1", 1),
    // A few channels along the row, weights per phase.
    ("input 4x40x3\n d: depthwise 1x1", 1),
    // Multipliers: along the row with a permutation (one channel, 2 and
    // 4), interleaved pairs (2), vectors over the outputs (5).
    ("input 4x40x1\n d: depthwise 1x1, multiplier 2", 2),
    ("input 4x40x1\n d: depthwise 1x1, multiplier 4", 4),
    ("input 3x9x8\n d: depthwise 1x1, multiplier 2", 2),
    ("input 3x9x3\n d: depthwise 1x1, multiplier 2", 2),
    ("input 3x9x3\n d: depthwise 1x1, multiplier 5", 5),
];

/// The same value: both NaN, or equal (with the sign of an infinity).
fn same(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

fn relu6(x: f32) -> f32 {
    if x > 6.0 {
        6.0
    } else {
        relu(x)
    }
}

/// Every generator, threads 1 and 2.
fn every_generator() -> Vec<Options> {
    Backend::available()
        .into_iter()
        .flat_map(|backend| {
            [1, 2].map(|threads| Options {
                backend,
                threads,
                min_thread_cycles: 0,
                ..Options::default()
            })
        })
        .collect()
}

#[test]
fn activations_propagate_nan_and_clamp_infinities_on_every_generator() {
    for b in Backend::ALL {
        if !Backend::available().contains(&b) {
            println!("note: this CPU does not run the {b} generator: skipped");
        }
    }
    type Act = fn(f32) -> f32;
    let acts: [(&str, Act); 3] = [("", |x| x), ("relu", relu), ("relu6", relu6)];
    for &(body, m) in IDENTITY {
        for (act, f) in acts {
            for residual in [false, true] {
                if residual && m > 1 {
                    continue;
                }
                let opts: String = [act, if residual { "residual" } else { "" }]
                    .iter()
                    .filter(|o| !o.is_empty())
                    .map(|o| format!(", {o}"))
                    .collect();
                let src = format!("layer a {{ {body}{opts} }}");
                let l = layer(&src);
                let ones = vec![1.0; l.stages[0].weight_len()];
                let w = Weights::new(
                    &l,
                    vec![StageWeights {
                        weight: ones,
                        bias: None,
                    }],
                )
                .unwrap();
                for batch in [1, 2] {
                    let x: Vec<f32> = (0..batch * l.input.len())
                        .map(|i| VALUES[i % VALUES.len()])
                        .collect();
                    let want: Vec<f32> = (0..batch * l.output().len())
                        .map(|o| f(x[o / m]) + if residual { x[o] } else { 0.0 })
                        .collect();
                    let interp = interpret(&l, &w, &x, batch).unwrap();
                    let bad = (0..want.len()).find(|&o| !same(interp[o], want[o]));
                    assert!(bad.is_none(), "interpreter: {src}: output {bad:?}");
                    for o in every_generator() {
                        let k = Kernel::compile_with(&l, &w, &o).unwrap();
                        let got = run_guarded(&k, &x, batch).unwrap();
                        if let Some(i) = (0..want.len()).find(|&i| !same(got[i], want[i])) {
                            panic!(
                                "{} ({} threads), batch {batch}: {src}: output {i} of x = {}: got {}, want {}",
                                o.backend,
                                o.threads,
                                x[i / m],
                                got[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `x` with `specials` (position seed, value) written over it.
fn inject(x: &mut [f32], specials: &Specials) {
    if x.is_empty() {
        return;
    }
    for &(at, v) in specials {
        let n = x.len() as u64;
        x[(at % n) as usize] = v;
    }
}

/// Random weights with `specials` (a position seed and a value) written
/// over them: the seed picks a stage, then its bias (one in four, where
/// it has one) or its weights, then the element.
fn special_weights(l: &Layer, seed: u64, specials: &Specials) -> Weights {
    let mut stages = Weights::random(l, seed).stages().to_vec();
    let n = l.stages.len() as u64;
    for &(at, v) in specials {
        let s = &mut stages[(at % n) as usize];
        let rest = at / n;
        match &mut s.bias {
            Some(b) if rest.is_multiple_of(4) => inject(b, &[(rest / 4, v)]),
            _ => inject(&mut s.weight, &[(rest / 4, v)]),
        }
    }
    Weights::new(l, stages).unwrap()
}

/// The position seed of [`special_weights`] for element `i` of stage
/// `stage`'s weights (or bias) in a layer of `n` stages.
fn at(stage: u64, n: u64, i: u64, bias: bool) -> u64 {
    (i * 4 + u64::from(!bias)) * n + stage
}

#[test]
fn a_block_with_nan_and_infinities_matches_on_every_generator() {
    // MobileNet v2's block: expand, depthwise, project, residual; NaN and
    // infinities in the input and in weights of each stage.
    let l = layer(
        "layer m { input 8x9x6\n e: pointwise 18, bias, relu6\n \
         d: depthwise 3x3, pad same, bias, relu6\n p: pointwise 6, bias, residual }",
    );
    // (input specials, weight specials, some output is not finite)
    let cases: &[(&Specials, &Specials, bool)] = &[
        (&[(5, NAN)], &[], true),
        (&[(40, INF), (200, -INF)], &[], true),
        // The depthwise tap (0, 0) of channel 3: NaN where that tap is
        // inside the input, finite in the top row and left column (the
        // interpreter skips padding taps; so must the generators).
        (&[], &[(at(1, 3, 3, false), NAN)], true),
        // relu6(-inf) = 0 and relu6(+-inf * x) in {0, 6}: finite outputs
        // whose bound must stay finite.
        (&[], &[(at(0, 3, 9, true), -INF)], false),
        (&[], &[(at(0, 3, 40, false), INF)], false),
        // -inf times the depthwise outputs: -inf, or NaN where relu6 made 0.
        (&[], &[(at(2, 3, 13, false), -INF)], true),
        (&[(17, -INF)], &[(at(1, 3, 5, true), INF)], true),
    ];
    for (i, &(xs, ws, non_finite)) in cases.iter().enumerate() {
        let w = special_weights(&l, i as u64, ws);
        for batch in [1, 2] {
            let mut x = input(&l, batch, 30 + i as u64);
            inject(&mut x, xs);
            let want = interpret(&l, &w, &x, batch).unwrap();
            let nan = want.iter().filter(|v| v.is_nan()).count();
            let finite = want.iter().filter(|v| v.is_finite()).count();
            assert!(
                (finite < want.len()) == non_finite && finite > 0,
                "case {i}: {nan} NaN, {finite} finite of {}",
                want.len()
            );
            for o in every_generator() {
                for fuse in [Fusion::Always, Fusion::Never] {
                    let o = Options { fuse, ..o.clone() };
                    if let Err(e) = check_with(&l, &w, &x, batch, &o) {
                        panic!("case {i}, batch {batch}, {o:?}: {e}");
                    }
                }
            }
        }
    }
}

#[test]
fn few_outputs_with_their_inputs_in_lanes_keep_nan_and_infinities() {
    // Vectors over each kernel row's inputs: a run's tail is loaded
    // masked, so a NaN or infinity just past it (the next row's pixel,
    // the next kernel row's weight) never meets a zero lane. 20 channels
    // x 3 columns: 60 floats a run, 12 in its tail; a 1x1 of 37 inputs;
    // 1-4 outputs.
    let layers = [
        "layer o { input 7x21x20\n c: conv 3x3 -> 1, pad same, bias, relu }",
        "layer o { input 5x19x37\n p: pointwise 1, bias }",
        "layer o { input 6x23x3\n c: conv 3x3 -> 1, stride 2, dilation 1x2, pad same }",
        "layer o { input 7x21x20\n c: conv 3x3 -> 3, pad same, bias, relu6 }",
        "layer o { input 5x19x37\n p: pointwise 4, bias }",
        // Runs of 300 and 210 floats: loops of 4 vectors, then the rest.
        "layer o { input 3x21x300\n p: pointwise 1, bias, relu }",
        "layer o { input 5x9x70\n c: conv 3x3 -> 3, pad same, bias }",
    ];
    let cases: &[(&Specials, &Specials)] = &[
        (&[(5, NAN)], &[]),
        (&[(40, INF), (200, -INF), (913, NAN)], &[]),
        (&[], &[(at(0, 1, 7, false), NAN)]),
        (
            &[],
            &[(at(0, 1, 59, false), INF), (at(0, 1, 0, true), -INF)],
        ),
        (&[(17, -INF)], &[(at(0, 1, 3, false), INF)]),
    ];
    for src in layers {
        let l = layer(src);
        for (i, &(xs, ws)) in cases.iter().enumerate() {
            let w = special_weights(&l, i as u64, ws);
            for batch in [1, 2] {
                let mut x = input(&l, batch, 60 + i as u64);
                inject(&mut x, xs);
                for o in every_generator() {
                    if let Err(e) = check_with(&l, &w, &x, batch, &o) {
                        panic!("{src}, case {i}, batch {batch}, {o:?}: {e}");
                    }
                }
            }
        }
    }
}

#[test]
fn separated_kernels_keep_the_whole_kernels_nan_and_infinities() {
    // Sobel dx and dy on a grey image (zeros in their kernels: `0 * inf`
    // is NaN in the whole kernel and must be in the separated one), and a
    // depthwise Gaussian; infinities and NaN in the input.
    let l = layer("layer s { input 9x40x1\n f: conv 3x3 -> 2, pad same, bias, relu }");
    let (sm, d) = ([1f32, 2.0, 1.0], [-1f32, 0.0, 1.0]);
    let mut sobel = Vec::new();
    for i in 0..3 {
        for j in 0..3 {
            sobel.extend([sm[i] * d[j], d[i] * sm[j]]);
        }
    }
    let g = layer("layer g { input 7x30x3\n d: depthwise 3x3, pad same, relu6, residual }");
    let gauss: Vec<f32> = (0..9).flat_map(|t| [sm[t / 3] * sm[t % 3]; 3]).collect();
    for (l, weight, bias) in [(l, sobel, Some(vec![0.5, -0.5])), (g, gauss, None)] {
        let w = Weights::new(&l, vec![StageWeights { weight, bias }]).unwrap();
        let (sep, _) = convjit_jit::separation(&l, &w, &Options::default()).unwrap();
        assert_eq!(sep.layer.stages.len(), 2, "{}", l.name);
        let mut x = input(&l, 2, 3);
        inject(&mut x, &[(70, INF), (71, NAN), (250, -INF), (400, INF)]);
        for o in every_generator() {
            // Separated whatever the cost model says, and as it chooses.
            let k = Kernel::compile_with(&sep.layer, &sep.weights, &o).unwrap();
            let got = run_guarded(&k, &x, 2).unwrap();
            let (want, mag) = convjit_ir::interpret_with_magnitude(&l, &w, &x, 2).unwrap();
            let c = convjit_ir::compare(&got, &want, &mag);
            assert!(c.pass(), "{} separated, {o:?}: {c:?}", l.name);
            check_with(&l, &w, &x, 2, &o).unwrap();
        }
    }
}

fn options() -> impl Strategy<Value = Options> {
    (
        prop::sample::select(vec![Fusion::Auto, Fusion::Always, Fusion::Never]),
        1usize..3,
        prop::option::of(1usize..4),
    )
        .prop_map(|(fuse, threads, band_rows)| Options {
            fuse,
            threads,
            band_rows,
            min_thread_cycles: 0,
            ..Options::default()
        })
}

/// Small layers of every stage kind; wide enough rows for the vectors
/// along the row (16 lanes), few channels as often as many.
const LIMITS: Limits = Limits {
    size: 7,
    width: 21,
    channels: 18,
    kernel: 5,
    step: 3,
    pad: 3,
    multiplier: 5,
    stages: 3,
    batch: 3,
};

const FEW_CHANNELS: Limits = Limits {
    channels: 4,
    width: 41,
    ..LIMITS
};

fn special() -> impl Strategy<Value = f32> {
    prop::sample::select(vec![NAN, INF, -INF])
}

/// A random layer, planner overrides, and the specials of its input and
/// of its weights (a position seed and a value each).
#[allow(clippy::type_complexity)]
fn case() -> impl Strategy<Value = (LayerCase, Options, Vec<(u64, f32)>, Vec<(u64, f32)>)> {
    (
        prop_oneof![layer_case(LIMITS), layer_case(FEW_CHANNELS)],
        options(),
        prop::collection::vec((any::<u64>(), special()), 0..4),
        prop::collection::vec((any::<u64>(), special()), 0..3),
    )
}

/// Random layers with NaN, +inf and -inf in the input, weights and
/// biases: every generator agrees with the interpreter on which outputs
/// are NaN and on infinities (sign included), and is within the tolerance
/// on the finite outputs. Counts what the cases produced, so that the
/// injections are known to reach the outputs.
#[test]
fn random_layers_with_nan_and_infinities_match_the_interpreter() {
    let config = Config {
        cases: 512,
        max_global_rejects: 100_000,
        ..Config::default()
    };
    let (cases, with_nan, with_inf, mixed) =
        (Cell::new(0), Cell::new(0), Cell::new(0), Cell::new(0));
    let result = TestRunner::new(config).run(&case(), |(c, options, xs, ws)| {
        let Ok(mut layers) = compile_source(&c.src) else {
            return Err(TestCaseError::reject("does not validate"));
        };
        let l = layers.remove(0);
        if xs.is_empty() && ws.is_empty() {
            return Err(TestCaseError::reject("nothing injected"));
        }
        let w = special_weights(&l, c.seed, &ws);
        let mut x = Rng::new(c.seed ^ 0x5555).vec(c.batch * l.input.len(), c.scale);
        inject(&mut x, &xs);
        let want = interpret(&l, &w, &x, c.batch).unwrap();
        let nan = want.iter().any(|v| v.is_nan());
        let inf = want.iter().any(|v| v.is_infinite());
        cases.set(cases.get() + 1);
        with_nan.set(with_nan.get() + usize::from(nan));
        with_inf.set(with_inf.get() + usize::from(inf));
        mixed.set(mixed.get() + usize::from((nan || inf) && want.iter().any(|v| v.is_finite())));
        for backend in Backend::available() {
            let options = Options {
                backend,
                ..options.clone()
            };
            let r = check_with(&l, &w, &x, c.batch, &options);
            prop_assert!(
                r.is_ok(),
                "{}\nbatch {}, input specials {:?}, weight specials {:?}, {:?}: {}",
                c.src,
                c.batch,
                xs,
                ws,
                options,
                r.unwrap_err()
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let n = cases.get();
    // The injections reach the outputs, and leave others finite.
    assert!(
        with_nan.get() * 3 > n,
        "{} of {n} cases had a NaN output",
        with_nan.get()
    );
    assert!(
        with_inf.get() * 10 > n,
        "{} of {n} cases had an infinite output",
        with_inf.get()
    );
    assert!(
        mixed.get() * 2 > n,
        "{} of {n} cases mixed finite and not",
        mixed.get()
    );
}
