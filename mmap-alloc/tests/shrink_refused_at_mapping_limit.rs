//! At the process's mapping-count limit, shrinking a large block of `MmapAlloc` in place
//! must not fail: glibc's `realloc` keeps an `mmap`ed block whose tail it cannot give
//! back, and Rust's collections abort (`handle_alloc_error`) when a shrink returns null.
//! When the block shares its mapping with the next block (the kernel merges adjacent
//! anonymous mappings), the tail is the middle of a mapping and Linux refuses to unmap
//! it at the limit (`ENOMEM`); `MmapAlloc` then gives the tail's memory back
//! (`release_or_decommit`) and the range waits to be released, and the shrink succeeds.
//!
//! Its own binary, without the test harness: it fills the process's mappings to the
//! limit, which would make any test running beside it fail to allocate.

fn main() {
    #[cfg(all(target_os = "linux", not(miri)))]
    linux::run();
}

#[cfg(all(target_os = "linux", not(miri)))]
mod linux {
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr;
    use std::io::Read;

    use pagekeep_mmap::{MmapAlloc, sys};

    /// How many mappings the process has, counted in `/proc/self/maps` without
    /// allocating (an allocation could need a mapping that the limit refuses).
    fn mappings() -> usize {
        let mut maps = std::fs::File::open("/proc/self/maps").expect("open /proc/self/maps");
        let mut buffer = [0_u8; 1 << 16];
        let mut lines = 0;
        loop {
            let read = maps.read(&mut buffer).expect("read /proc/self/maps");
            if read == 0 {
                break;
            }
            lines += buffer[..read].iter().filter(|&&byte| byte == b'\n').count();
        }
        // `[vsyscall]` is listed but is not one of the process's mappings.
        lines - 1
    }

    /// The bounds of the mapping that holds `address`.
    fn mapping_of(address: usize) -> Option<(usize, usize)> {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        maps.lines().find_map(|line| {
            let range = line.split_whitespace().next().expect("an address range");
            let (start, end) = range.split_once('-').expect("start-end");
            let start = usize::from_str_radix(start, 16).expect("hex start");
            let end = usize::from_str_radix(end, 16).expect("hex end");
            (start..end).contains(&address).then_some((start, end))
        })
    }

    fn limit() -> usize {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .expect("read vm.max_map_count")
            .trim()
            .parse()
            .expect("a number")
    }

    /// Mappings that take the process to its limit, given back on drop (as in
    /// `mapping_limit.rs`).
    struct Filler {
        area: *mut libc::c_void,
        area_len: usize,
        singles: Vec<*mut libc::c_void>,
    }

    impl Filler {
        /// Splits a reservation of its own (every other page made readable, pages that
        /// cannot merge), then adds one-page shared mappings (which never merge with
        /// anything) until the process has exactly `limit` mappings.
        fn fill(limit: usize) -> Filler {
            let page = sys::page_size();
            let area_len = (limit + 1000) * page;
            // SAFETY: a fresh anonymous reservation, used only by this filler.
            let area = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    area_len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(area, libc::MAP_FAILED);
            // The first split adds one mapping, each later one two: stop 8 short.
            let short = limit.checked_sub(mappings() + 8).expect("room to fill");
            let splits = short.div_ceil(2);
            for split in 0..splits {
                // SAFETY: a page of the filler's own reservation.
                let changed = unsafe {
                    libc::mprotect(
                        area.cast::<u8>().add(2 * split * page).cast(),
                        page,
                        libc::PROT_READ,
                    )
                };
                assert_eq!(changed, 0, "split {split} of {splits}");
            }
            let mut singles = Vec::with_capacity(16);
            while mappings() < limit {
                let single = shared_page();
                assert_ne!(single, libc::MAP_FAILED);
                singles.push(single);
            }
            assert_eq!(mappings(), limit, "filled to the limit");
            Filler {
                area,
                area_len,
                singles,
            }
        }
    }

    impl Drop for Filler {
        fn drop(&mut self) {
            let page = sys::page_size();
            for &single in &self.singles {
                // SAFETY: the filler's own page, unmapped once.
                unsafe { libc::munmap(single, page) };
            }
            // SAFETY: the filler's own reservation, unmapped once, whole.
            unsafe { libc::munmap(self.area, self.area_len) };
        }
    }

    /// A fresh one-page shared anonymous mapping: it never merges with a neighbour, so it
    /// always needs a mapping of its own. `MAP_FAILED` when the limit refuses it.
    fn shared_page() -> *mut libc::c_void {
        // SAFETY: a fresh shared anonymous page at an address of the kernel's choosing.
        unsafe {
            libc::mmap(
                ptr::null_mut(),
                sys::page_size(),
                libc::PROT_NONE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        }
    }

    pub fn run() {
        let page = sys::page_size();
        let limit = limit();
        let layout = Layout::from_size_align(4 * page, page).expect("a layout");
        // Two blocks one after the other: the kernel places the second right below the
        // first and merges them into one mapping, so the lower one's tail is a middle.
        // SAFETY: a non-zero-sized layout.
        let (upper, lower) = unsafe { (MmapAlloc.alloc(layout), MmapAlloc.alloc(layout)) };
        assert!(!upper.is_null() && !lower.is_null());
        let lower_address = lower.addr();
        let (_, lower_mapping_end) = mapping_of(lower_address).expect("mapped");
        assert!(
            lower_mapping_end > lower_address + 4 * page,
            "the lower block shares its mapping with its neighbour"
        );
        // SAFETY: inside the lower block, ours.
        unsafe { lower.write(7) };

        let filler = Filler::fill(limit);
        // SAFETY: a live block of `MmapAlloc` with `layout`, shrunk to one page.
        let shrunk = unsafe { MmapAlloc.realloc(lower, layout, page) };
        // Asserts only with room again: a panic at the limit cannot allocate its message.
        drop(filler);
        println!(
            "shrink_refused_at_mapping_limit: shrinking a block whose tail is the middle of \
             a mapping at the limit ({limit}) returned {}",
            if shrunk.is_null() {
                "null"
            } else {
                "the block"
            }
        );
        let (block, size) = if shrunk.is_null() {
            (lower, 4 * page)
        } else {
            (shrunk, page)
        };
        // SAFETY: the block, live with `size` bytes, still holds what was written.
        unsafe {
            assert_eq!(block.read(), 7);
            MmapAlloc.dealloc(
                block,
                Layout::from_size_align(size, page).expect("a layout"),
            );
            MmapAlloc.dealloc(upper, layout);
        }
        assert!(
            !shrunk.is_null(),
            "a shrink in place at the mapping-count limit must not fail"
        );
    }
}
