//! Fragmentation: allocate 1M objects of mixed sizes, free a random 90 %, then report
//! resident memory (RSS growth over the start) divided by the live bytes, for SlabHeap,
//! mimalloc, jemalloc and glibc. Each allocator runs in its own child process so that
//! their footprints do not mix.
//!
//! ```sh
//! cargo run --release -p pagekeep-slab --example fragmentation
//! ```

use core::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use pagekeep_slab::SlabHeap;

static SLAB: SlabHeap = SlabHeap::new();

/// Resident bytes of this process, from `/proc/self/statm`.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn measure(allocator: &dyn GlobalAlloc) -> (usize, usize, usize) {
    const COUNT: usize = 1_000_000;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Bookkeeping is allocated before the baseline, on the system heap.
    let mut blocks: Vec<(*mut u8, Layout)> = Vec::with_capacity(COUNT);
    let baseline = resident_bytes();
    for _ in 0..COUNT {
        let r = next();
        // Mixed sizes: mostly small, some medium, a few up to 4 KiB.
        let size = match r % 100 {
            0..=69 => 8 + (r >> 8) as usize % 120,
            70..=94 => 128 + (r >> 8) as usize % 896,
            _ => 1024 + (r >> 8) as usize % 3072,
        };
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size.
        let block = unsafe { allocator.alloc(layout) };
        assert!(!block.is_null());
        // SAFETY: touch every byte, as a program would.
        unsafe { block.write_bytes(0x5A, size) };
        blocks.push((block, layout));
    }
    let peak = resident_bytes() - baseline;
    let mut live = 0usize;
    for (block, layout) in &mut blocks {
        if next() % 10 != 0 {
            // SAFETY: allocated above, freed once.
            unsafe { allocator.dealloc(*block, *layout) };
            *block = core::ptr::null_mut();
        } else {
            live += layout.size();
        }
    }
    let after = resident_bytes().saturating_sub(baseline);
    (peak, after, live)
}

fn main() {
    let which = std::env::args().nth(1);
    let Some(which) = which else {
        println!(
            "| allocator | RSS at peak (MiB) | RSS after freeing 90% (MiB) | live (MiB) | RSS / live |"
        );
        println!("|---|---|---|---|---|");
        for name in [
            "slab",
            "mimalloc",
            #[cfg(all(unix, not(miri)))]
            "jemalloc",
            "system",
        ] {
            let output = Command::new(std::env::current_exe().unwrap())
                .arg(name)
                .output()
                .unwrap();
            print!("{}", String::from_utf8_lossy(&output.stdout));
        }
        return;
    };
    let _second = std::thread::spawn(std::thread::park);
    let (peak, after, live) = match which.as_str() {
        "slab" => measure(&SLAB),
        "mimalloc" => measure(&mimalloc::MiMalloc),
        // jemalloc is built for Unix only (its build needs a Unix shell and make).
        #[cfg(all(unix, not(miri)))]
        "jemalloc" => measure(&tikv_jemallocator::Jemalloc),
        _ => measure(&std::alloc::System),
    };
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "| {which} | {:.1} | {:.1} | {:.1} | {:.2} |",
        mib(peak),
        mib(after),
        mib(live),
        after as f64 / live as f64
    );
}
