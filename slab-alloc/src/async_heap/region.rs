//! [`RegionPages`]: a [`PageSource`] over memory the caller supplies, so that a heap
//! lives in a fixed budget.

use core::fmt;
use core::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use pagekeep_mmap::{Cause, Contents, Decommit, Error, Operation, PageSource, Region, Result};

/// A page source that carves reservations out of one region given at construction (a
/// `&'static mut [u8]`, or an mmap-alloc [`Region`]) and never asks the OS for more:
/// when the region is used up, reservations fail with `ENOMEM`. Clones share the region.
/// A region serves one [`AsyncHeap`](super::AsyncHeap): two heaps over clones of it are
/// sound, but one heap's frees do not wake the other's requests that wait for region,
/// which can then wait for ever (see "When the region runs short" in the [module
/// docs](super)). Its length is its [`max_reserved_bytes`](PageSource::max_reserved_bytes).
///
/// Reservations are first-fit over a sorted list of free extents (coalesced when
/// released), page-granular, and zeroed when made. Commit does nothing (the region is
/// already usable); decommit zeroes ([`Decommit::Zero`]) or leaves the bytes
/// ([`Decommit::Lazy`]); the memory is never given back to the OS before the region is.
///
/// # Sizing the region for an [`AsyncHeap`](super::AsyncHeap)
///
/// The heap's capacity bounds live bytes, not the region a slab heap needs for them. A
/// slab is given back only when all its blocks are free, so a size class holds as much
/// region as its own peak needed, until that peak is freed nearly slab by slab.
///
/// A region of 2 MiB (the heap's bookkeeping: its size classes' headers and depots,
/// taken from the source at the first allocation) plus, for each size class used,
/// about 1.07 × that class's peak live bytes + 2 slabs (256 KiB each; up to 2 MiB for
/// the classes above 16 KiB) + 2 magazines per thread that uses the heap (each up to
/// 256 KiB or 4 blocks of the class, whichever is more: 512 KiB for 128 KiB blocks) is
/// always enough for small blocks. A class's peak is at most the
/// capacity, so a program that fills the capacity in several classes one after another
/// needs up to that many times the capacity. Large blocks (above 128 KiB) are whole
/// pages aligned as asked, in contiguous runs of a first-fit list: give them headroom
/// (at least the largest block plus its alignment), or a heap and region of their own.
///
/// The least that serves anything: the bookkeeping and one slab of the class asked for,
/// aligned to 256 KiB (about 2 MiB for blocks up to 16 KiB). A request that a region
/// cannot supply even with nothing live fails at once instead of waiting, and a large
/// block longer than the region fails at once whatever is live.
///
/// When the region runs short anyway, allocations do not abort: `alloc` and the other
/// waiting calls wait until frees give region back (see "When the region runs short" in
/// the [module docs](super)), and the `try_` calls return an error.
///
/// # Examples
///
/// ```
/// use pagekeep_mmap::Region;
/// use pagekeep_slab::async_heap::{AsyncHeap, RegionPages};
///
/// let region = Region::reserve_committed(4 << 20, 1 << 21)?;
/// let heap = AsyncHeap::with_source(RegionPages::from_region(region)?, 1 << 20);
/// let value = heap.try_alloc(7u32).unwrap();
/// assert!(heap.source().contains(&*value as *const u32 as *const u8));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct RegionPages {
    shared: Arc<Shared>,
}

/// What clones of a [`RegionPages`] share.
struct Shared {
    /// The start of the region, page-aligned, with the provenance of all of it.
    base: NonNull<u8>,
    /// Its length in bytes, whole pages.
    len: usize,
    /// The free extents as (offset, length) in bytes, sorted by offset, never adjacent
    /// (released extents are merged with their neighbours), whole pages.
    free: Mutex<Vec<(usize, usize)>>,
    /// Keeps a `Region` mapped while the source lives.
    _region: Option<Region>,
}

// SAFETY: the region is plain memory owned by the source (a `&'static mut` given up to
// it, or a `Region`, which is `Send + Sync`); the free list is behind a mutex; each
// reservation is owned by one caller at a time.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl RegionPages {
    /// A source over a static buffer. The part of it before its first page boundary and
    /// after its last is not used.
    ///
    /// # Panics
    /// If the buffer holds no whole page.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_mmap::PageSource;
    /// use pagekeep_slab::async_heap::RegionPages;
    ///
    /// let buffer: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    /// let pages = RegionPages::from_static(buffer);
    /// let ptr = pages.reserve_committed(8192, 4096)?;
    /// assert!(pages.contains(ptr.as_ptr()));
    /// // SAFETY: the reservation made above, released once.
    /// unsafe { pages.release(ptr, 8192, 4096)? };
    /// # Ok::<(), pagekeep_mmap::Error>(())
    /// ```
    pub fn from_static(buffer: &'static mut [u8]) -> Self {
        let page = pagekeep_mmap::sys::page_size();
        let start = NonNull::from(&mut *buffer).cast::<u8>();
        let skip = start.as_ptr().align_offset(page).min(buffer.len());
        let len = (buffer.len() - skip) & !(page - 1);
        assert!(len != 0, "a region needs at least one whole page");
        // SAFETY: `skip` is at most the buffer's length.
        let base = unsafe { start.add(skip) };
        Self::with_parts(base, len, None)
    }

    /// A source over a [`Region`], which it keeps until the last clone is dropped. The
    /// whole region is committed (made readable and writable) first: a region reserved
    /// without access, or committed in part, is handed out only once it is usable.
    ///
    /// # Errors
    /// The OS refuses to commit the region.
    ///
    /// # Panics
    /// If the region holds no whole page.
    pub fn from_region(region: Region) -> std::io::Result<Self> {
        let page = pagekeep_mmap::sys::page_size();
        let len = region.len() & !(page - 1);
        assert!(len != 0, "a region needs at least one whole page");
        region.commit(0, len)?;
        Ok(Self::with_parts(region.as_ptr(), len, Some(region)))
    }

    fn with_parts(base: NonNull<u8>, len: usize, region: Option<Region>) -> Self {
        RegionPages {
            shared: Arc::new(Shared {
                base,
                len,
                free: Mutex::new(vec![(0, len)]),
                _region: region,
            }),
        }
    }

    /// The bytes of the region.
    pub fn len(&self) -> usize {
        self.shared.len
    }

    /// Whether the region is empty (never: construction refuses that).
    pub fn is_empty(&self) -> bool {
        self.shared.len == 0
    }

    /// The bytes not reserved.
    pub fn free_bytes(&self) -> usize {
        self.free_list().iter().map(|&(_, len)| len).sum()
    }

    /// Whether `pointer` lies in the region.
    pub fn contains(&self, pointer: *const u8) -> bool {
        pointer.addr().wrapping_sub(self.shared.base.addr().get()) < self.shared.len
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<(usize, usize)>> {
        // Nothing panics while holding it; recover anyway.
        self.shared
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The offset of `ptr..ptr + len` in the region, if it lies inside.
    fn offset_of(&self, operation: Operation, ptr: NonNull<u8>, len: usize) -> Result<usize> {
        let offset = ptr.addr().get().wrapping_sub(self.shared.base.addr().get());
        if offset >= self.shared.len || len > self.shared.len - offset {
            return Err(Error::new(
                operation,
                Cause::InvalidInput("range outside the region"),
                ptr.addr().get(),
                len,
            ));
        }
        Ok(offset)
    }

    /// `len` rounded up to whole pages.
    fn pages(&self, operation: Operation, len: usize) -> Result<usize> {
        if len == 0 {
            return Err(Error::new(
                operation,
                Cause::InvalidInput("zero length"),
                0,
                len,
            ));
        }
        len.checked_next_multiple_of(self.page_size())
            .ok_or(Error::new(
                operation,
                Cause::InvalidInput("length overflows when rounded up to whole pages"),
                0,
                len,
            ))
    }
}

impl fmt::Debug for RegionPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionPages")
            .field("base", &self.shared.base)
            .field("len", &self.shared.len)
            .field("free_bytes", &self.free_bytes())
            .finish()
    }
}

// SAFETY: reservations are disjoint extents taken out of the free list under its lock
// and put back only by `release`; each is aligned as asked (the extent is split at an
// aligned address), inside the region (valid for reads and writes while the source
// lives), and zeroed when reserved; decommit checks whole pages and reports truthfully.
unsafe impl PageSource for RegionPages {
    fn page_size(&self) -> usize {
        pagekeep_mmap::sys::page_size()
    }

    fn reserve(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        let len = self.pages(Operation::Reserve, len)?;
        if !align.is_power_of_two() {
            return Err(Error::new(
                Operation::Reserve,
                Cause::InvalidInput("alignment is not a power of two"),
                0,
                len,
            ));
        }
        let align = align.max(self.page_size());
        let base = self.shared.base.addr().get();
        let mut free = self.free_list();
        let found = free
            .iter()
            .enumerate()
            .find_map(|(index, &(offset, extent))| {
                let padding = (base + offset).next_multiple_of(align) - (base + offset);
                (padding <= extent && extent - padding >= len).then_some((index, padding))
            });
        let Some((index, padding)) = found else {
            return Err(Error::new(
                Operation::Reserve,
                Cause::Os(libc::ENOMEM),
                0,
                len,
            ));
        };
        let (offset, extent) = free[index];
        let start = offset + padding;
        let after = extent - padding - len;
        match (padding, after) {
            (0, 0) => {
                free.remove(index);
            }
            (0, _) => free[index] = (start + len, after),
            (_, 0) => free[index] = (offset, padding),
            (_, _) => {
                free[index] = (offset, padding);
                free.insert(index + 1, (start + len, after));
            }
        }
        drop(free);
        // SAFETY: `start + len` is inside the region.
        let ptr = unsafe { self.shared.base.add(start) };
        // SAFETY: the extent is now this reservation's, inside the region, valid for
        // writes.
        unsafe { ptr.write_bytes(0, len) };
        Ok(ptr)
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> Result<()> {
        self.offset_of(Operation::Commit, ptr, len).map(drop)
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
        let page = self.page_size();
        if len == 0 || !len.is_multiple_of(page) || !ptr.addr().get().is_multiple_of(page) {
            return Err(Error::new(
                Operation::Decommit,
                Cause::InvalidInput("not whole pages"),
                ptr.addr().get(),
                len,
            ));
        }
        self.offset_of(Operation::Decommit, ptr, len)?;
        match mode {
            Decommit::Zero => {
                // SAFETY: inside a reservation the caller owns and no longer needs.
                unsafe { ptr.write_bytes(0, len) };
                Ok(Contents::Zeroed)
            }
            Decommit::Lazy => Ok(Contents::Unspecified),
        }
    }

    unsafe fn release(&self, ptr: NonNull<u8>, len: usize, _align: usize) -> Result<()> {
        let len = self.pages(Operation::Release, len)?;
        let offset = self.offset_of(Operation::Release, ptr, len)?;
        let mut free = self.free_list();
        let index = free.partition_point(|&(start, _)| start < offset);
        debug_assert!(
            free.get(index)
                .is_none_or(|&(start, _)| offset + len <= start)
                && (index == 0 || free[index - 1].0 + free[index - 1].1 <= offset),
            "release of a range that is partly free: {:#x} + {:#x}",
            ptr.addr().get(),
            len
        );
        let merges_before = index > 0 && free[index - 1].0 + free[index - 1].1 == offset;
        let merges_after = free
            .get(index)
            .is_some_and(|&(start, _)| start == offset + len);
        match (merges_before, merges_after) {
            (true, true) => {
                free[index - 1].1 += len + free[index].1;
                free.remove(index);
            }
            (true, false) => free[index - 1].1 += len,
            (false, true) => free[index] = (offset, len + free[index].1),
            (false, false) => free.insert(index, (offset, len)),
        }
        Ok(())
    }

    /// The region's length: no reservation longer than it can ever succeed.
    fn max_reserved_bytes(&self) -> Option<usize> {
        Some(self.shared.len)
    }
}
