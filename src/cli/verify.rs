//! `convjit verify FILE.conv [--layer NAME] [--weights W.npz]
//! [--backend all|auto|cranelift|avx2|avx512]`: every layer's generated
//! code, from every code generator the host runs (or the one named), against
//! the interpreter on seeded random data; per layer and generator the worst
//! error against its tolerance and PASS or FAIL. Exit 1 on any failure.

use super::Failure;
use clap::Args;
use convjit::verify::{check_generated, Outcome, Reference};
use convjit::{Backend, JitError, Layer, Rng, Weights};
use std::path::PathBuf;

#[derive(Args)]
pub struct VerifyArgs {
    file: PathBuf,
    /// The layer to verify (default: every layer of the file).
    #[arg(long)]
    layer: Option<String>,
    /// Weights archive (one layer: --layer is needed when the file holds
    /// several); default seeded random weights.
    #[arg(long, value_name = "W.npz")]
    weights: Option<PathBuf>,
    /// all (every generator the host runs), auto, cranelift, avx2, avx512.
    #[arg(long, default_value = "all", value_parser = parse_backends)]
    backend: Backends,
    /// Seed of the random input and weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images in the random input.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    batch: u64,
}

#[derive(Clone)]
enum Backends {
    All,
    One(Backend),
}

fn parse_backends(s: &str) -> Result<Backends, String> {
    match s {
        "all" => Ok(Backends::All),
        _ => convjit::Backend::parse(s)
            .map(Backends::One)
            .ok_or_else(|| {
                format!("'{s}' is not a code generator (all, auto, cranelift, avx2, avx512)")
            }),
    }
}

pub fn verify(a: &VerifyArgs) -> Result<(), Failure> {
    let backends = match a.backend {
        Backends::All => Backend::available(),
        Backends::One(b) => {
            let concrete = b
                .resolve()
                .map_err(|m| Failure::Input(convjit::Error::Jit(JitError::Unsupported(m))))?;
            vec![concrete]
        }
    };
    let layers = match &a.weights {
        Some(_) => vec![convjit::select_layer(
            convjit::load_layers(&a.file)?,
            a.layer.as_deref(),
        )?],
        None => super::layers(&a.file, a.layer.as_deref())?,
    };
    let mut failures = 0;
    let mut checks = 0;
    for layer in &layers {
        let weights = match &a.weights {
            Some(path) => convjit::load_weights(layer, path)?,
            None => Weights::random(layer, a.seed),
        };
        failures += verify_layer(layer, &weights, a, &backends, &mut checks)?;
    }
    println!(
        "{checks} kernels checked, {failures} failed ({} layers)",
        layers.len()
    );
    if failures > 0 {
        return Err(Failure::Quiet(1));
    }
    Ok(())
}

/// Prints one line per generator; returns how many failed.
fn verify_layer(
    layer: &Layer,
    weights: &Weights,
    a: &VerifyArgs,
    backends: &[Backend],
    checks: &mut usize,
) -> Result<usize, Failure> {
    let batch = a.batch as usize;
    let n = layer.input.len() * batch;
    let input = Rng::new(a.seed ^ 0x5EED_1A7E).vec(n, 1.0);
    let reference = Reference::new(layer, weights, &input, batch)?;
    let (i, o) = (layer.input, layer.output());
    println!(
        "layer {}: {}x{}x{} -> {}x{}x{}, batch {batch}",
        layer.name, i.h, i.w, i.c, o.h, o.w, o.c
    );
    let mut failed = 0;
    for &backend in backends {
        let options = convjit::Options {
            backend,
            ..convjit::Options::default()
        };
        let outcome = check_generated(layer, weights, &input, batch, &options, &reference);
        *checks += 1;
        let verdict = if outcome.pass() { "PASS" } else { "FAIL" };
        failed += usize::from(!outcome.pass());
        let detail = match outcome {
            Outcome::Compared(c) => format!(
                "worst error {:.3e} at output {} (tolerance {:.3e}; got {}, interpreter {}), largest error {:.3e}",
                c.error, c.worst, c.tolerance, c.values.0, c.values.1, c.max_error
            ),
            Outcome::Refused(m) => format!("not compiled: {m}"),
            Outcome::Failed(m) => m,
        };
        println!("  {:<10} {verdict}  {detail}", backend.name());
    }
    Ok(failed)
}
