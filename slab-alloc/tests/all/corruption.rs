//! Debug builds detect double frees and foreign pointers, with a clear message and an
//! abort (never an unwind through the allocator). Each case runs in a child process.

use std::process::Command;

/// Runs the ignored test `name` of this binary in a child with the trigger set.
fn run_child(name: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLAB_ALLOC_CORRUPTION_CHILD", "1")
        .output()
        .unwrap()
}

fn in_child() -> bool {
    std::env::var_os("SLAB_ALLOC_CORRUPTION_CHILD").is_some()
}

fn expect_abort(name: &str, message: &str) {
    let output = run_child(name);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the child survived: {stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in: {stderr}"
    );
}

#[test]
#[ignore = "child process of double_free_is_detected"]
fn child_double_free() {
    if in_child() {
        let cache = slab_alloc::SlabCache::new(64, 8).unwrap();
        let object = cache.alloc();
        // SAFETY: deliberately wrong: freed twice, which the debug check must catch.
        unsafe {
            cache.free(object);
            cache.free(object);
        }
    }
}

#[test]
#[ignore = "child process of heap_double_free_is_detected"]
fn child_heap_double_free() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let heap = slab_alloc::SlabHeap::new();
        let layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: deliberately wrong: freed twice.
        unsafe {
            let block = heap.alloc(layout);
            heap.dealloc(block, layout);
            heap.dealloc(block, layout);
        }
    }
}

#[test]
#[ignore = "child process of interior_pointer_free_is_detected"]
fn child_interior_pointer() {
    if in_child() {
        let cache = slab_alloc::SlabCache::new(64, 8).unwrap();
        let object = cache.alloc();
        // SAFETY: deliberately wrong: not a pointer the cache handed out.
        unsafe { cache.free(object.add(8)) };
    }
}

#[test]
#[ignore = "child process of other_cache_pointer_free_is_detected"]
fn child_other_cache() {
    if in_child() {
        let a = slab_alloc::SlabCache::new(64, 8).unwrap();
        let b = slab_alloc::SlabCache::new(64, 8).unwrap();
        let object = a.alloc();
        // SAFETY: deliberately wrong: freed into a cache that did not allocate it.
        unsafe { b.free(object) };
    }
}

#[test]
#[cfg(debug_assertions)]
#[cfg_attr(miri, ignore = "spawns processes")]
fn double_free_is_detected() {
    expect_abort("corruption::child_double_free", "double free");
}

#[test]
#[cfg(debug_assertions)]
#[cfg_attr(miri, ignore = "spawns processes")]
fn heap_double_free_is_detected() {
    expect_abort("corruption::child_heap_double_free", "double free");
}

#[test]
#[cfg(debug_assertions)]
#[cfg_attr(miri, ignore = "spawns processes")]
fn interior_pointer_free_is_detected() {
    expect_abort(
        "corruption::child_interior_pointer",
        "not the start of an object",
    );
}

#[test]
#[cfg(debug_assertions)]
#[cfg_attr(miri, ignore = "spawns processes")]
fn other_cache_pointer_free_is_detected() {
    expect_abort("corruption::child_other_cache", "did not hand out");
}
