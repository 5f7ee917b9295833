//! mmap: page cycles against the raw system calls, system calls per operation, and large
//! `realloc` against `System`.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;
use std::hint::black_box;
use std::ptr;
use std::time::Instant;

use pagekeep_alloc_test::bench::boundary::Shim;
use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::{
    Measurement, Settings, measure_interleaved, measure_single_interleaved, time_each,
};
use pagekeep_alloc_test::bench::report::{Page, Row, Section, Target};
use pagekeep_mmap::{Decommit, MmapAlloc, OsPages, PageSource, Region, syscall_counters};

use super::{SecondThread, named};
use crate::progress::Progress;

/// Progress steps of this group.
pub const STEPS: usize = 3 + 1 + 3;

const CYCLE_SIZES: [(usize, &str); 3] = [
    (64 << 10, "64 KiB"),
    (2 << 20, "2 MiB"),
    (64 << 20, "64 MiB"),
];

/// mmap(PROT_NONE), mprotect(RW), madvise(MADV_FREE), munmap, by hand.
fn raw_cycle(len: usize) {
    // SAFETY: a fresh anonymous mapping, used within its length, unmapped once.
    unsafe {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let ptr = libc::mmap(ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0);
        assert_ne!(ptr, libc::MAP_FAILED, "mmap failed");
        libc::mprotect(ptr, len, libc::PROT_READ | libc::PROT_WRITE);
        libc::madvise(ptr, len, libc::MADV_FREE);
        libc::munmap(ptr, len);
    }
}

/// The same cycle through `OsPages`.
fn source_cycle(len: usize) {
    let ptr = OsPages.reserve(len, 4096).expect("address space");
    // SAFETY: the reservation just made, used within its length, released once.
    unsafe {
        OsPages.commit(ptr, len).expect("commit");
        OsPages
            .decommit(ptr, len, Decommit::Lazy)
            .expect("decommit");
        OsPages.release(ptr, len, 4096).expect("release");
    }
}

fn cycles(settings: Settings, progress: &mut Progress) -> Section {
    let mut rows = Vec::new();
    for (len, name) in CYCLE_SIZES {
        progress.step(&format!(
            "mmap: page cycle {name}, ours and raw libc interleaved"
        ));
        let mut ours = |n| time_each(n, || source_cycle(black_box(len)));
        let mut raw = |n| time_each(n, || raw_cycle(black_box(len)));
        let figures = measure_interleaved(settings, &mut [&mut ours, &mut raw]);
        rows.push(
            Row::new(
                format!("cycle of {name}"),
                named(&["OsPages", "raw libc"], figures),
            )
            .target(Target::at_most("raw libc", 1.05)),
        );
    }
    Section {
        title: "Reserve, commit, decommit, release".into(),
        description: "One cycle: reserve address space with no access, commit it read-write, \
            decommit it with MADV_FREE, release it. Ours goes through `OsPages` (the \
            `PageSource` every allocator here uses); the peer makes the same four system \
            calls by hand. No page is touched: a first touch may fault in a 2 MiB huge page \
            or a 4 KiB one depending on where the kernel placed the mapping, which would \
            swamp the cost of the layer measured here. The target is to add at most 5% to \
            the raw calls."
            .into(),
        unit: "ns per cycle".into(),
        rows,
        line_plot: None,
    }
}

fn syscalls(progress: &mut Progress) -> Section {
    progress.step("mmap: system calls per operation");
    let count = |operation: &mut dyn FnMut()| {
        let before = syscall_counters::snapshot();
        operation();
        Measurement::exact(syscall_counters::snapshot().since(&before).total() as f64)
    };
    let row = |name: &str, calls: Measurement| Row::new(name, vec![("ours".into(), calls)]);
    let aligned =
        count(&mut || drop(Region::reserve_aligned(2 << 20, 2 << 20).expect("address space")));
    let cycle = count(&mut || source_cycle(64 << 10));
    let layout = Layout::from_size_align(64 << 20, 4096).expect("layout");
    let mut block = ptr::null_mut();
    // SAFETY: non-zero layouts; the block is used within its size and freed once.
    let alloc = count(&mut || block = unsafe { MmapAlloc.alloc(layout) });
    // SAFETY: as above.
    let grow = count(&mut || block = unsafe { MmapAlloc.realloc(block, layout, 256 << 20) });
    let grown = Layout::from_size_align(256 << 20, 4096).expect("layout");
    // SAFETY: as above.
    let dealloc = count(&mut || unsafe { MmapAlloc.dealloc(block, grown) });
    Section {
        title: "System calls per operation".into(),
        description: "Counted by the `syscall-counters` feature of pagekeep-mmap on the running \
            thread. An aligned reservation over-reserves and trims: one mmap and at most two \
            munmaps."
            .into(),
        unit: "system calls".into(),
        rows: vec![
            row("reserve + release 2 MiB aligned to 2 MiB", aligned),
            row("page cycle (reserve, commit, decommit, release)", cycle),
            row("MmapAlloc alloc 64 MiB", alloc),
            row("MmapAlloc realloc 64 MiB -> 256 MiB", grow),
            row("MmapAlloc dealloc 256 MiB", dealloc),
        ],
        line_plot: None,
    }
}

/// A written 64 MiB block of `allocator`.
fn written_block(allocator: &dyn GlobalAlloc, align: usize) -> *mut u8 {
    let layout = Layout::from_size_align(64 << 20, align).expect("layout");
    // SAFETY: a non-zero layout; every write is inside the block.
    let block = unsafe { allocator.alloc(layout) };
    assert!(!block.is_null(), "out of memory");
    // SAFETY: as above.
    unsafe { block.write_bytes(0x5A, 64 << 20) };
    block
}

/// The subjects of the growth rows: allocator, alignment of the block.
type Grower<'a> = (&'a dyn GlobalAlloc, usize);

fn time_growth(subjects: &[Grower<'_>], settings: Settings) -> Vec<Measurement> {
    let layouts = |align: usize| {
        (
            Layout::from_size_align(64 << 20, align).expect("layout"),
            Layout::from_size_align(256 << 20, align).expect("layout"),
        )
    };
    measure_single_interleaved(
        settings.samples,
        subjects.len(),
        |subject| {
            let (allocator, align) = subjects[subject];
            written_block(allocator, align)
        },
        |subject, block| {
            let (allocator, align) = subjects[subject];
            let (from, to) = layouts(align);
            let start = Instant::now();
            // SAFETY: a live block with its layout; the new size is non-zero.
            let grown = unsafe { allocator.realloc(block, from, to.size()) };
            let elapsed = start.elapsed();
            assert!(!grown.is_null(), "out of memory");
            // SAFETY: the grown block, freed once with its layout.
            unsafe { allocator.dealloc(grown, to) };
            elapsed
        },
    )
    .into_iter()
    .map(|nanoseconds| nanoseconds.scaled(1e-3))
    .collect()
}

fn large_realloc(settings: Settings, progress: &mut Progress) -> Section {
    let _second = SecondThread::start();
    progress.step("mmap: realloc 64 MiB -> 256 MiB: MmapAlloc, System page-aligned, glibc realloc");
    let figures = time_growth(
        &[
            (&Shim(MmapAlloc), 4096),
            (&Shim(System), 4096),
            (&Shim(System), 16),
        ],
        settings,
    );
    Section {
        title: "Growing a written 64 MiB block to 256 MiB".into(),
        description: "Every page of the block is written first (not timed); the three \
            subjects run in the same rounds, in rotated order, each through the same \
            non-inlined `GlobalAlloc` shim. `MmapAlloc` grows with one `mremap`: in place, \
            or by moving page tables, never copying; its large blocks sit on 2 MiB \
            boundaries so whole page tables move. `System` with a page-aligned layout (the \
            layout `MmapAlloc` blocks have) allocates, copies and frees; with a 16-byte \
            alignment it calls glibc's `realloc`, which also uses `mremap` but on a mapping \
            that is not 2 MiB-aligned, so the kernel moves the entries one by one. The \
            ratio is against the stronger of the two, glibc's `realloc`: the copying path \
            is shown for reference, not as the baseline. Measured with a second thread \
            alive."
            .into(),
        unit: "µs per realloc".into(),
        rows: vec![
            Row::new(
                "64 MiB -> 256 MiB realloc of a written block",
                named(
                    &[
                        "MmapAlloc",
                        "System, page-aligned (copies)",
                        "glibc realloc (16-aligned, mremap)",
                    ],
                    figures,
                ),
            )
            .target(Target::at_most_best(0.1)),
        ],
        line_plot: None,
    }
}

/// Runs the group.
pub fn run(
    settings: Settings,
    _machine: &Machine,
    progress: &mut Progress,
) -> Result<Page, String> {
    let sections = vec![
        cycles(settings, progress),
        syscalls(progress),
        large_realloc(settings, progress),
    ];
    Ok(Page {
        name: "mmap".into(),
        title: "pagekeep-mmap: pages from the OS".into(),
        introduction: "What reserving, committing, decommitting and releasing pages costs \
            through pagekeep-mmap against the raw system calls, how many system calls each \
            operation makes, and how large blocks grow."
            .into(),
        sections,
    })
}
