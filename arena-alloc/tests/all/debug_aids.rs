//! Debug aids: poisoned memory after reset and free; protected free arenas fault at once.

#[cfg(feature = "debug-poison")]
#[test]
fn reset_poisons_what_was_allocated() {
    use core::alloc::Layout;
    use pagekeep_arena::{Arena, POISON_BYTE};

    let mut arena = Arena::new();
    let layout = Layout::array::<u8>(64).unwrap();
    let first = arena.alloc_layout(layout);
    // SAFETY: 64 writable bytes.
    unsafe { first.write_bytes(1, 64) };
    arena.reset();
    let again = arena.alloc_layout(layout);
    assert_eq!(again, first, "reset reuses the same memory");
    // SAFETY: 64 bytes, written by the poisoning reset.
    let bytes = unsafe { core::slice::from_raw_parts(again.as_ptr(), 64) };
    assert!(bytes.iter().all(|&b| b == POISON_BYTE));
}

#[cfg(feature = "debug-protect")]
#[test]
#[cfg_attr(miri, ignore = "needs mprotect and a child process")]
fn use_after_release_faults_in_a_protected_pool() {
    use pagekeep_arena::{ArenaPool, PoolConfig};
    use std::os::unix::process::ExitStatusExt;

    const CHILD: &str = "ARENA_ALLOC_PROTECT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let pool = ArenaPool::new(PoolConfig::new(2, 64 << 10)).unwrap();
        let lease = pool.try_acquire().unwrap();
        let stale = lease.alloc(5u64) as *mut u64;
        drop(lease);
        // SAFETY: none: this is the use after release the feature must catch. The page
        // is mapped PROT_NONE, so the write faults before it corrupts anything.
        unsafe { stale.write_volatile(6) };
        std::process::exit(0);
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "debug_aids::use_after_release_faults_in_a_protected_pool",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap()
        .status;
    // SIGSEGV (11) on Linux; macOS may report the protection fault as SIGBUS (10).
    assert!(matches!(status.signal(), Some(10 | 11)), "{status:?}");
}

#[test]
fn check_invariants_holds_on_a_fresh_and_a_used_arena() {
    let arena = pagekeep_arena::Arena::new();
    arena.check_invariants();
    arena.alloc_slice_copy(&[1u8; 100]);
    arena.check_invariants();
    assert_eq!(arena.stats().allocated_bytes, 100);
}
