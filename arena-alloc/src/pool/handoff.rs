//! Waiting for an arena, and the hand-off of free arenas to waiters.
//!
//! # Safety (no lost grant, no user code inside the allocator)
//!
//! Free arenas sit on a lock-free stack ([`FreeStack`](crate::free_stack::FreeStack)):
//! while nobody waits, acquiring and releasing an arena is one compare-and-swap each. The
//! pool's lock guards a FIFO queue of waiters. A waiter registers (bumping `waiting`) and
//! only then tries the stack; a releaser pushes and only then reads `waiting`. With
//! `SeqCst` fences on both sides, either the waiter sees the arena or the releaser sees
//! the waiter, and then the releaser makes sure the arena is handed on (below).
//!
//! A release outside the allocator takes the lock and grants arenas to waiters in order.
//! A free on the routing path (inside `GlobalAlloc::dealloc`) that recycles an arena must
//! neither wait for the lock nor call a `Waker`. It *flags* the arena in the hand-off
//! word `PoolCore::handoff`, which holds a `PENDING` bit and the number of counted
//! *holders*: every thread counts itself a holder (an atomic add) before it takes the
//! lock, and leaves the count (an atomic subtraction) only after it has dropped the lock.
//! All changes of the word are read-modify-writes, so they are totally ordered, and:
//!
//! - a free that finds holders counted leaves the arena to them: the last holder to leave
//!   reads `PENDING` in its subtraction and settles again (re-counting itself, only if
//!   nobody else became a holder meanwhile, in which case that one is the last out);
//! - a free that finds nobody counted settles the arena itself: it counts itself a
//!   holder and `try_lock`s. The lock was dropped by every earlier holder before its
//!   subtraction, which the free's read-modify-write reads (so those unlocks happen
//!   before the `try_lock`); so a `try_lock` that fails means a holder counted *after*
//!   the flag, who will read it when leaving (or the free reads that holder's departure,
//!   and tries again).
//!
//! So the argument rests on the order of read-modify-writes of one atomic word and on an
//! unlock that happens before a `try_lock` being seen by it, never on what a *failed*
//! `try_lock` reads. `settle` clears `PENDING` (a read-modify-write that reads the flag,
//! and so the push made before it) before it looks at the stack.
//!
//! Blocking waiters park their thread and are unparked by whoever grants them an arena
//! (no user code, so the free may do it); a blocking waiter leaves the count (settling
//! flagged arenas if it is the last holder) before it parks. Async waiters are woken by
//! calling their `Waker`, which is user code: a grant made inside the allocator leaves
//! the waker with the waiter and unparks the pool's *servant*, a thread that a
//! registered pool runs while async waiters wait, which calls it (containing a panic).
//! Any lock holder outside the allocator also calls the wakers still owed. If the
//! servant thread cannot be made, owed wakers are called by the next operation on the
//! pool outside the allocator.
//!
//! No waker is ever called under the lock: a holder collects a few at a time, calls them
//! after dropping the lock (each under `catch_unwind`, so a panicking one does not stop
//! the others), and takes the lock again for the rest, which stay with their waiters
//! meanwhile, so none is lost however many are owed. A waker may itself park and be
//! unparked (a blocking channel does), consuming an unpark meant for the servant, so
//! the servant does not park after a round that called one: it looks again first.

use core::sync::atomic::Ordering;
use core::task::{Context, Waker};
use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{PoisonError, TryLockError};
use std::time::Instant;

use super::PoolCore;
use super::route::outside_arena;
use crate::sync::{Builder, Mutex, MutexGuard, Thread, fence};

/// `PoolCore::handoff`: an arena was pushed by a free on the routing path while someone
/// waited, and no settle has looked at the stack since.
pub(super) const PENDING: usize = 1;
/// `PoolCore::handoff`: one counted holder of the lock (the count is the rest of the
/// word).
pub(super) const HOLDER: usize = 2;

struct Waiter {
    ticket: u64,
    granted: Option<u32>,
    /// The async waiter's waker, until it is woken for its grant; `None` for a blocking
    /// waiter. A granted waiter that still has its waker is owed a wake-up (deferred by
    /// a grant made inside the allocator).
    waker: Option<Waker>,
    /// The blocking waiter's thread, parked until its grant; `None` for an async waiter.
    thread: Option<Thread>,
}

impl Waiter {
    /// An async waiter that is not served yet, or is owed a wake-up.
    fn needs_servant(&self) -> bool {
        self.thread.is_none() && (self.granted.is_none() || self.waker.is_some())
    }
}

/// The waiters, under the pool's lock.
pub(super) struct Queue {
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
    /// The pool's servant thread while one runs (registered pools with async waiters
    /// only): it wakes async waiters granted an arena inside the allocator.
    servant: Option<Thread>,
}

impl Queue {
    pub(super) fn new() -> Queue {
        Queue {
            waiters: VecDeque::with_capacity(16),
            next_ticket: 0,
            servant: None,
        }
    }

    /// The position of the waiter holding `ticket`.
    fn position(&self, ticket: u64) -> usize {
        self.waiters
            .iter()
            .position(|waiter| waiter.ticket == ticket)
            .expect("a waiter stays queued until it leaves")
    }

    /// Whether the pool's servant thread runs (for the loom models).
    #[cfg(all(test, loom))]
    pub(super) fn has_servant(&self) -> bool {
        self.servant.is_some()
    }
}

/// Wake-ups collected under the lock, done after it is dropped (no allocation).
///
/// Unparking a thread runs no user code, so it is done from anywhere, the allocator
/// included. Calling a `Waker` runs user code, so inside the allocator
/// (`defer_wakers`) grants to async waiters leave the waker in the queue and unpark the
/// pool's servant thread instead, which calls it.
struct Wakeups {
    wakers: [Option<Waker>; 4],
    threads: [Option<Thread>; 4],
    /// The servant, to unpark after the lock is dropped.
    servant: Option<Thread>,
    /// Set inside the allocator: no waker may be called.
    defer_wakers: bool,
    /// Set on the servant thread: a waker that panics does not stop the others (nor the
    /// servant), and its panic is dropped.
    contain_panics: bool,
    /// The first panic of a waker (when panics are not contained), resumed once the pool
    /// is in order again.
    panic: Option<Box<dyn Any + Send>>,
    /// The waker of a waiter that gave up, dropped after the lock (its drop is user code).
    stale: Option<Waker>,
    /// Wakers are owed that did not fit in `wakers`: they stay with their waiters, and
    /// the holder collects them in another round after calling these (see `unlock`).
    more_owed: bool,
    /// A waker was called (user code ran, which may have consumed this thread's unpark
    /// token: the servant then looks again before it parks).
    called: bool,
}

impl Wakeups {
    const fn new() -> Self {
        Wakeups {
            wakers: [None, None, None, None],
            threads: [None, None, None, None],
            servant: None,
            defer_wakers: false,
            contain_panics: false,
            panic: None,
            stale: None,
            more_owed: false,
            called: false,
        }
    }

    /// For a hand-off inside the allocator (see the type's docs).
    const fn inside_allocator() -> Self {
        let mut wakeups = Wakeups::new();
        wakeups.defer_wakers = true;
        wakeups
    }

    fn is_full(&self) -> bool {
        self.wakers.iter().all(Option::is_some) || self.threads.iter().all(Option::is_some)
    }

    /// Unparks and wakes whom the last round served. Every waker is called even if one
    /// panics; the first panic is kept for [`finish`](Self::finish).
    fn run(&mut self) {
        for thread in &mut self.threads {
            if let Some(thread) = thread.take() {
                thread.unpark();
            }
        }
        if let Some(servant) = self.servant.take() {
            servant.unpark();
        }
        debug_assert!(
            !self.defer_wakers || self.wakers.iter().all(Option::is_none),
            "a waker collected inside the allocator"
        );
        for index in 0..self.wakers.len() {
            if let Some(waker) = self.wakers[index].take() {
                self.wake_now(waker);
            }
        }
    }

    /// Calls `waker` now, keeping its panic (if any, and unless panics are contained) for
    /// [`finish`](Self::finish).
    fn wake_now(&mut self, waker: Waker) {
        self.called = true;
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake()))
            && !self.contain_panics
        {
            self.panic.get_or_insert(panic);
        }
    }

    /// Drops a stale waker, then resumes the first panic of a waker, if one panicked.
    /// Returns whether a waker was called.
    fn finish(mut self) -> bool {
        drop(self.stale.take());
        if let Some(panic) = self.panic {
            std::panic::resume_unwind(panic);
        }
        self.called
    }
}

/// Locks the queue. A panic while holding the lock cannot leave the queue inconsistent
/// (every update is a single push or pop), so poisoning is ignored.
fn lock(mutex: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PoolCore {
    /// Counts this thread a holder, then takes the lock (module docs). Must be given
    /// back through [`unlock`](Self::unlock).
    fn lock_counted(&self) -> MutexGuard<'_, Queue> {
        self.handoff.fetch_add(HOLDER, Ordering::SeqCst);
        lock(&self.queue)
    }

    /// Drops the lock taken by [`lock_counted`](Self::lock_counted), leaves the count
    /// (settling flagged arenas as the last holder out), and wakes whom it served.
    ///
    /// Between the two no user code runs (wakers are cloned before, and called or dropped
    /// after, or under `catch_unwind`), so a thread never unwinds while counted.
    ///
    /// Wakers owed beyond what one round collects (`Wakeups::more_owed`) stay with their
    /// waiters; this takes the lock again, counted, to collect them, until none is left.
    /// So none is called under the lock, none is lost, and a panicking one (caught) does
    /// not stop the others. Returns whether a waker was called.
    fn unlock(&self, queue: MutexGuard<'_, Queue>, mut wakeups: Wakeups) -> bool {
        debug_assert!(
            !wakeups.defer_wakers,
            "unlock is never inside the allocator"
        );
        let mut queue = Some(queue);
        loop {
            drop(queue.take());
            let before = self.handoff.fetch_sub(HOLDER, Ordering::SeqCst);
            wakeups.run();
            if before == HOLDER | PENDING {
                self.settle_as_last(&mut wakeups);
            }
            if !core::mem::take(&mut wakeups.more_owed) {
                break;
            }
            let mut relocked = self.lock_counted();
            self.settle(&mut relocked, &mut wakeups);
            queue = Some(relocked);
        }
        wakeups.finish()
    }

    /// Settles arenas flagged while nobody (else) is counted: counts itself the one
    /// holder and settles, as long as it stays the last holder out with a flag raised.
    /// Inside the allocator it never waits for the lock (module docs).
    fn settle_as_last(&self, wakeups: &mut Wakeups) {
        loop {
            if self
                .handoff
                .compare_exchange(
                    PENDING,
                    HOLDER | PENDING,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_err()
            {
                // Someone became a holder (and will leave after this) or settled already.
                return;
            }
            let queue = if wakeups.defer_wakers {
                match self.queue.try_lock() {
                    Ok(queue) => Some(queue),
                    Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                    // A holder counted after the flag has the lock: it leaves after us.
                    Err(TryLockError::WouldBlock) => None,
                }
            } else {
                Some(lock(&self.queue))
            };
            if let Some(mut queue) = queue {
                self.settle(&mut queue, wakeups);
            }
            let before = self.handoff.fetch_sub(HOLDER, Ordering::SeqCst);
            wakeups.run();
            if before != HOLDER | PENDING {
                return;
            }
        }
    }

    /// The index of a free arena, or `None` at once when every arena is in use (or
    /// others are already waiting for one).
    #[inline(always)]
    pub(super) fn try_acquire(&self) -> Option<u32> {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return self.free.pop();
        }
        self.try_acquire_behind_waiters()
    }

    /// [`try_acquire`](Self::try_acquire) while others wait: serves them first, under
    /// the lock, and takes what is left.
    #[cold]
    #[inline(never)]
    fn try_acquire_behind_waiters(&self) -> Option<u32> {
        outside_arena(|| {
            let mut wakeups = Wakeups::new();
            let mut queue = self.lock_counted();
            self.settle(&mut queue, &mut wakeups);
            // Arenas left after serving every waiter are up for grabs.
            let index = if queue.waiters.iter().all(|waiter| waiter.granted.is_some()) {
                self.free.pop()
            } else {
                None
            };
            self.unlock(queue, wakeups);
            index
        })
    }

    /// The index of a free arena, waiting until `deadline` (`None`: for ever).
    ///
    /// The waiter parks its thread, and whoever grants it an arena unparks it. It never
    /// sleeps with the lock's duties undone: it leaves the count of holders (settling
    /// arenas that frees flagged meanwhile, if it is the last holder) before it parks (a
    /// grant meanwhile makes `park` return at once).
    pub(super) fn acquire_until(&self, deadline: Option<Instant>) -> Option<u32> {
        if self.waiting.load(Ordering::SeqCst) == 0
            && let Some(index) = self.free.pop()
        {
            return Some(index);
        }
        outside_arena(|| {
            let mut queue = self.lock_counted();
            let ticket = self.enqueue(&mut queue, None, Some(crate::sync::current()));
            loop {
                let mut wakeups = Wakeups::new();
                self.settle(&mut queue, &mut wakeups);
                let position = queue.position(ticket);
                if let Some(index) = queue.waiters[position].granted {
                    queue.waiters.remove(position);
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    self.unlock(queue, wakeups);
                    return Some(index);
                }
                let now = Instant::now();
                if deadline.is_some_and(|deadline| now >= deadline) {
                    self.give_up(&mut queue, ticket, &mut wakeups);
                    self.unlock(queue, wakeups);
                    return None;
                }
                self.unlock(queue, wakeups);
                match deadline {
                    None => crate::sync::park(),
                    Some(deadline) => crate::sync::park_timeout(deadline - now),
                }
                queue = self.lock_counted();
            }
        })
    }

    /// One poll of an async acquire: `ticket` is the waiter's place in the queue once it
    /// has waited. Returns the granted arena, or the ticket to wait with.
    ///
    /// `pool` is `Some` (the same pool, `'static`) when the pool is registered, so that
    /// a servant thread may serve it.
    pub(super) fn poll_acquire(
        &self,
        ticket: Option<u64>,
        cx: &mut Context<'_>,
        registered: Option<&'static PoolCore>,
    ) -> Result<u32, u64> {
        if ticket.is_none()
            && self.waiting.load(Ordering::SeqCst) == 0
            && let Some(index) = self.free.pop()
        {
            return Ok(index);
        }
        outside_arena(|| {
            // Cloning a waker runs user code: not under the lock, where a panic would
            // leave this thread counted as a holder for ever.
            let mut fresh = Some(cx.waker().clone());
            let mut wakeups = Wakeups::new();
            let mut queue = self.lock_counted();
            let ticket = match ticket {
                Some(ticket) => ticket,
                None => {
                    let ticket = self.enqueue(&mut queue, None, None);
                    if let Some(pool) = registered {
                        pool.ensure_servant(&mut queue);
                    }
                    ticket
                }
            };
            // This waiter's own waker is moot while it is being polled: out of the queue
            // during `settle`, so that a grant made now (or owed from inside the
            // allocator) does not wake it. Dropped after the lock.
            let own = queue.position(ticket);
            let mut own_waker = queue.waiters[own].waker.take();
            self.settle(&mut queue, &mut wakeups);
            let position = queue.position(ticket);
            let waiter = &mut queue.waiters[position];
            let result = match waiter.granted {
                Some(index) => {
                    queue.waiters.remove(position);
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    // The servant may have nothing left to serve: let it see that.
                    wakeups.servant.clone_from(&queue.servant);
                    Ok(index)
                }
                None => {
                    // The waker that is not kept is dropped after the lock.
                    waiter.waker = Some(match own_waker.take() {
                        Some(waker) if waker.will_wake(cx.waker()) => waker,
                        old => {
                            own_waker = old;
                            fresh.take().expect("cloned above")
                        }
                    });
                    Err(ticket)
                }
            };
            self.unlock(queue, wakeups);
            drop(own_waker);
            drop(fresh);
            result
        })
    }

    /// An async waiter that gives up its place (its future is dropped); an arena granted
    /// to it goes to the next waiter or the free list.
    pub(super) fn cancel_acquire(&self, ticket: u64) {
        outside_arena(|| {
            let mut wakeups = Wakeups::new();
            let mut queue = self.lock_counted();
            self.give_up(&mut queue, ticket, &mut wakeups);
            // Like every holder, hand on what is flagged (not needed for correctness:
            // the last holder out does, but it spares the freeing thread a retry).
            self.settle(&mut queue, &mut wakeups);
            self.unlock(queue, wakeups);
        });
    }

    fn enqueue(&self, queue: &mut Queue, waker: Option<Waker>, thread: Option<Thread>) -> u64 {
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiters.push_back(Waiter {
            ticket,
            granted: None,
            waker,
            thread,
        });
        // SeqCst: a releaser that pushes after this reads a non-zero count (see the
        // module docs); the caller tries the stack (`settle`) only after this.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // The waiter's side of the Dekker pattern with `recycle`: the stack is read
        // (`settle`, an `Acquire` load when it is empty) only after this fence, so either
        // that read sees an arena pushed before the releaser read `waiting`, or the
        // releaser's `SeqCst` load sees this waiter. Without it an empty-stack read may
        // be ordered before the increment (on Arm), and both would miss each other.
        fence(Ordering::SeqCst);
        ticket
    }

    /// Removes a waiter that gives up; an arena granted to it goes to the next waiter or
    /// the free list.
    fn give_up(&self, queue: &mut Queue, ticket: u64, wakeups: &mut Wakeups) {
        if let Some(position) = queue
            .waiters
            .iter()
            .position(|waiter| waiter.ticket == ticket)
        {
            let waiter = queue
                .waiters
                .remove(position)
                .expect("position is in range");
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Some(index) = waiter.granted {
                self.hand_on(queue, index, wakeups);
            }
            wakeups.stale = waiter.waker;
            // The servant may have nothing left to serve: let it see that and stop.
            wakeups.servant.clone_from(&queue.servant);
        }
    }

    /// Gives a free arena to the first waiter not yet served, else back to the stack.
    fn hand_on(&self, queue: &mut Queue, index: u32, wakeups: &mut Wakeups) {
        let Some(waiter) = queue
            .waiters
            .iter_mut()
            .find(|waiter| waiter.granted.is_none())
        else {
            self.free.push(index);
            return;
        };
        waiter.granted = Some(index);
        if let Some(thread) = &waiter.thread {
            match wakeups.threads.iter_mut().find(|slot| slot.is_none()) {
                Some(slot) => *slot = Some(thread.clone()),
                // No room to defer it (many grants in one round): unpark now, which runs
                // no user code and does not block.
                None => thread.unpark(),
            }
        } else if wakeups.defer_wakers {
            // Inside the allocator: the waker stays with the waiter, and the servant
            // calls it (see `Wakeups`).
            wakeups.servant.clone_from(&queue.servant);
        } else {
            Self::take_waker(waiter, wakeups);
        }
    }

    /// Moves a granted async waiter's waker into `wakeups`; if there is no room (many
    /// grants in one round), leaves it with the waiter, still owed, and notes that the
    /// holder must come back for it after the lock (`unlock`). Never calls it: no waker
    /// runs under the lock. Never inside the allocator.
    fn take_waker(waiter: &mut Waiter, wakeups: &mut Wakeups) {
        debug_assert!(!wakeups.defer_wakers, "a waker taken inside the allocator");
        if waiter.waker.is_none() {
            return;
        }
        match wakeups.wakers.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = waiter.waker.take(),
            None => wakeups.more_owed = true,
        }
    }

    /// Grants free arenas to waiters not yet served, in order (under the lock, counted).
    /// Outside the allocator it also collects wake-ups owed to async waiters granted
    /// inside it.
    fn settle(&self, queue: &mut Queue, wakeups: &mut Wakeups) {
        // A read-modify-write that clears the flag: if a free raised it, this reads it and
        // so sees the arena that free pushed before it (the stack is read below).
        self.handoff.fetch_and(!PENDING, Ordering::SeqCst);
        if !wakeups.defer_wakers {
            for waiter in queue.waiters.iter_mut() {
                if waiter.granted.is_some() && waiter.waker.is_some() {
                    Self::take_waker(waiter, wakeups);
                }
            }
        }
        while queue.waiters.iter().any(|waiter| waiter.granted.is_none()) {
            if wakeups.is_full() {
                // Wake these first; the last holder out serves the rest.
                self.handoff.fetch_or(PENDING, Ordering::SeqCst);
                return;
            }
            let Some(index) = self.free.pop() else {
                return;
            };
            self.hand_on(queue, index, wakeups);
        }
    }

    /// The servant of a registered pool: wakes async waiters that were granted an arena
    /// inside the allocator, and hands on arenas that frees flagged, until no async waiter
    /// is left to serve. Runs on its own thread, outside any arena.
    fn serve(&'static self) {
        loop {
            let mut wakeups = Wakeups::new();
            wakeups.contain_panics = true;
            let mut queue = self.lock_counted();
            self.settle(&mut queue, &mut wakeups);
            let owed = queue.waiters.iter().any(Waiter::needs_servant);
            if !owed {
                queue.servant = None;
            }
            let called = self.unlock(queue, wakeups);
            if !owed {
                return;
            }
            // A waker is user code and may park and be unparked itself (a blocking channel
            // does), consuming the unpark of a grant made meanwhile: after calling one,
            // look again (a round that calls none) before parking.
            if !called {
                crate::sync::park();
            }
        }
    }

    /// Makes sure a registered pool with async waiters has a servant (under the lock).
    fn ensure_servant(&'static self, queue: &mut Queue) {
        if queue.servant.is_some() {
            return;
        }
        let spawned = Builder::new()
            .name("arena-pool-servant".into())
            .spawn(move || self.serve());
        // If the thread cannot be made, grants made inside the allocator are woken by the
        // next operation on the pool outside it (degraded, documented in the module).
        if let Ok(handle) = spawned {
            queue.servant = Some(handle.thread().clone());
        }
    }

    /// After a recycled arena was pushed while someone waits: hands free arenas to
    /// waiters, then wakes whom it served. `inside_allocator`: on the routing path, where
    /// it flags the arena instead of waiting for the lock, and calls no waker.
    #[cold]
    #[inline(never)]
    pub(super) fn serve_waiters(&self, inside_allocator: bool) {
        outside_arena(|| {
            if inside_allocator {
                let mut wakeups = Wakeups::inside_allocator();
                // Holders counted: the last one out settles the flagged arena. Nobody
                // counted: settle it here (module docs).
                if self.handoff.fetch_or(PENDING, Ordering::SeqCst) == 0 {
                    self.settle_as_last(&mut wakeups);
                }
                debug_assert!(wakeups.panic.is_none(), "a waker ran inside the allocator");
            } else {
                let mut wakeups = Wakeups::new();
                let mut queue = self.lock_counted();
                self.settle(&mut queue, &mut wakeups);
                self.unlock(queue, wakeups);
            }
        });
    }
}
