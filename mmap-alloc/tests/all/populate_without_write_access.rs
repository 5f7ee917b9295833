//! `populate` on pages that are not read-write is an error from the kernel
//! (`MADV_POPULATE_WRITE` answers `EINVAL`), not a fallback that writes every page and
//! dies of SIGSEGV: only a kernel that does not know the advice gets the fallback.
#![cfg(all(target_os = "linux", not(miri)))]

use pagekeep_mmap::{Protection, Region, sys};

use crate::util::in_child;

/// Populates the region's first `pages` pages in a child process; the child exits with 0
/// when populate returned `EINVAL`, 1 when it succeeded, 2 on another error.
fn populate_in_child(region: &Region, pages: usize) -> Result<i32, i32> {
    let len = pages * sys::page_size();
    in_child(|| {
        // SAFETY: the range lies inside the region, which the parent keeps alive. It is
        // not writable: that is what the test is about, and populate must refuse it.
        match unsafe { sys::populate(region.as_ptr(), len) } {
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => 0,
            Ok(()) => 1,
            Err(_) => 2,
        }
    })
}

/// Whether this kernel knows `MADV_POPULATE_WRITE` (Linux 5.14): a zero-length call
/// succeeds, an unknown advice is `EINVAL`.
fn kernel_knows_populate_write() -> bool {
    let region = Region::reserve(sys::page_size()).unwrap();
    // SAFETY: a zero-length advice touches nothing.
    unsafe { libc::madvise(region.as_ptr().as_ptr().cast(), 0, 23) == 0 }
}

#[test]
fn populate_refuses_reserved_pages() {
    if !kernel_knows_populate_write() {
        eprintln!("skipped: the kernel lacks MADV_POPULATE_WRITE, so populate writes pages");
        return;
    }
    let region = Region::reserve(4 * sys::page_size()).unwrap();
    assert_eq!(populate_in_child(&region, 4), Ok(0));
}

#[test]
fn populate_refuses_read_only_pages() {
    if !kernel_knows_populate_write() {
        eprintln!("skipped: the kernel lacks MADV_POPULATE_WRITE, so populate writes pages");
        return;
    }
    let page = sys::page_size();
    let region = Region::reserve_committed(4 * page, page).unwrap();
    // SAFETY: no reference into the region exists.
    unsafe { region.protect(0, 4 * page, Protection::Read) }.unwrap();
    assert_eq!(populate_in_child(&region, 4), Ok(0));
    // Pages of mixed protection are refused as well.
    region.commit(0, 2 * page).unwrap();
    assert_eq!(populate_in_child(&region, 4), Ok(0));
    // And read-write pages are populated.
    // SAFETY: committed read-write.
    unsafe { region.populate(0, 2 * page) }.unwrap();
}
