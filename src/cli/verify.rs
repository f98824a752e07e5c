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
use convjit::{Backend, JitError, Kernel, Layer, Precision, Rng, Weights};
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
    /// The arithmetic checked: f32, or bf16 (against the bf16 interpreter,
    /// and within bf16's bound of the f32 one; `all` is then every
    /// generator that computes bf16 on this host).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    precision: Precision,
    /// In bf16, what runs conv, pointwise and grouped stages: auto, tiles,
    /// dot, fma (as `plan --bf16-units`).
    #[arg(long, default_value = "auto", value_parser = super::parse_bf16_units)]
    bf16_units: convjit::Bf16Units,
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
    /// Check the kernels with Winograd's F(m x m, 3x3) where it runs (as
    /// `run --winograd`), within its own rounding bound
    /// (`convjit::winograd::chain_magnitude`): per output, the magnitudes
    /// of the terms its transforms and products sum (the tile's window of
    /// |input|, the |taps|, the transforms' |coefficients|), carried
    /// through the stages after it in a longer layer. `--winograd=always`
    /// checks every layer Winograd can compute.
    #[arg(long, conflicts_with = "object", num_args = 0..=1, require_equals = true,
          default_missing_value = "auto", value_name = "WHEN", value_parser = super::parse_winograd)]
    winograd: Option<convjit::Winograd>,
    /// With --winograd, the output tile side (2 or 4; by default chosen
    /// per stage, as `run`).
    #[arg(long, value_name = "M", requires = "winograd", value_parser = super::parse_winograd_tile)]
    winograd_tile: Option<usize>,
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
    let unsupported = |m| Failure::Input(convjit::Error::Jit(JitError::Unsupported(m)));
    let backends = match a.backend {
        Backends::All => super::backends_computing(a.precision)?,
        Backends::One(b) => {
            let concrete = b.resolve().map_err(unsupported)?;
            concrete.check_precision(a.precision).map_err(unsupported)?;
            vec![concrete]
        }
    };
    let layers = super::layers_for(&a.file, a.layer.as_deref(), a.weights.is_some())?;
    let mut failures = 0;
    let mut checks = 0;
    for layer in &layers {
        // What cannot be checked is said before any data is made: a layer
        // too wide to compile may still be gigabytes of random weights,
        // and the interpreter would take hours on it.
        let refused: Vec<(Backend, String)> = match (
            Reference::check_work(layer, a.batch as usize, a.precision),
            a.weights.is_some(),
        ) {
            (Err(e), _) => backends
                .iter()
                .map(|&b| (b, format!("no reference: {e}")))
                .collect(),
            (Ok(()), false) => backends
                .iter()
                .filter_map(|&b| {
                    let e = Kernel::check_size(layer, &options(a, b), None).err()?;
                    Some((b, format!("not compiled: {e}")))
                })
                .collect(),
            // Given weights may separate the layer into one that compiles.
            (Ok(()), true) => Vec::new(),
        };
        if refused.len() == backends.len() {
            print_header(layer, a.batch as usize, a.precision, "");
            for (b, why) in &refused {
                println!("  {:<10} NOT VERIFIED  {why}", b.name());
            }
            (checks, failures) = (checks + refused.len(), failures + refused.len());
            continue;
        }
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

/// The options `backend`'s kernels are checked with.
fn options(a: &VerifyArgs, backend: Backend) -> convjit::Options {
    convjit::Options {
        backend,
        precision: a.precision,
        bf16_units: a.bf16_units,
        winograd: a.winograd.unwrap_or_default(),
        winograd_tile: a.winograd_tile,
        ..convjit::Options::default()
    }
}

/// `layer NAME: HxWxC -> HxWxC, batch N, PRECISION{note}`.
fn print_header(layer: &Layer, batch: usize, precision: Precision, note: &str) {
    let (i, o) = (layer.input, layer.output());
    println!(
        "layer {}: {}x{}x{} -> {}x{}x{}, batch {batch}, {precision}{note}",
        layer.name, i.h, i.w, i.c, o.h, o.w, o.c,
    );
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
    convjit::check_batch(layer, batch, 3)?;
    let n = layer.input.len() * batch;
    let input = Rng::new(a.seed ^ 0x5EED_1A7E).vec(n, 1.0);
    let mut reference = Reference::new(layer, weights, &input, batch, a.precision)?;
    // Where the kernels run as Winograd's: its bound (f32 only).
    let mode = a.winograd.unwrap_or_default();
    let stages: Vec<_> = convjit::winograd_stages(layer, 1, mode, a.winograd_tile)
        .iter()
        .map(|r| r.ok().map(|w| w.variant))
        .collect();
    let winograd = a.precision == Precision::F32 && stages.iter().any(Option::is_some);
    if winograd {
        reference.magnitude =
            convjit::winograd::chain_magnitude(layer, weights, &input, batch, &stages)?;
    }
    let note = match winograd {
        true => {
            let names: Vec<&str> = stages.iter().flatten().map(|v| v.name()).collect();
            format!(", Winograd {}", names.join(" + "))
        }
        false => String::new(),
    };
    print_header(layer, batch, a.precision, &note);
    if reference.output.iter().all(|&x| x == 0.0) {
        // (A deep chain of random weights shrinks to zeros; relu can
        // zero everything.) Agreement then shows little.
        println!(
            "  note: every output of the interpreter is 0 on this input and these weights: \
             the kernels' agreement checks little (try --seed, or --weights)"
        );
    }
    let mut failed = 0;
    for &backend in backends {
        let outcome = check_generated(
            layer,
            weights,
            &input,
            batch,
            &options(a, backend),
            &reference,
        );
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
/// file, calls `convjit_LAYER` and writes the output; runs it and compares
/// (`convjit_aot::verify`).
fn verify_object(
    layer: &Layer,
    weights: &Weights,
    object: &std::path::Path,
    a: &VerifyArgs,
) -> Result<(), Failure> {
    use convjit_aot::verify::{check_object, Checked, ObjectError};
    let batch = a.batch as usize;
    Reference::check_work(layer, batch, a.precision)?;
    convjit::check_batch(layer, batch, 3)?;
    let input = Rng::new(a.seed ^ 0x5EED_1A7E).vec(layer.input.len() * batch, 1.0);
    let data = (layer, weights);
    let checked =
        check_object(data, object, &a.cc, (&input, batch), a.precision).map_err(|e| match e {
            ObjectError::Setup(message) => Failure::Input(convjit::Error::Io {
                path: object.to_path_buf(),
                message,
            }),
            ObjectError::Data(d) => d.into(),
        })?;
    print_header(layer, batch, a.precision, "");
    let outcome = match checked {
        Checked::Compared(c) => Outcome::Compared(c),
        Checked::Failed(m) => Outcome::Failed(m),
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
