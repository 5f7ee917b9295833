//! Reserve / commit / decommit / release cycles through this crate against the same four
//! system calls made directly, in the same run. No page is touched, so that where the
//! kernel places a mapping (and whether a first touch faults in a huge page) does not
//! swamp the cost of the layer.
//!
//! Target: within 5% of the raw calls. Run: `cargo bench -p pagekeep-mmap --bench page_cycles`.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use core::hint::black_box;
#[cfg(unix)]
use core::ptr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pagekeep_mmap::{Decommit, OsPages, PageSource, Region};

const SIZES: [(usize, &str); 3] = [(64 << 10, "64KiB"), (2 << 20, "2MiB"), (64 << 20, "64MiB")];

/// One cycle by hand: mmap(PROT_NONE), mprotect(RW), madvise(MADV_FREE), munmap. Unix
/// only: these are the calls the Unix layer makes.
#[cfg(unix)]
fn raw_cycle(len: usize) {
    // SAFETY: a fresh anonymous mapping, used within its length, unmapped once.
    unsafe {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let ptr = libc::mmap(ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0);
        assert_ne!(ptr, libc::MAP_FAILED);
        assert_eq!(
            libc::mprotect(ptr, len, libc::PROT_READ | libc::PROT_WRITE),
            0
        );
        assert_eq!(libc::madvise(ptr, len, libc::MADV_FREE), 0);
        assert_eq!(libc::munmap(ptr, len), 0);
    }
}

/// The same cycle through `OsPages`, the source every allocator here uses.
fn source_cycle(len: usize) {
    let ptr = OsPages.reserve(len, 4096).unwrap();
    // SAFETY: the reservation just made, used within its length, released once.
    unsafe {
        OsPages.commit(ptr, len).unwrap();
        OsPages.decommit(ptr, len, Decommit::Lazy).unwrap();
        OsPages.release(ptr, len, 4096).unwrap();
    }
}

/// The same cycle through `Region`.
fn region_cycle(len: usize) {
    let region = Region::reserve(len).unwrap();
    region.commit(0, len).unwrap();
    // SAFETY: nothing refers to the contents when decommitting.
    unsafe {
        region.decommit(0, len, Decommit::Lazy).unwrap();
    }
    drop(black_box(region));
}

fn page_cycles(c: &mut Criterion) {
    let mut group = c.benchmark_group("page_cycle");
    for (len, name) in SIZES {
        #[cfg(unix)]
        group.bench_with_input(BenchmarkId::new("raw_libc", name), &len, |b, &len| {
            b.iter(|| raw_cycle(black_box(len)))
        });
        group.bench_with_input(BenchmarkId::new("os_pages", name), &len, |b, &len| {
            b.iter(|| source_cycle(black_box(len)))
        });
        group.bench_with_input(BenchmarkId::new("region", name), &len, |b, &len| {
            b.iter(|| region_cycle(black_box(len)))
        });
    }
    group.finish();
}

criterion_group!(benches, page_cycles);
criterion_main!(benches);
