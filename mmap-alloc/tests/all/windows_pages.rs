//! The Windows layer keeps the contract of the Unix one where `VirtualAlloc` differs from
//! `mmap`: a part of a reservation released alone is decommitted and the reservation goes
//! when its last part does (released twice, a part counts once); decommitted pages stay
//! accessible with their protection; `populate` refuses pages that are not read-write
//! (read-only and guard pages among them) and writes none; growth in place adds pages
//! that read as zeros; NUMA binding, which Windows cannot do for an existing range, is
//! refused as unsupported. Page states are read back with
//! `VirtualQuery`.
#![cfg(all(windows, not(miri)))]

use pagekeep_mmap::{Cause, Contents, Decommit, Placement, Protection, Region, sys};
use windows_sys::Win32::Foundation::ERROR_INVALID_PARAMETER;
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_FREE, MEM_RESERVE, PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE,
};

use crate::util::{fill, first_mismatch, page_state as state_at};

#[test]
fn a_reservation_released_in_parts_goes_with_its_last_part() {
    let page = sys::page_size();
    // Far from the small reservations other tests make, so that nothing takes the
    // address again between the last release and the check.
    let ptr = sys::map_committed(4 * page, 1 << 30).unwrap();
    // SAFETY: four committed pages.
    unsafe { fill(ptr, 4 * page, 3) };
    // SAFETY: the reservation is ours; the last two pages go (twice: the second call
    // counts nothing), then the first page, then the second.
    unsafe {
        let tail = ptr.add(2 * page);
        sys::release(tail, 2 * page).unwrap();
        sys::release(tail, 2 * page).unwrap();
        assert_eq!(
            state_at(tail).0,
            MEM_RESERVE,
            "a released part is decommitted"
        );
        assert_eq!(first_mismatch(ptr, 2 * page, 3), None);
        sys::release(ptr, page).unwrap();
        let second = ptr.add(page);
        assert_eq!(
            state_at(second),
            (MEM_COMMIT, PAGE_READWRITE, ptr.addr().get())
        );
        second.write(7);
        sys::release(second, page).unwrap();
    }
    assert_eq!(
        state_at(ptr).0,
        MEM_FREE,
        "the reservation went with its last page"
    );
}

#[test]
fn decommitted_pages_stay_accessible_with_their_protection() {
    let page = sys::page_size();
    let region = Region::reserve(4 * page).unwrap();
    // Page 0 read-write, page 1 a guard page, page 2 read-only, page 3 reserved.
    region.commit(0, 3 * page).unwrap();
    // SAFETY: committed read-write.
    unsafe { fill(region.as_ptr(), 3 * page, 5) };
    // SAFETY: nothing refers to pages 1 and 2.
    unsafe {
        region.protect(page, page, Protection::None).unwrap();
        region.protect(2 * page, page, Protection::Read).unwrap();
    }
    for mode in [Decommit::Lazy, Decommit::Zero] {
        // SAFETY: nothing relies on the contents.
        let contents = unsafe { region.decommit(0, 4 * page, mode) }.unwrap();
        let at = |index: usize| {
            // SAFETY: inside the region (no access).
            state_at(unsafe { region.as_ptr().add(index * page) })
        };
        assert_eq!((at(0).0, at(0).1), (MEM_COMMIT, PAGE_READWRITE), "{mode:?}");
        assert_eq!((at(1).0, at(1).1), (MEM_COMMIT, PAGE_NOACCESS), "{mode:?}");
        assert_eq!((at(2).0, at(2).1), (MEM_COMMIT, PAGE_READONLY), "{mode:?}");
        assert_eq!(at(3).0, MEM_RESERVE, "{mode:?}");
        // SAFETY: page 0 is committed read-write, page 2 read-only.
        unsafe {
            if contents == Contents::Zeroed {
                assert_eq!(region.as_ptr().read(), 0, "{mode:?}");
                assert_eq!(region.as_ptr().add(2 * page).read(), 0, "{mode:?}");
            }
            region.as_ptr().write(1);
        }
    }
}

#[test]
fn protecting_reserved_pages_readable_commits_them() {
    let page = sys::page_size();
    let region = Region::reserve(2 * page).unwrap();
    // SAFETY: nothing refers to the region.
    unsafe { region.protect(0, 2 * page, Protection::Read) }.unwrap();
    // SAFETY: inside the region (no access).
    let second = unsafe { region.as_ptr().add(page) };
    assert_eq!(
        (state_at(second).0, state_at(second).1),
        (MEM_COMMIT, PAGE_READONLY)
    );
    // SAFETY: committed read-only.
    assert_eq!(unsafe { second.read() }, 0);
    // Back to no access: committed pages become inaccessible.
    // SAFETY: nothing refers to the region.
    unsafe { region.protect(0, 2 * page, Protection::None) }.unwrap();
    assert_eq!(state_at(second).1, PAGE_NOACCESS);
}

#[test]
fn populate_refuses_pages_that_are_not_read_write() {
    let page = sys::page_size();
    let region = Region::reserve(3 * page).unwrap();
    region.commit(0, page).unwrap();
    // SAFETY: the pages are the region's; the refused ones are not written.
    unsafe {
        region.populate(0, page).unwrap();
        for (offset, len) in [(page, page), (0, 2 * page)] {
            let error = sys::populate(region.as_ptr().add(offset), len).unwrap_err();
            assert_eq!(
                error.raw_os_error(),
                Some(ERROR_INVALID_PARAMETER as i32),
                "{error}"
            );
        }
    }
    assert!(region.resident_pages(0, page).unwrap() <= 1);
}

#[test]
fn residency_follows_touch_and_zeroing_decommit() {
    let page = sys::page_size();
    let region = Region::reserve_committed(16 * page, page).unwrap();
    // SAFETY: committed read-write.
    unsafe { fill(region.as_ptr(), 8 * page, 1) };
    let resident = region.resident_pages(0, 16 * page).unwrap();
    assert!((8..=16).contains(&resident), "{resident} resident");
    // SAFETY: nothing relies on the contents.
    unsafe { region.decommit(0, 16 * page, Decommit::Zero) }.unwrap();
    assert_eq!(region.resident_pages(0, 16 * page).unwrap(), 0);
}

#[test]
fn growth_in_place_adds_zeroed_pages_or_is_unsupported() {
    let granularity = 64 << 10;
    let ptr = sys::map_committed(granularity, granularity).unwrap();
    // SAFETY: committed read-write.
    unsafe { fill(ptr, granularity, 9) };
    // SAFETY: the whole mapping is ours.
    match unsafe { sys::remap(ptr, granularity, 2 * granularity, Placement::MayMove) } {
        Ok(grown) => {
            assert_eq!(grown, ptr, "Windows grows in place only");
            // SAFETY: the grown block is committed read-write.
            unsafe {
                assert_eq!(first_mismatch(ptr, granularity, 9), None);
                let added = ptr.add(granularity);
                assert_eq!(added.read(), 0);
                added.write(1);
                // Two reservations now; one release takes both.
                sys::release(ptr, 2 * granularity).unwrap();
                assert_ne!(state_at(added).2, ptr.addr().get() + granularity);
            }
        }
        Err(error) => {
            assert!(matches!(error.cause(), Cause::Unsupported(_)), "{error}");
            // SAFETY: unchanged, ours.
            unsafe { sys::release(ptr, granularity) }.unwrap();
        }
    }
}

#[test]
fn numa_binding_is_unsupported_rather_than_a_silent_success() {
    let page = sys::page_size();
    let region = Region::reserve_committed(2 * page, page).unwrap();
    for node in [0, 1 << 20] {
        // SAFETY: the region's pages.
        let error = unsafe { sys::bind_numa(region.as_ptr(), 2 * page, node) }.unwrap_err();
        assert!(matches!(error.cause(), Cause::Unsupported(_)), "{error}");
        let error = region.bind_numa(0, 2 * page, node).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::Unsupported, "{error}");
    }
}

#[test]
fn populate_writes_no_read_only_or_guard_page() {
    use windows_sys::Win32::System::Memory::{PAGE_GUARD, VirtualProtect};

    let page = sys::page_size();
    let region = Region::reserve_committed(3 * page, page).unwrap();
    // SAFETY: committed read-write.
    unsafe { fill(region.as_ptr(), 3 * page, 3) };
    // SAFETY: nothing refers to the pages.
    unsafe { region.protect(0, page, Protection::Read) }.unwrap();
    let mut old = 0;
    // SAFETY: the second page is the region's; a guard page faults once on access,
    // and nothing accesses it before its guard is taken off below.
    let guarded = unsafe {
        VirtualProtect(
            region.as_ptr().add(page).as_ptr().cast(),
            page,
            PAGE_READWRITE | PAGE_GUARD,
            &mut old,
        )
    };
    assert_ne!(guarded, 0);
    for (offset, len) in [(0, page), (page, page), (0, 3 * page), (page, 2 * page)] {
        // SAFETY: the region's pages; populate must refuse before writing any.
        let error = unsafe { sys::populate(region.as_ptr().add(offset), len) }.unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(ERROR_INVALID_PARAMETER as i32),
            "{offset}+{len}: {error}"
        );
    }
    // The guard is still armed (no access went through it), and the bytes unchanged.
    // SAFETY: address arithmetic inside the region.
    let second = unsafe { region.as_ptr().add(page) };
    assert_eq!(state_at(second).1, PAGE_READWRITE | PAGE_GUARD);
    // SAFETY: the guard is taken off before the page is read.
    let unguarded =
        unsafe { VirtualProtect(second.as_ptr().cast(), page, PAGE_READWRITE, &mut old) };
    assert_ne!(unguarded, 0);
    // SAFETY: the pages are readable now.
    let mismatch = unsafe { first_mismatch(region.as_ptr(), 3 * page, 3) };
    assert_eq!(mismatch, None);
    assert_eq!(state_at(region.as_ptr()).1, PAGE_READONLY);
}
