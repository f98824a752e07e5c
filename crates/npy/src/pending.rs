//! The temporary files and backups that [`Outputs`](crate::Outputs) has
//! made and not yet put in place or removed, for a signal handler: a
//! command interrupted by SIGINT (Ctrl-C), SIGTERM, SIGHUP or SIGPIPE (an
//! output that is a pipe whose reader left) removes them
//! and then dies of that signal, so that its exit status stays honest and
//! no hidden `.convjit-*` file is left beside the user's.
//!
//! A handler may only do async-signal-safe things, so the registry is a
//! fixed array of atomic pointers to NUL-terminated paths, each made
//! before it is published. The handler takes each one with a swap (after
//! which the thread that registered it no longer frees it), unlinks it
//! and never frees it; it calls nothing but `unlink`, `signal` and
//! `raise`. A file made while every slot is taken is not registered (a
//! command makes a few).
//!
//! The directory locks a commit holds (`DirLocks` in `output.rs`) are no
//! files and need nothing here: the kernel drops them when the process dies.
//!
//! The handlers are installed only by [`remove_pending_on_signals`] (the
//! command line calls it first thing): a program that embeds the library
//! keeps its own signal handling. Unix only; elsewhere nothing happens.

#[cfg(unix)]
pub use unix::{register, remove_pending_on_signals, Pending};

#[cfg(not(unix))]
pub use other::{register, remove_pending_on_signals, Pending};

#[cfg(unix)]
mod unix {
    use std::ffi::{c_char, c_int, CString};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::ptr;
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::Once;

    /// An import writes a file per layer: a model of a thousand chains is
    /// a thousand outputs (64 slots left 422 temporary files behind).
    const SLOTS: usize = 4096;

    /// Each slot: null, or a path from `CString::into_raw`.
    static PENDING: [AtomicPtr<c_char>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];

    /// A registered path; dropping it takes the path back out of the
    /// registry. Drop it after the file is renamed or removed, so that no
    /// moment leaves the file unregistered (a handler's unlink of a name
    /// already gone does nothing).
    pub struct Pending {
        slot: usize,
        /// The `*mut c_char` stored in the slot, as an address so that
        /// `Pending` (and `Outputs`) stays `Send`.
        path: usize,
    }

    /// Registers `path` for removal on a signal; `None` when the registry
    /// is full or the path holds a NUL byte.
    pub fn register(path: &Path) -> Option<Pending> {
        let raw = CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
        for (slot, s) in PENDING.iter().enumerate() {
            let free =
                s.compare_exchange(ptr::null_mut(), raw, Ordering::AcqRel, Ordering::Relaxed);
            if free.is_ok() {
                return Some(Pending {
                    slot,
                    path: raw as usize,
                });
            }
        }
        // SAFETY: `raw` comes from `CString::into_raw` above and was
        // published nowhere.
        drop(unsafe { CString::from_raw(raw) });
        None
    }

    impl Drop for Pending {
        fn drop(&mut self) {
            let raw = self.path as *mut c_char;
            let taken = PENDING[self.slot].compare_exchange(
                raw,
                ptr::null_mut(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            if taken.is_ok() {
                // SAFETY: `raw` comes from `CString::into_raw` in
                // `register`, and the exchange removed it from the
                // registry before any handler took it (a handler takes by
                // swapping the slot to null): no one else can reach it.
                drop(unsafe { CString::from_raw(raw) });
            }
            // Else a handler took it (and never frees it: no reuse of the
            // address, so the exchange cannot match another path).
        }
    }

    /// The handler: unlink every pending path, then die of `sig`.
    extern "C" fn remove_pending(sig: c_int) {
        for s in &PENDING {
            let p = s.swap(ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: `p` is a NUL-terminated path from
                // `CString::into_raw`; the swap made this handler its
                // only owner and it is never freed. `unlink` is
                // async-signal-safe.
                unsafe {
                    libc::unlink(p);
                }
            }
        }
        // SAFETY: `signal` and `raise` are async-signal-safe; SIG_DFL is a
        // valid disposition for the four signals handled. `sig` is
        // blocked while this handler runs, so the raised one is delivered,
        // with the default action (termination), when the handler returns.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }

    /// Installs the handler for SIGINT, SIGTERM, SIGHUP and SIGPIPE, once; a
    /// signal that is ignored (`nohup`, a background job) stays ignored.
    pub fn remove_pending_on_signals() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
                // SAFETY: an all-zero `sigaction` is a valid value of the
                // C struct (no handler, no flags); the old action is only
                // read, into it.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                // SAFETY: `old` is a valid, writable `sigaction`.
                if unsafe { libc::sigaction(sig, ptr::null(), &mut old) } != 0
                    || old.sa_sigaction == libc::SIG_IGN
                {
                    continue;
                }
                // SAFETY: as for `old`.
                let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
                act.sa_sigaction = remove_pending as extern "C" fn(c_int) as libc::sighandler_t;
                // SAFETY: `act` is valid; the handler has the one-argument
                // signature that flags without SA_SIGINFO call, and does
                // only async-signal-safe things (see above).
                unsafe {
                    libc::sigemptyset(&mut act.sa_mask);
                    libc::sigaction(sig, &act, ptr::null_mut());
                }
            }
        });
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_registered_path_is_in_its_slot_while_held() {
            let path = Path::new("/nonexistent/convjit-pending-test");
            let pending = register(path).unwrap();
            let p = PENDING[pending.slot].load(Ordering::Acquire);
            assert_eq!(p as usize, pending.path);
            // SAFETY: the slot holds this test's own live path (`pending`
            // is held), made by `CString::into_raw`.
            let held = unsafe { std::ffi::CStr::from_ptr(p) };
            assert_eq!(held.to_bytes(), path.as_os_str().as_bytes());
            drop(pending);
        }
    }
}

#[cfg(not(unix))]
mod other {
    use std::path::Path;

    /// Nothing is registered outside Unix.
    pub struct Pending;

    pub fn register(_: &Path) -> Option<Pending> {
        None
    }

    pub fn remove_pending_on_signals() {}
}
