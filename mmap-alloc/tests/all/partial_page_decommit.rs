//! One decommit contract for every page source: whole pages only. A partial page, an
//! unaligned address or a zero length is refused with `InvalidInput` and changes nothing,
//! so no source drops bytes the caller did not give up; whole pages decommit the same way
//! everywhere.

use core::ptr::NonNull;

use pagekeep_mmap::{Cause, Contents, Decommit, HeapPages, OsPages, PageSource};

fn refused(result: pagekeep_mmap::Result<Contents>) {
    let error = result.expect_err("a range that is not whole pages");
    assert!(matches!(error.cause(), Cause::InvalidInput(_)), "{error}");
}

/// Every byte of `ptr..ptr + len` is `value`.
///
/// # Safety
/// The range is readable.
unsafe fn all_equal(ptr: NonNull<u8>, len: usize, value: u8) -> bool {
    // SAFETY: readable (caller), and no `&mut` to it exists meanwhile.
    let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), len) };
    // One comparison of slices, which miri runs as a single `memcmp`.
    bytes == vec![value; len].as_slice()
}

fn decommit_takes_whole_pages_only<S: PageSource>(source: &S) {
    let page = source.page_size();
    let ptr = source.reserve_committed(3 * page, page).unwrap();
    for mode in [Decommit::Zero, Decommit::Lazy] {
        // SAFETY: committed, three pages.
        unsafe { ptr.write_bytes(0xAB, 3 * page) };
        // SAFETY: every range lies inside the live reservation, whose contents nothing
        // relies on; each call is refused before it changes anything.
        unsafe {
            refused(source.decommit(ptr, page / 2, mode));
            refused(source.decommit(ptr, page + 1, mode));
            refused(source.decommit(ptr, 0, mode));
            refused(source.decommit(ptr.add(page / 2), page, mode));
            refused(source.decommit(ptr.add(1), page, mode));
        }
        // SAFETY: still committed.
        let unchanged = unsafe { all_equal(ptr, 3 * page, 0xAB) };
        assert!(unchanged, "a refused decommit changed nothing");
        // Whole pages: the middle one.
        // SAFETY: one page of the reservation; nothing relies on its contents.
        let contents = unsafe { source.decommit(ptr.add(page), page, mode) }.unwrap();
        if mode == Decommit::Zero {
            assert_eq!(contents, Contents::Zeroed);
        }
        if contents == Contents::Zeroed {
            // SAFETY: decommitted pages stay readable.
            assert!(unsafe { all_equal(ptr.add(page), page, 0) });
        }
        // SAFETY: the pages on either side were not given up.
        unsafe {
            assert!(all_equal(ptr, page, 0xAB));
            assert!(all_equal(ptr.add(2 * page), page, 0xAB));
        }
    }
    // SAFETY: the reservation made above, released once.
    unsafe { source.release(ptr, 3 * page, page) }.unwrap();
}

#[test]
fn os_pages_decommit_whole_pages_only() {
    decommit_takes_whole_pages_only(&OsPages);
}

#[test]
fn heap_pages_decommit_whole_pages_only() {
    decommit_takes_whole_pages_only(&HeapPages);
}

#[cfg(feature = "fault-injection")]
#[test]
fn failing_sources_decommit_whole_pages_only() {
    use pagekeep_mmap::FailingSource;
    decommit_takes_whole_pages_only(&FailingSource::new(OsPages));
    decommit_takes_whole_pages_only(&FailingSource::new(HeapPages));
}

#[test]
fn every_source_checks_commit_ranges_alike() {
    fn check<S: PageSource>(source: &S) {
        let page = source.page_size();
        let ptr = source.reserve(2 * page, page).unwrap();
        // SAFETY: inside the live reservation; both calls are refused.
        unsafe {
            let error = source.commit(ptr.add(1), page).unwrap_err();
            assert!(matches!(error.cause(), Cause::InvalidInput(_)), "{error}");
            let error = source.commit(ptr, 0).unwrap_err();
            assert!(matches!(error.cause(), Cause::InvalidInput(_)), "{error}");
        }
        // SAFETY: the reservation made above, released once.
        unsafe { source.release(ptr, 2 * page, page) }.unwrap();
    }
    check(&OsPages);
    check(&HeapPages);
    #[cfg(feature = "fault-injection")]
    check(&pagekeep_mmap::FailingSource::new(HeapPages));
}

#[test]
fn region_decommit_refuses_a_partial_page_and_keeps_its_bytes() {
    let page = pagekeep_mmap::sys::page_size();
    let region = pagekeep_mmap::Region::reserve(4 * page).unwrap();
    region.commit(0, page).unwrap();
    // SAFETY: the first page is committed read-write and nothing else refers to it.
    unsafe { region.as_ptr().as_ptr().write_bytes(0xAB, page) };
    for len in [100, page - 1, page + 1] {
        // SAFETY: inside the region; the call is refused before it changes anything.
        let result = unsafe { region.decommit(0, len, Decommit::Zero) };
        let error = result.expect_err("a length that is not whole pages");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
    }
    // SAFETY: the page is committed and readable.
    assert!(unsafe { all_equal(region.as_ptr(), page, 0xAB) });
}
