//! The Cranelift generator (`convjit-cranelift`) through the kernel:
//! code shapes whose layers the property tests are too small to reach.

use convjit_ir::{compile_source, interpret, Rng, Weights};
use convjit_jit::Kernel;
use convjit_plan::{stage_plan, Backend, Options};

fn cranelift() -> Options {
    Options {
        backend: Backend::Cranelift,
        ..Options::default()
    }
}

/// Multiplier 2 stores its two accumulators interleaved by shuffles,
/// including where the last channel vector overlaps the one before.
#[test]
fn multiplier_2_interleaves_its_outputs() {
    for body in [
        "input 5x7x4\n d: depthwise 3x3, multiplier 2, pad same, bias, relu6",
        "input 6x5x6\n d: depthwise 3x2, multiplier 2, stride 2, pad same",
        "input 4x9x9\n d: depthwise 2x3, multiplier 2, dilation 2, pad valid, bias",
    ] {
        let l = compile_source(&format!("layer l {{ {body} }}"))
            .unwrap()
            .remove(0);
        let w = Weights::random(&l, 1);
        let x = Rng::new(2).vec(2 * l.input.len(), 1.0);
        let want = interpret(&l, &w, &x, 2).unwrap();
        let k = Kernel::compile_with(&l, &w, &cranelift()).unwrap();
        assert!(k.clif().contains("shuffle"), "{body}");
        let got = k.run_alloc(&x, 2).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{body}: {a} vs {b}"
            );
        }
    }
}

/// Stages whose weights exceed `CHANNELS_OUTER_BYTES` take the
/// channel-outer loop order (the property tests' layers are too small):
/// borders, strides, a residual, channel tails, two images; groups
/// outermost (2-4 groups, a group's tail vector, a flat grouped 1x1).
#[test]
fn channels_outer_matches_the_interpreter() {
    for body in [
        "input 5x6x126\n c: conv 3x3 -> 126, pad same, bias, relu6, residual",
        "input 7x6x130\n c: conv 3x3 -> 127, stride 2, pad same, bias",
        "input 3x5x370\n p: pointwise 370, bias, relu",
        "input 6x7x192\n c: conv 3x3 -> 192, groups 2, pad same, bias, relu",
        "input 5x6x240\n c: conv 3x3 -> 243, groups 3, stride 2, pad same, bias",
        "input 4x4x384\n c: conv 3x3 -> 384, groups 4, pad same, residual",
        "input 3x5x1024\n p: pointwise 512, groups 2, bias, relu",
    ] {
        let l = compile_source(&format!("layer l {{ {body} }}"))
            .unwrap()
            .remove(0);
        assert!(
            stage_plan::plan_for_cranelift(&l.stages[0]).channels_outer(),
            "{body}"
        );
        let w = Weights::random(&l, 1);
        let x = Rng::new(2).vec(2 * l.input.len(), 1.0);
        let want = interpret(&l, &w, &x, 2).unwrap();
        for backend in Backend::available() {
            let o = Options {
                backend,
                ..Options::default()
            };
            let got = Kernel::compile_with(&l, &w, &o)
                .unwrap()
                .run_alloc(&x, 2)
                .unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{backend}: {body}: {a} vs {b}"
                );
            }
        }
    }
}
