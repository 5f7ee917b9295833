//! The allocator traits for `&Arena`: `allocator_api2::alloc::Allocator` on stable, and
//! the nightly `core::alloc::Allocator` with feature `nightly`.
//!
//! Both traits have the same methods and contracts, differing only in their error type,
//! so one macro writes both implementations over the shared operations below: growing
//! (plain or zeroed) and shrinking are each one path, whichever trait calls them.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::PageSource;

use crate::arena::Arena;

/// The operations behind both traits.
impl<S: PageSource, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    #[inline(always)]
    fn allocate_block(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let ptr = self.try_alloc_layout(layout)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    #[inline]
    fn allocate_zeroed_block(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let ptr = self.try_alloc_layout(layout)?;
        // SAFETY: fresh memory of `layout.size()` bytes (chunks may be reused dirty).
        unsafe { ptr.write_bytes(0, layout.size()) };
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    /// Resizes a block to `new` (in place when it is the latest allocation or shrinks
    /// without a stricter alignment, else by moving it), zeroing the added bytes when
    /// `zero_growth` is set.
    ///
    /// # Safety
    /// - `ptr` is a block allocated by this arena with `old` and not used afterwards
    ///   unless the result is `Err` (as `Allocator::grow` and `Allocator::shrink`).
    /// - With `zero_growth`, `new.size() >= old.size()`.
    #[inline]
    unsafe fn resize_block(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero_growth: bool,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded from the caller.
        let resized = unsafe { self.try_realloc(ptr, old, new)? };
        if zero_growth {
            // SAFETY: `resized` has `new.size() >= old.size()` writable bytes, the first
            // `old.size()` of them the old contents.
            unsafe {
                resized
                    .add(old.size())
                    .write_bytes(0, new.size() - old.size())
            };
        }
        Ok(NonNull::slice_from_raw_parts(resized, new.size()))
    }
}

/// Implements an allocator trait (`$allocator`, whose error type is `$error`) for
/// `&Arena` over the operations above.
macro_rules! impl_allocator {
    ($allocator:path, $error:ident) => {
        // SAFETY: blocks are fresh memory of the arena, valid until the arena is reset,
        // rewound or dropped, none of which can happen while `&Arena` (and so any
        // collection using it) is alive; `deallocate`/`grow`/`shrink` only move the bump
        // pointer over the most recent block or copy to a fresh block.
        unsafe impl<S: PageSource, const MIN_ALIGN: usize> $allocator for &Arena<S, MIN_ALIGN> {
            #[inline(always)]
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, $error> {
                (**self).allocate_block(layout).map_err(|AllocError| $error)
            }

            #[inline]
            fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, $error> {
                (**self)
                    .allocate_zeroed_block(layout)
                    .map_err(|AllocError| $error)
            }

            #[inline]
            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                // SAFETY: forwarded from the caller.
                unsafe { (**self).dealloc(ptr, layout) }
            }

            #[inline]
            unsafe fn grow(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: forwarded from the caller.
                unsafe { (**self).resize_block(ptr, old, new, false) }.map_err(|AllocError| $error)
            }

            #[inline]
            unsafe fn grow_zeroed(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: forwarded from the caller, who promises `new.size() >=
                // old.size()` for a grow.
                unsafe { (**self).resize_block(ptr, old, new, true) }.map_err(|AllocError| $error)
            }

            #[inline]
            unsafe fn shrink(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: forwarded from the caller.
                unsafe { (**self).resize_block(ptr, old, new, false) }.map_err(|AllocError| $error)
            }
        }
    };
}

impl_allocator!(allocator_api2::alloc::Allocator, AllocError);

#[cfg(feature = "nightly")]
mod nightly {
    use core::alloc::AllocError as NightlyAllocError;

    use super::*;

    impl_allocator!(core::alloc::Allocator, NightlyAllocError);
}
