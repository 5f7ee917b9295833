//! When the OS refuses (an address-space limit), every layer reports it and keeps working.
#![cfg(all(target_os = "linux", not(miri)))]

use core::alloc::{GlobalAlloc, Layout};

use pagekeep_mmap::{Cause, MmapAlloc, sys};

use crate::util::in_child;

fn virtual_memory_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmSize:"))
        .unwrap();
    let kib: usize = line["VmSize:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

#[test]
fn an_address_space_limit_gives_errors_then_service_resumes() {
    let limit = (virtual_memory_bytes() + (256 << 20)) as libc::rlim_t;
    let gib = Layout::from_size_align(1 << 30, 4096).unwrap();
    let mib = Layout::from_size_align(1 << 20, 4096).unwrap();
    // The child may not allocate from the heap (the test harness has other threads), and
    // nothing below does: errors are `Copy` and `MmapAlloc` maps directly.
    let outcome = in_child(move || {
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: sets this (child) process's own limit from a valid struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) } != 0 {
            return 10;
        }
        match sys::reserve(1 << 30) {
            Err(error) if error.cause() == Cause::Os(libc::ENOMEM) => {}
            _ => return 11,
        }
        // SAFETY: non-zero layouts; blocks are freed with their layouts.
        unsafe {
            if !MmapAlloc.alloc(gib).is_null() {
                return 12;
            }
            let block = MmapAlloc.alloc(mib);
            if block.is_null() {
                return 13;
            }
            block.write_bytes(1, 1 << 20);
            let grown = MmapAlloc.realloc(block, mib, 1 << 30);
            if !grown.is_null() || block.add((1 << 20) - 1).read() != 1 {
                return 14; // a failed realloc leaves the block intact
            }
            MmapAlloc.dealloc(block, mib);
        }
        match sys::reserve(1 << 20) {
            Ok(_) => 0,
            Err(_) => 15,
        }
    });
    assert_eq!(
        outcome,
        Ok(0),
        "exit codes: 10 setrlimit, 11-15 the checks in order"
    );
}
