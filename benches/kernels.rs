//! Every layer of the peer suite (`benches/suite.conv`, the layers ONNX
//! Runtime and TFLite+XNNPACK were timed on): the generated kernel and the
//! reference interpreter, plus the cost of a compile-cache hit, timed by
//! the harness `convjit bench` uses (`convjit_bench::harness`: warm-up,
//! samples of at least 10 ms, medians; the interpreter in samples of 1 ms).
//! Throughput is reported in GFLOP/s (2 FLOPs per multiply-accumulate).
//!
//! `cargo bench --bench kernels [-- FILTER]` (layers whose name contains
//! FILTER). The interpreter is timed only on layers under 20 M MACs (it
//! runs ~1 GFLOP/s). `convjit bench benches/suite.conv` times more
//! variants (unfused, threaded, every generator, the hand-written kernels)
//! in interleaved rounds.

use convjit::{Kernel, Weights};
use convjit_bench::harness::{interleaved_medians, median_per_call, Aligned, Timed};
use std::hint::black_box;
use std::time::Duration;

/// Time per variant.
const BUDGET: Duration = Duration::from_secs(2);

fn main() {
    // `cargo bench` passes `--bench`; anything else is a name filter.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let text = include_str!("suite.conv");
    let layers = convjit::parse_layers("benches/suite.conv", text).expect("suite parses");
    println!(
        "{:<28} {:<8} {:>12} {:>9}",
        "layer", "variant", "median us", "GFLOP/s"
    );
    for layer in &layers {
        if filter.as_deref().is_some_and(|f| !layer.name.contains(f)) {
            continue;
        }
        let weights = Weights::random(layer, 1);
        let input = Aligned::random(layer.input.len(), 2).expect("fits");
        let mut output = Aligned::zeros(layer.output().len()).expect("fits");
        let kernel = Kernel::compile(layer, &weights).expect("compiles");
        let flops = 2.0 * layer.macs() as f64;
        let report = |variant: &str, t: Duration| {
            println!(
                "{:<28} {:<8} {:>12.2} {:>9.2}",
                layer.name,
                variant,
                t.as_secs_f64() * 1e6,
                flops / t.as_secs_f64() / 1e9
            )
        };
        let mut jit: Vec<Timed> = vec![(
            "jit".into(),
            Box::new(|| {
                kernel
                    .run(black_box(&input), &mut output, 1)
                    .expect("lengths checked")
            }),
        )];
        report("jit", interleaved_medians(BUDGET, &mut jit)[0]);
        if layer.macs() < 20_000_000 {
            let t = median_per_call(BUDGET, || {
                black_box(convjit::interpret(layer, &weights, black_box(&input), 1).unwrap());
            });
            report("interp", t);
        }
    }
    // Compiling a layer whose code is cached: packing weights plus a lookup.
    let small = &layers[1];
    let weights = Weights::random(small, 1);
    Kernel::compile(small, &weights).unwrap();
    let t = median_per_call(BUDGET, || {
        black_box(Kernel::compile(black_box(small), &weights).unwrap());
    });
    println!(
        "compile_cache_hit/{}: {:.2} us",
        small.name,
        t.as_secs_f64() * 1e6
    );
}
