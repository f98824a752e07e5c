//! Helpers shared by the integration tests: layers from `.conv` text and
//! comparison against the reference interpreter.
#![allow(dead_code)]

use convjit_ir::Precision;
use convjit_ir::{compile_source, Layer, Reference, Rng, Weights};
use convjit_jit::testing::Guarded;
use convjit_jit::Kernel;
use convjit_plan::backend::has_bf16;
use convjit_plan::stage_plan::Bf16Units;
use convjit_plan::{Backend, Fusion, Options};

pub fn layer(src: &str) -> Layer {
    compile_source(src)
        .unwrap_or_else(|d| panic!("{src}: {d:?}"))
        .remove(0)
}

pub fn input(layer: &Layer, batch: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed).vec(batch * layer.input.len(), 1.0)
}

/// See [`convjit_ir::magnitude`].
pub fn magnitude(layer: &Layer, weights: &Weights, input: &[f32], batch: usize) -> Vec<f32> {
    convjit_ir::magnitude(layer, weights, input, batch).unwrap()
}

/// Runs the JIT and the interpreter and compares every output
/// ([`convjit_ir::compare`]: finite outputs within the tolerance, NaN
/// exactly where the interpreter has NaN, infinities equal).
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
    let got = run_guarded(&k, x, batch)?;
    // In the kernel's precision (bf16: also within bf16's bound of f32).
    let reference = Reference::new(layer, weights, x, batch, options.precision).unwrap();
    assert_eq!(got.len(), reference.output.len());
    let c = reference.compare(&got);
    if !c.pass() {
        let (i, (g, w)) = (c.worst, c.values);
        let o = layer.output();
        let ch = i % o.c;
        let x = i / o.c % o.w;
        let y = i / o.c / o.w % o.h;
        let n = i / o.len();
        return Err(format!(
            "output {i} (n={n} y={y} x={x} c={ch}): jit {g} vs interp {w} (tol {})",
            c.tolerance
        ));
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

/// Runs `k` with its input and output between guard pages (the kernel's
/// own buffers are, with the `testing` feature these tests enable), twice:
/// data ending at the trailing guard (any overflow faults) and starting at
/// the leading one (any underflow faults). Both runs must agree bitwise.
pub fn run_guarded(k: &Kernel, x: &[f32], batch: usize) -> Result<Vec<f32>, String> {
    let n = batch * k.layer().output().len();
    let mut outs = Vec::new();
    for at_end in [true, false] {
        let xin = Guarded::from_slice(x, at_end);
        let mut out = Guarded::zeroed(n, at_end);
        k.run(&xin, &mut out, batch).map_err(|e| e.to_string())?;
        outs.push(out.to_vec());
    }
    if outs[0]
        .iter()
        .zip(&outs[1])
        .any(|(a, b)| a.to_bits() != b.to_bits())
    {
        return Err("the output depends on where the buffers are".into());
    }
    Ok(outs.remove(0))
}

/// A random case's layer, seeded weights and input (scaled by the case),
/// or `None` where its text does not validate or its batch would cost the
/// interpreter more than `max_macs` (property tests skip those).
pub fn case_data(
    c: &convjit_ir::random_layer::LayerCase,
    max_macs: u64,
) -> Option<(Layer, Weights, Vec<f32>)> {
    let l = compile_source(&c.src).ok()?.remove(0);
    if l.macs() * c.batch as u64 > max_macs {
        return None;
    }
    let w = Weights::random(&l, c.seed);
    let x = input(&l, c.batch, c.seed ^ 0x5555)
        .iter()
        .map(|v| v * c.scale)
        .collect();
    Some((l, w, x))
}

/// The bf16 edge layers of `src` (every layer of it), checked fused and
/// not, on 1 and 2 threads, with NaN and infinities among the inputs,
/// under `options(fusion, threads)`; `ran` then asserts on each layer's
/// disassembly that the arithmetic meant for it ran.
pub fn check_bf16_edges(
    src: &str,
    options: &dyn Fn(Fusion, usize) -> Options,
    ran: &dyn Fn(&Layer, &str),
) {
    for l in compile_source(src).unwrap() {
        let w = Weights::random(&l, 11);
        let x: Vec<f32> = input(&l, 2, 12).iter().map(|v| v * 3.0).collect();
        for (fuse, threads) in [(Fusion::Auto, 1), (Fusion::Never, 2), (Fusion::Always, 2)] {
            check_with(&l, &w, &x, 2, &options(fuse, threads))
                .unwrap_or_else(|e| panic!("layer {} {fuse:?} {threads}: {e}", l.name));
        }
        // NaN and infinities propagate as in f32.
        let mut special = x.clone();
        let n = special.len();
        for (i, v) in [(5, f32::NAN), (17, f32::INFINITY), (40, f32::NEG_INFINITY)] {
            special[i % n] = v;
        }
        let o = options(Fusion::Auto, 1);
        check_with(&l, &w, &special, 2, &o)
            .unwrap_or_else(|e| panic!("layer {} with NaN and inf: {e}", l.name));
        ran(&l, &Kernel::compile_with(&l, &w, &o).unwrap().asm());
    }
}

/// bf16 on the AVX-512 generator with `units`, every thread count taken
/// as asked (no minimum work per thread).
pub fn bf16_options(fuse: Fusion, threads: usize, units: Bf16Units) -> Options {
    Options {
        fuse,
        threads,
        min_thread_cycles: 0,
        backend: Backend::Avx512,
        precision: Precision::Bf16,
        bf16_units: units,
        ..Options::default()
    }
}

/// Whether a bf16 test must skip (saying so): no AVX512_BF16 here.
pub fn skip_without_bf16() -> bool {
    if !has_bf16() {
        eprintln!("skipped: this CPU has no AVX512_BF16");
    }
    !has_bf16()
}

/// Kernels of `l` with bf16 intermediates (`options`) against the same
/// kernels keeping them f32 (`Options::bf16_intermediates` off): bit for
/// bit the same output (the values stored are the same bf16 numbers) and
/// within the interpreter's bound; fused or not, one and two threads,
/// short bands (rows kept for the next band shifted), batches of 1 and 3.
/// `stores(asm)` says whether a kernel stores bf16 (asserted false of
/// every f32-intermediate kernel); returns in how many of the 5
/// configurations the bf16 one did.
pub fn bf16_intermediates_match(
    l: &Layer,
    options: &dyn Fn(Fusion, usize) -> Options,
    stores: &dyn Fn(&str) -> bool,
) -> usize {
    let w = Weights::random(l, 31);
    let mut engaged = 0;
    let configs = [
        (Fusion::Auto, 1, None),
        (Fusion::Never, 2, None),
        (Fusion::Always, 2, None),
        (Fusion::Always, 1, Some(2)),
        (Fusion::Always, 2, Some(3)),
    ];
    for (fuse, threads, band_rows) in configs {
        let o = Options {
            band_rows,
            ..options(fuse, threads)
        };
        let old = Options {
            bf16_intermediates: false,
            ..o.clone()
        };
        let new = Kernel::compile_with(l, &w, &o).unwrap();
        engaged += usize::from(stores(&new.asm()));
        let old = Kernel::compile_with(l, &w, &old).unwrap();
        assert!(!stores(&old.asm()), "layer {}: f32 stored as bf16", l.name);
        for batch in [1, 3] {
            let x: Vec<f32> = input(l, batch, 32).iter().map(|v| v * 2.0).collect();
            let (a, b) = (
                new.run_alloc(&x, batch).unwrap(),
                old.run_alloc(&x, batch).unwrap(),
            );
            let same = a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits());
            let what = format!(
                "layer {} {fuse:?} {threads} {band_rows:?} batch {batch}",
                l.name
            );
            assert!(same, "{what}");
            check_with(l, &w, &x, batch, &o).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
    engaged
}
