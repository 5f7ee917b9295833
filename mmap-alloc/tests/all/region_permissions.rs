//! Reserve, commit and protect set the permissions `/proc/self/maps` reports.
#![cfg(all(target_os = "linux", not(miri)))]

use pagekeep_mmap::{Protection, Region, sys};

use crate::util::permissions_at;

#[test]
fn permissions_follow_reserve_commit_and_protect() {
    let page = sys::page_size();
    let region = Region::reserve(4 * page).unwrap();
    let second = |region: &Region| {
        // SAFETY: one page into a four-page region.
        unsafe { region.as_ptr().add(page) }
    };
    assert_eq!(
        permissions_at(region.as_ptr()),
        "---p",
        "reserved: no access"
    );
    region.commit(0, 4 * page).unwrap();
    assert_eq!(permissions_at(region.as_ptr()), "rw-p");
    // SAFETY: no references into the region exist.
    unsafe { region.protect(page, page, Protection::Read) }.unwrap();
    assert_eq!(permissions_at(second(&region)), "r--p");
    assert_eq!(
        permissions_at(region.as_ptr()),
        "rw-p",
        "only the part changes"
    );
    // SAFETY: as above.
    unsafe { region.protect(page, page, Protection::None) }.unwrap();
    assert_eq!(permissions_at(second(&region)), "---p");
    let committed = Region::reserve_committed(page, page).unwrap();
    assert_eq!(
        permissions_at(committed.as_ptr()),
        "rw-p",
        "one call, committed"
    );
}
