//! Behaviour of `Kernel` beyond numerics: buffer bounds, sharing across
//! threads, error values, the code cache.

mod common;

use common::{input, layer};
use convjit_ir::{interpret, StageWeights, Weights};
use convjit_jit::{JitError, Kernel};
use convjit_plan::{Backend, Options};

/// Layers with channel tails (C % 4 != 0, C < 4), multipliers, borders,
/// strides, residuals and several stages.
const LAYERS: &[&str] = &[
    "layer a { input 5x7x7\n p: pointwise 5, bias, relu }",
    "layer a { input 5x7x3\n p: pointwise 3, relu, residual }",
    "layer a { input 6x5x1\n p: pointwise 1, bias }",
    "layer a { input 9x8x5\n d: depthwise 3x3, stride 2, pad same, bias, relu6 }",
    "layer a { input 7x6x3\n d: depthwise 5x3, pad same, multiplier 2 }",
    "layer a { input 7x6x2\n d: depthwise 3x3, pad 2 0 1 3, multiplier 3 }",
    "layer a { input 7x6x5\n d: depthwise 3x3, dilation 2, pad same, multiplier 6 }",
    "layer a { input 6x7x3\n c: conv 3x3 -> 4, pad same, bias }",
    // A filter on a grey image written as a conv: run as a one-channel
    // depthwise stage, vectors along the row.
    "layer a { input 9x37x1\n c: conv 3x5 -> 1, pad 2 0 1 3, bias, relu6, residual }",
    // One output of 6 channels, three of 3: their inputs in lanes (runs
    // of 18 and 12 or 9 and 6 floats, masked tails; 5 pixels' 15 sums a
    // vector).
    "layer a { input 9x37x6\n c: conv 3x3 -> 1, pad same, bias, relu }",
    "layer a { input 9x37x3\n c: conv 3x3 -> 3, pad same, bias, relu6, residual }",
    "layer a { input 9x10x6\n c: conv 4x3 -> 9, stride 2x1, dilation 1x2, pad same, relu }",
    "layer a { input 8x8x6\n c: conv 5x5 -> 7, separable spatial, pad same, bias, relu }",
    "layer a { input 8x8x6\n e: pointwise 13, bias, relu6\n d: depthwise 3x3, pad same, bias, relu6\n p: pointwise 6, bias, residual }",
    "layer a { input 8x9x5\n s: conv 3x3 -> 10, separable depthwise, multiplier 2, stride 2, pad same, bias, relu6 }",
];

const GUARD: usize = 67;

/// Output guard; the input guard is another NaN so that a value computed
/// from an input guard (NaN payloads propagate) never looks like an
/// untouched output guard.
fn guard_value() -> f32 {
    f32::from_bits(0x7fc0_dead)
}

fn input_guard() -> f32 {
    f32::from_bits(0x7fc0_beef)
}

#[test]
fn guards_around_input_and_output_stay_untouched() {
    for (i, src) in LAYERS.iter().enumerate() {
        let l = layer(src);
        let w = Weights::random(&l, i as u64);
        for backend in Backend::available() {
            let o = Options {
                backend,
                ..Options::default()
            };
            let k = Kernel::compile_with(&l, &w, &o).unwrap();
            for batch in 1..=3 {
                let x = input(&l, batch, 7 + i as u64);
                let mut xin = vec![input_guard(); x.len() + 2 * GUARD];
                xin[GUARD..GUARD + x.len()].copy_from_slice(&x);
                let n = batch * l.output().len();
                let mut out = vec![guard_value(); n + 2 * GUARD];
                let mut first: Option<Vec<f32>> = None;
                for _ in 0..2 {
                    k.run(
                        &xin[GUARD..GUARD + x.len()],
                        &mut out[GUARD..GUARD + n],
                        batch,
                    )
                    .unwrap();
                    let guards = out[..GUARD].iter().chain(&out[GUARD + n..]);
                    assert!(
                        guards
                            .into_iter()
                            .all(|v| v.to_bits() == guard_value().to_bits()),
                        "{src}: a guard was overwritten"
                    );
                    let body = &out[GUARD..GUARD + n];
                    assert!(body.iter().all(|v| !v.is_nan()), "{src}: NaN in output");
                    let first = first.get_or_insert_with(|| body.to_vec());
                    assert!(
                        body.iter()
                            .zip(first.iter())
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{src}: runs differ"
                    );
                }
                // Same bits as a run on buffers of exactly the right size.
                let plain = k.run_alloc(&x, batch).unwrap();
                assert!(
                    plain
                        .iter()
                        .zip(&out[GUARD..GUARD + n])
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{src}: output depends on the buffers' position"
                );
            }
        }
    }
}

/// Four threads share one kernel, itself single-threaded or running each
/// call on three threads (its parked workers, one set per concurrent call).
#[test]
fn one_kernel_on_four_threads_matches_one_thread_bitwise() {
    for (i, src) in LAYERS.iter().enumerate() {
        let l = layer(src);
        let w = Weights::random(&l, 100 + i as u64);
        for backend in Backend::available() {
            let one = Kernel::compile_with(
                &l,
                &w,
                &Options {
                    backend,
                    ..Options::default()
                },
            )
            .unwrap();
            let inputs: Vec<Vec<f32>> = (0..4).map(|t| input(&l, 2, t)).collect();
            let single: Vec<Vec<f32>> = inputs
                .iter()
                .map(|x| one.run_alloc(x, 2).unwrap())
                .collect();
            let options = convjit_plan::Options {
                threads: 3,
                min_thread_cycles: 0,
                backend,
                ..Default::default()
            };
            let three = Kernel::compile_with(&l, &w, &options).unwrap();
            for k in [&one, &three] {
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..4)
                        .map(|t| {
                            let (k, x) = (&k, &inputs[t]);
                            s.spawn(move || {
                                (0..20)
                                    .map(|_| k.run_alloc(x, 2).unwrap())
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    for (t, h) in handles.into_iter().enumerate() {
                        for got in h.join().unwrap() {
                            assert!(
                                got.iter()
                                    .zip(&single[t])
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{src}: thread {t} differs"
                            );
                        }
                    }
                });
            }
        }
    }
}

#[test]
fn wrong_lengths_and_weights_are_errors() {
    let l = layer("layer a { input 4x4x3\n d: depthwise 3x3, pad same, bias }");
    let w = Weights::random(&l, 1);
    let k = Kernel::compile(&l, &w).unwrap();
    let x = input(&l, 2, 1);
    let mut out = vec![0.0; 2 * l.output().len()];
    assert!(matches!(
        k.run(&x[1..], &mut out, 2),
        Err(JitError::Data(_))
    ));
    assert!(matches!(
        k.run(&x, &mut out[1..], 2),
        Err(JitError::Data(_))
    ));
    assert!(matches!(k.run(&x, &mut out, 3), Err(JitError::Data(_))));
    assert!(matches!(
        k.run(&x, &mut out, usize::MAX),
        Err(JitError::Data(_))
    ));
    assert!(k.run_alloc(&x, usize::MAX).is_err());
    let e = k.run(&x[1..], &mut out, 2).unwrap_err().to_string();
    assert_eq!(e, "input: expected 2 x 4x4x3 = 96 values, found 95");
    // Batch 0 with empty buffers is fine and does nothing.
    k.run(&[], &mut [], 0).unwrap();
    // Weights made for another layer.
    let other = layer("layer a { input 4x4x3\n d: depthwise 3x3, pad same }");
    let wo = Weights::random(&other, 1);
    assert!(matches!(Kernel::compile(&l, &wo), Err(JitError::Data(_))));
    let l5 = layer("layer a { input 4x4x5\n d: depthwise 3x3, pad same, bias }");
    assert!(matches!(Kernel::compile(&l5, &w), Err(JitError::Data(_))));
    // Errors are std errors with a message.
    let e: Box<dyn std::error::Error> = Box::new(Kernel::compile(&l5, &w).err().unwrap());
    assert!(e.to_string().contains("expected"), "{e}");
}

#[test]
fn same_shapes_hit_the_cache_and_use_the_new_weights() {
    // A shape no other test uses, so the first compile is a miss.
    let src = "layer first { input 11x3x9\n d: depthwise 2x3, stride 2x1, pad same, bias, relu\n p: pointwise 3 }";
    let l = layer(src);
    let w1 = Weights::random(&l, 1);
    let k1 = Kernel::compile(&l, &w1).unwrap();
    assert!(!k1.compile_stats().cache_hit);
    assert!(k1.compile_stats().seconds > 0.0);
    // Other names and other weights: same code.
    let l2 = layer(&src.replace("first", "second").replace("d:", "dd:"));
    let w2 = Weights::new(
        &l2,
        Weights::random(&l2, 2)
            .stages()
            .iter()
            .map(|s| StageWeights {
                weight: s.weight.iter().map(|v| v * 3.0).collect(),
                bias: s.bias.clone(),
            })
            .collect(),
    )
    .unwrap();
    let k2 = Kernel::compile(&l2, &w2).unwrap();
    let st = k2.compile_stats();
    assert!(st.cache_hit);
    // A lookup, far below the first compile (which took milliseconds).
    assert!(st.seconds < k1.compile_stats().seconds, "{st:?}");
    let code = |k: &Kernel| k.clif() + &k.asm();
    assert_eq!(code(&k1), code(&k2));
    assert!(code(&k2).contains("fma"));
    // The plan is made on request.
    assert_eq!(k2.layer_plan().groups.len(), k1.layer_plan().groups.len());
    let x = input(&l, 2, 3);
    let want = interpret(&l2, &w2, &x, 2).unwrap();
    let got = k2.run_alloc(&x, 2).unwrap();
    let mag = common::magnitude(&l2, &w2, &x, 2);
    for ((g, w), m) in got.iter().zip(&want).zip(&mag) {
        assert!((g - w).abs() <= convjit_ir::tolerance(*m), "{g} vs {w}");
    }
    // A different shape is a miss.
    let l3 = layer(&src.replace("11x3x9", "11x3x10"));
    let k3 = Kernel::compile(&l3, &Weights::random(&l3, 1)).unwrap();
    assert!(!k3.compile_stats().cache_hit);
}

/// The planner's overrides at the ends of what the command line accepts
/// (`--threads 256`, `--band-rows` 1 and 2^32 - 1, fusion forced either
/// way, no thread minimum): every generator compiles and agrees with the
/// interpreter, for one image and a batch.
#[test]
fn extreme_planner_options_still_match() {
    use convjit_plan::Fusion;
    for src in LAYERS {
        let l = layer(src);
        let w = Weights::random(&l, 4);
        for backend in Backend::available() {
            for (threads, band_rows, fuse) in [
                (256, None, Fusion::Auto),
                (3, Some(u32::MAX as usize), Fusion::Always),
                (2, Some(1), Fusion::Always),
                (256, Some(1), Fusion::Never),
            ] {
                let o = Options {
                    backend,
                    threads,
                    band_rows,
                    fuse,
                    min_thread_cycles: 0,
                    ..Options::default()
                };
                for batch in [1, 3] {
                    let x = input(&l, batch, 9);
                    if let Err(e) = common::check_with(&l, &w, &x, batch, &o) {
                        panic!(
                            "{src} {backend:?} threads {threads} bands {band_rows:?} {fuse:?}: {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn kernel_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Kernel>();
    check::<std::sync::Arc<Kernel>>();
}

#[test]
fn layer_without_stages_copies() {
    let l = convjit_ir::Layer {
        name: "id".into(),
        input: convjit_ir::Shape::new(2, 2, 3),
        stages: vec![],
    };
    let w = Weights::new(&l, vec![]).unwrap();
    let k = Kernel::compile(&l, &w).unwrap();
    let x = input(&l, 2, 1);
    assert_eq!(k.run_alloc(&x, 2).unwrap(), x);
}

/// `Layer`'s fields are public: a hand-built layer whose shapes do not
/// chain, or whose output is not what its stage computes, is an error
/// before any code is generated (on every generator), never a kernel that
/// reads or writes with the wrong sizes.
#[test]
fn inconsistent_hand_built_layers_are_errors() {
    let good = layer("layer a { input 6x6x4\n d: depthwise 3x3, pad same\n p: pointwise 8 }");
    let w = Weights::random(&good, 1);
    type Breakage<'a> = (&'a str, &'a dyn Fn(&mut convjit_ir::Layer));
    let breakages: [Breakage; 4] = [
        ("does not match", &|l| l.stages[1].input.h = 7),
        ("is not the", &|l| {
            // Both stages agree with each other but not with stride 1.
            l.stages[0].output.h = 12;
            l.stages[1].input.h = 12;
            l.stages[1].output.h = 12;
        }),
        ("pointwise", &|l| l.stages[1].stride = [2, 2]),
        ("padding", &|l| l.stages[0].padding.left = 1 << 40),
    ];
    for backend in convjit_plan::Backend::available() {
        let options = convjit_plan::Options {
            backend,
            ..Default::default()
        };
        for (want, breakage) in &breakages {
            let mut l = good.clone();
            breakage(&mut l);
            match Kernel::compile_with(&l, &w, &options) {
                Err(JitError::Data(e)) => {
                    assert!(e.to_string().contains(want), "{want}: {e}")
                }
                Err(e) => panic!("{want}: {e}"),
                Ok(_) => panic!("{want}: an inconsistent layer compiled"),
            }
        }
    }
}

/// A panic in one thread's share of a multi-threaded run stops the other
/// threads (which would otherwise wait at the group barrier forever) and
/// comes back as an error; the kernel then runs normally again.
#[test]
fn a_panicking_thread_is_an_error_not_a_hang() {
    let src = "layer a { input 12x8x8\n e: pointwise 16, relu\n d: depthwise 3x3, pad same\n p: pointwise 8 }";
    let l = layer(src);
    let w = Weights::random(&l, 5);
    let x = input(&l, 2, 6);
    for backend in convjit_plan::Backend::available() {
        for fuse in [convjit_plan::Fusion::Never, convjit_plan::Fusion::Always] {
            let options = convjit_plan::Options {
                backend,
                fuse,
                threads: 3,
                min_thread_cycles: 0,
                ..Default::default()
            };
            let k = std::sync::Arc::new(Kernel::compile_with(&l, &w, &options).unwrap());
            let want = k.run_alloc(&x, 2).unwrap();
            for t in 0..3 {
                k.inject_panic(Some(t));
                // On another thread, so that a hang fails the test instead
                // of stalling it.
                let (tx, rx) = std::sync::mpsc::channel();
                let (k2, x2) = (k.clone(), x.clone());
                std::thread::spawn(move || {
                    let _ = tx.send(k2.run_alloc(&x2, 2));
                });
                let r = rx
                    .recv_timeout(std::time::Duration::from_secs(60))
                    .expect("the run hung after a thread panicked");
                match r {
                    Err(JitError::Panicked(m)) => {
                        assert!(m.contains(&format!("share {t}")), "{m}")
                    }
                    other => panic!("thread {t}: {:?}", other.map(|_| ())),
                }
                k.inject_panic(None);
                let got = k.run_alloc(&x, 2).unwrap();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{backend}: the kernel is not usable after a failed run"
                );
            }
        }
    }
}

/// The guard-page harness works: a read one element past a `Guarded`
/// buffer (data at the end) or one before it (data at the start) kills the
/// process with SIGSEGV. Run in a child process (this test binary again).
#[test]
fn guard_pages_fault_on_stray_accesses() {
    use convjit_jit::testing::Guarded;
    if let Ok(mode) = std::env::var("CONVJIT_GUARD_PROBE") {
        let at_end = mode == "end";
        let g = Guarded::zeroed(5, at_end);
        let p = g.as_ptr();
        let stray = if at_end {
            p.wrapping_add(5)
        } else {
            p.wrapping_sub(1)
        };
        // SAFETY: none, deliberately: this child process reads a guard
        // page to show that the harness turns such a read into a fault.
        let v = unsafe { std::ptr::read_volatile(stray) };
        println!("read {v} without a fault");
        std::process::exit(0);
    }
    for mode in ["end", "start"] {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "guard_pages_fault_on_stray_accesses",
                "--test-threads=1",
            ])
            .env("CONVJIT_GUARD_PROBE", mode)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(11), "{mode}: {status:?}");
    }
}
