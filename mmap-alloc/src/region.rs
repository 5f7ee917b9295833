//! [`Region`]: an owned reservation of address space, released when dropped.

use core::fmt;
use core::ptr::NonNull;
use std::io;

use crate::error::{Error, Operation};
use crate::sys::{self, Contents, Decommit, HugePages, Protection};

/// An owned reservation of address space from the OS, released on drop.
///
/// Parts of it (page-aligned offsets, lengths rounded up to pages) are committed,
/// decommitted, protected and advised through its methods, which check that the part
/// lies inside the region. The region hands out raw pointers only: what is read or
/// written through them is up to the caller.
///
/// # Examples
///
/// ```
/// use pagekeep_mmap::{Decommit, Region, sys};
///
/// let page = sys::page_size();
/// // Reserve 1 MiB aligned to 1 MiB: address space only, no memory yet.
/// let region = Region::reserve_aligned(1 << 20, 1 << 20)?;
/// assert_eq!(region.as_ptr().addr().get() % (1 << 20), 0);
///
/// // Commit the first page and use it.
/// region.commit(0, page)?;
/// // SAFETY: the first page is committed read-write.
/// unsafe { region.as_ptr().write(42) };
///
/// // Give it back; the next touch reads zero.
/// // SAFETY: nothing refers to the page's contents any more.
/// unsafe { region.decommit(0, page, Decommit::Zero)? };
/// // SAFETY: still committed and readable.
/// assert_eq!(unsafe { region.as_ptr().read() }, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Region {
    /// Page-aligned start of the reservation.
    ptr: NonNull<u8>,
    /// Length in bytes, a non-zero multiple of the page size.
    len: usize,
}

// SAFETY: a `Region` owns its mapping like a `Box` owns its block; the OS calls it makes
// are thread-safe, and access to the memory goes through raw pointers whose use the
// caller is responsible for.
unsafe impl Send for Region {}
// SAFETY: as for `Send`: the methods taking `&self` are system calls on the caller's own
// range, which the kernel serialises.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `len` bytes (rounded up to pages) of address space with no access.
    ///
    /// # Errors
    /// `len` zero or overflowing; the OS refuses (`ErrorKind::OutOfMemory`).
    pub fn reserve(len: usize) -> io::Result<Region> {
        Region::reserve_aligned(len, sys::page_size())
    }

    /// Reserves `len` bytes aligned to `align` (any power of two) with no access: one
    /// `mmap` and at most two `munmap`s.
    ///
    /// # Errors
    /// As [`Region::reserve`], and `align` not a power of two.
    pub fn reserve_aligned(len: usize, align: usize) -> io::Result<Region> {
        let ptr = sys::reserve_aligned(len, align)?;
        Ok(Region {
            ptr,
            len: sys::round_to_pages(len).unwrap_or(len),
        })
    }

    /// Reserves `len` bytes aligned to `align`, committed read-write in the same call.
    ///
    /// # Errors
    /// As [`Region::reserve_aligned`].
    pub fn reserve_committed(len: usize, align: usize) -> io::Result<Region> {
        let ptr = sys::map_committed(len, align)?;
        Ok(Region {
            ptr,
            len: sys::round_to_pages(len).unwrap_or(len),
        })
    }

    /// The start of the region.
    #[inline]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The length in bytes (a whole number of pages).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region holds at least one page.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The start of the part `offset..offset + len`, after checking that it lies inside
    /// the region and starts on a page.
    fn part(&self, operation: Operation, offset: usize, len: usize) -> io::Result<NonNull<u8>> {
        let address = self.ptr.addr().get().wrapping_add(offset);
        if offset & (sys::page_size() - 1) != 0 {
            return Err(
                Error::invalid(operation, "offset is not page-aligned", address, len).into(),
            );
        }
        let end = offset.checked_add(sys::round_to_pages(len).unwrap_or(usize::MAX));
        if len == 0 || end.is_none_or(|end| end > self.len) {
            return Err(Error::invalid(operation, "range outside the region", address, len).into());
        }
        // SAFETY: `offset < self.len`, inside the reservation.
        Ok(unsafe { self.ptr.add(offset) })
    }

    /// Makes a part readable and writable; bytes never touched read as zeros.
    ///
    /// # Errors
    /// The part is outside the region or not page-aligned; the OS refuses.
    pub fn commit(&self, offset: usize, len: usize) -> io::Result<()> {
        let ptr = self.part(Operation::Commit, offset, len)?;
        // SAFETY: the part lies inside our reservation.
        unsafe { sys::commit(ptr, len) }?;
        Ok(())
    }

    /// Gives a part's physical memory back to the OS; it stays accessible. Returns what
    /// the next read of it sees. Whole pages only, as for every
    /// [`PageSource`](crate::PageSource): a length that is not a multiple of the page
    /// size is refused, never rounded, so no byte the caller kept is dropped.
    ///
    /// # Safety
    /// - Nothing relies on the part's contents (no live references into it).
    /// - No thread reads or writes the part until the call returns (on Windows the pages
    ///   are decommitted and committed again, and fault in between: see
    ///   [`sys::decommit`]).
    ///
    /// # Errors
    /// The part is outside the region, not page-aligned or not whole pages; the OS
    /// refuses.
    pub unsafe fn decommit(
        &self,
        offset: usize,
        len: usize,
        mode: Decommit,
    ) -> io::Result<Contents> {
        if len & (sys::page_size() - 1) != 0 {
            let address = self.ptr.addr().get().wrapping_add(offset);
            let why = "length is not whole pages";
            return Err(Error::invalid(Operation::Decommit, why, address, len).into());
        }
        let ptr = self.part(Operation::Decommit, offset, len)?;
        // SAFETY: the part lies inside our reservation; the caller gave up its contents.
        Ok(unsafe { sys::decommit(ptr, len, mode) }?)
    }

    /// Changes the access permissions of a part (e.g. [`Protection::None`] for a guard).
    ///
    /// # Safety
    /// - No live reference into the part relies on an access the new protection removes.
    ///
    /// # Errors
    /// The part is outside the region or not page-aligned; the OS refuses.
    pub unsafe fn protect(
        &self,
        offset: usize,
        len: usize,
        protection: Protection,
    ) -> io::Result<()> {
        let ptr = self.part(Operation::Protect, offset, len)?;
        // SAFETY: the part lies inside our reservation; the caller vouches for references.
        Ok(unsafe { sys::protect(ptr, len, protection) }?)
    }

    /// Advises the OS to prefer or avoid transparent huge pages for a part.
    ///
    /// # Errors
    /// The part is outside the region or not page-aligned; unsupported off Linux.
    pub fn advise_huge_pages(
        &self,
        offset: usize,
        len: usize,
        advice: HugePages,
    ) -> io::Result<()> {
        let ptr = self.part(Operation::AdviseHugePages, offset, len)?;
        // SAFETY: the part lies inside our reservation; advice changes no contents.
        Ok(unsafe { sys::advise_huge_pages(ptr, len, advice) }?)
    }

    /// Pre-faults a committed part so its first touch costs no page fault.
    ///
    /// # Safety
    /// - The part is committed read-write, unless the kernel has `MADV_POPULATE_WRITE`
    ///   (Linux 5.14+), which refuses other pages; older kernels and macOS write to each
    ///   page.
    ///
    /// # Errors
    /// The part is outside the region or not page-aligned; the OS refuses (`EINVAL` for
    /// pages that are not read-write).
    pub unsafe fn populate(&self, offset: usize, len: usize) -> io::Result<()> {
        let ptr = self.part(Operation::Populate, offset, len)?;
        // SAFETY: the part lies inside our reservation and is committed (caller).
        Ok(unsafe { sys::populate(ptr, len) }?)
    }

    /// Binds a part's memory to NUMA node `node`.
    ///
    /// # Errors
    /// The part is outside the region or not page-aligned; unsupported off Linux; the OS
    /// refuses (a node that does not exist).
    pub fn bind_numa(&self, offset: usize, len: usize, node: u32) -> io::Result<()> {
        let ptr = self.part(Operation::BindNuma, offset, len)?;
        // SAFETY: the part lies inside our reservation; the policy changes no contents.
        Ok(unsafe { sys::bind_numa(ptr, len, node) }?)
    }

    /// Leaves a part out of core dumps.
    ///
    /// # Errors
    /// The part is outside the region or not page-aligned; unsupported off Linux.
    pub fn exclude_from_core_dump(&self, offset: usize, len: usize) -> io::Result<()> {
        let ptr = self.part(Operation::ExcludeFromCoreDump, offset, len)?;
        // SAFETY: the part lies inside our reservation; the advice changes no contents.
        Ok(unsafe { sys::exclude_from_core_dump(ptr, len) }?)
    }

    /// How many pages of a part are resident in physical memory.
    ///
    /// # Errors
    /// The part is outside the region or not page-aligned; unsupported under miri.
    pub fn resident_pages(&self, offset: usize, len: usize) -> io::Result<usize> {
        let ptr = self.part(Operation::Residency, offset, len)?;
        // SAFETY: the part lies inside our reservation, which is mapped.
        Ok(unsafe { sys::resident_pages(ptr, len) }?)
    }

    /// Gives up ownership without releasing: returns the start and length, for
    /// [`Region::from_raw`].
    #[must_use = "the reservation leaks unless it is passed to `Region::from_raw`"]
    pub fn into_raw(self) -> (NonNull<u8>, usize) {
        let raw = (self.ptr, self.len);
        core::mem::forget(self);
        raw
    }

    /// Takes ownership of a reservation.
    ///
    /// # Safety
    /// - `ptr` and `len` come from [`Region::into_raw`] (or describe one whole mapping
    ///   made by [`sys`] that nothing else owns), and are used so once.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Region {
        Region { ptr, len }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we own the whole mapping and nothing uses it after drop. A failure
        // cannot be reported from drop; a mapping merged with a neighbour that the OS
        // cannot split at its mapping-count limit is released later.
        let _ = unsafe { sys::release_or_decommit(self.ptr, self.len) };
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}
