//! Helpers shared by the integration tests: layers from `.conv` text and
//! comparison against the reference interpreter.
#![allow(dead_code)]

use convjit_ir::{compile_source, interpret, Activation, Layer, Rng, StageWeights, Weights};
use convjit_jit::{Kernel, Options};

pub fn layer(src: &str) -> Layer {
    compile_source(src)
        .unwrap_or_else(|d| panic!("{src}: {d:?}"))
        .remove(0)
}

pub fn input(layer: &Layer, batch: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed).vec(batch * layer.input.len(), 1.0)
}

/// Per-output bound on the accumulated magnitude: the interpreter run on
/// |input| and |weights| (and |bias|) with activations removed. Every
/// product the real computation adds (including those a later stage makes
/// of an earlier stage's rounding error) is bounded by it, and relu/relu6
/// never increase an error (they are 1-Lipschitz), so f32 rounding error
/// is at most a small multiple of f32 epsilon times this bound.
pub fn magnitude(layer: &Layer, weights: &Weights, input: &[f32], batch: usize) -> Vec<f32> {
    let mut l = layer.clone();
    for s in &mut l.stages {
        s.activation = Activation::None;
    }
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let w = weights
        .stages()
        .iter()
        .map(|s| StageWeights {
            weight: abs(&s.weight),
            bias: s.bias.as_deref().map(abs),
        })
        .collect();
    let w = Weights::new(&l, w).unwrap();
    interpret(&l, &w, &abs(input), batch).unwrap()
}

/// Relative tolerance against the magnitude bound: accumulations here are
/// at most a few thousand terms long, and f32 sums of n terms stay well
/// under 1e-5 of the magnitude in practice (worst case n * 6e-8).
pub const REL_TOL: f32 = 1e-5;

/// Runs the JIT and the interpreter and compares every output.
pub fn check(layer: &Layer, weights: &Weights, x: &[f32], batch: usize) -> Result<(), String> {
    check_with(layer, weights, x, batch, &Options::default())
}

/// `check` with planner overrides (fusion, threads, bands).
pub fn check_with(
    layer: &Layer,
    weights: &Weights,
    x: &[f32],
    batch: usize,
    options: &Options,
) -> Result<(), String> {
    let k = Kernel::compile_with(layer, weights, options).map_err(|e| e.to_string())?;
    let got = k.run_alloc(x, batch).map_err(|e| e.to_string())?;
    let want = interpret(layer, weights, x, batch).unwrap();
    let mag = magnitude(layer, weights, x, batch);
    assert_eq!(got.len(), want.len());
    for (i, ((g, w), m)) in got.iter().zip(&want).zip(&mag).enumerate() {
        let tol = REL_TOL * (1.0 + m);
        // Written so that a NaN on either side fails.
        if (g - w).abs().is_nan() || (g - w).abs() > tol {
            let o = layer.output();
            let c = i % o.c;
            let x = i / o.c % o.w;
            let y = i / o.c / o.w % o.h;
            let n = i / o.len();
            return Err(format!(
                "output {i} (n={n} y={y} x={x} c={c}): jit {g} vs interp {w} (tol {tol})"
            ));
        }
    }
    Ok(())
}

pub fn check_src(src: &str, batch: usize, seed: u64) {
    let l = layer(src);
    let w = Weights::random(&l, seed);
    let x = input(&l, batch, seed + 1);
    if let Err(e) = check(&l, &w, &x, batch) {
        panic!("{src}\n{e}");
    }
}
