//! Arbitrary bytes, decoded into operation programs, run against the workspace's
//! allocators under the same model as the property tests.

#![no_main]

use alloc_test::{AllocatorSubject, Promises, Subject, program, run};
use libfuzzer_sys::fuzz_target;
use mmap_alloc::MmapAlloc;

fn check(subject: &mut dyn Subject, program: &[alloc_test::Op], seed: u64) {
    if let Err(violation) = run(subject, program, seed) {
        panic!("{} broke a promise: {violation}\nprogram: {program:?}", subject.name());
    }
}

fuzz_target!(|data: &[u8]| {
    let (seed, rest) = data.split_at(data.len().min(8));
    let mut seed_bytes = [0u8; 8];
    seed_bytes[..seed.len()].copy_from_slice(seed);
    let seed = u64::from_le_bytes(seed_bytes);
    let program = program::decode(rest);
    let promises = Promises { max_align: 1 << 30, ..Promises::default() };
    check(&mut AllocatorSubject::new("MmapAlloc", MmapAlloc, promises), &program, seed);
});
