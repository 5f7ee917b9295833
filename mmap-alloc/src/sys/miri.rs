//! The OS stand-in used under miri, which cannot reserve inaccessible memory, protect it
//! or give it back in parts.
//!
//! Mappings are zeroed, page-aligned heap blocks. Each is recorded with the number of its
//! bytes still mapped, so that releasing it piecewise (the trims of an aligned
//! reservation, the tail of a shrink) frees the block when its last byte goes. Protection
//! and advice are accepted and do nothing; [`Decommit::Zero`] zeroes, as the OS does.

use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Contents, Decommit, HugePages, Placement, Protection};
use crate::error::{Cause, Error, Operation, Result};
use crate::syscall_counters::{Syscall, count};

const PAGE_SIZE: usize = 4096;

/// The largest mapping the stand-in makes; larger ones fail with `ENOMEM` as an OS would
/// when out of address space (miri itself would stop the program instead).
const LARGEST_MAPPING: usize = 1 << 32;

struct Mapping {
    base: NonNull<u8>,
    layout: Layout,
    mapped_bytes: usize,
}

// SAFETY: a `Mapping` is bookkeeping about a heap block; the pointer is only used to free
// the block, under the table's lock.
unsafe impl Send for Mapping {}

/// Mappings by base address.
static MAPPINGS: Mutex<BTreeMap<usize, Mapping>> = Mutex::new(BTreeMap::new());

fn with_mappings<R>(f: impl FnOnce(&mut BTreeMap<usize, Mapping>) -> R) -> R {
    let mut guard = MAPPINGS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
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
    if len > LARGEST_MAPPING {
        return Err(Error::new(
            Operation::Reserve,
            Cause::Os(libc::ENOMEM),
            0,
            len,
        ));
    }
    let layout = Layout::from_size_align(len, align)
        .map_err(|_| Error::invalid(Operation::Reserve, "layout too large", 0, len))?;
    // SAFETY: `len` is non-zero (validated by `sys`).
    let base = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(Error::new(
        Operation::Reserve,
        Cause::Os(libc::ENOMEM),
        0,
        len,
    ))?;
    with_mappings(|mappings| {
        mappings.insert(
            base.addr().get(),
            Mapping {
                base,
                layout,
                mapped_bytes: len,
            },
        )
    });
    Ok(base)
}

/// Checks that a range lies inside one recorded mapping.
fn check_mapped(operation: Operation, ptr: NonNull<u8>, len: usize) -> Result<()> {
    let address = ptr.addr().get();
    with_mappings(|mappings| match mappings.range(..=address).next_back() {
        Some((&base, mapping)) if address + len <= base + mapping.layout.size() => Ok(()),
        _ => Err(Error::new(operation, Cause::Os(libc::ENOMEM), address, len)),
    })
}

/// # Safety
/// The range is owned by the caller and unused afterwards.
pub(super) unsafe fn release(ptr: NonNull<u8>, len: usize) -> Result<()> {
    count(Syscall::Munmap);
    let address = ptr.addr().get();
    let freed = with_mappings(|mappings| {
        let (&base, mapping) = mappings
            .range_mut(..=address)
            .next_back()
            .filter(|(base, mapping)| address + len <= **base + mapping.layout.size())
            .ok_or(Error::new(
                Operation::Release,
                Cause::Os(libc::EINVAL),
                address,
                len,
            ))?;
        mapping.mapped_bytes = mapping.mapped_bytes.saturating_sub(len);
        Ok(if mapping.mapped_bytes == 0 {
            mappings.remove(&base)
        } else {
            None
        })
    })?;
    if let Some(mapping) = freed {
        // SAFETY: the block was allocated with this layout and every byte of it has now
        // been released by its owners.
        unsafe { dealloc(mapping.base.as_ptr(), mapping.layout) };
    }
    Ok(())
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
