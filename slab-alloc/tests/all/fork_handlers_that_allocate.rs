//! `pthread_atfork` handlers that allocate from a `SlabHeap`, registered before the heap
//! registers its own (its first slow path does that). glibc runs prepare handlers in the
//! reverse order of registration, so the heap's prepare handler, which takes every lock
//! of the heap, runs first, and the program's prepare handler then allocates (and its
//! parent and child handlers free) while the forking thread holds those locks. glibc's
//! own malloc allows this. The scenario needs a process in which pagekeep-slab has not
//! registered its handlers yet: it runs in a child process of this test binary, which a
//! deadlock would hang (it is killed after 60 s).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use std::process::Command;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use pagekeep_slab::SlabHeap;

static HEAP: SlabHeap = SlabHeap::new();

/// Blocks the prepare handler allocates, of as many sizes (many classes, each of which
/// leaves the empty magazines for the locked slow path, and large blocks).
const HELD: usize = 48;
static HELD_BLOCKS: [AtomicPtr<u8>; HELD] = [const { AtomicPtr::new(ptr::null_mut()) }; HELD];

fn layout(index: usize) -> Layout {
    Layout::from_size_align(100 + index * 4000, 8).unwrap()
}

extern "C" fn prepare() {
    for (index, slot) in HELD_BLOCKS.iter().enumerate() {
        // SAFETY: non-zero size.
        let block = unsafe { HEAP.alloc(layout(index)) };
        slot.store(block, Ordering::Relaxed);
    }
}

extern "C" fn parent_or_child() {
    for (index, slot) in HELD_BLOCKS.iter().enumerate() {
        let block = slot.swap(ptr::null_mut(), Ordering::Relaxed);
        if !block.is_null() {
            // SAFETY: allocated by `prepare` with this layout, freed once (swapped out).
            unsafe { HEAP.dealloc(block, layout(index)) };
        }
    }
}

#[test]
#[ignore = "child process of atfork_handlers_registered_first_may_allocate"]
fn child_atfork_handlers_registered_first() {
    if std::env::var_os("SLAB_ALLOC_ATFORK_CHILD").is_none() {
        return;
    }
    assert!(
        pagekeep_slab::threads_registered() == 0,
        "pagekeep-slab was used in this process before the test"
    );
    // SAFETY: the handlers are `extern "C"`, never unwind, and use only the heap.
    let registered = unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent_or_child), Some(parent_or_child))
    };
    assert_eq!(registered, 0);
    // The heap's first use registers its own handlers, after ours.
    let first = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: non-zero size; freed once at once.
    unsafe { HEAP.dealloc(HEAP.alloc(first), first) };
    for _ in 0..3 {
        // SAFETY: the child only allocates from the heap and calls `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let layout = Layout::from_size_align(300_000, 8).unwrap();
            // SAFETY: non-zero size; freed once.
            let ok = unsafe {
                let block = HEAP.alloc(layout);
                HEAP.dealloc(block, layout);
                !block.is_null()
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}

#[test]
#[cfg_attr(miri, ignore = "miri cannot fork or spawn processes")]
fn atfork_handlers_registered_first_may_allocate() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "fork_handlers_that_allocate::child_atfork_handlers_registered_first",
            "--test-threads=1",
        ])
        .env("SLAB_ALLOC_ATFORK_CHILD", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Not a timing check: a guard against a deadlocked fork hanging the test run.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("fork deadlocked: the heap's locks were held for the program's handlers");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the child failed: {status}");
}
