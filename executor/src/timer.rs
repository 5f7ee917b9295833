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
//! so a steady stream of short-lived timers allocates nothing. The worker sleeps in
//! `epoll_wait` until
//! the earliest deadline (rounded up to a millisecond) and fires every due entry after
//! each wake-up.
//!
//! A `Sleep` polled on another worker than the one whose heap holds its entry (moved to
//! a task there, or its worker's runtime dropped) does not depend on that worker, which
//! may be blocked or gone: it completes if its deadline has passed, and otherwise
//! cancels the entry and registers again with the polling worker's heap. A worker that
//! exits wakes the wakers of the entries left in its heap, so that their tasks re-poll
//! and re-register.

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
/// Most reset entries kept for reuse.
const MAX_SPARE_ENTRIES: usize = 1024;

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
}

impl Default for TimerHeap {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_sequence: 0,
            compact_at: MIN_COMPACTION_LEN,
            spare: Vec::new(),
        }
    }
}

impl TimerHeap {
    /// Keeps `entry` for reuse if nothing but the caller holds it. The count cannot grow
    /// behind our back: references come only from a `Sleep` and the heap items it made,
    /// and the caller's is the last.
    pub(crate) fn recycle(&mut self, entry: Arc<TimerEntry>) {
        if self.spare.len() < MAX_SPARE_ENTRIES && Arc::strong_count(&entry) == 1 {
            *entry.lock() = EntryState::default();
            self.spare.push(entry);
        }
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

    /// A fresh entry: a spare one if any.
    pub(crate) fn take_entry(&mut self) -> Arc<TimerEntry> {
        let entry = self.spare.pop().unwrap_or_default();
        debug_assert_eq!(
            Arc::strong_count(&entry),
            1,
            "spare timer entry still shared"
        );
        entry
    }

    /// Registers `entry` for `deadline`, whose firing wakes `waker`. Its earlier
    /// registrations, in this heap or another, become stale.
    pub(crate) fn arm(&mut self, deadline: Instant, entry: &Arc<TimerEntry>, waker: Waker) {
        if self.heap.len() >= self.compact_at {
            self.compact();
        }
        let generation = {
            let mut state = entry.lock();
            state.generation = state.generation.wrapping_add(1);
            state.fired = false;
            state.cancelled = false;
            state.waker = Some(waker);
            state.generation
        };
        self.heap.push(HeapItem {
            deadline,
            sequence: self.next_sequence,
            entry: Arc::clone(entry),
            generation,
        });
        self.next_sequence += 1;
    }

    /// Registers a deadline whose firing wakes `waker`, on a fresh entry.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> Arc<TimerEntry> {
        let entry = self.take_entry();
        self.arm(deadline, &entry, waker);
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
/// It must be polled on an executor worker thread (it registers with that worker's
/// timers); it may be moved between workers, and between runtimes: polled on another
/// worker than the one it registered with, it registers again there, so it never
/// depends on a worker that is blocked or whose runtime was dropped.
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

    /// Withdraws the registration; the entry is kept for the next one.
    fn cancel(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        if let Some(entry) = &self.entry {
            let mut state = entry.lock();
            state.cancelled = true;
            state.waker = None;
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
            // Off a worker thread the entry is kept as it is.
            let here = crate::worker::with_local(|local| local.id);
            let mut state = entry.lock();
            if state.fired {
                drop(state);
                return crate::coop::poll_spend(cx);
            }
            if here.is_none() || here == Some(this.worker) {
                match &state.waker {
                    Some(stored) if stored.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            drop(state);
            // Polled on another worker than the one whose heap holds the entry (which
            // may be blocked, or gone with its runtime): leave that heap, and complete
            // or register here below (`polled` is set, so no extra yield).
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
        // make its entry) inside the request's arena.
        let (deadline, entry) = (this.deadline, &mut this.entry);
        let worker = pagekeep_arena::outside_arena(|| {
            crate::worker::with_local(|local| {
                let mut heap = crate::sync::lock(&local.shared.timers);
                let entry = entry.get_or_insert_with(|| heap.take_entry());
                heap.arm(deadline, entry, cx.waker().clone());
                local.id
            })
        })
        .expect("`Sleep` polled outside an executor worker thread");
        this.worker = worker;
        this.armed = true;
        Poll::Pending
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
                crate::worker::with_local(|local| {
                    if let Ok(mut heap) = local.shared.timers.try_lock() {
                        heap.recycle(entry);
                    }
                })
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
        heap.arm(start + Duration::from_secs(1), &entry, waker.clone());
        other.arm(start + Duration::from_secs(2), &entry, waker.clone());
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
