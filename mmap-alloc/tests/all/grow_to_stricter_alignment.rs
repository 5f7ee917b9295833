//! `Allocator::grow` to a stricter alignment returns a block aligned to the new layout,
//! also when the old block happens to meet the new alignment already and must move:
//! `mremap` places moved pages on a page boundary only, and a reservation made for the
//! move must have the new alignment, not the old one.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use pagekeep_mmap::MmapAlloc;

use crate::util::{fill, first_mismatch};

/// Sizes and alignments: large enough natively that a moved block is placed by the
/// kernel, small enough under miri (which copies instead) to stay quick.
struct Sizes {
    old_size: usize,
    new_size: usize,
    new_align: usize,
}

const SIZES: Sizes = if cfg!(miri) {
    Sizes {
        old_size: 4 << 12,
        new_size: 8 << 12,
        new_align: 1 << 20,
    }
} else {
    Sizes {
        old_size: 2 << 20,
        new_size: 4 << 20,
        new_align: 64 << 20,
    }
};

/// A block allocated with `Layout(size, old_align)` that sits at an address aligned to
/// `new_align`: allocated with the strict alignment, then shrunk (same size) to the weak
/// one, which leaves it where it is.
fn block_meeting(size: usize, old_align: usize, new_align: usize) -> NonNull<u8> {
    let strict = Layout::from_size_align(size, new_align).unwrap();
    let block = MmapAlloc.allocate(strict).unwrap().cast::<u8>();
    let weak = Layout::from_size_align(size, old_align).unwrap();
    // SAFETY: `block` is live with `strict`; `weak` is no larger.
    let block = unsafe { MmapAlloc.shrink(block, strict, weak) }
        .unwrap()
        .cast::<u8>();
    assert_eq!(block.addr().get() % new_align, 0);
    block
}

/// Maps a page right after `ptr..ptr + len` so that the block cannot grow in place; returns
/// it to be unmapped, or `None` when something is mapped there already.
#[cfg(all(target_os = "linux", not(miri)))]
fn occupy_after(ptr: NonNull<u8>, len: usize) -> Option<NonNull<u8>> {
    let page = pagekeep_mmap::sys::page_size();
    let after = ptr.as_ptr().wrapping_add(len);
    // SAFETY: MAP_FIXED_NOREPLACE maps only where nothing is mapped, or fails.
    let mapped = unsafe {
        libc::mmap(
            after.cast(),
            page,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        let error = std::io::Error::last_os_error();
        assert_eq!(error.raw_os_error(), Some(libc::EEXIST), "{error}");
        return None;
    }
    assert_eq!(mapped.cast::<u8>(), after, "an old kernel ignored the hint");
    NonNull::new(mapped.cast())
}

#[cfg(not(all(target_os = "linux", not(miri))))]
fn occupy_after(_ptr: NonNull<u8>, _len: usize) -> Option<NonNull<u8>> {
    None
}

fn grow_keeps_new_alignment(old_align: usize) {
    let Sizes {
        old_size,
        new_size,
        new_align,
    } = SIZES;
    // Several rounds: a moved block may land on a strict boundary by chance.
    for round in 0..3u8 {
        let block = block_meeting(old_size, old_align, new_align);
        // SAFETY: the block is `old_size` bytes of writable memory.
        unsafe { fill(block, old_size, round) };
        let blocker = occupy_after(block, MmapAlloc::usable_size(old_size).unwrap());
        let old = Layout::from_size_align(old_size, old_align).unwrap();
        let new = Layout::from_size_align(new_size, new_align).unwrap();
        // SAFETY: `block` is live with `old` (after the shrink).
        let grown = unsafe { MmapAlloc.grow(block, old, new) }
            .unwrap()
            .cast::<u8>();
        let address = grown.addr().get();
        assert_eq!(
            address % new_align,
            0,
            "round {round}: {address:#x} is not aligned to {new_align:#x}"
        );
        // SAFETY: the grown block is live and at least `old_size` bytes.
        assert_eq!(unsafe { first_mismatch(grown, old_size, round) }, None);
        // SAFETY: `grown` is live with `new`.
        unsafe { MmapAlloc.deallocate(grown, new) };
        // Unix only: `occupy_after` maps a blocker on Linux alone (elsewhere it is `None`).
        #[cfg(unix)]
        if let Some(blocker) = blocker {
            let page = pagekeep_mmap::sys::page_size();
            // SAFETY: the page mapped by `occupy_after`, unused.
            assert_eq!(unsafe { libc::munmap(blocker.as_ptr().cast(), page) }, 0);
        }
        #[cfg(not(unix))]
        assert!(blocker.is_none());
    }
}

#[test]
fn grow_from_a_page_aligned_block_moves_to_the_new_alignment() {
    // The old alignment is at most a page: growth may move the pages anywhere.
    grow_keeps_new_alignment(8);
}

#[test]
fn grow_from_a_weaker_large_alignment_reserves_the_new_alignment() {
    // The old alignment is above a page but below the new one: the target of the move
    // must be reserved with the new alignment.
    grow_keeps_new_alignment(if cfg!(miri) { 16 << 10 } else { 64 << 10 });
}
