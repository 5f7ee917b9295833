//! A guard page faults when touched, and only the guard does.
#![cfg(all(target_os = "linux", not(miri)))]

use pagekeep_mmap::{Protection, Region, sys};

use crate::util::in_child;

#[test]
fn touching_a_guard_page_faults_and_its_neighbours_do_not() {
    let page = sys::page_size();
    let region = Region::reserve_committed(3 * page, page).unwrap();
    // SAFETY: no references into the region exist.
    unsafe { region.protect(page, page, Protection::None) }.unwrap();
    let base = region.as_ptr();
    let touch = move |offset: usize| {
        move || {
            // SAFETY: in a forked child; the write either succeeds or faults on the guard,
            // which is what is being tested.
            unsafe { base.add(offset).write_volatile(1) };
            0
        }
    };
    assert_eq!(
        in_child(touch(0)),
        Ok(0),
        "the page before the guard is writable"
    );
    assert_eq!(
        in_child(touch(2 * page)),
        Ok(0),
        "the page after the guard is writable"
    );
    assert_eq!(
        in_child(touch(page)),
        Err(libc::SIGSEGV),
        "the guard faults"
    );
    assert_eq!(
        in_child(touch(page + page / 2)),
        Err(libc::SIGSEGV),
        "anywhere in it"
    );
}
