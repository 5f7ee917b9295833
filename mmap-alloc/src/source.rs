//! Where allocators get their pages: the [`PageSource`] trait and its two real
//! implementations, the OS ([`OsPages`]) and the heap ([`HeapPages`]).
//!
//! Allocators in this workspace are generic over a source, which keeps policy (how pages
//! are carved up) apart from provenance (where they come from): tests swap in the heap
//! or a fault injector without touching the allocator.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::alloc::{GlobalAlloc, System};

use crate::error::{Cause, Error, Operation, Result};
use crate::sys::{self, Contents, Decommit};

/// A supplier of page-aligned memory that allocators build on.
///
/// A reservation is made with [`reserve`](PageSource::reserve) (no access until committed)
/// or [`reserve_committed`](PageSource::reserve_committed) (usable at once), is committed
/// and decommitted in page-aligned parts, and is released whole.
///
/// # Safety
/// Implementors promise, for every reservation they return:
/// - The pointer is aligned to `align` (and to [`page_size`](PageSource::page_size)) and
///   starts `len` bytes, rounded up to whole pages, that overlap no other live reservation.
/// - After a successful `reserve_committed`, or `commit` of a part, that part is valid for
///   reads and writes until it is decommitted or the reservation released, and its bytes
///   never touched before read as zeros.
/// - `decommit` acts on whole pages only (see [`decommit`](PageSource::decommit)): it
///   refuses a range that does not start and end on a page boundary and changes nothing
///   then. It keeps the part valid for reads and writes if it was committed, keeps the
///   protection of a part that was not, and its returned [`Contents`] is truthful.
/// - Memory is never handed out again while its reservation is live.
pub unsafe trait PageSource {
    /// The granularity of this source, a power of two.
    fn page_size(&self) -> usize;

    /// Reserves `len` bytes aligned to `align` (a power of two; below a page means a page).
    /// The memory must be [committed](PageSource::commit) before it is touched.
    ///
    /// # Errors
    /// Invalid sizes or alignments; the source is exhausted.
    fn reserve(&self, len: usize, align: usize) -> Result<NonNull<u8>>;

    /// Reserves `len` bytes aligned to `align`, committed and zeroed.
    ///
    /// # Errors
    /// As [`reserve`](PageSource::reserve), and a failed commit (the reservation is then
    /// released again).
    fn reserve_committed(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        let ptr = self.reserve(len, align)?;
        // SAFETY: the range was just reserved by this source and is ours.
        match unsafe { self.commit(ptr, len) } {
            Ok(()) => Ok(ptr),
            Err(error) => {
                // SAFETY: the whole reservation is released exactly once and unused.
                let _ = unsafe { self.release(ptr, len, align) };
                Err(error)
            }
        }
    }

    /// Makes `ptr..ptr + len` usable.
    ///
    /// # Safety
    /// - `ptr` is page-aligned and `ptr..ptr + len` lies inside one live reservation of
    ///   this source owned by the caller.
    ///
    /// # Errors
    /// Invalid arguments; the source is exhausted.
    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> Result<()>;

    /// Gives back the physical memory of `ptr..ptr + len`; returns what the next read of
    /// every byte of it sees ([`Contents::Zeroed`]: zeros).
    ///
    /// The range is whole pages: `ptr` page-aligned and `len` a non-zero multiple of
    /// [`page_size`](PageSource::page_size). A partial page is refused, not rounded: the
    /// OS gives memory back a page at a time, so decommitting part of a page would also
    /// drop bytes the caller did not give up. Every source makes these checks before
    /// anything changes, so the same call succeeds or fails the same way on each.
    ///
    /// # Safety
    /// - `ptr..ptr + len` lies inside one live reservation of this source owned by the
    ///   caller.
    /// - Nothing relies on the contents of the range.
    /// - No thread reads or writes the range until the call returns (on Windows a
    ///   zeroing decommit makes the pages fault for a moment: see
    ///   [`sys::decommit`]).
    ///
    /// # Errors
    /// [`Cause::InvalidInput`] for an unaligned `ptr`, a `len` that is zero or not a
    /// multiple of the page size, or a range that wraps; the OS refuses.
    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents>;

    /// Releases a whole reservation.
    ///
    /// # Safety
    /// - `ptr`, `len` and `align` are those of one live reservation of this source.
    /// - Nothing accesses the reservation afterwards.
    ///
    /// # Errors
    /// The OS refuses (the reservation then stays mapped and is leaked).
    unsafe fn release(&self, ptr: NonNull<u8>, len: usize, align: usize) -> Result<()>;

    /// The most bytes this source can ever have reserved at once, all reservations
    /// together (whole pages), if it has such a bound: a reservation longer than this
    /// can never succeed, whatever is released first. `None` (the default) for a source
    /// without a fixed bound, such as the OS.
    ///
    /// A bound says nothing about what is free now: other reservations, and the padding
    /// an alignment costs, can make a shorter reservation fail too.
    fn max_reserved_bytes(&self) -> Option<usize> {
        None
    }
}

// SAFETY: forwards every call to `S`, which keeps its promises.
unsafe impl<S: PageSource + ?Sized> PageSource for &S {
    #[inline]
    fn page_size(&self) -> usize {
        (**self).page_size()
    }
    #[inline]
    fn reserve(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        (**self).reserve(len, align)
    }
    #[inline]
    fn reserve_committed(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        (**self).reserve_committed(len, align)
    }
    #[inline]
    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { (**self).commit(ptr, len) }
    }
    #[inline]
    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
        // SAFETY: forwarded from the caller.
        unsafe { (**self).decommit(ptr, len, mode) }
    }
    #[inline]
    unsafe fn release(&self, ptr: NonNull<u8>, len: usize, align: usize) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { (**self).release(ptr, len, align) }
    }
    #[inline]
    fn max_reserved_bytes(&self) -> Option<usize> {
        (**self).max_reserved_bytes()
    }
}

/// Pages straight from the OS through [`crate::sys`]: reservations take no memory until
/// committed, and decommitted pages go back to the OS.
///
/// # Examples
///
/// ```
/// use pagekeep_mmap::{OsPages, PageSource};
///
/// let pages = OsPages;
/// let ptr = pages.reserve_committed(1 << 16, 1 << 16)?;
/// assert_eq!(ptr.addr().get() % (1 << 16), 0);
/// // SAFETY: just committed, 64 KiB long.
/// unsafe { ptr.write(7) };
/// // SAFETY: the reservation made above, released once.
/// unsafe { pages.release(ptr, 1 << 16, 1 << 16)? };
/// # Ok::<(), pagekeep_mmap::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OsPages;

// SAFETY: `sys` returns fresh, aligned, zeroed anonymous mappings that nobody else owns;
// commit/decommit/release act on the caller's range only.
unsafe impl PageSource for OsPages {
    #[inline]
    fn page_size(&self) -> usize {
        sys::page_size()
    }

    fn reserve(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        sys::reserve_aligned(len, align)
    }

    fn reserve_committed(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        sys::map_committed(len, align)
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> Result<()> {
        // SAFETY: forwarded from the caller: the range is inside a reservation it owns.
        unsafe { sys::commit(ptr, len) }
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
        whole_pages(ptr, len)?;
        // SAFETY: forwarded from the caller.
        unsafe { sys::decommit(ptr, len, mode) }
    }

    unsafe fn release(&self, ptr: NonNull<u8>, len: usize, _align: usize) -> Result<()> {
        // SAFETY: forwarded from the caller: the whole reservation, unused afterwards.
        unsafe { sys::release(ptr, len) }
    }
}

/// Checks the range of a [`PageSource::decommit`]: page-aligned, non-zero, whole pages,
/// not wrapping.
fn whole_pages(ptr: NonNull<u8>, len: usize) -> Result<()> {
    if len & (sys::page_size() - 1) != 0 {
        return Err(Error::invalid(
            Operation::Decommit,
            "length is not a whole number of pages",
            ptr.addr().get(),
            len,
        ));
    }
    sys::page_range(Operation::Decommit, ptr, len).map(drop)
}

/// Page-aligned blocks from the system heap ([`System`]): always accessible, zeroed when
/// reserved. Commit does nothing; [`Decommit::Zero`] zeroes and [`Decommit::Lazy`] leaves
/// the bytes as they are. Commit and decommit check their ranges as [`OsPages`] does.
///
/// This is the source under miri (see [`DefaultPages`]) and a portable one for tests; it
/// never gives memory back to the OS before release. Its memory is real at once (a
/// reservation is a zeroed heap block), so a reservation is at most
/// [`HeapPages::LARGEST_RESERVATION`] bytes: larger ones fail with `ENOMEM`, as the OS
/// refuses a reservation beyond its address space, instead of asking the heap for it.
///
/// # Examples
///
/// ```
/// use pagekeep_mmap::{Cause, HeapPages, PageSource};
///
/// let error = HeapPages.reserve(1 << 40, 4096).unwrap_err();
/// assert_eq!(error.cause(), Cause::Os(libc::ENOMEM));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapPages;

impl HeapPages {
    /// The largest reservation, in bytes (4 GiB), that [`HeapPages`] makes; the OS
    /// stand-in under miri has the same limit.
    pub const LARGEST_RESERVATION: usize = 1 << 32;
}

/// The layout of a [`HeapPages`] reservation: the length rounded up to whole pages,
/// aligned to at least a page (that of the OS, so code tuned for one works with the
/// other).
fn heap_layout(operation: Operation, len: usize, align: usize) -> Result<Layout> {
    if len == 0 {
        return Err(Error::invalid(operation, "zero length", 0, len));
    }
    if !align.is_power_of_two() {
        return Err(Error::invalid(
            operation,
            "alignment is not a power of two",
            0,
            len,
        ));
    }
    let len = sys::round_to_pages(len).ok_or(Error::invalid(
        operation,
        "length overflows when rounded up to whole pages",
        0,
        len,
    ))?;
    if len > HeapPages::LARGEST_RESERVATION {
        return Err(Error::new(operation, Cause::Os(libc::ENOMEM), 0, len));
    }
    Layout::from_size_align(len, align.max(sys::page_size()))
        .map_err(|_| Error::invalid(operation, "length plus alignment overflows", 0, len))
}

// SAFETY: each reservation is its own zeroed heap block of the rounded length and the
// requested alignment, valid until it is deallocated by `release`.
unsafe impl PageSource for HeapPages {
    #[inline]
    fn page_size(&self) -> usize {
        sys::page_size()
    }

    fn reserve(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        let layout = heap_layout(Operation::Reserve, len, align)?;
        // SAFETY: the layout has a non-zero size.
        NonNull::new(unsafe { System.alloc_zeroed(layout) }).ok_or(Error::new(
            Operation::Reserve,
            Cause::Os(libc::ENOMEM),
            0,
            layout.size(),
        ))
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> Result<()> {
        sys::page_range(Operation::Commit, ptr, len).map(drop)
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
        whole_pages(ptr, len)?;
        match mode {
            Decommit::Zero => {
                // SAFETY: the caller owns the range inside a live block and no longer needs
                // its contents.
                unsafe { ptr.write_bytes(0, len) };
                Ok(Contents::Zeroed)
            }
            Decommit::Lazy => Ok(Contents::Unspecified),
        }
    }

    unsafe fn release(&self, ptr: NonNull<u8>, len: usize, align: usize) -> Result<()> {
        let layout = heap_layout(Operation::Release, len, align)?;
        // SAFETY: the caller passes the length and alignment of the reservation, which
        // `reserve` allocated with this very layout.
        unsafe { System.dealloc(ptr.as_ptr(), layout) };
        Ok(())
    }
}

/// The source allocators use by default: [`OsPages`], or [`HeapPages`] under miri, which
/// cannot interpret page protection.
#[cfg(not(miri))]
pub type DefaultPages = OsPages;
/// The source allocators use by default: [`OsPages`], or [`HeapPages`] under miri, which
/// cannot interpret page protection.
#[cfg(miri)]
pub type DefaultPages = HeapPages;
