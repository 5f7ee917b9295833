//! A decay hook (`SlabHeap::on_decay_pass`) is a safe `fn()` that runs inside the
//! heap's allocation and free calls. If it panics, the panic must not unwind out of
//! `GlobalAlloc::alloc` or `dealloc` (undefined behaviour): the process aborts with a
//! message, as it does for a panicking object constructor. Runs in a child process.

use core::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use pagekeep_slab::SlabHeap;

fn panicking_hook() {
    panic!("the decay hook panicked");
}

static HEAP: SlabHeap = SlabHeap::new().on_decay_pass(panicking_hook);

#[test]
#[ignore = "child process of a_panicking_decay_hook_aborts_instead_of_unwinding"]
fn child_panicking_decay_hook() {
    if std::env::var_os("SLAB_ALLOC_DECAY_HOOK_CHILD").is_none() {
        return;
    }
    let unwound = std::panic::catch_unwind(|| {
        // Blocks kept live so that the magazines run dry and the cache lock is taken:
        // a class reads the clock, and the first pass of a hooked heap is due, every 64
        // locked operations. The memory is leaked if the hook never fires.
        let layout = Layout::from_size_align(4000, 8).unwrap();
        for _ in 0..100_000 {
            // SAFETY: non-zero size.
            let block = unsafe { HEAP.alloc(layout) };
            assert!(!block.is_null());
        }
    });
    // Reaching this point means the panic unwound out of the allocator (or never
    // happened); the parent expects an abort.
    println!("unwound out of the allocator: {}", unwound.is_err());
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn a_panicking_decay_hook_aborts_instead_of_unwinding() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "panicking_decay_hook::child_panicking_decay_hook",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLAB_ALLOC_DECAY_HOOK_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("decay hook panicked inside the allocator"),
        "the child was not aborted with a message: {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
}
