//! `convjit run FILE.conv [--layer NAME] [--input IN.npy] [--weights W.npz]
//! [--output OUT.npy] [--engine jit|interp]`

use super::Failure;
use clap::{Args, ValueEnum};
use convjit::{Layer, Rng, Weights};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct RunArgs {
    file: PathBuf,
    /// The layer to run (needed when the file holds several).
    #[arg(long)]
    layer: Option<String>,
    /// float32 [N, H, W, C] input (default: seeded random, N = --batch).
    #[arg(long, value_name = "IN.npy")]
    input: Option<PathBuf>,
    /// Weights archive, keyed STAGE.weight / STAGE.bias (default: seeded random).
    #[arg(long, value_name = "W.npz")]
    weights: Option<PathBuf>,
    /// Where to write the float32 [N, Ho, Wo, Co] output (default: print a summary).
    #[arg(long, short, value_name = "OUT.npy")]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Engine::Jit)]
    engine: Engine,
    #[command(flatten)]
    planner: super::PlannerArgs,
    /// Seed for random input and weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Batch size of the random input.
    #[arg(long, default_value_t = 1, conflicts_with = "input",
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    /// Code generated for this layer and this CPU.
    Jit,
    /// The reference interpreter (f64 accumulation; slow, and the oracle).
    Interp,
}

pub fn run(a: &RunArgs) -> Result<(), Failure> {
    let inputs: Vec<(&str, &Path)> = [
        ("the layer file", Some(a.file.as_path())),
        ("the input", a.input.as_deref()),
        ("the weights", a.weights.as_deref()),
    ]
    .into_iter()
    .filter_map(|(role, p)| Some((role, p?)))
    .collect();
    let targets: Vec<(&str, &Path)> = a.output.iter().map(|p| ("-o", p.as_path())).collect();
    let (mut out, ids) = super::outputs(&targets, &inputs)?;
    let layer = convjit::select_layer(convjit::load_layers(&a.file)?, a.layer.as_deref())?;
    // Usage errors whatever the engine. The interpreter runs the layer as
    // written: against a --separate-rank kernel's output it shows what the
    // approximation costs on this input.
    let options = a.planner.options()?;
    // Refusals that need no data come before any is made (random weights
    // of a layer too wide to compile may be gigabytes).
    let images = if a.input.is_some() {
        1
    } else {
        a.batch as usize
    };
    match a.engine {
        Engine::Interp => convjit::check_work(&layer, images, 1)?,
        Engine::Jit if a.weights.is_none() => {
            convjit::Kernel::check_size(&layer, &options, None).map_err(convjit::Error::from)?
        }
        Engine::Jit => {}
    }
    let weights = match &a.weights {
        Some(path) => convjit::load_weights(&layer, path)?,
        None => {
            eprintln!(
                "note: no --weights: using seeded random weights (seed {})",
                a.seed
            );
            Weights::try_random(&layer, a.seed)?
        }
    };
    let (input, batch) = match &a.input {
        Some(path) => convjit::load_input(&layer, path)?,
        None => {
            let batch = a.batch as usize;
            let n = layer.input.len().checked_mul(batch).ok_or_else(|| {
                Failure::Usage(format!("--batch {batch} is too large for this layer"))
            })?;
            // A batch that cannot fit is refused, not aborted.
            convjit::check_batch(&layer, batch, 1)?;
            // Random input comes from a stream of its own, so it does not
            // change when weights are loaded from a file instead.
            (Rng::new(a.seed ^ 0x5EED_1A7E).vec(n, 1.0), batch)
        }
    };
    let output = match a.engine {
        // In bf16 the interpreter rounds as a bf16 kernel does.
        Engine::Interp => {
            convjit::interpret_in(&layer, &weights, &input, batch, options.precision)?
        }
        Engine::Jit => convjit::Kernel::compile_with(&layer, &weights, &options)
            .and_then(|k| k.run_alloc(&input, batch))
            .map_err(convjit::Error::from)?,
    };
    let o = layer.output();
    match &a.output {
        Some(_) => {
            let shape = [batch, o.h, o.w, o.c];
            out.write(ids[0], |f| convjit::npy::write_npy_to(f, &shape, &output))?;
            out.commit()?;
        }
        None => print!("{}", summary(&layer, batch, &output)),
    }
    Ok(())
}

/// Shape and statistics of an output, for runs without `--output`.
fn summary(layer: &Layer, batch: usize, out: &[f32]) -> String {
    let o = layer.output();
    // min and max of the numbers; NaNs are counted apart (f32::min
    // skips them, which hid them).
    let (min, max) = out
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let nans = out.iter().filter(|x| x.is_nan()).count();
    let nans = match nans {
        0 => String::new(),
        n => format!("  NaN {n}"),
    };
    let mean = out.iter().map(|&x| x as f64).sum::<f64>() / out.len().max(1) as f64;
    let head: Vec<String> = out.iter().take(6).map(|x| format!("{x:.6}")).collect();
    format!(
        "layer {}: output [{batch}, {}, {}, {}] ({} values)\n  min {min:.6}  max {max:.6}  mean {mean:.6}{nans}\n  first values: {}\n",
        layer.name,
        o.h,
        o.w,
        o.c,
        out.len(),
        head.join(", ")
    )
}
