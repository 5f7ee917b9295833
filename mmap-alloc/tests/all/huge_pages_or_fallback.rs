//! `map_committed_huge` gives huge pages where the OS has them and an ordinary committed
//! mapping where it does not, and says which: missing support is never an error, bad
//! lengths always are. Under wine (no `SeLockMemoryPrivilege`) and on kernels without
//! transparent huge pages only the fallback runs; the large-page path of Windows is
//! untested here.

use std::io;

use pagekeep_mmap::{Cause, PageBacking, sys};

/// Writes the first and last byte of every page and reads them back; fresh pages read
/// zeros first.
fn check_zeroed_and_writable(mapping: &sys::HugeMapping) {
    let page = sys::page_size();
    for offset in (0..mapping.len).step_by(page) {
        for at in [offset, offset + page - 1] {
            // SAFETY: `at < mapping.len`, inside the committed read-write mapping.
            let byte = unsafe { mapping.ptr.add(at) };
            // SAFETY: as above.
            assert_eq!(unsafe { byte.read() }, 0, "fresh byte {at} of {mapping:?}");
            // SAFETY: as above.
            unsafe { byte.write(0xa5) };
            // SAFETY: as above.
            assert_eq!(unsafe { byte.read() }, 0xa5);
        }
    }
}

#[test]
fn one_byte_maps_one_aligned_huge_page_of_either_backing() {
    let huge = sys::huge_page_size();
    assert!(huge.is_power_of_two() && huge >= sys::page_size(), "{huge}");
    let mapping = sys::map_committed_huge(1).unwrap();
    assert_eq!(mapping.len, huge, "{mapping:?}");
    assert_eq!(mapping.ptr.addr().get() % huge, 0, "{mapping:?}");
    #[cfg(all(windows, not(miri)))]
    {
        // SAFETY: the mapping is ours.
        let resident = unsafe { sys::resident_pages(mapping.ptr, mapping.len) }.unwrap();
        match mapping.backing {
            // Large pages are resident from the start.
            PageBacking::Huge => assert_eq!(resident, huge / sys::page_size()),
            // Base pages take memory when touched.
            PageBacking::Base => assert_eq!(resident, 0),
        }
    }
    check_zeroed_and_writable(&mapping);
    // SAFETY: the whole mapping, not used again.
    unsafe { sys::release(mapping.ptr, mapping.len) }.unwrap();
}

#[test]
fn lengths_round_up_to_whole_huge_pages() {
    let huge = sys::huge_page_size();
    for (asked, expected) in [
        (huge, huge),
        (huge + 1, 2 * huge),
        (2 * huge - sys::page_size(), 2 * huge),
    ] {
        let mapping = sys::map_committed_huge(asked).unwrap();
        assert_eq!(mapping.len, expected, "asked {asked}: {mapping:?}");
        assert_eq!(mapping.ptr.addr().get() % huge, 0, "{mapping:?}");
        // SAFETY: the last byte is inside the committed read-write mapping.
        unsafe { mapping.ptr.add(mapping.len - 1).write(1) };
        // SAFETY: the whole mapping, not used again.
        unsafe { sys::release(mapping.ptr, mapping.len) }.unwrap();
    }
}

#[test]
fn zero_and_overflowing_lengths_are_invalid_input() {
    let huge = sys::huge_page_size();
    for len in [
        0,
        usize::MAX,
        usize::MAX - huge + 2,
        usize::MAX - sys::page_size(),
    ] {
        let error = sys::map_committed_huge(len).unwrap_err();
        assert!(
            matches!(error.cause(), Cause::InvalidInput(_)),
            "{len}: {error}"
        );
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn a_length_beyond_the_address_space_is_out_of_memory_not_a_fallback_loop() {
    let error = sys::map_committed_huge(1 << 62).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::OutOfMemory);
}

#[test]
fn the_fallback_is_an_ordinary_mapping_that_releases_in_parts() {
    let huge = sys::huge_page_size();
    let mapping = sys::map_committed_huge(2 * huge).unwrap();
    if mapping.backing == PageBacking::Huge {
        // Large pages on Windows are released whole only (see `map_committed_huge`).
        #[cfg(all(windows, not(miri)))]
        {
            // SAFETY: the whole mapping, not used again.
            unsafe { sys::release(mapping.ptr, mapping.len) }.unwrap();
            return;
        }
    }
    check_zeroed_and_writable(&mapping);
    // SAFETY: the second half of the mapping, not used again.
    unsafe { sys::release(mapping.ptr.add(huge), huge) }.unwrap();
    // SAFETY: the first half is still mapped read-write.
    unsafe { mapping.ptr.add(huge - 1).write(3) };
    // SAFETY: the first half, not used again.
    unsafe { sys::release(mapping.ptr, huge) }.unwrap();
}
