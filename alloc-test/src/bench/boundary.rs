//! The call boundary every allocator is measured behind, so that no subject is compiled
//! into the timed loop while its peers pay a call.
//!
//! A `#[global_allocator]` is reached through `__rust_alloc` and friends: one call that
//! the program cannot inline into its own code. [`Shim`] reproduces that boundary for an
//! explicit instance: its `GlobalAlloc` methods are `#[inline(never)]`, so a benchmark
//! calls every allocator (ours included) through one real call, whatever the allocator
//! inlines inside it. Without it, an allocator whose entry points are `#[inline(always)]`
//! (as `SlabHeap`'s are) gets its thread-local address hoisted and its size class
//! constant-folded into the loop, and the comparison measures the inliner.

use core::alloc::{GlobalAlloc, Layout};

/// `allocator` behind non-inlined `GlobalAlloc` entry points.
///
/// # Examples
///
/// ```
/// use pagekeep_alloc_test::bench::boundary::Shim;
/// use core::alloc::{GlobalAlloc, Layout};
///
/// let shim = Shim(std::alloc::System);
/// let layout = Layout::new::<u64>();
/// // SAFETY: a non-zero layout; the block is freed once with it.
/// unsafe {
///     let block = shim.alloc(layout);
///     assert!(!block.is_null());
///     shim.dealloc(block, layout);
/// }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Shim<A>(pub A);

// SAFETY: every method forwards to the wrapped allocator with the caller's arguments, so
// the wrapped allocator's guarantees are this one's.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Shim<A> {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's obligations are `GlobalAlloc::alloc`'s, passed on.
        unsafe { self.0.alloc(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's obligations are `GlobalAlloc::dealloc`'s, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's obligations are `GlobalAlloc::alloc_zeroed`'s, passed on.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's obligations are `GlobalAlloc::realloc`'s, passed on.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}
