//! Worker threads kept between a kernel's runs. Spawning and joining a
//! thread per run cost about 70 us on the development machine, as much as
//! a 10M-MAC layer's second thread saves in a sixth of its run. A worker
//! blocked in the kernel takes tens of microseconds more to wake on a
//! virtual machine (the idle vCPU halts and needs an interrupt), so both
//! sides spin a while ([`spin_until`]) before they block: back-to-back
//! runs then hand work over through memory alone. Past the first
//! [`PAUSE`] the spinning yields the core at every round, so a waiter
//! that shares a core with the thread it waits for (another process
//! keeps the other core busy) does not take its time slices.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it blocks: longer than the gap
/// between back-to-back runs and than the usual imbalance of two threads'
/// shares, short enough that an idle kernel's workers soon sleep.
pub(crate) const SPIN: Duration = Duration::from_micros(300);

/// How long a waiter spins on the core alone before it yields it between
/// rounds: a share's usual imbalance on a quiet machine.
pub(crate) const PAUSE: Duration = Duration::from_micros(30);

/// Spins until `ready()` or `limit` has passed; whether it became ready.
/// After [`PAUSE`], each round of checks yields the core (a system call
/// that returns at once where no other thread wants it).
pub(crate) fn spin_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let e = start.elapsed();
        if e > limit {
            return false;
        }
        if e > PAUSE {
            std::thread::yield_now();
        }
    }
}

/// A message from `rx`: spinning on it for [`SPIN`] first, then blocking.
/// `None` when the sender is gone.
fn receive<T>(rx: &Receiver<T>) -> Option<T> {
    let mut got = None;
    let mut gone = false;
    spin_until(SPIN, || match rx.try_recv() {
        Ok(v) => {
            got = Some(v);
            true
        }
        Err(TryRecvError::Empty) => false,
        Err(TryRecvError::Disconnected) => {
            gone = true;
            true
        }
    });
    if gone {
        return None;
    }
    got.or_else(|| rx.recv().ok())
}

/// `n` parked threads that run a borrowed closure together with the
/// calling thread ([`Pool::run`]).
pub(crate) struct Pool {
    workers: Vec<Worker>,
}

struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<bool>,
    handle: Option<JoinHandle<()>>,
    /// Jobs sent to this worker (by the one thread that holds the pool).
    sent: AtomicU64,
    /// The last job taken, by the worker (to run it) or by `run` (to
    /// cancel it): whoever moves it from `ticket - 1` to `ticket` first.
    taken: Arc<AtomicU64>,
}

/// One call of the run's closure: its thread index and the closure, with
/// its lifetime erased (see [`Pool::run`] for why that holds), and its
/// number among the worker's jobs.
struct Job {
    t: usize,
    f: *const (dyn Fn(usize) + Sync + 'static),
    ticket: u64,
}

// SAFETY: the closure behind `f` is `Sync`, so calling it from the worker
// thread is fine; `Pool::run` keeps it alive until the worker reports back
// (or cancels the job before the worker takes it).
unsafe impl Send for Job {}

impl Pool {
    /// Starts `n` workers; `None` if the system refuses a thread.
    pub fn new(n: usize) -> Option<Pool> {
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (jobs, rx) = channel::<Job>();
            let (tx, done) = channel();
            let taken = Arc::new(AtomicU64::new(0));
            let mine = taken.clone();
            let handle = std::thread::Builder::new()
                .name(format!("convjit-{}", i + 1))
                .spawn(move || {
                    while let Some(job) = receive(&rx) {
                        let take = (job.ticket - 1, job.ticket);
                        if mine
                            .compare_exchange(take.0, take.1, Ordering::AcqRel, Ordering::Acquire)
                            .is_err()
                        {
                            // Cancelled: its run has ended, `f` may be gone.
                            continue;
                        }
                        // SAFETY: `run` does not return (so the closure
                        // stays alive) before the report of a worker that
                        // took its job.
                        let f = unsafe { &*job.f };
                        let ok = catch_unwind(AssertUnwindSafe(|| f(job.t))).is_ok();
                        if tx.send(ok).is_err() {
                            return;
                        }
                    }
                })
                .ok()?;
            workers.push(Worker {
                jobs: Some(jobs),
                done,
                handle: Some(handle),
                sent: AtomicU64::new(0),
                taken,
            });
        }
        Some(Pool { workers })
    }

    /// Workers in the pool.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Calls `f(0)` on this thread and `f(1)`..`f(n)` on the first `n`
    /// workers, all at once (so `f` may wait on a barrier of `n + 1`), and
    /// returns when every call has returned. A panic in any call is
    /// raised here, after all have finished.
    #[cfg(test)]
    pub fn run_n(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        self.run(n, f, false);
    }

    /// [`Pool::run_n`], but with `cancel_late`, a worker that has not
    /// started its call when `f(0)` returns never makes it: `f(0)` must
    /// then not return before the work is done, whoever did it.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync), cancel_late: bool) {
        let workers = &self.workers[..n.min(self.workers.len())];
        let erased: *const (dyn Fn(usize) + Sync + '_) = f;
        // SAFETY: only the lifetime changes. A worker calls `f` only after
        // taking its job's ticket, then reports after the call returns;
        // this function waits for the report of every worker that took
        // its job, and takes the others' tickets itself (cancelling them),
        // so no call outlives the borrow of `f`.
        let erased: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(erased) };
        let mut sent = Vec::with_capacity(workers.len());
        for (i, w) in workers.iter().enumerate() {
            let ticket = w.sent.load(Ordering::Relaxed) + 1;
            let job = Job {
                t: i + 1,
                f: erased,
                ticket,
            };
            let ok = w.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
            if ok {
                w.sent.store(ticket, Ordering::Relaxed);
            }
            sent.push(ok);
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        // A worker that did not get its job never calls `f`; one that took
        // it always reports (it catches panics), or has exited and no
        // longer runs anything.
        let mut all_ok = cancel_late || sent.iter().all(|&s| s);
        for (w, &s) in workers.iter().zip(&sent) {
            let ticket = w.sent.load(Ordering::Relaxed);
            let cancelled = cancel_late
                && s
                && w.taken
                    .compare_exchange(ticket - 1, ticket, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            if s && !cancelled {
                all_ok &= receive(&w.done).unwrap_or(false);
            }
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        assert!(all_ok, "a kernel worker thread failed");
    }
}

/// The process's shared workers, one fewer than its cores: the kernels
/// run one after another (a network's layers) hand their work to the
/// same spinning threads. With a pool per kernel, each layer's workers
/// spun on after its run while the next layer's woke, and 19 layers of
/// MobileNet v2 on two threads ran slower than on one. `None` while
/// another run holds them, or for more threads than they have: the run
/// then uses workers of its own.
pub(crate) fn shared(n: usize) -> Option<std::sync::MutexGuard<'static, Pool>> {
    static SHARED: std::sync::OnceLock<Option<std::sync::Mutex<Pool>>> = std::sync::OnceLock::new();
    // (`available_parallelism` reads cgroup files: once, not per run.)
    let pool = SHARED
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            Pool::new(cores.saturating_sub(1).max(1)).map(std::sync::Mutex::new)
        })
        .as_ref()?;
    let guard = pool.try_lock().ok()?;
    (guard.len() >= n).then_some(guard)
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // Closing the channel ends the worker's loop.
            drop(w.jobs.take());
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn every_index_runs_once_per_call_and_together() {
        let pool = Pool::new(3).unwrap();
        let barrier = Barrier::new(4);
        for _ in 0..50 {
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            pool.run_n(pool.len(), &|t| {
                hits[t].fetch_add(1, Ordering::Relaxed);
                // All four must be running at once to get past this.
                barrier.wait();
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn a_panicking_worker_is_reported_after_all_finish() {
        let pool = Pool::new(2).unwrap();
        let finished = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run_n(pool.len(), &|t| {
                if t == 2 {
                    panic!("worker {t}");
                }
                finished.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(r.is_err());
        assert_eq!(finished.load(Ordering::Relaxed), 2);
        // The pool still works afterwards.
        let n = AtomicUsize::new(0);
        pool.run_n(pool.len(), &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }

    /// Cancelled calls (workers not started when `f(0)` returned) never
    /// run, and leave the workers in step: a later call that needs all
    /// of them at once still gets them.
    #[test]
    fn late_workers_are_cancelled_and_stay_in_step() {
        let pool = Pool::new(2).unwrap();
        for _ in 0..300 {
            let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            pool.run(
                2,
                &|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                },
                true,
            );
            assert_eq!(hits[0].load(Ordering::Relaxed), 1);
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) <= 1));
        }
        let barrier = Barrier::new(3);
        let n = AtomicUsize::new(0);
        pool.run_n(2, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
            barrier.wait();
        });
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }
}
