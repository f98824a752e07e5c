//! The buffers of a kernel's runs ([`Scratch`]), kept for the next runs,
//! and what the runs on several threads taught (the fallback to one
//! thread, [`Scratch::judge`]).

use crate::pool::Pool;
use convjit_ir::DataError;

/// The buffers of runs, kept for the next: per thread, whole tensors
/// between groups (one image: thread 0's are shared when threads split an
/// image's rows or channels, the others' are made for the first run whose
/// threads take whole images) and per group the band buffers. Every step
/// writes rows before any step reads them, so reuse needs no clearing.
///
/// Buffers are found by index (thread, group, buffer) and only grow
/// ([`Scratch::fit`]), so one `Scratch` serves any kernel: a
/// [`crate::Network`] runs all its kernels in one, whose buffers stay in
/// cache from layer to layer. With several threads, also worker threads
/// of its own, made only when the process's shared ones are busy (`None`
/// if the system refused them: the run then spawns its own).
#[derive(Default)]
pub(crate) struct Scratch {
    /// The batch's input rounded to bf16 (`Compiled::round_input`) where
    /// threads share it; one thread rounds each call's rows into its tile
    /// scratch instead (`exec::LazyRound`).
    pub(crate) rounded_input: Vec<f32>,
    pub(crate) inter: Vec<Vec<Buf>>,
    pub(crate) bufs: Vec<ThreadBufs>,
    pub(crate) workers: Option<Pool>,
    /// Runs left on one thread: a run whose threads waited about as long
    /// as they worked (one lost its core to another process), or where
    /// no thread but the caller's ran a share, sends the next `backoff`
    /// runs to one thread, then tries the planned threads again.
    pub(crate) solo: u32,
    /// The last such spell's length: doubled by each slow try (to
    /// [`MAX_SOLO`]), halved by each good run.
    backoff: u32,
    /// The thread of the spell: the one that waited for the others (0,
    /// the caller's, or a worker, which then runs alone while the caller
    /// waits: the caller may be the one that lost its core).
    pub(crate) solo_on: usize,
    /// Per thread, nanoseconds waited and in shares over the runs on
    /// several threads since the last judgement ([`Scratch::judge`]).
    window: Vec<(u64, u64)>,
    window_runs: u32,
}

/// Runs on several threads judged together ([`Scratch::judge`]).
const WINDOW: u32 = 4;

/// The first spell on one thread after a slow run, and the longest.
const MIN_SOLO: u32 = 8;
const MAX_SOLO: u32 = 256;

/// One thread's buffers: per group its band buffers, and the scratch of
/// the AMX functions (`StagePlan::tiles`; empty without them).
pub(crate) struct ThreadBufs {
    pub(crate) groups: Vec<Vec<Buf>>,
    pub(crate) tiles: Buf,
}

/// A run buffer: aligned to a cache line, or with the `testing` feature a
/// buffer between guard pages, its data ending at the trailing one
/// (`testing.rs`).
#[cfg(not(feature = "testing"))]
pub(crate) type Buf = crate::Aligned;
#[cfg(feature = "testing")]
pub(crate) type Buf = crate::testing::Guarded;

pub(crate) fn zeroed(n: usize) -> Buf {
    #[cfg(not(feature = "testing"))]
    return crate::Aligned::zeroed(n);
    #[cfg(feature = "testing")]
    return crate::testing::Guarded::zeroed(n, true);
}

/// Makes `buf` hold `n` floats: grown if shorter; with the `testing`
/// feature exactly `n`, so that the guard page follows the last float
/// this kernel may touch, whatever kernel used the buffer before.
pub(crate) fn fit(buf: &mut Buf, n: usize) {
    if must_refit(buf, n) {
        *buf = zeroed(n);
    }
}

/// Whether [`fit`] would make `buf` again to hold `n` floats.
pub(crate) fn must_refit(buf: &Buf, n: usize) -> bool {
    match cfg!(feature = "testing") {
        true => buf.len() != n,
        false => buf.len() < n,
    }
}

/// Whether `list` holds buffers that [`fit`] `lens` already.
fn all_fit(list: &[Buf], lens: impl Iterator<Item = usize>) -> bool {
    lens.enumerate()
        .all(|(i, n)| list.get(i).is_some_and(|b| !must_refit(b, n)))
}

/// Makes `list` hold at least `lens.len()` buffers, the first of them
/// [`fit`] to `lens`.
fn fit_all(list: &mut Vec<Buf>, lens: impl ExactSizeIterator<Item = usize>) {
    if list.len() < lens.len() {
        list.resize_with(lens.len(), || zeroed(0));
    }
    for (b, n) in list.iter_mut().zip(lens) {
        fit(b, n);
    }
}

impl Scratch {
    /// Fits the buffers to a run of `program` on `threads` threads
    /// (`images`: how many threads take whole images, each with its own
    /// tensors between groups; at least 1), refused when they would not
    /// fit in memory (`convjit_ir::budget`).
    pub(crate) fn fit(
        &mut self,
        layer: &convjit_ir::Layer,
        program: &crate::program::Program,
        (threads, images): (usize, usize),
        tile_scratch: usize,
    ) -> Result<(), DataError> {
        let bands: Option<u64> = program
            .groups
            .iter()
            .flat_map(|g| program.buffer_floats(g))
            .try_fold(0u64, |n, b| n.checked_add(b as u64));
        let inter: Option<u64> = Scratch::inter_len(layer, program);
        let tile_floats = tile_scratch.div_ceil(4);
        let groups = &program.groups;
        let inter_lens = || {
            groups[..groups.len() - 1]
                .iter()
                .map(|g| Scratch::tensor_floats(layer, program, g.last))
        };
        // Most runs find their buffers made: no budget check then (it
        // reads /proc and the cgroup's files, about 15 us).
        let made = self.bufs.len() >= threads
            && self.bufs[..threads].iter().all(|t| {
                t.groups.len() >= groups.len()
                    && t.groups
                        .iter()
                        .zip(groups)
                        .all(|(b, g)| all_fit(b, program.buffer_floats(g)))
                    && !must_refit(&t.tiles, tile_floats)
            })
            && self.inter.len() >= images
            && self.inter[..images]
                .iter()
                .all(|t| all_fit(t, inter_lens()));
        if made {
            return Ok(());
        }
        convjit_ir::budget::check(
            format_args!("the run buffers of layer '{}'", layer.name),
            bands
                .and_then(|b| b.checked_add(tile_floats as u64))
                .and_then(|b| b.checked_mul(threads as u64))
                .zip(inter.and_then(|i| i.checked_mul(images as u64)))
                .and_then(|(b, i)| b.checked_add(i)?.checked_mul(4)),
        )?;
        if self.bufs.len() < threads {
            self.bufs.resize_with(threads, || ThreadBufs {
                groups: Vec::new(),
                tiles: zeroed(0),
            });
        }
        for t in &mut self.bufs[..threads] {
            if t.groups.len() < program.groups.len() {
                t.groups.resize_with(program.groups.len(), Vec::new);
            }
            for (bufs, g) in t.groups.iter_mut().zip(&program.groups) {
                fit_all(bufs, program.buffer_floats(g));
            }
            fit(&mut t.tiles, tile_floats);
        }
        if self.inter.len() < images {
            self.inter.resize_with(images, Vec::new);
        }
        for tensors in &mut self.inter[..images] {
            fit_all(tensors, inter_lens());
        }
        Ok(())
    }

    /// After a run on several threads, its threads' (waited, busy)
    /// nanoseconds: every [`WINDOW`] runs, a thread that waited more than
    /// 4/5 of its time in shares (two threads sharing a phase then took
    /// longer than one would have, less a tenth) is sent to run alone
    /// (the others were the late ones), as is the caller where no worker
    /// ran a share; else the threads stay. Over several runs, not one: the
    /// first after a spell on one thread finds the workers asleep.
    pub(crate) fn judge(&mut self, times: impl Iterator<Item = (u64, u64)>) {
        for (t, (w, b)) in times.enumerate() {
            if self.window.len() <= t {
                self.window.push((0, 0));
            }
            self.window[t].0 += w;
            self.window[t].1 += b;
        }
        self.window_runs += 1;
        if self.window_runs < WINDOW {
            return;
        }
        let waited = self
            .window
            .iter()
            .enumerate()
            .filter(|(_, &(w, b))| w.saturating_mul(5) > b.saturating_mul(4))
            .max_by(|(_, a), (_, b)| {
                (a.0 as f64 / a.1.max(1) as f64).total_cmp(&(b.0 as f64 / b.1.max(1) as f64))
            })
            .map(|(t, _)| t);
        let helped = self.window.iter().skip(1).any(|&(_, b)| b > 0);
        self.adapt(waited.or((!helped).then_some(0)));
        self.window.clear();
        self.window_runs = 0;
    }

    /// After a judgement: with `Some(t)`, the next runs go on thread `t`
    /// alone.
    fn adapt(&mut self, slow: Option<usize>) {
        match slow {
            Some(t) => {
                self.backoff = (self.backoff * 2).clamp(MIN_SOLO, MAX_SOLO);
                self.solo = self.backoff;
                self.solo_on = t;
            }
            None => self.backoff /= 2,
        }
    }

    /// Floats of one image's tensors between groups.
    fn inter_len(layer: &convjit_ir::Layer, program: &crate::program::Program) -> Option<u64> {
        let groups = &program.groups;
        groups[..groups.len() - 1].iter().try_fold(0u64, |n, g| {
            n.checked_add(Scratch::tensor_floats(layer, program, g.last) as u64)
        })
    }

    /// Floats (4 bytes) of one image of stage `k`'s output held between
    /// groups: half its values where they are kept in bf16.
    fn tensor_floats(
        layer: &convjit_ir::Layer,
        program: &crate::program::Program,
        k: usize,
    ) -> usize {
        (layer.stages[k].output.len() * program.value_bytes(k)).div_ceil(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow runs send the next ones to one thread, longer each time (to a
    /// bound); good runs shorten the next spell.
    #[test]
    fn slow_runs_back_off_to_one_thread() {
        let mut s = Scratch::default();
        s.adapt(Some(1));
        assert_eq!((s.solo, s.backoff, s.solo_on), (MIN_SOLO, MIN_SOLO, 1));
        s.adapt(Some(0));
        assert_eq!((s.solo, s.solo_on), (2 * MIN_SOLO, 0));
        for _ in 0..12 {
            s.adapt(Some(0));
        }
        assert_eq!(s.solo, MAX_SOLO);
        s.adapt(None);
        assert_eq!(s.backoff, MAX_SOLO / 2);
        // Judged over WINDOW runs: thread 1 waited on thread 0, which
        // was late; then no worker ran a share; then balanced runs.
        let mut s = Scratch::default();
        for _ in 0..WINDOW {
            assert_eq!(s.solo, 0);
            s.judge([(0, 100), (90, 100)].into_iter());
        }
        assert_eq!((s.solo, s.solo_on), (MIN_SOLO, 1));
        for _ in 0..WINDOW {
            s.judge([(0, 100), (0, 0)].into_iter());
        }
        assert_eq!((s.solo, s.solo_on), (2 * MIN_SOLO, 0));
        for _ in 0..WINDOW {
            s.judge([(10, 100), (5, 100)].into_iter());
        }
        assert_eq!(s.backoff, MIN_SOLO);
    }
}
