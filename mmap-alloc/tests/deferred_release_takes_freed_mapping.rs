//! At the process's mapping-count limit, freeing a whole mapping must leave room for one
//! new mapping, as it did before releases were deferred, even while a refused release of
//! the middle of a mapping waits: were the release that succeeds to go on and release
//! the waiting range, that would split its mapping in two, so the mapping just freed
//! would be taken again and the next mapping the program makes would fail (`ENOMEM`). A
//! middle range's release never makes room; it costs one mapping (its memory was
//! decommitted when it was refused, so releasing it gains only address space), so it
//! waits until a neighbour is released.
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

    use pagekeep_mmap::{Region, sys};

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

    /// A committed region of `pages` pages that is one mapping of its own: left out of
    /// core dumps (`VM_DONTDUMP`), it cannot merge with the process's other mappings.
    fn lone_region(pages: usize) -> Region {
        let page = sys::page_size();
        let region = Region::reserve_committed(pages * page, page).expect("address space");
        region
            .exclude_from_core_dump(0, pages * page)
            .expect("MADV_DONTDUMP");
        let start = region.as_ptr().addr().get();
        assert_eq!(
            mapping_of(start),
            Some((start, start + pages * page)),
            "a mapping of its own"
        );
        region
    }

    /// How many new mappings (which cannot merge with anything) the process can make,
    /// counted up to three: the kernel maps one more while the count is at the limit,
    /// none above it. Unmaps them again.
    fn new_mappings_made() -> usize {
        let mut fresh = [libc::MAP_FAILED; 3];
        for place in &mut fresh {
            *place = shared_page();
            if *place == libc::MAP_FAILED {
                break;
            }
        }
        let made = fresh
            .iter()
            .filter(|&&fresh| fresh != libc::MAP_FAILED)
            .count();
        for &fresh in &fresh[..made] {
            // SAFETY: a page mapped above, unmapped once.
            unsafe { libc::munmap(fresh, sys::page_size()) };
        }
        made
    }

    pub fn run() {
        let page = sys::page_size();
        let limit = limit();
        assert_eq!(sys::deferred_releases(), 0);

        // Without a waiting range, freeing a whole mapping at the limit leaves room for
        // two new mappings.
        let freed = lone_region(1);
        let filler = Filler::fill(limit);
        drop(freed);
        let (control_after_free, control_made) = (mappings(), new_mappings_made());
        drop(filler);
        assert_eq!(
            (control_after_free, control_made),
            (limit - 1, 2),
            "room after freeing one mapping with nothing waiting"
        );

        // A mapping the program frees to make room, and a block of three pages whose
        // middle page it gives up.
        let freed = lone_region(1);
        // Between the two, so that they do not merge with each other.
        let separator = shared_page();
        assert_ne!(separator, libc::MAP_FAILED);
        let (block, _) = lone_region(3).into_raw();
        // SAFETY: the block's first and last pages, committed read-write, ours.
        unsafe {
            block.write(1);
            block.add(2 * page).write(3);
        }
        // SAFETY: inside the three pages.
        let middle: NonNull<u8> = unsafe { block.add(page) };

        let filler = Filler::fill(limit);
        // SAFETY: the middle page of the block, given up for good; nothing touches it.
        let refused = unsafe { sys::release_or_decommit(middle, page) };
        let noted = sys::deferred_releases();
        // The program frees a whole mapping of its own (`Region::drop` releases it with
        // `release_or_decommit`): one mapping fewer.
        drop(freed);
        let after_free = mappings();
        let waiting_after_free = sys::deferred_releases();
        // As many new mappings as the control above made.
        let made = new_mappings_made();
        // Asserts only with room again: a panic at the limit cannot allocate its message.
        drop(filler);
        assert!(refused.is_err(), "the middle of a mapping at the limit");
        assert_eq!(noted, 1, "the refused middle page waits");
        println!(
            "deferred_release_takes_freed_mapping: after freeing one whole mapping at the \
             limit ({limit}): {after_free} mappings, {waiting_after_free} waiting, {made} \
             new mappings made before one was refused"
        );
        assert_eq!(
            (after_free, made),
            (limit - 1, 2),
            "freeing a whole mapping at the limit must leave its room to the program; the \
             deferred release of the waiting middle page split its mapping and took it"
        );
        // SAFETY: the block's first and last pages still hold what was written.
        unsafe {
            assert_eq!((block.read(), block.add(2 * page).read()), (1, 3));
            sys::release_or_decommit(block, page).expect("the first page");
            sys::release_or_decommit(block.add(2 * page), page).expect("the last page");
        }
        assert_eq!(sys::release_deferred(), 0);
        assert_eq!(sys::deferred_releases(), 0);
        // SAFETY: the separator mapped above, unmapped once.
        unsafe { libc::munmap(separator, page) };
    }
}
