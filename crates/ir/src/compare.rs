//! Comparing a generated kernel's output with the interpreter's: the one
//! tolerance rule that the tests, `convjit verify` and `convjit fuzz` share.

/// Relative tolerance against the magnitude bound ([`crate::magnitude`]):
/// accumulations here are at most a few thousand terms long, and f32 sums
/// of n terms stay well under 1e-5 of the magnitude in practice (worst case
/// n * 6e-8).
pub const REL_TOL: f32 = 1e-5;

/// The tolerance of one output whose magnitude bound is `mag`.
pub fn tolerance(mag: f32) -> f32 {
    REL_TOL * (1.0 + mag)
}

/// How far `got` is from `want`, output by output.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The output with the largest error relative to its tolerance (the
    /// first NaN, if any).
    pub worst: usize,
    /// That output's error |got - want| (NaN if either is NaN).
    pub error: f32,
    /// That output's tolerance.
    pub tolerance: f32,
    /// The largest absolute error over all outputs.
    pub max_error: f32,
    /// The values at `worst`: (got, want).
    pub values: (f32, f32),
}

impl Comparison {
    /// Every output within its tolerance (and no NaN on either side).
    pub fn pass(&self) -> bool {
        // Written so that a NaN fails.
        self.error.abs() <= self.tolerance
    }
}

/// Compares `got` with `want`, scaled by the magnitude bounds `mag`. The
/// three slices must have the same length; an empty comparison passes.
pub fn compare(got: &[f32], want: &[f32], mag: &[f32]) -> Comparison {
    assert!(got.len() == want.len() && want.len() == mag.len());
    let mut c = Comparison {
        worst: 0,
        error: 0.0,
        tolerance: tolerance(mag.first().copied().unwrap_or(0.0)),
        max_error: 0.0,
        values: (
            got.first().copied().unwrap_or(0.0),
            want.first().copied().unwrap_or(0.0),
        ),
    };
    let mut worst_ratio = 0.0f32;
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let e = (g - w).abs();
        let t = tolerance(m);
        if e.is_nan() {
            return Comparison {
                worst: i,
                error: e,
                tolerance: t,
                max_error: f32::NAN,
                values: (g, w),
            };
        }
        c.max_error = c.max_error.max(e);
        let ratio = e / t;
        if ratio > worst_ratio {
            worst_ratio = ratio;
            c = Comparison {
                worst: i,
                error: e,
                tolerance: t,
                values: (g, w),
                ..c
            };
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_worst_output_relative_to_its_tolerance() {
        // Output 0 has the largest absolute error, but a large magnitude.
        let c = compare(
            &[10.0, 1.0, 2.0],
            &[10.001, 1.0, 2.00002],
            &[1000.0, 1.0, 1.0],
        );
        assert_eq!(c.worst, 2);
        assert!((c.max_error - 0.001).abs() < 1e-6);
        assert!(!c.pass(), "{c:?}");
        assert!(compare(&[1.0], &[1.000001], &[1.0]).pass());
    }

    #[test]
    fn nan_fails() {
        let c = compare(&[1.0, f32::NAN], &[1.0, 1.0], &[1.0, 1.0]);
        assert_eq!(c.worst, 1);
        assert!(!c.pass());
        assert!(compare(&[], &[], &[]).pass());
    }
}
