//! Planning and compile time per stage against the number of stages, to
//! show both are linear in it (planning was quadratic: 20,000 stages took
//! a minute): `cargo run --release -p convjit-jit --example plan_time`.
//!
//! Layers of N stages, alternately `depthwise 3x3, pad same` and
//! `pointwise 8` on 8x8x8 (small tensors: the planner's work, not the
//! model's arithmetic, dominates). Per N: the layer plan by the cost model
//! (`auto`) and with every stage fused (`fuse-all`), each the median of a
//! few runs, and one compile (plan, program, code; a first compile of
//! those shapes, not a cache hit). Layers beyond `MAX_STAGES` are refused
//! before planning: the time to refuse is shown instead.
use convjit_ir::{compile_source, Layer, Weights};
use convjit_jit::{JitError, Kernel};
use convjit_plan::layer_plan::{plan_layer, Host};
use convjit_plan::{Fusion, Options};
use std::time::Instant;

fn layer(n: usize) -> Layer {
    let stages: String = (0..n)
        .map(|i| match i % 2 {
            0 => format!("  s{i}: depthwise 3x3, pad same\n"),
            _ => format!("  s{i}: pointwise 8\n"),
        })
        .collect();
    compile_source(&format!("layer chain {{\n  input 8x8x8\n{stages}}}\n"))
        .expect("a valid layer")
        .remove(0)
}

/// Median seconds of `runs` calls of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn main() {
    let host = Host::detect();
    println!(
        "{:>7}  {:>16}  {:>16}  {:>22}",
        "stages", "plan auto", "plan fuse-all", "compile"
    );
    for n in [100, 1_000, 5_000, 20_000] {
        let l = layer(n);
        let per_stage = |s: f64| format!("{:7.2} us/stage", s * 1e6 / n as f64);
        let plan = |fuse| {
            let options = Options {
                fuse,
                ..Options::default()
            };
            median(5, || {
                std::hint::black_box(plan_layer(&l, &options, &host));
            })
        };
        let (auto, all) = (plan(Fusion::Auto), plan(Fusion::Always));
        let weights = Weights::random(&l, 1);
        let start = Instant::now();
        let compiled = Kernel::compile(&l, &weights);
        let s = start.elapsed().as_secs_f64();
        let compile = match compiled {
            Ok(_) => per_stage(s),
            Err(JitError::TooLarge(_)) => format!("refused in {:.1} ms", s * 1e3),
            Err(e) => panic!("{n} stages: {e}"),
        };
        println!(
            "{n:>7}  {}  {}  {compile:>22}",
            per_stage(auto),
            per_stage(all)
        );
    }
}
