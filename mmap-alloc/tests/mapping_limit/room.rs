//! Freeing a whole mapping at the limit leaves room for one new mapping, as it did before
//! releases were deferred, even while a refused release of the middle of a mapping waits:
//! were the release that succeeds to go on and release the waiting range, that would
//! split its mapping in two, so the mapping just freed would be taken again and the next
//! mapping the program makes would fail (`ENOMEM`). A middle range's release never makes
//! room; it costs one mapping (its memory was decommitted when it was refused, so
//! releasing it gains only address space), so it waits until a neighbour is released.

use core::ptr::NonNull;

use pagekeep_mmap::sys;

use crate::at_the_limit::{Filler, limit, lone_region, mappings, new_mappings_made, shared_page};

pub fn a_free_keeps_its_room_while_a_range_waits() {
    let page = sys::page_size();
    let limit = limit();
    assert_eq!(sys::deferred_releases(), 0);

    // Without a waiting range, freeing a whole mapping at the limit leaves room for
    // two new mappings.
    let freed = lone_region(1);
    let filler = Filler::fill(limit);
    drop(freed);
    let (control_after_free, control_made) = (mappings(), new_mappings_made());
    drop(filler);
    assert_eq!(
        (control_after_free, control_made),
        (limit - 1, 2),
        "room after freeing one mapping with nothing waiting"
    );

    // A mapping the program frees to make room, and a block of three pages whose
    // middle page it gives up.
    let freed = lone_region(1);
    // Between the two, so that they do not merge with each other.
    let separator = shared_page();
    assert_ne!(separator, libc::MAP_FAILED);
    let (block, _) = lone_region(3).into_raw();
    // SAFETY: the block's first and last pages, committed read-write, ours.
    unsafe {
        block.write(1);
        block.add(2 * page).write(3);
    }
    // SAFETY: inside the three pages.
    let middle: NonNull<u8> = unsafe { block.add(page) };

    let filler = Filler::fill(limit);
    // SAFETY: the middle page of the block, given up for good; nothing touches it.
    let refused = unsafe { sys::release_or_decommit(middle, page) };
    let noted = sys::deferred_releases();
    // The program frees a whole mapping of its own (`Region::drop` releases it with
    // `release_or_decommit`): one mapping fewer.
    drop(freed);
    let after_free = mappings();
    let waiting_after_free = sys::deferred_releases();
    // As many new mappings as the control above made.
    let made = new_mappings_made();
    // Asserts only with room again: a panic at the limit cannot allocate its message.
    drop(filler);
    assert!(refused.is_err(), "the middle of a mapping at the limit");
    assert_eq!(noted, 1, "the refused middle page waits");
    println!(
        "mapping_limit: room: after freeing one whole mapping at the \
         limit ({limit}): {after_free} mappings, {waiting_after_free} waiting, {made} \
         new mappings made before one was refused"
    );
    assert_eq!(
        (after_free, made),
        (limit - 1, 2),
        "freeing a whole mapping at the limit must leave its room to the program; the \
         deferred release of the waiting middle page split its mapping and took it"
    );
    // SAFETY: the block's first and last pages still hold what was written.
    unsafe {
        assert_eq!((block.read(), block.add(2 * page).read()), (1, 3));
        sys::release_or_decommit(block, page).expect("the first page");
        sys::release_or_decommit(block.add(2 * page), page).expect("the last page");
    }
    assert_eq!(sys::release_deferred(), 0);
    assert_eq!(sys::deferred_releases(), 0);
    // SAFETY: the separator mapped above, unmapped once.
    unsafe { libc::munmap(separator, page) };
}
