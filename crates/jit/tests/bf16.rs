//! `Options::precision = Bf16`: every stage's inputs and weights rounded
//! to bf16, f32 sums (the contract, section 1), checked against the bf16
//! interpreter with f32's tolerance and against the f32 one with bf16's
//! bound ([`convjit_ir::Reference`]). Skipped, saying so, on a CPU without
//! AVX512_BF16.

mod common;

use convjit_ir::random_layer::{layer_case, LayerCase, Limits};
use convjit_ir::{compile_source, Precision, Weights};
use convjit_jit::{JitError, Kernel};
use convjit_plan::backend::has_bf16;
use convjit_plan::{Backend, Fusion, Options};
use proptest::prelude::*;

fn bf16(fuse: Fusion, threads: usize) -> Options {
    Options {
        fuse,
        threads,
        min_thread_cycles: 0,
        backend: Backend::Avx512,
        precision: Precision::Bf16,
        ..Options::default()
    }
}

fn skip() -> bool {
    if !has_bf16() {
        eprintln!("skipped: this CPU has no AVX512_BF16");
    }
    !has_bf16()
}

#[test]
fn every_stage_input_is_rounded_and_the_residual_is_not() {
    if skip() {
        return;
    }
    // Three stages (the two intermediates rounded where they are written,
    // in bands and across threads) and a residual of the unrounded input.
    let l = common::layer(
        "layer r { input 9x11x16\n e: pointwise 32, bias, relu\n d: depthwise 3x3, pad same\n p: pointwise 16, residual }",
    );
    let w = Weights::random(&l, 5);
    let x: Vec<f32> = common::input(&l, 2, 6).iter().map(|v| v * 1.001).collect();
    for fuse in [Fusion::Auto, Fusion::Always, Fusion::Never] {
        for threads in [1, 2] {
            let o = bf16(fuse, threads);
            common::check_with(&l, &w, &x, 2, &o)
                .unwrap_or_else(|e| panic!("{fuse:?} {threads}: {e}"));
        }
    }
    // Not f32's answer: the roundings happened.
    let k = |p| {
        Kernel::compile_with(
            &l,
            &w,
            &Options {
                precision: p,
                ..bf16(Fusion::Auto, 1)
            },
        )
    };
    let f32_out = k(Precision::F32).unwrap().run_alloc(&x, 2).unwrap();
    let bf16_out = k(Precision::Bf16).unwrap().run_alloc(&x, 2).unwrap();
    assert_ne!(f32_out, bf16_out);
}

#[test]
fn bf16_where_no_generator_computes_it_is_an_error() {
    let l = common::layer("layer p { input 4x4x8\n p: pointwise 8 }");
    let w = Weights::random(&l, 1);
    let o = Options {
        backend: Backend::Cranelift,
        precision: Precision::Bf16,
        ..Options::default()
    };
    match Kernel::compile_with(&l, &w, &o) {
        Err(JitError::Unsupported(m)) => assert!(m.contains("bf16"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("compiled bf16 with Cranelift"),
    }
}

/// Keeps the two interpreters affordable.
const MAX_MACS: u64 = 2_000_000;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn bf16_kernels_match_the_bf16_interpreter(
        c in layer_case(Limits::PROPTEST),
        fuse in prop::sample::select(vec![Fusion::Auto, Fusion::Always, Fusion::Never]),
        threads in 1usize..4,
    ) {
        if skip() {
            return Ok(());
        }
        let c: LayerCase = c;
        let layers = compile_source(&c.src);
        prop_assume!(layers.is_ok());
        let l = layers.unwrap().remove(0);
        prop_assume!(l.macs() * c.batch as u64 <= MAX_MACS);
        let w = Weights::random(&l, c.seed);
        let x: Vec<f32> = common::input(&l, c.batch, c.seed ^ 0x5555)
            .iter()
            .map(|v| v * c.scale)
            .collect();
        let r = common::check_with(&l, &w, &x, c.batch, &bf16(fuse, threads));
        prop_assert!(r.is_ok(), "{}\nbatch {}: {}", c.src, c.batch, r.unwrap_err());
    }
}
