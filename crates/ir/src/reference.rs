//! The interpreter's answer for one input, in the precision a kernel was
//! compiled for: what every check of generated code (the tests, `convjit
//! verify`, `convjit fuzz`) compares with.

use crate::compare::{bf16_rel_tol, compare, compare_within, Comparison};
use crate::interp::interpret_with_magnitude_in;
use crate::precision::Precision;
use crate::{DataError, Layer, Weights};

/// The interpreter's outputs for one input and `precision`, computed once
/// and compared with any number of kernels.
#[derive(Clone, Debug)]
pub struct Reference {
    /// The interpreter's output in the kernel's precision.
    pub output: Vec<f32>,
    /// Its magnitude bounds (with bf16's rounding spread: see
    /// [`interpret_with_magnitude_in`]), which scale the tolerance.
    pub magnitude: Vec<f32>,
    /// In bf16, the f32 interpreter's output and magnitudes too: a bf16
    /// kernel must also be within [`bf16_rel_tol`] of the f32 function.
    pub f32: Option<(Vec<f32>, Vec<f32>)>,
    stages: usize,
}

impl Reference {
    /// Refuses a reference that would take the interpreter too long
    /// ([`crate::interp::check_work`]): two passes over every stage (the
    /// outputs and their magnitudes), twice that in bf16 (with the f32
    /// reference). Cheap: for callers about to make the data.
    pub fn check_work(layer: &Layer, batch: usize, precision: Precision) -> Result<(), DataError> {
        let passes = match precision {
            Precision::F32 => 2,
            Precision::Bf16 => 4,
        };
        crate::interp::check_work(layer, batch, passes)
    }

    /// The interpreter's outputs for `batch` images of `input`.
    pub fn new(
        layer: &Layer,
        weights: &Weights,
        input: &[f32],
        batch: usize,
        precision: Precision,
    ) -> Result<Reference, DataError> {
        let (output, magnitude) =
            interpret_with_magnitude_in(layer, weights, input, batch, precision)?;
        let f32 = match precision {
            Precision::F32 => None,
            Precision::Bf16 => Some(interpret_with_magnitude_in(
                layer,
                weights,
                input,
                batch,
                Precision::F32,
            )?),
        };
        Ok(Reference {
            output,
            magnitude,
            f32,
            stages: layer.stages.len(),
        })
    }

    /// How far `got` is: from the same-precision reference with f32's
    /// tolerance and, in bf16, from the f32 reference with bf16's bound;
    /// the comparison that fails (the first), else the first.
    pub fn compare(&self, got: &[f32]) -> Comparison {
        let same = compare(got, &self.output, &self.magnitude);
        match &self.f32 {
            Some((want, mag)) if same.pass() => {
                let bound = compare_within(got, want, mag, bf16_rel_tol(self.stages));
                if bound.pass() {
                    same
                } else {
                    bound
                }
            }
            _ => same,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_checks_both_references() {
        let l = &crate::compile_source("layer l { input 2x2x2\n p: pointwise 2 }").unwrap()[0];
        let w = Weights::random(l, 3);
        let x = [1.0 + 3.0 / 256.0, 0.5, -0.25, 2.0, 0.1, 0.2, 0.3, 0.4];
        let r = Reference::new(l, &w, &x, 1, Precision::Bf16).unwrap();
        assert!(r.compare(&r.output).pass());
        // The f32 answer is not the bf16 one (the roundings matter) ...
        let (f32_out, _) = r.f32.clone().unwrap();
        assert!(!r.compare(&f32_out).pass());
        // ... and an answer far from both fails on the f32 bound too.
        let off: Vec<f32> = r.output.iter().map(|v| v * 1.5 + 1.0).collect();
        assert!(!r.compare(&off).pass());
        assert!(Reference::new(l, &w, &x, 1, Precision::F32)
            .unwrap()
            .f32
            .is_none());
    }
}
