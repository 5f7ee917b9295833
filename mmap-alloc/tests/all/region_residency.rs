//! Commit, decommit (both modes) and populate do to physical memory what they say,
//! checked with `mincore` and `/proc/self/smaps`.
#![cfg(all(target_os = "linux", not(miri)))]

use pagekeep_mmap::{Contents, Decommit, Region, sys};

/// The lines of `/proc/self/smaps` describing the mapping that holds `address`.
fn smaps_of(address: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let header_range = |line: &str| {
        let range = line.split_whitespace().next()?;
        let (from, to) = range.split_once('-')?;
        Some(usize::from_str_radix(from, 16).ok()?..usize::from_str_radix(to, 16).ok()?)
    };
    let holds = |line: &&str| header_range(line).is_some_and(|range| range.contains(&address));
    let mut lines = smaps.lines().skip_while(|line| !holds(line));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no mapping holds {address:#x}"));
    let mut block = vec![header.to_owned()];
    block.extend(
        lines
            .take_while(|line| header_range(line).is_none())
            .map(str::to_owned),
    );
    block
}

/// A `/proc/self/smaps` field, in kB, of the mapping that holds `address`.
fn smaps_field_kib(address: usize, field: &str) -> usize {
    let prefix = format!("{field}:");
    let line = smaps_of(address)
        .into_iter()
        .find(|line| line.starts_with(&prefix));
    let line = line.unwrap_or_else(|| panic!("no field {field}"));
    line[prefix.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn reserved_pages_are_not_resident_until_touched() {
    let page = sys::page_size();
    let region = Region::reserve(64 * page).unwrap();
    assert_eq!(region.resident_pages(0, 64 * page).unwrap(), 0);
    region.commit(0, 16 * page).unwrap();
    assert_eq!(
        region.resident_pages(0, 64 * page).unwrap(),
        0,
        "commit alone takes no memory"
    );
    for index in 0..16 {
        // SAFETY: the first 16 pages are committed read-write.
        unsafe { region.as_ptr().add(index * page).write(index as u8 + 1) };
    }
    assert_eq!(region.resident_pages(0, 64 * page).unwrap(), 16);
}

#[test]
fn decommit_zero_frees_pages_and_they_read_zero() {
    let page = sys::page_size();
    let region = Region::reserve_committed(16 * page, page).unwrap();
    // SAFETY: committed read-write.
    unsafe { region.as_ptr().write_bytes(0xA5, 16 * page) };
    assert_eq!(region.resident_pages(0, 16 * page).unwrap(), 16);
    // SAFETY: nothing refers to the contents.
    let contents = unsafe { region.decommit(0, 8 * page, Decommit::Zero) }.unwrap();
    assert_eq!(contents, Contents::Zeroed);
    assert_eq!(region.resident_pages(0, 16 * page).unwrap(), 8);
    for offset in (0..8 * page).step_by(512) {
        // SAFETY: still mapped read-write.
        assert_eq!(unsafe { region.as_ptr().add(offset).read() }, 0);
    }
    // SAFETY: the untouched half keeps its contents.
    assert_eq!(unsafe { region.as_ptr().add(8 * page).read() }, 0xA5);
}

#[test]
fn decommit_lazy_marks_pages_lazily_freeable() {
    let page = sys::page_size();
    // Inaccessible pages on both sides keep the kernel from merging our committed pages
    // with a neighbouring mapping, so smaps reports exactly ours.
    let region = Region::reserve(18 * page).unwrap();
    region.commit(page, 16 * page).unwrap();
    // SAFETY: one page in: the 16 committed pages.
    let pages = unsafe { region.as_ptr().add(page) };
    // SAFETY: committed read-write.
    unsafe { pages.write_bytes(0x5A, 16 * page) };
    let address = pages.addr().get();
    assert_eq!(smaps_field_kib(address, "Private_Dirty"), 16 * page / 1024);
    // SAFETY: nothing refers to the contents.
    let contents = unsafe { region.decommit(page, 16 * page, Decommit::Lazy) }.unwrap();
    if contents == Contents::Unspecified {
        // MADV_FREE: the pages are marked clean, so reclaim may drop them without
        // writing them anywhere; until then they stay resident.
        assert_eq!(smaps_field_kib(address, "Private_Dirty"), 0);
        assert_eq!(smaps_field_kib(address, "Private_Clean"), 16 * page / 1024);
    } else {
        // The kernel lacks MADV_FREE and zeroed instead, as the result says.
        assert_eq!(region.resident_pages(page, 16 * page).unwrap(), 0);
    }
    // The pages stay usable: a write cancels the lazy free of its page.
    // SAFETY: still mapped read-write.
    unsafe { pages.write(1) };
    // SAFETY: as above.
    assert_eq!(unsafe { pages.read() }, 1);
}

#[test]
fn populate_makes_pages_resident_without_touching_them() {
    let page = sys::page_size();
    let region = Region::reserve(32 * page).unwrap();
    region.commit(0, 32 * page).unwrap();
    assert_eq!(region.resident_pages(0, 32 * page).unwrap(), 0);
    // SAFETY: the whole region is committed read-write.
    unsafe { region.populate(0, 32 * page) }.unwrap();
    assert_eq!(region.resident_pages(0, 32 * page).unwrap(), 32);
    // SAFETY: populated pages are zero, as fresh pages are.
    assert_eq!(unsafe { region.as_ptr().add(31 * page).read() }, 0);
}

#[test]
fn huge_page_advice_and_core_dump_exclusion_are_accepted() {
    let region = Region::reserve_aligned(4 << 20, 2 << 20).unwrap();
    region.commit(0, 4 << 20).unwrap();
    match region.advise_huge_pages(0, 4 << 20, sys::HugePages::Prefer) {
        Ok(()) => region
            .advise_huge_pages(0, 4 << 20, sys::HugePages::Avoid)
            .unwrap(),
        // A kernel built without transparent huge pages refuses the advice.
        Err(error) => assert_eq!(error.raw_os_error(), Some(libc::EINVAL), "{error}"),
    }
    region.exclude_from_core_dump(0, 4 << 20).unwrap();
    let block = smaps_of(region.as_ptr().addr().get());
    let flags = block
        .iter()
        .find(|line| line.starts_with("VmFlags"))
        .unwrap();
    assert!(
        flags.contains(" dd"),
        "MADV_DONTDUMP shows as `dd`: {flags}"
    );
}

#[test]
fn numa_binding_to_node_zero_works_or_reports_why_not() {
    let page = sys::page_size();
    let region = Region::reserve(4 * page).unwrap();
    match region.bind_numa(0, 4 * page, 0) {
        Ok(()) => {
            region.commit(0, 4 * page).unwrap();
            // SAFETY: committed read-write.
            unsafe { region.as_ptr().write(3) };
        }
        // Kernels without NUMA support answer ENOSYS; sandboxes may answer EPERM.
        Err(error) => assert!(
            matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)),
            "{error}"
        ),
    }
    let error = region.bind_numa(0, page, 5000).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
