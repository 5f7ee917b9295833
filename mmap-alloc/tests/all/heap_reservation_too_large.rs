//! `HeapPages` refuses reservations beyond its cap with `ENOMEM`, as the OS refuses one
//! beyond its address space, instead of asking the heap (under miri, a 1 TiB request
//! would get the interpreter killed).

use pagekeep_mmap::{Cause, HeapPages, Operation, PageSource, sys};

#[test]
fn heap_pages_refuse_reservations_beyond_their_cap() {
    let page = sys::page_size();
    for len in [1 << 40, HeapPages::LARGEST_RESERVATION + page] {
        for committed in [false, true] {
            let result = if committed {
                HeapPages.reserve_committed(len, page)
            } else {
                HeapPages.reserve(len, page)
            };
            let error = result.expect_err("beyond the cap");
            assert_eq!(error.cause(), Cause::Os(libc::ENOMEM), "{error}");
            assert_eq!(error.operation(), Operation::Reserve);
        }
    }
    // The source stays usable.
    let ptr = HeapPages.reserve_committed(page, page).unwrap();
    // SAFETY: the reservation made just above, released once.
    unsafe { HeapPages.release(ptr, page, page) }.unwrap();
}
