//! Quick throughput check of generated kernels:
//! `cargo run --release -p convjit-jit --example gflops [FILTER]`.

use convjit_ir::{compile_source, Rng, Weights};
use convjit_jit::Kernel;
use std::time::Instant;

const LAYERS: &[(&str, &str)] = &[
    (
        "pw 56x56x144->24",
        "input 56x56x144\n p: pointwise 24, bias",
    ),
    (
        "pw 56x56x24->144",
        "input 56x56x24\n p: pointwise 144, bias, relu6",
    ),
    (
        "dw 3x3 56x56x144",
        "input 56x56x144\n d: depthwise 3x3, pad same, bias, relu6",
    ),
    (
        "dw 3x3 112x112x32",
        "input 112x112x32\n d: depthwise 3x3, pad same, bias, relu6",
    ),
    (
        "dw 3x3 s2 112x112x64",
        "input 112x112x64\n d: depthwise 3x3, stride 2, pad same, bias, relu6",
    ),
    (
        "dw 3x3 m2 56x56x32",
        "input 56x56x32\n d: depthwise 3x3, pad same, multiplier 2, bias, relu",
    ),
    (
        "dw 3x3 m4 56x56x32",
        "input 56x56x32\n d: depthwise 3x3, pad same, multiplier 4",
    ),
    (
        "dw 3x3 m3 28x28x24",
        "input 28x28x24\n d: depthwise 3x3, pad same, multiplier 3, bias",
    ),
    (
        "dw 5x5 28x28x96",
        "input 28x28x96\n d: depthwise 5x5, pad same, bias, relu6",
    ),
    (
        "textbook sep 12x12x3 k5 256",
        "input 12x12x3\n sep: conv 5x5 -> 256, separable depthwise, pad valid",
    ),
    (
        "conv 3x3 56x56x64->64",
        "input 56x56x64\n c: conv 3x3 -> 64, pad same, bias, relu",
    ),
    (
        "conv 3x3 s2 224x224x3->32",
        "input 224x224x3\n c: conv 3x3 -> 32, stride 2, pad same, bias, relu6",
    ),
    (
        "conv 7x7 17x17x128->128",
        "input 17x17x128\n c: conv 7x7 -> 128, pad same, bias, relu",
    ),
    (
        "sep 14x14x512->512",
        "input 14x14x512\n d: depthwise 3x3, pad same, bias, relu6\n p: pointwise 512, bias, relu6",
    ),
];

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    // An argument that is a layer body (`"input 8x8x16\\n d: depthwise 3x3"`)
    // is measured instead of the built-in list.
    let custom = filter.replace("\\n", "\n");
    let layers: Vec<(&str, &str)> = if filter.starts_with("input ") {
        vec![("custom", custom.as_str())]
    } else {
        LAYERS.to_vec()
    };
    for (name, body) in layers {
        if !name.contains(&filter) && name != "custom" {
            continue;
        }
        let l = compile_source(&format!("layer l {{ {body} }}"))
            .unwrap()
            .remove(0);
        let w = Weights::random(&l, 1);
        let t = Instant::now();
        let k = Kernel::compile(&l, &w).unwrap();
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        let x = Rng::new(2).vec(l.input.len(), 1.0);
        let mut out = vec![0f32; l.output().len()];
        k.run(&x, &mut out, 1).unwrap();
        // Repeat for ~0.3 s, report the median of 15 samples.
        let t = Instant::now();
        let mut reps = 0;
        while t.elapsed().as_secs_f64() < 0.02 {
            k.run(&x, &mut out, 1).unwrap();
            reps += 1;
        }
        let mut samples: Vec<f64> = (0..15)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..reps {
                    k.run(&x, &mut out, 1).unwrap();
                }
                t.elapsed().as_secs_f64() / reps as f64
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        let s = samples[7];
        let gflops = 2.0 * l.macs() as f64 / s / 1e9;
        let best = 2.0 * l.macs() as f64 / samples[0] / 1e9;
        println!(
            "{name:28} {:9.1} us {gflops:6.1} GFLOP/s (best {best:5.1})  compile {compile_ms:6.2} ms  {:?}",
            s * 1e6,
            k.schedules()
                .iter()
                .map(|s| (s.px, s.units))
                .collect::<Vec<_>>()
        );
    }
}
