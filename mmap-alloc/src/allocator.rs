//! [`MmapAlloc`]: every block its own mapping.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};

use crate::error::{Cause, Error, Operation, Result};
use crate::sys::{self, Placement};

/// Blocks from this size on are mapped as whole, aligned 2 MiB frames.
const HUGE_FRAME: usize = 2 << 20;

/// An allocator that gives every block its own anonymous mapping, for large blocks.
///
/// - Sizes round up to whole pages, and blocks of 2 MiB or more to whole 2 MiB huge-page
///   frames placed on 2 MiB boundaries (the rounded length is the usable size that
///   [`Allocator`] reports). Aligned frames can be backed by transparent huge pages, and
///   `mremap` moves them a page table at a time instead of an entry at a time (about
///   eight times faster for a 64 MiB block here). Untouched frame tails take no memory.
/// - Any power-of-two alignment, above a page too.
/// - `alloc_zeroed` costs the same as `alloc`: fresh mappings read as zeros, and no page
///   is touched.
/// - Growing on Linux is `mremap`: in place when the address space after the block is
///   free, else by moving page-table entries. Nothing is copied either way. Shrinking
///   unmaps the tail in place. Elsewhere (and under miri) growth copies.
/// - Failures are null from [`GlobalAlloc`] and [`AllocError`] from [`Allocator`]; the
///   allocator never panics and stays usable after the OS refuses.
/// - Zero-sized requests: [`GlobalAlloc::alloc`] returns null (its contract forbids them);
///   [`Allocator::allocate`] returns a dangling, aligned pointer, as its contract asks.
///
/// # Examples
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use pagekeep_mmap::MmapAlloc;
///
/// let layout = Layout::from_size_align(1 << 20, 4096).unwrap();
/// // SAFETY: the layout has a non-zero size.
/// let block = unsafe { MmapAlloc.alloc_zeroed(layout) };
/// assert!(!block.is_null());
/// // SAFETY: the block is 1 MiB of zeroed, writable memory.
/// unsafe { block.write(1) };
/// // SAFETY: `block` came from this allocator with `layout`; 4 MiB is non-zero.
/// let bigger = unsafe { MmapAlloc.realloc(block, layout, 4 << 20) };
/// assert!(!bigger.is_null());
/// // SAFETY: the contents moved with the pages.
/// assert_eq!(unsafe { bigger.read() }, 1);
/// // SAFETY: `bigger` is live with this layout.
/// unsafe { MmapAlloc.dealloc(bigger, Layout::from_size_align(4 << 20, 4096).unwrap()) };
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapAlloc;

impl MmapAlloc {
    /// The allocator (it has no state).
    pub const fn new() -> Self {
        MmapAlloc
    }

    /// The usable size of a block of `size` bytes: the length of its mapping, `size`
    /// rounded up to whole pages (to whole 2 MiB frames from 2 MiB on).
    pub fn usable_size(size: usize) -> Option<usize> {
        let pages = sys::round_to_pages(size)?;
        if pages < HUGE_FRAME {
            return Some(pages);
        }
        pages
            .checked_add(HUGE_FRAME - 1)
            .map(|padded| padded & !(HUGE_FRAME - 1))
    }

    /// The alignment a mapping of `len` bytes gets: huge-frame alignment from 2 MiB on.
    fn mapping_align(len: usize, align: usize) -> usize {
        if len >= HUGE_FRAME {
            align.max(HUGE_FRAME)
        } else {
            align
        }
    }

    /// Maps a block for a non-zero-sized `layout`.
    fn map(layout: Layout) -> Result<NonNull<u8>> {
        let len = Self::usable_size(layout.size()).ok_or(Error::invalid(
            Operation::Reserve,
            "size overflows when rounded up to whole pages",
            0,
            layout.size(),
        ))?;
        sys::map_committed(len, Self::mapping_align(len, layout.align()))
    }

    /// Unmaps a block.
    ///
    /// # Safety
    /// - `ptr` is a live block of this allocator allocated with `layout`'s size.
    unsafe fn unmap(ptr: NonNull<u8>, layout: Layout) -> Result<()> {
        let len = Self::usable_size(layout.size()).unwrap_or(layout.size());
        // SAFETY: the block is one whole mapping of `len` bytes, given up for good (its
        // memory goes back even when the mapping cannot be released).
        unsafe { sys::release_or_decommit(ptr, len) }
    }

    /// Resizes a block to `new_size` (non-zero) at an address aligned to `align`, which
    /// `ptr` already meets (`old.align()` for `realloc`, the new layout's for `grow` and
    /// `shrink`). Returns the block's new address; on error the old block is unchanged.
    ///
    /// # Safety
    /// - `ptr` is a live block of this allocator allocated with `old`, aligned to `align`.
    unsafe fn resize(
        ptr: NonNull<u8>,
        old: Layout,
        new_size: usize,
        align: usize,
    ) -> Result<NonNull<u8>> {
        let address = ptr.addr().get();
        let old_len = Self::usable_size(old.size()).unwrap_or(old.size());
        let new_len = Self::usable_size(new_size).ok_or(Error::invalid(
            Operation::Remap,
            "size overflows when rounded up to whole pages",
            address,
            new_size,
        ))?;
        if new_len == old_len {
            // In place, possibly grown: return a pointer that reaches the whole mapping.
            return Ok(sys::whole_mapping(ptr));
        }
        if new_len < old_len {
            // SAFETY: the tail `new_len..old_len` belongs to the block and the caller
            // gave up the bytes beyond `new_size` for good. When the OS refuses (the tail
            // is the middle of a mapping merged with a neighbour, at the mapping-count
            // limit) its memory goes back all the same and the range is released later:
            // the shrink succeeds, as glibc's does.
            let _ = unsafe { sys::release_or_decommit(ptr.add(new_len), old_len - new_len) };
            return Ok(ptr);
        }
        // SAFETY: forwarded from the caller.
        match unsafe { Self::grow_by_remap(ptr, old_len, new_len, align) } {
            Err(error) if matches!(error.cause(), Cause::Unsupported(_)) => {
                // SAFETY: forwarded from the caller.
                unsafe { Self::grow_by_copy(ptr, old, new_size, align) }
            }
            result => result,
        }
    }

    /// Grows a block by moving page-table entries, never copying; the result is aligned
    /// to `align`, which `ptr` already meets.
    ///
    /// # Safety
    /// - `ptr` is a live block of this allocator of `old_len` bytes (whole pages).
    unsafe fn grow_by_remap(
        ptr: NonNull<u8>,
        old_len: usize,
        new_len: usize,
        align: usize,
    ) -> Result<NonNull<u8>> {
        if align <= sys::page_size() {
            // The kernel tries in place first and moves only when it must.
            // SAFETY: the block is one whole mapping that we own.
            return unsafe { sys::remap(ptr, old_len, new_len, Placement::MayMove) };
        }
        // A moved mapping keeps only page alignment: grow in place, or move the pages
        // into a reservation that already has the alignment.
        // SAFETY: the block is one whole mapping that we own.
        match unsafe { sys::remap(ptr, old_len, new_len, Placement::InPlace) } {
            Err(error) if sys::is_no_room_in_place(&error) => {}
            result => return result,
        }
        let target = sys::reserve_aligned(new_len, Self::mapping_align(new_len, align))?;
        // SAFETY: `target` is a fresh reservation of `new_len` bytes that we give up.
        let moved = unsafe { sys::remap(ptr, old_len, new_len, Placement::At(target)) };
        if moved.is_err() {
            // SAFETY: the reservation is still ours and unused, given up for good.
            let _ = unsafe { sys::release_or_decommit(target, new_len) };
        }
        moved
    }

    /// Grows a block by mapping a new one aligned to `align` and copying (where `mremap`
    /// does not exist).
    ///
    /// # Safety
    /// - `ptr` is a live block of this allocator allocated with `old`.
    unsafe fn grow_by_copy(
        ptr: NonNull<u8>,
        old: Layout,
        new_size: usize,
        align: usize,
    ) -> Result<NonNull<u8>> {
        let new_ptr = Self::map(Layout::from_size_align(new_size, align).map_err(|_| {
            Error::invalid(
                Operation::Reserve,
                "size too large for its alignment",
                0,
                new_size,
            )
        })?)?;
        // Every byte of the old mapping may hold data (an `Allocator` caller was handed
        // the whole usable length), as `mremap` would keep it.
        let old_len = Self::usable_size(old.size()).unwrap_or(old.size());
        // SAFETY: both blocks are live, distinct mappings, at least `old_len` long (the
        // new one is longer).
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), new_ptr.as_ptr(), old_len) };
        // SAFETY: the old block is live and no longer used.
        let _ = unsafe { Self::unmap(ptr, old) };
        Ok(new_ptr)
    }

    /// Moves a block to a new layout whose alignment it does not meet: allocate, copy,
    /// free.
    ///
    /// # Safety
    /// - `ptr` is a live block of this allocator allocated with `old`.
    unsafe fn relocate(ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<u8>> {
        let new_ptr = Self::map(new)?;
        // The usable lengths: an `Allocator` caller was handed the whole old mapping.
        let old_len = Self::usable_size(old.size()).unwrap_or(old.size());
        let new_len = Self::usable_size(new.size()).unwrap_or(new.size());
        // SAFETY: both blocks are live, distinct mappings, of at least these lengths.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), new_ptr.as_ptr(), old_len.min(new_len)) };
        // SAFETY: the old block is live and no longer used.
        let _ = unsafe { Self::unmap(ptr, old) };
        Ok(new_ptr)
    }

    /// The block as the slice [`Allocator`] returns: its usable (page-rounded) length.
    fn block(ptr: NonNull<u8>, size: usize) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(ptr, Self::usable_size(size).unwrap_or(size))
    }

    /// A dangling, aligned pointer for zero-sized blocks.
    fn dangling(layout: Layout) -> NonNull<[u8]> {
        // SAFETY: an alignment is never zero.
        let ptr = unsafe { NonNull::new_unchecked(ptr::without_provenance_mut(layout.align())) };
        NonNull::slice_from_raw_parts(ptr, 0)
    }
}

// SAFETY: blocks are distinct mappings of at least the requested size and alignment,
// valid until deallocated; realloc keeps contents (page tables move with them) and
// returns null with the old block intact on failure.
unsafe impl GlobalAlloc for MmapAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == 0 {
            return ptr::null_mut();
        }
        Self::map(layout).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: fresh mappings read as zeros; nothing to clear.
        unsafe { self.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let (Some(ptr), true) = (NonNull::new(ptr), layout.size() != 0) {
            // SAFETY: the caller passes a live block with its layout. Unmapping a whole
            // mapping does not fail; there is no way to report it if it did.
            let _ = unsafe { Self::unmap(ptr, layout) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(block) = NonNull::new(ptr) else {
            return ptr::null_mut();
        };
        if new_size == 0 || layout.size() == 0 {
            return ptr::null_mut();
        }
        // SAFETY: the caller passes a live block with its layout, aligned to it.
        unsafe { Self::resize(block, layout, new_size, layout.align()) }
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }
}

// SAFETY: as for `GlobalAlloc`; zero-sized blocks are dangling and never unmapped, and
// blocks moved to a stricter alignment are copied before the old one is freed.
unsafe impl Allocator for MmapAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(Self::dangling(layout));
        }
        Self::map(layout)
            .map(|ptr| Self::block(ptr, layout.size()))
            .map_err(|_| AllocError)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller passes a live block with its layout.
            let _ = unsafe { Self::unmap(ptr, layout) };
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 {
            return self.allocate(new);
        }
        let moved = if ptr.addr().get().is_multiple_of(new.align()) {
            // The block meets the new alignment and must keep meeting it wherever it moves,
            // even where the old alignment was weaker.
            // SAFETY: the caller passes a live block allocated with `old`; it is aligned
            // to `new.align()`, as just checked.
            unsafe { Self::resize(ptr, old, new.size(), new.align()) }
        } else {
            // SAFETY: as above.
            unsafe { Self::relocate(ptr, old, new) }
        };
        moved
            .map(|ptr| Self::block(ptr, new.size()))
            .map_err(|_| AllocError)
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded from the caller.
        let block = unsafe { self.grow(ptr, old, new) }?;
        // Pages added by growth read as zeros; only the old last page may hold bytes
        // beyond `old.size()` (written before an earlier shrink).
        let old_len = Self::usable_size(old.size()).unwrap_or(old.size());
        let dirty = old_len.min(new.size()).saturating_sub(old.size());
        // SAFETY: `old.size() + dirty <= new.size()`, inside the grown block.
        unsafe { block.cast::<u8>().add(old.size()).write_bytes(0, dirty) };
        Ok(block)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if new.size() == 0 {
            // SAFETY: forwarded from the caller.
            unsafe { self.deallocate(ptr, old) };
            return Ok(Self::dangling(new));
        }
        let moved = if ptr.addr().get().is_multiple_of(new.align()) {
            // The block meets the new alignment and must keep meeting it wherever it moves,
            // even where the old alignment was weaker.
            // SAFETY: the caller passes a live block allocated with `old`; it is aligned
            // to `new.align()`, as just checked.
            unsafe { Self::resize(ptr, old, new.size(), new.align()) }
        } else {
            // SAFETY: as above.
            unsafe { Self::relocate(ptr, old, new) }
        };
        moved
            .map(|ptr| Self::block(ptr, new.size()))
            .map_err(|_| AllocError)
    }
}
