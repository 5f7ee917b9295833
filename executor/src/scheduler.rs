//! The runtime's shared scheduler: one task table, per-worker run queues with work
//! stealing, a global injector, and the list of sleeping workers.
//!
//! Run queues are crossbeam-deque's (the Chase-Lev deque of Chase and Lev, "Dynamic
//! Circular Work-Stealing Deque", SPAA 2005, with the memory orderings of Lê et al.,
//! PPoPP 2013): each worker owns a FIFO [`crossbeam_deque::Worker`] of [`TaskKey`]s and
//! publishes its [`Stealer`] here; spawns and wakes from threads that are not workers
//! of this runtime go to the [`Injector`]. Only keys move between queues: tasks stay
//! in their [`TaskStore`] slot, and the slot's state word decides who polls them (see
//! `task::store`).
//!
//! # Safety of the shared state
//! The store is shared by every worker (its own module explains who owns a slot when).
//! The deque `Worker`s belong to their threads (in `worker::Local`); the stealers and
//! the injector are thread-safe. `sleepers` ([`SleepList`]) lists, under a mutex, the
//! workers that are about to block in `epoll_wait`, and counts them so that a wake need
//! not lock it.
//!
//! # No lost wake-up of a sleeping worker
//! A worker going to sleep adds itself to `idle` (and `sleeping`), issues a `SeqCst`
//! fence, and checks every queue once more before blocking. Whoever queues a key issues
//! a `SeqCst` fence after the push and then reads `sleeping`. So either the sleeper
//! sees the key, or the pusher sees the sleeper, takes it off the list and writes its
//! `mio::Waker` (which makes the coming or current `epoll_wait` return). The loom
//! models (`loom_models`) check both halves of [`SleepList`] against each other.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use crate::run_queue::{Injector, Steal, Stealer, Worker as Deque};
use pagekeep_arena::outside_arena;

use crate::monitor::{HELD_AFTER, MonitorShared};
use crate::sync::shim;
use crate::task::store::{BoxFuture, Refused, TaskKey, TaskStore};
use crate::waker::MAX_WORKERS;
use crate::worker::{WorkerShared, with_local};

/// The part of a runtime every worker, handle and waker reaches.
#[derive(Debug)]
pub(crate) struct Scheduler {
    pub(crate) tasks: TaskStore,
    injector: Injector<TaskKey>,
    /// By the runtime's worker index.
    stealers: Box<[Stealer<TaskKey>]>,
    /// By the runtime's worker index.
    pub(crate) workers: Box<[Arc<WorkerShared>]>,
    /// The workers about to block or blocked in `epoll_wait`.
    sleepers: SleepList,
    /// Worker threads that have not left their loop yet.
    live: AtomicUsize,
    /// The worker-table index of worker 0: the one task wakers carry.
    pub(crate) home: usize,
    /// Origin of the workers' `turn_started` times.
    epoch: Instant,
    /// The thread that looks after held workers (see `monitor`).
    pub(crate) monitor: MonitorShared,
}

impl Scheduler {
    pub(crate) fn new(
        workers: Box<[Arc<WorkerShared>]>,
        stealers: Box<[Stealer<TaskKey>]>,
        generation_base: u32,
        max_tasks: usize,
    ) -> Self {
        Self {
            tasks: TaskStore::with_capacity(generation_base, max_tasks),
            injector: Injector::new(),
            stealers,
            home: workers[0].index(),
            sleepers: SleepList::with_capacity(workers.len()),
            live: AtomicUsize::new(0),
            workers,
            epoch: Instant::now(),
            monitor: MonitorShared::default(),
        }
    }

    /// Number of workers.
    pub(crate) fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// `at` in nanoseconds since this scheduler was made, plus one (never 0, which
    /// `WorkerShared::turn_started` keeps for "out of tasks").
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// A worker started a turn after running out of tasks (see `monitor`).
    pub(crate) fn turn_begun(&self) {
        if self.workers.len() > 1 {
            self.monitor.turn_begun();
        }
    }

    /// Whether worker `index`'s own queue holds a key.
    pub(crate) fn has_queued(&self, index: usize) -> bool {
        !self.stealers[index].is_empty()
    }

    /// Moves the keys queued on worker `index` (held by a task) to the injector, which
    /// every worker looks at first in each turn: a busy worker never empties its own
    /// queue, so it would not steal them. Returns how many moved.
    pub(crate) fn move_queued_to_injector(&self, index: usize) -> usize {
        let mut moved = 0;
        loop {
            match self.stealers[index].steal() {
                Steal::Success(key) => {
                    outside_arena(|| self.injector.push(key));
                    moved += 1;
                }
                Steal::Retry => {}
                Steal::Empty => return moved,
            }
        }
    }

    /// Spawns `future`: its first poll on worker `pin` (a runtime index, modulo the
    /// count) when given, else wherever it is picked up first (the calling worker's
    /// queue on a worker of this runtime, the injector elsewhere). Gives the future
    /// back when the runtime is shutting down or its task table is full, saying which.
    pub(crate) fn spawn(&self, future: BoxFuture, pin: Option<usize>) -> Result<(), Refused> {
        // The table and queues outlive any request: never grow them in its arena.
        let key = outside_arena(|| self.tasks.insert(future))?;
        match pin {
            Some(index) => {
                let target = &self.workers[index % self.workers.len()];
                if target.post(key).is_err() {
                    // That worker is gone (its loop died): anyone else runs the task.
                    self.push(key);
                }
            }
            None => self.push(key),
        }
        Ok(())
    }

    /// Whether worker `index` has been in one turn for [`HELD_AFTER`] or longer (a task
    /// that does not yield holds it).
    pub(crate) fn is_held(&self, index: usize) -> bool {
        self.workers[index].turn_started().is_some_and(|started| {
            let age = self.nanos(Instant::now()).saturating_sub(started);
            u128::from(age) >= HELD_AFTER.as_nanos()
        })
    }

    /// Wakes task `key` (from a waker): queues it unless it is already queued, being
    /// polled (its runner queues it) or stale.
    pub(crate) fn wake(&self, key: TaskKey) {
        if self.tasks.schedule(key) {
            self.push(key);
        }
    }

    /// Queues a scheduled key: on the calling worker's own queue when it is a worker of
    /// this runtime, in the injector otherwise; then wakes a sleeping worker if any,
    /// unless the key went to a worker's empty queue.
    ///
    /// That exception keeps a lone task where it is: the worker that queues it (often
    /// because the task's socket, registered there, became ready) polls it at its next
    /// turn, while waking a sleeper to steal it would cost a system call on each side
    /// and move the task's data to another core for nothing. A second key queued behind
    /// it is backlog, and wakes a sleeper to steal. A worker that then stays busy in a
    /// long poll holds at most the one key it queued itself.
    fn push(&self, key: TaskKey) {
        let local = with_local(|local| {
            if std::ptr::eq(Arc::as_ptr(&local.scheduler), self) {
                let backlog = !local.queue.is_empty();
                outside_arena(|| local.queue.push(key));
                Some(backlog)
            } else {
                None
            }
        })
        .flatten();
        match local {
            Some(false) => {}
            Some(true) => self.notify_one(),
            None => {
                outside_arena(|| self.injector.push(key));
                self.notify_one();
            }
        }
    }

    /// Wakes one sleeping worker, if any (see the module docs).
    pub(crate) fn notify_one(&self) {
        if let Some(index) = self.sleepers.take_oldest() {
            self.workers[index].wake_poll();
        }
    }

    /// Lists worker `index` as going to sleep; the caller then checks
    /// [`has_work`](Self::has_work) before it blocks.
    pub(crate) fn sleep(&self, index: usize) {
        self.sleepers.sleep(index);
    }

    /// Takes worker `index` off the sleeping list (it is awake), if it is on it.
    pub(crate) fn wake_up(&self, index: usize) {
        self.sleepers.wake_up(index);
    }

    /// Whether any shared queue holds a key (a sleeper's last look).
    pub(crate) fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|stealer| !stealer.is_empty())
    }

    /// Takes a batch from the injector into `into`, returning one key to run.
    pub(crate) fn steal_injected(&self, into: &Deque<TaskKey>) -> Option<TaskKey> {
        loop {
            match outside_arena(|| self.injector.steal_batch_and_pop(into)) {
                Steal::Success(key) => return Some(key),
                Steal::Empty => return None,
                Steal::Retry => {}
            }
        }
    }

    /// Takes a batch from another worker's queue into `into`, trying every other
    /// worker once, starting at `start`; returns one key to run.
    pub(crate) fn steal_from_others(
        &self,
        thief: usize,
        start: usize,
        into: &Deque<TaskKey>,
    ) -> Option<TaskKey> {
        let count = self.stealers.len();
        for offset in 0..count {
            let victim = (start + offset) % count;
            if victim == thief {
                continue;
            }
            loop {
                match outside_arena(|| self.stealers[victim].steal_batch_and_pop(into)) {
                    Steal::Success(key) => return Some(key),
                    Steal::Empty => break,
                    Steal::Retry => {}
                }
            }
        }
        None
    }

    /// Queues keys that were pinned to a worker that is leaving.
    pub(crate) fn requeue_orphans(&self, keys: impl IntoIterator<Item = TaskKey>) {
        for key in keys {
            outside_arena(|| self.injector.push(key));
            self.notify_one();
        }
    }

    /// Counts a worker thread in; see [`leave`](Self::leave).
    pub(crate) fn enter(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a worker thread out; returns whether it was the last.
    pub(crate) fn leave(&self) -> bool {
        self.live.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Closes the task table and drops every task not being polled, repeating while
    /// destructors add more (they cannot: spawns are refused once closed; the bound is
    /// for safety). The caller drops the futures' user code on its thread.
    pub(crate) fn drain(&self) {
        for _ in 0..16 {
            let futures = self.tasks.drain();
            if futures.is_empty() {
                break;
            }
            drop(futures);
        }
    }
}

/// The workers about to block or blocked in `epoll_wait`, and the sleeper's half and
/// the pusher's half of the hand-off that loses no wake-up (see the module docs),
/// apart so that the loom models check this code.
#[derive(Debug)]
pub(crate) struct SleepList {
    /// Runtime indices of the sleeping workers, oldest first.
    idle: shim::Mutex<VecDeque<usize>>,
    /// `idle.len()`, read without the lock.
    sleeping: shim::AtomicUsize,
}

impl SleepList {
    fn with_capacity(workers: usize) -> Self {
        Self {
            idle: shim::Mutex::new(VecDeque::with_capacity(workers)),
            sleeping: shim::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> impl std::ops::DerefMut<Target = VecDeque<usize>> + '_ {
        // A push or a removal, which a panic cannot leave half done.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeper side: lists worker `index` (once), then issues a `SeqCst` fence; the
    /// caller then looks at every queue before it blocks.
    fn sleep(&self, index: usize) {
        {
            let mut idle = self.lock();
            if !idle.contains(&index) {
                outside_arena(|| idle.push_back(index));
                self.sleeping.fetch_add(1, Ordering::Relaxed);
            }
        }
        shim::fence(Ordering::SeqCst);
    }

    /// Pusher side, after queuing a key: issues a `SeqCst` fence, then takes the
    /// oldest sleeper off the list and returns it, for the caller to wake.
    fn take_oldest(&self) -> Option<usize> {
        shim::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut idle = self.lock();
        let woken = idle.pop_front();
        if woken.is_some() {
            self.sleeping.fetch_sub(1, Ordering::Relaxed);
        }
        woken
    }

    /// Takes worker `index` off the list (it is awake), if it is on it.
    fn wake_up(&self, index: usize) {
        if self.sleeping.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut idle = self.lock();
        if let Some(position) = idle.iter().position(|&sleeper| sleeper == index) {
            idle.remove(position);
            self.sleeping.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An entry of the process-wide worker table.
#[derive(Debug)]
enum Entry {
    Free,
    /// Claimed by a runtime being built.
    Reserved,
    /// A live worker's runtime.
    Live(Arc<Scheduler>),
}

/// Process-wide table of live workers: their runtimes, by the index task wakers carry.
static WORKER_TABLE: [RwLock<Entry>; MAX_WORKERS] =
    [const { RwLock::new(Entry::Free) }; MAX_WORKERS];

/// Claims a free worker-table entry; `None` when all are taken.
pub(crate) fn reserve_table_entry() -> Option<usize> {
    WORKER_TABLE.iter().position(|entry| {
        let mut entry = entry.write().unwrap_or_else(PoisonError::into_inner);
        if matches!(*entry, Entry::Free) {
            *entry = Entry::Reserved;
            true
        } else {
            false
        }
    })
}

/// Points a reserved entry at its runtime.
pub(crate) fn publish_table_entry(index: usize, scheduler: &Arc<Scheduler>) {
    *WORKER_TABLE[index]
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Entry::Live(Arc::clone(scheduler));
}

/// Gives a worker-table entry back (its worker has exited or never ran).
pub(crate) fn release_table_entry(index: usize) {
    *WORKER_TABLE[index]
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Entry::Free;
}

/// Wakes task `key` of the runtime whose worker 0 has table index `home`; see
/// `waker.rs`. On a worker of that runtime the key goes to the worker's own queue
/// without touching the table.
pub(crate) fn wake_task(home: usize, key: TaskKey) {
    let here = with_local(|local| {
        if local.scheduler.home == home {
            local.scheduler.wake(key);
            true
        } else {
            false
        }
    });
    if here == Some(true) {
        return;
    }
    let Some(entry) = WORKER_TABLE.get(home) else {
        return;
    };
    let guard = entry.read().unwrap_or_else(PoisonError::into_inner);
    if let Entry::Live(scheduler) = &*guard {
        // A runtime that has shut down has no task left to wake: its store refuses.
        scheduler.wake(key);
    }
}

/// Loom models of the sleep hand-off: a worker going to sleep against a key queued
/// for it (its queue stands as one flag: a key pushed, its emptiness read), and the
/// list's count against its contents.
///
/// `CARGO_TARGET_DIR=target/loom-executor RUSTFLAGS="--cfg pagekeep_executor_loom"
/// LOOM_MAX_PREEMPTIONS=2 cargo test -p pagekeep-executor --release --lib loom_models`
#[cfg(all(test, pagekeep_executor_loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A worker lists itself and looks at the queues (`has_work`) while another
    /// thread queues a key and wakes a sleeper (`push`, `notify_one`): either the
    /// sleeper sees the key, or the pusher takes it off the list to wake it.
    #[test]
    fn a_key_queued_as_a_worker_goes_to_sleep_is_seen_or_wakes_it() {
        loom::model(|| {
            let sleepers = Arc::new(SleepList::with_capacity(1));
            let queued = Arc::new(shim::AtomicBool::new(false));
            let pusher = {
                let sleepers = Arc::clone(&sleepers);
                let queued = Arc::clone(&queued);
                thread::spawn(move || {
                    queued.store(true, Ordering::Relaxed);
                    sleepers.take_oldest()
                })
            };
            sleepers.sleep(0);
            let saw_work = queued.load(Ordering::Relaxed);
            let woken = pusher.join().unwrap();
            assert!(
                saw_work || woken == Some(0),
                "the worker blocks with a key queued and nobody wakes it"
            );
        });
    }

    /// A worker that wakes up (`wake_up`, after `epoll_wait`) while two pushers take
    /// sleepers: every listed sleeper is taken once at most, and the count matches the
    /// list once all are done.
    #[test]
    fn the_sleeping_count_matches_the_list_whatever_the_interleaving() {
        loom::model(|| {
            let sleepers = Arc::new(SleepList::with_capacity(2));
            sleepers.sleep(0);
            sleepers.sleep(1);
            let pushers: Vec<_> = (0..2)
                .map(|_| {
                    let sleepers = Arc::clone(&sleepers);
                    thread::spawn(move || sleepers.take_oldest())
                })
                .collect();
            sleepers.wake_up(0);
            let taken: Vec<usize> = pushers
                .into_iter()
                .filter_map(|pusher| pusher.join().unwrap())
                .collect();
            assert!(taken.len() <= 2);
            assert!(
                !(taken.len() == 2 && taken[0] == taken[1]),
                "one sleeper woken twice: {taken:?}"
            );
            let left = sleepers.lock().len();
            assert_eq!(sleepers.sleeping.load(Ordering::Relaxed), left);
            assert_eq!(left + taken.len() + usize::from(!taken.contains(&0)), 2);
        });
    }
}
