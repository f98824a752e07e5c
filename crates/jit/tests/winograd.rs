//! Winograd's F(2x2, 3x3) and F(4x4, 3x3) (`Options::winograd`) against the interpreter,
//! within its own rounding bound (`convjit_ir::winograd::magnitude`), on
//! every padding, odd and even sizes, channel counts off the vector width,
//! each epilogue, batches and threads; and non-finite sums, which must be
//! the direct kernel's bit for bit. Buffers between guard pages.

mod common;

use common::{layer, run_guarded};
use convjit_ir::random_layer::{winograd_case, winograd_chain_case, LayerCase, Limits};
use convjit_ir::{compare, interpret, winograd, Layer, Rng, Weights};
use convjit_jit::Kernel;
use convjit_plan::{Backend, Options, Winograd};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn options(threads: usize) -> Options {
    Options {
        threads,
        winograd: Winograd::Auto,
        ..Options::default()
    }
}

/// Runs `l` as Winograd's with tiles of side `tile` (it must qualify) and
/// compares with the interpreter within the Winograd bound.
fn check(
    l: &Layer,
    w: &Weights,
    x: &[f32],
    batch: usize,
    threads: usize,
    tile: usize,
) -> Result<(), String> {
    let o = Options {
        winograd: Winograd::Always,
        winograd_tile: Some(tile),
        ..options(threads)
    };
    check_with(l, w, x, batch, &o)
}

fn check_with(
    l: &Layer,
    w: &Weights,
    x: &[f32],
    batch: usize,
    options: &Options,
) -> Result<(), String> {
    let k = Kernel::compile_with(l, w, options).map_err(|e| e.to_string())?;
    if k.winograd().is_none() {
        return Err("not run as Winograd".into());
    }
    let got = run_guarded(&k, x, batch)?;
    let want = interpret(l, w, x, batch).map_err(|e| e.to_string())?;
    // The stages that run as Winograd's: their bound, carried through.
    let runs = k.winograd_stages();
    let flags: Vec<_> = l
        .stages
        .iter()
        .map(|s| runs.iter().find(|r| r.0 == s.name).map(|r| r.1.variant))
        .collect();
    // The tile asked for is every 3x3 stage's (a 5x5 has one form).
    if let Some(m) = options.winograd_tile {
        assert!(runs
            .iter()
            .all(|r| r.1.variant.kernel() == 5 || r.1.variant.tile() == m));
    }
    let mag = winograd::chain_magnitude(l, w, x, batch, &flags).map_err(|e| e.to_string())?;
    let c = compare(&got, &want, &mag);
    match c.pass() {
        true => Ok(()),
        false => Err(format!(
            "output {}: {} vs interp {} (tolerance {})",
            c.worst, c.values.0, c.values.1, c.tolerance
        )),
    }
}

#[test]
fn winograd_agrees_with_the_interpreter_on_every_padding_size_and_epilogue() {
    let cases = [
        "input 11x13x64\n c: conv 3x3 -> 64, pad same, bias, relu",
        "input 12x12x64\n c: conv 3x3 -> 64, pad same, bias, relu6, residual",
        "input 13x11x70\n c: conv 3x3 -> 70, pad same, residual",
        "input 16x9x64\n c: conv 3x3 -> 80",
        "input 9x17x96\n c: conv 3x3 -> 65, pad 0 2 1 0, bias",
        "input 10x10x72\n c: conv 3x3 -> 64, pad 2 2 2 2, bias, relu",
        "input 4x40x128\n c: conv 3x3 -> 100, pad same, relu",
        // Tile rows in column chunks (149 tiles of 40 + 33 channels: 75
        // and 74), the last band's rows and chunk's columns partial.
        "input 5x299x40\n c: conv 3x3 -> 33, pad 1 1 1 0, bias, relu6",
        // F(2x2, 5x5): Inception's shapes, odd sizes, every padding.
        "input 14x14x24\n c: conv 5x5 -> 64, pad same, bias, relu",
        "input 11x13x48\n c: conv 5x5 -> 48, pad same, bias, relu6, residual",
        "input 9x12x40\n c: conv 5x5 -> 17, pad 3 1 0 2",
        "input 8x9x33\n c: conv 5x5 -> 70, bias",
    ];
    for (i, src) in cases.iter().enumerate() {
        let src = format!("layer l {{ {src} }}");
        let l = layer(&src);
        let w = Weights::random(&l, i as u64);
        for (batch, threads) in [(1, 1), (2, 2), (3, 2)] {
            let x = Rng::new(i as u64 + 10).vec(batch * l.input.len(), 1.0);
            for tile in [2, 4] {
                if let Err(e) = check(&l, &w, &x, batch, threads, tile) {
                    panic!("{src} (batch {batch}, {threads} threads, tile {tile}): {e}");
                }
            }
        }
    }
}

/// `c` (its layer, weights and input) as `Winograd::Always` with tiles of
/// side `tile` on `threads` threads with every generator the host runs,
/// within the bound.
fn every_generator(
    c: &LayerCase,
    (l, w, x): (Layer, Weights, Vec<f32>),
    threads: usize,
    tile: usize,
) -> Result<(), TestCaseError> {
    for backend in Backend::available() {
        let o = Options {
            backend,
            threads,
            winograd: Winograd::Always,
            winograd_tile: Some(tile),
            ..Options::default()
        };
        let r = check_with(&l, &w, &x, c.batch, &o);
        prop_assert!(
            r.is_ok(),
            "{}\nbatch {}, {:?}: {}",
            c.src,
            c.batch,
            o,
            r.unwrap_err()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_global_rejects: 10_000,
        ..ProptestConfig::default()
    })]

    /// Any layer Winograd computes, however small (`Winograd::Always`),
    /// with 2x2 or 4x4 tiles: sizes of one tile to many, channels off
    /// every vector width, every padding and epilogue, batches, one or two
    /// threads, every generator.
    #[test]
    fn winograd_matches_the_interpreter_on_any_layer_it_computes(
        c in winograd_case(Limits { size: 20, ..Limits::PROPTEST }),
        threads in 1usize..3,
        tile in prop::sample::select(vec![2usize, 4]),
    ) {
        let data = common::case_data(&c, 4_000_000);
        prop_assume!(data.is_some());
        every_generator(&c, data.unwrap(), threads, tile)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        max_global_rejects: 10_000,
        ..ProptestConfig::default()
    })]

    /// Layers of several stages whose 3x3 convs run as Winograd's (cut
    /// into kernels there, the residual added last): within the bound
    /// carried through the stages, either tile, on one or two threads,
    /// every generator.
    #[test]
    fn winograd_stages_of_longer_layers_match_the_interpreter(
        c in winograd_chain_case(Limits { size: 16, width: 24, channels: 40, ..Limits::PROPTEST }),
        threads in 1usize..3,
        tile in prop::sample::select(vec![2usize, 4]),
    ) {
        let data = common::case_data(&c, 4_000_000);
        prop_assume!(data.is_some());
        every_generator(&c, data.unwrap(), threads, tile)?;
    }
}

/// A ResNet bottleneck as `convjit import` writes it: its 3x3 runs as
/// Winograd's (either tile) between two direct kernels, the residual added
/// last; an image with NaN or an infinity has the interpreter's non-finite
/// outputs; a stage before the last with a residual keeps the layer direct.
#[test]
fn a_bottleneck_runs_its_3x3_as_winograd() {
    for tile in [2, 4] {
        bottleneck(tile);
    }
}

fn bottleneck(tile: usize) {
    let l = layer(
        "layer b { input 9x10x40\n a: pointwise 24, bias, relu\n c: conv 3x3 -> 24, pad same, bias, relu\n z: pointwise 40, bias, residual }",
    );
    let w = Weights::random(&l, 3);
    let always = Options {
        threads: 2,
        winograd: Winograd::Always,
        winograd_tile: Some(tile),
        ..Options::default()
    };
    let k = Kernel::compile_with(&l, &w, &always).unwrap();
    let names: Vec<String> = k.winograd_stages().into_iter().map(|s| s.0).collect();
    assert_eq!(names, ["c"]);
    let mut x = Rng::new(5).vec(3 * l.input.len(), 1.0);
    check_with(&l, &w, &x, 3, &always).unwrap();
    x[7] = f32::NAN;
    x[l.input.len() + 100] = f32::INFINITY;
    let got = run_guarded(&k, &x, 3).unwrap();
    let want = interpret(&l, &w, &x, 3).unwrap();
    for (g, v) in got.iter().zip(&want) {
        assert_eq!(g.is_nan(), v.is_nan());
        assert!(!v.is_infinite() || g == v);
    }
    // Infinite and NaN weights in the 3x3 stage: non-finite where the
    // interpreter's are.
    let mut bad = w.stages().to_vec();
    bad[1].weight[3] = f32::INFINITY;
    bad[1].weight[50] = f32::NAN;
    let bad = Weights::new(&l, bad).unwrap();
    let k = Kernel::compile_with(&l, &bad, &always).unwrap();
    let x = Rng::new(6).vec(l.input.len(), 1.0);
    let got = run_guarded(&k, &x, 1).unwrap();
    let want = interpret(&l, &bad, &x, 1).unwrap();
    for (g, v) in got.iter().zip(&want) {
        assert_eq!(g.is_nan(), v.is_nan());
        assert!(!v.is_infinite() || g == v);
    }
    let mid = layer(
        "layer m { input 9x10x40\n a: pointwise 40, bias, residual\n c: conv 3x3 -> 24, pad same }",
    );
    let w = Weights::random(&mid, 3);
    let k = Kernel::compile_with(&mid, &w, &always).unwrap();
    assert!(k.winograd().is_none());
}

/// What a kernel holds of weights: a lone Winograd layer its direct
/// weights (its fallback) and the 16 transformed ones; a layer cut into
/// parts only its parts' (the direct program of the whole is not packed).
#[test]
fn a_cut_layer_holds_only_its_parts_weights() {
    let compile = |src: &str, winograd| {
        let l = layer(src);
        let w = Weights::random(&l, 3);
        let o = Options {
            winograd,
            ..Options::default()
        };
        Kernel::compile_with(&l, &w, &o).unwrap().weight_bytes()
    };
    let a = "layer a { input 9x10x40\n a: pointwise 24, bias, relu }";
    let c = "layer c { input 9x10x24\n c: conv 3x3 -> 24, pad same, bias, relu }";
    let z = "layer z { input 9x10x24\n z: pointwise 40, bias }";
    let whole = "layer b { input 9x10x40\n a: pointwise 24, bias, relu\n c: conv 3x3 -> 24, pad same, bias, relu\n z: pointwise 40, bias, residual }";
    let direct_c = compile(c, Winograd::Off);
    let wino_c = compile(c, Winograd::Always);
    // 16 matrices of 24 x 24 (each packed with whole vectors: at least).
    assert!(wino_c >= direct_c + 16 * 24 * 24 * 4, "{wino_c} {direct_c}");
    let parts = compile(a, Winograd::Off) + wino_c + compile(z, Winograd::Off);
    assert_eq!(compile(whole, Winograd::Always), parts);
    assert!(compile(whole, Winograd::Off) < parts);
}

/// An image with NaN, an infinity or a value whose transform overflows
/// runs the direct way: the same bits as the direct kernel (NaN where its
/// sums are NaN, its infinities); the batch's other images stay Winograd's.
#[test]
fn images_with_non_finite_sums_are_the_direct_kernels_bit_for_bit() {
    let l =
        layer("layer l { input 12x10x64\n c: conv 3x3 -> 64, pad same, bias, relu6, residual }");
    let w = Weights::random(&l, 7);
    let direct = Kernel::compile_with(&l, &w, &Options::default()).unwrap();
    let n = l.input.len();
    for (at, special, tile) in [
        (5, f32::NAN, 2),
        (700, f32::INFINITY, 4),
        (3000, -f32::INFINITY, 2),
        (64 * 50 + 3, 3e38, 4),
        (64 * 70 + 9, 2e37, 4),
    ] {
        for threads in [1, 2] {
            let mut x = Rng::new(3).vec(2 * n, 1.0);
            x[at] = special;
            let o = Options {
                winograd_tile: Some(tile),
                ..options(threads)
            };
            let k = Kernel::compile_with(&l, &w, &o).unwrap();
            assert_eq!(k.winograd().unwrap().variant.tile(), tile);
            let got = run_guarded(&k, &x, 2).unwrap();
            let want = run_guarded(&direct, &x, 2).unwrap();
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits();
            assert!(
                got[..n].iter().zip(&want[..n]).all(|(&a, &b)| same(a, b)),
                "{special} at {at}: image 0 is not the direct kernel's"
            );
            // Image 1 has no special value: Winograd's, within its bound.
            let clean = &x[n..];
            let v = k.winograd().unwrap().variant;
            let mag = winograd::magnitude(&l, &w, clean, 1, v).unwrap();
            let want1 = interpret(&l, &w, clean, 1).unwrap();
            assert!(compare(&got[n..], &want1, &mag).pass());
        }
    }
    // Infinite weights: every image runs the direct way.
    let mut ws = w.stages().to_vec();
    ws[0].weight[17] = f32::INFINITY;
    let w = Weights::new(&l, ws).unwrap();
    let direct = Kernel::compile_with(&l, &w, &Options::default()).unwrap();
    let k = Kernel::compile_with(&l, &w, &options(1)).unwrap();
    let x = Rng::new(4).vec(n, 1.0);
    let (got, want) = (
        run_guarded(&k, &x, 1).unwrap(),
        run_guarded(&direct, &x, 1).unwrap(),
    );
    assert!(got
        .iter()
        .zip(&want)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// Asked for where it does not qualify or pay, the layer runs direct.
#[test]
fn layers_winograd_refuses_run_the_direct_way() {
    for src in [
        "input 16x16x8\n c: conv 3x3 -> 8, pad same",
        "input 16x16x64\n c: conv 3x3 -> 64, stride 2, pad same",
        "input 16x16x64\n c: conv 7x7 -> 64, pad same",
        "input 4x4x64\n c: conv 3x3 -> 64, pad same",
    ] {
        let src = format!("layer l {{ {src} }}");
        let l = layer(&src);
        let w = Weights::random(&l, 1);
        let k = Kernel::compile_with(&l, &w, &options(1)).unwrap();
        assert_eq!(k.winograd(), None, "{src}");
        let direct = Kernel::compile_with(&l, &w, &Options::default()).unwrap();
        let x = Rng::new(2).vec(l.input.len(), 1.0);
        assert_eq!(run_guarded(&k, &x, 1), run_guarded(&direct, &x, 1), "{src}");
    }
}

/// Layers at the language's limits and past a band's budget, as
/// `Winograd::Always`: 65,536 columns (32,768 tiles in chunks), 65,536
/// rows (32,768 tile rows in bands), 600 -> 700 channels (a tile's slabs
/// past the budget: chunks of one tile).
#[test]
fn winograd_at_the_limits() {
    for src in [
        "input 1x65536x1\n c: conv 3x3 -> 2, pad same, bias",
        "input 65536x1x1\n c: conv 3x3 -> 1, pad same, relu",
        "input 2x3x600\n c: conv 3x3 -> 700, pad same",
    ] {
        let l = layer(&format!("layer l {{ {src} }}"));
        let w = Weights::random(&l, 4);
        let x = Rng::new(8).vec(l.input.len(), 1.0);
        for (threads, tile) in [(1, 2), (2, 2), (1, 4), (2, 4)] {
            if let Err(e) = check(&l, &w, &x, 1, threads, tile) {
                panic!("{src} ({threads} threads, tile {tile}): {e}");
            }
        }
    }
}
