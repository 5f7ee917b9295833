//! Arbitrary bytes, decoded into operation programs, run against the workspace's
//! allocators under the same model as the property tests (and, as cargo-fuzz builds it,
//! under AddressSanitizer).

#![no_main]

use libfuzzer_sys::fuzz_target;
use pagekeep_alloc_test::{
    AllocatorSubject, ArenaSubject, GlobalSubject, Promises, Subject, program, run,
};
use pagekeep_arena::ArenaConfig;
use pagekeep_mmap::MmapAlloc;
use pagekeep_slab::SlabHeap;

fn check(subject: &mut dyn Subject, program: &[pagekeep_alloc_test::Op], seed: u64) {
    if let Err(violation) = run(subject, program, seed) {
        panic!(
            "{} broke a promise: {violation}\nprogram: {program:?}",
            subject.name()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let (seed, rest) = data.split_at(data.len().min(8));
    let mut seed_bytes = [0u8; 8];
    seed_bytes[..seed.len()].copy_from_slice(seed);
    let seed = u64::from_le_bytes(seed_bytes);
    let program = program::decode(rest);
    let large = Promises {
        max_align: 1 << 16,
        ..Promises::default()
    };
    check(
        &mut GlobalSubject::new("SlabHeap", SlabHeap::new(), large),
        &program,
        seed,
    );
    check(&mut ArenaSubject::new(ArenaConfig::new()), &program, seed);
    let mmap = Promises {
        max_align: 1 << 30,
        ..Promises::default()
    };
    check(
        &mut AllocatorSubject::new("MmapAlloc", MmapAlloc, mmap),
        &program,
        seed,
    );
});
