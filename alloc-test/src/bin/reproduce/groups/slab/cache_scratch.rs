//! A passive false sharing workload after cache-scratch (from the Hoard benchmarks;
//! Berger et al., "Hoard: a scalable memory allocator for multithreaded applications",
//! ASPLOS 2000), named "passive false sharing" in the pages because it is not the
//! original: cache-scratch uses 1-byte objects (C++ `new` and `delete`) and, as
//! mimalloc-bench runs it (`cache-scratch 2 1000 1 2000000 2` on two threads), 1000
//! allocations per worker of 1 000 000 unchecked writes each (2 000 000 divided among
//! the threads), one run per process; this one uses 8-byte objects and 100 allocations
//! of 5000 writes, each read back and checked, repeated in a process that lives for the
//! whole measurement, so a run lasts about a millisecond including the thread starts.
//! The original itself runs on the mimalloc-bench page (`cache-scratchN`).
//!
//! One thread allocates one small object per worker thread and hands them out; each
//! worker frees the object it was given, then repeatedly allocates an object of the
//! same size, writes to it many times and frees it. An allocator that gives the freed
//! object (a neighbour of the other worker's object, in the same cache line) back to
//! the worker makes the two workers fight over that line on every write.
//!
//! Parameters (the same in quick and full runs): 2 workers, 8-byte objects, 100
//! allocations per worker, 5000 writes (each read back) per allocation.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use pagekeep_alloc_test::bench::threads::join_all;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::{Measurement, Settings, measure_interleaved};
use pagekeep_alloc_test::bench::report::Row;
use std::io::Write as _;

use super::{HEAP_NAMES, Workload, row_of};
use crate::progress::Progress;

const WORKERS: usize = 2;
const OBJECT: Layout = match Layout::from_size_align(8, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("a valid layout"),
};
const ALLOCATIONS: u64 = 100;
const WRITES: u64 = 5000;

/// An object handed from the allocating thread to a worker.
struct Handed(NonNull<u64>);

// SAFETY: the object is used by one thread at a time: the allocating thread writes it
// before the hand-over, the worker alone afterwards; the allocators accept remote frees.
unsafe impl Send for Handed {}

impl Handed {
    /// The object (a method, so that a closure captures the whole `Handed`, which is
    /// `Send`, rather than its pointer field).
    fn into_object(self) -> NonNull<u64> {
        self.0
    }
}

/// The value a worker's object holds after write `write` of allocation `allocation`.
fn value(worker: usize, allocation: u64, write: u64) -> u64 {
    ((worker as u64 + 1) << 56) | (allocation << 32) | write
}

/// One worker: frees the handed object, then allocates, writes and frees. Returns the
/// writes done and the first wrong value read back.
fn worker<A: GlobalAlloc + Sync + ?Sized>(
    allocator: &A,
    index: usize,
    handed: Handed,
) -> (u64, Option<String>) {
    let mut failure = None;
    // SAFETY: the object was written by the allocating thread before the hand-over.
    let first = unsafe { handed.0.read_volatile() };
    if first != value(index, 0, 0) {
        failure = Some(format!(
            "worker {index}'s handed object holds {first:#x}, not {:#x}",
            value(index, 0, 0)
        ));
    }
    // SAFETY: allocated by `allocator` with `OBJECT`, freed once, here.
    unsafe { allocator.dealloc(handed.0.as_ptr().cast(), OBJECT) };
    let mut writes = 0;
    for allocation in 1..=ALLOCATIONS {
        // SAFETY: a non-zero layout.
        let Some(object) = NonNull::new(unsafe { allocator.alloc(OBJECT) }) else {
            std::alloc::handle_alloc_error(OBJECT)
        };
        let object = object.cast::<u64>();
        for write in 0..WRITES {
            let expected = value(index, allocation, write);
            // SAFETY: an 8-byte, 8-aligned object this worker owns. Volatile, so every
            // write reaches the cache line, as the original's byte loop does.
            let found = unsafe {
                object.write_volatile(expected);
                object.read_volatile()
            };
            writes += 1;
            if found != expected && failure.is_none() {
                failure = Some(format!(
                    "worker {index} read {found:#x} back after writing {expected:#x}: \
                     another thread writes the same object"
                ));
            }
        }
        // SAFETY: allocated above with `OBJECT`, freed once.
        unsafe { allocator.dealloc(object.as_ptr().cast(), OBJECT) };
    }
    (writes, failure)
}

/// The passive false sharing workload on one allocator: each operation is one whole run.
struct PassiveFalseSharing<'a, A: GlobalAlloc + Sync + ?Sized> {
    allocator: &'a A,
    failure: Option<String>,
}

impl<'a, A: GlobalAlloc + Sync + ?Sized> PassiveFalseSharing<'a, A> {
    fn new(allocator: &'a A) -> Self {
        PassiveFalseSharing {
            allocator,
            failure: None,
        }
    }

    fn once(&mut self) {
        let allocator = self.allocator;
        let handed = hand_out(allocator);
        let results: Vec<(u64, Option<String>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = handed
                .into_iter()
                .enumerate()
                .map(|(index, handed)| scope.spawn(move || worker(allocator, index, handed)))
                .collect();
            join_all(workers, || (0, Some("a worker panicked".to_owned())))
        });
        for (writes, failure) in results {
            if let Some(failure) = failure {
                self.failure.get_or_insert(failure);
            }
            if writes != ALLOCATIONS * WRITES {
                self.failure.get_or_insert(format!(
                    "a worker did {writes} writes instead of {}",
                    ALLOCATIONS * WRITES
                ));
            }
        }
    }
}

impl<A: GlobalAlloc + Sync + ?Sized> Workload for PassiveFalseSharing<'_, A> {
    fn run(&mut self, operations: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..operations {
            self.once();
        }
        start.elapsed()
    }

    fn finish(self) -> Result<(), String> {
        self.failure.map_or(Ok(()), Err)
    }
}

/// One object per worker, allocated one after the other by the calling thread (so an
/// allocator is free to put them side by side) and written with the worker's tag.
fn hand_out<A: GlobalAlloc + ?Sized>(allocator: &A) -> Vec<Handed> {
    (0..WORKERS)
        .map(|index| {
            // SAFETY: a non-zero layout.
            let Some(object) = NonNull::new(unsafe { allocator.alloc(OBJECT) }) else {
                std::alloc::handle_alloc_error(OBJECT)
            };
            let object = object.cast::<u64>();
            // SAFETY: a fresh 8-byte, 8-aligned object.
            unsafe { object.write_volatile(value(index, 0, 0)) };
            Handed(object)
        })
        .collect()
}

/// The share of steps, in percent, at which the two workers' live objects lie in the
/// same 64-byte cache line: the passive false sharing run without its writes and untimed,
/// with the workers in lockstep (both allocate, then both free), so the count depends on
/// the allocator's placement alone, not on how the threads happen to be scheduled.
fn shared_lines<A: GlobalAlloc + Sync + ?Sized>(allocator: &A) -> Result<f64, String> {
    const LINE: usize = 64;
    let handed = hand_out(allocator);
    let lockstep = Barrier::new(WORKERS);
    let lines: Vec<Vec<usize>> = std::thread::scope(|scope| {
        let workers: Vec<_> = handed
            .into_iter()
            .map(|handed| {
                let lockstep = &lockstep;
                scope.spawn(move || {
                    let handed = handed.into_object();
                    // SAFETY: allocated by `allocator` with `OBJECT`, freed once, here.
                    unsafe { allocator.dealloc(handed.as_ptr().cast(), OBJECT) };
                    let mut lines = Vec::with_capacity(ALLOCATIONS as usize);
                    for allocation in 1..=ALLOCATIONS {
                        // SAFETY: a non-zero layout.
                        let Some(object) = NonNull::new(unsafe { allocator.alloc(OBJECT) }) else {
                            std::alloc::handle_alloc_error(OBJECT)
                        };
                        // SAFETY: an 8-byte, 8-aligned object this worker owns.
                        unsafe { object.cast::<u64>().write_volatile(allocation) };
                        lines.push(object.as_ptr().addr() / LINE);
                        // Both objects are live here.
                        lockstep.wait();
                        // SAFETY: allocated above with `OBJECT`, freed once.
                        unsafe { allocator.dealloc(object.as_ptr(), OBJECT) };
                        lockstep.wait();
                    }
                    lines
                })
            })
            .collect();
        join_all(workers, Vec::new)
    });
    let [first, second] = &lines[..] else {
        return Err("the passive false sharing workload expects two workers".to_owned());
    };
    if first.len() != ALLOCATIONS as usize || second.len() != ALLOCATIONS as usize {
        return Err("a passive false sharing worker did not finish its allocations".to_owned());
    }
    let shared = first.iter().zip(second).filter(|(a, b)| a == b).count();
    Ok(100.0 * shared as f64 / ALLOCATIONS as f64)
}

/// The placement count of [`shared_lines`] for the heap `name`, measured in a fresh
/// `reproduce` process (`--placement-child NAME`): where an allocator places the first
/// objects of a thread depends on what the process did before, so a count taken late in
/// a long-lived process says little about a program that starts with it.
fn placement_in_fresh_process(name: &str) -> Result<f64, String> {
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let output = std::process::Command::new(executable)
        .args(["--placement-child", name])
        .output()
        .map_err(|error| format!("cannot run the placement child: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().parse().map_err(|_| {
        format!(
            "the placement child for {name} printed {text:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The child side of [`placement_in_fresh_process`]: prints the placement count of the
/// heap `name`.
///
/// # Errors
/// No heap has that name, or the workload failed.
pub fn placement_child(name: &str) -> Result<(), String> {
    let (_, heap) = super::heaps()
        .into_iter()
        .find(|(heap, _)| *heap == name)
        .ok_or_else(|| format!("no heap named {name:?}"))?;
    // glibc takes its single-thread shortcut without a second thread; the workers
    // start only after the objects are handed out.
    let _second = super::super::SecondThread::start();
    println!("{}", shared_lines(heap)?);
    Ok(())
}

/// A fresh `reproduce` process running the timed workload on one heap on request
/// (`--false-sharing-child NAME`): the placement the workload is sensitive to is then
/// that of a program that starts with it, not of one that ran every other benchmark
/// first. Its rounds stay interleaved with the other heaps' processes.
struct FreshProcess {
    name: &'static str,
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl FreshProcess {
    fn start(name: &'static str) -> Result<FreshProcess, String> {
        let executable = std::env::current_exe().map_err(|error| error.to_string())?;
        let mut child = std::process::Command::new(executable)
            .args(["--false-sharing-child", name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start the {name} false-sharing child: {error}"))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the {name} false-sharing child has no pipes"));
        };
        Ok(FreshProcess {
            name,
            child,
            input: Some(input),
            output: std::io::BufReader::new(output),
        })
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut self.output, &mut line) {
            Ok(0) | Err(_) => Err(format!("the {} false-sharing child stopped", self.name)),
            Ok(_) => Ok(line.trim().to_owned()),
        }
    }

    /// Runs `operations` whole runs in the child and returns how long they took.
    fn run(&mut self, operations: u64) -> Result<Duration, String> {
        let input = self.input.as_mut().ok_or("the child's input is closed")?;
        writeln!(input, "{operations}")
            .and_then(|()| input.flush())
            .map_err(|error| format!("cannot reach the {} child: {error}", self.name))?;
        let line = self.line()?;
        let nanoseconds: u64 = line
            .parse()
            .map_err(|_| format!("the {} false-sharing child said {line:?}", self.name))?;
        Ok(Duration::from_nanos(nanoseconds))
    }

    /// Closes the child's input and reads its checks' verdict.
    fn finish(mut self) -> Result<(), String> {
        self.input = None;
        let verdict = self.line();
        let _ = self.child.wait();
        match verdict?.as_str() {
            "ok" => Ok(()),
            failure => Err(format!(
                "{} failed the false-sharing workload's checks: {failure}",
                self.name
            )),
        }
    }
}

impl Drop for FreshProcess {
    fn drop(&mut self) {
        self.input = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child side of [`FreshProcess`]: reads operation counts, one a line, runs them on
/// the heap `name` and prints the nanoseconds they took; at the end of its input prints
/// `ok` or what the workload's checks found.
///
/// # Errors
/// No heap has that name, or the parent went away.
pub fn false_sharing_child(name: &str) -> Result<(), String> {
    let (_, heap) = super::heaps()
        .into_iter()
        .find(|(heap, _)| *heap == name)
        .ok_or_else(|| format!("no heap named {name:?}"))?;
    // As in the parent: glibc must not take its single-thread shortcut.
    let _second = super::super::SecondThread::start();
    let mut workload = PassiveFalseSharing::new(heap);
    let mut stdout = std::io::stdout().lock();
    for line in std::io::stdin().lines() {
        let line = line.map_err(|error| error.to_string())?;
        let operations: u64 = line
            .trim()
            .parse()
            .map_err(|_| format!("not an operation count: {line:?}"))?;
        let elapsed = workload.run(operations);
        writeln!(stdout, "{}", elapsed.as_nanos())
            .and_then(|()| stdout.flush())
            .map_err(|error| error.to_string())?;
    }
    match workload.finish() {
        Ok(()) => writeln!(stdout, "ok"),
        Err(failure) => writeln!(stdout, "{failure}"),
    }
    .map_err(|error| error.to_string())
}

/// Measures the passive false sharing workload on every heap, each in a fresh process
/// of its own, their rounds interleaved; the figure is milliseconds per run.
pub fn rows(
    settings: Settings,
    machine: &Machine,
    progress: &mut Progress,
) -> Result<(Row, Row), String> {
    progress.step("slab: passive false sharing after cache-scratch (2 threads)");
    let settings = Settings {
        sample_time: settings.sample_time * 10,
        ..settings
    };
    let mut processes = HEAP_NAMES
        .iter()
        .map(|name| FreshProcess::start(name))
        .collect::<Result<Vec<_>, _>>()?;
    let failure = std::cell::RefCell::new(None);
    let figures = {
        let [a, b, c, d] = &mut processes[..] else {
            unreachable!("four heaps")
        };
        let mut run = |process: &mut FreshProcess, operations: u64| {
            process.run(operations).unwrap_or_else(|error| {
                failure.borrow_mut().get_or_insert(error);
                Duration::from_millis(1)
            })
        };
        let run = std::cell::RefCell::new(&mut run);
        measure_interleaved(
            settings,
            &mut [
                &mut |n| (run.borrow_mut())(a, n),
                &mut |n| (run.borrow_mut())(b, n),
                &mut |n| (run.borrow_mut())(c, n),
                &mut |n| (run.borrow_mut())(d, n),
            ],
        )
    };
    if let Some(error) = failure.into_inner() {
        return Err(error);
    }
    for process in processes {
        process.finish()?;
    }
    let milliseconds: Vec<_> = figures.iter().map(|m| m.scaled(1e-6)).collect();
    let mut shared = Vec::new();
    for name in HEAP_NAMES {
        shared.push(Measurement::exact(placement_in_fresh_process(name)?));
    }
    let timed = row_of(
        "passive false sharing (after cache-scratch, not the original): 2 threads free a \
         handed 8 B object, then allocate and write 8 B objects",
        &milliseconds,
        &HEAP_NAMES,
    )
    .in_summary()
    .multi_threaded(machine);
    let placement = row_of(
        "passive false sharing in lockstep, each allocator in a fresh process: steps whose \
         two live 8 B objects share a cache line",
        &shared,
        &HEAP_NAMES,
    );
    Ok((timed, placement))
}

#[cfg(test)]
mod tests {
    use super::*;

    checks_catch_a_block_handed_out_twice!(PassiveFalseSharing::new);
}
