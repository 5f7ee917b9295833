//! The physical limits of the machine, measured in the same run: what a bump allocation,
//! a system call, a page fault and a decommit cost at the least.

use std::hint::black_box;
use std::time::Instant;

use pagekeep_alloc_test::bench::measure::{Settings, measure, measure_single};
use pagekeep_alloc_test::bench::report::figure;
use pagekeep_mmap::{Decommit, Region, sys};

/// Measures the limits and returns them as a markdown table.
pub fn measure_limits(settings: Settings) -> Vec<(&'static str, f64, &'static str)> {
    let pointer_add = measure(settings, |n| {
        let mut cursor = black_box(0usize);
        let start = Instant::now();
        for _ in 0..n {
            cursor = black_box(cursor + 32);
        }
        black_box(cursor);
        start.elapsed()
    });
    let syscall = measure(settings, |n| {
        let start = Instant::now();
        for _ in 0..n {
            // SAFETY: getppid has no preconditions.
            black_box(unsafe { libc::syscall(libc::SYS_getppid) });
        }
        start.elapsed()
    });
    let pages = 512;
    let page = sys::page_size();
    let fault = measure_single(
        settings.samples,
        || Region::reserve_committed(pages * page, page).expect("64 pages of address space"),
        |region| {
            let start = Instant::now();
            for index in 0..pages {
                // SAFETY: committed read-write; one byte per page.
                unsafe { region.as_ptr().add(index * page).write_volatile(1) };
            }
            start.elapsed()
        },
    );
    let decommit = |mode: Decommit| {
        measure_single(
            settings.samples,
            || {
                let region = Region::reserve_committed(pages * page, page).expect("address space");
                // SAFETY: committed read-write.
                unsafe { region.as_ptr().write_bytes(1, pages * page) };
                region
            },
            |region| {
                let start = Instant::now();
                // SAFETY: nothing refers to the contents.
                unsafe { region.decommit(0, pages * page, mode) }.expect("decommit");
                start.elapsed()
            },
        )
    };
    let dontneed = decommit(Decommit::Zero);
    let free = decommit(Decommit::Lazy);
    vec![
        (
            "a bump allocation (one pointer add)",
            pointer_add.median,
            "ns",
        ),
        ("a system call round trip (getppid)", syscall.median, "ns"),
        (
            "a first-touch page fault, per 4 KiB page",
            fault.median / pages as f64,
            "ns",
        ),
        (
            "MADV_DONTNEED of 512 written pages, per page",
            dontneed.median / pages as f64,
            "ns",
        ),
        (
            "MADV_FREE of 512 written pages, per page",
            free.median / pages as f64,
            "ns",
        ),
    ]
}

/// The limits, measured now, as a markdown table.
pub fn table(settings: Settings) -> String {
    let mut table = String::from("| operation | cost |\n|---|---|\n");
    for (what, value, unit) in measure_limits(settings) {
        table.push_str(&format!("| {what} | {} {unit} |\n", figure(value)));
    }
    table
}
