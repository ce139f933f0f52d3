//! An allocator that watches every request: the largest single allocation of an execution,
//! the peak of live bytes, and a limit past which a request is a finding *before* it is made.
//!
//! A parser that trusts a count in a header (`n_tensors = 2^40`) asks for memory the file
//! cannot justify; the system allocator would then abort the process or the kernel would
//! kill it, and nothing would say which input did it. Here such a request calls the hook the
//! runner installed (which saves the input and stops), so it is caught like a panic.
//!
//! The binary and the tests install it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Wraps [`System`], counting.
pub struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Set while the hook runs: its own allocations are not checked.
static IN_HOOK: AtomicBool = AtomicBool::new(false);
static HOOK: OnceLock<fn(usize)> = OnceLock::new();

/// Installs what is called with the size of a request over the limit. It must not return
/// normally (it ends the process); if it does, the allocation goes ahead.
pub fn set_oversize_hook(hook: fn(usize)) {
    let _ = HOOK.set(hook);
}

/// Requests larger than `bytes` call the hook from now on.
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::SeqCst);
}

/// Starts a new execution: the largest request and the peak are counted from here.
pub fn reset() {
    LARGEST.store(0, Ordering::SeqCst);
    PEAK.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
}

/// What one execution asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// The largest single request.
    pub largest: usize,
    /// Live bytes at their peak, over those live when the execution started.
    pub peak_growth: usize,
}

/// The usage since `reset`, given the live bytes at that moment.
pub fn usage(live_at_start: usize) -> Usage {
    Usage {
        largest: LARGEST.load(Ordering::SeqCst),
        peak_growth: PEAK.load(Ordering::SeqCst).saturating_sub(live_at_start),
    }
}

/// Bytes allocated and not freed.
pub fn live() -> usize {
    LIVE.load(Ordering::SeqCst)
}

fn note(size: usize) {
    LARGEST.fetch_max(size, Ordering::Relaxed);
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    if size > LIMIT.load(Ordering::Relaxed)
        && !IN_HOOK.swap(true, Ordering::SeqCst)
        && let Some(hook) = HOOK.get()
    {
        hook(size);
        IN_HOOK.store(false, Ordering::SeqCst);
    }
}

// SAFETY: every method forwards to `System` with the same arguments; the counting around it
// uses atomics only, and the hook runs with checks off so that its own allocations cannot
// recurse into it.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
