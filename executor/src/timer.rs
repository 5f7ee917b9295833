//! Timers: a binary min-heap of deadlines per worker, and the [`Sleep`] /
//! [`Timeout`] futures built on it.
//!
//! A [`Sleep`] registers lazily, on its first `Pending` poll, with the heap of the worker
//! polling it. The heap holds a shared entry (deadline, fired/cancelled flags, waker);
//! dropping or resetting the `Sleep` marks the entry cancelled, and cancelled entries are
//! dropped when they reach the top or when the heap is compacted (whenever it has doubled
//! since the last compaction), so memory stays bounded by twice the live timers even
//! under hyper's one-timer-per-request pattern. Entries that leave the heap with no
//! `Sleep` holding them are reset and kept (up to a bound) for the next registration,
//! so a steady stream of short-lived timers allocates nothing; a heap with more spares
//! than its bound hands half to a shared pool that a heap out of spares draws from, so
//! entries taken on one worker and let go of on another (stolen tasks) come back. The worker sleeps in
//! `epoll_wait` until
//! the earliest deadline (rounded up to a millisecond) and fires every due entry after
//! each wake-up.
//!
//! A `Sleep` polled on another worker than the one whose heap holds its entry (moved to
//! a task there, or its worker's runtime dropped) does not depend on that worker, which
//! may be blocked or gone: it completes if its deadline has passed, and otherwise
//! cancels the entry and registers again with the polling worker's heap. A worker that
//! exits wakes the wakers of the entries left in its heap, so that their tasks re-poll
//! and re-register. A `Sleep` polled on no worker at all (a plain thread, the blocking
//! pool, a runtime dropped under it) registers with the fallback timer (see
//! `fallback`): one process-wide heap served by a thread of its own.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct EntryState {
    fired: bool,
    cancelled: bool,
    waker: Option<Waker>,
    /// Bumped at every registration: heap items of earlier ones are stale.
    generation: u64,
}

/// A `Sleep`'s registration, shared by the heaps that hold items of it and the `Sleep`,
/// which keeps it across resets and moves between workers (each registration pushes an
/// item, not a new entry: a connection's timer allocates once, not once per request or
/// per move).
#[derive(Debug, Default)]
pub(crate) struct TimerEntry {
    state: Mutex<EntryState>,
}

impl TimerEntry {
    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        crate::sync::lock(&self.state)
    }
}

#[derive(Debug)]
struct HeapItem {
    deadline: Instant,
    /// Insertion order, to break ties deterministically.
    sequence: u64,
    entry: Arc<TimerEntry>,
    /// The entry's registration this item stands for.
    generation: u64,
}

impl HeapItem {
    /// Whether the item is still its entry's current, uncancelled registration.
    fn is_live(&self) -> bool {
        let state = self.entry.lock();
        !state.cancelled && state.generation == self.generation
    }
}

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest deadline must be on top.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.sequence).cmp(&(self.deadline, self.sequence))
    }
}

const MIN_COMPACTION_LEN: usize = 64;
/// Most reset entries a heap keeps for reuse.
const MAX_SPARE_ENTRIES: usize = 1024;
/// Most reset entries kept in [`SHARED_SPARES`].
const MAX_SHARED_SPARES: usize = 4 * MAX_SPARE_ENTRIES;
/// Entries a heap whose spares ran out takes from [`SHARED_SPARES`] at once.
const SPARE_BATCH: usize = 64;

/// Reset entries handed between heaps: a heap whose spares are full moves half of them
/// here, and one whose spares ran out takes a batch from here before it allocates.
/// Entries are taken from the spares of the heap that registers a sleep and go back to
/// those of the worker that lets go of it last (a stolen task's), so without this one
/// worker would allocate an entry for every sleep while another freed its surplus.
/// Locked once per batch, after a heap's own lock (never the other way round).
static SHARED_SPARES: Mutex<Vec<Arc<TimerEntry>>> = Mutex::new(Vec::new());

/// A worker's timers, behind a mutex in `WorkerShared`: its own thread inserts and
/// fires them, and the monitor fires them while a task holds the worker.
#[derive(Debug)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<HeapItem>,
    next_sequence: u64,
    /// Compact when the heap reaches this length.
    compact_at: usize,
    /// Reset entries nothing else references (`Arc::strong_count == 1`), for reuse.
    spare: Vec<Arc<TimerEntry>>,
    /// Entries this heap allocated (its spares and the shared ones were empty).
    #[cfg(test)]
    allocated: usize,
}

impl Default for TimerHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerHeap {
    /// An empty heap (`const`, for the fallback timer's static).
    const fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_sequence: 0,
            compact_at: MIN_COMPACTION_LEN,
            spare: Vec::new(),
            #[cfg(test)]
            allocated: 0,
        }
    }

    /// Keeps `entry` for reuse if nothing but the caller holds it. The count cannot grow
    /// behind our back: references come only from a `Sleep` and the heap items it made,
    /// and the caller's is the last.
    pub(crate) fn recycle(&mut self, entry: Arc<TimerEntry>) {
        if Arc::strong_count(&entry) != 1 {
            return;
        }
        if self.spare.len() >= MAX_SPARE_ENTRIES && !self.spill() {
            return;
        }
        *entry.lock() = EntryState::default();
        self.spare.push(entry);
    }

    /// Moves half the spares to [`SHARED_SPARES`], as many as it has room for; returns
    /// whether any moved.
    #[cold]
    fn spill(&mut self) -> bool {
        let mut shared = crate::sync::lock(&SHARED_SPARES);
        let room = MAX_SHARED_SPARES
            .saturating_sub(shared.len())
            .min(MAX_SPARE_ENTRIES / 2);
        let from = self.spare.len() - room.min(self.spare.len());
        // Runtime state: never grown inside a request's arena.
        pagekeep_arena::outside_arena(|| shared.extend(self.spare.drain(from..)));
        room > 0
    }

    /// Takes up to [`SPARE_BATCH`] entries from [`SHARED_SPARES`] into the spares.
    #[cold]
    fn refill(&mut self) {
        let mut shared = crate::sync::lock(&SHARED_SPARES);
        let from = shared.len().saturating_sub(SPARE_BATCH);
        pagekeep_arena::outside_arena(|| self.spare.extend(shared.drain(from..)));
    }

    /// Drops cancelled entries from the whole heap, in place: a reset timer (one per
    /// request, for the header-read timeout) must not cost an allocation now and then.
    fn compact(&mut self) {
        let mut items = std::mem::take(&mut self.heap).into_vec();
        let mut index = 0;
        while index < items.len() {
            if !items[index].is_live() {
                let item = items.swap_remove(index);
                self.recycle(item.entry);
            } else {
                index += 1;
            }
        }
        // Rebuilds the heap in the same buffer.
        self.heap = BinaryHeap::from(items);
        self.compact_at = (self.heap.len() * 2).max(MIN_COMPACTION_LEN);
    }

    /// A fresh entry: a spare one if any, this heap's or a shared one.
    pub(crate) fn take_entry(&mut self) -> Arc<TimerEntry> {
        if self.spare.is_empty() {
            self.refill();
        }
        let entry = self.spare.pop().unwrap_or_else(|| {
            #[cfg(test)]
            {
                self.allocated += 1;
            }
            Arc::default()
        });
        debug_assert_eq!(
            Arc::strong_count(&entry),
            1,
            "spare timer entry still shared"
        );
        entry
    }

    /// Registers `entry` for `deadline`, whose firing wakes `waker`. Its earlier
    /// registrations, in this heap or another, become stale. Returns the waker the
    /// entry held before, for the caller to drop once the heap is unlocked (dropping a
    /// waker runs its code).
    #[must_use = "the displaced waker is to be dropped once the heap is unlocked"]
    pub(crate) fn arm(
        &mut self,
        deadline: Instant,
        entry: &Arc<TimerEntry>,
        waker: Waker,
    ) -> Option<Waker> {
        if self.heap.len() >= self.compact_at {
            self.compact();
        }
        let (generation, displaced) = {
            let mut state = entry.lock();
            state.generation = state.generation.wrapping_add(1);
            state.fired = false;
            state.cancelled = false;
            (state.generation, state.waker.replace(waker))
        };
        self.heap.push(HeapItem {
            deadline,
            sequence: self.next_sequence,
            entry: Arc::clone(entry),
            generation,
        });
        self.next_sequence += 1;
        displaced
    }

    /// Registers a deadline whose firing wakes `waker`, on a fresh entry.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> Arc<TimerEntry> {
        let entry = self.take_entry();
        drop(self.arm(deadline, &entry, waker));
        entry
    }

    /// The earliest deadline still pending, dropping cancelled entries found on top.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(top) = self.heap.peek() {
            if !top.is_live() {
                let item = self.heap.pop().expect("peeked");
                self.recycle(item.entry);
            } else {
                return Some(top.deadline);
            }
        }
        None
    }

    /// Takes every entry due at `now`, pushing the wakers to wake onto `wakers`; the
    /// caller wakes them once the heap is unlocked (a waker may poll or drop a `Sleep`,
    /// which locks it). Returns how many it pushed.
    pub(crate) fn fire_due(&mut self, now: Instant, wakers: &mut Vec<Waker>) -> usize {
        let before = wakers.len();
        while let Some(top) = self.heap.peek() {
            if top.deadline > now {
                break;
            }
            let item = self.heap.pop().expect("peeked");
            {
                let mut state = item.entry.lock();
                if !state.cancelled && state.generation == item.generation {
                    state.fired = true;
                    wakers.extend(state.waker.take());
                }
            }
            self.recycle(item.entry);
        }
        wakers.len() - before
    }

    /// Entries in the heap, cancelled ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry (worker shutdown), handing back the wakers of the pending
    /// ones for the caller to wake once the heap is no longer borrowed.
    pub(crate) fn clear(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for item in self.heap.drain() {
            let mut state = item.entry.lock();
            if !state.cancelled && state.generation == item.generation {
                wakers.extend(state.waker.take());
            }
        }
        wakers
    }
}

/// A future that completes at a deadline. Made by [`sleep`] and [`sleep_until`].
///
/// Polled on an executor worker thread, it registers with that worker's timers; it may
/// be moved between workers, and between runtimes: polled on another worker than the
/// one it registered with, it registers again there, so it never depends on a worker
/// that is blocked or whose runtime was dropped. Polled on no worker (a plain thread
/// under another executor's `block_on`, a closure on the blocking pool, or after its
/// runtime was dropped), it registers with the process-wide fallback timer, a thread
/// started at the first such registration that leaves when it has no sleep left, and
/// completes at its deadline all the same.
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    /// Made at the first registration, kept until the sleep is dropped.
    entry: Option<Arc<TimerEntry>>,
    /// Whether `entry` is registered (in the heap of `worker`) for `deadline`.
    armed: bool,
    /// The [`id`](crate::worker::Local::id) of the worker whose heap holds `entry`.
    worker: u64,
    /// Whether this sleep has been polled: a sleep already due at its first poll still
    /// yields once (see [`sleep`]).
    polled: bool,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// How far ahead the farthest deadline lies: about 30 years. A longer duration
/// (`Duration::MAX` included) means the same as this one, "not in this process's life",
/// instead of overflowing `Instant`.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + duration`, clamped to [`FAR_FUTURE`] from `now`: every duration is a valid
/// "at most that long".
pub(crate) fn deadline_after(now: Instant, duration: Duration) -> Instant {
    now + duration.min(FAR_FUTURE)
}

/// Waits until `duration` has passed.
///
/// Any duration is accepted: one longer than about 30 years (`Duration::MAX`
/// included) waits about 30 years. A sleep that is already due when first polled
/// (`Duration::ZERO`) still yields once: the task is woken and goes to the back of its
/// worker's run queue, so a loop of `sleep(Duration::ZERO).await` lets every other task
/// run (as [`yield_now`] does).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async { pagekeep_executor::sleep(Duration::from_millis(5)).await });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(Instant::now(), duration))
}

/// Waits until `deadline`. A deadline already passed yields once, as
/// [`sleep(Duration::ZERO)`](sleep) does.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
        armed: false,
        worker: 0,
        polled: false,
    }
}

/// Yields once: the task is woken at once and goes to the back of its worker's run
/// queue, so every task queued before it runs first.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async {
///     let (sender, receiver) = std::sync::mpsc::channel();
///     let other = pagekeep_executor::spawn(async move { sender.send(()).unwrap() });
///     // The spawned task has not run yet; yielding lets it.
///     pagekeep_executor::yield_now().await;
///     assert!(receiver.try_recv().is_ok());
///     other.await.unwrap();
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Sleep {
    /// When this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (earlier or later) without making a new future.
    pub fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.deadline = deadline;
    }

    /// Whether this sleep is registered in the timer heap of the worker running the
    /// caller: it is then fired from there, at a clock reading past its deadline, and
    /// wakes the waker it was last polled with.
    pub(crate) fn is_armed_here(&self) -> bool {
        self.armed
            && self.entry.is_some()
            && crate::worker::with_local(|local| local.id) == Some(self.worker)
    }

    /// Withdraws the registration; the entry is kept for the next one.
    fn cancel(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        if let Some(entry) = &self.entry {
            let displaced = {
                let mut state = entry.lock();
                state.cancelled = true;
                state.waker.take()
            };
            // Dropped with the entry unlocked: dropping a waker runs its code.
            drop(displaced);
            if self.worker == FALLBACK_ID {
                fallback::withdrawn(self.deadline);
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // The budget is only asked when the sleep is about to complete (so a pending
        // poll, a timer per connection, costs nothing): with it spent, the elapsed sleep
        // completes at the next poll.
        if let Some(entry) = this.entry.as_ref().filter(|_| this.armed) {
            // Off any worker thread, the fallback timer stands for the worker.
            let here = crate::worker::with_local(|local| local.id).unwrap_or(FALLBACK_ID);
            let state = entry.lock();
            if state.fired {
                drop(state);
                return crate::coop::poll_spend(cx);
            }
            if here == this.worker {
                let stored = state.waker.as_ref();
                if !stored.is_some_and(|stored| stored.will_wake(cx.waker())) {
                    // Cloned, and the stored one dropped, with the entry unlocked.
                    drop(state);
                    let waker = cx.waker().clone();
                    let mut state = entry.lock();
                    if state.fired {
                        // Fired meanwhile, its waker taken: nobody would wake this one.
                        drop(state);
                        drop(waker);
                        return crate::coop::poll_spend(cx);
                    }
                    let displaced = state.waker.replace(waker);
                    drop(state);
                    drop(displaced);
                }
                return Poll::Pending;
            }
            drop(state);
            // Polled on another worker than the one whose heap holds the entry (which
            // may be blocked, or gone with its runtime), or on none: leave that heap,
            // and complete or register here below (`polled` is set, so no extra yield).
            this.cancel();
        }
        if Instant::now() >= this.deadline {
            if this.polled {
                return crate::coop::poll_spend(cx);
            }
            // Due at the first poll: yield once all the same (see `sleep`).
            this.polled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.polled = true;
        // The timer heap outlives any request: a handler's sleep must not grow it (or
        // make its entry) inside the request's arena. The waker is cloned, and the one
        // it replaces dropped, with no heap locked (either may run a waker's code).
        let (deadline, entry) = (this.deadline, &mut this.entry);
        let worker = pagekeep_arena::outside_arena(|| {
            let mut waker = Some(cx.waker().clone());
            let (worker, displaced) = crate::worker::with_local(|local| {
                let mut heap = crate::sync::lock(&local.shared.timers);
                let entry = entry.get_or_insert_with(|| heap.take_entry());
                let displaced = heap.arm(deadline, entry, waker.take().expect("unused"));
                (local.id, displaced)
            })
            .unwrap_or_else(|| {
                // On no worker (a plain thread, the blocking pool, another executor):
                // the process-wide fallback timer serves it.
                let displaced = fallback::arm(deadline, entry, waker.take().expect("unused"));
                (FALLBACK_ID, displaced)
            });
            drop(displaced);
            worker
        });
        this.worker = worker;
        this.armed = true;
        Poll::Pending
    }
}

/// What a [`Sleep`] registered with the fallback timer records as its worker's id
/// ([`Local::id`](crate::worker::Local::id)s count up from 0 and never reach it).
const FALLBACK_ID: u64 = u64::MAX;

/// The fallback timer: one process-wide heap, served by a thread of its own, for the
/// sleeps polled on no worker of any runtime (on a plain thread under another
/// executor's `block_on`, on the blocking pool, or after their runtime was dropped).
///
/// The thread is started by the first registration and leaves as soon as the heap is
/// empty, so a process that never polls a sleep off a worker never has it, and one
/// that did has it only while such sleeps wait. A registration that becomes the
/// earliest deadline unparks it (an unpark before its park is kept by `std::thread`),
/// and so does the cancellation of the earliest one (a sleep dropped or reset, or
/// moved to a worker): the thread then re-reads its heap, and leaves if it is empty,
/// instead of staying parked until a deadline nobody waits for (30 years away for
/// `Duration::MAX`).
/// The wakers of due entries run on that thread with the heap unlocked, each under
/// `catch_unwind`: one that panics is reported on standard error and the others are
/// still woken, as on the monitor.
mod fallback {
    use super::{Arc, Instant, TimerEntry, TimerHeap, Waker};
    use crate::sync::lock;
    use std::panic::AssertUnwindSafe;
    use std::sync::Mutex;
    use std::thread;

    #[derive(Debug)]
    struct State {
        heap: TimerHeap,
        /// Whether the thread is serving the heap (it clears this, under the lock, when
        /// it leaves on an empty heap).
        running: bool,
        /// The thread started last (for the tests to wait for it to leave).
        thread: Option<thread::JoinHandle<()>>,
        /// Times a thread has looked at the heap (for the tests to wait for a look).
        #[cfg(test)]
        looks: u64,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        heap: TimerHeap::new(),
        running: false,
        thread: None,
        #[cfg(test)]
        looks: 0,
    });

    /// Registers `entry` (made here if `None`) for `deadline`, whose firing wakes
    /// `waker`; starts the thread if it is not running. Returns the waker the entry held
    /// before, for the caller to drop.
    ///
    /// # Panics
    /// When the thread cannot be started (the sleep could never complete).
    pub(super) fn arm(
        deadline: Instant,
        entry: &mut Option<Arc<TimerEntry>>,
        waker: Waker,
    ) -> Option<Waker> {
        let mut state = lock(&STATE);
        let state = &mut *state;
        let entry = entry.get_or_insert_with(|| state.heap.take_entry());
        let displaced = state.heap.arm(deadline, entry, waker);
        if !state.running {
            // Started under the lock: it takes the lock first thing, so it finds the
            // entry; and `thread` always names the one running.
            match thread::Builder::new()
                .name("pagekeep-timer".to_owned())
                .spawn(run)
            {
                Ok(handle) => {
                    state.running = true;
                    state.thread = Some(handle);
                }
                Err(error) => panic!(
                    "a `Sleep` polled on no executor worker needs the fallback timer thread, \
                     which could not be started: {error}"
                ),
            }
        } else if state.heap.next_deadline() == Some(deadline)
            && let Some(handle) = &state.thread
        {
            handle.thread().unpark();
        }
        displaced
    }

    /// Says that the entry of a sleep registered here for `deadline` was cancelled.
    /// When no earlier deadline is left in the heap, the thread may be parked until
    /// this one: it is unparked to re-read the heap (and leave if it is empty). The
    /// cancelled entries on top are dropped here already.
    pub(super) fn withdrawn(deadline: Instant) {
        let mut state = lock(&STATE);
        if !state.running {
            return;
        }
        let next = state.heap.next_deadline();
        if next.is_none_or(|next| next > deadline)
            && let Some(handle) = &state.thread
        {
            handle.thread().unpark();
        }
    }

    /// Takes `entry` for the spares if the heap is free at once (a waker run by the
    /// thread may drop a sleep).
    pub(super) fn recycle(entry: Arc<TimerEntry>) {
        if let Ok(mut state) = STATE.try_lock() {
            state.heap.recycle(entry);
        }
    }

    /// The thread: fires due entries, wakes their wakers with the heap unlocked, and
    /// parks until the next deadline; leaves when the heap is empty.
    fn run() {
        let mut wakers = Vec::new();
        loop {
            let wait = {
                let mut state = lock(&STATE);
                #[cfg(test)]
                {
                    state.looks += 1;
                }
                state.heap.fire_due(Instant::now(), &mut wakers);
                let next = state.heap.next_deadline();
                if next.is_none() {
                    state.running = false;
                }
                next.map(|deadline| deadline.saturating_duration_since(Instant::now()))
            };
            for waker in wakers.drain(..) {
                if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake())) {
                    // Its payload's destructor is user code too, and may panic.
                    crate::sync::discard_panic(payload);
                    report_panicking_waker();
                }
            }
            match wait {
                Some(wait) => thread::park_timeout(wait),
                None => return,
            }
        }
    }

    #[cold]
    fn report_panicking_waker() {
        use std::io::Write;
        let _ = std::io::stderr().write_all(
            b"executor: a waker panicked when the fallback timer woke it; the timer goes on\n",
        );
    }

    /// Waits until the thread has left (the heap is empty), for tests that must end
    /// with no thread of theirs running (miri requires it).
    ///
    /// # Panics
    /// When it has not left within a minute.
    #[cfg(test)]
    pub(super) fn wait_until_idle() {
        assert!(
            left_within(std::time::Duration::from_secs(60)),
            "the fallback timer thread is still running a minute later"
        );
    }

    /// Times a thread has looked at the heap so far.
    #[cfg(test)]
    pub(super) fn looks() -> u64 {
        lock(&STATE).looks
    }

    /// Waits until a thread has looked at the heap since [`looks`] said `seen`.
    ///
    /// # Panics
    /// When none has within a minute.
    #[cfg(test)]
    pub(super) fn wait_for_a_look_since(seen: u64) {
        let start = Instant::now();
        while looks() == seen {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "the fallback timer thread has not looked at its heap for a minute"
            );
            thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Whether the thread has left (the heap is empty) within `limit`; joins it if
    /// so. The thread is never unparked here: it must see the cancellations by itself.
    #[cfg(test)]
    pub(super) fn left_within(limit: std::time::Duration) -> bool {
        let start = Instant::now();
        loop {
            let handle = {
                let mut state = lock(&STATE);
                (!state.running).then(|| state.thread.take())
            };
            match handle {
                Some(handle) => {
                    if let Some(handle) = handle {
                        handle.join().expect("the fallback timer thread panicked");
                    }
                    return true;
                }
                None if start.elapsed() >= limit => return false,
                None => thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
        let Some(entry) = self.entry.take() else {
            return;
        };
        // No heap item left (it fired, or went stale and was dropped): the entry goes
        // to this worker's spares rather than back to the allocator. Only with the heap
        // free at once: a waker run while it fires may drop a sleep on this thread.
        if Arc::strong_count(&entry) == 1 {
            pagekeep_arena::outside_arena(|| {
                let mut entry = Some(entry);
                crate::worker::with_local(|local| {
                    if let Ok(mut heap) = local.shared.timers.try_lock() {
                        heap.recycle(entry.take().expect("unused"));
                    }
                })
                .unwrap_or_else(|| fallback::recycle(entry.take().expect("unused")));
            });
        }
    }
}

/// The error of a [`timeout`] whose deadline passed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// A future bounded by a deadline. Made by [`timeout`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    sleep: Sleep,
}

/// Runs `future` for at most `duration`; on expiry the future is dropped and
/// `Err(Elapsed)` returned. Any duration is accepted; past about 30 years
/// (`Duration::MAX` included) it means the same as 30 years (see [`sleep`]).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let result = runtime.block_on(async {
///     pagekeep_executor::timeout(Duration::from_millis(5), std::future::pending::<()>()).await
/// });
/// assert_eq!(result, Err(pagekeep_executor::Elapsed));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future: Box::pin(future),
        sleep: sleep(duration),
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(output) = this.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // The deadline is checked whatever the inner future spent of the budget (as
        // tokio does): a future that always exhausts it must still time out.
        let elapsed = crate::coop::with_budget(crate::coop::Budget::unconstrained(), || {
            Pin::new(&mut this.sleep).poll(cx)
        });
        match elapsed {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Fires the due entries of `heap` and wakes their wakers, as a worker does.
    fn fire(heap: &mut TimerHeap, now: Instant) -> usize {
        let mut wakers = Vec::new();
        let fired = heap.fire_due(now, &mut wakers);
        wakers.into_iter().for_each(Waker::wake);
        fired
    }

    #[test]
    fn heap_fires_in_deadline_order_and_skips_cancelled() {
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(Arc::clone(&count));
        let mut heap = TimerHeap::default();
        let start = Instant::now();
        let late = heap.insert(start + Duration::from_secs(2), waker.clone());
        let early = heap.insert(start + Duration::from_secs(1), waker.clone());
        let cancelled = heap.insert(start, waker.clone());
        cancelled.lock().cancelled = true;
        assert_eq!(heap.next_deadline(), Some(start + Duration::from_secs(1)));
        assert_eq!(fire(&mut heap, start + Duration::from_millis(1500)), 1);
        assert!(early.lock().fired && !late.lock().fired);
        assert_eq!(fire(&mut heap, start + Duration::from_secs(3)), 1);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(heap.next_deadline(), None);
    }

    #[test]
    fn entries_nobody_holds_are_reused_and_held_ones_are_not() {
        let waker = Waker::noop().clone();
        let mut heap = TimerHeap::default();
        let now = Instant::now();
        let cancelled = heap.insert(now, waker.clone());
        cancelled.lock().cancelled = true;
        let cancelled_address = Arc::as_ptr(&cancelled);
        drop(cancelled);
        let fired_but_held = heap.insert(now, waker.clone());
        assert_eq!(
            heap.next_deadline(),
            Some(now),
            "the cancelled entry was popped"
        );
        fire(&mut heap, now);
        assert!(fired_but_held.lock().fired, "a held entry keeps its state");
        let reused = heap.insert(now + Duration::from_secs(1), waker);
        assert_eq!(
            Arc::as_ptr(&reused),
            cancelled_address,
            "the free entry was reused"
        );
        assert!(
            !reused.lock().fired && !reused.lock().cancelled,
            "reused entries are reset"
        );
    }

    /// Clearing the heap at shutdown hands back the wakers of the pending entries (to
    /// be woken, so their tasks re-register elsewhere), not those of cancelled ones.
    #[test]
    fn clear_hands_back_the_wakers_of_pending_entries() {
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(Arc::clone(&count));
        let mut heap = TimerHeap::default();
        let far = Instant::now() + Duration::from_secs(3600);
        let pending = heap.insert(far, waker.clone());
        let cancelled = heap.insert(far, waker);
        {
            let mut state = cancelled.lock();
            state.cancelled = true;
            state.waker = None;
        }
        let wakers = heap.clear();
        assert_eq!(heap.len(), 0);
        assert_eq!(wakers.len(), 1);
        wakers.into_iter().for_each(Waker::wake);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(pending.lock().waker.is_none() && !pending.lock().fired);
    }

    /// A registration made again on the same entry (a reset, or a move to another
    /// worker) leaves the earlier item stale: it neither fires nor hands back a waker,
    /// and it is dropped from the heap.
    #[test]
    fn an_entry_armed_again_fires_once_for_its_last_registration() {
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(Arc::clone(&count));
        let mut heap = TimerHeap::default();
        let mut other = TimerHeap::default();
        let start = Instant::now();
        let entry = heap.insert(start, waker.clone());
        drop(heap.arm(start + Duration::from_secs(1), &entry, waker.clone()));
        drop(other.arm(start + Duration::from_secs(2), &entry, waker.clone()));
        assert_eq!(fire(&mut heap, start + Duration::from_secs(5)), 0);
        assert!(!entry.lock().fired, "stale items do not fire");
        assert_eq!(heap.next_deadline(), None);
        assert!(heap.clear().is_empty(), "stale items hand back no waker");
        assert_eq!(fire(&mut other, start + Duration::from_secs(5)), 1);
        assert!(entry.lock().fired);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(Arc::strong_count(&entry), 1, "the heaps let go of it");
    }

    /// A `Sleep` keeps its entry across a firing, resets and re-registrations, and its
    /// entry goes to the worker's spares when it is dropped: a connection's timer, reset
    /// every request and firing now and then, allocates nothing after the first.
    #[test]
    fn a_sleep_keeps_one_entry_through_firings_and_resets() {
        let runtime = crate::Runtime::builder().workers(1).build().unwrap();
        // Long under miri, whose clock counts the work done: each sleep must still be
        // pending at its first poll, so that it registers.
        let unit = Duration::from_millis(if cfg!(miri) { 1000 } else { 1 });
        runtime.block_on(async move {
            let mut sleep = Box::pin(sleep(unit));
            sleep.as_mut().await;
            // An address, as a number: the future must be `Send`.
            let first = Arc::as_ptr(sleep.entry.as_ref().expect("registered")).addr();
            for round in 0..3 {
                let deadline = Instant::now() + unit * (1 + round);
                sleep.as_mut().get_mut().reset(deadline);
                assert!(sleep.entry.is_some(), "the entry is kept through a reset");
                sleep.as_mut().await;
                assert_eq!(Arc::as_ptr(sleep.entry.as_ref().unwrap()).addr(), first);
            }
            // Reset far ahead and polled once (registered), then reset near: the far
            // item goes stale and only the near one completes the sleep.
            sleep
                .as_mut()
                .get_mut()
                .reset(Instant::now() + Duration::from_secs(3600));
            assert!(futures_poll_once(sleep.as_mut()).is_pending());
            sleep
                .as_mut()
                .get_mut()
                .reset(Instant::now() + Duration::from_millis(1));
            sleep.as_mut().await;
            assert_eq!(Arc::as_ptr(sleep.entry.as_ref().unwrap()).addr(), first);
            drop(sleep);
            // The dropped sleep's entry (the far item still holds it until compaction
            // or the top of the heap) is reused once free: a fresh sleep gets a spare.
            let fresh = crate::worker::with_local(|local| {
                let mut heap = crate::sync::lock(&local.shared.timers);
                heap.next_deadline();
                heap.compact();
                heap.take_entry()
            })
            .unwrap();
            assert_eq!(
                Arc::as_ptr(&fresh).addr(),
                first,
                "the entry went to the spares"
            );
        });
    }

    fn futures_poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        future.poll(&mut cx)
    }

    /// Runs `body` on a thread of its own and waits at most `limit` for its answer:
    /// `None` when it has not answered (it hangs; the thread is left behind).
    fn within<T: Send + 'static>(
        limit: Duration,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(body());
        });
        receiver.recv_timeout(limit).ok()
    }

    /// A sleep registered with a runtime's worker and polled after that runtime was
    /// dropped, by an executor that is no runtime's (a `block_on` that parks a plain
    /// thread, as `futures::executor::block_on` does), completes at its deadline. It used to stay pending for ever: its
    /// entry was left in the dead worker's heap, which nothing serves.
    #[test]
    fn a_sleep_outliving_its_runtime_completes_off_any_worker() {
        let unit = Duration::from_millis(if cfg!(miri) { 1000 } else { 50 });
        let runtime = crate::Runtime::builder().workers(1).build().unwrap();
        // In a struct: the runtime hands back a value, not a future to await.
        struct Kept(Pin<Box<Sleep>>);
        let Kept(mut kept) = runtime.block_on(async move {
            let mut kept = Box::pin(sleep(unit));
            assert!(futures_poll_once(kept.as_mut()).is_pending(), "registered");
            Kept(kept)
        });
        drop(runtime);
        let deadline = kept.deadline();
        let done = within(Duration::from_secs(60), move || {
            crate::runtime::block_on_thread(kept.as_mut());
            Instant::now()
        });
        let done = done.expect("a sleep outliving its runtime hangs");
        assert!(done >= deadline, "completed before its deadline");
        fallback::wait_until_idle();
    }

    /// A sleep polled on no worker at all (a plain thread, and the blocking pool)
    /// completes at its deadline. It used to panic: "`Sleep` polled outside an executor
    /// worker thread".
    #[test]
    fn a_sleep_polled_off_any_worker_completes() {
        let unit = Duration::from_millis(if cfg!(miri) { 1000 } else { 20 });
        let done = within(Duration::from_secs(60), move || {
            let start = Instant::now();
            crate::runtime::block_on_thread(sleep(unit));
            start.elapsed()
        });
        assert!(done.expect("hangs") >= unit);
        let runtime = crate::Runtime::builder().workers(1).build().unwrap();
        let blocking = runtime.handle().spawn_blocking(move || {
            let start = Instant::now();
            crate::runtime::block_on_thread(sleep(unit));
            start.elapsed()
        });
        let waited = runtime
            .block_on(blocking)
            .expect("the sleep on the blocking pool");
        assert!(waited >= unit);
        drop(runtime);
        fallback::wait_until_idle();
    }

    /// The fallback timer's thread, parked until a far deadline, is unparked by an
    /// earlier one, and a waker that panics there is reported and does not end it:
    /// the sleeps registered after it still complete.
    #[test]
    fn the_fallback_timer_serves_an_earlier_deadline_and_survives_a_panicking_waker() {
        struct Panicking;
        impl Wake for Panicking {
            fn wake(self: Arc<Self>) {
                panic!("a waker that panics on purpose");
            }
        }
        let unit = Duration::from_millis(if cfg!(miri) { 1000 } else { 20 });
        let far_away = if cfg!(miri) { 600 } else { 2 };
        let mut far = Box::pin(sleep(Duration::from_secs(far_away)));
        assert!(futures_poll_once(far.as_mut()).is_pending());
        let mut doomed = Box::pin(sleep(unit));
        let panicking = Waker::from(Arc::new(Panicking));
        assert!(
            doomed
                .as_mut()
                .poll(&mut Context::from_waker(&panicking))
                .is_pending()
        );
        let done = within(Duration::from_secs(60), move || {
            crate::runtime::block_on_thread(sleep(2 * unit));
        });
        assert!(
            done.is_some(),
            "the fallback timer died or kept waiting for the far deadline"
        );
        drop((doomed, far));
        fallback::wait_until_idle();
    }

    /// Far-off sleeps served by the fallback timer and dropped let its thread leave
    /// at once: `Duration::MAX` (30 years) and an hour, the earlier dropped first, so
    /// that the thread, unparked, parks again until the later one, which is then
    /// dropped too. The thread used to stay parked until the cancelled deadline (an
    /// hour), a thread kept for nothing.
    #[test]
    fn dropped_far_sleeps_let_the_fallback_thread_leave() {
        let mut forever = Box::pin(sleep(Duration::MAX));
        let mut hour = Box::pin(sleep(Duration::from_secs(3600)));
        // Each registration is seen by the thread before the next step, so that it is
        // parked (or about to park) until the earliest deadline when that is dropped.
        let seen = fallback::looks();
        assert!(futures_poll_once(forever.as_mut()).is_pending());
        fallback::wait_for_a_look_since(seen);
        let seen = fallback::looks();
        assert!(futures_poll_once(hour.as_mut()).is_pending());
        fallback::wait_for_a_look_since(seen);
        drop(hour);
        drop(forever);
        assert!(
            fallback::left_within(Duration::from_secs(60)),
            "the fallback timer thread stayed parked until a cancelled deadline"
        );
        // A reset is a cancellation too.
        let mut moved = Box::pin(sleep(Duration::from_secs(3600)));
        let seen = fallback::looks();
        assert!(futures_poll_once(moved.as_mut()).is_pending());
        fallback::wait_for_a_look_since(seen);
        moved.reset(Instant::now() + Duration::from_secs(7200));
        assert!(
            fallback::left_within(Duration::from_secs(60)),
            "the fallback timer thread stayed parked until a reset deadline"
        );
        drop(moved);
    }

    /// A waker that panics with a payload whose destructor panics too does not end
    /// the fallback timer's thread: a sleep registered after it still completes. The
    /// payload used to be dropped outside any catch: its panic ended the thread, which
    /// still counted as running, so no sleep off the workers ever completed again.
    #[test]
    fn the_fallback_timer_survives_a_panic_payload_that_panics_when_dropped() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("a panic payload whose destructor panics on purpose");
            }
        }
        struct Throws;
        impl Wake for Throws {
            fn wake(self: Arc<Self>) {
                std::panic::panic_any(Bomb);
            }
        }
        let unit = Duration::from_millis(if cfg!(miri) { 1000 } else { 20 });
        let mut doomed = Box::pin(sleep(unit));
        let throws = Waker::from(Arc::new(Throws));
        assert!(
            doomed
                .as_mut()
                .poll(&mut Context::from_waker(&throws))
                .is_pending()
        );
        let done = within(Duration::from_secs(60), move || {
            crate::runtime::block_on_thread(sleep(2 * unit));
        });
        assert!(done.is_some(), "the fallback timer thread died");
        drop(doomed);
        fallback::wait_until_idle();
    }

    /// Entries taken on one worker and let go on another (a task that registers its
    /// sleeps on one worker and ends on the other, as stolen tasks do) do not make the
    /// first allocate one for every sleep while the other frees its surplus: spares
    /// past a heap's bound go to a shared pool that an empty heap draws from. With the
    /// spares per worker only, 4,096 such sleeps allocated 4,096 entries.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "4,096 sleeps and 64 task hand-offs take minutes under miri"
    )]
    fn entries_let_go_on_another_worker_come_back_to_the_one_that_takes_them() {
        const BATCH: usize = 64;
        const ROUNDS: usize = 64;
        let runtime = crate::Runtime::builder().workers(2).build().unwrap();
        runtime.block_on(async {
            let spawner = crate::Handle::current().spawner().clone();
            for _ in 0..ROUNDS {
                // Registered on worker 0 (a task's first poll runs where it is pinned)...
                let batch = spawner
                    .spawn_on(0, async {
                        let mut batch: Vec<_> = (0..BATCH)
                            .map(|_| Box::pin(sleep(Duration::from_millis(1))))
                            .collect();
                        for sleep in &mut batch {
                            assert!(futures_poll_once(sleep.as_mut()).is_pending());
                        }
                        for sleep in &mut batch {
                            sleep.as_mut().await;
                        }
                        batch
                    })
                    .await
                    .unwrap();
                // ...and let go of on worker 1, once fired.
                spawner
                    .spawn_on(1, async move { drop(batch) })
                    .await
                    .unwrap();
            }
        });
        let allocated: usize = runtime
            .scheduler_for_tests()
            .workers
            .iter()
            .map(|worker| crate::sync::lock(&worker.timers).allocated)
            .sum();
        assert!(
            allocated <= BATCH * ROUNDS / 2,
            "{allocated} entries allocated for {} sleeps",
            BATCH * ROUNDS
        );
    }

    #[test]
    fn cancelled_entries_are_compacted() {
        let waker = Waker::noop().clone();
        let mut heap = TimerHeap::default();
        let far = Instant::now() + Duration::from_secs(3600);
        let count = if cfg!(miri) { 500 } else { 10_000 };
        for _ in 0..count {
            let entry = heap.insert(far, waker.clone());
            entry.lock().cancelled = true;
        }
        assert!(
            heap.len() <= 2 * MIN_COMPACTION_LEN,
            "heap kept {} dead entries",
            heap.len()
        );
    }
}
