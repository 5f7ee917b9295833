//! Allocators known to be right pass: if one failed, the suite would be wrong.

use pagekeep_alloc_test::{BumpaloSubject, GlobalSubject, Promises, check};

fn large_alignments() -> Promises {
    Promises {
        max_align: 1 << 20,
        ..Promises::default()
    }
}

#[test]
fn system_passes() {
    check(|| GlobalSubject::new("System", std::alloc::System, large_alignments())).unwrap();
}

#[test]
#[cfg(feature = "peers")]
#[cfg_attr(miri, ignore = "C code")]
fn mimalloc_passes() {
    check(|| GlobalSubject::new("mimalloc", mimalloc::MiMalloc, large_alignments())).unwrap();
}

#[test]
#[cfg(feature = "peers")]
#[cfg_attr(miri, ignore = "C code")]
fn jemalloc_passes() {
    check(|| GlobalSubject::new("jemalloc", tikv_jemallocator::Jemalloc, large_alignments()))
        .unwrap();
}

#[test]
fn bumpalo_passes() {
    check(BumpaloSubject::new).unwrap();
}
