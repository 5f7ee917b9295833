//! The one set of functions through which this workspace talks to the virtual-memory
//! system of the OS.
//!
//! Every function checks its documented preconditions first and returns
//! [`Cause::InvalidInput`] without a system call when they do
//! not hold, so a bad argument is an error, never undefined behaviour inside the kernel
//! interface. Results say what the OS guaranteed: [`Contents::Zeroed`] when the next
//! touch of a page reads zeros, [`Contents::Unspecified`] when it may read old data.
//!
//! Lengths are rounded up to whole pages (as the kernel does); addresses must be
//! page-aligned. Linux, macOS and Windows are supported (the tests run on Linux, and on
//! Windows under wine); under miri a heap-backed shim stands in for the OS (see
//! `sys/miri.rs`), so the code above it runs unchanged under the interpreter. On Windows
//! (`sys/windows.rs`) a reservation is released whole by the OS: a release of part of one
//! decommits that part and the reservation goes when its last part does (see that
//! module's documentation for this and the other differences); error numbers there are
//! Windows' own (`GetLastError`).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Cause, Error, Operation, Result};

mod deferred;

#[cfg(miri)]
mod miri;
#[cfg(miri)]
use miri as platform;

#[cfg(all(unix, not(miri)))]
mod unix;
#[cfg(all(unix, not(miri)))]
use unix as platform;

#[cfg(all(windows, not(miri)))]
mod windows;
#[cfg(all(windows, not(miri)))]
use windows as platform;

#[cfg(not(any(unix, windows, miri)))]
compile_error!("pagekeep-mmap supports Unix targets (Linux and macOS), Windows and miri");

/// Access permissions of pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protection {
    /// No access: any touch faults. Used for reservations and guard pages.
    None,
    /// Read-only.
    Read,
    /// Read and write: committed memory.
    ReadWrite,
}

/// How [`decommit`] gives physical memory back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Decommit {
    /// `MADV_DONTNEED`: freed at once; the next touch reads zeros. Costs about 77 ns a page
    /// in batches here, more for single pages.
    Zero,
    /// `MADV_FREE`: reclaimed lazily, only under memory pressure; the next touch reads
    /// either the old data or zeros. About five times cheaper than [`Decommit::Zero`].
    #[default]
    Lazy,
}

/// What the OS guarantees about the contents of pages the next time they are touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Contents {
    /// They read as zeros.
    Zeroed,
    /// They may read as anything they held before, or as zeros.
    Unspecified,
}

/// Advice about transparent huge pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HugePages {
    /// `MADV_HUGEPAGE`: back the range with huge pages where possible.
    Prefer,
    /// `MADV_NOHUGEPAGE`: never back the range with huge pages.
    Avoid,
}

/// What backs a mapping made by [`map_committed_huge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageBacking {
    /// Huge pages. On Linux the mapping is advised `MADV_HUGEPAGE` and the kernel accepted
    /// the advice: transparent huge pages back its aligned frames where the kernel finds
    /// free 2 MiB frames (at first touch or later, by `khugepaged`). On Windows it is
    /// large-page memory (`MEM_LARGE_PAGES`): committed and resident from the start,
    /// never paged out.
    Huge,
    /// Base pages only: the OS has no huge pages for it (a Linux kernel built without
    /// transparent huge pages, macOS; on Windows, the process
    /// lacks `SeLockMemoryPrivilege`, the processor has no large pages, or the OS found
    /// no free large pages). The mapping is an ordinary [`map_committed`] one.
    Base,
}

/// A committed read-write mapping from [`map_committed_huge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "the mapping must be given back with `release(ptr, len)`"]
pub struct HugeMapping {
    /// Its start, aligned to [`huge_page_size`].
    pub ptr: NonNull<u8>,
    /// Its length in bytes: the length asked for rounded up to whole huge pages.
    pub len: usize,
    /// Whether huge pages back it.
    pub backing: PageBacking,
}

/// The size in bytes of a huge page: 2 MiB on Linux and macOS (the x86-64 PMD size, the
/// unit of transparent huge pages); on Windows `GetLargePageMinimum()`, or 2 MiB when the
/// processor has no large pages (it answers 0).
pub fn huge_page_size() -> usize {
    platform_huge_page_size()
}

#[cfg(all(windows, not(miri)))]
fn platform_huge_page_size() -> usize {
    platform::large_page_minimum().unwrap_or(2 << 20)
}

#[cfg(not(all(windows, not(miri))))]
fn platform_huge_page_size() -> usize {
    2 << 20
}

/// Reserves and commits `len` bytes read-write, rounded up to whole huge pages and
/// aligned to [`huge_page_size`], backed by huge pages where the OS provides them, and
/// by base pages otherwise: the result says which ([`PageBacking`]). Missing huge-page
/// support is not an error, as [`Decommit::Lazy`] falling back to [`Decommit::Zero`]
/// is not; an error means that not even base pages could be mapped.
///
/// - Linux: [`map_committed`] and [`advise_huge_pages`] with [`HugePages::Prefer`];
///   when the advice is refused (a kernel built without transparent huge pages) the
///   mapping stays, with base pages. Pages read as zeros and take memory when touched.
/// - macOS: [`map_committed`], with base pages (the advice is unsupported there).
/// - miri: as Linux; the stand-in accepts the advice, so the answer is
///   [`PageBacking::Huge`] though nothing changes.
/// - Windows: `VirtualAlloc(MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES)` (large pages
///   must be committed when reserved, in multiples of `GetLargePageMinimum()`), after
///   enabling `SeLockMemoryPrivilege` in the process token once (it can only be enabled
///   when the account holds it: "Lock pages in memory" in the local security policy).
///   Without the privilege, without large-page support, or when the OS has no free
///   large pages (`ERROR_NO_SYSTEM_RESOURCES`: physical memory too fragmented), the
///   mapping is made with base pages as [`map_committed`] makes it. Large pages are
///   resident and zeroed from the start; Windows documents them as not pageable, so a
///   decommit or a release of part of such a mapping may be refused (an error, the
///   mapping unchanged); release it whole. Under wine the privilege is not granted and
///   only the base-page path runs in the tests: the large-page path is untested here.
///
/// Give the mapping back with [`release`]`(ptr, len)`.
///
/// # Errors
/// `len` zero, or overflowing when rounded up to huge pages ([`Cause::InvalidInput`]);
/// the OS refuses base pages too (`ENOMEM`, `ERROR_NOT_ENOUGH_MEMORY`).
///
/// # Examples
///
/// ```
/// use pagekeep_mmap::sys::{self, PageBacking};
///
/// let mapping = sys::map_committed_huge(1)?;
/// assert_eq!(mapping.len, sys::huge_page_size());
/// assert_eq!(mapping.ptr.addr().get() % sys::huge_page_size(), 0);
/// // SAFETY: the mapping is committed read-write, whatever backs it.
/// unsafe { mapping.ptr.write(7) };
/// if mapping.backing == PageBacking::Base {
///     // No huge pages here: an ordinary mapping, as `map_committed` makes.
/// }
/// // SAFETY: the whole mapping, not used afterwards.
/// unsafe { sys::release(mapping.ptr, mapping.len) }?;
/// # Ok::<(), pagekeep_mmap::Error>(())
/// ```
pub fn map_committed_huge(len: usize) -> Result<HugeMapping> {
    let frame = huge_page_size();
    let len = page_len(Operation::Reserve, 0, len)?
        .checked_add(frame - 1)
        .map(|padded| padded & !(frame - 1))
        .ok_or(Error::invalid(
            Operation::Reserve,
            "length overflows when rounded up to whole huge pages",
            0,
            len,
        ))?;
    #[cfg(all(windows, not(miri)))]
    if let Some(ptr) = platform::map_large_pages(len) {
        return Ok(HugeMapping {
            ptr,
            len,
            backing: PageBacking::Huge,
        });
    }
    let ptr = map(len, frame, Protection::ReadWrite)?;
    #[cfg(all(windows, not(miri)))]
    let backing = PageBacking::Base;
    #[cfg(not(all(windows, not(miri))))]
    // SAFETY: the mapping was just made and is owned here; advice leaves its contents.
    let backing = match unsafe { platform::advise_huge_pages(ptr, len, HugePages::Prefer) } {
        Ok(()) => PageBacking::Huge,
        Err(_) => PageBacking::Base,
    };
    Ok(HugeMapping { ptr, len, backing })
}

/// Where [`remap`] may put the resized mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Resize in place or fail.
    InPlace,
    /// Resize in place when the neighbouring address space is free, else move the pages
    /// (page tables only, nothing is copied) to wherever the OS chooses (page-aligned).
    MayMove,
    /// Move the pages to this address, replacing whatever was mapped there.
    At(NonNull<u8>),
}

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The size in bytes of a page (4096 on x86-64 Linux; 16384 on Apple silicon).
#[inline]
pub fn page_size() -> usize {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => {
            let size = platform::page_size();
            PAGE_SIZE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

/// `len` rounded up to whole pages, or `None` when that overflows.
#[inline]
pub fn round_to_pages(len: usize) -> Option<usize> {
    let mask = page_size() - 1;
    len.checked_add(mask).map(|padded| padded & !mask)
}

/// Validates a length and rounds it up to whole pages.
fn page_len(operation: Operation, address: usize, len: usize) -> Result<usize> {
    if len == 0 {
        return Err(Error::invalid(operation, "zero length", address, len));
    }
    round_to_pages(len).ok_or(Error::invalid(
        operation,
        "length overflows when rounded up to whole pages",
        address,
        len,
    ))
}

/// Validates an address and a length; returns the length rounded up to whole pages.
pub(crate) fn page_range(operation: Operation, ptr: NonNull<u8>, len: usize) -> Result<usize> {
    let address = ptr.addr().get();
    if address & (page_size() - 1) != 0 {
        return Err(Error::invalid(
            operation,
            "address is not page-aligned",
            address,
            len,
        ));
    }
    let len = page_len(operation, address, len)?;
    if address.checked_add(len).is_none() {
        return Err(Error::invalid(
            operation,
            "range wraps the address space",
            address,
            len,
        ));
    }
    Ok(len)
}

/// Reserves `len` bytes of address space that no access may touch until committed.
///
/// The pages take no physical memory and are not charged to the kernel's commit account
/// (no access means nothing to account); after [`commit`] they read as zeros.
///
/// # Errors
/// `len` is zero or overflows when rounded up to pages ([`Cause::InvalidInput`]); the OS
/// refuses (`ENOMEM`: no address space left, or the mapping-count limit).
pub fn reserve(len: usize) -> Result<NonNull<u8>> {
    reserve_aligned(len, page_size())
}

/// Reserves `len` bytes aligned to `align`, a power of two (below a page means a page),
/// with no access, as [`reserve`] does.
///
/// Above a page, this over-reserves by `align - page` and trims: one `mmap` and at most
/// two `munmap`s. A trim the OS refuses (at the mapping-count limit) is left to be
/// released later, as [`release_or_decommit`] does; the reservation is made all the same.
///
/// # Errors
/// As [`reserve`], and `align` not a power of two, or `len + align` overflowing.
pub fn reserve_aligned(len: usize, align: usize) -> Result<NonNull<u8>> {
    map(len, align, Protection::None)
}

/// Reserves `len` bytes aligned to `align` and commits them read-write in the same call:
/// one `mmap` (plus the trims of [`reserve_aligned`]) instead of `mmap` and `mprotect`.
/// The pages read as zeros and take physical memory only when first touched.
///
/// The mapping passes the kernel's overcommit check, as [`commit`] does: on Linux with
/// the default heuristic a length beyond RAM plus swap fails with `ENOMEM`.
///
/// # Errors
/// As [`reserve_aligned`], and `ENOMEM` when overcommit refuses.
pub fn map_committed(len: usize, align: usize) -> Result<NonNull<u8>> {
    map(len, align, Protection::ReadWrite)
}

fn map(len: usize, align: usize, protection: Protection) -> Result<NonNull<u8>> {
    let len = page_len(Operation::Reserve, 0, len)?;
    if !align.is_power_of_two() {
        return Err(Error::invalid(
            Operation::Reserve,
            "alignment is not a power of two",
            0,
            len,
        ));
    }
    let align = align.max(page_size());
    if align == page_size() {
        return platform::map(len, protection);
    }
    map_aligned(len, align, protection)
}

/// Windows cannot release part of a reservation: it reserves the aligned range exactly,
/// with nothing to trim.
#[cfg(all(windows, not(miri)))]
fn map_aligned(len: usize, align: usize, protection: Protection) -> Result<NonNull<u8>> {
    platform::map_aligned(len, align, protection)
}

/// Over-reserves by `align - page` and trims both ends.
#[cfg(not(all(windows, not(miri))))]
fn map_aligned(len: usize, align: usize, protection: Protection) -> Result<NonNull<u8>> {
    let padded = len.checked_add(align - page_size()).ok_or(Error::invalid(
        Operation::Reserve,
        "length plus alignment overflows",
        0,
        len,
    ))?;
    let start = platform::map_aligned(padded, align, protection)?;
    let head = start.align_offset(align);
    let tail = padded - head - len;
    // SAFETY: `head < align` and `head + len <= padded`, so the result stays inside the
    // mapping that was just made.
    let aligned = unsafe { start.add(head) };
    // SAFETY: head and tail are the unused, page-multiple ends of the mapping we own;
    // nothing else refers to them, and they are given up for good.
    unsafe {
        if head > 0 {
            release_or_note(start, head);
        }
        // SAFETY: `head + len <= padded`, inside the mapping.
        if tail > 0 {
            release_or_note(aligned.add(len), tail);
        }
    }
    Ok(aligned)
}

/// Releases an untouched range given up for good, or (when the OS refuses: the fresh
/// mapping merged with a neighbour, so trimming it splits a mapping at the mapping-count
/// limit) notes it to be released later (see [`release_or_decommit`]); its pages were
/// never touched, so they hold no memory meanwhile.
///
/// # Safety
/// - As [`release`], for a range of whole pages that nobody releases again.
#[cfg(not(all(windows, not(miri))))]
unsafe fn release_or_note(ptr: NonNull<u8>, len: usize) {
    // SAFETY: forwarded from the caller.
    if unsafe { platform::release(ptr, len) }.is_err() {
        deferred::note(ptr, len);
    }
}

/// Makes pages readable and writable. Never-touched pages read as zeros.
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) lies inside one reservation that the caller
///   owns, made by this module.
///
/// # Errors
/// `ptr` not page-aligned, `len` zero or overflowing; the OS refuses (`ENOMEM` when the
/// change would split the mapping past the mapping-count limit, or overcommit refuses).
pub unsafe fn commit(ptr: NonNull<u8>, len: usize) -> Result<()> {
    let len = page_range(Operation::Commit, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::protect(ptr, len, Protection::ReadWrite, Operation::Commit) }
}

/// Gives the physical memory behind pages back to the OS; the pages stay reserved and
/// accessible. Returns what the next touch of the pages reads.
///
/// [`Decommit::Lazy`] falls back to [`Decommit::Zero`] where the OS lacks `MADV_FREE`, and
/// the result says so ([`Contents::Zeroed`]).
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) lies inside one reservation that the caller
///   owns, made by this module.
/// - Nothing relies on the contents of the range any more (no live references into it).
/// - No thread reads or writes the range until the call returns. On Windows a zeroing
///   decommit is not atomic: it decommits the pages and commits them again (no call
///   does both), and an access in between faults; on Linux the access would read old
///   bytes or zeros. Once the call returns, the pages are accessible with their old
///   protection everywhere.
///
/// # Errors
/// Invalid arguments; the OS refuses.
pub unsafe fn decommit(ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
    let len = page_range(Operation::Decommit, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::decommit(ptr, len, mode) }
}

/// Returns address space (and its physical memory) to the OS.
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) lies inside reservations that the caller owns,
///   made by this module, and nothing will access it again.
///
/// # Errors
/// Invalid arguments; the OS refuses (`ENOMEM` when releasing the middle of a mapping
/// would exceed the mapping-count limit; the range then stays reserved).
pub unsafe fn release(ptr: NonNull<u8>, len: usize) -> Result<()> {
    let len = page_range(Operation::Release, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::release(ptr, len) }
}

/// [`release`] for a range the caller gives up for good, whatever happens: when the OS
/// refuses to release it (releasing the middle of a mapping at the mapping-count limit),
/// its pages are decommitted instead ([`Decommit::Zero`]), so their memory goes back,
/// and the range is noted to be released later, once a page next to it is unmapped (so
/// that its release cannot split a mapping): at the next release that succeeds, or by
/// [`release_deferred`]. Returns `release`'s result.
///
/// # Safety
/// - As [`release`]; the range's contents are not needed, even when this fails, and no
///   thread accesses the range (as for [`decommit`]); nobody releases it again.
///
/// # Errors
/// As [`release`].
pub unsafe fn release_or_decommit(ptr: NonNull<u8>, len: usize) -> Result<()> {
    let pages = page_range(Operation::Release, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    let released = unsafe { platform::release(ptr, pages) };
    if released.is_err() {
        // SAFETY: the caller gives up the range and its contents.
        let _ = unsafe { decommit(ptr, pages, Decommit::Zero) };
        // The caller gave the range up for good: released later, it harms nobody.
        deferred::note(ptr, pages);
    } else if deferred::waiting() > 0 {
        release_deferred_once();
    }
    released
}

/// Releases the ranges that [`release_or_decommit`] could not release when it was called
/// (see there) and that the OS now takes back; returns how many went. Allocators call it
/// when they trim. A range is released only once a page next to it is no longer mapped,
/// so that its release never splits a mapping (which would take one of the process's
/// mappings for address space alone). At most 64 such ranges are kept; one more stays
/// reserved, decommitted.
///
/// # Examples
///
/// ```
/// use pagekeep_mmap::sys;
///
/// // Nothing waits unless a release was refused at the mapping-count limit.
/// let released = sys::release_deferred();
/// assert!(released <= 64);
/// assert_eq!(sys::deferred_releases(), 0);
/// ```
pub fn release_deferred() -> usize {
    let mut released = 0;
    // Each release may make room for one the OS refused earlier in the same pass.
    loop {
        let pass = release_deferred_once();
        if pass == 0 {
            return released;
        }
        released += pass;
    }
}

/// One pass of [`release_deferred`] over the noted ranges. A range with mapped pages on
/// both sides is left: it may still lie inside a mapping, and releasing it would split
/// that mapping, taking one more of the process's mappings for address space alone (its
/// memory went back when it was noted), perhaps the one a release just made room for.
/// Once a neighbour is gone (its owner released it), releasing the range trims or
/// removes a mapping, never splits one.
fn release_deferred_once() -> usize {
    let page = page_size();
    deferred::release_noted(|ptr, len| {
        let before = NonNull::new(ptr.as_ptr().wrapping_sub(page));
        let after = NonNull::new(ptr.as_ptr().wrapping_add(len));
        if before.is_some_and(platform::is_mapped) && after.is_some_and(platform::is_mapped) {
            return Err(Error::invalid(
                Operation::Release,
                "would split a mapping",
                ptr.addr().get(),
                len,
            ));
        }
        // SAFETY: a noted range was given up for good by the caller of
        // `release_or_decommit` and stays mapped until released here, so it is a valid
        // range that nothing uses; the slot's claim makes this its only release.
        unsafe { platform::release(ptr, len) }
    })
}

/// How many ranges given up to [`release_or_decommit`] wait to be released (see there).
pub fn deferred_releases() -> usize {
    deferred::waiting()
}

/// Changes the access permissions of pages, e.g. to [`Protection::None`] for a guard page.
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) lies inside one reservation that the caller
///   owns, made by this module.
/// - No live reference into the range relies on an access the new protection removes.
///
/// # Errors
/// Invalid arguments; the OS refuses.
pub unsafe fn protect(ptr: NonNull<u8>, len: usize, protection: Protection) -> Result<()> {
    let len = page_range(Operation::Protect, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::protect(ptr, len, protection, Operation::Protect) }
}

/// Advises the OS to prefer or avoid transparent huge pages for a range. Advice only:
/// contents are unchanged.
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) lies inside one reservation the caller owns.
///
/// # Errors
/// Invalid arguments; [`Cause::Unsupported`] off Linux; the OS refuses (`EINVAL` when the
/// kernel was built without transparent huge pages).
pub unsafe fn advise_huge_pages(ptr: NonNull<u8>, len: usize, advice: HugePages) -> Result<()> {
    let len = page_range(Operation::AdviseHugePages, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::advise_huge_pages(ptr, len, advice) }
}

/// Pre-faults committed pages so that their first touch costs no page fault
/// (`MADV_POPULATE_WRITE`, or a write-touch of each page where the kernel lacks it).
/// Contents are unchanged.
///
/// On Linux 5.14 and later the kernel checks the protection: pages that are not
/// read-write (reserved, guard or read-only pages) are refused with `EINVAL`, never
/// written. Older kernels and macOS write each page, so there the range must be
/// read-write.
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) lies inside one reservation the caller owns.
/// - It is committed read-write, unless the kernel has `MADV_POPULATE_WRITE` (Linux
///   5.14+), which refuses the range otherwise.
///
/// # Errors
/// Invalid arguments; the OS refuses (`EINVAL` for pages that are not read-write,
/// `ENOMEM` when memory runs out or part of the range is not mapped).
pub unsafe fn populate(ptr: NonNull<u8>, len: usize) -> Result<()> {
    let len = page_range(Operation::Populate, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::populate(ptr, len) }
}

/// Binds the physical memory of a range to NUMA node `node` (`mbind` with `MPOL_BIND`).
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) lies inside one reservation the caller owns.
///
/// # Errors
/// Invalid arguments, `node` beyond 1023; [`Cause::Unsupported`] off Linux; the OS refuses
/// (`EINVAL` for a node that does not exist, `ENOSYS` without NUMA support).
pub unsafe fn bind_numa(ptr: NonNull<u8>, len: usize, node: u32) -> Result<()> {
    let len = page_range(Operation::BindNuma, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::bind_numa(ptr, len, node) }
}

/// Leaves a range out of core dumps (`MADV_DONTDUMP`), e.g. for large reservations or
/// secrets.
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) lies inside one reservation the caller owns.
///
/// # Errors
/// Invalid arguments; [`Cause::Unsupported`] off Linux; the OS refuses.
pub unsafe fn exclude_from_core_dump(ptr: NonNull<u8>, len: usize) -> Result<()> {
    let len = page_range(Operation::ExcludeFromCoreDump, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::exclude_from_core_dump(ptr, len) }
}

/// Resizes a mapping without copying its contents (`mremap`): growth in place when the
/// address space after it is free, else (when `placement` allows) by moving page-table
/// entries. New pages read as zeros and have the protection of the old mapping's last
/// page; a shrink gives the tail back. Returns the mapping's new address.
///
/// # Safety
/// - `ptr..ptr + old_len` (rounded up to pages) is one whole mapping made by this
///   module and owned by the caller; on success the old range must no longer be used
///   unless the returned address equals `ptr`.
/// - With [`Placement::At`], `at..at + new_len` is a reservation the caller owns and
///   gives up: it is replaced by the moved pages.
///
/// # Errors
/// Invalid arguments; [`Cause::Unsupported`] off Linux (callers copy instead); the OS
/// refuses (`ENOMEM` when there is no room in place and moving is not allowed). On error
/// the old mapping is unchanged.
pub unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    placement: Placement,
) -> Result<NonNull<u8>> {
    let old_len = page_range(Operation::Remap, ptr, old_len)?;
    let new_len = page_len(Operation::Remap, ptr.addr().get(), new_len)?;
    if let Placement::At(at) = placement {
        page_range(Operation::Remap, at, new_len)?;
    }
    // SAFETY: forwarded from the caller; the ranges were validated above.
    unsafe { platform::remap(ptr, old_len, new_len, placement) }
}

/// Whether `error`, from [`remap`] with [`Placement::InPlace`], says only that there is
/// no room to grow in place (so moving into a new reservation may work): `ENOMEM` from
/// `mremap` (and from the miri stand-in). Windows reports that case as
/// [`Cause::Unsupported`] (callers copy instead), and its OS error codes are not errno
/// values (12, `ENOMEM`'s number, is `ERROR_INVALID_ACCESS` there), so no OS error means
/// it.
pub(crate) fn is_no_room_in_place(error: &Error) -> bool {
    #[cfg(any(unix, miri))]
    return error.raw_os_error() == Some(libc::ENOMEM);
    #[cfg(all(windows, not(miri)))]
    return {
        let _ = error;
        false
    };
}

/// Counts how many pages of a range are resident in physical memory (`mincore`).
/// Without side effects; for tests and statistics.
///
/// # Safety
/// - `ptr..ptr + len` (rounded up to pages) is mapped (reserved by this module).
///
/// # Errors
/// Invalid arguments; [`Cause::Unsupported`] under miri; the OS refuses (`ENOMEM` when
/// part of the range is not mapped).
pub unsafe fn resident_pages(ptr: NonNull<u8>, len: usize) -> Result<usize> {
    let len = page_range(Operation::Residency, ptr, len)?;
    // SAFETY: forwarded from the caller; the range was validated above.
    unsafe { platform::resident_pages(ptr, len) }
}

/// `ptr` with the provenance of the whole mapping that holds it, for a block resized in
/// place or kept for reuse: the caller's pointer may reach only the size it asked for (a
/// `Box<[T]>` is retagged to its length). Natively the OS's pointers carry no narrower
/// provenance and `ptr` is returned as is; under miri the stand-in derives it from its
/// heap block.
///
/// # Examples
///
/// ```
/// let block = pagekeep_mmap::sys::map_committed(8192, 4096)?;
/// // A pointer that reaches only the first byte, as a `Box<u8>` would.
/// let narrow = core::ptr::NonNull::from(unsafe { &mut *block.as_ptr() });
/// let whole = pagekeep_mmap::sys::whole_mapping(narrow);
/// // SAFETY: the second page belongs to the same mapping, reached through `whole`.
/// unsafe { whole.add(4096).write(1) };
/// // SAFETY: mapped above, not used afterwards.
/// unsafe { pagekeep_mmap::sys::release(block, 8192) }?;
/// # Ok::<(), pagekeep_mmap::Error>(())
/// ```
pub fn whole_mapping(ptr: NonNull<u8>) -> NonNull<u8> {
    platform::whole_mapping(ptr)
}

/// The error to give for an operation this platform cannot do.
#[allow(dead_code, reason = "each platform uses a different subset")]
pub(crate) fn unsupported(
    operation: Operation,
    why: &'static str,
    ptr: NonNull<u8>,
    len: usize,
) -> Error {
    Error::new(operation, Cause::Unsupported(why), ptr.addr().get(), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Error 12 is `ENOMEM` on Unix but `ERROR_INVALID_ACCESS` on Windows: only on Unix
    /// (and under miri) does it mean "no room to grow in place".
    #[test]
    fn error_12_means_no_room_in_place_only_where_it_is_enomem() {
        let twelve = Error::new(Operation::Remap, Cause::Os(12), 0, 4096);
        assert_eq!(is_no_room_in_place(&twelve), cfg!(any(unix, miri)));
        let unsupported = unsupported(
            Operation::Remap,
            "cannot grow in place",
            NonNull::dangling(),
            4096,
        );
        assert!(!is_no_room_in_place(&unsupported));
    }
}
