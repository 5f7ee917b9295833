//! Every allocator of the workspace passes, through each interface it offers.

use alloc_test::{AllocatorSubject, GlobalSubject, Promises, check};
use mmap_alloc::MmapAlloc;

fn mmap_promises() -> Promises {
    Promises {
        max_align: 1 << 30,
        ..Promises::default()
    }
}

#[test]
fn mmap_alloc_passes_as_global_alloc() {
    check(|| GlobalSubject::new("MmapAlloc (GlobalAlloc)", MmapAlloc, mmap_promises())).unwrap();
}

#[test]
fn mmap_alloc_passes_as_allocator() {
    check(|| AllocatorSubject::new("MmapAlloc (Allocator)", MmapAlloc, mmap_promises())).unwrap();
}
