//! Criterion benchmarks: every layer of the peer suite (`benches/suite.conv`,
//! the layers ONNX Runtime and TFLite+XNNPACK were timed on), generated
//! kernel vs the reference interpreter, plus the cost of a compile-cache hit.
//! Throughput is reported in FLOP/s (2 per multiply-accumulate).
//!
//! `cargo bench --bench kernels [-- FILTER]`. The interpreter is timed only on
//! layers under 20 M MACs (it runs ~1 GFLOP/s; criterion needs many samples).

use convjit::{Kernel, Rng, Weights};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

fn suite(c: &mut Criterion) {
    let text = include_str!("suite.conv");
    let layers = convjit::parse_layers("benches/suite.conv", text).expect("suite parses");
    for layer in &layers {
        let weights = Weights::random(layer, 1);
        let input = Rng::new(2).vec(layer.input.len(), 1.0);
        let mut output = vec![0f32; layer.output().len()];
        let kernel = Kernel::compile(layer, &weights).expect("compiles");

        let mut g = c.benchmark_group(&layer.name);
        g.throughput(Throughput::Elements(2 * layer.macs()));
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(2));
        g.bench_function(BenchmarkId::new("jit", 1), |b| {
            b.iter(|| kernel.run(black_box(&input), &mut output, 1).unwrap())
        });
        if layer.macs() < 20_000_000 {
            g.sample_size(10);
            g.bench_function(BenchmarkId::new("interp", 1), |b| {
                b.iter(|| convjit::interpret(layer, &weights, black_box(&input), 1).unwrap())
            });
        }
        g.finish();
    }
    // Compiling a layer whose code is cached: packing weights plus a lookup.
    let small = &layers[1];
    let weights = Weights::random(small, 1);
    Kernel::compile(small, &weights).unwrap();
    c.bench_function("compile_cache_hit/textbook_sep", |b| {
        b.iter(|| Kernel::compile(black_box(small), &weights).unwrap())
    });
}

criterion_group!(benches, suite);
criterion_main!(benches);
