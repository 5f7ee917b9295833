//! Review of issue 21: the sizing rule for a `RegionPages` region counted magazines of
//! "up to about 256 KiB", but a class of 80 to 128 KiB keeps four blocks in a magazine
//! (512 KiB for 128 KiB blocks). Threads that used such a class and went idle keep two
//! magazines each; with 16 threads a region sized by the old rule was full of them and
//! a request waited for region with its bytes available. Sized by the corrected rule
//! (magazines of up to 256 KiB or four blocks of the class, whichever is more), the
//! region serves every request whose bytes are there.

use core::alloc::Layout;
use std::sync::mpsc;
use std::time::Duration;

use pagekeep_mmap::Region;
use pagekeep_slab::async_heap::{AsyncHeap, RegionPages};

use crate::async_support::block_on_for;

const BLOCK: usize = 128 << 10;
const CAPACITY: usize = 4 << 20;
const THREADS: usize = 16;

/// The region the docs' rule gives for one class of `BLOCK` bytes used by `THREADS`
/// threads: the bookkeeping (2 MiB) + 1.07 × the class's peak (the capacity) + 2 slabs
/// (2 MiB each for this class) + 2 magazines per thread, of `magazine_bytes` each.
fn region_by_the_rule(magazine_bytes: usize) -> usize {
    let mib = 1 << 20;
    let rule = 2 * mib + CAPACITY * 107 / 100 + 2 * 2 * mib + 2 * magazine_bytes * THREADS;
    rule.next_multiple_of(1 << 16)
}

/// One helper thread after another allocates 1 MiB of 128 KiB blocks, frees it and
/// stays alive, idle (its magazines keep the blocks); then this thread allocates the
/// capacity's blocks but one, one at a time, each of which must be served within 10 s.
#[test]
#[cfg_attr(miri, ignore = "16 threads and a 26 MiB region")]
fn a_region_by_the_rule_serves_128_kib_blocks_past_sixteen_idle_threads() {
    // The corrected rule: four blocks of the class (512 KiB) is more than 256 KiB.
    let region = region_by_the_rule((256 << 10).max(4 * BLOCK));
    let pages =
        RegionPages::from_region(Region::reserve_committed(region, 1 << 21).unwrap()).unwrap();
    let heap = AsyncHeap::with_source(pages, CAPACITY);
    let layout = Layout::from_size_align(BLOCK, 8).unwrap();
    std::thread::scope(|scope| {
        // The helpers stay idle until these are dropped (also when this thread panics).
        let mut keep_idle = Vec::new();
        for helper in 1..THREADS {
            let (freed, has_freed) = mpsc::channel();
            let (done, idle_until_done) = mpsc::channel::<()>();
            keep_idle.push(done);
            let heap = &heap;
            scope.spawn(move || {
                let blocks: Vec<_> = (0..(1 << 20) / BLOCK)
                    .map(|_| {
                        block_on_for(heap.alloc_layout(layout), Duration::from_secs(10))
                            .expect("a helper's block is served")
                    })
                    .collect();
                drop(blocks);
                freed.send(()).unwrap();
                // Returns once the sender is dropped.
                let _ = idle_until_done.recv();
            });
            has_freed
                .recv()
                .unwrap_or_else(|_| panic!("helper {helper} did not free its blocks"));
            assert_eq!(heap.available(), CAPACITY);
        }
        let mut held = Vec::new();
        for n in 0..CAPACITY / BLOCK - 1 {
            let block = block_on_for(heap.alloc_layout(layout), Duration::from_secs(10));
            let Some(block) = block else {
                panic!(
                    "block {n} waited for region with its bytes available ({} of {}, region \
                     free {} of {region})",
                    heap.available(),
                    CAPACITY,
                    heap.source().free_bytes()
                );
            };
            // SAFETY: the block is live and `BLOCK` bytes long.
            unsafe { block.as_ptr().write_bytes(n as u8, BLOCK) };
            held.push(block);
        }
        for (n, block) in held.iter().enumerate() {
            // SAFETY: as above; written just before.
            let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr().as_ptr(), BLOCK) };
            assert!(bytes.iter().all(|&byte| byte == n as u8));
        }
        drop(held);
        drop(keep_idle);
    });
}
