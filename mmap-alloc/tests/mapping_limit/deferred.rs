//! A release refused at the limit is noted, stays reserved, and goes with the next
//! release that succeeds or on `release_deferred`, once a page next to it is unmapped.

use core::ptr::NonNull;

use pagekeep_mmap::sys;

use crate::at_the_limit::{Filler, limit, mapping_of};

fn is_mapped(address: usize) -> bool {
    mapping_of(address).is_some()
}

/// Three committed pages, one mapping, and the address of its middle page.
fn block() -> (NonNull<u8>, NonNull<u8>) {
    let page = sys::page_size();
    let block = sys::map_committed(3 * page, page).expect("three pages");
    // SAFETY: inside the three pages.
    (block, unsafe { block.add(page) })
}

pub fn refused_releases_wait_for_a_neighbour_and_go_after_it() {
    let page = sys::page_size();
    let limit = limit();
    assert_eq!(sys::deferred_releases(), 0);

    // A refused release is noted; the next release that succeeds takes it too.
    let (first, middle) = block();
    let filler = Filler::fill(limit);
    // SAFETY: the middle page of the block, given up for good; nothing touches it.
    let refused = unsafe { sys::release_or_decommit(middle, page) };
    let noted = sys::deferred_releases();
    // Asserts only with room again: a panic at the limit cannot allocate its message.
    drop(filler);
    assert!(refused.is_err(), "the middle of a mapping at the limit");
    assert_eq!(noted, 1);
    assert!(is_mapped(middle.addr().get()), "still reserved while noted");
    // SAFETY: the block's first page, given up for good.
    unsafe { sys::release_or_decommit(first, page) }.expect("room again");
    assert_eq!(
        sys::deferred_releases(),
        0,
        "released with the next release"
    );
    assert!(!is_mapped(middle.addr().get()));
    // SAFETY: the block's last page, given up for good.
    unsafe { sys::release_or_decommit(middle.add(page), page) }.expect("the last page");

    // A refused release is released when asked, once there is room.
    let (first, middle) = block();
    let filler = Filler::fill(limit);
    // SAFETY: as above.
    let refused = unsafe { sys::release_or_decommit(middle, page) };
    let without_room = sys::release_deferred();
    let noted = sys::deferred_releases();
    drop(filler);
    assert!(refused.is_err(), "the middle of a mapping at the limit");
    assert_eq!(
        (without_room, noted),
        (0, 1),
        "released no range without room"
    );
    // Inside its mapping still: releasing it would split the mapping, taking one more
    // of the process's mappings for address space alone.
    assert_eq!(
        sys::release_deferred(),
        0,
        "not while it would split its mapping"
    );
    // SAFETY: the block's last page, given up for good (a plain release, which does
    // not look at the noted ranges).
    unsafe { sys::release(middle.add(page), page) }.expect("the last page");
    assert_eq!(sys::release_deferred(), 1, "at the mapping's end now");
    assert_eq!(sys::deferred_releases(), 0);
    assert!(!is_mapped(middle.addr().get()));
    // SAFETY: the block's first page, given up for good.
    unsafe { sys::release_or_decommit(first, page) }.expect("the first page");
    println!(
        "mapping_limit: deferred: refused releases were noted and released once there was room"
    );
}
