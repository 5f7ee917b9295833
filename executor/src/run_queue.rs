//! The run queues: crossbeam-deque's `Worker`, `Stealer` and `Injector`; under miri, a
//! locked `VecDeque` with the same interface.
//!
//! crossbeam-deque reclaims its buffers through crossbeam-epoch, which turns integers
//! back into pointers: miri cannot run that under `-Zmiri-strict-provenance` (the
//! workspace's miri flag). The stand-in keeps the scheduler's own code (the task table,
//! its state word, the sleep protocol) under miri; the deques are crossbeam's own tested
//! code.

#[cfg(not(miri))]
pub(crate) use crossbeam_deque::{Injector, Steal, Stealer, Worker};

#[cfg(miri)]
pub(crate) use stand_in::{Injector, Steal, Stealer, Worker};

#[cfg(miri)]
mod stand_in {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use crate::sync::lock;

    /// The outcome of a steal, as crossbeam's.
    #[derive(Debug)]
    pub(crate) enum Steal<T> {
        Empty,
        Success(T),
        #[expect(dead_code, reason = "the stand-in never has to retry")]
        Retry,
    }

    /// Moves half of `from` (at least one) into `into` and returns the first.
    fn take_half<T>(from: &mut VecDeque<T>, into: &Worker<T>) -> Steal<T> {
        let Some(first) = from.pop_front() else {
            return Steal::Empty;
        };
        let more = from.len().div_ceil(2);
        let mut destination = lock(&into.queue);
        destination.extend(from.drain(..more));
        Steal::Success(first)
    }

    /// A FIFO queue that its owner pushes to and pops from, and others steal from.
    #[derive(Debug)]
    pub(crate) struct Worker<T> {
        queue: Arc<Mutex<VecDeque<T>>>,
    }

    impl<T> Worker<T> {
        pub(crate) fn new_fifo() -> Self {
            Self {
                queue: Arc::default(),
            }
        }

        pub(crate) fn push(&self, value: T) {
            lock(&self.queue).push_back(value);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            lock(&self.queue).pop_front()
        }

        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.queue).is_empty()
        }

        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer {
                queue: Arc::clone(&self.queue),
            }
        }
    }

    /// The stealing end of a [`Worker`].
    #[derive(Debug)]
    pub(crate) struct Stealer<T> {
        queue: Arc<Mutex<VecDeque<T>>>,
    }

    impl<T> Stealer<T> {
        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.queue).is_empty()
        }

        pub(crate) fn steal(&self) -> Steal<T> {
            match lock(&self.queue).pop_front() {
                Some(value) => Steal::Success(value),
                None => Steal::Empty,
            }
        }

        pub(crate) fn steal_batch_and_pop(&self, into: &Worker<T>) -> Steal<T> {
            if Arc::ptr_eq(&self.queue, &into.queue) {
                return Steal::Empty;
            }
            let mut source = lock(&self.queue);
            take_half(&mut source, into)
        }
    }

    /// The queue every thread may push to.
    #[derive(Debug)]
    pub(crate) struct Injector<T> {
        queue: Mutex<VecDeque<T>>,
    }

    impl<T> Injector<T> {
        pub(crate) fn new() -> Self {
            Self {
                queue: Mutex::default(),
            }
        }

        pub(crate) fn push(&self, value: T) {
            lock(&self.queue).push_back(value);
        }

        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.queue).is_empty()
        }

        pub(crate) fn steal_batch_and_pop(&self, into: &Worker<T>) -> Steal<T> {
            let mut source = lock(&self.queue);
            take_half(&mut source, into)
        }
    }
}
