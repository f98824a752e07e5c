//! Rough single-thread throughput of each family on typical MobileNet-style
//! layers. Run by hand:
//! `cargo test --release -p convjit-baselines --test timing -- --ignored --nocapture`

use convjit_baselines::{Baseline, Family};
use convjit_ir::{compile_source, Rng, Weights};
use std::time::{Duration, Instant};

const LAYERS: [&str; 5] = [
    "layer pw_56x56x24_144 { input 56x56x24\n p: pointwise 144 }",
    "layer pw_14x14x512_512 { input 14x14x512\n p: pointwise 512 }",
    "layer dw3x3_56x56x144 { input 56x56x144\n d: depthwise 3x3, pad same }",
    "layer dw3x3_m2_56x56x32 { input 56x56x32\n d: depthwise 3x3, pad same, multiplier 2 }",
    "layer conv3x3_56x56x64_64 { input 56x56x64\n c: conv 3x3 -> 64, pad same }",
];

#[test]
#[ignore = "timing, run by hand"]
fn gflops() {
    for src in LAYERS {
        let l = compile_source(src).unwrap().remove(0);
        let w = Weights::random(&l, 1);
        let input = Rng::new(2).vec(l.input.len(), 1.0);
        let mut out = vec![0f32; l.output().len()];
        let flops = 2.0 * l.macs() as f64;
        let mut line = format!("{:<24}", l.name);
        for family in Family::ALL {
            let Some(mut b) = Baseline::prepare(family, &l, &w) else {
                line += &format!("  {:>7} {:>7}", family.name(), "-");
                continue;
            };
            b.run(&input, &mut out, 1); // warm up
                                        // Best of several ~0.2 s rounds: the machine is shared and noisy.
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let mut reps = 0u32;
                let t = Instant::now();
                while reps == 0 || t.elapsed() < Duration::from_millis(200) {
                    b.run(&input, &mut out, 1);
                    reps += 1;
                }
                best = best.min(t.elapsed() / reps);
            }
            let gf = flops / best.as_secs_f64() / 1e9;
            line += &format!("  {:>7} {gf:7.2}", family.name());
        }
        println!("{line}   GFLOP/s");
    }
}
