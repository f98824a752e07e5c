//! The machine's 128-bit FMA throughput, measured: the ceiling of code that
//! uses `vfmadd*ps xmm` (as the JIT's does), timed beside the kernels so a
//! loaded or slower-clocked machine shows in the ratio rather than in the
//! kernels' numbers alone.

/// Multiply-adds per [`FmaPeak::run`] call: 12 independent accumulator
/// chains (more than FMA latency x FMA pipes on current x86 cores, so the
/// pipes, not the chains, are the limit) of `STEPS` FMAs each.
const CHAINS: usize = 12;
const STEPS: usize = 20_000;

/// A loop of independent 128-bit FMAs.
pub struct FmaPeak {
    sink: f32,
}

impl FmaPeak {
    /// `None` without x86_64 FMA.
    pub fn new() -> Option<FmaPeak> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            return Some(FmaPeak { sink: 0.0 });
        }
        None
    }

    /// Floating-point operations per [`FmaPeak::run`] (2 per lane and FMA).
    pub fn flops(&self) -> f64 {
        (CHAINS * STEPS * 4 * 2) as f64
    }

    pub fn run(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` returned `Some` only after detecting FMA.
        unsafe {
            self.sink += fma_loop(self.sink);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn fma_loop(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    // Multiplier and addend keep the accumulators finite and normal.
    let m = _mm_set1_ps(0.999_9);
    let c = _mm_set1_ps(1e-3);
    let mut acc = [_mm_set1_ps(seed.min(1.0)); CHAINS];
    for _ in 0..STEPS {
        for a in &mut acc {
            *a = _mm_fmadd_ps(*a, m, c);
        }
    }
    let mut sum = _mm_setzero_ps();
    for a in acc {
        sum = _mm_add_ps(sum, a);
    }
    _mm_cvtss_f32(sum) * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_stays_finite() {
        if let Some(mut p) = FmaPeak::new() {
            for _ in 0..3 {
                p.run();
            }
            assert!(p.sink.is_finite() && p.sink > 0.0, "{}", p.sink);
            assert_eq!(p.flops(), 1_920_000.0);
        }
    }
}
