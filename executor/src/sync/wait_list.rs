//! [`WaitList`]: the futures waiting on a primitive, each known by an id, and
//! [`WakeBatch`], which carries their wakers out of the lock to be woken.
//!
//! A waiting future keeps its id in an `Option<u64>`: a re-poll finds its own entry and
//! replaces the waker there (when it would not wake the same task), a dropped future
//! removes its entry. The entries live in one `Vec` that keeps its capacity, so waiting
//! allocates nothing once the list has been as long as it gets. An entry is removed
//! only by its future (when it completes or is dropped), never by a notification: a
//! notified entry stays, marked, until its future sees the mark, so a future dropped
//! after it was chosen by a "wake one" can pass the notification on.
//!
//! A waker's `clone`, `wake` and `drop` are the executor's code, not ours, and may
//! panic: a waker is cloned before the lock is taken (the functions here take the
//! clone and hand back the waker they did not keep), and [`Unwinds`] lets a sequence
//! of wake-ups and drops run to its end before the first panic goes on.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::task::Waker;

/// Where a waiting future stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaiterState {
    /// Waiting; the entry holds its waker.
    Waiting,
    /// Chosen by a "wake one": the future owes the notification to someone else if it
    /// is dropped without consuming it.
    NotifiedOne,
    /// Woken by a "wake all" (a broadcast, or a channel's closing); nothing is owed.
    NotifiedAll,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    state: WaiterState,
    /// `Some` while `Waiting`; taken by the notification (or by [`WaitList::take_notified_all`]).
    waker: Option<Waker>,
}

/// The futures waiting on one primitive, first come first in the list.
#[derive(Debug)]
pub(crate) struct WaitList {
    entries: Vec<Waiter>,
    next_id: u64,
}

impl WaitList {
    pub(crate) const fn new() -> Self {
        Self {
            entries: Vec::new(),
            next_id: 0,
        }
    }

    fn position(&self, id: u64) -> Option<usize> {
        self.entries.iter().position(|waiter| waiter.id == id)
    }

    /// The state of waiter `id`, or `None` if it has no entry.
    pub(crate) fn state(&self, id: u64) -> Option<WaiterState> {
        self.position(id).map(|index| self.entries[index].state)
    }

    /// Puts the future whose id is in `slot` in the `Waiting` state with `waker`: its
    /// entry if it has one (keeping its place), a new entry at the end otherwise (its id
    /// stored in `slot`).
    ///
    /// `waker` is a clone made before the lock was taken (a clone may panic, and must
    /// not do so with the lock held). Returns the waker it did not keep (the one it
    /// replaced, or `waker` itself), to be dropped after the lock is released.
    #[must_use = "the waker not kept is to be dropped after the lock"]
    pub(crate) fn wait(&mut self, slot: &mut Option<u64>, waker: Waker) -> Option<Waker> {
        if let Some(index) = slot.and_then(|id| self.position(id)) {
            let entry = &mut self.entries[index];
            entry.state = WaiterState::Waiting;
            return replace_waker(&mut entry.waker, waker);
        }
        let id = self.next_id;
        self.next_id += 1;
        if self.entries.len() == self.entries.capacity() {
            // The list belongs to a primitive that usually outlives the request whose
            // task waits on it: its growth must not come from (and pin) that request's
            // arena.
            pagekeep_arena::outside_arena(|| self.entries.reserve(1));
        }
        self.entries.push(Waiter {
            id,
            state: WaiterState::Waiting,
            waker: Some(waker),
        });
        *slot = Some(id);
        None
    }

    /// Removes waiter `id`'s entry; returns the state it was in, `None` if it had none.
    /// The waker it may still hold is returned to be dropped after the lock.
    pub(crate) fn remove(&mut self, id: u64) -> Option<(WaiterState, Option<Waker>)> {
        let index = self.position(id)?;
        let entry = self.entries.remove(index);
        Some((entry.state, entry.waker))
    }

    /// Chooses the first `Waiting` future: marks it `NotifiedOne` and returns its waker,
    /// to be woken after the lock is released. `None` if nobody waits.
    pub(crate) fn notify_one(&mut self) -> Option<Waker> {
        let entry = self
            .entries
            .iter_mut()
            .find(|waiter| waiter.state == WaiterState::Waiting)?;
        entry.state = WaiterState::NotifiedOne;
        entry.waker.take()
    }

    /// Marks every `Waiting` future `NotifiedAll`. Their wakers stay in the list until
    /// [`take_notified_all`](Self::take_notified_all) carries them out.
    pub(crate) fn notify_all(&mut self) {
        for entry in &mut self.entries {
            if entry.state == WaiterState::Waiting {
                entry.state = WaiterState::NotifiedAll;
            }
        }
    }

    /// Moves the wakers of `NotifiedAll` entries into `batch` until it is full; returns
    /// whether some may be left (the batch filled up). The caller wakes the batch after
    /// releasing the lock, and calls again while this returns `true`. The loop ends: a
    /// `NotifiedAll` future never stores a waker again.
    pub(crate) fn take_notified_all(&mut self, batch: &mut WakeBatch) -> bool {
        for entry in &mut self.entries {
            if batch.is_full() {
                return true;
            }
            if entry.state == WaiterState::NotifiedAll
                && let Some(waker) = entry.waker.take()
            {
                batch.push(waker);
            }
        }
        false
    }

    /// Entries in the list, notified ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Stores `waker` (a clone made before the lock was taken) in `slot` unless the one
/// there would wake the same task; returns the waker it did not keep (the one it
/// replaced, or `waker` itself), to be dropped after the lock is released (a waker's
/// destructor is the executor's code, not ours).
#[must_use = "the waker not kept is to be dropped after the lock"]
pub(crate) fn replace_waker(slot: &mut Option<Waker>, waker: Waker) -> Option<Waker> {
    match slot {
        Some(stored) if stored.will_wake(&waker) => Some(waker),
        _ => slot.replace(waker),
    }
}

/// Runs steps that must all run (wake-ups, drops of wakers and values: the executor's
/// and the user's code), catching their panics, and keeps the first panic's payload to
/// be resumed by [`finish`](Self::finish) once every step has run. Later payloads are
/// dropped with [`discard_panic`](super::discard_panic).
pub(crate) struct Unwinds {
    first: Option<Box<dyn Any + Send>>,
}

impl Unwinds {
    pub(crate) const fn new() -> Self {
        Self { first: None }
    }

    /// Runs `step`, keeping its panic for later.
    pub(crate) fn run(&mut self, step: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(step)) {
            if self.first.is_none() {
                self.first = Some(payload);
            } else {
                super::discard_panic(payload);
            }
        }
    }

    /// Wakes `waker`, if any, keeping a panic for later.
    pub(crate) fn wake(&mut self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            self.run(|| waker.wake());
        }
    }

    /// Resumes the first panic caught, if any. While the thread is already unwinding
    /// (this runs in a destructor called by that unwinding) a second panic would abort
    /// the process: the payload is dropped instead.
    pub(crate) fn finish(self) {
        if let Some(payload) = self.first {
            if std::thread::panicking() {
                super::discard_panic(payload);
            } else {
                resume_unwind(payload);
            }
        }
    }
}

impl std::fmt::Debug for Unwinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwinds")
            .field("panicked", &self.first.is_some())
            .finish()
    }
}

/// How many wakers one [`WakeBatch`] carries.
const BATCH: usize = 32;

/// Wakers taken under a lock, to be woken once it is released.
#[derive(Debug)]
pub(crate) struct WakeBatch {
    wakers: [Option<Waker>; BATCH],
    len: usize,
}

impl WakeBatch {
    pub(crate) const fn new() -> Self {
        Self {
            wakers: [const { None }; BATCH],
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == BATCH
    }

    fn push(&mut self, waker: Waker) {
        debug_assert!(!self.is_full(), "wake batch overfilled");
        self.wakers[self.len] = Some(waker);
        self.len += 1;
    }

    /// Wakes every waker in the batch and empties it, even if some panic: their panics
    /// go to `unwinds`, for the caller to resume when it is done. Call with no lock held.
    pub(crate) fn wake_all(&mut self, unwinds: &mut Unwinds) {
        for slot in &mut self.wakers[..self.len] {
            unwinds.wake(slot.take());
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::{CountingWaker, PanicsOnWake, expect_panic};

    #[test]
    fn a_repoll_keeps_its_entry_and_a_removal_frees_it() {
        let (first, first_count) = CountingWaker::new();
        let (second, second_count) = CountingWaker::new();
        let mut list = WaitList::new();
        let mut slot = None;
        assert!(list.wait(&mut slot, first.clone()).is_none());
        // The first replaced (handed back to be dropped after the lock); the wake-up below
        // shows which one the entry holds.
        assert!(list.wait(&mut slot, second.clone()).is_some());
        // The same waker again: kept or replaced (`Waker::will_wake` is best effort,
        // and under miri two uses of one vtable may compare unequal), either way in
        // the same entry.
        drop(list.wait(&mut slot, second.clone()));
        assert_eq!(list.len(), 1);
        // The entry holds the latest waker.
        list.notify_one().expect("one waiter").wake();
        assert_eq!(first_count.get(), 0);
        assert_eq!(second_count.get(), 1);
        let id = slot.expect("registered");
        assert_eq!(list.state(id), Some(WaiterState::NotifiedOne));
        assert!(list.notify_one().is_none(), "nobody else waits");
        assert_eq!(
            list.remove(id).map(|(state, _)| state),
            Some(WaiterState::NotifiedOne)
        );
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn wake_all_takes_every_waker_in_batches() {
        let (waker, count) = CountingWaker::new();
        let mut list = WaitList::new();
        let mut slots = [None; BATCH + 3];
        for slot in &mut slots {
            assert!(list.wait(slot, waker.clone()).is_none());
        }
        list.notify_all();
        let mut batch = WakeBatch::new();
        let mut rounds = 0;
        loop {
            let more = list.take_notified_all(&mut batch);
            let mut unwinds = Unwinds::new();
            batch.wake_all(&mut unwinds);
            unwinds.finish();
            rounds += 1;
            if !more {
                break;
            }
        }
        assert_eq!(rounds, 2);
        assert_eq!(count.get(), BATCH + 3);
        assert!(list.notify_one().is_none(), "all notified");
    }

    /// A batch wakes every waker even if some panic; the first panic comes out after.
    #[test]
    fn a_panicking_waker_does_not_stop_the_batch() {
        let (waker, count) = CountingWaker::new();
        let mut list = WaitList::new();
        let mut slots = [None; 4];
        for (index, slot) in slots.iter_mut().enumerate() {
            let waker = if index % 2 == 0 {
                PanicsOnWake::waker()
            } else {
                waker.clone()
            };
            assert!(list.wait(slot, waker).is_none());
        }
        list.notify_all();
        let mut batch = WakeBatch::new();
        assert!(!list.take_notified_all(&mut batch));
        let mut unwinds = Unwinds::new();
        batch.wake_all(&mut unwinds);
        assert_eq!(count.get(), 2);
        let message = expect_panic(|| unwinds.finish());
        assert_eq!(message, "a waker panics on purpose when woken");
    }
}
