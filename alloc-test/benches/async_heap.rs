//! Criterion benchmarks of the async heap: an uncontended allocation and drop of a
//! 64-byte value against `Box::new` on `SlabHeap` and on `System` (glibc, with a second
//! thread alive), in thread CPU time, and the time from a free to the waiter's wake-up
//! (wall time).
//!
//! ```sh
//! cargo bench -p pagekeep-alloc-test --bench async_heap -- --warm-up-time 1 --measurement-time 3
//! ```

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::Criterion;
use pagekeep_alloc_test::bench::async_heap;
use pagekeep_slab::SlabHeap;
use pagekeep_slab::async_heap::AsyncHeap;

/// The value allocated: 64 bytes.
type Value = [u64; 8];

/// Keeps a second thread alive for the whole run: glibc's malloc takes a single-thread
/// shortcut otherwise.
fn keep_second_thread_alive() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        thread::spawn(|| {
            loop {
                thread::park();
            }
        });
    });
}

/// Polls a future that is expected to be ready at once.
fn ready<F: Future>(future: F) -> F::Output {
    let future = pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an uncontended allocation waited"),
    }
}

/// The CPU time this thread has used: unlike wall time, it does not count the time
/// the thread waits for a processor, so a loaded (shared) machine distorts it less.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock exists on Linux and macOS.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Elsewhere, wall time since the first call (no thread CPU clock through `libc`).
#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// Runs `operation` `iterations` times; its thread CPU time.
fn cpu_time_of(iterations: u64, mut operation: impl FnMut()) -> Duration {
    let start = thread_cpu_time();
    for _ in 0..iterations {
        operation();
    }
    thread_cpu_time() - start
}

fn alloc_and_drop(c: &mut Criterion) {
    keep_second_thread_alive();
    // Measured in thread CPU time (see `thread_cpu_time`).
    let mut group = c.benchmark_group("alloc_and_drop_64B");
    let heap = AsyncHeap::new(1 << 30);
    group.bench_function("async_heap_alloc_await", |b| {
        b.iter_custom(|iterations| {
            cpu_time_of(iterations, || {
                drop(black_box(ready(heap.alloc(black_box([1u64; 8])))))
            })
        })
    });
    group.bench_function("async_heap_try_alloc", |b| {
        b.iter_custom(|iterations| {
            cpu_time_of(iterations, || {
                drop(black_box(
                    heap.try_alloc(black_box([1u64; 8]))
                        .unwrap_or_else(|_| panic!("room")),
                ))
            })
        })
    });
    let slab: SlabHeap = SlabHeap::new();
    group.bench_function("box_new_in_slab_heap", |b| {
        b.iter_custom(|iterations| {
            cpu_time_of(iterations, || {
                drop(black_box(allocator_api2::boxed::Box::new_in(
                    black_box::<Value>([1u64; 8]),
                    &slab,
                )))
            })
        })
    });
    group.bench_function("box_new_system", |b| {
        b.iter_custom(|iterations| {
            cpu_time_of(iterations, || {
                drop(black_box(Box::new(black_box::<Value>([1u64; 8]))))
            })
        })
    });
    group.finish();
}

/// The free-to-wake time summed over `iterations` hand-offs (see
/// [`async_heap::free_to_wake`]).
fn free_to_wake(iterations: u64, with_a_third_allocating: bool) -> Duration {
    let hand_offs = usize::try_from(iterations).expect("iterations fit in usize");
    async_heap::free_to_wake(hand_offs, with_a_third_allocating)
        .into_iter()
        .sum()
}

fn wake_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("free_to_wake");
    group.bench_function("two_threads", |b| {
        b.iter_custom(|iterations| free_to_wake(iterations, false))
    });
    group.bench_function("with_a_third_allocating", |b| {
        b.iter_custom(|iterations| free_to_wake(iterations, true))
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    alloc_and_drop(&mut criterion);
    wake_latency(&mut criterion);
    criterion.final_summary();
}
