//! Debug builds and the `hardened` feature detect double frees, interior and foreign
//! pointers and frees into the wrong heap, with a clear message naming the address and
//! an abort (never an unwind through the allocator). Each case runs in a child process.
//!
//! `cargo test --release -p pagekeep-slab --features hardened --test all corruption` runs
//! them against the hardened release build.

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
        let cache = pagekeep_slab::SlabCache::new(64, 8).unwrap();
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
        let heap = pagekeep_slab::SlabHeap::new();
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
        let cache = pagekeep_slab::SlabCache::new(64, 8).unwrap();
        let object = cache.alloc();
        // SAFETY: deliberately wrong: not a pointer the cache handed out.
        unsafe { cache.free(object.add(8)) };
    }
}

#[test]
#[ignore = "child process of other_cache_pointer_free_is_detected"]
fn child_other_cache() {
    if in_child() {
        let a = pagekeep_slab::SlabCache::new(64, 8).unwrap();
        let b = pagekeep_slab::SlabCache::new(64, 8).unwrap();
        let object = a.alloc();
        // SAFETY: deliberately wrong: freed into a cache that did not allocate it.
        unsafe { b.free(object) };
    }
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn double_free_is_detected() {
    expect_abort("corruption::child_double_free", "double free");
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn heap_double_free_is_detected() {
    expect_abort("corruption::child_heap_double_free", "double free");
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn interior_pointer_free_is_detected() {
    expect_abort(
        "corruption::child_interior_pointer",
        "not the start of an object",
    );
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn other_cache_pointer_free_is_detected() {
    expect_abort("corruption::child_other_cache", "did not hand out");
}

#[test]
#[ignore = "child process of heap_free_into_the_wrong_heap_is_detected"]
fn child_heap_wrong_heap() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let first = pagekeep_slab::SlabHeap::new();
        let second = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(4000, 8).unwrap();
        // SAFETY: deliberately wrong: a block of `first` freed into `second` (both built).
        unsafe {
            let other = second.alloc(layout);
            let block = first.alloc(layout);
            second.dealloc(block, layout);
            second.dealloc(other, layout);
        }
    }
}

#[test]
#[ignore = "child process of heap_misaligned_free_is_detected"]
fn child_heap_misaligned() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let heap = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: deliberately wrong: one byte past the block's start.
        unsafe {
            let block = heap.alloc(layout);
            heap.dealloc(block.add(1), layout);
        }
    }
}

#[test]
#[ignore = "child process of heap_free_of_a_pointer_from_nowhere_is_detected"]
fn child_heap_nowhere() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let heap = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(64, 8).unwrap();
        let mut local = [0u64; 8];
        // SAFETY: deliberately wrong: a stack pointer the heap never handed out.
        unsafe {
            let block = heap.alloc(layout);
            heap.dealloc(local.as_mut_ptr().cast(), layout);
            heap.dealloc(block, layout);
        }
    }
}

#[test]
#[ignore = "child process of report_bad_free_names_a_double_free"]
fn child_report_double_free() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let heap = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(48, 16).unwrap();
        // SAFETY: the block is freed once; the report only reads its free tag.
        unsafe {
            let block = heap.alloc(layout);
            heap.dealloc(block, layout);
            heap.report_bad_free(block.add(16));
        }
    }
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn heap_free_into_the_wrong_heap_is_detected() {
    expect_abort(
        "corruption::child_heap_wrong_heap",
        "free into the wrong heap",
    );
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn heap_misaligned_free_is_detected() {
    expect_abort(
        "corruption::child_heap_misaligned",
        "not the start of an object",
    );
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn heap_free_of_a_pointer_from_nowhere_is_detected() {
    expect_abort("corruption::child_heap_nowhere", "did not hand out");
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn report_bad_free_names_a_double_free() {
    expect_abort("corruption::child_report_double_free", "double free");
}

#[test]
#[ignore = "child process of a_write_into_a_free_neighbour_is_caught_at_its_allocation"]
fn child_write_into_a_free_neighbour() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let heap = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(32, 16).unwrap();
        // SAFETY: deliberately wrong: 32 bytes written past the lower of two neighbours
        // after the upper one was freed; the next allocation hands the upper one out.
        unsafe {
            let (a, b) = (heap.alloc(layout), heap.alloc(layout));
            let (low, high) = if a < b { (a, b) } else { (b, a) };
            assert_eq!(high.addr() - low.addr(), 32);
            heap.dealloc(high, layout);
            low.write_bytes(0, 64);
            let _ = heap.alloc(layout);
        }
    }
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn a_write_into_a_free_neighbour_is_caught_at_its_allocation() {
    expect_abort(
        "corruption::child_write_into_a_free_neighbour",
        "a free block was overwritten",
    );
}

#[test]
#[ignore = "child process of a_write_past_the_last_block_carved_is_caught_by_the_check"]
fn child_write_past_the_last_block_carved() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let heap = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(32, 16).unwrap();
        // SAFETY: deliberately wrong: the first block of a fresh heap is the last one
        // carved of its magazine's batch; 32 zero bytes written past it reach the first
        // object never carved.
        unsafe {
            let block = heap.alloc(layout);
            block.write_bytes(0, 64);
        }
        heap.check_free_blocks();
    }
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cfg_attr(miri, ignore = "spawns processes")]
fn a_write_past_the_last_block_carved_is_caught_by_the_check() {
    expect_abort(
        "corruption::child_write_past_the_last_block_carved",
        "a free block was overwritten",
    );
}

#[test]
#[ignore = "child process of a_large_block_freed_twice_is_detected_in_every_build"]
fn child_heap_large_double_free() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let heap = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        // SAFETY: deliberately wrong: freed twice. The first free keeps the block mapped
        // for reuse; kept twice it would be handed out twice.
        unsafe {
            let block = heap.alloc(layout);
            heap.dealloc(block, layout);
            heap.dealloc(block, layout);
        }
    }
}

#[test]
#[ignore = "child process of a_large_block_freed_twice_after_its_kept_copy_aged_is_detected"]
fn child_heap_large_double_free_after_aging() {
    if in_child() {
        use core::alloc::{GlobalAlloc, Layout};
        let heap = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        // SAFETY: deliberately wrong: freed twice, the second time after the kept copy
        // is due to go back (which the second free itself would release first).
        unsafe {
            let block = heap.alloc(layout);
            heap.dealloc(block, layout);
            std::thread::sleep(std::time::Duration::from_millis(600));
            heap.dealloc(block, layout);
            // Were it kept again, both would get the same block.
            let zeroed = heap.alloc_zeroed(layout);
            let plain = heap.alloc(layout);
            assert_ne!(zeroed, plain, "one block handed out twice");
        }
    }
}

/// Not only in checked builds: the heap compares a freed large block with those it
/// keeps anyway (a few compares on a path that is rare and dear).
#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn a_large_block_freed_twice_is_detected_in_every_build() {
    expect_abort(
        "corruption::child_heap_large_double_free",
        "double free of a large block",
    );
}

/// The comparison comes before the blocks kept too long are released: the second free
/// of a block whose kept copy has aged used to release that copy, then keep the block
/// again, unmapped.
#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn a_large_block_freed_twice_after_its_kept_copy_aged_is_detected() {
    expect_abort(
        "corruption::child_heap_large_double_free_after_aging",
        "double free of a large block",
    );
}

/// `free_located` checks the start it is given as every checked free does: an interior
/// start, a start outside the located slab and a second free abort with a message.
#[cfg(any(debug_assertions, feature = "hardened"))]
mod located {
    use super::{expect_abort, in_child};
    use core::alloc::{GlobalAlloc, Layout};

    /// In a child: allocates a 64-byte block, frees it through `free_located` from the
    /// start `start(block, slab_offset)` gives, `times` times.
    fn free_located_from(start: impl Fn(usize, usize) -> usize, times: usize) {
        let heap = pagekeep_slab::SlabHeap::new();
        let layout = Layout::from_size_align(64, 16).unwrap();
        // SAFETY: deliberately wrong, as each test says; the heap must abort.
        unsafe {
            let block = heap.alloc(layout);
            for _ in 0..times {
                let located = heap.locate_small_block(block.add(16)).unwrap();
                let offset = located.offset_in_slab() - 16;
                heap.free_located(located, start(block.addr(), offset));
            }
        }
    }

    #[test]
    #[ignore = "child process of an_interior_start_is_detected"]
    fn child_interior_start() {
        if in_child() {
            free_located_from(|block, _| block + 16, 1);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "spawns processes")]
    fn an_interior_start_is_detected() {
        expect_abort(
            "corruption::located::child_interior_start",
            "not the start of an object",
        );
    }

    #[test]
    #[ignore = "child process of a_start_outside_the_slab_is_detected"]
    fn child_start_outside_the_slab() {
        if in_child() {
            // The address just before the slab: in no object of it.
            free_located_from(|block, offset| block - offset - 64, 1);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "spawns processes")]
    fn a_start_outside_the_slab_is_detected() {
        expect_abort(
            "corruption::located::child_start_outside_the_slab",
            "not the start of an object",
        );
    }

    #[test]
    #[ignore = "child process of a_second_free_is_detected"]
    fn child_second_free() {
        if in_child() {
            free_located_from(|block, _| block, 2);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "spawns processes")]
    fn a_second_free_is_detected() {
        expect_abort("corruption::located::child_second_free", "double free");
    }
}
