//! A tour of pagekeep-mmap: reserve address space, commit and touch part of it, watch the
//! resident page count, give memory back both ways, and grow a block without copying.
//!
//! Run: `cargo run --release -p pagekeep-mmap --example tour`

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;
use std::time::Instant;

use pagekeep_mmap::{Decommit, MmapAlloc, Region, sys};

fn main() -> std::io::Result<()> {
    let page = sys::page_size();
    println!("page size: {page} bytes");

    let region = Region::reserve_aligned(64 << 20, 2 << 20)?;
    println!(
        "reserved 64 MiB at {:p} (2 MiB aligned); resident pages: {}",
        region.as_ptr(),
        region.resident_pages(0, region.len())?
    );

    region.commit(0, 16 << 20)?;
    // SAFETY: the first 16 MiB are committed read-write.
    unsafe { region.as_ptr().write_bytes(0xAB, 16 << 20) };
    println!(
        "committed and wrote 16 MiB; resident pages: {}",
        region.resident_pages(0, region.len())?
    );

    // SAFETY: nothing refers to the contents any more.
    let lazily = unsafe { region.decommit(0, 8 << 20, Decommit::Lazy)? };
    // SAFETY: as above.
    let zeroed = unsafe { region.decommit(8 << 20, 8 << 20, Decommit::Zero)? };
    println!(
        "decommitted 8 MiB with MADV_FREE (next read: {lazily:?}) and 8 MiB with MADV_DONTNEED \
         (next read: {zeroed:?}); resident pages: {}",
        region.resident_pages(0, region.len())?
    );

    // Growing a written 64 MiB block to 256 MiB: page tables move, bytes do not.
    let from = Layout::from_size_align(64 << 20, page).expect("valid layout");
    for (name, allocator) in [
        ("MmapAlloc", &MmapAlloc as &dyn GlobalAlloc),
        ("System", &System),
    ] {
        // SAFETY: non-zero layouts; every write is inside the block; freed once.
        unsafe {
            let block = allocator.alloc(from);
            assert!(!block.is_null(), "out of memory");
            block.write_bytes(1, from.size());
            let start = Instant::now();
            let grown = allocator.realloc(block, from, 256 << 20);
            let elapsed = start.elapsed();
            assert!(!grown.is_null(), "out of memory");
            assert_eq!(grown.add(from.size() - 1).read(), 1, "contents kept");
            allocator.dealloc(
                grown,
                Layout::from_size_align(256 << 20, page).expect("valid"),
            );
            println!("{name}: grew a written 64 MiB block to 256 MiB in {elapsed:?}");
        }
    }
    Ok(())
}
