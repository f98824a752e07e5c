//! Checking generated code against the interpreter, one layer at a time:
//! what `convjit verify` and `convjit fuzz` do per layer and generator.

use crate::{Error, JitError, Kernel, Layer, Options, Weights};
use convjit_ir::Comparison;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The interpreter's output for one input, and the magnitude bounds that
/// scale the tolerance (computed once, compared with every generator).
pub struct Reference {
    pub output: Vec<f32>,
    pub magnitude: Vec<f32>,
}

impl Reference {
    pub fn new(
        layer: &Layer,
        weights: &Weights,
        input: &[f32],
        batch: usize,
    ) -> Result<Reference, Error> {
        let (output, magnitude) =
            convjit_ir::interpret_with_magnitude(layer, weights, input, batch)?;
        Ok(Reference { output, magnitude })
    }
}

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
}

/// Compiles `layer` with `options`, runs it on `input` and compares the
/// output with `reference`. A panic in the compiler or the kernel is caught
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
            Ok(got) => Outcome::Compared(convjit_ir::compare(
                &got,
                &reference.output,
                &reference.magnitude,
            )),
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
