//! `bind_numa` hands the kernel a node mask that includes the requested node, up to the
//! highest it accepts (1023): `mbind` reads `maxnode - 1` bits, so a mask of 1024 bits
//! passed with `maxnode = 1024` silently drops node 1023 (the kernel then sees an empty
//! mask). A seccomp filter in a child process refuses, with `EDOM`, any `mbind` whose
//! `maxnode` leaves the node out; the call that does reach the kernel fails or succeeds
//! by whether the node exists.
#![cfg(all(target_os = "linux", not(miri)))]

use pagekeep_mmap::{Region, sys};

use crate::util::in_child;

/// `BPF_STMT` / `BPF_JUMP` of `<linux/filter.h>`.
const fn instruction(code: u32, jump_true: u8, jump_false: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: jump_true,
        jf: jump_false,
        k,
    }
}

/// Installs, in the calling (child) process, a filter that fails `mbind` with `EDOM`
/// when its `maxnode` is below `node + 2`, the least that makes the kernel read bit
/// `node`. Returns false when seccomp is unavailable.
fn refuse_masks_without(node: u32) -> bool {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    // Offsets in `struct seccomp_data`: the call number, then the arguments from byte 16,
    // eight bytes each, the low half first on this little-endian target.
    const NR: u32 = 0;
    const MAXNODE_LOW: u32 = 16 + 4 * 8;
    const MAXNODE_HIGH: u32 = MAXNODE_LOW + 4;
    let filter = [
        instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, NR),
        instruction(BPF_JMP | BPF_JEQ | BPF_K, 0, 5, libc::SYS_mbind as u32),
        instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, MAXNODE_HIGH),
        instruction(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 0),
        instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, MAXNODE_LOW),
        instruction(BPF_JMP | BPF_JGE | BPF_K, 1, 0, node + 2),
        instruction(
            BPF_RET | BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EDOM as u32,
        ),
        instruction(BPF_RET | BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    const PR_SET_NO_NEW_PRIVS: libc::c_int = 38;
    const PR_SET_SECCOMP: libc::c_int = 22;
    // SAFETY: prctl with these options reads only `program`, which outlives the calls; the
    // filter applies to this (child) process alone.
    unsafe {
        libc::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const program,
            ) == 0
    }
}

#[test]
fn every_node_up_to_1023_reaches_the_kernel() {
    let page = sys::page_size();
    let region = Region::reserve(page).unwrap();
    for node in [0, 63, 64, 1022, 1023] {
        let ended = in_child(|| {
            if !refuse_masks_without(node) {
                return 3;
            }
            // SAFETY: the range is the region, which the parent keeps alive.
            match unsafe { sys::bind_numa(region.as_ptr(), page, node) } {
                Err(error) if error.raw_os_error() == Some(libc::EDOM) => 1,
                _ => 0,
            }
        });
        assert_ne!(ended, Ok(3), "seccomp filters are unavailable here");
        assert_eq!(ended, Ok(0), "node {node} was left out of the mask");
    }
}
