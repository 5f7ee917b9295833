//! At the process's mapping-count limit (`vm.max_map_count`) Linux refuses to unmap the
//! middle of a mapping (the split would need one mapping more). `release_or_decommit`
//! must then note the range and release it once it no longer lies inside a mapping (a
//! neighbour released) and there is room: at the next release that succeeds, or when
//! asked (`release_deferred`), so that a program that worked near the limit does not lose
//! a mapping and its addresses at every such release.
//!
//! Its own binary, without the test harness: it fills the process's mappings to the
//! limit, which would make any test running beside it fail to allocate.

fn main() {
    #[cfg(all(target_os = "linux", not(miri)))]
    linux::run();
}

#[cfg(all(target_os = "linux", not(miri)))]
mod linux {
    use core::ptr::{self, NonNull};
    use std::io::Read;

    use pagekeep_mmap::sys;

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

    /// Whether `address` lies in one of the process's mappings.
    fn is_mapped(address: usize) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        maps.lines().any(|line| {
            let range = line.split_whitespace().next().expect("an address range");
            let (start, end) = range.split_once('-').expect("start-end");
            let start = usize::from_str_radix(start, 16).expect("hex start");
            let end = usize::from_str_radix(end, 16).expect("hex end");
            (start..end).contains(&address)
        })
    }

    fn limit() -> usize {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .expect("read vm.max_map_count")
            .trim()
            .parse()
            .expect("a number")
    }

    /// Mappings that take the process to its limit, given back on drop.
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
                // SAFETY: a fresh shared anonymous page, used only by this filler.
                let single = unsafe {
                    libc::mmap(
                        ptr::null_mut(),
                        page,
                        libc::PROT_NONE,
                        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
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

    /// Three committed pages, one mapping, and the address of its middle page.
    fn block() -> (NonNull<u8>, NonNull<u8>) {
        let page = sys::page_size();
        let block = sys::map_committed(3 * page, page).expect("three pages");
        // SAFETY: inside the three pages.
        (block, unsafe { block.add(page) })
    }

    pub fn run() {
        let page = sys::page_size();
        let limit = limit();
        assert_eq!(sys::deferred_releases(), 0);

        // A refused release is noted; the next release that succeeds takes it too.
        let (first, middle) = block();
        let filler = Filler::fill(limit);
        // SAFETY: the middle page of the block, given up for good; nothing touches it.
        let refused = unsafe { sys::release_or_decommit(middle, page) };
        let noted = sys::deferred_releases();
        // Asserts only with room again: a panic at the limit cannot allocate its message.
        drop(filler);
        assert!(refused.is_err(), "the middle of a mapping at the limit");
        assert_eq!(noted, 1);
        assert!(is_mapped(middle.addr().get()), "still reserved while noted");
        // SAFETY: the block's first page, given up for good.
        unsafe { sys::release_or_decommit(first, page) }.expect("room again");
        assert_eq!(
            sys::deferred_releases(),
            0,
            "released with the next release"
        );
        assert!(!is_mapped(middle.addr().get()));
        // SAFETY: the block's last page, given up for good.
        unsafe { sys::release_or_decommit(middle.add(page), page) }.expect("the last page");

        // A refused release is released when asked, once there is room.
        let (first, middle) = block();
        let filler = Filler::fill(limit);
        // SAFETY: as above.
        let refused = unsafe { sys::release_or_decommit(middle, page) };
        let without_room = sys::release_deferred();
        let noted = sys::deferred_releases();
        drop(filler);
        assert!(refused.is_err(), "the middle of a mapping at the limit");
        assert_eq!(
            (without_room, noted),
            (0, 1),
            "released no range without room"
        );
        // Inside its mapping still: releasing it would split the mapping, taking one more
        // of the process's mappings for address space alone.
        assert_eq!(
            sys::release_deferred(),
            0,
            "not while it would split its mapping"
        );
        // SAFETY: the block's last page, given up for good (a plain release, which does
        // not look at the noted ranges).
        unsafe { sys::release(middle.add(page), page) }.expect("the last page");
        assert_eq!(sys::release_deferred(), 1, "at the mapping's end now");
        assert_eq!(sys::deferred_releases(), 0);
        assert!(!is_mapped(middle.addr().get()));
        // SAFETY: the block's first page, given up for good.
        unsafe { sys::release_or_decommit(first, page) }.expect("the first page");
        println!("mapping_limit: refused releases were noted and released once there was room");
    }
}
