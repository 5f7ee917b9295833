//! Decommitting pages gives their memory back without changing their protection: an
//! inaccessible reservation or guard page stays inaccessible, a read-only page stays
//! read-only (and reads zeros after a zeroing decommit). Linux's `madvise` keeps
//! protection by nature; macOS, where zeroing maps fresh pages over the range, must
//! give them the protection the range had.
#![cfg(all(target_os = "linux", not(miri)))]

use pagekeep_mmap::{Decommit, Protection, Region, sys};

use crate::util::{in_child, permissions_at};

#[test]
fn decommit_keeps_reserved_and_guard_pages_inaccessible() {
    let page = sys::page_size();
    let region = Region::reserve(4 * page).unwrap();
    region.commit(page, 2 * page).unwrap();
    for mode in [Decommit::Zero, Decommit::Lazy] {
        // SAFETY: nothing refers to the contents.
        unsafe { region.decommit(0, 4 * page, mode) }.unwrap();
        // SAFETY: offsets inside the region.
        let (committed, last) =
            unsafe { (region.as_ptr().add(page), region.as_ptr().add(3 * page)) };
        assert_eq!(permissions_at(region.as_ptr()), "---p");
        assert_eq!(permissions_at(committed), "rw-p");
        assert_eq!(permissions_at(last), "---p");
    }
    let guard = region.as_ptr();
    let touched = in_child(|| {
        // SAFETY: none: the guard page must fault, which ends the child.
        unsafe { core::ptr::read_volatile(guard.as_ptr()) };
        0
    });
    assert_eq!(
        touched,
        Err(libc::SIGSEGV),
        "the guard page stays inaccessible"
    );
}

#[test]
fn decommit_keeps_read_only_pages_read_only() {
    let page = sys::page_size();
    let region = Region::reserve_committed(2 * page, page).unwrap();
    // SAFETY: committed read-write.
    unsafe { region.as_ptr().write_bytes(7, 2 * page) };
    // SAFETY: no reference into the region.
    unsafe { region.protect(0, page, Protection::Read) }.unwrap();
    // SAFETY: nothing refers to the contents.
    unsafe { region.decommit(0, 2 * page, Decommit::Zero) }.unwrap();
    assert_eq!(permissions_at(region.as_ptr()), "r--p");
    // SAFETY: readable; zeroed by the decommit.
    assert_eq!(unsafe { region.as_ptr().read() }, 0);
    // SAFETY: the second page is still read-write.
    unsafe { region.as_ptr().add(page).write(1) };
}
