//! Running a compiled kernel: replay the program's steps for every image,
//! group by group, on the planned threads. Every length is checked before
//! the first generated function is entered.

use crate::pool::Pool;
use crate::program::{Loc, Step};
use crate::{check_len, JitError, Kernel};
use std::sync::{Barrier, Mutex};

/// A pointer shared by the threads of one run.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: the threads of one run write disjoint rows through these pointers
// (each its own chunk of each group's output) and read only data that a
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

/// The buffers of one run, kept for the next: whole tensors between
/// groups (one image) and, per thread and group, the band buffers. Every
/// step writes rows before any step reads them, so reuse needs no clearing.
/// With several threads, also the worker threads (`None` if the system
/// refused them: the run then spawns its own).
pub(crate) struct Scratch {
    inter: Vec<Vec<f32>>,
    bufs: Vec<Vec<Vec<Vec<f32>>>>,
    workers: Option<Pool>,
}

impl Scratch {
    fn new(
        layer: &convjit_ir::Layer,
        program: &crate::program::Program,
        threads: usize,
    ) -> Scratch {
        let groups = &program.groups;
        Scratch {
            inter: groups[..groups.len() - 1]
                .iter()
                .map(|g| vec![0f32; layer.stages[g.last].output.len()])
                .collect(),
            bufs: (0..threads)
                .map(|_| {
                    groups
                        .iter()
                        .map(|g| g.buffers.iter().map(|&n| vec![0f32; n]).collect())
                        .collect()
                })
                .collect(),
            workers: if threads > 1 {
                Pool::new(threads - 1)
            } else {
                None
            },
        }
    }
}

impl Kernel {
    /// Runs `batch` NHWC images. Checks input.len() == batch*layer.input.len() and
    /// output.len() == batch*layer.output().len() before entering generated code.
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize) -> Result<(), JitError> {
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
        // Buffers from an earlier run (fresh ones cost page faults).
        let pool = || self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let mut scratch = pool()
            .pop()
            .unwrap_or_else(|| Scratch::new(l, &self.compiled.program, threads));
        let inter: Vec<Shared> = scratch
            .inter
            .iter_mut()
            .map(|v| Shared(v.as_mut_ptr()))
            .collect();
        let (input_ptr, output_ptr) = (
            Shared(input.as_ptr().cast_mut()),
            Shared(output.as_mut_ptr()),
        );
        let barrier = Barrier::new(threads);
        // `bufs`: this thread's band buffers, group by group.
        let worker = |t: usize, bufs: &mut Vec<Vec<Vec<f32>>>| {
            for n in 0..batch {
                // SAFETY (offsets): `n < batch`, and both buffers hold
                // `batch` images (checked above).
                let image_in = input_ptr.get().wrapping_add(n * l.input.len());
                let image_out = output_ptr.get().wrapping_add(n * out_shape.len());
                for (g, group) in groups.iter().enumerate() {
                    let gin = if g == 0 { image_in } else { inter[g - 1].get() };
                    let gout = if g + 1 == groups.len() {
                        image_out
                    } else {
                        inter[g].get()
                    };
                    if let Some(steps) = group.threads.get(t) {
                        // SAFETY: see `exec`: the program's offsets stay
                        // inside these tensors and buffers, which are live.
                        unsafe { self.exec(steps, gin, gout, &mut bufs[g], image_in) };
                    }
                    if threads > 1 {
                        // The next group reads rows other threads wrote.
                        barrier.wait();
                    }
                }
            }
        };
        if threads == 1 {
            worker(0, &mut scratch.bufs[0]);
        } else {
            // Each thread locks its own buffers once (never contended).
            let bufs: Vec<Mutex<&mut Vec<Vec<Vec<f32>>>>> =
                scratch.bufs.iter_mut().map(Mutex::new).collect();
            let work = |t: usize| {
                let mut b = bufs[t].lock().unwrap_or_else(|e| e.into_inner());
                worker(t, &mut b);
            };
            match &scratch.workers {
                Some(workers) => workers.run(&work),
                None => std::thread::scope(|s| {
                    for t in 1..threads {
                        let work = &work;
                        s.spawn(move || work(t));
                    }
                    work(0);
                }),
            }
        }
        pool().push(scratch);
        Ok(())
    }

    /// Runs one thread's steps of a group on one image.
    ///
    /// # Safety
    /// `gin` and `gout` point at whole tensors of the group's first stage's
    /// input and last stage's output, `residual` at the layer's input image,
    /// and `bufs` has the program's buffer sizes. The program (built by
    /// `program::program` from the same layer) keeps every step's rows
    /// inside these: a call's input pointer may lie before its buffer
    /// (where the stage's input row 0 would be, computed with wrapping
    /// arithmetic), but the function dereferences only the input rows its
    /// output rows read, which the program holds in that buffer.
    unsafe fn exec(
        &self,
        steps: &[Step],
        gin: *mut f32,
        gout: *mut f32,
        bufs: &mut [Vec<f32>],
        residual: *mut f32,
    ) {
        let at = |bufs: &mut [Vec<f32>], loc: Loc| match loc {
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
                    let (src, dst) = (at(bufs, src), at(bufs, dst));
                    let weights = self.packed[f].ptr();
                    let residual = residual.wrapping_add(r);
                    // SAFETY: the caller's contract; `residual` is read only
                    // by stages with `residual`, whose rows match the input's.
                    unsafe { (self.compiled.code.fns[f])(src, weights, dst, residual, row0, rows) };
                }
                Step::Shift { buf, from, len } => bufs[buf].copy_within(from..from + len, 0),
            }
        }
    }
}
