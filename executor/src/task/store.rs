//! `TaskStore`: the runtime's table of tasks, shared by all its workers.
//!
//! A task lives in a [`Slot`] from its spawn to its end, whichever worker polls it:
//! work stealing moves only its [`TaskKey`] (slot index and generation) between run
//! queues. Slots come in pages allocated on first use and kept until the runtime (the
//! store) is dropped, so a slot's address stays valid for the store's whole life and a
//! waker, a run queue or a stealer may read any slot's state word without reclamation
//! (no epoch, no reference count): only the future inside is created and destroyed.
//! Page `p` holds `64 << p` slots, so a small runtime commits a few kilobytes and a
//! busy one at most [`MAX_SLOTS`] slots in 16 pages.
//!
//! # Safety
//! Each slot has one atomic state word: its generation (high 32 bits) and the flags
//! `OCCUPIED`, `SCHEDULED` and `RUNNING`. The future, in an `UnsafeCell`, is touched
//! only by
//! - the thread that took the vacant slot from the free list (under the allocation
//!   mutex), before it publishes `OCCUPIED | SCHEDULED` with a `Release` store;
//! - the thread that set `RUNNING` (by a compare-and-swap from `SCHEDULED`, in
//!   [`Slot::start`], or from any occupied state at shutdown, in [`Slot::claim`]),
//!   until it clears `RUNNING` (with `Release`) or vacates the slot.
//!
//! `RUNNING` is set by one compare-and-swap, so at most one thread holds it: no two
//! polls of one task overlap, whatever queues its key sits in (a stale duplicate key
//! finds `SCHEDULED` clear or the generation moved on and does nothing).
//!
//! Wake-ups are never lost: [`Slot::schedule`] sets `SCHEDULED` and tells the caller to
//! queue the key only if `RUNNING` was clear; otherwise the runner, clearing `RUNNING`
//! with one read-modify-write in [`Slot::end_poll`], sees `SCHEDULED` and queues it.
//! Either the wake's RMW or the runner's comes first in the word's modification order,
//! and the later one sees the earlier.
//!
//! A finished task's slot is vacated with its generation bumped in the same store, so
//! every key (and waker) of the finished task goes stale at once: a stale waker's
//! compare-and-swap fails on the generation and touches nothing, even after the slot
//! is reused. That store plays the part of a "complete" flag.
//!
//! Shutdown: [`TaskStore::close`] sets `closed` under the allocation mutex (so no spawn
//! lands after it) and the workers [`drain`](TaskStore::drain) the store, claiming every
//! occupied slot not being polled. A poll that ends meanwhile clears `RUNNING`, then
//! reads `closed`; the drain sets `closed`, then reads the state; a `SeqCst` fence on
//! each side (Dekker's pattern) means at least one of them sees the other, and the one
//! that claims the slot (one compare-and-swap) drops the future: never both, never
//! neither.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use crate::sync::lock;
use crate::sync::shim::{AtomicBool, AtomicU64, UnsafeCell, fence};
pub(crate) use crate::task::task_box::TaskBox;

/// A spawned task as the store holds it: type-erased, in the task heap, `Send`.
pub(crate) type BoxFuture = TaskBox;

/// Number of bits of a slot index in a waker word.
pub(crate) const SLOT_BITS: u32 = 22;
/// Slots of the first page; page `p` holds `FIRST_PAGE_SLOTS << p`.
const FIRST_PAGE_SLOTS: usize = 64;
const FIRST_PAGE_BITS: u32 = FIRST_PAGE_SLOTS.trailing_zeros();
/// Pages of a store.
const PAGES: usize = 16;
/// Most tasks one runtime holds at once.
pub(crate) const MAX_SLOTS: usize = FIRST_PAGE_SLOTS * ((1 << PAGES) - 1);
const _: () = assert!(MAX_SLOTS <= 1 << SLOT_BITS);

/// Names one task of a runtime: its slot and the slot's generation while it lives there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskKey {
    /// Index into the store; below [`MAX_SLOTS`].
    pub(crate) slot: u32,
    /// The slot's generation while this task occupies it.
    pub(crate) generation: u32,
}

/// The slot holds a task.
const OCCUPIED: u64 = 1;
/// The task's key is in a run queue, or will be put in one by whoever holds `RUNNING`.
const SCHEDULED: u64 = 1 << 1;
/// A thread is polling (or dropping) the task and owns its future.
const RUNNING: u64 = 1 << 2;

fn word(generation: u32, flags: u64) -> u64 {
    (u64::from(generation) << 32) | flags
}

fn generation_of(word: u64) -> u32 {
    // The high half is the generation.
    (word >> 32) as u32
}

/// What a runner does after a poll that returned `Pending`; see [`Slot::end_poll`].
#[derive(Debug)]
pub(crate) enum AfterPoll<T> {
    /// Nobody woke the task: it waits for a wake.
    Idle,
    /// The task was woken during the poll: the runner queues its key again.
    Requeue,
    /// The store closed during the poll: the slot is vacated and the future is the
    /// runner's to drop.
    Cancelled(T),
}

/// One task's place in the store. See the module `# Safety` notes.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    /// Generation (high 32 bits) and the `OCCUPIED`, `SCHEDULED`, `RUNNING` flags.
    state: AtomicU64,
    /// The future while `OCCUPIED` and not `RUNNING`; moved out by the runner for a poll.
    value: UnsafeCell<Option<T>>,
}

// SAFETY: `value` is reached only by the one thread that owns it by the state protocol
// (module docs), which moves `T` between threads: `T: Send` suffices.
unsafe impl<T: Send> Sync for Slot<T> {}

impl<T> Slot<T> {
    pub(crate) fn new(generation: u32) -> Self {
        Self {
            state: AtomicU64::new(word(generation, 0)),
            value: UnsafeCell::new(None),
        }
    }

    /// The slot's generation now.
    pub(crate) fn generation(&self) -> u32 {
        generation_of(self.state.load(Ordering::Acquire))
    }

    /// Puts `value` in the vacant slot as a scheduled task of `generation`.
    ///
    /// # Safety
    /// - The caller owns the vacant slot (took it from the free list, or it is new).
    /// - `generation` is the slot's current generation.
    pub(crate) unsafe fn occupy(&self, generation: u32, value: T) {
        debug_assert_eq!(self.state.load(Ordering::Relaxed), word(generation, 0));
        // SAFETY: a vacant slot's value is touched by its owner only (module docs), and
        // the caller owns it.
        self.value.with_mut(|cell| unsafe { *cell = Some(value) });
        self.state
            .store(word(generation, OCCUPIED | SCHEDULED), Ordering::Release);
    }

    /// Marks the task of `generation` scheduled. Returns `true` when the caller must
    /// queue its key: the task lives, was not scheduled and is not being polled (its
    /// runner queues it otherwise). A stale generation changes nothing.
    pub(crate) fn schedule(&self, generation: u32) -> bool {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if generation_of(current) != generation
                || current & OCCUPIED == 0
                || current & SCHEDULED != 0
            {
                return false;
            }
            match self.state.compare_exchange_weak(
                current,
                current | SCHEDULED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return current & RUNNING == 0,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes the future of the scheduled task of `generation` for a poll, setting
    /// `RUNNING` and clearing `SCHEDULED`; `None` when the key is stale, not scheduled
    /// or the task is being polled elsewhere.
    pub(crate) fn start(&self, generation: u32) -> Option<T> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if generation_of(current) != generation
                || current & (OCCUPIED | SCHEDULED | RUNNING) != OCCUPIED | SCHEDULED
            {
                return None;
            }
            match self.state.compare_exchange_weak(
                current,
                (current & !SCHEDULED) | RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        // SAFETY: this thread set `RUNNING`, so it alone touches the value until it
        // clears it; the `Acquire` above saw the last owner's `Release`.
        let value = self.value.with_mut(|cell| unsafe { (*cell).take() });
        debug_assert!(
            value.is_some(),
            "an occupied slot not running has its future"
        );
        value
    }

    /// Ends a poll that returned `Pending`: puts the future back and clears `RUNNING`.
    /// See [`AfterPoll`]; `closed` is the store's shutdown flag.
    ///
    /// # Safety
    /// - The caller holds `RUNNING`: [`start`](Self::start) gave it `value` and it has
    ///   not ended that poll yet.
    pub(crate) unsafe fn end_poll(&self, value: T, closed: &AtomicBool) -> AfterPoll<T> {
        // SAFETY: the caller holds `RUNNING`, so it alone touches the value.
        self.value.with_mut(|cell| unsafe { *cell = Some(value) });
        let previous = self.state.fetch_and(!RUNNING, Ordering::AcqRel);
        debug_assert!(previous & RUNNING != 0, "ending a poll not started");
        // Dekker with `TaskStore::drain` (module docs): either the drain sees `RUNNING`
        // clear and claims the task, or this sees `closed`.
        fence(Ordering::SeqCst);
        if closed.load(Ordering::Relaxed) {
            return match self.claim() {
                Some(value) => AfterPoll::Cancelled(value),
                // Claimed by a drain, or started by another worker after a wake; that
                // worker's own `end_poll` sees `closed` in turn.
                None => AfterPoll::Idle,
            };
        }
        if previous & SCHEDULED != 0 {
            AfterPoll::Requeue
        } else {
            AfterPoll::Idle
        }
    }

    /// Vacates the slot after its task finished, bumping the generation.
    ///
    /// # Safety
    /// - The caller holds `RUNNING` for `generation` (and has moved the future out).
    pub(crate) unsafe fn vacate(&self, generation: u32) {
        debug_assert_eq!(
            generation_of(self.state.load(Ordering::Relaxed)),
            generation
        );
        // A swap, not a store: a wake's compare-and-swap may land between the runner's
        // last read and this write (setting `SCHEDULED` on the finished task, which is
        // harmless); as a read-modify-write this write is ordered after it in the word's
        // modification order, as the generation bump must be. (A plain store is too, in
        // the C++ model; loom, which orders plain stores only partially, would let a
        // later load see the wake's value instead.)
        self.state
            .swap(word(generation.wrapping_add(1), 0), Ordering::AcqRel);
    }

    /// Takes the future of an occupied slot that no thread is polling and vacates the
    /// slot (shutdown); `None` when the slot is vacant or being polled.
    pub(crate) fn claim(&self) -> Option<T> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if current & OCCUPIED == 0 || current & RUNNING != 0 {
                return None;
            }
            match self.state.compare_exchange_weak(
                current,
                (current & !SCHEDULED) | RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        // SAFETY: this thread set `RUNNING` (above), so it alone touches the value.
        let value = self.value.with_mut(|cell| unsafe { (*cell).take() });
        // SAFETY: `RUNNING` is held for this generation and the future is moved out.
        unsafe { self.vacate(generation_of(current)) };
        value
    }
}

/// The allocation side of the store, under its mutex.
#[derive(Debug, Default)]
struct Alloc {
    /// Vacant slots that have been used before.
    free: Vec<u32>,
    /// Slots below this index exist (their pages are allocated up to it).
    fresh: u32,
    /// Occupied slots.
    live: usize,
    /// Spawns are refused (see [`TaskStore::close`]).
    closed: bool,
}

/// Why [`TaskStore::insert`] refused a future.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The store is closed (its runtime is shutting down).
    Closed,
    /// Every slot up to the store's capacity is occupied.
    Full,
}

/// A future [`TaskStore::insert`] gives back, and why.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) future: BoxFuture,
    pub(crate) reason: Refusal,
}

/// The runtime's task table. See the module docs.
#[derive(Debug)]
pub(crate) struct TaskStore {
    pages: [OnceLock<Box<[Slot<BoxFuture>]>>; PAGES],
    alloc: Mutex<Alloc>,
    /// Copy of `Alloc::closed` that pollers read without the lock.
    closed: AtomicBool,
    /// First generation of every slot, so that two runtimes (one dropped, one later
    /// claiming the same worker-table entry) do not hand out the same keys.
    generation_base: u32,
    /// Most slots occupied at once: 1 to [`MAX_SLOTS`].
    capacity: usize,
}

/// Page and offset of slot `index`.
fn locate(index: usize) -> (usize, usize) {
    let shifted = index + FIRST_PAGE_SLOTS;
    let page = (usize::BITS - 1 - shifted.leading_zeros() - FIRST_PAGE_BITS) as usize;
    (page, shifted - (FIRST_PAGE_SLOTS << page))
}

impl TaskStore {
    /// An empty store whose slots start at generation `generation_base`.
    #[cfg_attr(
        any(not(test), pagekeep_executor_loom),
        expect(dead_code, reason = "used by the tests only")
    )]
    pub(crate) fn new(generation_base: u32) -> Self {
        Self::with_capacity(generation_base, MAX_SLOTS)
    }

    /// An empty store of at most `capacity` tasks (clamped to 1 to [`MAX_SLOTS`]).
    pub(crate) fn with_capacity(generation_base: u32, capacity: usize) -> Self {
        Self {
            pages: [const { OnceLock::new() }; PAGES],
            alloc: Mutex::default(),
            closed: AtomicBool::new(false),
            generation_base,
            capacity: capacity.clamp(1, MAX_SLOTS),
        }
    }

    /// Most tasks the store holds at once.
    #[cfg_attr(
        any(not(test), pagekeep_executor_loom),
        expect(dead_code, reason = "used by the tests only")
    )]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn slot(&self, index: u32) -> Option<&Slot<BoxFuture>> {
        let (page, offset) = locate(index as usize);
        self.pages.get(page)?.get()?.get(offset)
    }

    /// Stores `future` as a scheduled task and returns its key; the caller queues it.
    /// Gives the future back when the store is closed or full, saying which.
    pub(crate) fn insert(&self, future: BoxFuture) -> Result<TaskKey, Refused> {
        let mut alloc = lock(&self.alloc);
        if alloc.closed {
            return Err(Refused {
                future,
                reason: Refusal::Closed,
            });
        }
        if alloc.live >= self.capacity {
            return Err(Refused {
                future,
                reason: Refusal::Full,
            });
        }
        let index = match alloc.free.pop() {
            Some(index) => index,
            None if (alloc.fresh as usize) < self.capacity => {
                let index = alloc.fresh;
                let (page, _) = locate(index as usize);
                let base = self.generation_base;
                self.pages[page].get_or_init(|| {
                    (0..FIRST_PAGE_SLOTS << page)
                        .map(|_| Slot::new(base))
                        .collect()
                });
                alloc.fresh += 1;
                index
            }
            None => {
                return Err(Refused {
                    future,
                    reason: Refusal::Full,
                });
            }
        };
        // Reserve room for the slot's return now, so that completing a task never
        // allocates (it may run inside a request's arena).
        let (fresh, free) = (alloc.fresh as usize, alloc.free.len());
        alloc.free.reserve(fresh - free);
        alloc.live += 1;
        drop(alloc);
        let slot = self.slot(index).expect("allocated slots exist");
        let generation = slot.generation();
        // SAFETY: the slot came off the free list (or is new) under the mutex, so this
        // thread owns it while it is vacant, and `generation` was just read from it.
        unsafe { slot.occupy(generation, future) };
        Ok(TaskKey {
            slot: index,
            generation,
        })
    }

    /// Returns a vacated slot to the free list.
    fn release(&self, index: u32) {
        let mut alloc = lock(&self.alloc);
        alloc.free.push(index);
        alloc.live -= 1;
    }

    /// Marks task `key` scheduled; `true` when the caller must queue it (see
    /// [`Slot::schedule`]). A stale or foreign key changes nothing.
    pub(crate) fn schedule(&self, key: TaskKey) -> bool {
        self.slot(key.slot)
            .is_some_and(|slot| slot.schedule(key.generation))
    }

    /// Takes task `key`'s future for a poll (see [`Slot::start`]).
    pub(crate) fn start(&self, key: TaskKey) -> Option<BoxFuture> {
        self.slot(key.slot)?.start(key.generation)
    }

    /// Ends a poll of `key` that returned `Pending` (see [`Slot::end_poll`]).
    ///
    /// # Safety
    /// - `future` came from [`start`](Self::start) with this `key`, and this poll has
    ///   not been ended.
    pub(crate) unsafe fn end_poll(&self, key: TaskKey, future: BoxFuture) -> AfterPoll<BoxFuture> {
        let slot = self.slot(key.slot).expect("a started slot exists");
        // SAFETY: `start` set `RUNNING` for this key (caller's obligation).
        let after = unsafe { slot.end_poll(future, &self.closed) };
        if matches!(after, AfterPoll::Cancelled(_)) {
            self.release(key.slot);
        }
        after
    }

    /// Vacates the slot of finished task `key`, whose future the caller holds.
    ///
    /// # Safety
    /// - The future came from [`start`](Self::start) with this `key`, and this poll has
    ///   not been ended.
    pub(crate) unsafe fn complete(&self, key: TaskKey) {
        let slot = self.slot(key.slot).expect("a started slot exists");
        // SAFETY: `start` set `RUNNING` for this key (caller's obligation).
        unsafe { slot.vacate(key.generation) };
        self.release(key.slot);
    }

    /// Refuses every later spawn (their futures are given back). Idempotent.
    pub(crate) fn close(&self) {
        let mut alloc = lock(&self.alloc);
        alloc.closed = true;
        self.closed.store(true, Ordering::Release);
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the store and takes every task not being polled, for the caller to drop
    /// outside any lock (dropping a future runs user code). A task being polled is
    /// dropped by its runner when the poll ends.
    pub(crate) fn drain(&self) -> Vec<BoxFuture> {
        self.close();
        // Dekker with `Slot::end_poll` (module docs).
        fence(Ordering::SeqCst);
        let (fresh, live) = {
            let alloc = lock(&self.alloc);
            (alloc.fresh, alloc.live)
        };
        let mut futures = Vec::with_capacity(live);
        for index in 0..fresh {
            let slot = self.slot(index).expect("allocated slots exist");
            if let Some(future) = slot.claim() {
                futures.push(future);
                self.release(index);
            }
        }
        futures
    }

    /// Tasks in the store now.
    #[cfg(all(test, not(pagekeep_executor_loom)))]
    pub(crate) fn len(&self) -> usize {
        lock(&self.alloc).live
    }

    /// Checks that the free list and the occupied slots add up.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let alloc = lock(&self.alloc);
        let mut seen = std::collections::HashSet::new();
        for &index in &alloc.free {
            assert!(index < alloc.fresh, "free slot {index} was never allocated");
            assert!(seen.insert(index), "slot {index} twice on the free list");
            let state = self.slot(index).unwrap().state.load(Ordering::Relaxed);
            assert_eq!(
                state & OCCUPIED,
                0,
                "occupied slot {index} on the free list"
            );
        }
        assert_eq!(alloc.free.len() + alloc.live, alloc.fresh as usize);
    }
}

#[cfg(all(test, not(pagekeep_executor_loom)))]
mod tests {
    use super::*;

    fn ready() -> BoxFuture {
        TaskBox::new(async {}).unwrap_or_else(|_| panic!("task heap exhausted"))
    }

    #[test]
    fn pages_cover_the_slot_range_without_gaps() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
        assert_eq!(
            locate(MAX_SLOTS - 1),
            (PAGES - 1, (FIRST_PAGE_SLOTS << (PAGES - 1)) - 1)
        );
    }

    #[test]
    fn stale_key_cannot_schedule_or_take_a_later_task_in_the_same_slot() {
        let store = TaskStore::new(7);
        let first = store.insert(ready()).unwrap();
        let future = store.start(first).unwrap();
        // SAFETY: started just above.
        unsafe { store.complete(first) };
        drop(future);
        let second = store.insert(ready()).unwrap();
        assert_eq!(first.slot, second.slot, "the slot is reused");
        assert_ne!(first.generation, second.generation);
        assert!(store.start(first).is_none());
        let future = store.start(second).unwrap();
        assert!(
            store.start(second).is_none(),
            "no second poll while running"
        );
        assert!(!store.schedule(first), "stale key schedules nothing");
        assert!(!store.schedule(second), "running: the runner queues it");
        assert!(!store.schedule(second), "already scheduled");
        // SAFETY: started above.
        let after = unsafe { store.end_poll(second, future) };
        assert!(matches!(after, AfterPoll::Requeue), "woken while running");
        assert!(store.start(second).is_some_and(|future| {
            // SAFETY: started just now.
            matches!(unsafe { store.end_poll(second, future) }, AfterPoll::Idle)
        }));
        assert!(store.schedule(second), "idle: the waker queues it");
        store.check_invariants();
    }

    #[test]
    fn a_full_store_says_so_and_takes_again_once_a_slot_is_free() {
        let store = TaskStore::with_capacity(0, 3);
        let keys: Vec<_> = (0..3).map(|_| store.insert(ready()).unwrap()).collect();
        let refused = store.insert(ready()).unwrap_err();
        assert_eq!(refused.reason, Refusal::Full);
        let future = store.start(keys[1]).unwrap();
        // SAFETY: started just above.
        unsafe { store.complete(keys[1]) };
        drop(future);
        let again = store.insert(ready()).unwrap();
        assert_eq!(again.slot, keys[1].slot, "the freed slot is reused");
        assert_eq!(store.insert(ready()).unwrap_err().reason, Refusal::Full);
        drop(store.drain());
        assert_eq!(store.insert(ready()).unwrap_err().reason, Refusal::Closed);
        assert_eq!(TaskStore::with_capacity(0, 0).capacity(), 1);
        assert_eq!(
            TaskStore::with_capacity(0, usize::MAX).capacity(),
            MAX_SLOTS
        );
    }

    #[test]
    fn drain_empties_closes_and_staleness_survives() {
        let store = TaskStore::new(0);
        let keys: Vec<_> = (0..100).map(|_| store.insert(ready()).unwrap()).collect();
        let running = store.start(keys[3]).unwrap();
        assert_eq!(store.drain().len(), 99, "all but the running task");
        assert!(store.insert(ready()).is_err(), "closed");
        // SAFETY: started above.
        let after = unsafe { store.end_poll(keys[3], running) };
        assert!(
            matches!(after, AfterPoll::Cancelled(_)),
            "the runner drops it"
        );
        assert_eq!(store.len(), 0);
        store.check_invariants();
        for key in keys {
            assert!(!store.schedule(key));
            assert!(store.start(key).is_none());
        }
    }

    #[test]
    fn a_wake_racing_completion_from_another_thread_never_touches_a_later_task() {
        let store = std::sync::Arc::new(TaskStore::new(0));
        for _ in 0..200 {
            let key = store.insert(ready()).unwrap();
            let future = store.start(key).unwrap();
            let waker_side = {
                let store = std::sync::Arc::clone(&store);
                std::thread::spawn(move || store.schedule(key))
            };
            // SAFETY: started above.
            unsafe { store.complete(key) };
            drop(future);
            let queued = waker_side.join().unwrap();
            assert!(
                !queued,
                "a wake while running or after the end never queues"
            );
            let next = store.insert(ready()).unwrap();
            let future = store.start(next);
            assert!(future.is_some(), "the later task is scheduled, unharmed");
            // SAFETY: started just above.
            unsafe { store.complete(next) };
        }
        store.check_invariants();
    }
}

/// Loom models of the slot's state machine: the hand-offs between a runner, wakers,
/// a stealer and a shutdown drain, explored over every interleaving (bounded by
/// `LOOM_MAX_PREEMPTIONS`). The run queues are modelled by a mutex-guarded deque: the
/// property under test is what the state word lets through, whichever queue a key
/// sits in (crossbeam-deque is not built on loom's primitives).
///
/// `CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg pagekeep_executor_loom"
/// LOOM_MAX_PREEMPTIONS=2 cargo test -p pagekeep-executor --release --lib loom_models`
#[cfg(all(test, pagekeep_executor_loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use std::collections::VecDeque;

    const GENERATION: u32 = 7;

    /// A slot holding task `1`, scheduled, and the queue holding its key.
    fn scheduled() -> (Arc<Slot<u32>>, Arc<Mutex<VecDeque<u32>>>) {
        let slot = Arc::new(Slot::new(GENERATION));
        // SAFETY: the slot is new and its generation is `GENERATION`.
        unsafe { slot.occupy(GENERATION, 1) };
        let queue = Arc::new(Mutex::new(VecDeque::from([GENERATION])));
        (slot, queue)
    }

    fn flags(slot: &Slot<u32>) -> u64 {
        slot.state.load(Ordering::Acquire) & (OCCUPIED | SCHEDULED | RUNNING)
    }

    #[test]
    fn a_wake_racing_the_end_of_a_poll_is_never_lost() {
        loom::model(|| {
            let (slot, _queue) = scheduled();
            let closed = Arc::new(AtomicBool::new(false));
            let value = slot.start(GENERATION).expect("scheduled");
            let waker = {
                let slot = Arc::clone(&slot);
                thread::spawn(move || slot.schedule(GENERATION))
            };
            // SAFETY: started above, not ended.
            let after = unsafe { slot.end_poll(value, &closed) };
            let queued_by_waker = waker.join().unwrap();
            let queued_by_runner = matches!(after, AfterPoll::Requeue);
            assert!(
                queued_by_waker ^ queued_by_runner,
                "exactly one of them queues the key: {queued_by_waker} {after:?}"
            );
            assert_eq!(flags(&slot), OCCUPIED | SCHEDULED);
        });
    }

    /// One pass of a worker over the queue: pop a key, run the task if the state lets
    /// it, and have the poll wake the task once (as `yield_now` does).
    fn run_one(
        slot: &Slot<u32>,
        queue: &Mutex<VecDeque<u32>>,
        polling: &AtomicBool,
        closed: &AtomicBool,
    ) {
        let Some(generation) = queue.lock().unwrap().pop_front() else {
            return;
        };
        let Some(value) = slot.start(generation) else {
            return;
        };
        assert!(!polling.swap(true, Ordering::AcqRel), "two polls at once");
        let requeue_by_wake = slot.schedule(generation);
        assert!(
            !requeue_by_wake,
            "a wake during the poll is the runner's to queue"
        );
        polling.store(false, Ordering::Release);
        // SAFETY: started above, not ended.
        match unsafe { slot.end_poll(value, closed) } {
            AfterPoll::Requeue => queue.lock().unwrap().push_back(generation),
            AfterPoll::Idle | AfterPoll::Cancelled(_) => {}
        }
    }

    #[test]
    fn a_stealer_and_the_owner_never_poll_one_task_at_once() {
        loom::model(|| {
            let (slot, queue) = scheduled();
            // A stale duplicate of the key, as a wake racing a steal might leave.
            queue.lock().unwrap().push_back(GENERATION);
            let polling = Arc::new(AtomicBool::new(false));
            let closed = Arc::new(AtomicBool::new(false));
            let stealer = {
                let (slot, queue) = (Arc::clone(&slot), Arc::clone(&queue));
                let (polling, closed) = (Arc::clone(&polling), Arc::clone(&closed));
                thread::spawn(move || run_one(&slot, &queue, &polling, &closed))
            };
            let waker = {
                let (slot, queue) = (Arc::clone(&slot), Arc::clone(&queue));
                thread::spawn(move || {
                    if slot.schedule(GENERATION) {
                        queue.lock().unwrap().push_back(GENERATION);
                    }
                })
            };
            run_one(&slot, &queue, &polling, &closed);
            stealer.join().unwrap();
            waker.join().unwrap();
            // Nothing runs now: a scheduled task must have its key queued (no lost
            // wake-up), and a task not scheduled may only have stale keys queued.
            let queued = queue.lock().unwrap().len();
            if flags(&slot) & SCHEDULED != 0 {
                assert!(queued > 0, "scheduled but queued nowhere");
            }
            assert_eq!(flags(&slot) & RUNNING, 0);
        });
    }

    #[test]
    fn shutdown_racing_a_poll_and_a_wake_drops_the_task_exactly_once() {
        loom::model(|| {
            let (slot, queue) = scheduled();
            let closed = Arc::new(AtomicBool::new(false));
            let dropped = Arc::new(AtomicUsize::new(0));
            let value = slot.start(GENERATION).expect("scheduled");
            let drain = {
                let (slot, closed, dropped) =
                    (Arc::clone(&slot), Arc::clone(&closed), Arc::clone(&dropped));
                thread::spawn(move || {
                    // As `TaskStore::drain`: close, fence, claim what is not running.
                    closed.store(true, Ordering::Release);
                    fence(Ordering::SeqCst);
                    if slot.claim().is_some() {
                        dropped.fetch_add(1, Ordering::AcqRel);
                    }
                })
            };
            let waker = {
                let (slot, queue) = (Arc::clone(&slot), Arc::clone(&queue));
                thread::spawn(move || {
                    if slot.schedule(GENERATION) {
                        queue.lock().unwrap().push_back(GENERATION);
                    }
                })
            };
            // SAFETY: started above, not ended.
            let after = unsafe { slot.end_poll(value, &closed) };
            match after {
                AfterPoll::Cancelled(_) => {
                    dropped.fetch_add(1, Ordering::AcqRel);
                }
                AfterPoll::Requeue => queue.lock().unwrap().push_back(GENERATION),
                AfterPoll::Idle => {}
            }
            drain.join().unwrap();
            waker.join().unwrap();
            // A worker that pops a queued key now (after the close) finds nothing to run.
            while let Some(generation) = queue.lock().unwrap().pop_front() {
                assert!(slot.start(generation).is_none(), "a vacated slot ran");
            }
            assert_eq!(
                dropped.load(Ordering::Acquire),
                1,
                "dropped once, never leaked"
            );
            assert_eq!(flags(&slot), 0, "vacated");
            assert_eq!(slot.generation(), GENERATION + 1);
        });
    }
}
