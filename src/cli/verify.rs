//! `convjit verify FILE.conv [--layer NAME] [--weights W.npz]
//! [--backend all|auto|cranelift|avx2|avx512]`: every layer's generated
//! code, from every code generator the host runs (or the one named), against
//! the interpreter on seeded random data; per layer and generator the worst
//! error against its tolerance and PASS or FAIL, or NOT VERIFIED where the
//! generator refuses the layer (too much code), with the reason. Exit 1
//! unless every kernel passed.

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
    /// Check a built object instead (`convjit build ... --weights W.npz -o
    /// K.o`, weights baked in): it is linked with --cc into a small driver,
    /// run on the seeded input, and compared with the interpreter.
    #[arg(long, value_name = "K.o", requires = "weights")]
    object: Option<PathBuf>,
    /// The C compiler that links --object for this machine.
    #[arg(long, default_value = "cc", requires = "object")]
    cc: String,
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
    if let (Some(object), Some(weights)) = (&a.object, &a.weights) {
        let layer = convjit::select_layer(convjit::load_layers(&a.file)?, a.layer.as_deref())?;
        let weights = convjit::load_weights(&layer, weights)?;
        return verify_object(&layer, &weights, object, a);
    }
    let backends = match a.backend {
        Backends::All => Backend::available(),
        Backends::One(b) => {
            let concrete = b
                .resolve()
                .map_err(|m| Failure::Input(convjit::Error::Jit(JitError::Unsupported(m))))?;
            vec![concrete]
        }
    };
    let layers = super::layers_for(&a.file, a.layer.as_deref(), a.weights.is_some())?;
    let mut failures = 0;
    let mut checks = 0;
    for layer in &layers {
        let weights = match &a.weights {
            Some(path) => convjit::load_weights(layer, path)?,
            None => Weights::try_random(layer, a.seed)?,
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

fn detail(outcome: Outcome) -> String {
    match outcome {
        Outcome::Compared(c) => format!(
            "worst error {:.3e} at output {} (tolerance {:.3e}; got {}, interpreter {}), largest error {:.3e}",
            c.error, c.worst, c.tolerance, c.values.0, c.values.1, c.max_error
        ),
        Outcome::Refused(m) => format!("not compiled: {m}"),
        Outcome::Failed(m) => m,
    }
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
    // The input, the reference and its magnitudes, one kernel's output.
    super::check_batch(layer, batch, 3)?;
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
        let verdict = match (&outcome, outcome.pass()) {
            (_, true) => "PASS",
            // Not a wrong result, but nothing was checked either.
            (Outcome::Refused(_), _) => "NOT VERIFIED",
            _ => "FAIL",
        };
        failed += usize::from(!outcome.pass());
        let detail = detail(outcome);
        println!("  {:<10} {verdict}  {detail}", backend.name());
    }
    Ok(failed)
}

/// Links `object` (baked weights) into a driver that reads the input from a
/// file, calls `convjit_LAYER` and writes the output; runs it and compares.
fn verify_object(
    layer: &Layer,
    weights: &Weights,
    object: &std::path::Path,
    a: &VerifyArgs,
) -> Result<(), Failure> {
    use std::process::Command;
    let fail = |message: String| {
        Failure::Input(convjit::Error::Io {
            path: object.to_path_buf(),
            message,
        })
    };
    if !object.is_file() {
        return Err(fail("no such object file".into()));
    }
    let batch = a.batch as usize;
    let input = Rng::new(a.seed ^ 0x5EED_1A7E).vec(layer.input.len() * batch, 1.0);
    let reference = Reference::new(layer, weights, &input, batch)?;
    let dir = tempfile::tempdir().map_err(|e| fail(format!("no temporary directory: {e}")))?;
    let (driver, exe) = (dir.path().join("driver.c"), dir.path().join("driver"));
    let (in_path, out_path) = (dir.path().join("in.f32"), dir.path().join("out.f32"));
    let io = |e: std::io::Error| fail(format!("temporary files: {e}"));
    std::fs::write(&driver, driver_source(&layer.name)).map_err(io)?;
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&in_path, bytes).map_err(io)?;
    let link = Command::new(&a.cc)
        .arg("-O1")
        .arg(&driver)
        .arg(object)
        .args(["-lm", "-o"])
        .arg(&exe)
        .output()
        .map_err(|e| fail(format!("cannot start the C compiler '{}': {e}", a.cc)))?;
    if !link.status.success() {
        return Err(fail(format!(
            "linking with {} failed (an object for another CPU, or without baked weights?):\n{}",
            a.cc,
            String::from_utf8_lossy(&link.stderr).trim_end()
        )));
    }
    let n_out = layer.output().len() * batch;
    let run = Command::new(&exe)
        .arg(&in_path)
        .arg(&out_path)
        .arg(input.len().to_string())
        .arg(n_out.to_string())
        .arg(batch.to_string())
        .output()
        .map_err(|e| fail(format!("cannot run the linked driver: {e}")))?;
    let (i, o) = (layer.input, layer.output());
    println!(
        "layer {}: {}x{}x{} -> {}x{}x{}, batch {batch}",
        layer.name, i.h, i.w, i.c, o.h, o.w, o.c
    );
    let outcome = if !run.status.success() {
        Outcome::Failed(format!(
            "the object's function failed ({}): {}",
            run.status,
            String::from_utf8_lossy(&run.stderr).trim_end()
        ))
    } else {
        let got: Vec<f32> = std::fs::read(&out_path)
            .map_err(io)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if got.len() != n_out {
            Outcome::Failed(format!("{} outputs, expected {n_out}", got.len()))
        } else {
            Outcome::Compared(convjit::compare(
                &got,
                &reference.output,
                &reference.magnitude,
            ))
        }
    };
    let pass = outcome.pass();
    println!(
        "  {:<10} {}  {}",
        "object",
        if pass { "PASS" } else { "FAIL" },
        detail(outcome)
    );
    println!(
        "1 kernels checked, {} failed (1 layers)",
        usize::from(!pass)
    );
    if !pass {
        return Err(Failure::Quiet(1));
    }
    Ok(())
}

/// A C driver for `convjit_NAME`: `driver IN OUT N_IN N_OUT BATCH`.
fn driver_source(name: &str) -> String {
    format!(
        r#"#include <stdio.h>
#include <stdlib.h>
int convjit_{name}(const float *input, float *output, size_t batch);
int main(int argc, char **argv) {{
  if (argc != 6) return 2;
  size_t n_in = strtoul(argv[3], 0, 10), n_out = strtoul(argv[4], 0, 10);
  size_t batch = strtoul(argv[5], 0, 10);
  float *in = malloc(n_in * sizeof *in), *out = malloc(n_out * sizeof *out);
  FILE *f = fopen(argv[1], "rb");
  if (!in || !out || !f || fread(in, sizeof *in, n_in, f) != n_in) return 3;
  fclose(f);
  int rc = convjit_{name}(in, out, batch);
  if (rc != 0) {{ fprintf(stderr, "convjit_{name} returned %d\n", rc); return 4; }}
  f = fopen(argv[2], "wb");
  if (!f || fwrite(out, sizeof *out, n_out, f) != n_out || fclose(f) != 0) return 5;
  return 0;
}}
"#
    )
}
