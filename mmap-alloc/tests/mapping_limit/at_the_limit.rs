//! Taking the process to its mapping-count limit, and reading its mappings without
//! allocating.

use core::ptr;
use std::io::Read;

use pagekeep_mmap::{Region, sys};

/// How many mappings the process has, counted in `/proc/self/maps` without allocating
/// (an allocation could need a mapping that the limit refuses).
pub fn mappings() -> usize {
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

/// The bounds of the mapping that holds `address`, if any.
pub fn mapping_of(address: usize) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines().find_map(|line| {
        let range = line.split_whitespace().next().expect("an address range");
        let (start, end) = range.split_once('-').expect("start-end");
        let start = usize::from_str_radix(start, 16).expect("hex start");
        let end = usize::from_str_radix(end, 16).expect("hex end");
        (start..end).contains(&address).then_some((start, end))
    })
}

/// `vm.max_map_count`.
pub fn limit() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .expect("read vm.max_map_count")
        .trim()
        .parse()
        .expect("a number")
}

/// A fresh one-page shared anonymous mapping: it never merges with a neighbour, so it
/// always needs a mapping of its own. `MAP_FAILED` when the limit refuses it.
pub fn shared_page() -> *mut libc::c_void {
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

/// A committed region of `pages` pages that is one mapping of its own: left out of core
/// dumps (`VM_DONTDUMP`), it cannot merge with the process's other mappings.
pub fn lone_region(pages: usize) -> Region {
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
/// counted up to three: the kernel maps one more while the count is at the limit, none
/// above it. Unmaps them again.
pub fn new_mappings_made() -> usize {
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

/// Mappings that take the process to its limit, given back on drop. Assert only after
/// dropping it: a panic at the limit cannot allocate its message.
pub struct Filler {
    area: *mut libc::c_void,
    area_len: usize,
    singles: Vec<*mut libc::c_void>,
}

impl Filler {
    /// Splits a reservation of its own (every other page made readable, pages that
    /// cannot merge), then adds one-page shared mappings until the process has exactly
    /// `limit` mappings.
    pub fn fill(limit: usize) -> Filler {
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
