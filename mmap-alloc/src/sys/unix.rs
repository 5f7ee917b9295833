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

/// Mappings made by the kernel are reached by any pointer to them.
pub(super) fn whole_mapping(ptr: NonNull<u8>) -> NonNull<u8> {
    ptr
}

/// Whether the page at `ptr` (page-aligned) is mapped: `mincore` refuses an unmapped
/// page with `ENOMEM`.
pub(super) fn is_mapped(ptr: NonNull<u8>) -> bool {
    let mut resident: libc::c_uchar = 0;
    count(Syscall::Mincore);
    // SAFETY: `mincore` only reads the page tables for one page, whatever the address, and
    // writes one byte into `resident`.
    let result =
        unsafe { libc::mincore(ptr.as_ptr().cast(), 1, ptr::from_mut(&mut resident).cast()) };
    result == 0
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
    // the portable way to drop them and read zeros afterwards. Fresh pages would be
    // read-write, which would open reserved and guard pages (Linux keeps protection): each
    // part of the range is mapped again with the protection the kernel reports for it.
    let end = ptr.addr().get() + len;
    let mut part = ptr;
    while part.addr().get() < end {
        // A part that is not mapped is refused as `madvise` refuses it.
        let (part_end, protection) = mach::protection_at(part).ok_or(Error::new(
            Operation::Decommit,
            crate::error::Cause::Os(libc::ENOMEM),
            part.addr().get(),
            len,
        ))?;
        let part_len = part_end.min(end) - part.addr().get();
        count(Syscall::Mmap);
        // SAFETY: MAP_FIXED replaces only `part..part + part_len`, inside the caller's own
        // range, with the protection it had.
        let address = unsafe {
            libc::mmap(
                part.as_ptr().cast(),
                part_len,
                protection,
                MAP_FLAGS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(Error::last_os_error(
                Operation::Decommit,
                part.addr().get(),
                part_len,
            ));
        }
        // SAFETY: `part_len` bytes further is at most the end of the caller's range.
        part = unsafe { part.add(part_len) };
    }
    Ok(Contents::Zeroed)
}

/// The one query of the Mach VM interface this module needs (the libc crate leaves Mach
/// to other crates).
#[cfg(not(target_os = "linux"))]
mod mach {
    use core::ptr::NonNull;

    /// `VM_REGION_BASIC_INFO_64` of `<mach/vm_region.h>`.
    const VM_REGION_BASIC_INFO_64: libc::c_int = 9;
    /// `VM_REGION_BASIC_INFO_COUNT_64`: the size of `vm_region_basic_info_64` in `int`s.
    const VM_REGION_BASIC_INFO_COUNT_64: libc::mach_msg_type_number_t = 9;

    unsafe extern "C" {
        /// The task port of this process (`mach_task_self()` reads it).
        static mach_task_self_: libc::mach_port_t;

        /// `mach_vm_region` of `<mach/mach_vm.h>`: the first region at or after
        /// `*address`, its bounds written back to `*address` and `*size`.
        fn mach_vm_region(
            target_task: libc::mach_port_t,
            address: *mut libc::mach_vm_address_t,
            size: *mut libc::mach_vm_size_t,
            flavor: libc::c_int,
            info: *mut libc::c_int,
            info_count: *mut libc::mach_msg_type_number_t,
            object_name: *mut libc::mach_port_t,
        ) -> libc::kern_return_t;
    }

    /// The end of the mapped region that holds `ptr` and its protection as `PROT_*`
    /// flags; `None` when `ptr` is not mapped.
    pub(super) fn protection_at(ptr: NonNull<u8>) -> Option<(usize, libc::c_int)> {
        let wanted = ptr.addr().get() as libc::mach_vm_address_t;
        let mut address = wanted;
        let mut size: libc::mach_vm_size_t = 0;
        // Room to spare over the nine `int`s the kernel writes.
        let mut info = [0 as libc::c_int; 16];
        let mut info_count = VM_REGION_BASIC_INFO_COUNT_64;
        let mut object_name: libc::mach_port_t = 0;
        // SAFETY: `mach_task_self_` is set by libSystem before any Rust code runs and never
        // changes; every out-pointer is valid for writes of its type, and `info` holds at
        // least `info_count` ints; the call only reads the address space.
        let result = unsafe {
            mach_vm_region(
                mach_task_self_,
                &mut address,
                &mut size,
                VM_REGION_BASIC_INFO_64,
                info.as_mut_ptr(),
                &mut info_count,
                &mut object_name,
            )
        };
        if result != libc::KERN_SUCCESS || address > wanted {
            return None;
        }
        // `protection` is the first field of `vm_region_basic_info_64`.
        let protection = info[0];
        let mut flags = libc::PROT_NONE;
        if protection & libc::VM_PROT_READ != 0 {
            flags |= libc::PROT_READ;
        }
        if protection & libc::VM_PROT_WRITE != 0 {
            flags |= libc::PROT_WRITE;
        }
        let end = usize::try_from(address.saturating_add(size)).unwrap_or(usize::MAX);
        Some((end, flags))
    }
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

/// Whether the kernel knows `MADV_POPULATE_WRITE`: advice on zero bytes succeeds when it
/// does and touches nothing; an unknown advice is refused with `EINVAL` before the
/// length is looked at. `ptr` is any page-aligned address.
#[cfg(target_os = "linux")]
fn knows_populate_write(ptr: NonNull<u8>) -> bool {
    count(Syscall::Madvise);
    // SAFETY: advice on an empty range changes nothing.
    unsafe { libc::madvise(ptr.as_ptr().cast(), 0, MADV_POPULATE_WRITE) == 0 }
}

/// # Safety
/// The range is owned by the caller, and committed read-write unless the kernel knows
/// `MADV_POPULATE_WRITE` (which checks the protection).
pub(super) unsafe fn populate(ptr: NonNull<u8>, len: usize) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: forwarded from the caller.
        match unsafe { advise(ptr, len, MADV_POPULATE_WRITE, Operation::Populate) } {
            Ok(()) => return Ok(()),
            // EINVAL is both "unknown advice" (before Linux 5.14) and "the range is not
            // writable" (PROT_NONE or read-only pages): only the first may fall back to
            // writing the pages, which would fault in the second.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                if knows_populate_write(ptr) {
                    return Err(error);
                }
            }
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
    // The kernel reads `maxnode - 1` bits of the mask (a quirk kept for compatibility):
    // one more than the mask holds, or node 1023 would be dropped.
    let maxnode = libc::c_ulong::from(MAX_NODES) + 1;
    count(Syscall::Mbind);
    // SAFETY: mbind reads `maxnode - 1` = MAX_NODES bits of `mask`, all of it, and changes
    // the policy of the caller's own range only.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ptr.as_ptr(),
            len,
            libc::MPOL_BIND,
            mask.as_ptr(),
            maxnode,
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
