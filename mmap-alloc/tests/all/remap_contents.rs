//! Growing and shrinking blocks keeps their contents (by `mremap` on Linux, by copying
//! elsewhere and under miri).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use pagekeep_mmap::{MmapAlloc, sys};

use crate::util::{fill, first_mismatch};

fn sizes() -> (usize, usize) {
    if cfg!(miri) {
        (3 * 4096 + 5, 9 * 4096)
    } else {
        (1 << 20, 64 << 20)
    }
}

#[test]
fn growth_keeps_contents() {
    let (small, large) = sizes();
    let layout = Layout::from_size_align(small, 8).unwrap();
    // SAFETY: non-zero layouts; each block is used within its size and freed once.
    unsafe {
        let block = NonNull::new(MmapAlloc.alloc(layout)).unwrap();
        fill(block, small, 3);
        // A second block mapped next to the first makes in-place growth less likely,
        // so the moving path is exercised too.
        let neighbour = MmapAlloc.alloc(layout);
        let grown = NonNull::new(MmapAlloc.realloc(block.as_ptr(), layout, large)).unwrap();
        assert_eq!(first_mismatch(grown, small, 3), None);
        // The new part is zeroed and writable.
        assert_eq!(grown.add(large - 1).read(), 0);
        grown.add(large - 1).write(9);
        MmapAlloc.dealloc(grown.as_ptr(), Layout::from_size_align(large, 8).unwrap());
        MmapAlloc.dealloc(neighbour, layout);
    }
}

#[test]
fn shrinking_keeps_the_prefix_and_gives_the_tail_back() {
    let (small, large) = sizes();
    let layout = Layout::from_size_align(large, 8).unwrap();
    // SAFETY: as above.
    unsafe {
        let block = NonNull::new(MmapAlloc.alloc(layout)).unwrap();
        fill(block, large, 5);
        let shrunk = NonNull::new(MmapAlloc.realloc(block.as_ptr(), layout, small)).unwrap();
        assert_eq!(shrunk, block, "shrinking happens in place");
        assert_eq!(first_mismatch(shrunk, small, 5), None);
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            let tail = shrunk.add(sys::round_to_pages(small).unwrap());
            let error = sys::resident_pages(tail, sys::page_size()).unwrap_err();
            assert_eq!(
                error.raw_os_error(),
                Some(libc::ENOMEM),
                "the tail is unmapped"
            );
        }
        MmapAlloc.dealloc(shrunk.as_ptr(), Layout::from_size_align(small, 8).unwrap());
    }
}

#[test]
fn growth_of_an_over_aligned_block_keeps_its_alignment() {
    let align = if cfg!(miri) { 1 << 16 } else { 2 << 20 };
    let (small, large) = sizes();
    let layout = Layout::from_size_align(small, align).unwrap();
    // SAFETY: as above.
    unsafe {
        let block = NonNull::new(MmapAlloc.alloc(layout)).unwrap();
        assert_eq!(block.addr().get() % align, 0);
        fill(block, small, 7);
        let neighbour = MmapAlloc.alloc(layout);
        let grown = NonNull::new(MmapAlloc.realloc(block.as_ptr(), layout, large)).unwrap();
        assert_eq!(grown.addr().get() % align, 0, "alignment survives the move");
        assert_eq!(first_mismatch(grown, small, 7), None);
        MmapAlloc.dealloc(
            grown.as_ptr(),
            Layout::from_size_align(large, align).unwrap(),
        );
        MmapAlloc.dealloc(neighbour, layout);
    }
}

#[test]
fn realloc_within_the_same_pages_returns_the_same_block() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: as above.
    unsafe {
        let block = MmapAlloc.alloc(layout);
        block.write_bytes(4, 100);
        let same = MmapAlloc.realloc(block, layout, sys::page_size());
        assert_eq!(same, block);
        assert_eq!(same.add(99).read(), 4);
        MmapAlloc.dealloc(same, Layout::from_size_align(sys::page_size(), 8).unwrap());
    }
}
