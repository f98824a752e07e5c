//! Every family against the reference interpreter: a few hundred random
//! layers (as `.conv` text), plus fixed larger layers that reach the SIMD
//! kernels' interior blocks, register-block tails and multiplier paths.

use convjit_baselines::{avx2_available, sse_available, Baseline, Family};
use convjit_ir::{compile_source, interpret, Layer, Rng, StageKind, Weights};

fn layer(src: &str) -> Layer {
    match compile_source(src) {
        Ok(mut l) => l.remove(0),
        Err(e) => panic!("{src}: {e:?}"),
    }
}

/// Longest dot product in any stage: `Kh*Kw*Ci` (depthwise: `Kh*Kw`).
fn reduction(l: &Layer) -> usize {
    l.stages
        .iter()
        .map(|s| {
            let taps = s.kernel[0] * s.kernel[1];
            match s.kind {
                StageKind::Depthwise { .. } => taps,
                _ => taps * s.input.c,
            }
        })
        .max()
        .unwrap_or(1)
}

/// The first element where `got` and `want` disagree beyond the tolerance.
///
/// Tolerance: `1e-4 * (1 + max|want|) * sqrt(n)`, `n` the longest dot
/// product. The kernels accumulate in f32 (unit roundoff 6e-8) in orders
/// other than the interpreter's f64; rounding errors of an `n`-term sum
/// grow like `sqrt(n)` times the term size, and `Weights::random` scales
/// weights by `1/sqrt(fan-in)` so terms and outputs stay near the inputs'
/// magnitude (`<= 1 + max|want|`). The bound leaves a ~1000x margin over
/// that, yet is far below what a wrong index costs: one dropped or
/// misplaced tap moves an output by about `|x * w| ~ 1/sqrt(n)`, which for
/// `n <= 500` (the largest here) is > 0.04 against a tolerance < 0.01 at
/// typical magnitudes (`perturbed_weights_are_caught` checks it).
fn mismatch(l: &Layer, got: &[f32], want: &[f32]) -> Option<String> {
    assert_eq!(got.len(), want.len());
    let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * (1.0 + max) * (reduction(l) as f32).sqrt();
    got.iter()
        .zip(want)
        .position(|(g, w)| {
            let d = (g - w).abs();
            d > tol || d.is_nan() // NaN: an element never written
        })
        .map(|i| {
            format!(
                "element {i}: got {}, want {} (tolerance {tol})",
                got[i], want[i]
            )
        })
}

/// Runs `family` on `l`; `None` if the family declines the layer (checked
/// to be for the documented reasons only).
fn run(family: Family, l: &Layer, w: &Weights, input: &[f32], batch: usize) -> Option<Vec<f32>> {
    let Some(mut b) = Baseline::prepare(family, l, w) else {
        match family {
            Family::Naive => panic!("naive must run every layer"),
            Family::Sse => assert!(!sse_available(), "sse128 declined {}", l.name),
            Family::Avx2 => assert!(!avx2_available(), "avx256 declined {}", l.name),
            Family::Gemm => assert!(
                l.stages
                    .iter()
                    .all(|s| matches!(s.kind, StageKind::Depthwise { .. })),
                "gemm declined a layer with conv/pointwise stages"
            ),
        }
        return None;
    };
    assert_eq!(b.name(), family.name());
    assert_eq!(b.stage_kernels().len(), l.stages.len());
    // NaN in the output catches any element a kernel forgets to write.
    let mut out = vec![f32::NAN; batch * l.output().len()];
    b.run(input, &mut out, batch);
    // A second run reuses the prepared scratch and must agree exactly.
    let mut again = vec![f32::NAN; out.len()];
    b.run(input, &mut again, batch);
    // Bitwise, so that NaN outputs compare too.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert_eq!(
        bits(&out),
        bits(&again),
        "{}: second run differs",
        family.name()
    );
    Some(out)
}

/// Families sure to run every layer here: naive, and the SIMD ones the host
/// has.
fn simd_families() -> usize {
    1 + usize::from(sse_available()) + usize::from(avx2_available())
}

fn check(src: &str, seed: u64, batch: usize) -> usize {
    let l = layer(src);
    let w = Weights::random(&l, seed);
    // Every other seed scales the input by 8 so that relu6 clips at 6 too.
    let scale = if seed.is_multiple_of(2) { 1.0 } else { 8.0 };
    let input = Rng::new(seed ^ 0x5eed).vec(batch * l.input.len(), scale);
    let want = interpret(&l, &w, &input, batch).unwrap();
    let mut ran = 0;
    for family in Family::ALL {
        if let Some(got) = run(family, &l, &w, &input, batch) {
            if let Some(m) = mismatch(&l, &got, &want) {
                panic!(
                    "{} on batch {batch}, seed {seed}:\n{src}\n{m}",
                    family.name()
                );
            }
            ran += 1;
        }
    }
    ran
}

/// A random stage line (validation may still reject the layer).
fn stage_text(rng: &mut Rng, i: usize) -> String {
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    let (kh, kw) = (1 + pick(5), 1 + pick(5));
    let cout = 1 + pick(20);
    let op = pick(4);
    let mut t = match op {
        0 => format!("s{i}: conv {kh}x{kw} -> {cout}"),
        1 => format!("s{i}: depthwise {kh}x{kw}"),
        2 => format!("s{i}: pointwise {cout}"),
        _ => format!("s{i}: conv {kh}x{kw} -> {cout}, separable depthwise"),
    };
    if op != 2 {
        t += &format!(", stride {}x{}", 1 + pick(3), 1 + pick(3));
        t += &format!(", dilation {}x{}", 1 + pick(2), 1 + pick(2));
        t += &match pick(3) {
            0 => ", pad same".to_string(),
            1 => ", pad valid".to_string(),
            _ => format!(", pad {} {} {} {}", pick(3), pick(3), pick(3), pick(3)),
        };
    }
    if op == 1 || op == 3 {
        t += &format!(", multiplier {}", 1 + pick(3));
    }
    if pick(2) == 0 {
        t += ", bias";
    }
    t += ["", ", relu", ", relu6"][pick(3)];
    if pick(4) == 0 {
        t += ", residual";
    }
    t
}

fn random_cases(seed: u64, cases: usize) {
    let mut rng = Rng::new(seed);
    let (mut done, mut tried, mut ran) = (0, 0, 0);
    while done < cases {
        tried += 1;
        assert!(tried < cases * 50, "too few valid random layers");
        let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
        let (h, w, c) = (1 + pick(12), 1 + pick(12), 1 + pick(20));
        let stages = 1 + pick(3);
        let batch = 1 + pick(2);
        let mut src = format!("layer r{tried} {{\n input {h}x{w}x{c}\n");
        for i in 0..stages {
            src += &stage_text(&mut rng, i);
            src += "\n";
        }
        src += "}";
        // Invalid combinations (kernel larger than input, residual shape
        // mismatch, ...) are rejected by validation: draw again.
        if compile_source(&src).is_err() {
            continue;
        }
        ran += check(&src, tried as u64, batch);
        done += 1;
    }
    // Naive and (where available) sse128 and avx256 on every case, gemm on
    // most.
    let sure = simd_families();
    assert!(ran > cases * sure, "only {ran} runs in {cases} cases");
}

#[test]
fn random_layers_a() {
    random_cases(1, 200);
}

#[test]
fn random_layers_b() {
    random_cases(2, 200);
}

#[test]
fn random_single_stage_layers_hit_every_kind() {
    // One stage each, so a kind-specific bug is not masked by a later stage.
    let mut rng = Rng::new(3);
    let mut done = 0;
    let mut tried = 0;
    while done < 150 {
        tried += 1;
        let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
        let (h, w, c) = (1 + pick(12), 1 + pick(12), 1 + pick(20));
        let batch = 1 + pick(2);
        let line = stage_text(&mut rng, 0);
        let src = format!("layer one{tried} {{\n input {h}x{w}x{c}\n {line}\n}}");
        if compile_source(&src).is_ok() {
            check(&src, tried, batch);
            done += 1;
        }
    }
}

#[test]
fn larger_layers_reach_interior_blocks_and_tails() {
    let cases = [
        // Pointwise: several 12-wide blocks, Co % 12 = 10, pixel count % 4 = 3.
        "layer a { input 7x9x50\n p: pointwise 70, bias, relu6 }",
        "layer a { input 5x5x3\n p: pointwise 1 }",
        // Conv: interior 4-pixel blocks, tails in Ci and Co.
        "layer a { input 13x17x19\n c: conv 3x3 -> 29, pad same, bias, relu }",
        "layer a { input 16x21x8\n c: conv 5x3 -> 12, stride 2x1, dilation 1x2, pad 2 0 1 3, bias }",
        "layer a { input 15x15x6\n c: conv 3x3 -> 6, dilation 2, pad same, relu6, residual }",
        // Depthwise: 8/4/scalar channel groups, strides, dilation, multipliers.
        "layer a { input 10x23x37\n d: depthwise 3x3, pad same, bias, relu6 }",
        "layer a { input 11x19x13\n d: depthwise 5x5, stride 2, dilation 2, pad same, bias }",
        "layer a { input 12x20x5\n d: depthwise 3x3, multiplier 3, stride 2x1, pad 1 0 2 1, relu }",
        "layer a { input 9x18x32\n d: depthwise 3x3, multiplier 2, pad same, bias, relu6 }",
        "layer a { input 8x8x16\n d: depthwise 3x3, pad same, relu, residual }",
        "layer a { input 6x30x9\n d: depthwise 1x7, pad valid }",
        // Inverted bottleneck with residual; separable conv.
        "layer a { input 9x11x13\n e: pointwise 37, bias, relu6\n d: depthwise 3x3, pad same, bias, relu6\n p: pointwise 13, bias, residual }",
        "layer a { input 14x14x10\n s: conv 3x3 -> 27, pad same, separable depthwise, multiplier 2, bias, relu }",
        "layer a { input 12x12x7\n s: conv 3x5 -> 9, pad same, separable spatial, bias }",
    ];
    for (i, src) in cases.iter().enumerate() {
        for batch in [1, 3] {
            assert!(check(src, i as u64, batch) >= simd_families(), "{src}");
        }
    }
}

#[test]
fn perturbed_weights_are_caught() {
    // The tolerance must be tight enough to see one wrong weight.
    let src = "layer a { input 12x12x20\n c: conv 5x5 -> 8, pad same, bias }";
    let l = layer(src);
    let w = Weights::random(&l, 9);
    let input = Rng::new(10).vec(l.input.len(), 1.0);
    let want = interpret(&l, &w, &input, 1).unwrap();
    let mut stages = w.stages().to_vec();
    stages[0].weight[123] += 0.2;
    let bad = Weights::new(&l, stages).unwrap();
    for family in Family::ALL {
        if let Some(got) = run(family, &l, &bad, &input, 1) {
            assert!(mismatch(&l, &got, &want).is_some(), "{}", family.name());
        }
    }
}

#[test]
fn batch_can_grow_after_prepare_and_stages_run_alone() {
    let src = "layer a { input 6x7x5\n e: pointwise 11, relu\n d: depthwise 3x3, stride 2, pad same, multiplier 2\n p: pointwise 9, bias }";
    let l = layer(src);
    let w = Weights::random(&l, 4);
    for family in Family::ALL {
        let Some(mut b) = Baseline::prepare(family, &l, &w) else {
            assert!(!family.available(), "{} declined", family.name());
            continue;
        };
        for batch in [1, 4, 2] {
            let input = Rng::new(batch as u64).vec(batch * l.input.len(), 1.0);
            let want = interpret(&l, &w, &input, batch).unwrap();
            let mut out = vec![f32::NAN; want.len()];
            b.run(&input, &mut out, batch);
            assert_eq!(mismatch(&l, &out, &want), None, "{}", family.name());
        }
    }
    // Stage 1 (depthwise) alone: its input is the one-stage layer's input.
    let gemm = Baseline::prepare(Family::Gemm, &l, &w).unwrap();
    let expect_dw = if sse_available() { "sse128" } else { "naive" };
    assert_eq!(gemm.stage_kernels(), ["gemm", expect_dw, "gemm"]);
    assert!(Baseline::prepare_stage(Family::Gemm, &l, &w, 1).is_none());
    let mut one = Baseline::prepare_stage(Family::Naive, &l, &w, 1).unwrap();
    assert_eq!(one.layer().input, l.stages[1].input);
    let x = Rng::new(5).vec(2 * one.layer().input.len(), 1.0);
    let mut out = vec![0.0; 2 * one.layer().output().len()];
    one.run(&x, &mut out, 2);
    let ow = Weights::new(one.layer(), vec![w.stages()[1].clone()]).unwrap();
    let want = interpret(one.layer(), &ow, &x, 2).unwrap();
    assert_eq!(mismatch(one.layer(), &out, &want), None);
}

#[test]
#[should_panic(expected = "input length")]
fn wrong_lengths_panic() {
    let l = layer("layer a { input 2x2x2\n p: pointwise 3 }");
    let w = Weights::random(&l, 1);
    let mut b = Baseline::prepare(Family::Naive, &l, &w).unwrap();
    b.run(&[0.0; 7], &mut [0.0; 12], 1);
}

#[test]
fn odd_channel_counts_hit_every_tail_and_border() {
    // Channel counts around the vector widths (4, 8) and register blocks
    // (12, 16), in and out, for every kind of stage; padded borders on all
    // sides, strides and dilation so border pixels take partial tap lists.
    let counts = [1, 3, 7, 8, 9, 15, 17, 33];
    let mut cases = 0;
    for (k, &c) in counts.iter().enumerate() {
        let co = counts[(k + 3) % counts.len()];
        let srcs = [
            format!("layer a {{ input 5x13x{c}\n p: pointwise {co}, bias, relu6 }}"),
            format!("layer a {{ input 1x1x{c}\n p: pointwise {c}, residual }}"),
            format!("layer a {{ input 9x11x{c}\n c: conv 3x3 -> {co}, pad same, bias, relu }}"),
            format!(
                "layer a {{ input 10x15x{c}\n c: conv 2x3 -> {co}, stride 2, dilation 2x1, pad 1 2 2 0 }}"
            ),
            format!("layer a {{ input 8x17x{c}\n d: depthwise 3x3, pad same, bias, relu6, residual }}"),
            format!("layer a {{ input 9x14x{c}\n d: depthwise 3x5, stride 2x1, dilation 2, pad same, bias }}"),
            format!("layer a {{ input 7x10x{c}\n d: depthwise 3x3, multiplier 2, pad 2 0 1 1, relu }}"),
            format!("layer a {{ input 6x9x{c}\n d: depthwise 2x2, multiplier 3, stride 2, pad same, bias }}"),
        ];
        for (i, src) in srcs.iter().enumerate() {
            for batch in [1, 2] {
                let ran = check(src, (k * 16 + i * 2 + batch) as u64, batch);
                assert!(ran >= simd_families(), "{src}");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, counts.len() * 8 * 2);
}

#[test]
fn avx256_is_offered_exactly_when_the_cpu_has_avx2_and_fma() {
    let l = layer("layer a { input 4x4x3\n p: pointwise 5\n d: depthwise 3x3, pad same }");
    let w = Weights::random(&l, 1);
    assert_eq!(Family::Avx2.available(), avx2_available());
    match Baseline::prepare(Family::Avx2, &l, &w) {
        Some(b) => assert_eq!(b.stage_kernels(), ["avx256", "avx256"]),
        None => assert!(!avx2_available()),
    }
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        avx2_available(),
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    );
}

/// The contract's NaN rule holds for the hand-written kernels too (so that
/// `bench`'s difference from the interpreter means the same): relu and
/// relu6 of NaN are NaN, `relu6(+inf) = 6`, `relu(-inf) = 0`, through
/// the SIMD bodies and the scalar channel tails, with and without a
/// residual.
#[test]
fn every_family_propagates_nan_and_clamps_infinities() {
    use convjit_ir::StageWeights;
    let values = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        7.5,
        -1.5,
        3.0,
        0.25,
    ];
    let same = |a: f32, b: f32| (a.is_nan() && b.is_nan()) || a == b;
    for body in [
        "input 3x9x19\n d: depthwise 1x1",
        "input 3x9x1\n p: pointwise 1",
        "input 2x9x1\n c: conv 1x1 -> 1",
    ] {
        for act in [", relu", ", relu6", ", relu, residual", ", relu6, residual"] {
            let src = format!("layer a {{ {body}{act} }}");
            let l = layer(&src);
            let weight = vec![1.0; l.stages[0].weight_len()];
            let w = Weights::new(&l, vec![StageWeights { weight, bias: None }]).unwrap();
            let x: Vec<f32> = (0..l.input.len()).map(|i| values[i % 7]).collect();
            let want = interpret(&l, &w, &x, 1).unwrap();
            for family in Family::ALL {
                if let Some(got) = run(family, &l, &w, &x, 1) {
                    let bad = (0..want.len()).find(|&i| !same(got[i], want[i]));
                    assert!(
                        bad.is_none(),
                        "{}: {src}: output {bad:?}: {:?} vs {:?}",
                        family.name(),
                        bad.map(|i| got[i]),
                        bad.map(|i| want[i])
                    );
                }
            }
        }
    }
}
