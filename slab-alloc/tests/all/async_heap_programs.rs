//! Programs of alloc / free / cancel / poll run on an async heap and on a model of its
//! capacity and FIFO queue: after every step the available bytes, the number of
//! waiters, which requests are served and which wakers fired must agree.

use core::alloc::Layout;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;
use std::sync::Arc;

use pagekeep_slab::async_heap::{AsyncHeap, HeapBlock};
use proptest::prelude::*;

use crate::async_support::{CountingWaker, counting_waker};

const CAPACITY: usize = 8192;

#[derive(Clone, Debug)]
enum Op {
    /// Start a request for this many bytes and poll it once.
    Alloc(usize),
    /// Free the n-th live block (modulo).
    Free(usize),
    /// Drop the n-th pending request (modulo).
    Cancel(usize),
    /// Poll the n-th pending request (modulo).
    Poll(usize),
    /// `try_alloc_layout`: served only if nobody waits and it fits.
    TryAlloc(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![1usize..=64, 65usize..=2048, 2049usize..=CAPACITY];
    prop_oneof![
        3 => size.clone().prop_map(Op::Alloc),
        3 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => any::<usize>().prop_map(Op::Poll),
        1 => size.prop_map(Op::TryAlloc),
    ]
}

type Request<'h> = Pin<Box<dyn Future<Output = HeapBlock<'h>> + 'h>>;

/// A pending request: the future, its model id, its waker's counter.
struct Pending<'h> {
    future: Request<'h>,
    id: u64,
    waker: Waker,
    wakes: Arc<CountingWaker>,
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

fn run(ops: Vec<Op>) {
    let heap = AsyncHeap::new(CAPACITY);
    let mut model = Model {
        available: CAPACITY,
        ..Model::default()
    };
    let mut live: Vec<HeapBlock<'_>> = Vec::new();
    let mut pending: Vec<Pending<'_>> = Vec::new();
    let mut next_id = 0u64;
    for op in ops {
        match op {
            Op::Alloc(size) => {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let charge = heap.charge(layout).unwrap();
                let (waker, wakes) = counting_waker();
                let mut future: Request<'_> = Box::pin(heap.alloc_layout(layout));
                let id = next_id;
                next_id += 1;
                let expect_ready = model.queue.is_empty() && model.available >= charge;
                match future.as_mut().poll(&mut Context::from_waker(&waker)) {
                    Poll::Ready(block) => {
                        assert!(expect_ready, "served past the queue or the capacity");
                        model.available -= charge;
                        live.push(block);
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
            Op::TryAlloc(size) => {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let charge = heap.charge(layout).unwrap();
                let expect = model.queue.is_empty() && model.available >= charge;
                match heap.try_alloc_layout(layout) {
                    Ok(block) => {
                        assert!(expect, "try_alloc overtook a waiter or the capacity");
                        model.available -= charge;
                        live.push(block);
                    }
                    Err(_) => assert!(!expect, "try_alloc refused with room"),
                }
            }
            Op::Free(index) => {
                if live.is_empty() {
                    continue;
                }
                let block = live.swap_remove(index % live.len());
                model.available += heap.charge(block.layout()).unwrap();
                drop(block);
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
                        live.push(block);
                        pending.swap_remove(index);
                    }
                    Poll::Pending => assert!(!granted, "granted but not ready"),
                }
            }
        }
        assert_eq!(heap.available(), model.available);
        assert_eq!(heap.waiters(), model.queue.len());
        // A request the model granted was woken; one still queued was not.
        for request in &pending {
            let woken = request.wakes.0.load(Ordering::SeqCst) > 0;
            assert_eq!(
                woken,
                model.is_granted(request.id),
                "request {}",
                request.id
            );
        }
    }
    drop(pending);
    drop(live);
    assert_eq!(heap.available(), CAPACITY);
    assert_eq!(heap.waiters(), 0);
}

proptest! {
    #![proptest_config(crate::config(256))]

    #[test]
    fn alloc_free_cancel_programs_match_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
