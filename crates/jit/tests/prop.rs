//! Property tests: random layers (as `.conv` text) through the JIT and the
//! reference interpreter; every output within the magnitude-scaled tolerance.

mod common;

use convjit_ir::random_layer::{layer_case, LayerCase, Limits};
use convjit_ir::{compile_source, Weights};
use convjit_jit::{JitError, Kernel};
use convjit_plan::{Backend, Fusion, Options};
use proptest::prelude::*;

fn options() -> impl Strategy<Value = Options> {
    (
        prop::sample::select(vec![Fusion::Auto, Fusion::Always, Fusion::Never]),
        1usize..4,
        prop::option::of(1usize..6),
    )
        .prop_map(|(fuse, threads, band_rows)| Options {
            fuse,
            threads,
            band_rows,
            // Small layers too: the threaded paths must be tested.
            min_thread_cycles: 0,
            ..Options::default()
        })
}

/// A random layer (the generator `convjit fuzz` shares) and planner overrides.
fn case() -> impl Strategy<Value = (LayerCase, Options)> {
    (layer_case(Limits::PROPTEST), options())
}

/// Keeps the interpreter (the slow part) affordable.
const MAX_MACS: u64 = 4_000_000;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn jit_matches_interpreter((c, options) in case()) {
        let data = common::case_data(&c, MAX_MACS);
        prop_assume!(data.is_some());
        let (l, w, x) = data.unwrap();
        // Every generator the host runs, guard pages around every buffer.
        for backend in Backend::available() {
            let options = Options { backend, ..options.clone() };
            let r = common::check_with(&l, &w, &x, c.batch, &options);
            prop_assert!(
                r.is_ok(),
                "{}\nbatch {}, {:?}: {}",
                c.src,
                c.batch,
                options,
                r.unwrap_err()
            );
        }
    }
}

/// `2^u` for `u` uniform in `[0, log2(max)]`: small sizes as often as
/// huge ones, up to the language's limit of 65536.
fn log_uniform(max: usize) -> impl Strategy<Value = usize> {
    (0.0..=(max as f64).log2()).prop_map(move |e: f64| (e.exp2() as usize).clamp(1, max))
}

/// A stride or dilation: small half the time, else up to the limit.
fn step() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..4, log_uniform(65536)]
}

/// One stage with every number drawn log-uniformly up to the limits
/// (kernels stay small: a wide kernel is refused as too much code, which
/// `huge_kernels_are_refused_not_run` covers).
fn limit_stage(i: usize) -> impl Strategy<Value = String> {
    (
        (0u8..5, 1usize..4, 1usize..4, log_uniform(4096)),
        (step(), step(), step(), step()),
        (
            0u8..3,
            (0u32..18, 0u32..18, 0u32..18, 0u32..18),
            log_uniform(64),
            any::<bool>(),
        ),
    )
        .prop_map(
            move |((op, kh, kw, cout), (sh, sw, dh, dw), (pad, pe, m, bias))| {
                // Explicit padding up to 4x the stride: the output grows by a few pixels.
                let p = |e: u32, s: usize| ((1usize << e) - 1).min(4 * s).min(65536);
                let mut t = match op {
                    0 | 3 | 4 => format!("s{i}: conv {kh}x{kw} -> {cout}"),
                    1 => format!("s{i}: depthwise {kh}x{kw}"),
                    _ => format!("s{i}: pointwise {cout}"),
                };
                if op != 2 {
                    t += &format!(", stride {sh}x{sw}, dilation {dh}x{dw}");
                    t += &match pad {
                        0 => ", pad same".to_string(),
                        1 => ", pad valid".to_string(),
                        _ => format!(
                            ", pad {} {} {} {}",
                            p(pe.0, sh),
                            p(pe.1, sh),
                            p(pe.2, sw),
                            p(pe.3, sw)
                        ),
                    };
                }
                if op == 1 || op == 3 {
                    t += &format!(", multiplier {m}");
                }
                t += ["", "", "", ", separable depthwise", ", separable spatial"][op as usize];
                if bias {
                    t += ", bias, relu";
                }
                t
            },
        )
}

/// Tensors (elements per image) and weights kept small enough for the
/// interpreter and the 2-core CI.
const LIMIT_ELEMS: usize = 1 << 20;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    })]

    /// Sizes, strides, dilations and padding log-uniform up to 65536 (one
    /// image dimension large makes the others small): the generated code
    /// matches the interpreter or the layer is refused as too large,
    /// through every generator, with guard pages around every buffer.
    #[test]
    fn limits_match_interpreter(
        (h, w, c) in (log_uniform(65536), log_uniform(65536), log_uniform(65536)),
        stages in (0usize..3).prop_flat_map(|n| (0..=n).map(limit_stage).collect::<Vec<_>>()),
        threads in 1usize..3,
        seed in any::<u64>(),
    ) {
        // The largest dimension shrinks until the image has 2^16 elements at most.
        let mut d = [h, w, c];
        while d.iter().product::<usize>() > 1 << 16 {
            let i = (0..3).max_by_key(|&i| d[i]).unwrap();
            d[i] = (d[i] / 2).max(1);
        }
        let src = format!(
            "layer t {{\n  input {}x{}x{}\n  {}\n}}\n",
            d[0], d[1], d[2], stages.join("\n  ")
        );
        let layers = compile_source(&src);
        prop_assume!(layers.is_ok());
        let l = layers.unwrap().remove(0);
        prop_assume!(l.stages.iter().all(|s| s.output.len() <= LIMIT_ELEMS
            && s.weight_len() <= LIMIT_ELEMS));
        prop_assume!(l.macs() <= MAX_MACS);
        eprintln!("CASE {}", src.replace("\n", " "));
        let wt = Weights::random(&l, seed);
        let x = common::input(&l, 1, seed ^ 0x5555);
        for backend in Backend::available() {
            let options = Options {
                backend,
                threads,
                min_thread_cycles: 0,
                ..Options::default()
            };
            match Kernel::compile_with(&l, &wt, &options) {
                Err(JitError::TooLarge(_)) => {}
                Err(e) => prop_assert!(false, "{src}\n{options:?}: {e}"),
                Ok(_) => {
                    let r = common::check_with(&l, &wt, &x, 1, &options);
                    prop_assert!(r.is_ok(), "{src}\n{options:?}: {}", r.unwrap_err());
                }
            }
        }
    }
}
