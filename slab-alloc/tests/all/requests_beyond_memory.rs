//! Requests larger than the machine's memory fail at once, as glibc's do, instead of
//! being granted and ending in the OOM killer: committed mappings pass the kernel's
//! overcommit check.

use core::alloc::{GlobalAlloc, Layout};

use allocator_api2::alloc::Allocator;
use pagekeep_slab::SlabHeap;

/// RAM plus swap in bytes, if the kernel refuses single mappings larger than that
/// (overcommit mode 0, the heuristic, or 2, strict); `None` in mode 1 (always grant), or
/// where `/proc` cannot say.
fn memory_the_kernel_checks_against() -> Option<usize> {
    // Linux's check. (Windows charges commits to its own commit limit; under wine, `/proc`
    // is the host's but wine's commits are not charged to the host's overcommit check.)
    if !cfg!(target_os = "linux") {
        return None;
    }
    let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").ok()?;
    if mode.trim() == "1" {
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |field: &str| -> Option<usize> {
        let line = meminfo.lines().find(|line| line.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kib("MemTotal:")? + kib("SwapTotal:")?) * 1024)
}

/// Sizes past RAM plus swap: 64 GiB and 1 TiB, or more on a bigger machine.
fn impossible_sizes(memory: usize) -> [usize; 2] {
    let beyond = memory.next_power_of_two() * 2;
    [beyond.max(64 << 30), beyond.max(1 << 40)]
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc, and miri's mappings are heap blocks")]
fn allocations_beyond_ram_and_swap_fail() {
    let Some(memory) = memory_the_kernel_checks_against() else {
        eprintln!("overcommit mode 1 grants every request: nothing to check");
        return;
    };
    let heap = SlabHeap::new();
    let mut granted = Vec::new();
    for size in impossible_sizes(memory) {
        for align in [16, 4096, 1 << 30] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes; a granted block is only freed (never touched).
            unsafe {
                let block = heap.alloc(layout);
                let zeroed = heap.alloc_zeroed(layout);
                granted.extend([(block, layout), (zeroed, layout)]);
            }
            if let Ok(block) = heap.allocate(layout) {
                granted.push((block.cast::<u8>().as_ptr(), layout));
            }
        }
        // Aligned beyond memory: one byte aligned to `size` needs `size` bytes of padding.
        let layout = Layout::from_size_align(1, size).unwrap();
        // SAFETY: as above.
        granted.push((unsafe { heap.alloc(layout) }, layout));
        // Growth of a live block fails and leaves it intact.
        let small = Layout::from_size_align(1 << 20, 16).unwrap();
        // SAFETY: a live 1 MiB block, grown with its layout; freed once with the layout
        // it has afterwards.
        unsafe {
            let block = heap.alloc(small);
            assert!(!block.is_null());
            block.write_bytes(7, small.size());
            let grown = heap.realloc(block, small, size);
            if grown.is_null() {
                assert_eq!(block.add(small.size() - 1).read(), 7);
                heap.dealloc(block, small);
            } else {
                granted.push((grown, Layout::from_size_align(size, 16).unwrap()));
            }
        }
    }
    let count = granted.iter().filter(|(block, _)| !block.is_null()).count();
    for (block, layout) in granted {
        if !block.is_null() {
            // SAFETY: granted above with this layout, freed once.
            unsafe { heap.dealloc(block, layout) };
        }
    }
    assert_eq!(
        count, 0,
        "{count} requests beyond {memory} bytes of RAM and swap granted"
    );
    // The heap is still usable.
    let layout = Layout::from_size_align(1 << 20, 16).unwrap();
    // SAFETY: non-zero size; freed once.
    unsafe {
        let block = heap.alloc(layout);
        assert!(!block.is_null());
        heap.dealloc(block, layout);
    }
}
