//! Comparing a generated kernel's output with the interpreter's: the one
//! tolerance rule that the tests, `convjit verify` and `convjit fuzz` share.
//!
//! Non-finite outputs are compared exactly, never through a tolerance: a
//! NaN agrees only with a NaN (any payload), an infinity only with the
//! same infinity. (`inf - inf` is NaN and `|x - inf| <= inf` holds: the
//! tolerance test would fail equal infinities and pass a finite value
//! against an infinite bound.)

/// Relative tolerance against the magnitude bound ([`crate::magnitude`]):
/// accumulations here are at most a few thousand terms long, and f32 sums
/// of n terms stay well under 1e-5 of the magnitude in practice (worst case
/// n * 6e-8).
pub const REL_TOL: f32 = 1e-5;

/// The tolerance of one output whose magnitude bound is `mag`.
pub fn tolerance(mag: f32) -> f32 {
    REL_TOL * (1.0 + mag)
}

/// The relative tolerance of a bf16 kernel (or the bf16 interpreter)
/// against the f32 interpreter, for a layer of `stages` stages: bf16 keeps
/// 8 significant bits, so a rounding is off by at most 2^-8 of its value
/// and a product of two by 2^-7; a stage's output by 2^-7 of its
/// magnitude, and each stage adds that to what its inputs bring:
/// `stages * 2^-7`, plus the f32 sums' [`REL_TOL`].
pub fn bf16_rel_tol(stages: usize) -> f32 {
    stages as f32 / 128.0 + REL_TOL
}

/// How far `got` is from `want`, output by output.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The output with the largest error relative to its tolerance (the
    /// first that disagrees on a NaN or an infinity, if any).
    pub worst: usize,
    /// That output's error |got - want|: 0 where both are NaN or the same
    /// infinity, NaN where they disagree on either.
    pub error: f32,
    /// That output's tolerance.
    pub tolerance: f32,
    /// The largest absolute error over all outputs (NaN after a
    /// disagreement on a NaN or an infinity).
    pub max_error: f32,
    /// The values at `worst`: (got, want).
    pub values: (f32, f32),
}

impl Comparison {
    /// Every output within its tolerance, NaN exactly where the reference
    /// has NaN, infinities equal.
    pub fn pass(&self) -> bool {
        // Written so that a NaN error fails; an exact match passes even
        // against a NaN tolerance (a NaN bound).
        self.error == 0.0 || self.error.abs() <= self.tolerance
    }
}

/// The error of one output: exact for non-finite values (0 where both are
/// NaN or the same infinity, NaN where they disagree), else |got - want|.
fn error(got: f32, want: f32) -> f32 {
    if got.is_finite() && want.is_finite() {
        (got - want).abs()
    } else if (got.is_nan() && want.is_nan()) || got == want {
        0.0
    } else {
        f32::NAN
    }
}

/// Compares `got` with `want`, scaled by the magnitude bounds `mag`. The
/// three slices must have the same length; an empty comparison passes.
pub fn compare(got: &[f32], want: &[f32], mag: &[f32]) -> Comparison {
    compare_within(got, want, mag, REL_TOL)
}

/// [`compare`] with relative tolerance `rel` instead of [`REL_TOL`]: each
/// output's is `rel * (1 + mag)` (e.g. [`bf16_rel_tol`]).
pub fn compare_within(got: &[f32], want: &[f32], mag: &[f32], rel: f32) -> Comparison {
    assert!(got.len() == want.len() && want.len() == mag.len());
    let tolerance = |m: f32| rel * (1.0 + m);
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
        let e = error(g, w);
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
        // A NaN tolerance (a NaN bound) passes nothing but exact matches.
        if ratio > worst_ratio || (t.is_nan() && e > 0.0) {
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

    #[test]
    fn nan_and_infinities_compare_exactly() {
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        let pass = |g: f32, w: f32, m: f32| compare(&[g], &[w], &[m]).pass();
        // Both NaN agree (any payload), whatever the bound.
        assert!(pass(nan, nan, nan));
        assert!(pass(nan, -nan, 1.0));
        assert!(pass(f32::from_bits(0x7fc0_0001), nan, inf));
        // NaN on one side only fails, even with an infinite tolerance.
        assert!(!pass(nan, 1.0, inf));
        assert!(!pass(1.0, nan, inf));
        assert!(!pass(nan, inf, inf));
        // Infinities match exactly, sign included.
        assert!(pass(inf, inf, inf));
        assert!(pass(-inf, -inf, inf));
        assert!(!pass(inf, -inf, inf));
        assert!(!pass(-inf, inf, inf));
        assert!(!pass(inf, f32::MAX, inf));
        assert!(!pass(f32::MAX, inf, 1.0));
        // Finite values against a NaN bound: only an exact match passes.
        assert!(pass(2.0, 2.0, nan));
        assert!(!pass(2.0, 2.5, nan));
        // The worst output is the disagreement, after agreeing ones.
        let c = compare(&[nan, inf, 1.0, nan], &[nan, inf, 1.0, 0.0], &[1.0; 4]);
        assert_eq!((c.worst, c.pass()), (3, false), "{c:?}");
        let c = compare(&[nan, -inf, 1.0], &[nan, -inf, 1.0], &[1.0; 3]);
        assert!(c.pass() && c.max_error == 0.0, "{c:?}");
    }
}
