//! The benchmark groups, one page of `info/` each.

mod arena;
pub mod executor;
pub mod limits;
pub mod mimalloc_bench;
mod mmap;
pub mod slab;

use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::{Measurement, Settings};
use pagekeep_alloc_test::bench::report::Page;

use crate::progress::Progress;

/// The groups, in the order they run.
pub const NAMES: &[&str] = &["mmap", "arena", "slab", "executor", "mimalloc-bench"];

/// Groups that run once even in a `--full` run: mimalloc-bench takes the median of its
/// own runs of separate programs (`--mimalloc-bench-reps`), so there are no rounds to merge.
pub const SINGLE_LAUNCH: &[&str] = &["mimalloc-bench"];

/// Parts of a group that `--only` can run alone (a page of their own, not in a full run),
/// each with the group whose page carries its sections in a full run.
pub const PARTS: &[(&str, &str)] = &[("slab-async-heap", "slab")];

/// The group whose page carries the sections of `part` (`slab` for `slab-async-heap`);
/// `None` for a group.
pub fn parent_of(part: &str) -> Option<&'static str> {
    PARTS
        .iter()
        .find(|(name, _)| *name == part)
        .map(|&(_, group)| group)
}

/// The parts of `group` (see [`PARTS`]).
pub fn parts_of(group: &str) -> Vec<&'static str> {
    PARTS
        .iter()
        .filter(|(_, parent)| *parent == group)
        .map(|&(part, _)| part)
        .collect()
}

/// How many progress steps a group takes.
pub fn steps(name: &str, settings: &Settings) -> usize {
    match name {
        "mmap" => mmap::STEPS,
        "arena" => arena::STEPS,
        "slab" => slab::STEPS,
        "slab-async-heap" => slab::ASYNC_HEAP_STEPS,
        "executor" => executor::steps(settings),
        "mimalloc-bench" => mimalloc_bench::STEPS,
        _ => 0,
    }
}

/// Runs a group and returns its page.
pub fn run(
    name: &str,
    settings: &Settings,
    machine: &Machine,
    progress: &mut Progress,
) -> Result<Page, String> {
    match name {
        "mmap" => mmap::run(*settings, machine, progress),
        "arena" => arena::run(*settings, machine, progress),
        "slab" => slab::run(*settings, machine, progress),
        "slab-async-heap" => slab::async_heap_page(*settings, progress),
        "executor" => executor::run(*settings, machine, progress),
        "mimalloc-bench" => mimalloc_bench::run(*settings, machine, progress),
        other => Err(format!("no group named {other:?}")),
    }
}

/// Keeps a second thread alive while it exists, so that glibc's allocator does not take
/// its single-thread shortcut while it is measured.
#[derive(Debug)]
pub struct SecondThread {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl SecondThread {
    /// Starts a thread that sleeps until dropped.
    pub fn start() -> SecondThread {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::park_timeout(std::time::Duration::from_millis(50));
            }
        });
        SecondThread {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for SecondThread {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

/// Names the figures of a row, in order.
pub fn named(names: &[&str], figures: Vec<Measurement>) -> Vec<(String, Measurement)> {
    names
        .iter()
        .map(|name| name.to_string())
        .zip(figures)
        .collect()
}
