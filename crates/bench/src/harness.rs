//! Timing: medians of calls, variants sampled in interleaved rounds, the
//! best of several rounds, and 64-byte-aligned buffers. Used by every
//! benchmark (`convjit bench`, `cargo bench --bench kernels`).

use std::time::{Duration, Instant};

/// A named thing to time.
pub type Timed<'a> = (String, Box<dyn FnMut() + 'a>);

/// Median time of one call of `f` (for the slow interpreter). Calls are
/// grouped into samples of at least 1 ms until `budget` is spent, with at
/// least 3 samples after one warm-up call.
pub fn median_per_call(budget: Duration, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    let once = t.elapsed().max(Duration::from_nanos(1));
    let reps = (Duration::from_millis(1).as_nanos() / once.as_nanos()).clamp(1, 100_000) as u32;
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < 3 || (start.elapsed() < budget && samples.len() < 1000) {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        samples.push(t.elapsed() / reps);
    }
    samples.sort();
    samples[samples.len() / 2]
}

/// Median time of one call of each variant, sampled in interleaved rounds
/// (one sample of each per round) so that load on this shared machine
/// falls on all of them alike and their ratios hold. Each gets about
/// `budget`; samples group calls into at least 10 ms (closer to the
/// steady state of back-to-back calls), after a warm-up call.
pub fn interleaved_medians(budget: Duration, variants: &mut [Timed<'_>]) -> Vec<Duration> {
    if variants.is_empty() {
        return Vec::new();
    }
    let reps: Vec<u32> = variants
        .iter_mut()
        .map(|(_, f)| {
            let t = Instant::now();
            f();
            let once = t.elapsed().max(Duration::from_nanos(1));
            (Duration::from_millis(10).as_nanos() / once.as_nanos()).clamp(1, 100_000) as u32
        })
        .collect();
    let mut samples = vec![Vec::new(); variants.len()];
    let start = Instant::now();
    let total = budget * variants.len() as u32;
    while samples[0].len() < 5 || (start.elapsed() < total && samples[0].len() < 1000) {
        for ((_, f), (s, &r)) in variants.iter_mut().zip(samples.iter_mut().zip(&reps)) {
            // One untimed call first: the variant before this one evicted
            // this one's data from the caches, and back-to-back calls (how
            // the peers are timed) find it there.
            f();
            let t = Instant::now();
            for _ in 0..r {
                f();
            }
            s.push(t.elapsed() / r);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort();
            s[s.len() / 2]
        })
        .collect()
}

/// Each variant's lowest median over `rounds` measurements (`round` times
/// every variant once, e.g. by [`interleaved_medians`] with a share of the
/// budget), as the peers' scripts report: load from other tenants of the
/// machine only slows rounds down.
pub fn best_of_rounds(rounds: u32, mut round: impl FnMut() -> Vec<Duration>) -> Vec<Duration> {
    let mut times = round();
    for _ in 1..rounds {
        for (t, u) in times.iter_mut().zip(round()) {
            *t = (*t).min(u);
        }
    }
    times
}

/// f32s starting at a 64-byte boundary, as the peers' tensors do (TFLite's
/// and ONNX Runtime's arenas align to 64 bytes): with a `Vec<f32>`'s 16,
/// every 512-bit access would straddle two cache lines, for every variant.
pub struct Aligned {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    /// `len` zeros, refused (not aborted) where memory is short: the
    /// budget's rule ([`convjit::budget::zeroed`]).
    pub fn zeros(len: usize) -> Result<Aligned, convjit::DataError> {
        let buf = convjit::budget::zeroed("a benchmark buffer", len.saturating_add(16))?;
        let start = buf.as_ptr().align_offset(64).min(15);
        Ok(Aligned { buf, start, len })
    }

    pub fn from(v: &[f32]) -> Result<Aligned, convjit::DataError> {
        let mut a = Aligned::zeros(v.len())?;
        a.copy_from_slice(v);
        Ok(a)
    }

    /// `len` seeded random numbers, as `Rng::new(seed).vec(len, 1.0)`.
    pub fn random(len: usize, seed: u64) -> Result<Aligned, convjit::DataError> {
        let mut a = Aligned::zeros(len)?;
        convjit::Rng::new(seed).fill(&mut a, 1.0);
        Ok(a)
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_start_on_a_cache_line() {
        for len in [0, 1, 15, 16, 1000] {
            let a = Aligned::from(&vec![1.5; len]).unwrap();
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|&x| x == 1.5));
            if len > 0 {
                assert_eq!(a.as_ptr() as usize % 64, 0);
            }
        }
    }

    /// Every variant is called in every round, in order, and gets a median.
    #[test]
    fn interleaved_rounds_call_each_variant_in_turn() {
        let calls = std::cell::RefCell::new(Vec::new());
        let mut variants: Vec<Timed> = (0..3)
            .map(|i| {
                let calls = &calls;
                let f: Box<dyn FnMut()> = Box::new(move || calls.borrow_mut().push(i));
                (format!("v{i}"), f)
            })
            .collect();
        let times = interleaved_medians(Duration::from_millis(1), &mut variants);
        assert_eq!(times.len(), 3);
        drop(variants);
        let calls = calls.into_inner();
        // Warm-up calls first, in order; then in every round each
        // variant's calls (an untimed one, then its sample) in turn: at
        // least five rounds.
        let mut turns = calls.clone();
        turns.dedup();
        assert!(turns.len() >= 3 * 6, "{turns:?}");
        assert!(
            turns.chunks(3).all(|c| c == [0, 1, 2]),
            "{:?}",
            &turns[..18]
        );
        assert!(interleaved_medians(Duration::ZERO, &mut []).is_empty());
    }

    #[test]
    fn the_best_round_is_each_variants_least() {
        let mut rounds = vec![vec![5, 1], vec![3, 4], vec![4, 2]].into_iter();
        let ms = |v: Vec<u64>| v.into_iter().map(Duration::from_millis).collect();
        let best = best_of_rounds(3, || ms(rounds.next().unwrap()));
        assert_eq!(best, ms(vec![3, 1]));
    }
}
