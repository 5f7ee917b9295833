//! The allocator traits for `&Arena`: `allocator_api2::alloc::Allocator` on stable, and
//! the nightly `core::alloc::Allocator` with feature `nightly`.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};
use mmap_alloc::PageSource;

use crate::arena::Arena;

// SAFETY: blocks are fresh memory of the arena, valid until the arena is reset, rewound
// or dropped, none of which can happen while `&Arena` (and so any collection using it)
// is alive; `deallocate`/`grow`/`shrink` only move the bump pointer over the most
// recent block or copy to a fresh block.
unsafe impl<S: PageSource, const MIN_ALIGN: usize> Allocator for &Arena<S, MIN_ALIGN> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        (**self).allocate_impl(layout)
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        (**self).allocate_zeroed_impl(layout)
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
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded from the caller.
        unsafe { (**self).grow_impl(ptr, old, new, false) }
    }

    #[inline]
    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded from the caller.
        unsafe { (**self).grow_impl(ptr, old, new, true) }
    }

    #[inline]
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded from the caller.
        let shrunk = unsafe { (**self).try_realloc(ptr, old, new)? };
        Ok(NonNull::slice_from_raw_parts(shrunk, new.size()))
    }
}

#[cfg(feature = "nightly")]
// SAFETY: as for the `allocator_api2` implementation above, which this forwards to.
unsafe impl<S: PageSource, const MIN_ALIGN: usize> core::alloc::Allocator for &Arena<S, MIN_ALIGN> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, core::alloc::AllocError> {
        (**self)
            .allocate_impl(layout)
            .map_err(|AllocError| core::alloc::AllocError)
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, core::alloc::AllocError> {
        (**self)
            .allocate_zeroed_impl(layout)
            .map_err(|AllocError| core::alloc::AllocError)
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
    ) -> Result<NonNull<[u8]>, core::alloc::AllocError> {
        // SAFETY: forwarded from the caller.
        unsafe { (**self).grow_impl(ptr, old, new, false) }
            .map_err(|AllocError| core::alloc::AllocError)
    }

    #[inline]
    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, core::alloc::AllocError> {
        // SAFETY: forwarded from the caller.
        unsafe { (**self).grow_impl(ptr, old, new, true) }
            .map_err(|AllocError| core::alloc::AllocError)
    }

    #[inline]
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, core::alloc::AllocError> {
        // SAFETY: forwarded from the caller.
        let shrunk = unsafe { (**self).try_realloc(ptr, old, new) }
            .map_err(|AllocError| core::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(shrunk, new.size()))
    }
}
