//! Windows, through `VirtualAlloc` and its relatives. Arguments arrive validated by
//! `sys/mod.rs`: page-aligned addresses, non-zero lengths that are whole pages.
//!
//! # How Windows differs from `mmap`, and what this module does about it
//!
//! - **Reservations are made whole and released whole.** `VirtualFree(MEM_RELEASE)` takes
//!   only the base of a reservation and frees all of it; there is no `munmap` of a part.
//!   `release` of a part (the tail of a shrunk block, say) therefore decommits it
//!   (`MEM_DECOMMIT`: the memory goes back at once and the pages fault on access, as
//!   unmapped pages do) and records the released part in a table of released ranges
//!   (ranges, so that a part released twice, which `munmap` allows, counts once);
//!   when the released ranges cover the reservation, the whole reservation is released
//!   and its ranges leave the table. A release of a whole reservation when the table is
//!   empty (the usual case) is one `MEM_RELEASE` with no look-up beyond an atomic load.
//!   A release may span several reservations (a block grown in place is two) and skips
//!   free address space, as `munmap` does. The released part stays reserved (address
//!   space, no memory) until the rest of its reservation goes, and is treated as
//!   unmapped meanwhile: commit, protect, decommit and populate refuse it
//!   (`ERROR_INVALID_ADDRESS`, as `mprotect` and `madvise` answer `ENOMEM`) instead of
//!   committing it again. The table has no fixed size: it lives in pages of its own
//!   from the OS (never the global allocator, which may be built on this module),
//!   doubled when full. A partial release fails (`ERROR_NOT_ENOUGH_MEMORY`, the range
//!   as it was, as `munmap` fails with `ENOMEM`) only when the OS refuses the table
//!   more pages.
//! - **Aligned reservations are made exact** instead of trimmed: reserve `len + align`,
//!   note the aligned address inside, release, and reserve exactly `len` there (retried
//!   when another thread takes the address in between, `ERROR_INVALID_ADDRESS`; any
//!   other refusal, such as the commit charge's, is returned at once with its code). Reservations are placed on the
//!   allocation granularity (64 KiB), so alignments up to it cost nothing extra.
//! - **Reserved pages cannot be protected, only committed.** `commit` and `protect` to
//!   [`Protection::Read`] or [`Protection::ReadWrite`] commit the reserved parts of the
//!   range (`MEM_COMMIT`) and change the protection of the committed parts
//!   (`VirtualProtect`); `protect` to [`Protection::None`] changes the committed parts
//!   only (reserved pages are inaccessible already).
//! - **Decommitting makes pages inaccessible**, where `MADV_DONTNEED` keeps them mapped:
//!   [`Decommit::Zero`] decommits each committed part and commits it again with its
//!   protection (no memory is taken until the next touch, which reads zeros). Windows
//!   has no call that does both, so an access by another thread in between faults:
//!   `sys::decommit` forbids accesses during the call, on every platform.
//!   [`Decommit::Lazy`] is `MEM_RESET` (the contents may be discarded under pressure),
//!   falling back to [`Decommit::Zero`] where it is refused.
//! - **No `mremap`:** [`remap`] grows in place by reserving the address space right
//!   after the block (possible when the block ends on the 64 KiB allocation granularity
//!   and the space there is free), and otherwise answers [`Cause::Unsupported`] so that
//!   callers allocate, copy and free. Shrinking releases the tail as above.
//! - Huge pages: Windows chooses large pages when memory is reserved (`MEM_LARGE_PAGES`,
//!   which needs `SeLockMemoryPrivilege`), never by advice on existing pages, so
//!   [`advise_huge_pages`] answers [`Cause::Unsupported`], as macOS does.
//!   `sys::map_committed_huge` makes large-page mappings ([`map_large_pages`]: committed
//!   at reservation, a multiple of `GetLargePageMinimum()`), and falls back to base
//!   pages without the privilege or the support. Under wine the privilege is not
//!   granted, so the large-page path is untested.
//! - NUMA: [`bind_numa`] answers [`Cause::Unsupported`], as on macOS: Windows prefers a
//!   node only for pages as `VirtualAllocExNuma` commits them, and binds no existing
//!   range (see that function).
//! - Residency is `QueryWorkingSetEx`; there is no `MADV_DONTDUMP` (unsupported).
//!
//! Error codes are Windows' (`GetLastError`), in [`Cause::Os`].

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_INVALID_ADDRESS, ERROR_INVALID_PARAMETER, ERROR_NOT_ALL_ASSIGNED,
    ERROR_NOT_ENOUGH_MEMORY, GetLastError, HANDLE, LUID,
};
use windows_sys::Win32::Security::{
    AdjustTokenPrivileges, LUID_AND_ATTRIBUTES, LookupPrivilegeValueW, SE_LOCK_MEMORY_NAME,
    SE_PRIVILEGE_ENABLED, TOKEN_ADJUST_PRIVILEGES, TOKEN_PRIVILEGES, TOKEN_QUERY,
};
use windows_sys::Win32::System::Memory::{
    GetLargePageMinimum, MEM_COMMIT, MEM_DECOMMIT, MEM_FREE, MEM_LARGE_PAGES, MEM_RELEASE,
    MEM_RESERVE, MEM_RESET, MEMORY_BASIC_INFORMATION, PAGE_NOACCESS, PAGE_PROTECTION_FLAGS,
    PAGE_READONLY, PAGE_READWRITE, VirtualAlloc, VirtualFree, VirtualProtect, VirtualQuery,
};
use windows_sys::Win32::System::ProcessStatus::{
    K32QueryWorkingSetEx, PSAPI_WORKING_SET_EX_INFORMATION,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use super::{Contents, Decommit, HugePages, Placement, Protection};
use crate::error::{Cause, Error, Operation, Result};
use crate::syscall_counters::{Syscall, count};

fn system_info() -> SYSTEM_INFO {
    // SAFETY: SYSTEM_INFO is plain data (integers and pointers) for which all zeros is
    // a valid value.
    let mut info: SYSTEM_INFO = unsafe { core::mem::zeroed() };
    // SAFETY: `info` is valid for writes of a SYSTEM_INFO.
    unsafe { GetSystemInfo(&mut info) };
    info
}

pub(super) fn page_size() -> usize {
    let size = system_info().dwPageSize as usize;
    if size.is_power_of_two() { size } else { 4096 }
}

static GRANULARITY: AtomicUsize = AtomicUsize::new(0);

/// The alignment of every reservation's base (64 KiB on every Windows so far).
fn allocation_granularity() -> usize {
    match GRANULARITY.load(Ordering::Relaxed) {
        0 => {
            let size = system_info().dwAllocationGranularity as usize;
            let size = if size.is_power_of_two() {
                size
            } else {
                64 << 10
            };
            GRANULARITY.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

fn page_flags(protection: Protection) -> PAGE_PROTECTION_FLAGS {
    match protection {
        Protection::None => PAGE_NOACCESS,
        Protection::Read => PAGE_READONLY,
        Protection::ReadWrite => PAGE_READWRITE,
    }
}

fn os_error(operation: Operation, code: u32, address: usize, len: usize) -> Error {
    Error::new(operation, Cause::Os(code as i32), address, len)
}

/// One `VirtualAlloc` of `len` bytes at `at` (null: where the OS chooses): reserved, and
/// committed too unless `protection` is [`Protection::None`].
fn virtual_alloc(at: *const c_void, len: usize, protection: Protection) -> *mut c_void {
    let kind = match protection {
        Protection::None => MEM_RESERVE,
        _ => MEM_RESERVE | MEM_COMMIT,
    };
    count(Syscall::Mmap);
    // SAFETY: reserving fresh address space (at `at` only if it is free) touches no
    // existing memory.
    unsafe { VirtualAlloc(at, len, kind, page_flags(protection)) }
}

pub(super) fn map(len: usize, protection: Protection) -> Result<NonNull<u8>> {
    NonNull::new(virtual_alloc(ptr::null(), len, protection).cast::<u8>()).ok_or_else(|| {
        let error = Error::last_os_error(Operation::Reserve, 0, len);
        if error.raw_os_error() == Some(ERROR_INVALID_PARAMETER as i32)
            && len > user_address_space()
        {
            // Windows refuses a length beyond the user address space as an invalid
            // parameter: that is the contract's out of address space.
            return os_error(Operation::Reserve, ERROR_NOT_ENOUGH_MEMORY, 0, len);
        }
        error
    })
}

/// The size in bytes of the address space open to the process.
fn user_address_space() -> usize {
    let info = system_info();
    info.lpMaximumApplicationAddress
        .addr()
        .saturating_sub(info.lpMinimumApplicationAddress.addr())
}

/// How often [`map_aligned`] tries again when another thread takes the aligned address
/// between its release and its reservation.
const ALIGNED_ATTEMPTS: usize = 16;

/// Reserves exactly `len` bytes aligned to `align`: nothing to trim (see the module
/// documentation).
pub(super) fn map_aligned(len: usize, align: usize, protection: Protection) -> Result<NonNull<u8>> {
    if align <= allocation_granularity() {
        return map(len, protection);
    }
    let padded = len.checked_add(align).ok_or(Error::invalid(
        Operation::Reserve,
        "length plus alignment overflows",
        0,
        len,
    ))?;
    let mut taken = None;
    for _ in 0..ALIGNED_ATTEMPTS {
        let probe = map(padded, Protection::None)?;
        let aligned = probe
            .as_ptr()
            .wrapping_add(probe.as_ptr().align_offset(align));
        count(Syscall::Munmap);
        // SAFETY: `probe` is the base of the reservation just made, used by nothing.
        if unsafe { VirtualFree(probe.as_ptr().cast(), 0, MEM_RELEASE) } == 0 {
            return Err(Error::last_os_error(
                Operation::Reserve,
                probe.addr().get(),
                padded,
            ));
        }
        if let Some(block) = NonNull::new(virtual_alloc(aligned.cast(), len, protection).cast()) {
            return Ok(block);
        }
        let error = Error::last_os_error(Operation::Reserve, aligned.addr(), len);
        if error.raw_os_error() != Some(ERROR_INVALID_ADDRESS as i32) {
            // Not a lost race for the address (the commit charge refused, say): the
            // OS's answer, at once.
            return Err(error);
        }
        taken = Some(error);
    }
    // Another thread took the address every time: the OS's last answer.
    Err(taken.unwrap_or_else(|| os_error(Operation::Reserve, ERROR_NOT_ENOUGH_MEMORY, 0, len)))
}

/// Reservations made by the OS are reached by any pointer to them.
pub(super) fn whole_mapping(ptr: NonNull<u8>) -> NonNull<u8> {
    ptr
}

/// What `VirtualQuery` says about the pages from one address on.
#[derive(Clone, Copy)]
struct Span {
    /// The first address the answer covers (the address asked about).
    start: usize,
    /// The end of the run of pages with the same state and protection.
    end: usize,
    /// The base of the reservation (0 for free address space).
    allocation_base: usize,
    /// `MEM_COMMIT`, `MEM_RESERVE` or `MEM_FREE`.
    state: u32,
    /// The protection of committed pages.
    protect: PAGE_PROTECTION_FLAGS,
}

fn query(operation: Operation, at: NonNull<u8>) -> Result<Span> {
    // SAFETY: MEMORY_BASIC_INFORMATION is plain data for which all zeros is valid.
    let mut info: MEMORY_BASIC_INFORMATION = unsafe { core::mem::zeroed() };
    // SAFETY: the query only reads the address space; `info` is valid for writes of its
    // size.
    let written = unsafe {
        VirtualQuery(
            at.as_ptr().cast(),
            &mut info,
            size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    if written == 0 {
        return Err(Error::last_os_error(operation, at.addr().get(), 0));
    }
    let base = info.BaseAddress.addr();
    Ok(Span {
        start: at.addr().get(),
        end: base.saturating_add(info.RegionSize),
        allocation_base: info.AllocationBase.addr(),
        state: info.State,
        protect: info.Protect,
    })
}

/// Whether the page at `ptr` is reserved or committed.
pub(super) fn is_mapped(ptr: NonNull<u8>) -> bool {
    query(Operation::Release, ptr).is_ok_and(|span| span.state != MEM_FREE)
}

/// Calls `each` for every run of pages in `ptr..ptr + len` with one state and
/// protection, in order, with the run clipped to the range. Stops at the first error.
fn for_each_span(
    operation: Operation,
    ptr: NonNull<u8>,
    len: usize,
    mut each: impl FnMut(NonNull<u8>, usize, Span) -> Result<()>,
) -> Result<()> {
    let end = ptr.addr().get() + len;
    let mut cursor = ptr;
    while cursor.addr().get() < end {
        let span = without_released(query(operation, cursor)?);
        let span_end = span.end.min(end);
        if span_end <= span.start {
            return Err(os_error(operation, ERROR_INVALID_ADDRESS, span.start, len));
        }
        each(cursor, span_end - span.start, span)?;
        // SAFETY: `span_end <= end`, inside or at the end of the caller's range.
        cursor = unsafe { cursor.add(span_end - span.start) };
    }
    Ok(())
}

/// `span` as `munmap` would have left it: a run of reserved pages that starts in a
/// released part (decommitted, but reserved until the rest of its reservation goes) is
/// free address space up to the end of that part, and one that starts before a
/// released part ends where it begins. So commit, protect, decommit and populate refuse
/// a released part as they refuse an unmapped range, instead of bringing it back.
fn without_released(mut span: Span) -> Span {
    // Released parts are decommitted: they are in reserved runs only.
    if span.state != MEM_RESERVE || RELEASED_COUNT.load(Ordering::Acquire) == 0 {
        return span;
    }
    let table = RELEASED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let records = table.records();
    // A run lies inside one reservation, and a record's range inside its own: the record
    // that holds (or follows) the run's start is of this reservation, if any is.
    let after = records.partition_point(|record| record.start <= span.start);
    if let Some(holding) = after.checked_sub(1).map(|index| records[index])
        && span.start < holding.end
    {
        span.state = MEM_FREE;
        span.end = span.end.min(holding.end);
    } else if let Some(next) = records.get(after)
        && next.start < span.end
    {
        span.end = next.start;
    }
    span
}

/// The error for a range that is not wholly reserved (what `mmap`'s `ENOMEM` says).
fn not_mapped(operation: Operation, at: NonNull<u8>, len: usize) -> Error {
    os_error(operation, ERROR_INVALID_ADDRESS, at.addr().get(), len)
}

/// A released part of a reservation: `start..end`, inside the reservation at `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Released {
    /// The base of the reservation.
    base: usize,
    /// The first address of the part.
    start: usize,
    /// The end of the part (exclusive).
    end: usize,
}

/// The released parts of every reservation released in part (see the module
/// documentation), in pages of its own from the OS, so that releasing never calls the
/// global allocator (an allocator built on this module may be it) and has no fixed
/// limit: the table doubles when it is full, and fails only when the OS refuses it
/// memory.
///
/// The parts are sorted by address and disjoint; two parts of one reservation are
/// never adjacent (they merge). Reservations do not overlap, so the parts of one
/// reservation are consecutive.
#[derive(Debug)]
struct ReleasedTable {
    /// The table's pages (null while `capacity` is zero): `capacity` records, zeroed by
    /// the OS where not written, the first `len` of them in use.
    records: *mut Released,
    /// How many records fit in the pages.
    capacity: usize,
    /// How many records are in use.
    len: usize,
}

// SAFETY: the table owns its pages (nothing else refers to them) and is reached only
// through the lock of `RELEASED`.
unsafe impl Send for ReleasedTable {}

impl ReleasedTable {
    /// The records in use.
    fn records(&self) -> &[Released] {
        if self.capacity == 0 {
            return &[];
        }
        // SAFETY: `records` points to `capacity >= len` initialised records (zeros are
        // valid integers), owned by the table, which is borrowed.
        unsafe { core::slice::from_raw_parts(self.records, self.len) }
    }

    /// Every record the pages hold, in use or not.
    fn all_mut(&mut self) -> &mut [Released] {
        if self.capacity == 0 {
            return &mut [];
        }
        // SAFETY: as in `records`, borrowed mutably.
        unsafe { core::slice::from_raw_parts_mut(self.records, self.capacity) }
    }

    /// Makes room for one more record; false when the OS refuses the pages for it.
    fn make_room(&mut self) -> bool {
        if self.len < self.capacity {
            return true;
        }
        let page = super::page_size();
        let Some(bytes) = self
            .capacity
            .checked_mul(2 * size_of::<Released>())
            .map(|bytes| bytes.max(page))
        else {
            return false;
        };
        // The table's own pages: not counted as the caller's system calls.
        // SAFETY: reserving fresh address space touches no existing memory.
        let pages =
            unsafe { VirtualAlloc(ptr::null(), bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) };
        if pages.is_null() {
            return false;
        }
        let records = pages.cast::<Released>();
        if self.capacity != 0 {
            // SAFETY: the old pages hold `len` records; the new ones, fresh and
            // disjoint, have room for more.
            unsafe { ptr::copy_nonoverlapping(self.records, records, self.len) };
            // SAFETY: the old pages are the table's own reservation, not used again.
            unsafe { VirtualFree(self.records.cast(), 0, MEM_RELEASE) };
        }
        self.records = records;
        self.capacity = bytes / size_of::<Released>();
        true
    }

    /// Puts `record` in at `index` (there must be room).
    fn insert(&mut self, index: usize, record: Released) {
        let len = self.len;
        let all = self.all_mut();
        all[index..=len].rotate_right(1);
        all[index] = record;
        self.len += 1;
    }

    /// Takes out the records at `indices`.
    fn remove(&mut self, indices: core::ops::Range<usize>) {
        let len = self.len;
        self.all_mut().copy_within(indices.end..len, indices.start);
        self.len -= indices.len();
    }

    /// The indices of the records of the reservation `base..end`.
    fn reservation(&self, base: usize, end: usize) -> core::ops::Range<usize> {
        let records = self.records();
        records.partition_point(|record| record.start < base)
            ..records.partition_point(|record| record.start < end)
    }
}

/// The reservations released in part.
static RELEASED: Mutex<ReleasedTable> = Mutex::new(ReleasedTable {
    records: ptr::null_mut(),
    capacity: 0,
    len: 0,
});

/// How many records [`RELEASED`] holds: while it is zero, a whole release needs no
/// look-up. Changed only under the lock.
static RELEASED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The length of the reservation whose base is `base`: the runs that share the base.
fn reservation_len(base: NonNull<u8>) -> Result<usize> {
    let mut cursor = base;
    loop {
        let span = query(Operation::Release, cursor)?;
        if span.state == MEM_FREE || span.allocation_base != base.addr().get() {
            return Ok(cursor.addr().get() - base.addr().get());
        }
        // SAFETY: `span.end` is the end of a run of this reservation (address space, no
        // access is made through the pointer).
        cursor = unsafe { cursor.add(span.end - span.start) };
    }
}

/// Releases a whole reservation.
///
/// # Safety
/// `base` is the base of a reservation the caller owns and never uses again.
unsafe fn release_whole(base: NonNull<u8>, len: usize) -> Result<()> {
    count(Syscall::Munmap);
    // SAFETY: forwarded from the caller.
    if unsafe { VirtualFree(base.as_ptr().cast(), 0, MEM_RELEASE) } == 0 {
        return Err(Error::last_os_error(
            Operation::Release,
            base.addr().get(),
            len,
        ));
    }
    Ok(())
}

/// Releases `ptr..ptr + len`, which lies inside the reservation at `base` of
/// `reservation` bytes.
///
/// # Safety
/// The range is owned by the caller and never used again.
unsafe fn release_in(
    base: NonNull<u8>,
    reservation: usize,
    ptr: NonNull<u8>,
    len: usize,
) -> Result<()> {
    let whole = ptr == base && len == reservation;
    if whole && RELEASED_COUNT.load(Ordering::Acquire) == 0 {
        // SAFETY: forwarded from the caller: the range is the whole reservation.
        return unsafe { release_whole(base, len) };
    }
    let mut table = RELEASED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (base_address, reservation_end) = (base.addr().get(), base.addr().get() + reservation);
    let (start, end) = (ptr.addr().get(), ptr.addr().get() + len);
    let parts = table.reservation(base_address, reservation_end);
    let records = &table.records()[parts.clone()];
    // The parts that the new one overlaps or touches merge with it.
    let first = parts.start + records.partition_point(|record| record.end < start);
    let past = parts.start + records.partition_point(|record| record.start <= end);
    let merged = table.records()[first..past].iter().fold(
        Released {
            base: base_address,
            start,
            end,
        },
        |merged, record| Released {
            start: merged.start.min(record.start),
            end: merged.end.max(record.end),
            ..merged
        },
    );
    let released_before: usize = records.iter().map(|record| record.end - record.start).sum();
    let released_merging: usize = table.records()[first..past]
        .iter()
        .map(|record| record.end - record.start)
        .sum();
    let released_after = released_before - released_merging + (merged.end - merged.start);
    if whole || released_after >= reservation {
        // The last part goes (or the whole, parts of which were released before).
        // SAFETY: every byte of the reservation has now been given up by the caller.
        unsafe { release_whole(base, reservation) }?;
        table.remove(parts);
        RELEASED_COUNT.store(table.len, Ordering::Release);
        return Ok(());
    }
    if first == past && !table.make_room() {
        // No memory for the table: the range stays as it was, as `munmap` fails with
        // `ENOMEM` when it cannot split a mapping.
        return Err(os_error(
            Operation::Release,
            ERROR_NOT_ENOUGH_MEMORY,
            start,
            len,
        ));
    }
    count(Syscall::Madvise);
    // SAFETY: the caller owns the range and gives it up; decommitting leaves it reserved,
    // faulting on access.
    if unsafe { VirtualFree(ptr.as_ptr().cast(), len, MEM_DECOMMIT) } == 0 {
        return Err(Error::last_os_error(Operation::Release, start, len));
    }
    if first == past {
        table.insert(first, merged);
    } else {
        table.all_mut()[first] = merged;
        table.remove(first + 1..past);
    }
    RELEASED_COUNT.store(table.len, Ordering::Release);
    Ok(())
}

/// # Safety
/// The reserved parts of the range are owned by the caller and unused afterwards.
pub(super) unsafe fn release(ptr: NonNull<u8>, len: usize) -> Result<()> {
    let end = ptr.addr().get() + len;
    let mut cursor = ptr;
    while cursor.addr().get() < end {
        let span = query(Operation::Release, cursor)?;
        if span.state == MEM_FREE {
            // Not reserved: skipped, as `munmap` skips what is not mapped.
            // SAFETY: address arithmetic inside the caller's range (no access).
            cursor = unsafe { cursor.add(span.end.min(end) - span.start) };
            continue;
        }
        let base = cursor.with_addr(
            core::num::NonZeroUsize::new(span.allocation_base).ok_or(not_mapped(
                Operation::Release,
                cursor,
                len,
            ))?,
        );
        let reservation = reservation_len(base)?;
        let piece_end = (span.allocation_base + reservation).min(end);
        let piece = piece_end - cursor.addr().get();
        // SAFETY: forwarded from the caller; the piece is the part of the range inside
        // this one reservation.
        unsafe { release_in(base, reservation, cursor, piece) }?;
        // SAFETY: `piece_end <= end`, inside or at the end of the caller's range.
        cursor = unsafe { cursor.add(piece) };
    }
    Ok(())
}

/// # Safety
/// The range is owned by the caller; no reference relies on a removed access.
pub(super) unsafe fn protect(
    ptr: NonNull<u8>,
    len: usize,
    protection: Protection,
    operation: Operation,
) -> Result<()> {
    let flags = page_flags(protection);
    for_each_span(operation, ptr, len, |part, part_len, span| {
        if span.state == MEM_FREE {
            return Err(not_mapped(operation, part, part_len));
        }
        if span.state != MEM_COMMIT {
            if protection == Protection::None {
                // Reserved pages are inaccessible already.
                return Ok(());
            }
            count(Syscall::Mprotect);
            // SAFETY: the part is reserved by the caller; committing makes it readable
            // (zeros) with the requested protection, as `mprotect` makes a reservation.
            let done = unsafe { VirtualAlloc(part.as_ptr().cast(), part_len, MEM_COMMIT, flags) };
            if done.is_null() {
                return Err(Error::last_os_error(operation, part.addr().get(), part_len));
            }
            return Ok(());
        }
        if span.protect == flags {
            return Ok(());
        }
        let mut old: PAGE_PROTECTION_FLAGS = 0;
        count(Syscall::Mprotect);
        // SAFETY: the part is committed and owned by the caller, who gave up the accesses
        // the new protection removes.
        if unsafe { VirtualProtect(part.as_ptr().cast(), part_len, flags, &mut old) } == 0 {
            return Err(Error::last_os_error(operation, part.addr().get(), part_len));
        }
        Ok(())
    })
}

/// Decommits a committed part and commits it again with its protection: it takes no
/// memory until touched, and then reads zeros.
///
/// # Safety
/// The part is committed, owned by the caller and its contents are no longer needed.
unsafe fn decommit_zero(
    part: NonNull<u8>,
    len: usize,
    protect: PAGE_PROTECTION_FLAGS,
) -> Result<()> {
    count(Syscall::Madvise);
    // SAFETY: forwarded from the caller.
    if unsafe { VirtualFree(part.as_ptr().cast(), len, MEM_DECOMMIT) } == 0 {
        return Err(Error::last_os_error(
            Operation::Decommit,
            part.addr().get(),
            len,
        ));
    }
    count(Syscall::Mprotect);
    // SAFETY: the part was committed by the caller a moment ago and is still reserved.
    if unsafe { VirtualAlloc(part.as_ptr().cast(), len, MEM_COMMIT, protect) }.is_null() {
        return Err(Error::last_os_error(
            Operation::Decommit,
            part.addr().get(),
            len,
        ));
    }
    Ok(())
}

/// # Safety
/// The range is owned by the caller and its contents are no longer needed.
pub(super) unsafe fn decommit(ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
    let mut contents = match mode {
        Decommit::Zero => Contents::Zeroed,
        Decommit::Lazy => Contents::Unspecified,
    };
    let mut any_reset = false;
    // Linux's `madvise` advises the mapped parts of a range with holes and then fails
    // with `ENOMEM`: so the memory of every mapped part goes back here too (as
    // `release_or_decommit` relies on) before the hole is reported.
    let mut unmapped = None;
    for_each_span(Operation::Decommit, ptr, len, |part, part_len, span| {
        match span.state {
            MEM_FREE => {
                unmapped.get_or_insert(not_mapped(Operation::Decommit, part, part_len));
                Ok(())
            }
            // Reserved pages hold nothing; they read as zeros once committed.
            MEM_COMMIT => {
                if mode == Decommit::Lazy {
                    count(Syscall::Madvise);
                    // SAFETY: the part is committed and its contents are no longer needed;
                    // MEM_RESET lets the OS discard them, nothing else.
                    let reset = unsafe {
                        VirtualAlloc(part.as_ptr().cast(), part_len, MEM_RESET, PAGE_NOACCESS)
                    };
                    if !reset.is_null() {
                        any_reset = true;
                        return Ok(());
                    }
                }
                // SAFETY: forwarded from the caller; the part is committed.
                unsafe { decommit_zero(part, part_len, span.protect) }
            }
            _ => Ok(()),
        }
    })?;
    if let Some(error) = unmapped {
        return Err(error);
    }
    if mode == Decommit::Lazy && !any_reset {
        // Every committed part was zeroed (MEM_RESET refused, or nothing committed).
        contents = Contents::Zeroed;
    }
    Ok(contents)
}

/// The large-page size (`GetLargePageMinimum()`), or `None` when the processor has
/// none.
pub(super) fn large_page_minimum() -> Option<usize> {
    // SAFETY: a query without arguments.
    let size = unsafe { GetLargePageMinimum() };
    (size.is_power_of_two() && size >= super::page_size()).then_some(size)
}

/// Whether `SeLockMemoryPrivilege` is enabled in the process token: 0 not tried yet,
/// 1 enabled, 2 not held (or the token could not be changed).
static LOCK_MEMORY_PRIVILEGE: AtomicU8 = AtomicU8::new(0);

/// Enables `SeLockMemoryPrivilege` in the process token (tried once); true when it is
/// enabled. `AdjustTokenPrivileges` succeeds without enabling a privilege the account
/// does not hold, and says so with `ERROR_NOT_ALL_ASSIGNED`.
fn lock_memory_privilege() -> bool {
    match LOCK_MEMORY_PRIVILEGE.load(Ordering::Acquire) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let enabled = enable_lock_memory_privilege();
    LOCK_MEMORY_PRIVILEGE.store(if enabled { 1 } else { 2 }, Ordering::Release);
    enabled
}

fn enable_lock_memory_privilege() -> bool {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: the pseudo-handle of this process; `token` is valid for writes.
    let opened = unsafe {
        OpenProcessToken(
            GetCurrentProcess(),
            TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY,
            &mut token,
        )
    };
    if opened == 0 {
        return false;
    }
    let mut privileges = TOKEN_PRIVILEGES {
        PrivilegeCount: 1,
        Privileges: [LUID_AND_ATTRIBUTES {
            Luid: LUID {
                LowPart: 0,
                HighPart: 0,
            },
            Attributes: SE_PRIVILEGE_ENABLED,
        }],
    };
    // SAFETY: `SE_LOCK_MEMORY_NAME` is a NUL-terminated UTF-16 string; the LUID is valid
    // for writes.
    let found = unsafe {
        LookupPrivilegeValueW(
            ptr::null(),
            SE_LOCK_MEMORY_NAME,
            &mut privileges.Privileges[0].Luid,
        )
    } != 0;
    // SAFETY: `token` was opened with TOKEN_ADJUST_PRIVILEGES; `privileges` holds one
    // entry, as its count says; no previous state is asked for.
    let adjusted = found
        && unsafe {
            AdjustTokenPrivileges(token, 0, &privileges, 0, ptr::null_mut(), ptr::null_mut())
        } != 0;
    // Read at once: `CloseHandle` may change the last error.
    // SAFETY: reads this thread's last-error value.
    let all_assigned = adjusted && unsafe { GetLastError() } != ERROR_NOT_ALL_ASSIGNED;
    // SAFETY: `token` was opened above and is closed once.
    unsafe { CloseHandle(token) };
    all_assigned
}

/// Reserves and commits `len` bytes (a multiple of [`large_page_minimum`]) of large-page
/// memory, read-write; `None` when there is no large-page support, no
/// `SeLockMemoryPrivilege`, or the OS refuses (no free large pages): the caller falls
/// back to base pages.
pub(super) fn map_large_pages(len: usize) -> Option<NonNull<u8>> {
    let minimum = large_page_minimum()?;
    if !len.is_multiple_of(minimum) || !lock_memory_privilege() {
        return None;
    }
    count(Syscall::Mmap);
    // SAFETY: reserving fresh address space touches no existing memory.
    let block = unsafe {
        VirtualAlloc(
            ptr::null(),
            len,
            MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES,
            PAGE_READWRITE,
        )
    };
    NonNull::new(block.cast())
}

/// # Safety
/// The range is owned by the caller.
pub(super) unsafe fn advise_huge_pages(
    ptr: NonNull<u8>,
    len: usize,
    _advice: HugePages,
) -> Result<()> {
    Err(super::unsupported(
        Operation::AdviseHugePages,
        "Windows chooses large pages when memory is reserved (MEM_LARGE_PAGES), not by advice",
        ptr,
        len,
    ))
}

/// # Safety
/// The range is owned by the caller. (The protection is checked here: pages that are not
/// committed read-write are refused with `ERROR_INVALID_PARAMETER`, never written.)
pub(super) unsafe fn populate(ptr: NonNull<u8>, len: usize) -> Result<()> {
    for_each_span(
        Operation::Populate,
        ptr,
        len,
        |part, part_len, span| match (span.state, span.protect) {
            (MEM_COMMIT, PAGE_READWRITE) => Ok(()),
            (MEM_FREE, _) => Err(not_mapped(Operation::Populate, part, part_len)),
            _ => Err(os_error(
                Operation::Populate,
                ERROR_INVALID_PARAMETER,
                part.addr().get(),
                part_len,
            )),
        },
    )?;
    // Fault every page in by a write that changes nothing: an atomic `fetch_or(0)` is a
    // write to the OS and race-free with other threads' writes. Only pages checked above
    // to be committed read-write (no guard flag, not read-only) get here.
    // `PrefetchVirtualMemory` would not do: it reads pages from their backing store into
    // the standby cache without adding them to the working set, and fresh committed
    // pages have no backing store (their first touch makes a zeroed page), so the first
    // touch would still fault.
    let page = super::page_size();
    let mut offset = 0;
    while offset < len {
        // SAFETY: `offset < len` stays inside the range, committed read-write as just
        // checked, and `AtomicU8` has the size and alignment of `u8`.
        unsafe { AtomicU8::from_ptr(ptr.as_ptr().add(offset)).fetch_or(0, Ordering::Relaxed) };
        offset += page;
    }
    Ok(())
}

/// Unsupported: Windows has no binding of an existing range to a node.
/// `VirtualAllocExNuma` names a preferred node only for pages it commits; asked to
/// commit pages that are committed already it succeeds and changes nothing (the pages
/// keep the memory they have, and pages decommitted later and committed again by
/// [`decommit`] or [`protect`] get no preference). Answering `Ok` would claim a binding
/// that was not made.
///
/// # Safety
/// The range is owned by the caller.
pub(super) unsafe fn bind_numa(ptr: NonNull<u8>, len: usize, _node: u32) -> Result<()> {
    Err(super::unsupported(
        Operation::BindNuma,
        "Windows binds no existing range to a NUMA node (VirtualAllocExNuma prefers a node \
         only for the pages it commits)",
        ptr,
        len,
    ))
}

/// # Safety
/// The range is owned by the caller.
pub(super) unsafe fn exclude_from_core_dump(ptr: NonNull<u8>, len: usize) -> Result<()> {
    Err(super::unsupported(
        Operation::ExcludeFromCoreDump,
        "Windows has no per-range exclusion from crash dumps",
        ptr,
        len,
    ))
}

/// The error of a growth this module cannot do in place: callers copy instead.
fn cannot_move(ptr: NonNull<u8>, len: usize) -> Error {
    super::unsupported(
        Operation::Remap,
        "Windows cannot move pages (no mremap), and the block cannot grow in place",
        ptr,
        len,
    )
}

/// # Safety
/// See `sys::remap`.
pub(super) unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    placement: Placement,
) -> Result<NonNull<u8>> {
    if matches!(placement, Placement::At(_)) {
        return Err(cannot_move(ptr, old_len));
    }
    if new_len <= old_len {
        if new_len < old_len {
            // SAFETY: the tail belongs to the caller's mapping, which it gives up.
            unsafe { release(ptr.add(new_len), old_len - new_len) }?;
        }
        return Ok(ptr);
    }
    // SAFETY: `old_len` bytes on is the end of the caller's mapping (no access is made).
    let end = unsafe { ptr.add(old_len) };
    if !end.addr().get().is_multiple_of(allocation_granularity()) {
        // A reservation starts on the granularity: the rest of this one is in the way.
        return Err(cannot_move(ptr, old_len));
    }
    // The new pages get the protection of the last page, as `mremap` gives them.
    // SAFETY: `old_len` is at least a page: its last page is inside the mapping.
    let last_page = unsafe { ptr.add(old_len - super::page_size()) };
    let last = query(Operation::Remap, last_page).map_err(|_| cannot_move(ptr, old_len))?;
    let protection = match (last.state, last.protect) {
        (MEM_COMMIT, PAGE_READWRITE) => Protection::ReadWrite,
        (MEM_COMMIT, PAGE_READONLY) => Protection::Read,
        _ => Protection::None,
    };
    let grown = virtual_alloc(end.as_ptr().cast(), new_len - old_len, protection);
    if grown.is_null() {
        return Err(cannot_move(ptr, old_len));
    }
    Ok(ptr)
}

/// How many pages one `QueryWorkingSetEx` asks about.
const RESIDENCY_BATCH: usize = 256;

/// # Safety
/// The range is mapped.
pub(super) unsafe fn resident_pages(ptr: NonNull<u8>, len: usize) -> Result<usize> {
    let page = super::page_size();
    // A fixed buffer, asked in batches, so that the query never allocates.
    // SAFETY: the entries are plain data for which all zeros is valid.
    let mut entries: [PSAPI_WORKING_SET_EX_INFORMATION; RESIDENCY_BATCH] =
        unsafe { core::mem::zeroed() };
    let mut resident = 0;
    let mut offset = 0;
    while offset < len {
        let pages = ((len - offset) / page).min(RESIDENCY_BATCH);
        for (index, entry) in entries[..pages].iter_mut().enumerate() {
            entry.VirtualAddress = ptr.as_ptr().wrapping_add(offset + index * page).cast();
        }
        count(Syscall::Mincore);
        // SAFETY: `entries[..pages]` is valid for reads and writes of `pages` entries;
        // the query only reads the address space.
        let done = unsafe {
            K32QueryWorkingSetEx(
                GetCurrentProcess(),
                entries.as_mut_ptr().cast(),
                (pages * size_of::<PSAPI_WORKING_SET_EX_INFORMATION>()) as u32,
            )
        };
        if done == 0 {
            return Err(Error::last_os_error(
                Operation::Residency,
                ptr.addr().get() + offset,
                pages * page,
            ));
        }
        resident += entries[..pages]
            .iter()
            // SAFETY: every bit pattern is a valid `usize`; bit 0 is `Valid`.
            .filter(|entry| unsafe { entry.VirtualAttributes.Flags } & 1 != 0)
            .count();
        offset += pages * page;
    }
    Ok(resident)
}

/// The large-page path as far as a test can take it. Under wine the process never holds
/// `SeLockMemoryPrivilege` (`AdjustTokenPrivileges` answers `ERROR_NOT_ALL_ASSIGNED`) and
/// wine refuses `MEM_LARGE_PAGES` outright (`ERROR_INVALID_PARAMETER`), so only the
/// refusal and the fallback run there; the mapping made with the privilege (resident
/// from the start, released whole) runs only on a Windows account granted "Lock pages in
/// memory".
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_off_the_large_page_size_is_refused_before_the_os_is_asked() {
        let Some(minimum) = large_page_minimum() else {
            return;
        };
        assert_eq!(map_large_pages(minimum + super::super::page_size()), None);
        assert_eq!(map_large_pages(minimum / 2), None);
    }

    #[test]
    fn large_pages_are_mapped_only_with_the_lock_memory_privilege() {
        let Some(minimum) = large_page_minimum() else {
            return;
        };
        let privileged = lock_memory_privilege();
        // The answer is kept: the token is adjusted once.
        let expected = if privileged { 1 } else { 2 };
        assert_eq!(LOCK_MEMORY_PRIVILEGE.load(Ordering::Acquire), expected);
        assert_eq!(lock_memory_privilege(), privileged);
        match map_large_pages(minimum) {
            None => {
                // Without the privilege the OS is not asked; with it, the OS may have
                // no free large pages. `map_committed_huge` then falls back.
                let mapping = super::super::map_committed_huge(minimum).unwrap();
                assert_eq!(mapping.backing, super::super::PageBacking::Base);
                assert_eq!(mapping.len, minimum);
                // SAFETY: the whole mapping, committed read-write, not used afterwards.
                unsafe {
                    mapping.ptr.write(1);
                    release(mapping.ptr, mapping.len).unwrap();
                }
            }
            Some(block) => {
                assert!(privileged, "large pages mapped without the privilege");
                let page = super::super::page_size();
                // SAFETY: the mapping is ours, committed read-write, released whole
                // and not used afterwards.
                unsafe {
                    assert_eq!(resident_pages(block, minimum).unwrap(), minimum / page);
                    assert_eq!(block.add(minimum - 1).read(), 0);
                    block.add(minimum - 1).write(7);
                    release(block, minimum).unwrap();
                }
            }
        }
    }

    #[test]
    fn the_released_table_grows_past_its_first_page_and_forgets_reservations_that_go() {
        let page = super::super::page_size();
        let records_per_page = page / size_of::<Released>();
        let count = 2 * records_per_page + 3;
        let bases: std::vec::Vec<NonNull<u8>> = (0..count)
            .map(|_| map(2 * page, Protection::ReadWrite).unwrap())
            .collect();
        let recorded = |base: NonNull<u8>| {
            let table = RELEASED.lock().unwrap();
            table
                .records()
                .iter()
                .filter(|record| record.base == base.addr().get())
                .count()
        };
        for &base in &bases {
            // SAFETY: the second page of our reservation, given up.
            unsafe { release(base.add(page), page) }.unwrap();
            assert_eq!(recorded(base), 1);
        }
        assert!(RELEASED.lock().unwrap().capacity >= count);
        for &base in &bases {
            // SAFETY: the rest of our reservation, given up.
            unsafe { release(base, page) }.unwrap();
            assert_eq!(recorded(base), 0);
        }
        let table = RELEASED.lock().unwrap();
        let records = table.records();
        assert!(
            records.windows(2).all(|pair| pair[0].end <= pair[1].start),
            "sorted and disjoint"
        );
    }
}
