//! Spatial separability found in the weights (`Options::separate`): random
//! rank-1 kernels are run as two 1-D stages where the cost model expects a
//! gain (`convjit_jit::separation`), and either way, the two stages match
//! the interpreter on the original weights, through every generator;
//! near-rank-1 kernels are run whole.

mod common;

use common::{check_with, input, layer, magnitude, run_guarded};
use convjit_ir::{Layer, Rng, Separation, StageKind, StageWeights, Weights};
use convjit_jit::Kernel;
use convjit_plan::{Backend, Options};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    src: String,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<bool>(), 1usize..5, 1usize..4, 1usize..6),
        (
            2usize..8,
            2usize..8,
            1usize..3,
            1usize..3,
            1usize..3,
            1usize..3,
        ),
        (0u8..3, (0usize..3, 0usize..3, 0usize..3, 0usize..3)),
        (any::<bool>(), 0u8..3, any::<u64>(), 3usize..20, 3usize..20),
    )
        .prop_map(
            |((dw, c, m, cout), (kh, kw, sh, sw, dh, dwl), (pad, p), (bias, act, seed, h, w))| {
                let op = if dw {
                    format!("depthwise {kh}x{kw}, multiplier {m}")
                } else {
                    format!("conv {kh}x{kw} -> {cout}")
                };
                let c = if dw { c } else { 1 };
                let pad = match pad {
                    0 => "pad same".to_string(),
                    1 => "pad valid".to_string(),
                    _ => format!("pad {} {} {} {}", p.0, p.1, p.2, p.3),
                };
                let mut opts = vec![
                    op,
                    format!("stride {sh}x{sw}"),
                    format!("dilation {dh}x{dwl}"),
                    pad,
                ];
                if bias {
                    opts.push("bias".into());
                }
                match act {
                    1 => opts.push("relu".into()),
                    2 => opts.push("relu6".into()),
                    _ => {}
                }
                Case {
                    src: format!("layer r {{ input {h}x{w}x{c}\n f: {} }}", opts.join(", ")),
                    seed,
                }
            },
        )
}

/// Weights whose every kernel is an outer product of random factors
/// (`noise` > 0: one tap of each kernel then off by that much of its largest).
fn rank1_weights(l: &Layer, seed: u64, noise: f32) -> Weights {
    rank_weights(l, seed, noise, 1)
}

/// Weights whose every kernel is a sum of `rank` outer products.
fn rank_weights(l: &Layer, seed: u64, noise: f32, rank: usize) -> Weights {
    let s = &l.stages[0];
    let [kh, kw] = s.kernel;
    let n = s.output.c;
    let mut rng = Rng::new(seed);
    let mut w = vec![0f32; kh * kw * n];
    for _ in 0..rank {
        let (cols, rows) = (rng.vec(kh * n, 1.0), rng.vec(kw * n, 1.0));
        for i in 0..kh {
            for j in 0..kw {
                for o in 0..n {
                    w[(i * kw + j) * n + o] += cols[i * n + o] * rows[j * n + o];
                }
            }
        }
    }
    if noise > 0.0 {
        for o in 0..n {
            let max = (0..kh * kw)
                .map(|t| w[t * n + o].abs())
                .fold(0f32, f32::max);
            let t = (o * 7) % (kh * kw);
            w[t * n + o] += noise * max.max(1e-3);
        }
    }
    let bias = s.bias_key.as_ref().map(|_| rng.vec(n, 0.5));
    Weights::new(l, vec![StageWeights { weight: w, bias }]).unwrap()
}

/// Each generator the host runs, one and two threads; on AVX-512 also
/// every stage fused, where a filter's pair runs in registers
/// (`stage_plan::column_pair`) whatever the cost model thinks of fusing.
fn options() -> Vec<Options> {
    let mut all: Vec<Options> = Backend::available()
        .into_iter()
        .flat_map(|backend| {
            [1, 2].map(|threads| Options {
                backend,
                threads,
                min_thread_cycles: 0,
                ..Options::default()
            })
        })
        .collect();
    if Backend::available().contains(&Backend::Avx512) {
        all.push(Options {
            backend: Backend::Avx512,
            threads: 2,
            min_thread_cycles: 0,
            fuse: convjit_plan::Fusion::Always,
            ..Options::default()
        });
    }
    all
}

/// `sep`, the rewrite of `l`, compiled as a layer of its own, against the
/// interpreter run on `l` and its original weights `w`.
fn check_rewrite(
    l: &Layer,
    w: &Weights,
    sep: &convjit_ir::Separated,
    x: &[f32],
    batch: usize,
    o: &Options,
) -> Result<(), String> {
    let o = Options {
        separate: Separation::Off,
        ..o.clone()
    };
    let k = Kernel::compile_with(&sep.layer, &sep.weights, &o).map_err(|e| e.to_string())?;
    let got = run_guarded(&k, x, batch)?;
    let want = convjit_ir::interpret(l, w, x, batch).unwrap();
    let c = convjit_ir::compare(&got, &want, &magnitude(l, w, x, batch));
    if c.pass() {
        Ok(())
    } else {
        Err(format!(
            "output {}: jit {} vs interp {} (tol {})",
            c.worst, c.values.0, c.values.1, c.tolerance
        ))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_global_rejects: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn rank1_kernels_run_separated_and_match(c in case()) {
        let parsed = convjit_ir::compile_source(&c.src);
        prop_assume!(parsed.is_ok());
        let l = parsed.unwrap().remove(0);
        let w = rank1_weights(&l, c.seed, 0.0);
        let s = &l.stages[0];
        // Kh taps on every input column of the output rows, then Kw per output.
        let (o, n) = (s.output, s.output.c as u64);
        let split = (o.h * l.input.w) as u64 * n * s.kernel[0] as u64
            + (o.h * o.w) as u64 * n * s.kernel[1] as u64;
        let saves = split < s.macs();
        let x = input(&l, 2, c.seed ^ 1);
        // NaN and infinities too: the factors' sums are NaN or infinite
        // where the whole kernel's are.
        let mut specials = x.clone();
        for (k, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY].into_iter().enumerate() {
            let n = specials.len() as u64;
            specials[((c.seed >> (8 * k)) % n) as usize] = v;
        }
        for o in options() {
            let k = Kernel::compile_with(&l, &w, &o).unwrap();
            let weighed = convjit_jit::separation(&l, &w, &o);
            prop_assert_eq!(weighed.is_ok(), saves, "{}", c.src);
            if let Ok((sep, cost)) = weighed {
                let [a, b] = &sep.layer.stages[..] else {
                    panic!("{}: not separated", c.src)
                };
                prop_assert_eq!((a.kernel, b.kernel), ([s.kernel[0], 1], [1, s.kernel[1]]));
                prop_assert_eq!(b.kind, StageKind::Depthwise { multiplier: 1 });
                let runs = if cost.runs_separated() { &sep.layer } else { &l };
                prop_assert_eq!(k.layer(), runs, "{}: {}", c.src, cost);
                // The two stages, whether the cost model took them or not.
                for x in [&x, &specials] {
                    if let Err(e) = check_rewrite(&l, &w, &sep, x, 2, &o) {
                        panic!("{} separated\n{e}", c.src);
                    }
                }
            }
            for x in [&x, &specials] {
                if let Err(e) = check_with(&l, &w, x, 2, &o) {
                    panic!("{}\n{e}", c.src);
                }
            }
        }
        // Turned off, the layer runs whole.
        let off = Options { separate: Separation::Off, ..Options::default() };
        let whole = Kernel::compile_with(&l, &w, &off).unwrap();
        prop_assert_eq!(whole.layer(), &l);
    }

    #[test]
    fn rank_r_kernels_run_as_r_branches_and_match(c in case(), rank in 2usize..4) {
        let parsed = convjit_ir::compile_source(&c.src);
        prop_assume!(parsed.is_ok());
        let l = parsed.unwrap().remove(0);
        let w = rank_weights(&l, c.seed, 0.0, rank);
        let x = input(&l, 2, c.seed ^ 3);
        for o in options() {
            let o = Options { separate: Separation::Rank(rank), ..o };
            let k = Kernel::compile_with(&l, &w, &o).unwrap();
            if let [_, b] = &k.layer().stages[..] {
                // Kernels of rank r < R (small kernels) take r; rank 1 a depthwise.
                prop_assert!(matches!(b.kind, StageKind::Conv { groups, .. } if groups == l.stages[0].output.c)
                    || b.kind == StageKind::Depthwise { multiplier: 1 }, "{:?}", b.kind);
            }
            if let Err(e) = check_with(&l, &w, &x, 2, &o) {
                panic!("{} at rank {rank}\n{e}", c.src);
            }
        }
    }

    #[test]
    fn near_rank1_kernels_run_whole(c in case(), noise in prop_oneof![Just(1e-3f32), Just(1e-5)]) {
        let parsed = convjit_ir::compile_source(&c.src);
        prop_assume!(parsed.is_ok());
        let l = parsed.unwrap().remove(0);
        let w = rank1_weights(&l, c.seed, noise);
        let k = Kernel::compile(&l, &w).unwrap();
        prop_assert_eq!(k.layer(), &l, "{} separated at noise {}", c.src, noise);
        let x = input(&l, 1, c.seed ^ 2);
        if let Err(e) = check_with(&l, &w, &x, 1, &Options::default()) {
            panic!("{}\n{e}", c.src);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_global_rejects: 10_000, ..ProptestConfig::default() })]

    /// Kernels whose first row is a million times the others, one small
    /// tap then off by `noise` of itself: separated only where the factors
    /// give back every weight to rounding, and whatever runs matches the
    /// interpreter on the weights as given (a tap's error was once judged
    /// against the kernel's largest weight, and ran as exact).
    #[test]
    fn small_taps_beside_huge_ones_stay_exact(
        c in case(),
        noise in prop_oneof![Just(0.2f32), Just(1e-3), Just(1e-5), Just(1e-7), Just(0.0)],
    ) {
        let parsed = convjit_ir::compile_source(&c.src);
        prop_assume!(parsed.is_ok());
        let l = parsed.unwrap().remove(0);
        let s = &l.stages[0];
        let [kh, kw] = s.kernel;
        prop_assume!(kh >= 2);
        let n = s.output.c;
        let mut rng = Rng::new(c.seed);
        let (cols, rows) = (rng.vec(kh * n, 1.0), rng.vec(kw * n, 1.0));
        let mut w = vec![0f32; kh * kw * n];
        for i in 0..kh {
            for j in 0..kw {
                for o in 0..n {
                    let big = if i == 0 { 1e6 } else { 1.0 };
                    w[(i * kw + j) * n + o] = big * cols[i * n + o] * rows[j * n + o];
                }
            }
        }
        for o in 0..n {
            let t = (1 + o % (kh - 1)) * kw + o % kw;
            w[t * n + o] *= 1.0 + noise;
        }
        let bias = s.bias_key.as_ref().map(|_| rng.vec(n, 0.5));
        let w = Weights::new(&l, vec![StageWeights { weight: w, bias }]).unwrap();
        let sep = convjit_ir::separate(&l, &w, Separation::Exact);
        if noise >= 1e-5 {
            prop_assert!(!sep.changed(), "{} separated at noise {}", c.src, noise);
        }
        let x = input(&l, 1, c.seed ^ 4);
        for o in options() {
            if sep.changed() {
                if let Err(e) = check_rewrite(&l, &w, &sep, &x, 1, &o) {
                    panic!("{} separated at noise {noise}\n{e}", c.src);
                }
            }
            if let Err(e) = check_with(&l, &w, &x, 1, &o) {
                panic!("{} at noise {noise}\n{e}", c.src);
            }
        }
    }
}

#[test]
fn sobel_bank_compiles_to_a_conv_then_a_depthwise() {
    let l = layer("layer s { input 9x11x1\n f: conv 3x3 -> 2, pad same, bias }");
    let (sm, d) = ([1f32, 2.0, 1.0], [-1f32, 0.0, 1.0]);
    let mut w = Vec::new();
    for i in 0..3 {
        for j in 0..3 {
            w.extend([sm[i] * d[j], d[i] * sm[j]]);
        }
    }
    let w = Weights::new(
        &l,
        vec![StageWeights {
            weight: w,
            bias: Some(vec![0.5, -0.5]),
        }],
    )
    .unwrap();
    let x = input(&l, 1, 4);
    for o in options() {
        let (sep, cost) = convjit_jit::separation(&l, &w, &o).expect("rank 1, fewer MACs");
        let kinds: Vec<_> = sep
            .layer
            .stages
            .iter()
            .map(|s| (s.kind, s.kernel))
            .collect();
        assert_eq!(
            kinds,
            [
                (StageKind::Conv { cout: 2, groups: 1 }, [3, 1]),
                (StageKind::Depthwise { multiplier: 1 }, [1, 3])
            ]
        );
        let k = Kernel::compile_with(&l, &w, &o).unwrap();
        assert_eq!(
            k.layer(),
            if cost.runs_separated() {
                &sep.layer
            } else {
                &l
            }
        );
        check_rewrite(&l, &w, &sep, &x, 1, &o).unwrap();
        check_with(&l, &w, &x, 1, &o).unwrap();
    }
}

#[test]
fn a_separated_stage_inside_a_chain_keeps_bias_activation_and_residual() {
    let l = layer(
        "layer m { input 9x8x4\n e: pointwise 6, bias, relu\n d: depthwise 5x5, pad same, bias, relu6\n p: pointwise 4, bias, residual }",
    );
    let random = Weights::random(&l, 9);
    let mut stages = random.stages().to_vec();
    // Every channel of `d` a different outer product.
    let mut rng = Rng::new(10);
    let (cols, rows) = (rng.vec(5 * 6, 1.0), rng.vec(5 * 6, 1.0));
    for i in 0..5 {
        for j in 0..5 {
            for c in 0..6 {
                stages[1].weight[(i * 5 + j) * 6 + c] = cols[i * 6 + c] * rows[j * 6 + c];
            }
        }
    }
    let w = Weights::new(&l, stages).unwrap();
    let (sep, _) = convjit_jit::separation(&l, &w, &Options::default()).unwrap();
    let names: Vec<_> = sep.layer.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["e", "d.col", "d.row", "p"]);
    let row = &sep.layer.stages[2];
    assert_eq!(row.bias_key.as_deref(), Some("d.bias"));
    assert_eq!(row.activation, convjit_ir::Activation::Relu6);
    assert_eq!(sep.layer.stages[1].bias_key, None);
    for o in options() {
        let x = input(&l, 2, 11);
        check_rewrite(&l, &w, &sep, &x, 2, &o).unwrap();
        check_with(&l, &w, &x, 2, &o).unwrap();
    }
    // A residual on the separated stage itself.
    let l = layer("layer r { input 7x9x3\n d: depthwise 3x5, pad same, bias, relu, residual }");
    let w = rank1_weights(&l, 12, 0.0);
    let (sep, _) = convjit_jit::separation(&l, &w, &Options::default()).unwrap();
    assert_eq!(sep.layer.stages.len(), 2);
    for o in options() {
        let x = input(&l, 1, 13);
        check_rewrite(&l, &w, &sep, &x, 1, &o).unwrap();
        check_with(&l, &w, &x, 1, &o).unwrap();
    }
}
