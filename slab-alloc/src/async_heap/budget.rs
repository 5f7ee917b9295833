//! [`Budget`]: a counted number of bytes that requests take and frees give back, with a
//! FIFO queue of the requests that wait for room.
//!
//! # Safety
//!
//! Everything the budget shares lives in one atomic word, [`Budget::state`], plus a
//! queue guarded by a lock bit of that word:
//!
//! - bits `0..61`: the bytes available. Anyone adds to them (a free, with one
//!   `fetch_add`); a request takes from them with a compare-and-swap, on its fast path
//!   only while [`WAITING`] is clear (nobody queued, so taking cannot overtake anyone),
//!   and otherwise only the holder of [`LOCKED`], for the head of the queue.
//! - [`LOCKED`]: set by a compare-and-swap, cleared by its holder. Only the holder
//!   touches [`Budget::queue`], clears [`PUMP`] and sets or clears [`WAITING`].
//! - [`WAITING`]: set while the queue is not empty (and for the moment a holder
//!   takes to enqueue).
//! - [`PUMP`]: "the queue must be looked at again". A free that finds [`WAITING`]
//!   sets it, then takes the lock if it is free and grants; if the lock is held, the
//!   holder finds [`PUMP`] in the value its unlocking `fetch_and` returns, and grants
//!   again. Because the bit, the bytes and the lock are one word, their orders are one
//!   modification order: a free's bytes are added before its `PUMP`, and a holder
//!   clears `PUMP` before it reads the bytes, so either the holder's grant sees the
//!   bytes or the bit survives its clear and the holder (or the freeing thread) grants
//!   again. That is why no wake-up is lost, in particular the one the seed's design
//!   lost: a free landing between a waiter's look at the bytes and its registration
//!   (here the waiter looks and registers under the lock, in one compare-and-swap that
//!   sets [`WAITING`], and the free sees that bit).
//!
//! In front of the word sit the threads' credits (`credit.rs`): bytes a thread took
//! from the word in a batch, with which it serves its requests and frees while
//! [`WAITING`] is clear. The rules that keep FIFO and the wake-ups with them:
//!
//! - A new credit is taken from the word by a compare-and-swap that fails while
//!   [`WAITING`] is set, and a request is served from a credit only after the thread's
//!   look at [`WAITING`] inside its slot's mark: a waiter registers (sets [`WAITING`])
//!   before its pass flags the slots, so a thread either sees the flag or the pass
//!   sees the thread inside (then its request counts as made before the waiter's).
//! - A waiter's pass (under the lock, right after it set [`WAITING`]) takes the credit
//!   of every slot whose owner is out, adds it to the word and grants. An owner that
//!   was inside looks at [`WAITING`] after it clears its mark (fence in between, the
//!   pass fences between flagging and looking), so it sees the waiter and gives its
//!   whole credit to the word, which pumps as a free does: no byte a waiter needs stays
//!   in a credit.
//! - Credits of threads that exited (or stay idle) are taken by the next pass;
//!   [`try_acquire`](Budget::try_acquire) also runs one when the word is short but the
//!   word and the credits together would do.
//!
//! A free therefore never waits for the lock (it adds its bytes, and grants only if the
//! lock is free), and no waker runs while the lock is held: the holder collects at most
//! [`WAKE_BATCH`] wakers, unlocks, then wakes them.
//!
//! Requests whose bytes were granted but whose memory the page source could not supply
//! wait in a second list of the queue, the starved list ([`Budget::supply`]), under the
//! same lock bit, with `WAITING` set while it is not empty. They gave their bytes back to
//! the word when they registered; a grant pass gives them their bytes again, ahead of the
//! ordinary queue, once a source event (counted in [`Shortage::events`] by a free made
//! while a request is starved, before that free's `Release` add of its bytes to the word)
//! came after their last attempt; until then they hold up nobody. Such frees go to the
//! word, never to a credit, and always pump, so the event is seen as the bytes are.
//! Memory that comes back otherwise (a class releasing empty slabs, a thread's exit) is
//! counted by [`Budget::note_source_return`], which may run under a cache's lock and so
//! only raises [`Shortage::noted`]; the next [`Budget::announce`], outside every lock,
//! asks for the grant pass (through `PUMP`, as a free does).
//!
//! A waiter is known by a ticket, given in order; grants take the head of the queue
//! only, so tickets are granted in increasing order and [`Queue::last_granted`] tells a
//! waiter whether it was served. A waiter that is dropped removes its entry, or, if it
//! was served and never saw it, gives the bytes back (and the grant loop runs again).

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;

use super::credit::{self, SLOTS, Slot};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::sync::CachePadded;

/// Set while the queue is not empty.
const WAITING: usize = 1 << 63;
/// Set by a free that found waiters; cleared by the lock holder before it grants.
const PUMP: usize = 1 << 62;
/// The queue's lock.
const LOCKED: usize = 1 << 61;
/// The bits that count available bytes.
const BYTES: usize = LOCKED - 1;
/// The largest capacity a budget can have.
pub(crate) const MAX_CAPACITY: usize = BYTES;
/// How many wakers a lock holder collects before it unlocks to wake them.
const WAKE_BATCH: usize = 8;

/// An `UnsafeCell` with loom's closure interface, so the same code runs under loom.
#[cfg(not(loom))]
#[derive(Debug)]
struct QueueCell(core::cell::UnsafeCell<Queue>);

#[cfg(not(loom))]
impl QueueCell {
    fn new(queue: Queue) -> Self {
        QueueCell(core::cell::UnsafeCell::new(queue))
    }
    fn with_mut<R>(&self, f: impl FnOnce(*mut Queue) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
#[derive(Debug)]
struct QueueCell(loom::cell::UnsafeCell<Queue>);

#[cfg(loom)]
impl QueueCell {
    fn new(queue: Queue) -> Self {
        QueueCell(loom::cell::UnsafeCell::new(queue))
    }
    fn with_mut<R>(&self, f: impl FnOnce(*mut Queue) -> R) -> R {
        self.0.with_mut(f)
    }
}

/// One waiting request.
#[derive(Debug)]
struct Entry {
    ticket: u64,
    bytes: usize,
    /// The waker of its last poll; taken when granted.
    waker: Option<Waker>,
}

/// One starved request: granted its bytes once, it found the source unable to supply
/// its block, gave the bytes back and waits for a source event (see [`Budget::supply`]).
#[derive(Debug)]
struct StarvedEntry {
    /// Its place among the starved requests, kept across its retries.
    ticket: u64,
    bytes: usize,
    /// The source events counted before its last attempt: it is eligible for another
    /// once [`Shortage::events`] has moved past this.
    seen: u64,
    /// The waker of its last poll; taken when granted.
    waker: Option<Waker>,
}

/// The waiters, in ticket order.
#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// The ticket the next waiter gets (tickets start at 1).
    next_ticket: u64,
    /// The ticket of the last waiter granted (0: none yet). Grants pop the head only, so
    /// every queued ticket at most this one was granted.
    last_granted: u64,
    /// The starved requests, in the order of their tickets (of their own numbering). An
    /// entry leaves only when granted or when its request is dropped.
    starved: VecDeque<StarvedEntry>,
    /// The ticket the next starved request gets.
    next_starved_ticket: u64,
}

impl Queue {
    /// The position of the starved request `ticket`, or where it goes.
    fn starved_position(&self, ticket: u64) -> Result<usize, usize> {
        self.starved
            .binary_search_by_key(&ticket, |entry| entry.ticket)
    }

    /// The position of `ticket` in the queue.
    fn position(&self, ticket: u64) -> Option<usize> {
        self.entries
            .binary_search_by_key(&ticket, |entry| entry.ticket)
            .ok()
    }
}

/// Wakers collected under the lock, woken after it is released.
struct WakeBatch {
    wakers: [Option<Waker>; WAKE_BATCH],
    len: usize,
    /// The first panic of a waker, raised by [`finish`](Self::finish) once every waker
    /// was woken and every grant pass run.
    panic: Option<Box<dyn core::any::Any + Send>>,
}

impl WakeBatch {
    fn new() -> Self {
        WakeBatch {
            wakers: Default::default(),
            len: 0,
            panic: None,
        }
    }

    fn is_full(&self) -> bool {
        self.len == WAKE_BATCH
    }

    fn push(&mut self, waker: Waker) {
        debug_assert!(!self.is_full());
        self.wakers[self.len] = Some(waker);
        self.len += 1;
    }

    /// Wakes every collected waker (outside the lock). A waker is user code: one that
    /// panics stops neither the other wakes nor the grant passes that follow (which
    /// would strand waiters that fit); the first panic is kept for [`finish`].
    ///
    /// [`finish`]: Self::finish
    fn wake_all(&mut self) {
        for index in 0..self.len {
            if let Some(waker) = self.wakers[index].take() {
                let woken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
                if let Err(payload) = woken {
                    self.panic.get_or_insert(payload);
                }
            }
        }
        self.len = 0;
    }

    /// Wakes what is left, then raises the first waker's panic in the thread that woke
    /// it, unless that thread is already unwinding (a future dropped during a panic),
    /// where a second panic would abort the process: the payload is dropped then.
    fn finish(mut self) {
        self.wake_all();
        if let Some(payload) = self.panic.take()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(payload);
        }
    }
}

impl Drop for WakeBatch {
    fn drop(&mut self) {
        // Reached only when something else unwinds with wakers collected: wake them
        // all, swallowing their panics (the first unwinding goes on).
        self.wake_all();
    }
}

/// A budget of bytes with a FIFO queue of waiting requests (see the module docs).
pub(crate) struct Budget {
    /// Available bytes and the flags [`WAITING`], [`PUMP`], [`LOCKED`].
    state: AtomicUsize,
    /// Accessed only by the holder of [`LOCKED`].
    queue: QueueCell,
    capacity: usize,
    /// The bytes a thread takes into its credit at once; 0: credits are off (see
    /// `credit.rs`). Only a request of at most this many bytes refills the credit; any
    /// request the credit holds is served from it, and any free it can keep within
    /// [`credit_max`](Self::credit_max) goes to it.
    batch: usize,
    /// The most a thread's credit holds after a free on the fast path: twice the batch
    /// (kept here so that the free reads one field, not the batch and a product).
    credit_max: usize,
    /// The threads' credits, or `None` when credits are off. An array, so that a
    /// thread reaches its slot with no bounds check (the index is masked to it).
    slots: Option<Box<[Slot; SLOTS]>>,
    /// What frees look at to tell whether a request is starved (read by every free, so
    /// on a line of its own, written only while a request is starved).
    shortage: CachePadded<Shortage>,
    /// This budget's id (never reused): the key of the thread's note of its own slot
    /// (`credit::last_own_slot`).
    id: u64,
}

/// The counters of the starved requests' protocol (see [`Budget::supply`]).
struct Shortage {
    /// Requests inside [`Budget::supply`]: from just after their first failed attempt to
    /// their success or drop.
    starved: AtomicUsize,
    /// Source events: one for every free that gave memory back while `starved` was not
    /// zero, and one for every other return of memory to the source noted meanwhile
    /// ([`Budget::note_source_return`]).
    events: AtomicU64,
    /// An event was noted and no grant pass was asked for since
    /// ([`Budget::announce`]). Set with `Release` after the event's count, taken with
    /// `Acquire`.
    noted: AtomicBool,
}

// SAFETY: the queue is only touched by the holder of the lock bit (module docs); what it
// holds (wakers, numbers) is `Send`.
unsafe impl Sync for Budget {}
// SAFETY: as above.
unsafe impl Send for Budget {}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("Budget")
            .field("capacity", &self.capacity)
            .field("available", &(state & BYTES))
            .field("credits", &self.credits())
            .field("waiting", &(state & WAITING != 0))
            .finish()
    }
}

/// Holds the lock bit of a [`Budget`]; releasing it is explicit ([`Budget::unlock`]).
struct Locked<'a> {
    budget: &'a Budget,
}

impl Locked<'_> {
    /// The queue.
    fn with_queue<R>(&mut self, f: impl FnOnce(&mut Queue) -> R) -> R {
        self.budget.queue.with_mut(|queue| {
            // SAFETY: this guard holds the lock bit, which gives exclusive access to the
            // queue (module docs); the reference does not outlive the closure.
            f(unsafe { &mut *queue })
        })
    }
}

impl Budget {
    /// A budget of `capacity` bytes, all available.
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(
            capacity <= MAX_CAPACITY,
            "an async heap holds at most 2^61 - 1 bytes"
        );
        // Credits need the pass's fence; a batch too small for the smallest block is
        // no use.
        let batch = credit::batch_for(capacity);
        let batch = if batch >= 8 && credit::heavy_fence() {
            batch
        } else {
            0
        };
        Self::with_batch(capacity, batch)
    }

    /// A budget of `capacity` bytes whose threads take credits of `batch` bytes (0: no
    /// credits).
    pub(crate) fn with_batch(capacity: usize, batch: usize) -> Self {
        assert!(
            capacity <= MAX_CAPACITY,
            "an async heap holds at most 2^61 - 1 bytes"
        );
        let slots = (batch != 0).then(|| {
            let slots: Box<[Slot]> = (0..SLOTS).map(|_| Slot::new()).collect();
            slots
                .try_into()
                .unwrap_or_else(|_| unreachable!("exactly `SLOTS` slots were made"))
        });
        Budget {
            state: AtomicUsize::new(capacity),
            queue: QueueCell::new(Queue {
                next_ticket: 1,
                next_starved_ticket: 1,
                ..Queue::default()
            }),
            capacity,
            batch,
            credit_max: batch.saturating_mul(2),
            slots,
            shortage: CachePadded::new(Shortage {
                starved: AtomicUsize::new(0),
                events: AtomicU64::new(0),
                noted: AtomicBool::new(false),
            }),
            id: credit::budget_id(),
        }
    }

    /// The capacity in bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bytes available now: in the shared word and in the threads' credits (a sum
    /// of loads, exact when no thread allocates or frees meanwhile).
    pub(crate) fn available(&self) -> usize {
        (self.state.load(Ordering::Acquire) & BYTES) + self.credits()
    }

    /// The bytes in the threads' credits.
    fn credits(&self) -> usize {
        self.slots
            .iter()
            .flat_map(|slots| slots.iter())
            .map(|slot| slot.credit.load(Ordering::Relaxed))
            .sum()
    }

    /// The calling thread's slot, if it owns one: the slot the thread noted last, if it
    /// is of this budget (one thread-local access and a compare), else by the token.
    #[inline(always)]
    fn own_slot(&self) -> Option<&Slot> {
        let (id, slot) = credit::last_own_slot();
        if id == self.id {
            // SAFETY: a slot noted with this budget's id is one of this budget's slots (ids
            // are never reused, and never 0, the id of no note), which live as long as the
            // budget, borrowed here.
            return Some(unsafe { &*slot });
        }
        self.own_slot_by_token()
    }

    /// [`own_slot`](Self::own_slot) past the thread's last noted slot: the slot of the
    /// thread's token, if the thread owns it (then noted).
    #[inline(never)]
    fn own_slot_by_token(&self) -> Option<&Slot> {
        // `slots` is `None` when credits are off.
        let token = credit::thread_token();
        let slot = &self.slots.as_deref()?[credit::slot_index(token)];
        if slot.owner.load(Ordering::Relaxed) != token {
            return None;
        }
        credit::note_own_slot(self.id, slot);
        Some(slot)
    }

    /// The calling thread's slot, claimed if nobody owns it (and noted, as
    /// [`own_slot`](Self::own_slot) does).
    fn own_or_claim_slot(&self) -> Option<&Slot> {
        let token = credit::thread_token();
        let slot = &self.slots.as_deref()?[credit::slot_index(token)];
        match slot
            .owner
            .compare_exchange(0, token, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {}
            Err(owner) if owner == token => {}
            Err(_) => return None,
        }
        credit::note_own_slot(self.id, slot);
        Some(slot)
    }

    /// The owner's exit from its slot: if requests wait, its credit goes to the shared
    /// word (a pass may have found it inside, and left the credit).
    #[inline(always)]
    fn leave_slot(&self, slot: &Slot) {
        slot.leave();
        if self.state.load(Ordering::Relaxed) & WAITING != 0 {
            self.flush_credit(slot);
        }
    }

    /// Gives the calling thread's whole credit (of `slot`, which it owns) to the shared
    /// word.
    #[cold]
    #[inline(never)]
    fn flush_credit(&self, slot: &Slot) {
        slot.enter();
        let credit = slot.credit.load(Ordering::Relaxed);
        slot.credit.store(0, Ordering::Relaxed);
        // Nothing left to flush: no second look at the waiting flag is needed.
        slot.leave();
        if credit != 0 {
            self.release_shared(credit);
        }
    }

    /// A pass (under the lock): takes the credit of every slot whose owner is out of it
    /// into the shared word; returns the bytes taken. A slot whose owner is inside is
    /// left: that owner gives its credit when it leaves if requests wait.
    fn reclaim_credits(&self, _locked: &Locked<'_>) -> usize {
        // Every owned slot, whatever its credit looks like now: an owner may be storing
        // a refill it took before `WAITING` was set, which only the fence below makes
        // visible (or makes the owner see `WAITING` when it leaves).
        let mut flagged = false;
        for slot in self.slots.iter().flat_map(|slots| slots.iter()) {
            if slot.owner.load(Ordering::Acquire) != 0 {
                slot.reclaiming.store(true, Ordering::Relaxed);
                flagged = true;
            }
        }
        if !flagged {
            return 0;
        }
        // A failing fence (only if the system refused it after accepting it when the
        // budget was made) leaves the credits: their owners give them when they next
        // leave their slots with requests waiting.
        let fenced = credit::heavy_fence();
        let mut taken = 0;
        for slot in self.slots.iter().flat_map(|slots| slots.iter()) {
            if !slot.reclaiming.load(Ordering::Relaxed) {
                continue;
            }
            // `Acquire`: the owner's last use of its credit happens before.
            if fenced && slot.in_use.load(Ordering::Acquire) == 0 {
                taken += slot.credit.load(Ordering::Relaxed);
                slot.credit.store(0, Ordering::Relaxed);
            }
            // `Release`: the owner's next use sees the credit taken.
            slot.reclaiming.store(false, Ordering::Release);
        }
        if taken != 0 {
            // Under the lock: the grant pass that follows serves the queue.
            self.state.fetch_add(taken, Ordering::AcqRel);
        }
        taken
    }

    /// How many requests wait (for bytes, or starved).
    pub(crate) fn waiters(&self) -> usize {
        let mut locked = self.lock();
        let waiters = locked.with_queue(|queue| queue.entries.len() + queue.starved.len());
        self.unlock(locked);
        waiters
    }

    /// Takes `bytes` if nobody waits and they are available (in the shared word or the
    /// calling thread's credit, or, taken back, in idle threads' credits); never waits.
    ///
    /// The fast path serves the request from the calling thread's credit, with no
    /// locked instruction.
    #[inline(always)]
    pub(crate) fn try_acquire(&self, bytes: usize) -> bool {
        // Any charge the credit holds is served from it (no comparison with the batch:
        // the credit is at most twice the batch anyway).
        if let Some(slot) = self.own_slot()
            && slot.try_enter()
        {
            // FIFO: nobody waits (a waiter that registers meanwhile sees the mark, and
            // this request counts as made before it).
            let taken = self.state.load(Ordering::Relaxed) & WAITING == 0
                && match slot.credit.load(Ordering::Relaxed).checked_sub(bytes) {
                    Some(left) => {
                        slot.credit.store(left, Ordering::Relaxed);
                        true
                    }
                    None => false,
                };
            self.leave_slot(slot);
            if taken {
                return true;
            }
        }
        self.try_acquire_slow(bytes)
    }

    /// [`try_acquire`](Self::try_acquire) without the thread's credit at hand: refills
    /// the credit with a batch, or takes the bytes from the shared word, or, if they are
    /// short there but the credits of idle threads would make them up, takes those back
    /// (under the lock) and tries again.
    #[cold]
    #[inline(never)]
    fn try_acquire_slow(&self, bytes: usize) -> bool {
        if bytes <= self.batch
            && let Some(slot) = self.own_or_claim_slot()
        {
            slot.enter();
            let credit = slot.credit.load(Ordering::Relaxed);
            let taken = if credit >= bytes {
                // A pass had the slot when the fast path looked.
                self.state.load(Ordering::Relaxed) & WAITING == 0
            } else {
                self.take_shared(self.batch)
            };
            if taken {
                let refilled = if credit >= bytes {
                    credit
                } else {
                    credit + self.batch
                };
                slot.credit.store(refilled - bytes, Ordering::Relaxed);
            }
            self.leave_slot(slot);
            if taken {
                return true;
            }
        }
        if self.take_shared(bytes) {
            return true;
        }
        let state = self.state.load(Ordering::Relaxed);
        if state & WAITING != 0 || (state & BYTES) + self.credits() < bytes {
            return false;
        }
        // Short in the shared word, not with the credits: take them back and look again.
        let locked = self.lock();
        let taken = self.reclaim_credits(&locked);
        if taken != 0 {
            // Nobody waited when we looked; a request may have queued since.
            let mut locked = locked;
            let mut batch = WakeBatch::new();
            self.grant(&mut locked, &mut batch);
            self.unlock_and_wake(locked, batch);
        } else {
            self.unlock_and_wake(locked, WakeBatch::new());
        }
        self.take_shared(bytes)
    }

    /// Takes `bytes` from the shared word if nobody waits and they are there.
    fn take_shared(&self, bytes: usize) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & WAITING != 0 || state & BYTES < bytes {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state - bytes,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// A future that takes `bytes`, waiting in FIFO order for them.
    ///
    /// `bytes` is at most the capacity (checked by the caller).
    pub(crate) fn acquire(&self, bytes: usize) -> Acquire<'_> {
        debug_assert!(bytes <= self.capacity);
        Acquire {
            budget: self,
            bytes,
            state: AcquireState::Start,
        }
    }

    /// Gives back `bytes`; never waits for the lock, never wakes anyone under it.
    ///
    /// The fast path adds them to the calling thread's credit, with no locked
    /// instruction; a credit past twice the batch goes back to the shared word down to
    /// one batch, and all of it if requests wait.
    #[inline(always)]
    pub(crate) fn release(&self, bytes: usize) {
        // Any charge the credit can keep within twice the batch goes to it (no
        // comparison with the batch first).
        if let Some(slot) = self.own_slot()
            && slot.try_enter()
        {
            let credit = slot.credit.load(Ordering::Relaxed) + bytes;
            let kept = credit <= self.credit_max;
            if kept {
                slot.credit.store(credit, Ordering::Relaxed);
            }
            // With requests waiting, this gives the whole credit to the shared word.
            self.leave_slot(slot);
            if kept {
                return;
            }
        }
        self.release_slow(bytes);
    }

    /// [`release`](Self::release) past the fast path: gives the credit beyond one batch
    /// and the bytes to the shared word.
    #[cold]
    #[inline(never)]
    fn release_slow(&self, bytes: usize) {
        let mut bytes = bytes;
        if let Some(slot) = self.own_slot() {
            slot.enter();
            let credit = slot.credit.load(Ordering::Relaxed);
            let kept = credit.min(self.batch);
            slot.credit.store(kept, Ordering::Relaxed);
            bytes += credit - kept;
            self.leave_slot(slot);
        }
        self.release_shared(bytes);
    }

    /// Adds `bytes` to the shared word, and asks for a grant pass if requests wait.
    fn release_shared(&self, bytes: usize) {
        let before = self.state.fetch_add(bytes, Ordering::Release);
        debug_assert!(
            (before & BYTES) + bytes <= self.capacity,
            "released more than was taken: {:#x} + {:#x}",
            before & BYTES,
            bytes
        );
        if before & WAITING != 0 {
            self.pump();
        }
    }

    /// Asks for a grant pass and runs it if the lock is free (cold: only with waiters).
    #[cold]
    #[inline(never)]
    fn pump(&self) {
        let before = self.state.fetch_or(PUMP, Ordering::AcqRel);
        if before & LOCKED != 0 {
            // The holder sees `PUMP` when it unlocks.
            return;
        }
        if let Some(mut locked) = self.try_lock() {
            let mut batch = WakeBatch::new();
            self.grant(&mut locked, &mut batch);
            self.unlock_and_wake(locked, batch);
        }
        // Else someone took the lock after our `fetch_or`: it sees `PUMP` at unlock.
    }

    /// Takes the lock bit if it is clear.
    fn try_lock(&self) -> Option<Locked<'_>> {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LOCKED != 0 {
                return None;
            }
            match self.state.compare_exchange_weak(
                state,
                state | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Locked { budget: self }),
                Err(now) => state = now,
            }
        }
    }

    /// Takes the lock bit, waiting for it (the waiting side only: holders keep it for a
    /// few queue operations).
    fn lock(&self) -> Locked<'_> {
        let mut spins = 0u32;
        loop {
            if let Some(locked) = self.try_lock() {
                return locked;
            }
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            crate::sync::back_off(spins);
            spins = spins.saturating_add(1);
        }
    }

    /// Releases the lock; returns whether a grant pass was asked for meanwhile.
    fn unlock(&self, locked: Locked<'_>) -> bool {
        // The guard is consumed: no queue access through it after this point.
        let Locked { budget: _ } = locked;
        self.state.fetch_and(!LOCKED, Ordering::AcqRel) & PUMP != 0
    }

    /// Releases the lock, wakes `batch`, and runs the grant passes asked for meanwhile.
    fn unlock_and_wake(&self, locked: Locked<'_>, mut batch: WakeBatch) {
        let mut again = self.unlock(locked);
        batch.wake_all();
        while again {
            let Some(mut locked) = self.try_lock() else {
                // The holder sees `PUMP` when it unlocks.
                break;
            };
            self.grant(&mut locked, &mut batch);
            again = self.unlock(locked);
            batch.wake_all();
        }
        batch.finish();
    }

    /// Serves the queue, collecting the wakers (up to a batch: then asks for another
    /// pass): first the starved requests that a source event made eligible, in ticket
    /// order (one whose bytes are short stops the pass: it is the head until frees give
    /// them back), skipping those that saw no event since their last attempt; then the
    /// head of the ordinary queue while its bytes are available. Clears `WAITING` when
    /// both are empty.
    fn grant(&self, locked: &mut Locked<'_>, batch: &mut WakeBatch) {
        self.state.fetch_and(!PUMP, Ordering::AcqRel);
        locked.with_queue(|queue| {
            if !queue.starved.is_empty() {
                // After the `AcqRel` clear above: an event whose free added its bytes to
                // the word before that clear is seen (the free's `Release` add follows
                // its count of the event); a later one sets `PUMP` again.
                let events = self.shortage.events.load(Ordering::Relaxed);
                let mut index = 0;
                while index < queue.starved.len() {
                    if queue.starved[index].seen == events {
                        // No event since its attempt: it holds up nobody.
                        index += 1;
                        continue;
                    }
                    if batch.is_full() {
                        self.state.fetch_or(PUMP, Ordering::AcqRel);
                        return;
                    }
                    if !self.take_for_grant(queue.starved[index].bytes) {
                        return;
                    }
                    let entry = queue
                        .starved
                        .remove(index)
                        .expect("the entry was just seen");
                    if let Some(waker) = entry.waker {
                        batch.push(waker);
                    }
                }
            }
            loop {
                let Some(head) = queue.entries.front() else {
                    if queue.starved.is_empty() {
                        self.state.fetch_and(!WAITING, Ordering::AcqRel);
                    }
                    return;
                };
                if batch.is_full() {
                    self.state.fetch_or(PUMP, Ordering::AcqRel);
                    return;
                }
                if !self.take_for_grant(head.bytes) {
                    return;
                }
                let entry = queue.entries.pop_front().expect("the head was just seen");
                queue.last_granted = entry.ticket;
                if let Some(waker) = entry.waker {
                    batch.push(waker);
                }
            }
        });
    }

    /// Takes `bytes` from the shared word for a grant, if they are there (under the lock).
    fn take_for_grant(&self, bytes: usize) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & BYTES < bytes {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state - bytes,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Gives back `bytes` of a free that gave its memory back to the source (`free` is
    /// told whether a request is starved: it should then put the memory where an
    /// attempt finds it, past the caches). Outside a shortage this is `free` and
    /// [`release`](Self::release); during one, the bytes and a source event go to the
    /// shared word (see [`supply`](Self::supply)).
    #[inline(always)]
    pub(crate) fn free_then_release(&self, bytes: usize, free: impl FnOnce(bool)) {
        let short = self.shortage.starved.load(Ordering::Relaxed) != 0;
        free(short);
        // A second look, after the memory is back: a request that became starved meanwhile
        // and whose attempt came after this free in the lock that both took (a class
        // lock, the source's) is seen now, and counted the events before this one.
        if short || self.shortage.starved.load(Ordering::Relaxed) != 0 {
            self.release_after_source_free(bytes);
        } else {
            self.release(bytes);
        }
    }

    /// [`free_then_release`](Self::free_then_release) during a shortage: counts a source
    /// event, then adds the bytes to the shared word (never to a credit: the event rides
    /// on that add) and asks for a grant pass.
    #[cold]
    #[inline(never)]
    fn release_after_source_free(&self, bytes: usize) {
        self.shortage.events.fetch_add(1, Ordering::Relaxed);
        // `Release`: a grant pass whose `AcqRel` clear of `PUMP` comes after this add in
        // the word's order sees the event; one before it is followed by the pump below.
        let before = self.state.fetch_add(bytes, Ordering::Release);
        debug_assert!(
            (before & BYTES) + bytes <= self.capacity,
            "released more than was taken: {:#x} + {:#x}",
            before & BYTES,
            bytes
        );
        self.pump();
    }

    /// The source events counted so far (each a return of memory made while a request
    /// was starved).
    pub(crate) fn source_events(&self) -> u64 {
        self.shortage.events.load(Ordering::Acquire)
    }

    /// Counts a source event for memory that went back to the source, or to where an
    /// attempt finds it, other than by a free of the heap (empty slabs released by a trim
    /// or a decay pass, an exiting thread's magazines taken back), if a request is
    /// starved. Wakes nobody (it may run under a cache's lock): the next
    /// [`announce`](Self::announce) asks for the grant pass. Like a free, it must come
    /// after the return in a lock that an attempt takes too (the cache's, the source's),
    /// so that an attempt it missed counted itself starved before.
    pub(crate) fn note_source_return(&self) {
        if self.shortage.starved.load(Ordering::Relaxed) != 0 {
            self.shortage.events.fetch_add(1, Ordering::Relaxed);
            // `Release`: whoever takes the flag sees the event counted.
            self.shortage.noted.store(true, Ordering::Release);
        }
    }

    /// Asks for a grant pass (and runs it if the queue's lock is free), waking the
    /// starved requests that events [noted](Self::note_source_return) since the last
    /// one made eligible. One relaxed load when nothing was noted. Call it outside every
    /// lock of the heap.
    ///
    /// # Panics
    /// If a waker it runs panics (re-raised as a free does, after every other wake).
    #[inline(always)]
    pub(crate) fn announce(&self) {
        if self.shortage.noted.load(Ordering::Relaxed) {
            self.announce_noted();
        }
    }

    /// [`announce`](Self::announce) past its look at the flag.
    #[cold]
    #[inline(never)]
    fn announce_noted(&self) {
        // `Acquire` with the noter's `Release`, and the pump's `AcqRel` `fetch_or` after
        // it: a grant pass that clears `PUMP` after that sees the events.
        if self.shortage.noted.swap(false, Ordering::Acquire) {
            self.pump();
        }
    }

    /// Serves a request whose `bytes` are taken from the budget but whose memory the
    /// source could not supply: runs `attempt` (with the bytes held), and after each
    /// failure gives the bytes back and waits, as a starved request, for a source event
    /// (a free made while a request is starved) since that attempt; then takes its bytes
    /// back (ahead of the ordinary queue) and tries again. Resolves to the first
    /// successful attempt's value, with the bytes taken.
    ///
    /// A starved request that saw no event since its last attempt holds up nobody; an
    /// eligible one whose bytes are short is the head of the queue until frees give them
    /// back. Dropped, it gives back the bytes it holds (none while registered, as they are
    /// in the word then). If `attempt` panics, the bytes go back.
    ///
    /// No wake-up is lost: the request counts itself starved before its attempt, and
    /// reads the events before it; a free that gave back memory the attempt could not
    /// see came after the attempt in a lock both took, so it sees the count and adds an
    /// event the request did not read. That event reaches the word with the free's bytes
    /// in one `Release` add, which the registration's compare-and-swap or a later grant
    /// pass reads (the same argument as for bytes, module docs).
    pub(crate) async fn supply<T>(
        &self,
        bytes: usize,
        mut attempt: impl FnMut() -> Option<T>,
    ) -> T {
        debug_assert!(bytes != 0 && bytes <= self.capacity);
        let _starved = StarvedCount::new(self);
        let mut ticket = None;
        loop {
            let held = Held {
                budget: self,
                bytes,
            };
            let seen = self.shortage.events.load(Ordering::Relaxed);
            if let Some(value) = attempt() {
                // The bytes are the value's charge now.
                core::mem::forget(held);
                return value;
            }
            // The registration takes the bytes over.
            core::mem::forget(held);
            let wait = self.wait_for_source(bytes, seen, ticket);
            if let AcquireState::Starved(starved) = wait.state {
                ticket = Some(starved);
            }
            wait.await;
        }
    }

    /// Registers a starved request of `bytes` whose last attempt came after `seen`
    /// events (with its old `ticket` on a retry): gives its bytes to the shared word and
    /// queues it, in one step under the lock, then runs a grant pass (an event may have
    /// come since the attempt). The future resolves when the request is granted its
    /// bytes again.
    fn wait_for_source(&self, bytes: usize, seen: u64, ticket: Option<u64>) -> Acquire<'_> {
        let mut locked = self.lock();
        let ticket = locked.with_queue(|queue| {
            // The bytes and `WAITING` in one step: a free after it sees `WAITING`.
            let mut state = self.state.load(Ordering::Relaxed);
            loop {
                match self.state.compare_exchange_weak(
                    state,
                    (state + bytes) | WAITING,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => state = now,
                }
            }
            debug_assert!((state & BYTES) + bytes <= self.capacity);
            let ticket = ticket.unwrap_or_else(|| {
                let ticket = queue.next_starved_ticket;
                queue.next_starved_ticket += 1;
                ticket
            });
            let position = queue
                .starved_position(ticket)
                .expect_err("a starved request is registered once at a time");
            queue.starved.insert(
                position,
                StarvedEntry {
                    ticket,
                    bytes,
                    seen,
                    waker: None,
                },
            );
            ticket
        });
        let mut batch = WakeBatch::new();
        self.grant(&mut locked, &mut batch);
        // Registered (granted or not): from here on, dropping the request leaves the list
        // or gives the bytes back, even if the wake below panics.
        let wait = Acquire {
            budget: self,
            bytes,
            state: AcquireState::Starved(ticket),
        };
        let woken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.unlock_and_wake(locked, batch)
        }));
        if let Err(payload) = woken {
            // The second panic, if any, is the same kind: the first is raised.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(wait)));
            std::panic::resume_unwind(payload);
        }
        wait
    }
}

/// Counts a request in [`Shortage::starved`] for its life.
struct StarvedCount<'a> {
    budget: &'a Budget,
}

impl<'a> StarvedCount<'a> {
    fn new(budget: &'a Budget) -> Self {
        budget.shortage.starved.fetch_add(1, Ordering::Relaxed);
        StarvedCount { budget }
    }
}

impl Drop for StarvedCount<'_> {
    fn drop(&mut self) {
        self.budget.shortage.starved.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes a starved request holds during its attempt: given back if the attempt unwinds.
struct Held<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Where an [`Acquire`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcquireState {
    /// Not polled yet.
    Start,
    /// Queued with this ticket.
    Waiting(u64),
    /// Registered as a starved request with this ticket (see [`Budget::supply`]).
    Starved(u64),
    /// The bytes were handed to the caller.
    Done,
}

/// A request for bytes of a [`Budget`]: resolves once they are taken. Dropped before,
/// it leaves the queue, and gives back the bytes if it had been served.
#[must_use = "a request does nothing unless polled"]
pub(crate) struct Acquire<'a> {
    budget: &'a Budget,
    bytes: usize,
    state: AcquireState,
}

impl fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("bytes", &self.bytes)
            .field("state", &self.state)
            .finish()
    }
}

impl Future for Acquire<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let budget = this.budget;
        match this.state {
            AcquireState::Done => Poll::Ready(()),
            AcquireState::Start => {
                if budget.try_acquire(this.bytes) {
                    this.state = AcquireState::Done;
                    return Poll::Ready(());
                }
                // Cloned before the lock is taken: a clone is the executor's code.
                let waker = cx.waker().clone();
                let mut locked = budget.lock();
                let bytes = this.bytes;
                // Bytes short in the shared word may sit in idle threads' credits.
                let mut reclaimed = 0;
                let shared = budget.state.load(Ordering::Relaxed) & BYTES;
                if shared < bytes && shared + budget.credits() >= bytes {
                    reclaimed += budget.reclaim_credits(&locked);
                }
                let enqueued = locked.with_queue(|queue| {
                    // Look at the bytes and register in one step: either they are taken
                    // now (nobody queued) or `WAITING` is set, which every later free sees.
                    let mut state = budget.state.load(Ordering::Relaxed);
                    loop {
                        let take = queue.entries.is_empty()
                            && queue.starved.is_empty()
                            && state & BYTES >= bytes;
                        let next = if take { state - bytes } else { state | WAITING };
                        match budget.state.compare_exchange_weak(
                            state,
                            next,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        ) {
                            Ok(_) if take => return None,
                            Ok(_) => break,
                            Err(now) => state = now,
                        }
                    }
                    let ticket = queue.next_ticket;
                    queue.next_ticket += 1;
                    queue.entries.push_back(Entry {
                        ticket,
                        bytes,
                        waker: Some(waker),
                    });
                    Some(ticket)
                });
                let mut batch = WakeBatch::new();
                let mut granted = false;
                if let Some(ticket) = enqueued {
                    // `WAITING` is set: no thread takes a new credit from now on, and
                    // those in their slots give theirs when they leave. Take the others.
                    reclaimed += budget.reclaim_credits(&locked);
                    // Starved requests that saw no event hold up nobody: serve this one
                    // past them if its bytes are there.
                    let starved = locked.with_queue(|queue| !queue.starved.is_empty());
                    if reclaimed != 0 || starved {
                        budget.grant(&mut locked, &mut batch);
                        granted = locked.with_queue(|queue| queue.last_granted >= ticket);
                    }
                }
                #[cfg(all(test, not(loom)))]
                if let Some(hook) = tests::BEFORE_START_UNLOCK.with(std::cell::Cell::take) {
                    hook(budget);
                }
                // Queued (granted or not): from here on, dropping the request leaves the
                // queue or gives the bytes back, even if the wake below panics.
                if let Some(ticket) = enqueued {
                    this.state = AcquireState::Waiting(ticket);
                }
                // A free may have asked for a pass meanwhile. Its wakes may re-raise a
                // waiter's waker panic: bytes taken directly then go back, since the
                // caller never sees them.
                let woken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    budget.unlock_and_wake(locked, batch)
                }));
                if let Err(payload) = woken {
                    if enqueued.is_none() {
                        // The second panic, if any, is the same kind: the first is raised.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            budget.release(bytes)
                        }));
                    }
                    std::panic::resume_unwind(payload);
                }
                match enqueued {
                    Some(_) if !granted => Poll::Pending,
                    _ => {
                        this.state = AcquireState::Done;
                        Poll::Ready(())
                    }
                }
            }
            AcquireState::Starved(ticket) => {
                let waker = cx.waker().clone();
                let mut locked = budget.lock();
                let (granted, old) =
                    locked.with_queue(|queue| match queue.starved_position(ticket) {
                        // Entries leave only when granted or dropped.
                        Err(_) => (true, Some(waker)),
                        Ok(position) => (false, queue.starved[position].waker.replace(waker)),
                    });
                budget.unlock_and_wake(locked, WakeBatch::new());
                // The replaced waker is dropped outside the lock.
                drop(old);
                if granted {
                    this.state = AcquireState::Done;
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            AcquireState::Waiting(ticket) => {
                let waker = cx.waker().clone();
                let mut locked = budget.lock();
                let (granted, old) = locked.with_queue(|queue| {
                    if queue.last_granted >= ticket {
                        (true, Some(waker))
                    } else {
                        let position = queue.position(ticket).expect("a waiter is queued");
                        (false, queue.entries[position].waker.replace(waker))
                    }
                });
                budget.unlock_and_wake(locked, WakeBatch::new());
                // The replaced waker is dropped outside the lock.
                drop(old);
                if granted {
                    this.state = AcquireState::Done;
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let budget = self.budget;
        let ticket = match self.state {
            AcquireState::Waiting(ticket) => ticket,
            AcquireState::Starved(ticket) => {
                let mut locked = budget.lock();
                let mut batch = WakeBatch::new();
                let removed = locked.with_queue(|queue| match queue.starved_position(ticket) {
                    // Its bytes are in the word already.
                    Ok(position) => queue.starved.remove(position).and_then(|entry| entry.waker),
                    Err(_) => {
                        // Granted but never told: give the bytes back.
                        budget.state.fetch_add(self.bytes, Ordering::Release);
                        None
                    }
                });
                budget.grant(&mut locked, &mut batch);
                budget.unlock_and_wake(locked, batch);
                drop(removed);
                return;
            }
            AcquireState::Start | AcquireState::Done => return,
        };
        let mut locked = budget.lock();
        let mut batch = WakeBatch::new();
        let removed = locked.with_queue(|queue| {
            if queue.last_granted >= ticket {
                // Served but never told: give the bytes back.
                budget.state.fetch_add(self.bytes, Ordering::Release);
                None
            } else {
                let position = queue.position(ticket).expect("a waiter is queued");
                let entry = queue.entries.remove(position).expect("found above");
                Some(entry.waker)
            }
        });
        // The head may have changed, or bytes come back: serve who fits now.
        budget.grant(&mut locked, &mut batch);
        budget.unlock_and_wake(locked, batch);
        drop(removed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::task::Wake;

    std::thread_local! {
        /// Run by a request's first poll with the queue's lock held, just before it
        /// unlocks (and serves what frees asked for meanwhile).
        pub(super) static BEFORE_START_UNLOCK: std::cell::Cell<Option<fn(&Budget)>> =
            const { std::cell::Cell::new(None) };
    }

    struct PanickingWaker;

    impl Wake for PanickingWaker {
        fn wake(self: Arc<Self>) {
            panic!("a waiter's waker panics");
        }
    }

    /// A request's first poll queues it, and its unlock then serves a waiter ahead of it
    /// (a free landed while the lock was held) whose waker panics. The request must be
    /// queued as far as its drop is concerned: it used to stay at its start, so its drop
    /// left its entry in the queue, and the bytes later granted to it were lost.
    #[test]
    fn a_first_poll_whose_unlock_panics_leaves_no_entry_behind() {
        let budget = Budget::with_batch(64, 0);
        assert!(budget.try_acquire(64));
        let panicking = Waker::from(Arc::new(PanickingWaker));
        let mut ahead = Box::pin(budget.acquire(32));
        assert!(
            ahead
                .as_mut()
                .poll(&mut Context::from_waker(&panicking))
                .is_pending()
        );
        BEFORE_START_UNLOCK.with(|hook| hook.set(Some(|budget| budget.release(32))));
        let mut behind = Box::pin(budget.acquire(16));
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            behind
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        }));
        assert!(polled.is_err(), "the waker's panic comes out of the poll");
        drop(behind);
        drop(ahead);
        budget.release(32);
        assert_eq!(budget.waiters(), 0, "no entry left in the queue");
        assert_eq!(budget.available(), 64, "every byte came back");
    }

    struct Counter(StdAtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The seed's lost wake-up: a free landing while a waiter is between its look at the
    /// bytes and its registration. Here that window is the queue's lock, held by the
    /// waiter: the free must not wait for it, and the holder must serve the waiter when
    /// it unlocks.
    #[test]
    fn free_while_the_lock_is_held_is_handed_to_the_holder() {
        let budget = Budget::new(4);
        assert!(budget.try_acquire(4));
        let counter = Arc::new(Counter(StdAtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut request = budget.acquire(2);
        assert!(
            Pin::new(&mut request)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let locked = budget.lock();
        // Returns at once although the lock is held, leaving the grant to the holder.
        budget.release(2);
        assert_ne!(budget.state.load(Ordering::SeqCst) & PUMP, 0);
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "woken under the lock");
        budget.unlock_and_wake(locked, WakeBatch::new());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the wake-up was lost");
        assert!(
            Pin::new(&mut request)
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
        );
        assert_eq!(
            budget.state.load(Ordering::SeqCst),
            0,
            "granted, nobody waits"
        );
    }

    /// A waker that panics when woken does not stop the others of its batch.
    #[test]
    fn a_panicking_waker_leaves_no_granted_waiter_unwoken() {
        struct Panics;
        impl Wake for Panics {
            fn wake(self: Arc<Self>) {
                panic!("a waker that panics");
            }
        }
        let budget = Budget::new(2);
        assert!(budget.try_acquire(2));
        let panicking = Waker::from(Arc::new(Panics));
        let counter = Arc::new(Counter(StdAtomicUsize::new(0)));
        let counting = Waker::from(counter.clone());
        let mut first = budget.acquire(1);
        let mut second = budget.acquire(1);
        assert!(
            Pin::new(&mut first)
                .poll(&mut Context::from_waker(&panicking))
                .is_pending()
        );
        assert!(
            Pin::new(&mut second)
                .poll(&mut Context::from_waker(&counting))
                .is_pending()
        );
        let freed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| budget.release(2)));
        assert!(
            freed.is_err(),
            "the waker's panic reaches the freeing thread"
        );
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the second waiter was not woken"
        );
        assert_eq!(budget.available(), 0);
        drop((first, second));
        assert_eq!(budget.available(), 2);
    }

    /// Found by a review: a waker that panicked in the first batch of a free stopped the
    /// grant passes after it, stranding waiters that fit; and two panicking wakers
    /// served by one free aborted the process (the second panicked while the first
    /// unwound).
    #[test]
    fn panicking_wakers_strand_no_waiter_and_never_abort() {
        struct Panics;
        impl Wake for Panics {
            fn wake(self: Arc<Self>) {
                panic!("a waker that panics");
            }
        }
        let waiters = 2 * WAKE_BATCH + 3;
        let budget = Budget::new(waiters);
        assert!(budget.try_acquire(waiters));
        let panicking = Waker::from(Arc::new(Panics));
        let counter = Arc::new(Counter(StdAtomicUsize::new(0)));
        let counting = Waker::from(counter.clone());
        let mut requests: Vec<_> = (0..waiters).map(|_| budget.acquire(1)).collect();
        for (index, request) in requests.iter_mut().enumerate() {
            // The first two, and one in the second batch, panic when woken.
            let waker = if index < 2 || index == WAKE_BATCH + 1 {
                &panicking
            } else {
                &counting
            };
            assert!(
                Pin::new(request)
                    .poll(&mut Context::from_waker(waker))
                    .is_pending()
            );
        }
        let freed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| budget.release(waiters)));
        assert!(
            freed.is_err(),
            "the first waker's panic reaches the freeing thread"
        );
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            waiters - 3,
            "every waiter that fits was granted and woken"
        );
        assert_eq!((budget.available(), budget.waiters()), (0, 0));
        for request in &mut requests {
            assert!(
                Pin::new(request)
                    .poll(&mut Context::from_waker(&counting))
                    .is_ready()
            );
        }
    }

    /// A starved request that saw no event holds up nobody (an ordinary request made
    /// after it is served with the bytes in the word); once an event makes it eligible
    /// it is the head: an ordinary waiter whose bytes are there waits behind it until
    /// frees make up the starved request's bytes.
    #[test]
    fn an_eligible_starved_request_is_the_head_an_ineligible_one_is_not() {
        let budget = Budget::with_batch(4, 0);
        let supplied = std::cell::Cell::new(false);
        assert!(budget.try_acquire(1));
        assert!(budget.try_acquire(1));
        assert!(budget.try_acquire(2));
        let mut starved = Box::pin(budget.supply(2, || supplied.get().then_some(())));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(starved.as_mut().poll(&mut cx).is_pending());
        let mut first = budget.acquire(2);
        assert!(
            Pin::new(&mut first).poll(&mut cx).is_ready(),
            "held up by a starved request that saw no event"
        );
        let mut second = budget.acquire(1);
        assert!(Pin::new(&mut second).poll(&mut cx).is_pending());
        supplied.set(true);
        // An event with 1 byte: the starved request is eligible and short.
        budget.free_then_release(1, |starved| assert!(starved));
        assert_eq!(budget.available(), 1);
        assert!(
            Pin::new(&mut second).poll(&mut cx).is_pending(),
            "the ordinary waiter overtook an eligible starved request"
        );
        // The first's block is freed: the starved request's bytes are there, then the
        // waiter's.
        budget.release(2);
        assert!(starved.as_mut().poll(&mut cx).is_ready());
        assert!(Pin::new(&mut second).poll(&mut cx).is_ready());
        drop((starved, first, second));
        // The starved request's, the second's and the one block left of the first two.
        budget.release(2 + 1 + 1);
        assert_eq!((budget.available(), budget.waiters()), (4, 0));
        assert_eq!(budget.shortage.starved.load(Ordering::Relaxed), 0);
    }

    /// More waiters than a wake batch are all served by one free.
    #[test]
    fn one_free_serves_more_waiters_than_a_batch() {
        let budget = Budget::new(64);
        assert!(budget.try_acquire(64));
        let counter = Arc::new(Counter(StdAtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut requests: Vec<_> = (0..3 * WAKE_BATCH).map(|_| budget.acquire(1)).collect();
        for request in &mut requests {
            assert!(
                Pin::new(request)
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
        }
        budget.release(64);
        assert_eq!(counter.0.load(Ordering::SeqCst), 3 * WAKE_BATCH);
        assert_eq!(budget.available(), 64 - 3 * WAKE_BATCH);
        for request in &mut requests {
            assert!(
                Pin::new(request)
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
            );
        }
    }

    /// The bytes in the calling thread's slot of `budget` (0 if it owns none).
    fn own_credit(budget: &Budget) -> usize {
        budget
            .own_slot()
            .map_or(0, |slot| slot.credit.load(Ordering::Relaxed))
    }

    /// One thread using two budgets in turn: each request and free goes to the credit
    /// of its own budget, whichever budget the thread used last (the thread's note of
    /// its slot names one budget at a time).
    #[test]
    fn a_thread_using_two_budgets_in_turn_keeps_their_credits_apart() {
        let first = Budget::with_batch(1 << 20, 4096);
        let second = Budget::with_batch(1 << 20, 4096);
        for _ in 0..3 {
            assert!(first.try_acquire(64));
            assert!(second.try_acquire(128));
            first.release(64);
            second.release(128);
        }
        assert!(first.try_acquire(64));
        assert!(second.try_acquire(128));
        assert_eq!(own_credit(&first), 4096 - 64);
        assert_eq!(own_credit(&second), 4096 - 128);
        assert_eq!(first.available(), (1 << 20) - 64);
        assert_eq!(second.available(), (1 << 20) - 128);
        second.release(128);
        first.release(64);
        assert_eq!(own_credit(&first), 4096);
        assert_eq!(own_credit(&second), 4096);
        assert_eq!(first.available(), 1 << 20);
        assert_eq!(second.available(), 1 << 20);
    }

    /// A budget made after the thread's last used one is dropped (possibly at the same
    /// address) does not take the dropped one's slot for the thread's own.
    #[test]
    fn a_new_budget_does_not_take_a_dropped_ones_slot() {
        for _ in 0..3 {
            let budget = Box::new(Budget::with_batch(1 << 20, 4096));
            assert_eq!(own_credit(&budget), 0);
            assert!(budget.try_acquire(64));
            assert_eq!(own_credit(&budget), 4096 - 64);
            budget.release(64);
            assert_eq!(budget.available(), 1 << 20);
        }
    }
}

/// Loom models of the hand-offs between waiting, granting, cancelling and freeing.
/// Run with `CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom"
/// CARGO_PROFILE_RELEASE_LTO=false LOOM_MAX_PREEMPTIONS=2 cargo test -p pagekeep-slab
/// --release --lib loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    /// Unparks a loom thread.
    struct Unparker(loom::thread::Thread);

    impl std::task::Wake for Unparker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Runs `future` on this loom thread, parking between polls: a lost wake-up leaves
    /// it parked forever, which loom reports as a deadlock.
    fn block_on<F: Future>(future: F) -> F::Output {
        let waker = Waker::from(std::sync::Arc::new(Unparker(loom::thread::current())));
        let mut future = core::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(&waker)) {
                return output;
            }
            loom::thread::park();
        }
    }

    /// Polls `future` once with a waker that does nothing.
    fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(future).poll(&mut cx)
    }

    /// A waiter queued behind a full budget is woken by a free from another thread,
    /// whatever the interleaving (the free may land before, during or after its
    /// registration): `block_on` would hang (loom reports a deadlock) if the wake-up
    /// were lost.
    #[test]
    fn free_wakes_a_waiter() {
        loom::model(|| {
            let budget = Arc::new(Budget::new(4));
            assert!(budget.try_acquire(4));
            let freer = {
                let budget = budget.clone();
                loom::thread::spawn(move || budget.release(3))
            };
            block_on(budget.acquire(3));
            freer.join().unwrap();
            assert_eq!(budget.available(), 0);
            budget.release(4);
            assert_eq!(budget.available(), 4);
        });
    }

    /// Two waiters and two frees on three threads: both waiters are served, in order,
    /// and the bytes add up.
    #[test]
    fn two_waiters_two_frees() {
        loom::model(|| {
            let budget = Arc::new(Budget::new(2));
            assert!(budget.try_acquire(2));
            let waiter = {
                let budget = budget.clone();
                loom::thread::spawn(move || {
                    block_on(budget.acquire(1));
                })
            };
            let freer = {
                let budget = budget.clone();
                loom::thread::spawn(move || {
                    budget.release(1);
                    budget.release(1);
                })
            };
            block_on(budget.acquire(1));
            waiter.join().unwrap();
            freer.join().unwrap();
            assert_eq!(budget.available(), 0);
            assert_eq!(budget.state.load(Ordering::Relaxed) & (WAITING | LOCKED), 0);
        });
    }

    /// A waiter cancelled while a free races to serve it: either it was served and the
    /// bytes come back through its drop, or it left the queue first (or took the bytes
    /// at once and gave them back, as their owner would); nothing leaks and the budget
    /// is left unlocked with no waiter.
    #[test]
    fn cancel_races_a_free() {
        loom::model(|| {
            let budget = Arc::new(Budget::new(2));
            assert!(budget.try_acquire(2));
            let canceller = {
                let budget = budget.clone();
                loom::thread::spawn(move || {
                    let mut request = budget.acquire(2);
                    if poll_once(&mut request).is_ready() {
                        drop(request);
                        budget.release(2);
                    } else {
                        drop(request);
                    }
                })
            };
            budget.release(2);
            canceller.join().unwrap();
            assert_eq!(budget.available(), 2);
            assert_eq!(budget.state.load(Ordering::Relaxed) & (WAITING | LOCKED), 0);
            assert!(budget.try_acquire(2));
        });
    }

    /// A big waiter at the head is not overtaken: a small request made after it waits,
    /// even though its bytes are there, and the free that fills the head serves it.
    #[test]
    fn big_head_is_not_overtaken() {
        loom::model(|| {
            let budget = Arc::new(Budget::new(4));
            assert!(budget.try_acquire(3));
            let mut big = budget.acquire(4);
            assert!(poll_once(&mut big).is_pending());
            assert!(
                !budget.try_acquire(1),
                "the small request overtook the head"
            );
            let freer = {
                let budget = budget.clone();
                loom::thread::spawn(move || budget.release(3))
            };
            block_on(big);
            freer.join().unwrap();
            assert_eq!(budget.available(), 0);
        });
    }
    /// Credit flush against waiter registration: a thread serves a request and a free
    /// from its credit while another registers a request for the whole capacity, which
    /// only that credit can make up. Whatever the interleaving (the owner inside its
    /// slot while the pass looks, or out of it; the free before or after the
    /// registration), the waiter is served (`block_on` would hang, and loom report a
    /// deadlock, on a lost wake-up) and the bytes add up.
    #[test]
    fn credit_flush_races_a_waiter() {
        loom::model(|| {
            let budget = Arc::new(Budget::with_batch(4, 2));
            let owner = {
                let budget = budget.clone();
                loom::thread::spawn(move || {
                    if budget.try_acquire(1) {
                        budget.release(1);
                    }
                })
            };
            block_on(budget.acquire(4));
            owner.join().unwrap();
            assert_eq!(budget.available(), 0);
            budget.release(4);
            assert_eq!(budget.available(), 4);
            assert_eq!(budget.state.load(Ordering::Relaxed) & (WAITING | LOCKED), 0);
        });
    }

    /// Two threads allocate from their credits while a third waits for what they
    /// leave: the live bytes never exceed the capacity, the waiter is served, and at the
    /// end every byte is back.
    #[test]
    fn credits_never_exceed_the_capacity() {
        loom::model(|| {
            let budget = Arc::new(Budget::with_batch(3, 1));
            let live = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let spawn_user = || {
                let (budget, live) = (budget.clone(), live.clone());
                loom::thread::spawn(move || {
                    if budget.try_acquire(1) {
                        let before = live.fetch_add(1, Ordering::SeqCst);
                        assert!(before < 3, "over capacity");
                        live.fetch_sub(1, Ordering::SeqCst);
                        budget.release(1);
                    }
                })
            };
            let users = [spawn_user(), spawn_user()];
            block_on(budget.acquire(3));
            let before = live.fetch_add(3, Ordering::SeqCst);
            assert_eq!(before, 0, "over capacity");
            live.fetch_sub(3, Ordering::SeqCst);
            budget.release(3);
            for user in users {
                user.join().unwrap();
            }
            assert_eq!(budget.available(), 3);
        });
    }

    /// The source of the starved-request models: `units` free blocks behind a mutex (the
    /// class lock and the region's mutex that a real attempt and a real free both take).
    fn take_unit(units: &loom::sync::Mutex<usize>) -> Option<()> {
        let mut units = units.lock().unwrap();
        (*units > 0).then(|| *units -= 1)
    }

    /// The flags, both lists and the starved count are clear.
    fn assert_quiet(budget: &Budget) {
        assert_eq!(
            budget.state.load(Ordering::Relaxed) & (WAITING | LOCKED | PUMP),
            0
        );
        assert_eq!(budget.shortage.starved.load(Ordering::Relaxed), 0);
        assert_eq!(budget.waiters(), 0);
    }

    /// A request whose source is empty and a free that gives a block back to it, from
    /// another thread: the free may land before the request counts itself starved,
    /// between that and its attempt, between its attempt and its registration, or after
    /// it. The request always completes (`block_on` would hang, and loom report a
    /// deadlock, on a lost event) and the bytes add up.
    fn a_source_free_wakes_a_starved_request_with(batch: usize) {
        loom::model(move || {
            let budget = Arc::new(Budget::with_batch(4, batch));
            let units = Arc::new(loom::sync::Mutex::new(0usize));
            // The block the free gives back.
            assert!(budget.try_acquire(2));
            let freer = {
                let (budget, units) = (budget.clone(), units.clone());
                loom::thread::spawn(move || {
                    budget.free_then_release(2, |_| *units.lock().unwrap() += 1)
                })
            };
            block_on(async {
                assert!(budget.try_acquire(2));
                budget.supply(2, || take_unit(&units)).await
            });
            freer.join().unwrap();
            assert_eq!(budget.available(), 2);
            budget.release(2);
            assert_eq!(budget.available(), 4);
            assert_quiet(&budget);
        });
    }

    #[test]
    fn a_source_free_wakes_a_starved_request() {
        a_source_free_wakes_a_starved_request_with(0);
    }

    /// As above with credits: the free's bytes, when it sees no starved request, go to
    /// its thread's credit, not the shared word.
    #[test]
    fn a_source_free_wakes_a_starved_request_with_credits() {
        a_source_free_wakes_a_starved_request_with(2);
    }

    /// A starved request polled once and dropped while a free races it: whether it was
    /// served (its bytes are then given back as their owner would), granted and never
    /// told, or still registered, nothing leaks and the budget is left quiet.
    #[test]
    fn a_cancelled_starved_request_leaks_nothing() {
        loom::model(|| {
            let budget = Arc::new(Budget::new(4));
            let units = Arc::new(loom::sync::Mutex::new(0usize));
            assert!(budget.try_acquire(2));
            let waiter = {
                let (budget, units) = (budget.clone(), units.clone());
                loom::thread::spawn(move || {
                    assert!(budget.try_acquire(2));
                    let mut request = Box::pin(budget.supply(2, || take_unit(&units)));
                    if poll_once(&mut request).is_ready() {
                        drop(request);
                        // The block it got goes back.
                        budget.free_then_release(2, |_| *units.lock().unwrap() += 1);
                    } else {
                        drop(request);
                    }
                })
            };
            budget.free_then_release(2, |_| *units.lock().unwrap() += 1);
            waiter.join().unwrap();
            assert_eq!(budget.available(), 4);
            assert_quiet(&budget);
            assert!(budget.try_acquire(4));
        });
    }

    /// Two starved requests and one free that gives back two blocks: that one event
    /// serves both (a pass that let only one retry would leave the other parked).
    #[test]
    fn one_free_serves_every_starved_request() {
        loom::model(|| {
            let budget = Arc::new(Budget::with_batch(4, 0));
            let units = Arc::new(loom::sync::Mutex::new(0usize));
            // The two blocks the free gives back.
            assert!(budget.try_acquire(2));
            let spawn_starved = || {
                let (budget, units) = (budget.clone(), units.clone());
                loom::thread::spawn(move || {
                    block_on(async {
                        // Not `try_acquire`: it fails while the other request is starved
                        // (someone waits); a request past a starved one is served.
                        budget.acquire(1).await;
                        budget.supply(1, || take_unit(&units)).await
                    });
                    budget.release(1);
                })
            };
            let starved = [spawn_starved(), spawn_starved()];
            budget.free_then_release(2, |_| *units.lock().unwrap() += 2);
            for thread in starved {
                thread.join().unwrap();
            }
            assert_eq!(budget.available(), 4);
            assert_quiet(&budget);
        });
    }

    /// A starved request and a return of memory to the source that is no free of the
    /// heap (a trim releasing an emptied slab, an exiting thread's magazines going back),
    /// from another thread: counted by `note_source_return` after the return (under the
    /// lock the attempt takes too) and announced after. The return may land before the
    /// request counts itself starved, between that and its attempt, between its attempt
    /// and its registration, or after it; the request always completes (before the fix
    /// such a return was no event, and the request, once registered, waited for good).
    #[test]
    fn a_return_outside_a_free_wakes_a_starved_request() {
        loom::model(|| {
            let budget = Arc::new(Budget::with_batch(4, 0));
            let units = Arc::new(loom::sync::Mutex::new(0usize));
            let returner = {
                let (budget, units) = (budget.clone(), units.clone());
                loom::thread::spawn(move || {
                    *units.lock().unwrap() += 1;
                    budget.note_source_return();
                    budget.announce();
                })
            };
            block_on(async {
                assert!(budget.try_acquire(2));
                budget.supply(2, || take_unit(&units)).await
            });
            returner.join().unwrap();
            budget.release(2);
            assert_eq!(budget.available(), 4);
            assert_quiet(&budget);
        });
    }

    /// A starved request that saw no event holds up nobody: an ordinary request made
    /// after it is served with the bytes in the word, with no free; then a free serves
    /// the starved one.
    #[test]
    fn an_ordinary_request_is_not_held_by_a_starved_one() {
        loom::model(|| {
            let budget = Arc::new(Budget::with_batch(4, 0));
            let units = Arc::new(loom::sync::Mutex::new(0usize));
            // The block the free gives back at the end.
            assert!(budget.try_acquire(1));
            assert!(budget.try_acquire(2));
            let mut starved = Box::pin(budget.supply(2, || take_unit(&units)));
            assert!(poll_once(&mut starved).is_pending());
            let ordinary = {
                let budget = budget.clone();
                loom::thread::spawn(move || {
                    block_on(budget.acquire(1));
                    budget.release(1);
                })
            };
            ordinary.join().unwrap();
            budget.free_then_release(1, |_| *units.lock().unwrap() += 1);
            assert!(poll_once(&mut starved).is_ready());
            drop(starved);
            budget.release(2);
            assert_eq!(budget.available(), 4);
            assert_quiet(&budget);
        });
    }
}
