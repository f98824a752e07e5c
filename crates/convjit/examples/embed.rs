//! Embedding convjit in a Rust program: parse a layer, compile it for this
//! CPU with weights, run it on a batch, and check it against the reference.
//!
//! `cargo run --release -p convjit --example embed`

use convjit::{Kernel, Rng, Weights};

const LAYER: &str = "
layer mbv1_block {
  input 56x56x32
  dw: depthwise 3x3, pad same, bias, relu6
  pw: pointwise 64, bias, relu6
}";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let layers = convjit::parse_layers("embedded.conv", LAYER)?;
    let layer = &layers[0];
    println!(
        "{}: {} -> {}, {} MACs per image",
        layer.name,
        layer.input,
        layer.output(),
        layer.macs()
    );

    // Weights would normally come from `convjit::load_weights(layer, path)`.
    let weights = Weights::random(layer, 7);
    let kernel = Kernel::compile(layer, &weights)?;
    println!("compiled in {:.2} ms", kernel.compile_stats().seconds * 1e3);

    let batch = 4;
    let input = Rng::new(1).vec(batch * layer.input.len(), 1.0);
    let mut output = vec![0f32; batch * layer.output().len()];
    kernel.run(&input, &mut output, batch)?;

    // A kernel is Send + Sync: share it across threads, one image each.
    let per_in = layer.input.len();
    let per_out = layer.output().len();
    let mut threaded = vec![0f32; output.len()];
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = input
            .chunks(per_in)
            .zip(threaded.chunks_mut(per_out))
            .map(|(img, out)| s.spawn(|| kernel.run(img, out, 1)))
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    for r in results {
        r.map_err(|_| "a worker thread panicked")??;
    }
    assert_eq!(output, threaded);

    let reference = convjit::interpret(layer, &weights, &input, batch)?;
    let max_diff = output
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("batch {batch}: max |jit - interpreter| = {max_diff:.2e}");
    assert!(max_diff < 1e-4);
    Ok(())
}
