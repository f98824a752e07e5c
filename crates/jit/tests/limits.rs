//! Layers at the language's limits (dilation, stride and padding up to
//! 65536, tap and row offsets that cross 2^31 bytes) through every code
//! generator the host runs, against the interpreter. Cheap to compute:
//! mostly 1x1 or one-row images whose huge dilations leave one valid tap.

mod common;

use common::{input, layer};
use convjit_ir::Weights;
use convjit_jit::{JitError, Kernel};
use convjit_plan::{Backend, Fusion, Options};

/// Each layer with the planner's defaults and with fusion, bands and two
/// threads forced, on every generator.
fn check_everywhere(src: &str) {
    let l = layer(src);
    let w = Weights::random(&l, 7);
    let x = input(&l, 2, 8);
    for backend in Backend::available() {
        for options in [
            Options {
                backend,
                ..Options::default()
            },
            Options {
                backend,
                fuse: Fusion::Always,
                threads: 2,
                band_rows: Some(1),
                min_thread_cycles: 0,
                ..Options::default()
            },
        ] {
            if let Err(e) = common::check_with(&l, &w, &x, 2, &options) {
                panic!("{src}\n{options:?}: {e}");
            }
        }
    }
}

/// The layer of issue 14: a depthwise tap 65536 * 8192 * 4 = 2^31 bytes
/// from its block pointer (once cast to i32: a read 4 GiB below the input).
#[test]
fn depthwise_tap_offsets_beyond_2_31_bytes() {
    check_everywhere("layer a { input 1x1x8192\n d: depthwise 3x3, dilation 65536, pad same }");
    check_everywhere(
        "layer a { input 1x2x8192\n d: depthwise 3x3, dilation 65536, pad same, bias, relu6 }",
    );
    // Multipliers: 2 and 3 (shared loads, interleaved stores), 4 (broadcast).
    for m in [2, 3, 4] {
        check_everywhere(&format!(
            "layer a {{ input 1x1x8192\n d: depthwise 3x3, dilation 65536, multiplier {m}, pad same, bias }}"
        ));
    }
    // Vertical only, and several valid taps under a huge dilation.
    check_everywhere("layer a { input 3x1x8192\n d: depthwise 3x1, dilation 65536x1, pad same }");
    check_everywhere(
        "layer a { input 4096x1x4\n d: depthwise 3x3, dilation 2048x65536, pad same, relu }",
    );
}

#[test]
fn conv_and_separable_forms_at_the_limits() {
    check_everywhere(
        "layer a { input 1x1x8192\n c: conv 3x3 -> 5, dilation 65536, pad same, bias }",
    );
    check_everywhere(
        "layer a { input 1x1x8192\n s: conv 3x3 -> 6, separable depthwise, dilation 65536, pad same, relu }",
    );
    check_everywhere(
        "layer a { input 1x1x8192\n s: conv 3x3 -> 4, separable spatial, dilation 65536, pad same, bias }",
    );
    check_everywhere(
        "layer a { input 2x2x8192\n s: conv 3x3 -> 4, separable depthwise, multiplier 2, stride 65536, pad same }",
    );
}

/// Padding and strides of 65535/65536: input pointers placed 2^31 bytes
/// before a row (pad left * channels * 4), most outputs all padding.
#[test]
fn padding_and_stride_at_the_limits() {
    check_everywhere(
        "layer a { input 1x1x8192\n d: depthwise 1x1, stride 65536, pad 65535 65535 65535 65535, bias }",
    );
    check_everywhere(
        "layer a { input 2x2x8192\n d: depthwise 3x3, stride 65536, pad 65536 65536 65536 65536 }",
    );
    check_everywhere(
        "layer a { input 1x1x8192\n c: conv 2x2 -> 3, stride 65535x65536, pad 65535 0 65535 0, relu }",
    );
    check_everywhere(
        "layer a { input 1x3x8\n c: conv 2x3 -> 3, stride 1x65536, dilation 65536x1, pad 65536 65536 1 1 }",
    );
}

/// A fused chain (and threads sharing its rows) around such a stage, with
/// a residual back to the input.
#[test]
fn fused_chain_around_a_limit_stage() {
    check_everywhere(
        "layer a { input 1x1x256\n e: pointwise 8192, bias, relu6\n d: depthwise 3x3, dilation 65536, pad same, bias, relu6\n p: pointwise 256, bias, residual }",
    );
    check_everywhere(
        "layer a { input 4x1x8192\n d: depthwise 3x3, dilation 65536, pad same\n p: pointwise 4\n q: depthwise 3x3, stride 65536, pad same }",
    );
}

/// Kernels so wide that the specialised code would be huge are refused
/// with a clear error before anything runs.
#[test]
fn huge_kernels_are_refused_not_run() {
    let l = layer("layer a { input 1x65536x4\n d: depthwise 1x65536, pad same }");
    let w = Weights::random(&l, 1);
    for backend in Backend::available() {
        let options = Options {
            backend,
            ..Options::default()
        };
        match Kernel::compile_with(&l, &w, &options) {
            Err(JitError::TooLarge(m)) => assert!(m.contains("interpreter"), "{m}"),
            Err(e) => panic!("{backend}: {e}"),
            Ok(_) => {}
        }
    }
}
