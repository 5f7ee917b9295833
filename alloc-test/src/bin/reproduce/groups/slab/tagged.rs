//! Blocks that carry their tag, so that a workload notices when an allocator hands out
//! a block twice, overlaps two blocks, or loses contents on `realloc`.
//!
//! A tagged block of `size` bytes (at least 16, 8-aligned) holds the tag in its first
//! word, one word per further 4 KiB page (so every page is touched, as a program would),
//! and the tag mixed with the size in its last 8 bytes. Checking reads them all back.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

/// Alignment of every workload block.
const ALIGN: usize = 8;
/// Distance between the page words.
const PAGE: usize = 4096;

/// A live block of a workload: where, how big, and its tag.
#[derive(Debug)]
pub struct Tagged {
    ptr: NonNull<u8>,
    size: usize,
    tag: u64,
}

// SAFETY: a `Tagged` is the only handle to its block, so one thread at a time uses it;
// every allocator measured accepts frees from a thread other than the allocating one.
unsafe impl Send for Tagged {}

/// The words of a block of `size` bytes tagged `tag`: (offset, value).
fn words(size: usize, tag: u64) -> impl Iterator<Item = (usize, u64)> {
    let trailer = size - 8;
    let pages = (1..)
        .map(|page| page * PAGE)
        .take_while(move |&offset| offset + 8 <= trailer)
        .map(move |offset| (offset, tag.wrapping_add(offset as u64)));
    core::iter::once((0, tag))
        .chain(pages)
        .chain(core::iter::once((
            trailer,
            tag ^ (size as u64).rotate_left(32),
        )))
}

fn layout(size: usize) -> Layout {
    match Layout::from_size_align(size, ALIGN) {
        Ok(layout) => layout,
        Err(_) => panic!("a workload asked for an impossible block of {size} bytes"),
    }
}

impl Tagged {
    /// The smallest block a workload may ask for.
    pub const MIN_SIZE: usize = 16;

    /// Allocates `size` bytes (at least [`Tagged::MIN_SIZE`]) from `allocator` and writes
    /// the tag words. Aborts with the usual message when the allocator has no memory.
    #[inline]
    pub fn new<A: GlobalAlloc + ?Sized>(allocator: &A, size: usize, tag: u64) -> Tagged {
        assert!(
            size >= Self::MIN_SIZE,
            "tagged blocks hold at least 16 bytes"
        );
        let layout = layout(size);
        // SAFETY: a non-zero layout.
        let Some(ptr) = NonNull::new(unsafe { allocator.alloc(layout) }) else {
            std::alloc::handle_alloc_error(layout)
        };
        let block = Tagged { ptr, size, tag };
        block.fill();
        block
    }

    fn fill(&self) {
        for (offset, value) in words(self.size, self.tag) {
            // SAFETY: `offset + 8 <= size`: inside the block, which this handle owns.
            unsafe { self.ptr.add(offset).cast::<u64>().write_unaligned(value) };
        }
    }

    /// Checks the words that lie wholly inside the first `prefix` bytes.
    fn check_prefix(&self, prefix: usize) -> Result<(), String> {
        for (offset, value) in words(self.size, self.tag) {
            if offset + 8 > prefix {
                continue;
            }
            // SAFETY: `offset + 8 <= prefix <= size`: inside the block.
            let found = unsafe { self.ptr.add(offset).cast::<u64>().read_unaligned() };
            if found != value {
                return Err(format!(
                    "block {:p} of {} bytes: word at offset {offset} is {found:#018x}, \
                     expected {value:#018x} (handed out twice, overlapped, or not preserved)",
                    self.ptr, self.size
                ));
            }
        }
        Ok(())
    }

    /// Reads every tag word back.
    ///
    /// # Errors
    /// A word differs: the block was handed out twice, overlapped by another, or lost.
    #[inline]
    pub fn check(&self) -> Result<(), String> {
        self.check_prefix(self.size)
    }

    /// Checks the block, then frees it. The block is freed even when the check fails.
    ///
    /// # Errors
    /// As [`Tagged::check`].
    #[inline]
    pub fn free<A: GlobalAlloc + ?Sized>(self, allocator: &A) -> Result<(), String> {
        let checked = self.check();
        // SAFETY: allocated by `allocator` with this layout (every workload frees a block
        // with the allocator that made it), freed once: `self` is consumed.
        unsafe { allocator.dealloc(self.ptr.as_ptr(), layout(self.size)) };
        checked
    }

    /// Checks the block, resizes it to `new_size` bytes with `allocator.realloc`, checks
    /// that the contents that had to survive did, and writes the tag words of the new
    /// size.
    ///
    /// # Errors
    /// As [`Tagged::check`], before or after the resize.
    pub fn resize<A: GlobalAlloc + ?Sized>(
        &mut self,
        allocator: &A,
        new_size: usize,
    ) -> Result<(), String> {
        assert!(
            new_size >= Self::MIN_SIZE,
            "tagged blocks hold at least 16 bytes"
        );
        let before = self.check();
        // SAFETY: allocated by `allocator` with this layout; `new_size` is non-zero and
        // rounds to a valid layout at this alignment.
        let moved = unsafe { allocator.realloc(self.ptr.as_ptr(), layout(self.size), new_size) };
        let Some(moved) = NonNull::new(moved) else {
            std::alloc::handle_alloc_error(layout(new_size))
        };
        self.ptr = moved;
        let kept = self.size.min(new_size);
        let after = self.check_prefix(kept);
        self.size = new_size;
        self.fill();
        before.and(after)
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::System;

    use super::Tagged;

    #[test]
    fn a_clean_block_passes_and_a_corrupted_page_word_fails() {
        let block = Tagged::new(&System, 10_000, 42);
        assert_eq!(block.check(), Ok(()));
        // SAFETY: offset 4096 is inside the 10 000-byte block: its second page word,
        // whose lowest byte is 0x2a (42 + 4096), not 0xff.
        unsafe { block.ptr.add(4096).write(0xff) };
        assert!(block.check().is_err());
        assert!(block.free(&System).is_err());
    }

    #[test]
    fn a_block_handed_out_twice_is_caught() {
        let first = Tagged::new(&System, 64, 1);
        // What an allocator that hands the same block out again would cause.
        let second = Tagged {
            ptr: first.ptr,
            size: 64,
            tag: 2,
        };
        second.fill();
        assert!(first.check().is_err());
        assert_eq!(second.free(&System), Ok(()));
    }

    #[test]
    fn resizing_keeps_the_contents_and_tags_the_new_size() {
        let mut block = Tagged::new(&System, 100, 7);
        for size in [20_000, 16, 70_000, 300] {
            assert_eq!(block.resize(&System, size), Ok(()));
            assert_eq!(block.size, size);
            assert_eq!(block.check(), Ok(()));
        }
        assert_eq!(block.free(&System), Ok(()));
    }
}
