//! The OS stand-in used under miri, which cannot reserve inaccessible memory, protect it
//! or give it back in parts.
//!
//! Mappings are zeroed, page-aligned blocks of the system heap, taken from [`System`]
//! and never from the global allocator: this module must keep working when an allocator
//! built on it (`MmapAlloc`, or the large blocks of a slab heap) *is* the global
//! allocator. For the same reason the table of what is mapped is a fixed array behind a
//! lock, which never allocates.
//!
//! The table records the mapped pieces of each block, so that it answers as the OS does:
//! releasing part of a mapping (the trims of an aligned reservation, the tail of a
//! shrink) unmaps just that part, and the block is freed when its last piece goes; a
//! release may span several mappings and skips what is not mapped (`munmap` on an
//! unmapped range succeeds and does nothing); and operations on a range that is not
//! wholly mapped fail with `ENOMEM`. The table holds at most [`MAX_PIECES`] pieces, the
//! stand-in for the OS's limit on the number of mappings: past it, mapping and splitting
//! fail with `ENOMEM`. Protection and advice are accepted and do nothing;
//! [`Decommit::Zero`] zeroes, as the OS does.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use std::alloc::{GlobalAlloc, System};
use std::sync::Mutex;

use super::{Contents, Decommit, HugePages, Placement, Protection};
use crate::error::{Cause, Error, Operation, Result};
use crate::syscall_counters::{Syscall, count};

const PAGE_SIZE: usize = 4096;

/// The largest mapping the stand-in makes, the cap of [`HeapPages`](crate::HeapPages) too;
/// larger ones fail with `ENOMEM` as an OS would when out of address space (miri itself
/// would stop the program instead).
const LARGEST_MAPPING: usize = crate::HeapPages::LARGEST_RESERVATION;

/// The most mapped pieces the table holds at once (the OS's mapping-count limit). Kept
/// small: every lock borrows the whole table, which miri pays for by its size.
const MAX_PIECES: usize = 1 << 10;

/// A mapped, page-aligned part `start..end` of the heap block at `block`.
#[derive(Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    /// The block as `System` returned it (its provenance covers the whole block).
    block: *mut u8,
    /// The layout the block was allocated with.
    layout: Layout,
}

const NO_PIECE: Piece = Piece {
    start: 0,
    end: 0,
    block: ptr::null_mut(),
    layout: Layout::new::<u8>(),
};

/// The mapped pieces, sorted by address and disjoint, in `pieces[..len]`.
struct Table {
    pieces: [Piece; MAX_PIECES],
    len: usize,
}

// SAFETY: the table is bookkeeping about heap blocks; its pointers are only used to free
// those blocks, under the table's lock.
unsafe impl Send for Table {}

static TABLE: Mutex<Table> = Mutex::new(Table {
    pieces: [NO_PIECE; MAX_PIECES],
    len: 0,
});

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut guard = TABLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

impl Table {
    fn live(&self) -> &[Piece] {
        &self.pieces[..self.len]
    }

    /// The index of the first piece that ends after `address`.
    fn first_ending_after(&self, address: usize) -> usize {
        self.live().partition_point(|piece| piece.end <= address)
    }

    fn insert(&mut self, index: usize, piece: Piece) {
        self.pieces.copy_within(index..self.len, index + 1);
        self.pieces[index] = piece;
        self.len += 1;
    }

    fn remove(&mut self, index: usize) -> Piece {
        let piece = self.pieces[index];
        self.pieces.copy_within(index + 1..self.len, index);
        self.len -= 1;
        piece
    }

    /// Whether `start..end` is wholly mapped (by one piece or adjacent ones).
    fn covers(&self, start: usize, end: usize) -> bool {
        let mut cursor = start;
        for piece in &self.live()[self.first_ending_after(start)..] {
            if cursor >= end || piece.start > cursor {
                break;
            }
            cursor = piece.end;
        }
        cursor >= end
    }

    /// Unmaps `start..end`: trims or splits the pieces it overlaps and frees the blocks
    /// left with no piece. Parts that are not mapped are skipped.
    fn unmap(&mut self, start: usize, end: usize) -> Result<()> {
        let mut index = self.first_ending_after(start);
        if let Some(piece) = self.live().get(index)
            && piece.start < start
            && end < piece.end
        {
            // The range is strictly inside one piece, which becomes two.
            if self.len == MAX_PIECES {
                return Err(Error::new(
                    Operation::Release,
                    Cause::Os(libc::ENOMEM),
                    start,
                    end - start,
                ));
            }
            let right = Piece {
                start: end,
                ..*piece
            };
            self.pieces[index].end = start;
            self.insert(index + 1, right);
            return Ok(());
        }
        while index < self.len && self.pieces[index].start < end {
            let piece = &mut self.pieces[index];
            if piece.start < start {
                piece.end = start;
                index += 1;
            } else if end < piece.end {
                piece.start = end;
                index += 1;
            } else {
                let gone = self.remove(index);
                if !self.live().iter().any(|piece| piece.block == gone.block) {
                    // SAFETY: `System` allocated the block with this layout, and every
                    // byte of it has now been released by its owners.
                    unsafe { System.dealloc(gone.block, gone.layout) };
                }
            }
        }
        Ok(())
    }
}

pub(super) fn page_size() -> usize {
    PAGE_SIZE
}

pub(super) fn map(len: usize, protection: Protection) -> Result<NonNull<u8>> {
    map_aligned(len, PAGE_SIZE, protection)
}

pub(super) fn map_aligned(
    len: usize,
    align: usize,
    _protection: Protection,
) -> Result<NonNull<u8>> {
    count(Syscall::Mmap);
    let out_of_memory = Error::new(Operation::Reserve, Cause::Os(libc::ENOMEM), 0, len);
    if len > LARGEST_MAPPING {
        return Err(out_of_memory);
    }
    let layout = Layout::from_size_align(len, align)
        .map_err(|_| Error::invalid(Operation::Reserve, "layout too large", 0, len))?;
    with_table(|table| {
        if table.len == MAX_PIECES {
            return Err(out_of_memory);
        }
        // SAFETY: `len` is non-zero (validated by `sys`). `System` never calls back into
        // this module, so allocating under the lock cannot deadlock.
        let block = unsafe { System.alloc_zeroed(layout) };
        let base = NonNull::new(block).ok_or(out_of_memory)?;
        let start = base.addr().get();
        let index = table.first_ending_after(start);
        table.insert(
            index,
            Piece {
                start,
                end: start + len,
                block,
                layout,
            },
        );
        Ok(base)
    })
}

/// `ptr` with the provenance of the heap block of the piece that holds it (as is when no
/// piece does).
pub(super) fn whole_mapping(ptr: NonNull<u8>) -> NonNull<u8> {
    let address = ptr.addr().get();
    with_table(|table| {
        let piece = table.live().get(table.first_ending_after(address))?;
        let block = NonNull::new(piece.block)?;
        (piece.start <= address).then(|| block.with_addr(ptr.addr()))
    })
    .unwrap_or(ptr)
}

/// Checks that a range is wholly mapped (`ENOMEM` otherwise, as the OS answers).
fn check_mapped(operation: Operation, ptr: NonNull<u8>, len: usize) -> Result<()> {
    let address = ptr.addr().get();
    if with_table(|table| table.covers(address, address + len)) {
        Ok(())
    } else {
        Err(Error::new(operation, Cause::Os(libc::ENOMEM), address, len))
    }
}

/// # Safety
/// The mapped parts of the range are owned by the caller and unused afterwards.
pub(super) unsafe fn release(ptr: NonNull<u8>, len: usize) -> Result<()> {
    count(Syscall::Munmap);
    let address = ptr.addr().get();
    with_table(|table| table.unmap(address, address + len))
}

/// # Safety
/// The range is owned by the caller.
pub(super) unsafe fn protect(
    ptr: NonNull<u8>,
    len: usize,
    _protection: Protection,
    operation: Operation,
) -> Result<()> {
    count(Syscall::Mprotect);
    check_mapped(operation, ptr, len)
}

/// # Safety
/// The range is owned by the caller and its contents are no longer needed.
pub(super) unsafe fn decommit(ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
    count(Syscall::Madvise);
    check_mapped(Operation::Decommit, ptr, len)?;
    match mode {
        Decommit::Zero => {
            // SAFETY: the range is mapped and the caller no longer needs its contents.
            unsafe { ptr.write_bytes(0, len) };
            Ok(Contents::Zeroed)
        }
        Decommit::Lazy => Ok(Contents::Unspecified),
    }
}

/// # Safety
/// The range is owned by the caller.
pub(super) unsafe fn advise_huge_pages(
    ptr: NonNull<u8>,
    len: usize,
    _advice: HugePages,
) -> Result<()> {
    count(Syscall::Madvise);
    check_mapped(Operation::AdviseHugePages, ptr, len)
}

/// # Safety
/// The range is owned by the caller and committed.
pub(super) unsafe fn populate(ptr: NonNull<u8>, len: usize) -> Result<()> {
    count(Syscall::Madvise);
    check_mapped(Operation::Populate, ptr, len)
}

/// # Safety
/// The range is owned by the caller.
pub(super) unsafe fn bind_numa(ptr: NonNull<u8>, len: usize, _node: u32) -> Result<()> {
    Err(super::unsupported(
        Operation::BindNuma,
        "no NUMA under miri",
        ptr,
        len,
    ))
}

/// # Safety
/// The range is owned by the caller.
pub(super) unsafe fn exclude_from_core_dump(ptr: NonNull<u8>, len: usize) -> Result<()> {
    count(Syscall::Madvise);
    check_mapped(Operation::ExcludeFromCoreDump, ptr, len)
}

/// # Safety
/// See `sys::remap`.
pub(super) unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    _new_len: usize,
    _placement: Placement,
) -> Result<NonNull<u8>> {
    Err(super::unsupported(
        Operation::Remap,
        "no mremap under miri",
        ptr,
        old_len,
    ))
}

/// Whether the page at `ptr` is mapped: never asked in practice, as the stand-in never
/// refuses a release; answered as if not, so that a noted range is released.
pub(super) fn is_mapped(_ptr: NonNull<u8>) -> bool {
    false
}

/// # Safety
/// The range is mapped.
pub(super) unsafe fn resident_pages(ptr: NonNull<u8>, len: usize) -> Result<usize> {
    Err(super::unsupported(
        Operation::Residency,
        "no residency under miri",
        ptr,
        len,
    ))
}
