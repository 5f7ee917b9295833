//! Growing a touched 64 MiB block to 256 MiB: `MmapAlloc` (mremap, nothing copied)
//! against `System` (glibc, measured with a second thread alive) at page alignment and at
//! 16-byte alignment, and against an explicit allocate-copy-free.
//!
//! Target: at least 10x faster than `System`. Run:
//! `cargo bench -p pagekeep-mmap --bench large_realloc`.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use core::alloc::{GlobalAlloc, Layout};
use core::hint::black_box;
use std::alloc::System;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pagekeep_mmap::MmapAlloc;

const FROM: usize = 64 << 20;
const TO: usize = 256 << 20;

/// A block that frees itself outside the timed part.
struct Block<A: GlobalAlloc> {
    allocator: A,
    ptr: *mut u8,
    size: usize,
    align: usize,
}

impl<A: GlobalAlloc> Drop for Block<A> {
    fn drop(&mut self) {
        // SAFETY: `ptr` is a live block of `allocator` of `size` bytes.
        unsafe {
            self.allocator.dealloc(
                self.ptr,
                Layout::from_size_align(self.size, self.align).unwrap(),
            )
        };
    }
}

/// A 64 MiB block with every page written, so growth has real contents to move.
fn touched<A: GlobalAlloc>(allocator: A, align: usize) -> Block<A> {
    // SAFETY: a non-zero layout; every byte written is inside the block.
    let ptr = unsafe { allocator.alloc(Layout::from_size_align(FROM, align).unwrap()) };
    assert!(!ptr.is_null());
    // SAFETY: as above.
    unsafe { ptr.write_bytes(0x5A, FROM) };
    Block {
        allocator,
        ptr,
        size: FROM,
        align,
    }
}

fn grow<A: GlobalAlloc>(mut block: Block<A>) -> Block<A> {
    let layout = Layout::from_size_align(FROM, block.align).unwrap();
    // SAFETY: a live block with its layout; the size is non-zero.
    let ptr = unsafe { block.allocator.realloc(block.ptr, layout, TO) };
    assert!(!ptr.is_null());
    block.ptr = ptr;
    block.size = TO;
    black_box(block)
}

fn copy_grow(block: Block<MmapAlloc>) -> Block<MmapAlloc> {
    // SAFETY: a non-zero layout; the copy stays inside both blocks.
    let ptr = unsafe { MmapAlloc.alloc(Layout::from_size_align(TO, 4096).unwrap()) };
    assert!(!ptr.is_null());
    // SAFETY: distinct live blocks, FROM bytes each at least.
    unsafe { ptr.copy_from_nonoverlapping(block.ptr, FROM) };
    drop(block);
    black_box(Block {
        allocator: MmapAlloc,
        ptr,
        size: TO,
        align: 4096,
    })
}

fn large_realloc(c: &mut Criterion) {
    // glibc takes a single-thread shortcut when no other thread exists.
    let _second_thread = std::thread::spawn(std::thread::park);
    let mut group = c.benchmark_group("grow_64MiB_to_256MiB");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("pagekeep_mmap", |b| {
        b.iter_batched(|| touched(MmapAlloc, 4096), grow, BatchSize::PerIteration)
    });
    // Page-aligned, as `MmapAlloc`'s blocks are: Rust's `System` then allocates, copies
    // and frees, since `realloc` cannot promise an alignment above 16.
    group.bench_function("system_align_4096", |b| {
        b.iter_batched(|| touched(System, 4096), grow, BatchSize::PerIteration)
    });
    // 16-aligned: `System` calls glibc's `realloc`, which also uses `mremap` for blocks
    // this large.
    group.bench_function("system_align_16", |b| {
        b.iter_batched(|| touched(System, 16), grow, BatchSize::PerIteration)
    });
    group.bench_function("allocate_copy_free", |b| {
        b.iter_batched(
            || touched(MmapAlloc, 4096),
            copy_grow,
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, large_realloc);
criterion_main!(benches);
