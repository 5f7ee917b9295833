//! Programs of alloc / free / cancel / poll run on an [`AsyncHeap`] and on a model of its
//! capacity and FIFO queue (issue 21): after every step the available bytes, the number
//! of waiters, which requests are served and which wakers fired must agree. Every block
//! is checked for alignment, filled with the corruption detector's pattern when it is
//! served, and checked when it is freed (two live blocks overlapping, or a block handed
//! out twice, show up as a wrong byte). Some steps run on a second thread, so that two
//! threads' byte credits take part: frees there go to its credit, which must still reach
//! the waiters of the first.

use core::alloc::Layout;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::Wake;

use pagekeep_alloc_test::pattern;
use pagekeep_slab::async_heap::{AsyncHeap, HeapBlock};
use proptest::prelude::*;

/// Large enough that threads take byte credits (a 64th of the capacity), small enough
/// that programs fill it.
const CAPACITY: usize = 64 * 1024;

#[derive(Clone, Debug)]
enum Op {
    /// Start a request for a block of this size and alignment and poll it once.
    Alloc(usize, usize),
    /// Free the n-th live block (modulo).
    Free(usize),
    /// Free the n-th live block (modulo) on the second thread.
    FreeElsewhere(usize),
    /// Drop the n-th pending request (modulo).
    Cancel(usize),
    /// Poll the n-th pending request (modulo).
    Poll(usize),
    /// `try_alloc_layout`: served only if nobody waits and it fits.
    TryAlloc(usize, usize),
    /// `try_alloc_layout` on the second thread.
    TryAllocElsewhere(usize, usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1usize..=64,
        65usize..=2048,
        2049usize..=CAPACITY / 2,
        Just(CAPACITY)
    ]
}

fn align() -> impl Strategy<Value = usize> {
    (0u32..=7).prop_map(|shift| 1 << shift)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (size(), align()).prop_map(|(size, align)| Op::Alloc(size, align)),
        2 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::FreeElsewhere),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => any::<usize>().prop_map(Op::Poll),
        1 => (size(), align()).prop_map(|(size, align)| Op::TryAlloc(size, align)),
        1 => (size(), align()).prop_map(|(size, align)| Op::TryAllocElsewhere(size, align)),
    ]
}

/// Counts its wake-ups.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Request<'h> = Pin<Box<dyn Future<Output = HeapBlock<'h>> + 'h>>;

/// A pending request: the future, its model id, its waker and the waker's counter.
struct Pending<'h> {
    future: Request<'h>,
    id: u64,
    waker: Waker,
    wakes: Arc<CountingWaker>,
}

/// A live block and the tag of the pattern it holds.
struct Live<'h> {
    block: HeapBlock<'h>,
    tag: u64,
}

/// The model: available bytes, the queue of (id, charge), the granted ids.
#[derive(Default)]
struct Model {
    available: usize,
    queue: VecDeque<(u64, usize)>,
    granted: Vec<(u64, usize)>,
}

impl Model {
    fn serve(&mut self) {
        while let Some(&(id, bytes)) = self.queue.front() {
            if bytes > self.available {
                break;
            }
            self.available -= bytes;
            self.queue.pop_front();
            self.granted.push((id, bytes));
        }
    }

    fn is_granted(&self, id: u64) -> bool {
        self.granted.iter().any(|&(granted, _)| granted == id)
    }
}

/// Checks the alignment and writes the pattern of a block just served.
fn fill<'h>(block: HeapBlock<'h>, seed: u64) -> Live<'h> {
    let layout = block.layout();
    assert_eq!(
        block.as_ptr().addr().get() % layout.align(),
        0,
        "block {:p} not aligned to {}",
        block.as_ptr(),
        layout.align()
    );
    let tag = pattern::tag(block.as_ptr().addr().get(), seed);
    // SAFETY: the block is live and `layout.size()` bytes long.
    unsafe { pattern::fill(block.as_ptr(), 0..layout.size(), tag) };
    Live { block, tag }
}

/// Checks the pattern of a block about to be freed.
fn check(live: &Live<'_>) {
    // SAFETY: the block is live and `layout.size()` bytes long.
    let difference = unsafe {
        pattern::first_difference(live.block.as_ptr(), 0..live.block.layout().size(), live.tag)
    };
    assert_eq!(
        difference,
        None,
        "block {:p} ({:?}) corrupted (offset, byte found)",
        live.block.as_ptr(),
        live.block.layout()
    );
}

/// What the main thread asks the second to do.
type Job<'h> = Box<dyn FnOnce() -> Option<HeapBlock<'h>> + Send + 'h>;

fn run(ops: Vec<Op>, seed: u64) {
    let heap = AsyncHeap::new(CAPACITY);
    std::thread::scope(|scope| {
        let (jobs, job_receiver) = mpsc::channel::<Job<'_>>();
        let (done_sender, done) = mpsc::channel::<Option<HeapBlock<'_>>>();
        scope.spawn(move || {
            for job in job_receiver {
                done_sender.send(job()).expect("the main thread waits");
            }
        });
        // `elsewhere` runs a job on the second thread and waits for it.
        run_on(&heap, ops, seed, &|job| {
            jobs.send(job).expect("the second thread runs");
            done.recv().expect("the second thread answers")
        });
    });
}

fn run_on<'h>(
    heap: &'h AsyncHeap,
    ops: Vec<Op>,
    seed: u64,
    elsewhere: &dyn Fn(Job<'h>) -> Option<HeapBlock<'h>>,
) {
    let mut model = Model {
        available: CAPACITY,
        ..Model::default()
    };
    let mut live: Vec<Live<'h>> = Vec::new();
    let mut pending: Vec<Pending<'h>> = Vec::new();
    let mut next_id = 0u64;
    for op in ops {
        match op {
            Op::Alloc(size, align) => {
                let layout = Layout::from_size_align(size, align).unwrap();
                let charge = heap.charge(layout).unwrap();
                let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
                let waker = Waker::from(wakes.clone());
                let mut future: Request<'h> = Box::pin(heap.alloc_layout(layout));
                let id = next_id;
                next_id += 1;
                let expect_ready = model.queue.is_empty() && model.available >= charge;
                match future.as_mut().poll(&mut Context::from_waker(&waker)) {
                    Poll::Ready(block) => {
                        assert!(expect_ready, "served past the queue or the capacity");
                        model.available -= charge;
                        live.push(fill(block, seed));
                    }
                    Poll::Pending => {
                        assert!(!expect_ready, "made to wait with room and nobody queued");
                        model.queue.push_back((id, charge));
                        pending.push(Pending {
                            future,
                            id,
                            waker,
                            wakes,
                        });
                    }
                }
            }
            Op::TryAlloc(size, align) | Op::TryAllocElsewhere(size, align) => {
                let layout = Layout::from_size_align(size, align).unwrap();
                let charge = heap.charge(layout).unwrap();
                let expect = model.queue.is_empty() && model.available >= charge;
                let block = if matches!(op, Op::TryAlloc(..)) {
                    heap.try_alloc_layout(layout).ok()
                } else {
                    elsewhere(Box::new(move || heap.try_alloc_layout(layout).ok()))
                };
                match block {
                    Some(block) => {
                        assert!(expect, "try_alloc overtook a waiter or the capacity");
                        model.available -= charge;
                        live.push(fill(block, seed));
                    }
                    None => assert!(!expect, "try_alloc refused with room"),
                }
            }
            Op::Free(index) | Op::FreeElsewhere(index) => {
                if live.is_empty() {
                    continue;
                }
                let block = live.swap_remove(index % live.len());
                check(&block);
                model.available += heap.charge(block.block.layout()).unwrap();
                if matches!(op, Op::Free(_)) {
                    drop(block);
                } else {
                    let block = block.block;
                    elsewhere(Box::new(move || {
                        drop(block);
                        None
                    }));
                }
                model.serve();
            }
            Op::Cancel(index) => {
                if pending.is_empty() {
                    continue;
                }
                let request = pending.swap_remove(index % pending.len());
                if let Some(position) = model.granted.iter().position(|&(id, _)| id == request.id) {
                    model.available += model.granted.swap_remove(position).1;
                } else {
                    let position = model
                        .queue
                        .iter()
                        .position(|&(id, _)| id == request.id)
                        .unwrap();
                    model.queue.remove(position);
                }
                drop(request);
                model.serve();
            }
            Op::Poll(index) => {
                if pending.is_empty() {
                    continue;
                }
                let index = index % pending.len();
                let request = &mut pending[index];
                let granted = model.is_granted(request.id);
                match request
                    .future
                    .as_mut()
                    .poll(&mut Context::from_waker(&request.waker))
                {
                    Poll::Ready(block) => {
                        assert!(granted, "served out of order");
                        let id = request.id;
                        model.granted.retain(|&(granted, _)| granted != id);
                        live.push(fill(block, seed));
                        pending.swap_remove(index);
                    }
                    Poll::Pending => assert!(!granted, "granted but not ready"),
                }
            }
        }
        assert_eq!(heap.available(), model.available, "after {op:?}");
        assert_eq!(heap.waiters(), model.queue.len(), "after {op:?}");
        // A request the model granted was woken; one still queued was not.
        for request in &pending {
            let woken = request.wakes.0.load(Ordering::SeqCst) > 0;
            assert_eq!(
                woken,
                model.is_granted(request.id),
                "request {} after {op:?}",
                request.id
            );
        }
    }
    drop(pending);
    for block in &live {
        check(block);
    }
    drop(live);
    assert_eq!(heap.available(), CAPACITY);
    assert_eq!(heap.waiters(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 4 * pagekeep_alloc_test::cases() })
    })]

    #[test]
    fn alloc_free_cancel_programs_match_the_model(
        ops in prop::collection::vec(op(), 1..pagekeep_alloc_test::max_program_len()),
        seed in any::<u64>(),
    ) {
        run(ops, seed);
    }
}
