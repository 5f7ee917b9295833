//! A reservation larger than the address space fails cleanly and leaves everything usable.

use core::alloc::{GlobalAlloc, Layout};
use std::io;

use allocator_api2::alloc::Allocator;
use pagekeep_mmap::{MmapAlloc, OsPages, PageSource, Region, sys};

const TWO_TO_THE_62: usize = 1 << 62;

#[test]
fn reserving_two_to_the_62_bytes_fails_with_out_of_memory() {
    let error = sys::reserve(TWO_TO_THE_62).unwrap_err();
    // `ENOMEM`, or Windows' `ERROR_NOT_ENOUGH_MEMORY`: out of memory either way.
    #[cfg(unix)]
    assert_eq!(error.raw_os_error(), Some(libc::ENOMEM), "{error}");
    assert_eq!(error.kind(), io::ErrorKind::OutOfMemory, "{error}");
    assert!(
        error
            .to_string()
            .contains(pagekeep_mmap::Operation::Reserve.call_name()),
        "{error}"
    );

    let error = Region::reserve(TWO_TO_THE_62).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::OutOfMemory);
    assert!(OsPages.reserve_committed(TWO_TO_THE_62, 1 << 30).is_err());

    let layout = Layout::from_size_align(TWO_TO_THE_62, 4096).unwrap();
    // SAFETY: a non-zero layout; null is the expected answer.
    assert!(unsafe { MmapAlloc.alloc(layout) }.is_null());
    assert!(MmapAlloc.allocate(layout).is_err());

    // Everything keeps working.
    let region = Region::reserve(1 << 20).unwrap();
    region.commit(0, 1 << 20).unwrap();
    // SAFETY: committed read-write.
    unsafe { region.as_ptr().write(1) };
}
