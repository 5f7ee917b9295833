//! Linux and macOS. Arguments arrive validated by `sys/mod.rs`: page-aligned addresses,
//! non-zero lengths that are whole pages.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, Ordering};

use super::{Contents, Decommit, HugePages, Placement, Protection};
use crate::error::{Error, Operation, Result};
use crate::syscall_counters::{Syscall, count};

pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|size| size.is_power_of_two())
        .unwrap_or(4096)
}

fn prot_flags(protection: Protection) -> libc::c_int {
    match protection {
        Protection::None => libc::PROT_NONE,
        Protection::Read => libc::PROT_READ,
        Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
    }
}

/// Anonymous private mapping flags. Without `MAP_NORESERVE`: Linux charges a private
/// mapping to the commit account only while it is writable, so a reservation (no access)
/// is free, while a committed mapping, and the commit of part of a reservation, pass the
/// kernel's overcommit check as glibc's mappings do (with the default heuristic, a
/// request larger than RAM plus swap fails with `ENOMEM` at once instead of being granted
/// and ending in the OOM killer). `MAP_NORESERVE` would mark the mapping unaccounted for
/// good, commits included.
const MAP_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

pub(super) fn map(len: usize, protection: Protection) -> Result<NonNull<u8>> {
    count(Syscall::Mmap);
    // SAFETY: an anonymous mapping at an address of the kernel's choosing touches no
    // existing memory.
    let address = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot_flags(protection),
            MAP_FLAGS,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(Error::last_os_error(Operation::Reserve, 0, len));
    }
    NonNull::new(address.cast::<u8>()).ok_or(Error::last_os_error(Operation::Reserve, 0, len))
}

/// The OS gives page alignment only; `sys/mod.rs` trims the padding.
pub(super) fn map_aligned(
    len: usize,
    _align: usize,
    protection: Protection,
) -> Result<NonNull<u8>> {
    map(len, protection)
}

/// # Safety
/// The range is owned by the caller and unused afterwards.
pub(super) unsafe fn release(ptr: NonNull<u8>, len: usize) -> Result<()> {
    count(Syscall::Munmap);
    // SAFETY: the caller owns the range and will not use it again.
    if unsafe { libc::munmap(ptr.as_ptr().cast(), len) } != 0 {
        return Err(Error::last_os_error(
            Operation::Release,
            ptr.addr().get(),
            len,
        ));
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
    count(Syscall::Mprotect);
    // SAFETY: the caller owns the range.
    if unsafe { libc::mprotect(ptr.as_ptr().cast(), len, prot_flags(protection)) } != 0 {
        return Err(Error::last_os_error(operation, ptr.addr().get(), len));
    }
    Ok(())
}

/// # Safety
/// The range is owned by the caller.
unsafe fn advise(
    ptr: NonNull<u8>,
    len: usize,
    advice: libc::c_int,
    operation: Operation,
) -> Result<()> {
    count(Syscall::Madvise);
    // SAFETY: the caller owns the range; advice changes no mapping it does not own.
    if unsafe { libc::madvise(ptr.as_ptr().cast(), len, advice) } != 0 {
        return Err(Error::last_os_error(operation, ptr.addr().get(), len));
    }
    Ok(())
}

/// # Safety
/// The range is owned by the caller and its contents are no longer needed.
pub(super) unsafe fn decommit(ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
    match mode {
        Decommit::Lazy => {
            // SAFETY: forwarded from the caller.
            match unsafe { advise(ptr, len, libc::MADV_FREE, Operation::Decommit) } {
                Ok(()) => Ok(Contents::Unspecified),
                // Kernels before 4.5 do not know MADV_FREE: zero instead.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    // SAFETY: forwarded from the caller.
                    unsafe { decommit_zero(ptr, len) }
                }
                Err(error) => Err(error),
            }
        }
        // SAFETY: forwarded from the caller.
        Decommit::Zero => unsafe { decommit_zero(ptr, len) },
    }
}

/// # Safety
/// The range is owned by the caller and its contents are no longer needed.
#[cfg(target_os = "linux")]
unsafe fn decommit_zero(ptr: NonNull<u8>, len: usize) -> Result<Contents> {
    // On private anonymous mappings, MADV_DONTNEED drops the pages at once and the next
    // touch maps zero-filled pages.
    // SAFETY: forwarded from the caller.
    unsafe { advise(ptr, len, libc::MADV_DONTNEED, Operation::Decommit) }?;
    Ok(Contents::Zeroed)
}

/// # Safety
/// The range is owned by the caller and its contents are no longer needed.
#[cfg(not(target_os = "linux"))]
unsafe fn decommit_zero(ptr: NonNull<u8>, len: usize) -> Result<Contents> {
    // macOS' MADV_DONTNEED keeps contents; mapping fresh anonymous pages over the range is
    // the portable way to drop them and read zeros afterwards.
    count(Syscall::Mmap);
    // SAFETY: MAP_FIXED replaces only the caller's own range.
    let address = unsafe {
        libc::mmap(
            ptr.as_ptr().cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            MAP_FLAGS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(Error::last_os_error(
            Operation::Decommit,
            ptr.addr().get(),
            len,
        ));
    }
    Ok(Contents::Zeroed)
}

/// # Safety
/// The range is owned by the caller.
#[cfg(target_os = "linux")]
pub(super) unsafe fn advise_huge_pages(
    ptr: NonNull<u8>,
    len: usize,
    advice: HugePages,
) -> Result<()> {
    let advice = match advice {
        HugePages::Prefer => libc::MADV_HUGEPAGE,
        HugePages::Avoid => libc::MADV_NOHUGEPAGE,
    };
    // SAFETY: forwarded from the caller.
    unsafe { advise(ptr, len, advice, Operation::AdviseHugePages) }
}

/// # Safety
/// The range is owned by the caller.
#[cfg(not(target_os = "linux"))]
pub(super) unsafe fn advise_huge_pages(
    ptr: NonNull<u8>,
    len: usize,
    _advice: HugePages,
) -> Result<()> {
    Err(super::unsupported(
        Operation::AdviseHugePages,
        "transparent huge pages are a Linux feature",
        ptr,
        len,
    ))
}

/// `MADV_POPULATE_WRITE` (Linux 5.14); the libc crate does not name it yet.
#[cfg(target_os = "linux")]
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// # Safety
/// The range is owned by the caller and committed read-write.
pub(super) unsafe fn populate(ptr: NonNull<u8>, len: usize) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: forwarded from the caller.
        match unsafe { advise(ptr, len, MADV_POPULATE_WRITE, Operation::Populate) } {
            Ok(()) => return Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {}
            Err(error) => return Err(error),
        }
    }
    // Older kernels and macOS: fault every page in by a write that changes nothing. An
    // atomic `fetch_or(0)` is a write to the kernel (so the page is made private and
    // resident) and is race-free even if other threads write the page meanwhile.
    let page = super::page_size();
    let mut offset = 0;
    while offset < len {
        // SAFETY: `offset < len` stays inside the caller's committed, writable range,
        // and `AtomicU8` has the size and alignment of `u8`.
        unsafe { AtomicU8::from_ptr(ptr.as_ptr().add(offset)).fetch_or(0, Ordering::Relaxed) };
        offset += page;
    }
    Ok(())
}

/// # Safety
/// The range is owned by the caller.
#[cfg(target_os = "linux")]
pub(super) unsafe fn bind_numa(ptr: NonNull<u8>, len: usize, node: u32) -> Result<()> {
    const MAX_NODES: u32 = 1024;
    if node >= MAX_NODES {
        return Err(Error::invalid(
            Operation::BindNuma,
            "NUMA node beyond 1023",
            ptr.addr().get(),
            len,
        ));
    }
    let mut mask = [0 as libc::c_ulong; (MAX_NODES / libc::c_ulong::BITS) as usize];
    mask[(node / libc::c_ulong::BITS) as usize] |= 1 << (node % libc::c_ulong::BITS);
    count(Syscall::Mbind);
    // SAFETY: mbind reads `mask` (MAX_NODES bits) and changes the policy of the caller's
    // own range only.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ptr.as_ptr(),
            len,
            libc::MPOL_BIND,
            mask.as_ptr(),
            libc::c_ulong::from(MAX_NODES),
            0 as libc::c_uint,
        )
    };
    if result != 0 {
        return Err(Error::last_os_error(
            Operation::BindNuma,
            ptr.addr().get(),
            len,
        ));
    }
    Ok(())
}

/// # Safety
/// The range is owned by the caller.
#[cfg(not(target_os = "linux"))]
pub(super) unsafe fn bind_numa(ptr: NonNull<u8>, len: usize, _node: u32) -> Result<()> {
    Err(super::unsupported(
        Operation::BindNuma,
        "NUMA binding is a Linux feature",
        ptr,
        len,
    ))
}

/// # Safety
/// The range is owned by the caller.
#[cfg(target_os = "linux")]
pub(super) unsafe fn exclude_from_core_dump(ptr: NonNull<u8>, len: usize) -> Result<()> {
    // SAFETY: forwarded from the caller.
    unsafe {
        advise(
            ptr,
            len,
            libc::MADV_DONTDUMP,
            Operation::ExcludeFromCoreDump,
        )
    }
}

/// # Safety
/// The range is owned by the caller.
#[cfg(not(target_os = "linux"))]
pub(super) unsafe fn exclude_from_core_dump(ptr: NonNull<u8>, len: usize) -> Result<()> {
    Err(super::unsupported(
        Operation::ExcludeFromCoreDump,
        "MADV_DONTDUMP is a Linux feature",
        ptr,
        len,
    ))
}

/// # Safety
/// See `sys::remap`.
#[cfg(target_os = "linux")]
pub(super) unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    placement: Placement,
) -> Result<NonNull<u8>> {
    count(Syscall::Mremap);
    // SAFETY: the caller owns the whole old mapping and, for `At`, the target range.
    let address = unsafe {
        match placement {
            Placement::InPlace => libc::mremap(ptr.as_ptr().cast(), old_len, new_len, 0),
            Placement::MayMove => {
                libc::mremap(ptr.as_ptr().cast(), old_len, new_len, libc::MREMAP_MAYMOVE)
            }
            Placement::At(at) => libc::mremap(
                ptr.as_ptr().cast(),
                old_len,
                new_len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                at.as_ptr().cast::<core::ffi::c_void>(),
            ),
        }
    };
    if address == libc::MAP_FAILED {
        return Err(Error::last_os_error(
            Operation::Remap,
            ptr.addr().get(),
            old_len,
        ));
    }
    // Like mmap's, the pointer the kernel returns carries the provenance of the mapping.
    NonNull::new(address.cast::<u8>()).ok_or(Error::last_os_error(
        Operation::Remap,
        ptr.addr().get(),
        old_len,
    ))
}

/// # Safety
/// See `sys::remap`.
#[cfg(not(target_os = "linux"))]
pub(super) unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    _new_len: usize,
    _placement: Placement,
) -> Result<NonNull<u8>> {
    Err(super::unsupported(
        Operation::Remap,
        "mremap is a Linux feature",
        ptr,
        old_len,
    ))
}

/// # Safety
/// The range is mapped.
pub(super) unsafe fn resident_pages(ptr: NonNull<u8>, len: usize) -> Result<usize> {
    let page = super::page_size();
    // A fixed buffer, asked in batches, so that the query never allocates.
    let mut vector = [0 as libc::c_uchar; 512];
    let mut resident = 0;
    let mut offset = 0;
    while offset < len {
        let batch = (len - offset).min(vector.len() * page);
        count(Syscall::Mincore);
        // SAFETY: the range is mapped (caller's promise) and `vector` holds one byte for
        // each of the `batch / page <= 512` pages asked about.
        let result = unsafe {
            libc::mincore(
                ptr.as_ptr().add(offset).cast(),
                batch,
                vector.as_mut_ptr().cast(),
            )
        };
        if result != 0 {
            return Err(Error::last_os_error(
                Operation::Residency,
                ptr.addr().get() + offset,
                batch,
            ));
        }
        resident += vector[..batch / page]
            .iter()
            .filter(|&&flags| flags & 1 != 0)
            .count();
        offset += batch;
    }
    Ok(resident)
}
