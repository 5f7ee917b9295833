//! Per-thread byte credits of a [`Budget`](super::budget::Budget): a thread takes a
//! batch of bytes from the shared word in one atomic operation and serves its later
//! requests and frees from it with plain loads and stores, so that an uncontended
//! allocation and free touch no shared cache line with a locked instruction.
//!
//! # Safety
//!
//! A budget has [`SLOTS`] slots. A thread gets a token (unique, never reused, never 0)
//! the first time it uses any budget, and may own the slot `token % SLOTS` of each
//! budget: it claims it with a compare-and-swap of [`Slot::owner`] from 0 and keeps it
//! for the budget's life (a thread whose slot is taken by another uses the shared word
//! only). So only the owner ever writes [`Slot::in_use`]. A thread notes the last slot it
//! found its own, with its budget's id (unique, never reused), in a thread-local, so that
//! its next call on that budget reaches the slot with one thread-local access and one
//! compare, no look at the owner ([`last_own_slot`]); a call on another budget looks the
//! slot up by the token and notes it in turn.
//!
//! [`Slot::credit`] is written by its owner while its mark [`Slot::in_use`] is set, and
//! by a *pass* ([`Budget::reclaim_credits`](super::budget::Budget)) that takes it back
//! to the shared word; the two exclude each other as in Dekker's algorithm (the same
//! handshake as [`crate::handshake`]): the owner stores its mark, fences, then loads
//! [`Slot::reclaiming`]; the pass stores that flag, fences, then loads the mark, so at
//! least one sees the other's store. An owner that sees the flag leaves the credit
//! alone (its fast path falls to the slow path, which waits until the pass is done); a
//! pass that sees the mark leaves the slot alone. The fences are asymmetric
//! ([`crate::asymmetric_fence`]): a compiler fence on the owner's side, a `membarrier`
//! on the pass's side. Where that system call is not available, credits are off
//! (every request and free uses the shared word, as without this module).
//!
//! Passes run under the queue's lock, so at most one runs at a time.
//!
//! The bytes of a budget are conserved: shared word + every slot's credit + the
//! charges of live blocks (and of grants not yet seen) = the capacity. Credits are taken
//! from the shared word, so the capacity bound stays exact: live blocks never count for
//! more than the capacity.

use core::cell::Cell;

#[cfg(not(loom))]
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// How many slots a budget has (a power of two).
#[cfg(not(loom))]
pub(crate) const SLOTS: usize = 64;
/// Few slots under loom: every one is a model object.
#[cfg(loom)]
pub(crate) const SLOTS: usize = 4;

/// The largest batch a thread takes from the shared word at once.
pub(crate) const MAX_BATCH: usize = 64 << 10;

/// The batch of a budget of `capacity` bytes: a 64th of it, at most [`MAX_BATCH`] (so
/// 64 threads' credits, each at most twice the batch, stay within twice the capacity's
/// share a thread may hold, and a waiter rarely needs a pass).
pub(crate) fn batch_for(capacity: usize) -> usize {
    (capacity / 64).min(MAX_BATCH)
}

/// One thread's credit in one budget. On its own cache line, so that owners do not
/// share lines.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Slot {
    /// The token of the owning thread; 0 while nobody owns the slot. Set once, by a
    /// compare-and-swap from 0; never changes afterwards.
    pub(crate) owner: AtomicU64,
    /// 1 while the owner uses [`credit`](Self::credit); written only by the owner.
    pub(crate) in_use: AtomicU8,
    /// Set by a pass for the time it may take the credit.
    pub(crate) reclaiming: AtomicBool,
    /// Bytes taken from the shared word and not yet handed out. Written by the owner
    /// inside its mark, or by a pass that saw the owner out (module docs); read by
    /// anyone for statistics.
    pub(crate) credit: AtomicUsize,
}

impl Slot {
    pub(crate) fn new() -> Self {
        Slot {
            owner: AtomicU64::new(0),
            in_use: AtomicU8::new(0),
            reclaiming: AtomicBool::new(false),
            credit: AtomicUsize::new(0),
        }
    }

    /// The owner's side, first: sets the mark and returns `true`, or, while a pass holds
    /// the slot, clears it again and returns `false`.
    #[inline(always)]
    pub(crate) fn try_enter(&self) -> bool {
        self.in_use.store(1, Ordering::Relaxed);
        light_fence();
        // `Acquire`: a pass's change to the credit, published by its unflag, is seen.
        if self.reclaiming.load(Ordering::Acquire) {
            self.in_use.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The owner's side, first, on slow paths: sets the mark, waiting while a pass holds
    /// the slot. The pass takes no lock while the slot is flagged and holds the flag for
    /// a bounded walk, so this waits for nobody the caller may wait for.
    pub(crate) fn enter(&self) {
        let mut spins = 0u32;
        while !self.try_enter() {
            while self.reclaiming.load(Ordering::Relaxed) {
                pause(spins);
                spins = spins.saturating_add(1);
            }
        }
    }

    /// The owner's side, last: clears the mark, then fences, so that the caller's next
    /// load (of the waiting flag) and a pass's look at the mark see at least one of the
    /// two stores (the pass sets the waiting flag before it flags the slots).
    #[inline(always)]
    pub(crate) fn leave(&self) {
        // `Release`: the owner's use of the credit happens before a pass's.
        self.in_use.store(0, Ordering::Release);
        light_fence();
    }
}

/// The owner's half of the fence (see [`crate::asymmetric_fence::light`]).
#[inline(always)]
fn light_fence() {
    #[cfg(not(loom))]
    crate::asymmetric_fence::light();
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The pass's half of the fence: `false` if it cannot be had (see
/// [`crate::asymmetric_fence::heavy`]).
pub(crate) fn heavy_fence() -> bool {
    #[cfg(not(loom))]
    {
        crate::asymmetric_fence::heavy()
    }
    #[cfg(loom)]
    {
        loom::sync::atomic::fence(Ordering::SeqCst);
        true
    }
}

/// What a thread waiting for a pass does between two looks.
fn pause(spins: u32) {
    #[cfg(not(loom))]
    crate::sync::back_off(spins);
    #[cfg(loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
}

#[cfg(not(loom))]
std::thread_local! {
    /// The thread's token, 0 until its first use of a budget. Const-initialised, no
    /// destructor: reading it never allocates.
    static TOKEN: Cell<u64> = const { Cell::new(0) };
}

#[cfg(loom)]
loom::thread_local! {
    static TOKEN: Cell<u64> = Cell::new(0);
}

#[cfg(not(loom))]
std::thread_local! {
    /// The last budget (by [`budget_id`]) whose slot the thread owns, and that slot, so
    /// that the fast paths reach the slot with one thread-local access and one compare;
    /// `(0, null)` until the thread owns a slot. Const-initialised, no destructor.
    static LAST_SLOT: Cell<(u64, *const Slot)> = const { Cell::new((0, core::ptr::null())) };
}

#[cfg(loom)]
loom::thread_local! {
    static LAST_SLOT: Cell<(u64, *const Slot)> = Cell::new((0, core::ptr::null()));
}

/// The last slot the thread [noted](note_own_slot) as its own, and the id of its budget
/// (`(0, null)` if none). A budget's id is never reused, and a thread owns its slot for
/// the budget's life, so while the budget of that id lives the pointer points to a slot
/// of it that the thread owns.
#[inline(always)]
pub(crate) fn last_own_slot() -> (u64, *const Slot) {
    LAST_SLOT.with(Cell::get)
}

/// Notes `slot`, which the calling thread owns, as its slot in the budget of
/// `budget_id`, for [`last_own_slot`].
pub(crate) fn note_own_slot(budget_id: u64, slot: &Slot) {
    LAST_SLOT.with(|cell| cell.set((budget_id, slot)));
}

/// A fresh budget id (never 0, never reused).
#[cfg(not(loom))]
pub(crate) fn budget_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Under loom, from a counter of the execution, as tokens are.
#[cfg(loom)]
pub(crate) fn budget_id() -> u64 {
    loom::lazy_static! {
        static ref NEXT: AtomicU64 = AtomicU64::new(1);
    }
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The calling thread's token (never 0).
#[inline(always)]
pub(crate) fn thread_token() -> u64 {
    let token = TOKEN.with(Cell::get);
    if token != 0 {
        return token;
    }
    new_token()
}

#[cold]
#[inline(never)]
fn new_token() -> u64 {
    let token = next_token();
    TOKEN.with(|cell| cell.set(token));
    token
}

/// A fresh token: tokens are never reused (2^64 of them will not run out).
#[cfg(not(loom))]
fn next_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Under loom, from a counter of the execution, so that every execution gives the same
/// threads the same tokens.
#[cfg(loom)]
fn next_token() -> u64 {
    loom::lazy_static! {
        static ref NEXT: AtomicU64 = AtomicU64::new(1);
    }
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The slot a thread of `token` may own.
#[inline(always)]
pub(crate) fn slot_index(token: u64) -> usize {
    // Truncation is intended: only the low bits choose the slot.
    (token as usize) & (SLOTS - 1)
}
