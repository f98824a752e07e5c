//! Running a compiled kernel: replay the program's steps for every image,
//! group by group, on the planned threads. Every length is checked before
//! the first generated function is entered.

use crate::pool::{spin_until, Pool, SPIN};
use crate::program::{self, Loc, Step};
use crate::{check_len, JitError, Kernel};
use convjit_ir::DataError;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// A pointer shared by the threads of one run.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: the threads of one run write disjoint parts of each group's
// output through these pointers (each its own chunk of the rows or
// pixels, or its own range of the output channels of every pixel: a
// share's function stores only its channels) and read only data that a
// barrier has ordered before the read; see `Kernel::run`.
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
    /// The batch's input rounded to bf16 (`Compiled::round_input`).
    rounded_input: Vec<f32>,
    inter: Vec<Vec<Buf>>,
    bufs: Vec<ThreadBufs>,
    workers: Option<Pool>,
}

/// One thread's buffers: per group its band buffers, and the scratch of
/// the AMX functions (`StagePlan::tiles`; empty without them).
pub(crate) struct ThreadBufs {
    groups: Vec<Vec<Buf>>,
    tiles: Buf,
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
    fn fit(
        &mut self,
        layer: &convjit_ir::Layer,
        program: &crate::program::Program,
        (threads, images): (usize, usize),
        tile_scratch: usize,
    ) -> Result<(), DataError> {
        let bands: Option<u64> = program
            .groups
            .iter()
            .flat_map(|g| &g.buffers)
            .try_fold(0u64, |n, &b| n.checked_add(b as u64));
        let inter: Option<u64> = Scratch::inter_len(layer, program);
        let tile_floats = tile_scratch.div_ceil(4);
        let groups = &program.groups;
        let inter_lens = || {
            groups[..groups.len() - 1]
                .iter()
                .map(|g| layer.stages[g.last].output.len())
        };
        // Most runs find their buffers made: no budget check then (it
        // reads /proc and the cgroup's files, about 15 us).
        let made = self.bufs.len() >= threads
            && self.bufs[..threads].iter().all(|t| {
                t.groups.len() >= groups.len()
                    && t.groups
                        .iter()
                        .zip(groups)
                        .all(|(b, g)| all_fit(b, g.buffers.iter().copied()))
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
                fit_all(bufs, g.buffers.iter().copied());
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

    /// Floats of one image's tensors between groups.
    fn inter_len(layer: &convjit_ir::Layer, program: &crate::program::Program) -> Option<u64> {
        let groups = &program.groups;
        groups[..groups.len() - 1].iter().try_fold(0u64, |n, g| {
            n.checked_add(layer.stages[g.last].output.len() as u64)
        })
    }
}

/// An image's input rounded to bf16 as the first group reads it: its
/// first `rounded` floats are done. Rows are read in order (bands, or
/// the whole tensor at once), so each call rounds at most the rows past
/// the last one's.
pub(crate) struct LazyRound {
    /// The image as given.
    from: *const f32,
    rounded: usize,
}

impl LazyRound {
    /// Output rows (pixels, for a flat stage) per call of `stage` reading
    /// a lazily rounded input: about 256 KiB of input rows each, so the
    /// rows rounded just before are still in L2 when it reads them (64
    /// KiB made more calls than it saved: conv1 224x224x3 ran slower).
    fn rows_per_call(stage: &convjit_ir::Stage) -> usize {
        const BYTES: usize = 256 << 10;
        let input_row = match convjit_plan::stage_plan::is_flat(stage) {
            true => stage.input.c * 4,
            false => stage.stride[0] * stage.input.w * stage.input.c * 4,
        };
        (BYTES / input_row.max(1)).max(1)
    }

    /// Rounds into `to` the input floats `stage`'s output rows (pixels, for
    /// a flat stage) `row0..row0 + rows` read that are not rounded yet.
    ///
    /// # Safety
    /// `from` and `to` each hold one whole input image of `stage` (the
    /// layer's first), `to` this thread's alone.
    unsafe fn round_read(
        &mut self,
        stage: &convjit_ir::Stage,
        row0: usize,
        rows: usize,
        to: *mut f32,
    ) {
        let end = match convjit_plan::stage_plan::is_flat(stage) {
            true => (row0 + rows) * stage.input.c,
            false if rows == 0 => 0,
            false => {
                let (_, hi, _, _) = convjit_plan::rows::input_rows(stage, row0, row0 + rows);
                hi * stage.input.w * stage.input.c
            }
        };
        let end = end.min(stage.input.len());
        if end <= self.rounded {
            return;
        }
        let n = end - self.rounded;
        // SAFETY: `rounded < end <= ` the image's floats, in both buffers
        // (the caller's contract); they do not overlap (`to` is scratch).
        let (src, dst) = unsafe {
            (
                std::slice::from_raw_parts(self.from.add(self.rounded), n),
                std::slice::from_raw_parts_mut(to.add(self.rounded), n),
            )
        };
        crate::bf16::round_into(dst, src);
        self.rounded = end;
    }
}

/// A barrier that a failing thread breaks: every thread waiting at it,
/// and any that arrives later, gets `Err` instead of waiting forever for
/// a thread that will never come (`std::sync::Barrier` cannot be broken).
/// A waiter spins on `passed` (the generation, or `u64::MAX` once broken)
/// for [`SPIN`] before it sleeps on the condition variable: waking a
/// sleeping thread costs tens of microseconds on a virtual machine.
struct Gate {
    n: usize,
    state: Mutex<GateState>,
    cv: Condvar,
    passed: AtomicU64,
}

struct GateState {
    arrived: usize,
    generation: u64,
    broken: bool,
}

/// Another thread of the run failed.
struct Broken;

impl Gate {
    fn new(n: usize) -> Gate {
        Gate {
            n,
            state: Mutex::new(GateState {
                arrived: 0,
                generation: 0,
                broken: false,
            }),
            cv: Condvar::new(),
            passed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait(&self) -> Result<(), Broken> {
        let mut s = self.lock();
        if s.broken {
            return Err(Broken);
        }
        s.arrived += 1;
        if s.arrived == self.n {
            s.arrived = 0;
            s.generation += 1;
            // Release: the rows written before arriving are visible to
            // the waiters that see the new generation.
            self.passed.store(s.generation, Ordering::Release);
            self.cv.notify_all();
            return Ok(());
        }
        let generation = s.generation;
        drop(s);
        let moved = || self.passed.load(Ordering::Acquire) != generation;
        if spin_until(SPIN, moved) {
            return match self.passed.load(Ordering::Acquire) {
                u64::MAX => Err(Broken),
                _ => Ok(()),
            };
        }
        let mut s = self.lock();
        while s.generation == generation && !s.broken {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.generation == generation {
            Err(Broken)
        } else {
            Ok(())
        }
    }

    fn break_all(&self) {
        self.lock().broken = true;
        self.passed.store(u64::MAX, Ordering::Release);
        self.cv.notify_all();
    }
}

/// The message of a panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// One run of a kernel, shared by its threads: where the images and the
/// tensors between groups are, how the batch is split, the barrier.
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
    batch: usize,
    /// Images `0..whole` go whole to the threads in turn; each of the
    /// others is split among all threads.
    whole: usize,
    threads: usize,
    gate: Gate,
    /// The first panic's message.
    failure: Mutex<Option<String>>,
}

impl Run<'_> {
    /// Image `n`'s group `g` on thread `t`, with `inter`'s tensors between
    /// groups: the steps of thread `share` only, or with `share = None`
    /// every thread's steps one after another (each share reads the
    /// group's input and writes its own rows, or channels, of the output,
    /// using the band buffers afresh). (`_t`, the thread, is for the
    /// `testing` feature's hooks.)
    fn image_group(
        &self,
        _t: usize,
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
        let steps = match share {
            Some(s) => shares.get(s..=s).unwrap_or(&[]),
            None => &shares[..],
        };
        for steps in steps {
            #[cfg(feature = "testing")]
            self.kernel.testing.before_group(_t);
            // SAFETY: see `exec`: the program's offsets stay inside
            // these tensors and buffers, which are live; every thread's
            // buffers have the same sizes, its tile scratch the largest
            // any function asks for. Rounding lazily (one thread), `gin`
            // is this image's rounded copy of `image_residual`, which no
            // other thread touches.
            let tiles = bufs.tiles.as_mut_ptr().cast::<u8>();
            let (bands, residual) = (&mut bufs.groups[g], image_residual);
            let mut lazy = (g == 0 && self.round_lazily).then_some(LazyRound {
                from: image_residual,
                rounded: 0,
            });
            unsafe {
                self.kernel
                    .exec(steps, (gin, gout), bands, (residual, lazy.as_mut()), tiles)
            };
        }
    }

    /// Thread `t`'s part of the batch: its whole images, then its share of
    /// every other image, group by group between barriers. `bufs`: this
    /// thread's band buffers, group by group.
    fn thread_images(&self, t: usize, bufs: &mut ThreadBufs) -> Result<(), Broken> {
        let (whole, batch, threads) = (self.whole, self.batch, self.threads);
        let groups = self.groups;
        for n in (t..whole).step_by(threads.max(1)) {
            for g in 0..groups.len() {
                self.image_group(t, n, g, None, &self.inter[t], bufs);
            }
        }
        if whole > 0 && whole < batch {
            // The rows phase shares thread 0's tensors between groups.
            self.gate.wait()?;
        }
        for n in whole..batch {
            for g in 0..groups.len() {
                self.image_group(t, n, g, Some(t), &self.inter[0], bufs);
                // The next group reads rows other threads wrote (and
                // the next image's first group overwrites the rows the
                // last group read); after the last group of the last
                // image, the pool's return is the barrier.
                let last = n + 1 == batch && g + 1 == groups.len();
                if threads > 1 && !last {
                    self.gate.wait()?;
                }
            }
        }
        Ok(())
    }

    /// [`Run::thread_images`], where a panic breaks the gate, so the other
    /// threads stop at their next barrier instead of waiting for this one
    /// forever, and is kept in `failure`.
    fn thread(&self, t: usize, bufs: &mut ThreadBufs) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| self.thread_images(t, bufs))) {
            let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert_with(|| format!("thread {t}: {}", panic_message(&*p)));
            drop(f);
            self.gate.break_all();
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
            Some(workers) => workers.run_n(threads - 1, &work),
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
    /// next barrier and returns [`JitError::Panicked`]; the run's buffers
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
        let groups = &self.compiled.program.groups;
        let threads = groups.iter().map(|g| g.threads.len()).max().unwrap_or(1);
        // Whole images per thread while there are enough for all (no
        // barriers, each thread with its own tensors between groups); the
        // rest, and a batch of one, split each image's rows (or a lone
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
        if self.compiled.round_input && scratch.rounded_input.len() < input.len() {
            let what = format_args!("the bf16 input of layer '{}'", l.name);
            scratch.rounded_input = convjit_ir::budget::zeroed(what, input.len())?;
        }
        // On one thread the rows are rounded as the first calls read them
        // (`LazyRound`); threads sharing an image's rows would round their
        // common rows at once, so there the whole batch is rounded first.
        let round_lazily = self.compiled.round_input && threads == 1;
        // Writable where it is rounded lazily: from the mutable slice.
        let read: *mut f32 = match self.compiled.round_input {
            true => {
                let r = &mut scratch.rounded_input[..input.len()];
                if !round_lazily {
                    crate::bf16::round_into(r, input);
                }
                r.as_mut_ptr()
            }
            // Only read (the first stage's functions take `*const` input).
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
            batch,
            whole,
            threads,
            gate: Gate::new(threads),
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
        match run.failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(m) => Err(JitError::Panicked(m)),
            None => Ok(()),
        }
    }

    /// Runs one thread's steps of a group on one image.
    ///
    /// # Safety
    /// `gin` and `gout` point at whole tensors of the group's first stage's
    /// input and last stage's output, `residual` at the layer's input image,
    /// and `bufs` has the program's buffer sizes; `tiles` is this thread's
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
        bufs: &mut [Buf],
        (residual, mut lazy): (*mut f32, Option<&mut LazyRound>),
        tiles: *mut u8,
    ) {
        let at = |bufs: &mut [Buf], loc: Loc| match loc {
            Loc::GroupIn(o) => gin.wrapping_offset(o),
            Loc::GroupOut(o) => gout.wrapping_offset(o),
            Loc::Buf(b, o) => bufs[b].as_mut_ptr().wrapping_offset(o),
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
                    let stage = &self.compiled.program.functions[f].stage;
                    // Rounding the input lazily, a call on many rows runs
                    // as calls on a few: each rounds the rows it reads
                    // just before, in cache (every function computes any
                    // range of its rows; the rows are the same).
                    let rounds = lazy.is_some() && matches!(src, Loc::GroupIn(_));
                    let piece = match rounds {
                        true => LazyRound::rows_per_call(stage),
                        false => rows,
                    };
                    let (src, dst) = (at(bufs, src), at(bufs, dst));
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
                        if let Some(lazy) = lazy.as_deref_mut().filter(|_| rounds) {
                            // SAFETY: the caller's contract: `gin` is the
                            // image's rounded copy of `lazy.from`, both whole.
                            unsafe { lazy.round_read(stage, row0 + done, n, gin) };
                        }
                        let (dst, residual) = (
                            dst.wrapping_add(done * row_len),
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
                Step::Shift { buf, from, len } => bufs[buf].copy_within(from..from + len, 0),
            }
        }
    }
}
