//! Running a compiled kernel: replay the program's steps for every image,
//! group by group, on the planned threads. Every length is checked before
//! the first generated function is entered.

use crate::pool::{spin_until, Pool, SPIN};
use crate::program::{self, Loc, Step};
use crate::scratch::{Buf, Scratch, ThreadBufs};
use crate::{check_len, JitError, Kernel};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A pointer shared by the threads of one run.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: the threads of one run write disjoint parts of each group's
// output through these pointers (each its own chunk of the rows or
// pixels, or its own range of the output channels of every pixel: a
// share's function stores only its channels; a share is claimed by one
// thread, `Work::claim`) and read only data that the end of an earlier
// phase has ordered before the read (`Work::wait_before`); see
// `Kernel::run`.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Through a method, so closures capture the whole `Shared` (which is
    /// `Send`), not its raw pointer field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The layer's input rounded to bf16 as the first stage's calls read it,
/// on one thread: each call's input rows rounded into the thread's
/// scratch (about 256 KiB, still in L2 when the call reads them) rather
/// than into a copy of the whole image, whose extra footprint evicted the
/// input between runs (3x3 256x256x64 -> 1: 2.0-2.1 ms against 0.5 in
/// f32, with the copy). Rows read by two calls are rounded twice.
pub(crate) struct LazyRound {
    /// The image as given.
    from: *const f32,
}

impl LazyRound {
    /// Bytes of one input row (a flat stage's: of a pixel).
    fn row_bytes(stage: &convjit_ir::Stage) -> usize {
        crate::pieces::row_pixels(stage) * stage.input.c * 4
    }

    /// Output rows (pixels, for a flat stage) per call of `stage` reading
    /// a lazily rounded input: the rows new to each call (`stride` input
    /// rows an output row) fill a piece (`pieces::PIECE_BYTES`), the
    /// halo rows beyond it. Unlike `pieces::rows_per_call` (the halo
    /// within the piece): each call rounds its halo again, and halving
    /// the rows a call (3x3 on 256x256x64: 4 output rows, 2 with the halo
    /// inside) took 1,063-1,186 us against 901-950.
    fn rows_per_call(stage: &convjit_ir::Stage) -> usize {
        let new_rows = match convjit_plan::stage_plan::is_flat(stage) {
            true => 1,
            false => stage.stride[0],
        };
        (crate::pieces::PIECE_BYTES / (new_rows * Self::row_bytes(stage)).max(1)).max(1)
    }

    /// Scratch bytes a call of [`LazyRound::rows_per_call`] rows rounds
    /// its input rows into.
    pub(crate) fn scratch_bytes(stage: &convjit_ir::Stage) -> usize {
        crate::pieces::rows_read(stage, Self::rows_per_call(stage)) * Self::row_bytes(stage)
    }

    /// Rounds into `scratch` the input rows that `stage`'s output rows
    /// (pixels, for a flat stage) `a..a + n` read, and returns the input
    /// pointer the function takes: where rounded row 0 would be (only the
    /// rounded rows are read through it).
    ///
    /// # Safety
    /// `from` holds one whole input image of `stage` (the layer's first);
    /// `scratch` holds [`LazyRound::scratch_bytes`] bytes, this thread's,
    /// 4-byte aligned; `n <=` [`LazyRound::rows_per_call`].
    unsafe fn round_rows(
        &self,
        stage: &convjit_ir::Stage,
        a: usize,
        n: usize,
        scratch: *mut u8,
    ) -> *mut f32 {
        let row = Self::row_bytes(stage) / 4;
        let (lo, hi) = crate::pieces::rows_of(stage, a, a + n);
        debug_assert!((hi - lo) * row * 4 <= Self::scratch_bytes(stage));
        // SAFETY: the caller's contract: rows lo..hi of the image are in
        // `from`, and the scratch holds at least as many floats.
        let (src, dst) = unsafe {
            (
                std::slice::from_raw_parts(self.from.add(lo * row), (hi - lo) * row),
                std::slice::from_raw_parts_mut(scratch.cast::<f32>(), (hi - lo) * row),
            )
        };
        crate::bf16::round_into(dst, src);
        scratch.cast::<f32>().wrapping_sub(lo * row)
    }
}

/// The run's work, claimed by whichever thread comes: a list of phases
/// (the whole images, then every group of every other image), each a
/// number of shares that any thread may run on its own buffers
/// (`Run::image_group` with `share`). A phase starts once every share of
/// the ones before it is done, so a thread that lost its core holds the
/// others only while it holds a share: the rest claim the shares it has
/// not started, and one that arrives late finds them done and leaves.
/// A thread tries its own share first (its index), so on a quiet machine
/// each keeps the rows it wrote for the next group in its caches.
/// Waiters spin, then yield, for [`SPIN`] before they sleep on `cv`.
struct Work {
    /// Per phase, the shares that came before it (a last entry: all).
    starts: Vec<usize>,
    /// Per phase, its claimed shares: one bit each, from `words[p]`.
    claimed: Vec<AtomicU64>,
    /// Per phase, the index of its first word in `claimed`.
    words: Vec<usize>,
    /// Shares done, in all phases: a phase's shares finish only after
    /// every share of the phases before it, so `done >= starts[p]` says
    /// phases `..p` are done.
    done: AtomicUsize,
    /// A thread failed: the others stop at their next wait or claim.
    broken: AtomicBool,
    sleep: Mutex<()>,
    cv: Condvar,
}

/// Another thread of the run failed.
struct Broken;

impl Work {
    /// Phases of `shares[p]` shares each.
    fn new(shares: impl Iterator<Item = usize>) -> Work {
        let (mut starts, mut words, mut n, mut w) = (vec![], vec![], 0, 0);
        for s in shares {
            starts.push(n);
            words.push(w);
            n += s;
            w += s.div_ceil(64);
        }
        starts.push(n);
        words.push(w);
        Work {
            starts,
            claimed: (0..w).map(|_| AtomicU64::new(0)).collect(),
            words,
            done: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            sleep: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    fn phases(&self) -> usize {
        self.starts.len() - 1
    }

    fn shares(&self, p: usize) -> usize {
        self.starts[p + 1] - self.starts[p]
    }

    /// An unclaimed share of phase `p`, claimed for the caller: the first
    /// free one from `from` on, wrapping around; `None` when all are taken.
    fn claim(&self, p: usize, from: usize) -> Option<usize> {
        let n = self.shares(p);
        let words = &self.claimed[self.words[p]..self.words[p + 1]];
        for i in 0..n {
            let s = (from + i) % n;
            let (word, bit) = (&words[s / 64], 1u64 << (s % 64));
            // A load first: most of a late thread's claims find the bit set.
            if word.load(Ordering::Relaxed) & bit == 0
                && word.fetch_or(bit, Ordering::Relaxed) & bit == 0
            {
                return Some(s);
            }
        }
        None
    }

    /// Whether every share of phase `p` is claimed (not necessarily done).
    fn all_claimed(&self, p: usize) -> bool {
        let n = self.shares(p);
        let words = &self.claimed[self.words[p]..self.words[p + 1]];
        words.iter().enumerate().all(|(i, w)| {
            let bits = (n - 64 * i).min(64);
            let full = if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
            w.load(Ordering::Relaxed) & full == full
        })
    }

    /// One share done; wakes the sleepers when it ends its phase.
    fn finish(&self) {
        // Release: the share's rows are visible to whoever sees the count.
        let done = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        if self.starts.binary_search(&done).is_ok() {
            drop(self.sleep.lock().unwrap_or_else(|e| e.into_inner()));
            self.cv.notify_all();
        }
    }

    /// Waits until phases `..p` are done (`p` = [`Work::phases`]: all).
    fn wait_before(&self, p: usize) -> Result<(), Broken> {
        let need = self.starts[p];
        let ready =
            || self.done.load(Ordering::Acquire) >= need || self.broken.load(Ordering::Relaxed);
        if !spin_until(SPIN, ready) {
            let mut g = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
            while !ready() {
                g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        }
        match self.broken.load(Ordering::Acquire) {
            true => Err(Broken),
            false => Ok(()),
        }
    }

    /// Thread `t`'s part: phase by phase, `run(phase, share)` for the
    /// shares it can claim (its own, `t`, first), each phase after the
    /// ones before it are done; a phase whose shares others have all
    /// claimed it skips without waiting. With `wait_all`, it returns only
    /// when every share is done. How long it waited for the others (after
    /// phases it took part in: waits after one it did not, a group
    /// planned on fewer threads, are the plan's) and ran shares. Without
    /// `claim`, it runs nothing (it only waits, with `wait_all`).
    fn take_part(
        &self,
        t: usize,
        claim: bool,
        wait_all: bool,
        mut run: impl FnMut(usize, usize),
    ) -> Result<(Duration, Duration), Broken> {
        let (mut busy, mut waited) = (Duration::ZERO, Duration::ZERO);
        // Whether this thread ran a share of the phase before.
        let mut ran = false;
        let mut wait = |p: usize, ran: bool| -> Result<(), Broken> {
            let since = Instant::now();
            self.wait_before(p)?;
            if ran {
                waited += since.elapsed();
            }
            Ok(())
        };
        for p in (0..self.phases()).filter(|_| claim) {
            if self.all_claimed(p) {
                ran = false;
                continue;
            }
            wait(p, ran)?;
            ran = false;
            while let Some(s) = self.claim(p, t) {
                if self.broken.load(Ordering::Relaxed) {
                    return Err(Broken);
                }
                let since = Instant::now();
                run(p, s);
                busy += since.elapsed();
                self.finish();
                ran = true;
            }
        }
        if wait_all {
            wait(self.phases(), ran)?;
        }
        Ok((waited, busy))
    }

    fn break_all(&self) {
        self.broken.store(true, Ordering::Release);
        drop(self.sleep.lock().unwrap_or_else(|e| e.into_inner()));
        self.cv.notify_all();
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// One run of a kernel, shared by its threads: where the images and the
/// tensors between groups are, how the batch is split, the shares.
struct Run<'a> {
    kernel: &'a Kernel,
    groups: &'a [program::GroupProgram],
    /// Per thread, one image's tensors between groups (thread 0's also
    /// serve the images whose rows the threads share).
    inter: Vec<Vec<Shared>>,
    /// The images the first stage reads (bf16: rounded, `bf16.rs`).
    input: Shared,
    /// In bf16 on one thread: `input` is not rounded yet; each image's
    /// rows are rounded into it as the first group's calls first read
    /// them (while they are in cache), from `residual`.
    round_lazily: bool,
    /// The images as given, which residuals add.
    residual: Shared,
    output: Shared,
    /// Images `0..whole` go whole to whichever thread claims them; each
    /// of the others is split into its groups' shares.
    whole: usize,
    /// Threads of this run: the planned ones, or 1 ([`Scratch::solo`]).
    threads: usize,
    work: Work,
    /// Per thread, nanoseconds it waited for the others and ran shares
    /// (`Work::take_part`), for [`Scratch::judge`].
    times: Vec<(AtomicU64, AtomicU64)>,
    /// The only thread that runs shares (the others only wait): where
    /// a worker was the one kept waiting, the fallback to one thread
    /// runs on it, and the caller waits.
    only: Option<usize>,
    /// The first panic's message.
    failure: Mutex<Option<String>>,
}

impl Run<'_> {
    /// Image `n`'s group `g`, with `inter`'s tensors between groups: the
    /// steps of share `share` only, or with `share = None` every share's
    /// steps one after another (each share reads the group's input and
    /// writes its own rows, or channels, of the output, using the band
    /// buffers afresh). Any thread may run any share, on its own `bufs`.
    fn image_group(
        &self,
        n: usize,
        g: usize,
        share: Option<usize>,
        inter: &[Shared],
        bufs: &mut ThreadBufs,
    ) {
        let l = &self.kernel.layer;
        let groups = self.groups;
        // SAFETY (offsets): `n < batch`, and both buffers hold
        // `batch` images (checked by `Kernel::run`).
        let image_in = self.input.get().wrapping_add(n * l.input.len());
        let image_residual = self.residual.get().wrapping_add(n * l.input.len());
        let image_out = self.output.get().wrapping_add(n * l.output().len());
        let gin = if g == 0 { image_in } else { inter[g - 1].get() };
        let gout = if g + 1 == groups.len() {
            image_out
        } else {
            inter[g].get()
        };
        let shares = &groups[g].threads;
        let (first, steps) = match share {
            Some(s) => (s, shares.get(s..=s).unwrap_or(&[])),
            None => (0, &shares[..]),
        };
        for (_s, steps) in (first..).zip(steps) {
            #[cfg(feature = "testing")]
            self.kernel.testing.before_group(_s);
            // SAFETY: see `exec`: the program's offsets stay inside
            // these tensors and buffers, which are live; every thread's
            // buffers have the same sizes, its tile scratch the largest
            // any function asks for. Rounding lazily (one thread), the
            // first group's calls read `image_residual` rounded into the
            // tile scratch, this thread's.
            let tiles = bufs.tiles.as_mut_ptr().cast::<u8>();
            let (bands, residual) = (&mut bufs.groups[g], image_residual);
            let lazy = (g == 0 && self.round_lazily).then_some(LazyRound {
                from: image_residual,
            });
            unsafe {
                self.kernel.exec(
                    steps,
                    (gin, gout),
                    (bands, groups[g].first()),
                    (residual, lazy.as_ref()),
                    tiles,
                )
            };
        }
    }

    /// Phase `p` of the run (`Work`): with `whole` images, phase 0 runs
    /// them (a share per image, on the thread's own tensors); then each
    /// other image's groups in turn, a share per planned thread. Image,
    /// group, and whether its shares are whole images.
    fn phase(&self, p: usize) -> (usize, usize, bool) {
        let g = self.groups.len();
        match (self.whole > 0, p) {
            (true, 0) => (0, 0, true),
            (true, _) => (self.whole + (p - 1) / g, (p - 1) % g, false),
            (false, _) => (self.whole + p / g, p % g, false),
        }
    }

    /// The phases' shares, for [`Work::new`].
    fn shares(groups: &[program::GroupProgram], batch: usize, whole: usize) -> Vec<usize> {
        let first = (whole > 0).then_some(whole);
        let rows = (whole..batch).flat_map(|_| groups.iter().map(|g| g.threads.len()));
        first.into_iter().chain(rows).collect()
    }

    /// Share `s` of phase `p` on thread `t`.
    fn run_share(&self, t: usize, p: usize, s: usize, bufs: &mut ThreadBufs) {
        match self.phase(p) {
            (_, _, true) => {
                // Image `s` whole, on this thread's tensors between groups.
                for g in 0..self.groups.len() {
                    self.image_group(s, g, None, &self.inter[t], bufs);
                }
            }
            // The rows phases share thread 0's tensors between groups.
            (n, g, false) => self.image_group(n, g, Some(s), &self.inter[0], bufs),
        }
    }

    /// Thread `t`'s part of the run ([`Work::take_part`]); thread 0
    /// waits at the end for all shares, so its return ends the run (with
    /// the pool's, for the workers that came).
    fn thread_work(&self, t: usize, bufs: &mut ThreadBufs) -> Result<(), Broken> {
        let wait_all = t == 0 && self.threads > 1;
        let claim = self.only.is_none_or(|k| k == t);
        let (waited, busy) = self
            .work
            .take_part(t, claim, wait_all, |p, s| self.run_share(t, p, s, bufs))?;
        let ns = |d: Duration| d.as_nanos().min(u64::MAX as u128) as u64;
        self.times[t].0.store(ns(waited), Ordering::Relaxed);
        self.times[t].1.store(ns(busy), Ordering::Relaxed);
        Ok(())
    }

    /// [`Run::thread_work`], where a panic breaks the run's `Work`, so the
    /// other threads stop at their next wait instead of waiting for this
    /// one forever, and is kept in `failure`.
    fn thread(&self, t: usize, bufs: &mut ThreadBufs) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| self.thread_work(t, bufs))) {
            let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert_with(|| format!("thread {t}: {}", panic_message(&*p)));
            drop(f);
            self.work.break_all();
        }
    }

    /// Runs every thread: on this one alone, or on `shared` workers (the
    /// process's), else the kernel's own in `scratch`, else threads spawned
    /// for this run; this thread is thread 0.
    fn on_threads(&self, scratch: &mut Scratch, shared: Option<&Pool>) {
        let threads = self.threads;
        if threads == 1 {
            self.thread(0, &mut scratch.bufs[0]);
            return;
        }
        // Each thread locks its own buffers once (never contended).
        let bufs: Vec<Mutex<&mut ThreadBufs>> = scratch.bufs.iter_mut().map(Mutex::new).collect();
        let work = |t: usize| {
            let mut b = bufs[t].lock().unwrap_or_else(|e| e.into_inner());
            self.thread(t, &mut b);
        };
        match shared.or(scratch.workers.as_ref()) {
            // A worker that has not started when thread 0 is done (its
            // core is busy elsewhere) is not waited for: the shares are.
            Some(workers) => workers.run(threads - 1, &work, true),
            None => std::thread::scope(|s| {
                for t in 1..threads {
                    let work = &work;
                    s.spawn(move || work(t));
                }
                work(0);
            }),
        }
    }
}

impl Kernel {
    /// Runs `batch` NHWC images. Checks input.len() == batch*layer.input.len() and
    /// output.len() == batch*layer.output().len() before entering generated code.
    ///
    /// A panic in any thread of the run (a bug) stops the others at their
    /// next wait and returns [`JitError::Panicked`]; the run's buffers
    /// are dropped and the kernel stays usable.
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize) -> Result<(), JitError> {
        // Buffers from an earlier run (fresh ones cost page faults).
        let pool = || self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let mut scratch = pool().pop().unwrap_or_default();
        self.run_in(&mut scratch, input, output, batch)?;
        pool().push(scratch);
        Ok(())
    }

    /// [`Kernel::run`] with the run's buffers in `scratch`, fitted to
    /// this kernel first. On `Err(Panicked)` the buffers may be mid-step
    /// (and, if the run had made its own workers, they have all reported
    /// back): drop `scratch`.
    pub(crate) fn run_in(
        &self,
        scratch: &mut Scratch,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
    ) -> Result<(), JitError> {
        let l = &self.layer;
        check_len("input", input.len(), batch, l.input.len(), l.input)?;
        let out_shape = l.output();
        check_len("output", output.len(), batch, out_shape.len(), out_shape)?;
        if batch == 0 {
            return Ok(());
        }
        if l.stages.is_empty() {
            output.copy_from_slice(input);
            return Ok(());
        }
        if let Some(c) = &self.chain {
            return c.run(input, output, batch);
        }
        let Some(w) = &self.winograd else {
            return self.run_direct(scratch, input, output, batch);
        };
        let (i, o) = (l.input.len(), out_shape.len());
        for (x, y) in input.chunks_exact(i).zip(output.chunks_exact_mut(o)) {
            if w.image(x, y)? {
                // A sum not finite: the direct kernel's values (`winograd/mod.rs`).
                self.run_direct(scratch, x, y, 1)?;
            }
        }
        Ok(())
    }

    /// [`Kernel::run_in`] the direct way (not Winograd's), lengths checked.
    fn run_direct(
        &self,
        scratch: &mut Scratch,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
    ) -> Result<(), JitError> {
        let l = &self.layer;
        let groups = &self.compiled.program.groups;
        let threads = groups.iter().map(|g| g.threads.len()).max().unwrap_or(1);
        // Whole images claimed by the threads while there are enough for
        // all (no waits, each thread with its own tensors between groups);
        // the rest, and a batch of one, split each image's rows (or a lone
        // stage's output channels).
        let whole = if threads > 1 {
            batch / threads * threads
        } else {
            0
        };
        let images = if whole > 0 { threads } else { 1 };
        scratch.fit(
            l,
            &self.compiled.program,
            (threads, images),
            self.compiled.tile_scratch,
        )?;
        // In bf16 the stages read the input rounded (`bf16.rs`), the
        // residual reads it as given.
        // On one thread the rows are rounded as the first calls read them
        // (`LazyRound`, into the thread's scratch); threads sharing an
        // image's rows would round their common rows at once, so there the
        // whole batch is rounded into a copy first.
        let round_lazily = self.compiled.round_input && threads == 1;
        let round_first = self.compiled.round_input && !round_lazily;
        if round_first && scratch.rounded_input.len() < input.len() {
            let what = format_args!("the bf16 input of layer '{}'", l.name);
            scratch.rounded_input = convjit_ir::budget::zeroed(what, input.len())?;
        }
        // Where the threads waited longer than they worked, the next runs
        // go on one thread (`Scratch::solo`).
        let (threads, only) = match threads > 1 && scratch.solo > 0 {
            true => {
                scratch.solo -= 1;
                match scratch.solo_on {
                    // A worker alone: all the threads, one claiming.
                    t if t > 0 && t < threads => (threads, Some(t)),
                    // The caller alone, also where the worker was one a
                    // kernel of more threads of the same arena (a
                    // `Network`) had: none of this run's would claim.
                    _ => (1, None),
                }
            }
            false => (threads, None),
        };
        let read: *mut f32 = match round_first {
            true => {
                let r = &mut scratch.rounded_input[..input.len()];
                crate::bf16::round_into(r, input);
                r.as_mut_ptr()
            }
            // Only read (the first stage's functions take `*const` input;
            // rounded lazily, they read the scratch `LazyRound` returns).
            false => input.as_ptr().cast_mut(),
        };
        let run = Run {
            kernel: self,
            groups,
            inter: scratch
                .inter
                .iter_mut()
                .map(|t| t.iter_mut().map(|v| Shared(v.as_mut_ptr())).collect())
                .collect(),
            input: Shared(read),
            round_lazily,
            residual: Shared(input.as_ptr().cast_mut()),
            output: Shared(output.as_mut_ptr()),
            whole,
            threads,
            work: Work::new(Run::shares(groups, batch, whole).into_iter()),
            times: (0..threads)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            only,
            failure: Mutex::new(None),
        };
        // The process's workers if free, else this kernel's own.
        let shared = (threads > 1)
            .then(|| crate::pool::shared(threads - 1))
            .flatten();
        // (Made for fewer threads by another kernel of a network: made again.)
        let own = scratch.workers.as_ref().map_or(0, Pool::len);
        if threads > 1 && shared.is_none() && own < threads - 1 {
            scratch.workers = Pool::new(threads - 1);
        }
        run.on_threads(scratch, shared.as_deref());
        if let Some(m) = run.failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(JitError::Panicked(m));
        }
        if threads > 1 && only.is_none() {
            let times = run
                .times
                .into_iter()
                .map(|(w, b)| (w.into_inner(), b.into_inner()));
            scratch.judge(times);
        }
        Ok(())
    }

    /// Runs one thread's steps of a group on one image.
    ///
    /// # Safety
    /// `gin` and `gout` point at whole tensors of the group's first stage's
    /// input and last stage's output, `residual` at the layer's input image,
    /// and `bufs` has the program's buffer sizes (`first` the group's first
    /// stage, whose output buffer 0 holds); `tiles` is this thread's
    /// alone, of `Compiled::tile_scratch` bytes. The program (built by
    /// `program::program` from the same layer) keeps every step's rows
    /// inside these: a call's input pointer may lie before its buffer
    /// (where the stage's input row 0 would be, computed with wrapping
    /// arithmetic), but the function dereferences only the input rows its
    /// output rows read, which the program holds in that buffer. A
    /// function for a share of the output channels writes only those
    /// channels of every pixel of its rows.
    unsafe fn exec(
        &self,
        steps: &[Step],
        (gin, gout): (*mut f32, *mut f32),
        (bufs, first): (&mut [Buf], usize),
        (residual, lazy): (*mut f32, Option<&LazyRound>),
        tiles: *mut u8,
    ) {
        let program = &self.compiled.program;
        // Offsets are in values of `bytes` each (4, or 2 where the
        // stage's output is kept in bf16: `Program::value_bytes`).
        let at = |bufs: &mut [Buf], loc: Loc, bytes: usize| {
            let (base, o) = match loc {
                Loc::GroupIn(o) => (gin, o),
                Loc::GroupOut(o) => (gout, o),
                Loc::Buf(b, o) => (bufs[b].as_mut_ptr(), o),
            };
            base.cast::<u8>()
                .wrapping_offset(o * bytes as isize)
                .cast::<f32>()
        };
        for step in steps {
            match *step {
                Step::Call {
                    f,
                    src,
                    dst,
                    residual: r,
                    row0,
                    rows,
                } => {
                    let k = program.functions[f].index;
                    let stage = &program.functions[f].stage;
                    let (in_bytes, out_bytes) = match k {
                        0 => (4, program.value_bytes(0)),
                        _ => (program.value_bytes(k - 1), program.value_bytes(k)),
                    };
                    // Rounding the input lazily, a call on many rows runs
                    // as calls on a few: each rounds the rows it reads
                    // just before, in cache (every function computes any
                    // range of its rows; the rows are the same).
                    let rounds = lazy.is_some() && matches!(src, Loc::GroupIn(_));
                    // On channel pairs, each call converts the rows it reads
                    // into the scratch (`pairs.rs`): a piece's worth; not
                    // where its input is stored as bf16, whose values two
                    // by two are the pairs (`stage_plan::reads_bf16_pairs`).
                    let paired = self.compiled.plans[f].pairs.is_some() && in_bytes == 4;
                    let piece = match rounds {
                        true => LazyRound::rows_per_call(stage),
                        false => rows,
                    };
                    let piece = match paired {
                        true => piece.min(crate::pairs::rows_per_call(stage)),
                        false => piece,
                    };
                    let (src, dst) = (at(bufs, src, in_bytes), at(bufs, dst, out_bytes));
                    let weights = self.packed[f].ptr();
                    let residual = residual.wrapping_add(r);
                    // Floats from one output row (pixel) to the next, in
                    // the destination and the residual (whose rows match
                    // the output's).
                    let row_len = match convjit_plan::stage_plan::is_flat(stage) {
                        true => stage.output.c,
                        false => stage.output.w * stage.output.c,
                    };
                    let mut done = 0;
                    while done < rows {
                        let n = piece.min(rows - done);
                        let src = match lazy.filter(|_| rounds) {
                            // SAFETY: the caller's contract: `lazy.from` is
                            // the whole image; `tiles` is this thread's
                            // scratch, at least `LazyRound::scratch_bytes`
                            // of the first stage (`Compiled::tile_scratch`),
                            // which converts nothing itself (it would not
                            // round lazily); `n` is at most a piece.
                            Some(lazy) => unsafe { lazy.round_rows(stage, row0 + done, n, tiles) },
                            None => src,
                        };
                        let src = match paired {
                            // SAFETY: `src` holds the rows these output rows
                            // read (the caller's contract, as for the
                            // function itself); `tiles` is this thread's
                            // scratch, at least `pairs::scratch_bytes` of
                            // every paired function (`Compiled::tile_scratch`);
                            // `n` is at most a piece.
                            true => unsafe {
                                crate::pairs::convert(stage, src, row0 + done, n, tiles)
                            },
                            false => src,
                        };
                        let (dst, residual) = (
                            dst.cast::<u8>()
                                .wrapping_add(done * row_len * out_bytes)
                                .cast::<f32>(),
                            residual.wrapping_add(done * row_len),
                        );
                        // SAFETY: the caller's contract; `residual` is read
                        // only by stages with `residual`, whose rows match
                        // the input's; rows `row0 + done ..` of the call's
                        // are the same rows, `dst` and `residual` moved to
                        // the first of them.
                        unsafe {
                            (self.compiled.code.fns[f])(
                                src,
                                weights,
                                dst,
                                residual,
                                row0 + done,
                                n,
                                tiles,
                            )
                        };
                        if let Some(r) = &self.compiled.rounded[f] {
                            // SAFETY: `dst` holds the `n` rows (pixels) the
                            // call just wrote, this thread's (the caller's
                            // contract); `r` rounds only its function's
                            // channels.
                            unsafe { r.round(dst, n) };
                        }
                        done += n;
                    }
                }
                Step::Shift { buf, from, len } => match program.value_bytes(first + buf) {
                    4 => bufs[buf].copy_within(from..from + len, 0),
                    _ => {
                        let b = &mut bufs[buf];
                        // SAFETY: the buffer's floats seen as twice as many
                        // bf16 values, which it holds (`Program::buffer_floats`);
                        // `b` is borrowed mutably meanwhile.
                        let v = unsafe {
                            std::slice::from_raw_parts_mut(
                                b.as_mut_ptr().cast::<u16>(),
                                b.len() * 2,
                            )
                        };
                        v.copy_within(from..from + len, 0);
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::{compile_source, Rng, Weights};
    use convjit_plan::layer_plan::Split;
    use convjit_plan::{Fusion, Options};

    /// Every share of every phase runs exactly once, whichever of four
    /// threads claims it, and only after every share of the phases before
    /// it has finished (phases of 1, 2, 3 and 70 shares: two words).
    #[test]
    fn every_share_runs_once_after_the_phases_before_it() {
        let shares = [3, 1, 70, 2, 4, 1, 65];
        for _ in 0..20 {
            let work = Work::new(shares.iter().copied());
            let hits: Vec<Vec<AtomicUsize>> = shares
                .iter()
                .map(|&n| (0..n).map(|_| AtomicUsize::new(0)).collect())
                .collect();
            let finished = AtomicUsize::new(0);
            let run = |p: usize, s: usize| {
                // Everything before phase `p` has finished.
                assert!(finished.load(Ordering::Acquire) >= work.starts[p]);
                assert_eq!(hits[p][s].fetch_add(1, Ordering::Relaxed), 0);
                finished.fetch_add(1, Ordering::Release);
            };
            std::thread::scope(|sc| {
                for t in 1..4 {
                    let (work, run) = (&work, &run);
                    sc.spawn(move || work.take_part(t, true, false, run).ok().unwrap());
                }
                assert!(work.take_part(0, true, true, run).is_ok());
                // Thread 0 returned after every share, not only its own.
                assert_eq!(finished.load(Ordering::Acquire), shares.iter().sum());
            });
            assert!(hits
                .iter()
                .flatten()
                .all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    /// A thread that comes after the others have claimed everything runs
    /// nothing and does not wait; one alone runs every share in order.
    #[test]
    fn a_late_thread_finds_nothing_and_one_alone_does_all() {
        let work = Work::new([2, 3].into_iter());
        let mut order = Vec::new();
        assert!(work
            .take_part(0, true, true, |p, s| order.push((p, s)))
            .is_ok());
        assert_eq!(order, [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]);
        let late = work.take_part(1, true, false, |p, s| panic!("ran ({p}, {s})"));
        assert!(matches!(late, Ok((w, b)) if w.is_zero() && b.is_zero()));
    }

    /// A thread that does not claim only waits: another runs every share.
    #[test]
    fn a_thread_that_does_not_claim_waits_for_the_one_that_does() {
        let work = Work::new([2, 3, 1].into_iter());
        let count = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let r = work.take_part(1, true, false, |_, _| {
                    count.fetch_add(1, Ordering::Relaxed);
                });
                assert!(r.is_ok());
            });
            let r = work.take_part(0, false, true, |p, s| panic!("ran ({p}, {s})"));
            assert!(matches!(r, Ok((_, b)) if b.is_zero()));
            assert_eq!(count.load(Ordering::Relaxed), 6);
        });
    }

    /// A failed thread's unfinished share stops the others' waits.
    #[test]
    fn a_broken_run_stops_the_waiters() {
        let work = Work::new([2, 1].into_iter());
        assert_eq!(work.claim(0, 0), Some(0));
        std::thread::scope(|sc| {
            let w = sc.spawn(|| work.take_part(1, true, false, |_, _| {}).is_err());
            // Share 0 of phase 0 never finishes.
            work.break_all();
            assert!(w.join().unwrap());
        });
    }

    /// Bit-for-bit the same output on 1, 2 and 3 threads, and on one
    /// thread where the planned threads fell back to one (`Scratch::solo`):
    /// fused groups, a lone stage whose threads split its output channels,
    /// flat stages split by pixels, a strided conv; batches whose images
    /// go whole to the threads, split by rows, or both.
    #[test]
    fn outputs_are_identical_on_any_number_of_threads() {
        let src = "\
layer fused { input 21x13x8\n e: pointwise 24, bias, relu6\n d: depthwise 3x3, stride 2, pad same, bias\n p: pointwise 8, bias }
layer residual { input 17x9x8\n e: pointwise 16, relu\n d: depthwise 3x3, pad same\n p: pointwise 8, residual }
layer channels { input 7x7x32\n p: pointwise 128, bias, relu }
layer flat { input 9x5x16\n p: pointwise 40, bias }
layer conv { input 15x11x5\n c: conv 3x3 -> 24, stride 2, pad same, bias, relu }";
        let (mut fused, mut channels) = (false, false);
        for l in compile_source(src).unwrap() {
            let w = Weights::random(&l, 3);
            for fuse in [Fusion::Auto, Fusion::Always, Fusion::Never] {
                let kernel = |threads| {
                    let o = Options {
                        fuse,
                        threads,
                        min_thread_cycles: 0,
                        ..Options::default()
                    };
                    Kernel::compile_with(&l, &w, &o).unwrap()
                };
                let one = kernel(1);
                for batch in [1, 2, 3, 5] {
                    let x = Rng::new(batch as u64).vec(l.input.len() * batch, 1.0);
                    let want = one.run_alloc(&x, batch).unwrap();
                    for threads in [2, 3] {
                        let k = kernel(threads);
                        let groups = &k.layer_plan().groups;
                        fused |= groups.iter().any(|g| g.last > g.first && g.threads > 1);
                        channels |= groups.iter().any(|g| g.split == Split::Channels);
                        let same = |got: Vec<f32>| {
                            got.iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits())
                        };
                        let what = format!("{} {fuse:?} batch {batch}, {threads} threads", l.name);
                        assert!(same(k.run_alloc(&x, batch).unwrap()), "{what}");
                        // The same kernel on one thread: the caller's, or
                        // the last worker's while the others wait.
                        for on in [0, threads - 1] {
                            let mut sc = k.scratch.lock().unwrap();
                            (sc[0].solo, sc[0].solo_on) = (2, on);
                            drop(sc);
                            assert!(same(k.run_alloc(&x, batch).unwrap()), "{what}, on {on}");
                            assert_eq!(k.scratch.lock().unwrap()[0].solo, 1);
                        }
                    }
                }
            }
        }
        assert!(fused && channels, "fused {fused}, channels {channels}");
    }

    /// A network's kernels share one arena: the fallback onto worker 2
    /// that a 3-thread kernel left there makes a 2-thread kernel run on
    /// its caller, not wait for a thread it does not have (it hung so
    /// once in `cargo test`, waiting for the first phase's shares).
    #[test]
    fn a_fallback_onto_a_worker_this_run_lacks_runs_on_the_caller() {
        let l = compile_source("layer c { input 7x7x32\n p: pointwise 128, bias, relu }")
            .unwrap()
            .remove(0);
        let w = Weights::random(&l, 5);
        let kernel = |threads| {
            let o = Options {
                threads,
                min_thread_cycles: 0,
                ..Options::default()
            };
            Kernel::compile_with(&l, &w, &o).unwrap()
        };
        let (one, two) = (kernel(1), kernel(2));
        assert!(two.layer_plan().groups[0].threads == 2);
        let x = Rng::new(4).vec(l.input.len(), 1.0);
        let want = one.run_alloc(&x, 1).unwrap();
        // A first run makes the arena.
        assert_eq!(two.run_alloc(&x, 1).unwrap(), want);
        let mut sc = two.scratch.lock().unwrap();
        (sc[0].solo, sc[0].solo_on) = (2, 2);
        drop(sc);
        // On a thread of its own, so that a hang fails the test (the
        // thread is left behind) rather than hanging it.
        let two = std::sync::Arc::new(two);
        let (tx, rx) = std::sync::mpsc::channel();
        let k = two.clone();
        std::thread::spawn(move || tx.send(k.run_alloc(&x, 1).unwrap()));
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the run ended");
        assert_eq!(got, want);
        assert_eq!(two.scratch.lock().unwrap()[0].solo, 1);
    }
}
