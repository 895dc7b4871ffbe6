//! The global allocator: jemalloc (as Redis uses), wrapped to count live
//! bytes so `used_memory` and `maxmemory` see what the process really holds.
//!
//! Each thread batches its count locally and publishes it to one shared
//! atomic every 64 KiB, so the hot path pays no contended atomic per
//! allocation; readers see the total within 64 KiB per thread.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

pub struct CountingAlloc;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
const FLUSH: isize = 64 * 1024;

thread_local! {
    static LOCAL: Cell<isize> = const { Cell::new(0) };
}

#[inline]
fn account(delta: isize) {
    // try_with: during thread teardown the slot may be gone; count globally.
    let ok = LOCAL.try_with(|c| {
        let v = c.get() + delta;
        if v.abs() >= FLUSH {
            ALLOCATED.fetch_add(v, Ordering::Relaxed);
            c.set(0);
        } else {
            c.set(v);
        }
    });
    if ok.is_err() {
        ALLOCATED.fetch_add(delta, Ordering::Relaxed);
    }
}

static INNER: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// SAFETY: every method forwards to jemalloc unchanged; we only count sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { INNER.alloc(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { INNER.alloc_zeroed(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { INNER.dealloc(ptr, layout) };
        account(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { INNER.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Publishes this thread's pending count (before a precise read).
pub fn flush_local() {
    let _ = LOCAL.try_with(|c| {
        ALLOCATED.fetch_add(c.get(), Ordering::Relaxed);
        c.set(0);
    });
}

/// Bytes currently allocated by the process (approximate, see module doc).
pub fn allocated() -> usize {
    ALLOCATED.load(Ordering::Relaxed).max(0) as usize
}

/// Resident set size from /proc (Linux), 0 where unavailable.
pub fn rss() -> usize {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}
