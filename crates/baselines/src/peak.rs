//! The machine's FMA throughput, measured at each vector width: 128-bit
//! (`vfmadd*ps xmm`, the ceiling of Cranelift's code), 256-bit (ymm, AVX2 +
//! FMA) and 512-bit (zmm, AVX-512F). Timed beside the kernels so that a
//! loaded or slower-clocked machine shows in the ratio rather than in the
//! kernels' numbers alone.

/// Multiply-adds per [`FmaPeak::run`] call: 12 independent accumulator
/// chains (more than FMA latency 4 x 2 FMA pipes on current x86 cores, so
/// the pipes, not the chains, are the limit) of `STEPS` FMAs each.
const CHAINS: usize = 12;
const STEPS: usize = 20_000;

/// A loop of independent FMAs at one vector width.
pub struct FmaPeak {
    bits: u32,
    sink: f32,
}

impl FmaPeak {
    /// The vector widths [`FmaPeak::with_bits`] knows, narrowest first.
    pub const WIDTHS: [u32; 3] = [128, 256, 512];

    /// The 128-bit loop; `None` without x86_64 FMA.
    pub fn new() -> Option<FmaPeak> {
        FmaPeak::with_bits(128)
    }

    /// The loop at `bits` (128, 256 or 512); `None` when the host lacks the
    /// instructions (FMA; AVX2 + FMA; AVX-512F) or `bits` is another width.
    pub fn with_bits(bits: u32) -> Option<FmaPeak> {
        #[cfg(target_arch = "x86_64")]
        {
            let has = match bits {
                128 => is_x86_feature_detected!("fma"),
                256 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                512 => is_x86_feature_detected!("avx512f"),
                _ => false,
            };
            if has {
                return Some(FmaPeak { bits, sink: 0.0 });
            }
        }
        let _ = bits;
        None
    }

    /// Every width the host runs, narrowest first.
    pub fn available() -> Vec<FmaPeak> {
        FmaPeak::WIDTHS
            .into_iter()
            .filter_map(FmaPeak::with_bits)
            .collect()
    }

    /// The vector width in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The benchmark row's name: `"fma128-peak"`, `"fma256-peak"`,
    /// `"fma512-peak"`.
    pub fn name(&self) -> &'static str {
        match self.bits {
            128 => "fma128-peak",
            256 => "fma256-peak",
            _ => "fma512-peak",
        }
    }

    /// Floating-point operations per [`FmaPeak::run`] (2 per lane and FMA).
    pub fn flops(&self) -> f64 {
        (CHAINS * STEPS * (self.bits as usize / 32) * 2) as f64
    }

    pub fn run(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `with_bits` returned `Some` only after detecting the
        // features of this width's loop.
        unsafe {
            self.sink += match self.bits {
                128 => fma_loop_128(self.sink),
                256 => fma_loop_256(self.sink),
                _ => fma_loop_512(self.sink),
            };
        }
    }
}

// Multiplier and addend keep the accumulators finite and normal; the sum of
// the chains (scaled down) feeds the next call's seed, so no call is dead.

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn fma_loop_128(seed: f32) -> f32 {
    use std::arch::x86_64::*;
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop_256(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(0.999_9);
    let c = _mm256_set1_ps(1e-3);
    let mut acc = [_mm256_set1_ps(seed.min(1.0)); CHAINS];
    for _ in 0..STEPS {
        for a in &mut acc {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for a in acc {
        sum = _mm256_add_ps(sum, a);
    }
    _mm256_cvtss_f32(sum) * 1e-9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop_512(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm512_set1_ps(0.999_9);
    let c = _mm512_set1_ps(1e-3);
    let mut acc = [_mm512_set1_ps(seed.min(1.0)); CHAINS];
    for _ in 0..STEPS {
        for a in &mut acc {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    _mm_cvtss_f32(_mm512_castps512_ps128(sum)) * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loops_stay_finite() {
        for bits in FmaPeak::WIDTHS {
            if let Some(mut p) = FmaPeak::with_bits(bits) {
                for _ in 0..3 {
                    p.run();
                }
                assert!(p.sink.is_finite() && p.sink > 0.0, "{bits}: {}", p.sink);
                assert_eq!(p.flops(), 1_920_000.0 * (bits / 128) as f64);
                assert_eq!(p.name(), format!("fma{bits}-peak"));
            }
        }
        assert!(FmaPeak::with_bits(64).is_none());
    }

    #[test]
    fn available_widths_are_narrowest_first_and_nest() {
        let bits: Vec<u32> = FmaPeak::available().iter().map(FmaPeak::bits).collect();
        // A host with a width has every narrower one (AVX-512F CPUs have
        // AVX2 and FMA), so the list is a prefix of WIDTHS.
        assert_eq!(bits[..], FmaPeak::WIDTHS[..bits.len()]);
    }
}
