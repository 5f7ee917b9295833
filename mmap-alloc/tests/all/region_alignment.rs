//! Reservations of any power-of-two alignment, from a page to 1 GiB, cost one `mmap`
//! and at most two `munmap`s (counted with feature `syscall-counters`, which the
//! workspace's tests turn on).

use pagekeep_mmap::{OsPages, PageSource, Region, sys};

/// Alignments tested: every power of two from a page up to 1 GiB (256 KiB under miri, whose
/// heap-backed stand-in would have to zero the padding).
fn alignments() -> impl Iterator<Item = usize> {
    let largest: usize = if cfg!(miri) { 1 << 18 } else { 1 << 30 };
    (sys::page_size().trailing_zeros()..=largest.trailing_zeros()).map(|shift| 1 << shift)
}

#[test]
fn regions_are_aligned_from_a_page_to_a_gibibyte() {
    for align in alignments() {
        #[cfg(feature = "syscall-counters")]
        let before = pagekeep_mmap::syscall_counters::snapshot();
        let region = Region::reserve_aligned(2 * sys::page_size(), align).unwrap();
        #[cfg(feature = "syscall-counters")]
        {
            let cost = pagekeep_mmap::syscall_counters::snapshot().since(&before);
            // Windows reserves a probe, releases it and reserves the aligned range
            // exactly: two reservations and a release per try, and another try when a
            // thread of the process (another test) took the address meanwhile.
            #[cfg(windows)]
            if align <= 64 << 10 {
                assert_eq!((cost.mmap, cost.munmap), (1, 0), "alignment {align:#x}");
            } else {
                assert_eq!(cost.mmap, 2 * cost.munmap, "alignment {align:#x}: {cost:?}");
                assert!(
                    (1..=4).contains(&cost.munmap),
                    "alignment {align:#x}: {cost:?}"
                );
            }
            #[cfg(not(windows))]
            {
                assert_eq!(cost.mmap, 1, "alignment {align:#x}: {cost:?}");
                assert!(cost.munmap <= 2, "alignment {align:#x}: {cost:?}");
            }
        }
        assert_eq!(
            region.as_ptr().addr().get() % align,
            0,
            "alignment {align:#x}"
        );
        region.commit(0, sys::page_size()).unwrap();
        // SAFETY: the first page is committed read-write.
        unsafe { region.as_ptr().write(1) };
    }
}

#[test]
fn page_sources_honour_large_alignments() {
    for align in alignments() {
        let ptr = OsPages
            .reserve_committed(3 * sys::page_size(), align)
            .unwrap();
        assert_eq!(ptr.addr().get() % align, 0);
        // SAFETY: committed; the reservation is released once.
        unsafe {
            ptr.add(2 * sys::page_size()).write(7);
            OsPages.release(ptr, 3 * sys::page_size(), align).unwrap();
        }
    }
}

#[test]
fn into_raw_and_from_raw_round_trip() {
    let region = Region::reserve_aligned(sys::page_size(), 1 << 16).unwrap();
    let (ptr, len) = region.into_raw();
    assert_eq!(ptr.addr().get() % (1 << 16), 0);
    // SAFETY: the pair came from `into_raw` and is used once.
    let region = unsafe { Region::from_raw(ptr, len) };
    assert_eq!(region.as_ptr(), ptr);
    assert_eq!(region.len(), sys::page_size());
}
