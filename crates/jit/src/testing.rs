//! Test-only machinery, compiled with the `testing` feature alone (this
//! crate's own tests enable it through a dev-dependency on itself; builds
//! without it have none of this, so the normal path pays nothing):
//!
//! - [`Guarded`]: a buffer between two inaccessible pages, its data ending
//!   exactly at the trailing one. With the feature, every buffer a kernel
//!   owns (packed weights, whole intermediate tensors, band buffers) is
//!   one, and the tests put the caller's input and output in them too, so
//!   a stray access by generated code faults in the test.
//! - [`Kernel::inject_panic`]: a panic injected into one share of a run,
//!   to test that a failing thread cannot hang the others.

use crate::Kernel;
use std::sync::atomic::{AtomicUsize, Ordering};

/// f32 storage with an inaccessible page on each side. Built with
/// `region` (a small crate made for exactly this: portable `mmap` +
/// `mprotect`, allocations unmapped on drop); `memmap2` cannot make a page
/// inaccessible.
pub struct Guarded {
    /// Owns the mapping (both guards and the data pages); unmapped on drop.
    _alloc: region::Allocation,
    data: *mut f32,
    len: usize,
}

// SAFETY: `Guarded` owns its mapping exclusively, like a `Vec<f32>`: the
// pointer is only dereferenced through `&self` / `&mut self`.
unsafe impl Send for Guarded {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for Guarded {}

impl Guarded {
    /// `len` zeros (fresh anonymous pages) ending exactly at the trailing
    /// guard page when `at_end`, else starting exactly after the leading
    /// one (data ending at a page boundary catches the smallest overflow;
    /// data starting at one, the smallest underflow).
    pub fn zeroed(len: usize, at_end: bool) -> Guarded {
        let page = region::page::size();
        let bytes = len * 4;
        let data_pages = bytes.div_ceil(page).max(1);
        let mut alloc = region::alloc((data_pages + 2) * page, region::Protection::READ_WRITE)
            .expect("mapping a guarded buffer");
        let base = alloc.as_mut_ptr::<u8>();
        let tail = base.wrapping_add((data_pages + 1) * page);
        // SAFETY: both ranges are whole pages inside the mapping just made,
        // which nothing else references yet.
        unsafe {
            region::protect(base, page, region::Protection::NONE).expect("leading guard page");
            region::protect(tail, page, region::Protection::NONE).expect("trailing guard page");
        }
        let data = if at_end {
            tail.wrapping_sub(bytes)
        } else {
            base.wrapping_add(page)
        };
        Guarded {
            _alloc: alloc,
            data: data.cast(),
            len,
        }
    }

    /// A copy of `v`, ending at the trailing guard page.
    pub fn from_slice(v: &[f32], at_end: bool) -> Guarded {
        let mut g = Guarded::zeroed(v.len(), at_end);
        g.copy_from_slice(v);
        g
    }
}

impl std::ops::Deref for Guarded {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `data` points at `len` initialised (zero-filled, then
        // written only through `&mut self`) f32s inside the accessible
        // pages of the mapping, aligned to 4 bytes, alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }
}

/// A kernel's test hooks.
pub(crate) struct Hooks {
    /// The share that panics (`usize::MAX`: none).
    panic_thread: AtomicUsize,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks {
            panic_thread: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Hooks {
    /// Called before the steps of share `s` of every group, by whichever
    /// thread runs it (threads claim shares: `exec.rs`).
    pub(crate) fn before_group(&self, s: usize) {
        if self.panic_thread.load(Ordering::Relaxed) == s {
            panic!("injected failure in share {s}");
        }
    }
}

impl Kernel {
    /// Makes share `t` of every group of every later run panic before its
    /// first steps, on whichever thread runs it (`None`: no more
    /// failures). Tests only (feature `testing`).
    #[doc(hidden)]
    pub fn inject_panic(&self, thread: Option<usize>) {
        self.testing
            .panic_thread
            .store(thread.unwrap_or(usize::MAX), Ordering::Relaxed);
    }
}
