//! The async heap of issue 21 (`pagekeep_slab::async_heap::AsyncHeap`): an uncontended
//! allocation and drop against `Box` on `SlabHeap` and on `System`, and the time from a
//! free to the wake-up of the request waiting for it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use pagekeep_alloc_test::bench::async_heap::free_to_wake;
use pagekeep_alloc_test::bench::measure::{Measurement, Settings, measure_interleaved};
use pagekeep_alloc_test::bench::report::{Row, Section, Target};
use pagekeep_slab::SlabHeap;
use pagekeep_slab::async_heap::AsyncHeap;

use crate::progress::Progress;

/// Progress steps of this part.
pub const STEPS: usize = 2;

/// The value allocated: 64 bytes.
type Value = [u64; 8];

/// Hand-offs timed per free-to-wake figure (each one a sample).
const HAND_OFFS: usize = 2000;

/// Polls a future that must be ready at once (an uncontended allocation).
fn ready<F: Future>(future: F) -> F::Output {
    let future = std::pin::pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an uncontended allocation waited"),
    }
}

/// `n` times: allocates a 64-byte value and drops it, the value written.
fn pairs(n: u64, mut allocate_and_drop: impl FnMut(Value)) -> Duration {
    let start = Instant::now();
    for index in 0..n {
        allocate_and_drop(black_box([index; 8]));
    }
    start.elapsed()
}

/// What `Box::new` then drop do on `System` (the global allocator of this program is
/// another): allocate, move the value in, free.
fn box_on_system(value: Value) {
    let layout = Layout::new::<Value>();
    // SAFETY: a non-zero layout; the block is checked, written, then freed once with
    // the same layout.
    unsafe {
        let block = System.alloc(layout).cast::<Value>();
        if block.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        block.write(value);
        System.dealloc(black_box(block).cast(), layout);
    }
}

/// The uncontended rows: `try_alloc` and `alloc().await` (ready at its first poll) of an
/// `AsyncHeap` against `Box` on `SlabHeap` and on `System`, in the same rounds.
fn uncontended(settings: Settings, progress: &mut Progress) -> Vec<Row> {
    progress.step("slab: async heap, uncontended alloc + drop");
    let heap = AsyncHeap::new(1 << 30);
    let slab: SlabHeap = SlabHeap::new();
    let figures = measure_interleaved(
        settings,
        &mut [
            &mut |n| {
                pairs(n, |value| {
                    drop(black_box(
                        heap.try_alloc(value).unwrap_or_else(|_| panic!("room")),
                    ))
                })
            },
            &mut |n| pairs(n, |value| drop(black_box(ready(heap.alloc(value))))),
            &mut |n| {
                pairs(n, |value| {
                    drop(black_box(allocator_api2::boxed::Box::new_in(value, &slab)))
                })
            },
            &mut |n| pairs(n, box_on_system),
        ],
    );
    let peers = |ours: &str, figure: &Measurement| {
        vec![
            (ours.to_owned(), figure.clone()),
            ("Box on SlabHeap".to_owned(), figures[2].clone()),
            ("Box on System".to_owned(), figures[3].clone()),
        ]
    };
    vec![
        Row::new(
            "AsyncHeap::try_alloc + drop, 64 B",
            peers("AsyncHeap", &figures[0]),
        )
        .target(Target::at_most("Box on SlabHeap", 1.5)),
        Row::new(
            "AsyncHeap::alloc(..).await (ready at once) + drop, 64 B",
            peers("AsyncHeap", &figures[1]),
        )
        .target(Target::at_most("Box on SlabHeap", 1.5)),
    ]
}

/// The control: the time from `Thread::unpark` to the return of the `park` it ends,
/// the floor under any wake-up through a thread-parking waker.
fn unpark_to_return(hand_offs: usize) -> Vec<Duration> {
    let barrier = Barrier::new(2);
    let (sender, receiver) = mpsc::channel::<Instant>();
    let (parked_sender, parked) = mpsc::channel::<thread::Thread>();
    thread::scope(|scope| {
        let barrier = &barrier;
        let waiter = scope.spawn(move || {
            let mut times = Vec::with_capacity(hand_offs);
            let woken_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            for _ in 0..hand_offs {
                barrier.wait();
                woken_flag.store(false, std::sync::atomic::Ordering::SeqCst);
                parked_sender
                    .send(thread::current())
                    .expect("the unparking thread waits");
                // A spurious return of `park` is told apart by the time not yet sent.
                let freed = loop {
                    thread::park();
                    if let Ok(freed) = receiver.try_recv() {
                        break freed;
                    }
                };
                times.push(Instant::now().saturating_duration_since(freed));
                barrier.wait();
            }
            times
        });
        for _ in 0..hand_offs {
            barrier.wait();
            let thread = parked.recv().expect("the waiter is there");
            // Give the waiter time to park, as the heap's waiter is queued before its free.
            thread::sleep(Duration::from_micros(50));
            let unparked = Instant::now();
            sender.send(unparked).expect("the waiter is there");
            thread.unpark();
            barrier.wait();
        }
        waiter.join().expect("the waiter finished")
    })
}

/// The `fraction` quantile of `times`, in µs.
fn quantile(times: &mut [Duration], fraction: f64) -> f64 {
    times.sort_unstable();
    let index = ((times.len().max(1) - 1) as f64 * fraction).round() as usize;
    times
        .get(index)
        .map_or(0.0, |time| time.as_secs_f64() * 1e6)
}

/// The free-to-wake rows: median and 99th percentile of the heap's hand-off and of the
/// unpark control.
fn wake_latency(progress: &mut Progress) -> Vec<Row> {
    progress.step("slab: async heap, free to wake-up");
    let mut heap = free_to_wake(HAND_OFFS, false);
    let mut control = unpark_to_return(HAND_OFFS);
    [("median", 0.5), ("99th percentile", 0.99)]
        .into_iter()
        .map(|(name, fraction)| {
            Row::new(
                format!("free to wake-up, {name} of {HAND_OFFS} hand-offs"),
                vec![
                    (
                        "AsyncHeap".to_owned(),
                        Measurement::exact(quantile(&mut heap, fraction)),
                    ),
                    (
                        "unpark (control)".to_owned(),
                        Measurement::exact(quantile(&mut control, fraction)),
                    ),
                ],
            )
        })
        .collect()
}

/// The sections of this part.
pub fn sections(settings: Settings, progress: &mut Progress) -> Vec<Section> {
    let uncontended = uncontended(settings, progress);
    let latency = wake_latency(progress);
    vec![
        Section {
            title: "Async heap (issue 21)".into(),
            description: "An `AsyncHeap` of 1 GiB on one thread: a 64-byte value moved in \
                with `try_alloc`, or with `alloc(..).await` polled once (it is ready at \
                once), then dropped; against `Box::new_in` on `SlabHeap` (the heap the async \
                heap's small blocks come from) and on `System`, all inlined at the call site, \
                in the same rounds. The async heap serves both from the thread's byte credit \
                (no shared atomic); issue 21's target: at most 1.5x `Box` on `SlabHeap`."
                .into(),
            unit: "ns per alloc + drop".into(),
            rows: uncontended,
            line_plot: None,
        },
        Section {
            title: "Async heap: free to wake-up".into(),
            description: "Two threads and a heap with room for one 1 KiB block: one holds \
                it, the other asks for one and parks (a thread-parking waker); once it is \
                queued, the first frees its block. The figure is the wall time from the free \
                to the return of the waiter's poll with its block, over hand-offs timed one \
                by one. The control is the floor under any such wake-up: the time from \
                `Thread::unpark` to the return of the `park` it ends."
                .into(),
            unit: "µs".into(),
            rows: latency,
            line_plot: None,
        },
    ]
}
