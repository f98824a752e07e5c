//! Times only the planned kernel of one layer (no variants, peers or
//! peaks), for quick A/B runs of code-generator changes on the image
//! filters: `cargo run --release --example filters_time --
//! examples/filters.conv LAYER W/LAYER.npz [SECONDS [BAND_ROWS]]` prints the layer,
//! its fastest and median call in microseconds. `convjit bench` stays
//! the measurement of record.

use convjit::{Kernel, Options};
use convjit_bench::harness::Aligned;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, name, weights, rest @ ..] = &args[..] else {
        return Err("usage: filters_time FILE LAYER WEIGHTS.npz [SECONDS [BAND_ROWS]]".into());
    };
    let seconds: f64 = rest.first().map_or(Ok(1.0), |s| s.parse())?;
    let band_rows = rest.get(1).map(|s| s.parse()).transpose()?;
    let layer = convjit::select_layer(convjit::load_layers(file)?, Some(name))?;
    let w = convjit::load_weights(&layer, weights)?;
    let options = Options {
        band_rows,
        ..Options::default()
    };
    let kernel = Kernel::compile_with(&layer, &w, &options)?;
    let input = Aligned::random(layer.input.len(), 2)?;
    let mut output = Aligned::zeros(layer.output().len())?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 20 || start.elapsed() < Duration::from_secs_f64(seconds) {
        let t = Instant::now();
        kernel.run(&input, &mut output, 1)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "{name} min {:.1} us median {:.1} us ({} calls)",
        samples[0],
        samples[samples.len() / 2],
        samples.len()
    );
    Ok(())
}
