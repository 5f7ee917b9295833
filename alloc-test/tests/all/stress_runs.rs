//! The multi-threaded stress against every thread-safe allocator.

use alloc_test::stress;
use mmap_alloc::MmapAlloc;

fn scale(count: usize) -> usize {
    if cfg!(miri) { count / 100 } else { count }
}

#[test]
fn system_survives_the_stress() {
    let system = std::alloc::System;
    stress::producer_consumer(&system, scale(20_000)).unwrap();
    stress::churn(&system, 4, scale(20_000)).unwrap();
    stress::exiting_threads(&system, scale(200).max(2), 32).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "C code")]
fn mimalloc_survives_the_stress() {
    let mimalloc = mimalloc::MiMalloc;
    stress::producer_consumer(&mimalloc, 20_000).unwrap();
    stress::churn(&mimalloc, 4, 20_000).unwrap();
    stress::exiting_threads(&mimalloc, 200, 32).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "C code")]
fn jemalloc_survives_the_stress() {
    let jemalloc = tikv_jemallocator::Jemalloc;
    stress::producer_consumer(&jemalloc, 20_000).unwrap();
    stress::churn(&jemalloc, 4, 20_000).unwrap();
    stress::exiting_threads(&jemalloc, 200, 32).unwrap();
}

#[test]
fn mmap_alloc_survives_the_stress() {
    // Every block is a mapping: fewer of them.
    stress::producer_consumer(&MmapAlloc, scale(2_000)).unwrap();
    stress::churn(&MmapAlloc, 2, scale(2_000)).unwrap();
    stress::exiting_threads(&MmapAlloc, scale(20).max(2), 8).unwrap();
}
