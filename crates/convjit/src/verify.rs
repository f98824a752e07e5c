//! Checking generated code against the interpreter, one layer at a time:
//! what `convjit verify` and `convjit fuzz` do per layer and generator.

use crate::{JitError, Kernel, Layer, Options, Precision, Rng, Weights};
use convjit_ir::Comparison;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The interpreter's outputs for one input in one precision (computed
/// once, compared with every generator).
pub use convjit_ir::Reference;

/// What checking one generator's kernel found.
#[derive(Debug)]
pub enum Outcome {
    /// The kernel ran; how far it is from the interpreter.
    Compared(Comparison),
    /// The generator declined the layer (too much code, or a generator the
    /// host lacks): not a wrong result.
    Refused(String),
    /// Compiling or running failed, or panicked (a bug).
    Failed(String),
}

impl Outcome {
    /// Ran and agrees with the interpreter. A refused layer does not pass:
    /// nothing was verified (`convjit fuzz` skips those, `verify` fails).
    pub fn pass(&self) -> bool {
        match self {
            Outcome::Compared(c) => c.pass(),
            Outcome::Refused(_) | Outcome::Failed(_) => false,
        }
    }

    /// What went wrong, if the kernel disagrees with the interpreter or
    /// failed; `None` where it agreed or was refused (nothing checked,
    /// nothing wrong).
    pub fn mismatch(&self) -> Option<String> {
        match self {
            Outcome::Compared(c) if !c.pass() => Some(format!(
                "output {}: generated {} vs interpreter {} (error {:.3e}, tolerance {:.3e})",
                c.worst, c.values.0, c.values.1, c.error, c.tolerance
            )),
            Outcome::Failed(m) => Some(m.clone()),
            Outcome::Compared(_) | Outcome::Refused(_) => None,
        }
    }
}

/// A layer's seeded random data and the interpreter's output for it,
/// checked against any number of generators (`convjit fuzz`'s cases).
pub struct Trial {
    pub weights: Weights,
    pub input: Vec<f32>,
    pub batch: usize,
    /// The precision the reference is in (kernels checked against it are
    /// compiled for it).
    pub precision: Precision,
    /// The interpreter's output, or why it has none (an error, a panic).
    pub reference: Result<Reference, String>,
}

impl Trial {
    /// `Weights::random(layer, seed)` and `batch` images of
    /// `Rng::new(seed ^ 0x5555)` values times `scale`, the reference in
    /// `precision`.
    pub fn new(layer: &Layer, seed: u64, batch: usize, scale: f32, precision: Precision) -> Trial {
        let weights = Weights::random(layer, seed);
        let input: Vec<f32> = Rng::new(seed ^ 0x5555)
            .vec(batch * layer.input.len(), 1.0)
            .iter()
            .map(|v| v * scale)
            .collect();
        let reference = catch_unwind(|| {
            Reference::new(layer, &weights, &input, batch, precision).map_err(|e| e.to_string())
        })
        .unwrap_or_else(|_| Err("the interpreter panicked".into()));
        Trial {
            weights,
            input,
            batch,
            precision,
            reference,
        }
    }

    /// [`check_generated`] with `options` in the trial's precision; a
    /// failure of the interpreter's.
    pub fn check(&self, layer: &Layer, options: &Options) -> Outcome {
        let options = &Options {
            precision: self.precision,
            ..options.clone()
        };
        match &self.reference {
            Err(e) => Outcome::Failed(format!("interpreter: {e}")),
            Ok(r) => check_generated(layer, &self.weights, &self.input, self.batch, options, r),
        }
    }
}

/// Compiles `layer` with `options`, runs it on `input` and compares the
/// output with `reference` (made in `options.precision`). A panic in the compiler or the kernel is caught
/// and reported as [`Outcome::Failed`]; a fault (a signal) cannot be.
pub fn check_generated(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
    options: &Options,
    reference: &Reference,
) -> Outcome {
    let run = || match Kernel::compile_with(layer, weights, options) {
        Err(e @ (JitError::TooLarge(_) | JitError::Unsupported(_))) => {
            Outcome::Refused(e.to_string())
        }
        Err(e) => Outcome::Failed(format!("compiling: {e}")),
        Ok(k) => match k.run_alloc(input, batch) {
            Err(e) => Outcome::Failed(format!("running: {e}")),
            Ok(got) => Outcome::Compared(reference.compare(&got)),
        },
    };
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        Outcome::Failed(format!("panicked: {message}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;

    fn layer() -> Layer {
        crate::parse_layers(
            "t.conv",
            "layer t { input 5x6x7\n c: conv 3x3 -> 9, pad same, bias, relu }",
        )
        .unwrap()
        .remove(0)
    }

    /// Every generator agrees with the interpreter on a trial's data; an
    /// output off by one is a mismatch that names the output; a refused
    /// layer neither passes nor mismatches.
    #[test]
    fn trials_pass_and_mismatches_name_the_output() {
        let l = layer();
        let t = Trial::new(&l, 3, 2, 4.0, Precision::F32);
        assert_eq!(t.input.len(), 2 * l.input.len());
        assert_eq!(
            t.input,
            Trial::new(&l, 3, 2, 4.0, Precision::F32).input,
            "seeded"
        );
        for backend in Backend::available() {
            let o = t.check(
                &l,
                &Options {
                    backend,
                    ..Options::default()
                },
            );
            assert!(o.pass(), "{backend}: {o:?}");
            assert_eq!(o.mismatch(), None);
        }
        let mut wrong = Trial::new(&l, 3, 2, 4.0, Precision::F32);
        wrong.reference.as_mut().unwrap().output[5] += 1.0;
        let o = wrong.check(&l, &Options::default());
        assert!(!o.pass());
        let m = o.mismatch().unwrap();
        assert!(m.starts_with("output 5: generated "), "{m}");
        let refused = Outcome::Refused("too wide".into());
        assert!(!refused.pass());
        assert_eq!(refused.mismatch(), None);
    }
}
