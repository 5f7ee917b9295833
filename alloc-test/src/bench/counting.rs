//! [`CountingHeap`]: a [`GlobalAlloc`] wrapper that counts the calls made into the heap
//! it wraps, for figures such as "calls into the fallback heap per request".
//!
//! The count is striped: each thread adds to one of [`STRIPES`] cache-line-sized
//! counters, picked once per thread, so counting does not make threads that allocate at
//! the same time fight over one cache line. Reading the count sums the stripes; it is
//! exact once the threads counted have stopped allocating, and otherwise a snapshot that
//! may miss calls in flight.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many counters the count is spread over.
pub const STRIPES: usize = 16;

/// One counter alone on its cache line (128 bytes: two lines, as adjacent-line
/// prefetchers pull pairs).
#[derive(Debug)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// The stripe index the next thread gets.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe, `usize::MAX` until first used. A `const` initialiser and no
    /// destructor: reading it never allocates, so the allocator can use it.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's stripe index.
#[inline]
fn stripe_index() -> usize {
    // During thread teardown the slot may be gone: count on stripe 0 then.
    STRIPE
        .try_with(|stripe| {
            let mut index = stripe.get();
            if index == usize::MAX {
                index = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
                stripe.set(index);
            }
            index
        })
        .unwrap_or(0)
}

/// A [`GlobalAlloc`] that forwards to `H` and counts the calls that may take memory
/// from it: `alloc`, `alloc_zeroed` and `realloc` (frees are not counted).
///
/// # Examples
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use pagekeep_alloc_test::bench::counting::CountingHeap;
///
/// static HEAP: CountingHeap<std::alloc::System> = CountingHeap::new(std::alloc::System);
/// let before = HEAP.calls();
/// let layout = Layout::new::<u64>();
/// // SAFETY: a non-zero layout, freed at once with the same layout.
/// unsafe { HEAP.dealloc(HEAP.alloc(layout), layout) };
/// assert_eq!(HEAP.calls() - before, 1);
/// ```
#[derive(Debug)]
pub struct CountingHeap<H> {
    heap: H,
    calls: [Stripe; STRIPES],
}

impl<H> CountingHeap<H> {
    /// Counts the calls into `heap`, starting from zero.
    pub const fn new(heap: H) -> Self {
        CountingHeap {
            heap,
            calls: [const { Stripe(AtomicU64::new(0)) }; STRIPES],
        }
    }

    /// The heap counted.
    pub const fn heap(&self) -> &H {
        &self.heap
    }

    /// Calls of `alloc`, `alloc_zeroed` and `realloc` so far, from every thread.
    pub fn calls(&self) -> u64 {
        self.calls
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    #[inline]
    fn count(&self) {
        self.calls[stripe_index()].0.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `H`, which keeps its own promises; the
// counting touches only atomics and a thread-local `Cell` that never allocates, and
// nothing here unwinds.
unsafe impl<H: GlobalAlloc> GlobalAlloc for CountingHeap<H> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: the caller's promises (a non-zero `layout`) are forwarded unchanged.
        unsafe { self.heap.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: as in `alloc`.
        unsafe { self.heap.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller promises `ptr` is a live block of `layout` from this
        // allocator, that is, from `H`.
        unsafe { self.heap.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count();
        // SAFETY: the caller's promises (`ptr` a live block of `layout` from `H`, a valid
        // `new_size`) are forwarded unchanged.
        unsafe { self.heap.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocations_from_several_threads() {
        static HEAP: CountingHeap<std::alloc::System> = CountingHeap::new(std::alloc::System);
        let layout = Layout::from_size_align(32, 8).expect("a layout");
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        // SAFETY: non-zero layouts; the block is grown once and freed
                        // with its final layout.
                        unsafe {
                            let block = HEAP.alloc(layout);
                            assert!(!block.is_null());
                            let grown = HEAP.realloc(block, layout, 64);
                            assert!(!grown.is_null());
                            HEAP.dealloc(grown, Layout::from_size_align_unchecked(64, 8));
                        }
                    }
                });
            }
        });
        assert_eq!(HEAP.calls(), 4 * 100 * 2);
    }
}
