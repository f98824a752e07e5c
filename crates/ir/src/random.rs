//! A small seeded generator (SplitMix64) for example inputs and weights:
//! the same seed gives the same numbers on every machine and version,
//! which a general-purpose RNG crate does not promise.

/// SplitMix64: the state is the seed advanced by a constant per number.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        // 24 random bits: exactly representable in f32.
        ((self.next_u64() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }

    /// `len` numbers uniform in `[-scale, scale)`.
    pub fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform() * scale).collect()
    }

    /// Fills `out` as [`Rng::vec`] would (the same numbers): for buffers
    /// allocated fallibly.
    pub fn fill(&mut self, out: &mut [f32], scale: f32) {
        for x in out {
            *x = self.uniform() * scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let a = Rng::new(7).vec(1000, 1.0);
        assert_eq!(a, Rng::new(7).vec(1000, 1.0));
        assert_ne!(a, Rng::new(8).vec(1000, 1.0));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = a.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.1, "mean {mean}");
    }
}
