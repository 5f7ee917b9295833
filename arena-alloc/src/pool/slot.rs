//! The slot state machine: every transition of a pool arena's slot lives here.
//!
//! ```text
//!            lease (try_acquire / grant)            release, nothing live
//!   FREE ──────────────────────────────────> LEASED ───────────────────────> FREE
//!    ^                                          │
//!    │ recycle: the free that settles the debt  │ release, routed allocations live
//!    └───────────────────────────── QUARANTINED <┘
//! ```
//!
//! While LEASED, the lease may be *entered* (see `route`): the entering thread routes its
//! global allocations to the slot and alone uses its bump state. Every other thread
//! touches only the slot's atomics. The functions here are the only ones that write a
//! slot's state, its counters or its bump state outside an entered route; the router
//! reaches slots only through [`Entered`](super::route::Entered),
//! [`Routed`](super::registry::Routed) and [`SpillAccount`].

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::Ordering;

use super::PoolCore;
use super::slot_pages::SlotPages;
use crate::arena::Arena;
#[cfg(loom)]
use crate::sync::fence;
use crate::sync::{AtomicBool, AtomicIsize, AtomicU8, AtomicU64, AtomicUsize};

/// The arena type of a pool slot.
pub(super) type SlotArena = Arena<SlotPages>;

/// Bits of a slot's spill account that hold live bytes; the rest hold the generation.
const SPILL_BYTES_BITS: u32 = 48;
const SPILL_BYTES_MASK: u64 = (1 << SPILL_BYTES_BITS) - 1;
const SPILL_GENERATION_MASK: u64 = (1 << (64 - SPILL_BYTES_BITS)) - 1;

pub(super) const FREE: u8 = 0;
pub(super) const LEASED: u8 = 1;
pub(super) const QUARANTINED: u8 = 2;

/// One arena of the pool and its counters. See the module docs for who owns what.
pub(super) struct Slot {
    /// The bump allocator over this slot's pages.
    pub(super) arena: UnsafeCell<SlotArena>,
    /// Routed allocations made minus routed frees on the entering thread.
    pub(super) local_live: Cell<usize>,
    /// Routed frees from other threads (before release), minus the outstanding count
    /// (at release): zero after release means nothing is live.
    pub(super) remote_frees: AtomicIsize,
    /// The spill account of the current lease: the low 16 bits of its generation
    /// (`spill_generation`) in the top 16 bits, and the live bytes of routed allocations
    /// that spilled to the fallback allocator (the low 48 bits). Packed, so that a credit
    /// for a block spilled by an earlier lease is recognised and dropped in the same
    /// atomic step.
    pub(super) spill_account: AtomicU64,
    /// The generation of the current lease's spill account, whole: bumped (before the
    /// account) when a lease ends with spills still charged. A credit must match both it
    /// and the account's 16 bits, so a spill of a lease 2^16 generations back is not
    /// taken for the current lease's own.
    pub(super) spill_generation: AtomicU64,
    /// Set by a spill: the request went over its budget.
    pub(super) over_budget: AtomicBool,
    /// The hard cap of `spilled_bytes`.
    pub(super) spill_limit_bytes: usize,
    /// `FREE`, `LEASED` or `QUARANTINED`, for statistics and checks.
    pub(super) state: AtomicU8,
    /// Bytes protected by `debug-protect` while free.
    #[cfg_attr(not(feature = "debug-protect"), allow(dead_code))]
    pub(super) protected_bytes: AtomicUsize,
}

// SAFETY: the non-atomic fields are used by one thread at a time, as the module docs lay
// out: the lease holder / entering thread while leased, the recycling thread after the
// debt is settled, the pool under its lock while free.
unsafe impl Sync for Slot {}
// SAFETY: as above.
unsafe impl Send for Slot {}

impl Slot {
    /// The arena, shared.
    ///
    /// # Safety
    /// - The caller owns the slot's bump state (module docs).
    #[inline(always)]
    pub(super) unsafe fn arena(&self) -> &SlotArena {
        // SAFETY: only shared references to the arena are ever made.
        unsafe { &*self.arena.get() }
    }

    /// Closes the spill account of a lease that is over: when spills it charged are
    /// still live (their frees may come during the next lease), the next lease gets the
    /// next generation, with nothing charged, so their credits are recognised and
    /// dropped. When nothing is charged no credit can come, and the generation stays: the
    /// common case costs one load.
    #[inline]
    pub(super) fn end_spill_account(&self) {
        let account = self.spill_account.load(Ordering::Relaxed);
        if account & SPILL_BYTES_MASK != 0 {
            let next = self
                .spill_generation
                .load(Ordering::Relaxed)
                .wrapping_add(1);
            self.spill_generation.store(next, Ordering::Release);
            self.spill_account.store(
                (next & SPILL_GENERATION_MASK) << SPILL_BYTES_BITS,
                Ordering::Release,
            );
        }
    }

    /// The generation of the current lease's spill account.
    #[inline]
    pub(super) fn spill_generation(&self) -> u64 {
        self.spill_generation.load(Ordering::Acquire)
    }

    /// Live bytes of the current lease's spills.
    #[inline]
    pub(super) fn spilled_bytes(&self) -> usize {
        (self.spill_account.load(Ordering::Acquire) & SPILL_BYTES_MASK) as usize
    }

    /// Charges `bytes` more spilled bytes to the current lease, unless that would take
    /// its live spills past the hard cap. Returns whether it did.
    pub(super) fn charge_spill(&self, bytes: usize) -> bool {
        let limit = (self.spill_limit_bytes as u64).min(SPILL_BYTES_MASK);
        self.spill_account
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |account| {
                let charged = (account & SPILL_BYTES_MASK).checked_add(bytes as u64)?;
                (charged <= limit).then_some((account & !SPILL_BYTES_MASK) | charged)
            })
            .is_ok()
    }

    /// Credits `bytes` of spills freed or shrunk, if they were charged to the lease of
    /// `generation` and it is still the current one (an earlier lease's account is gone).
    pub(super) fn credit_spill(&self, generation: u64, bytes: usize) {
        let _ = self
            .spill_account
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |account| {
                // The whole generation tells leases apart; the account's 16 bits make the
                // check and the subtraction one step against a lease ending meanwhile
                // (which changes the account, so this update is tried again).
                let current = account >> SPILL_BYTES_BITS == generation & SPILL_GENERATION_MASK
                    && self.spill_generation.load(Ordering::Acquire) == generation;
                current.then(|| {
                    let left = (account & SPILL_BYTES_MASK).saturating_sub(bytes as u64);
                    (account & !SPILL_BYTES_MASK) | left
                })
            });
    }
}

/// The spill account of a slot in a registered (`'static`) pool: what the router charges
/// and credits for routed allocations that spill to its fallback allocator, and the
/// slot's over-budget flag. Nothing else of the slot is reachable through it, so it may
/// be kept anywhere (the spill table keeps it with each large spill).
#[derive(Clone, Copy)]
pub(crate) struct SpillAccount(&'static Slot);

impl SpillAccount {
    pub(super) fn of(slot: &'static Slot) -> SpillAccount {
        SpillAccount(slot)
    }

    /// The generation of the current lease's account.
    #[inline]
    pub(crate) fn generation(self) -> u64 {
        self.0.spill_generation()
    }

    /// Charges `bytes` more spilled bytes to the current lease, unless that would take
    /// its live spills past the hard cap. Returns whether it did.
    #[inline]
    pub(crate) fn charge(self, bytes: usize) -> bool {
        self.0.charge_spill(bytes)
    }

    /// Credits `bytes` of spills charged to the lease of `generation`, if it is still the
    /// current one.
    #[inline]
    pub(crate) fn credit(self, generation: u64, bytes: usize) {
        self.0.credit_spill(generation, bytes);
    }

    /// Raises the over-budget flag of the current lease. Returns whether it was raised
    /// already.
    #[inline]
    pub(crate) fn raise_over_budget(self) -> bool {
        self.0.over_budget.swap(true, Ordering::AcqRel)
    }

    /// Whether both are the account of the same slot.
    #[inline]
    pub(crate) fn same_slot(self, other: SpillAccount) -> bool {
        core::ptr::eq(self.0, other.0)
    }

    /// The account as a raw pointer, to be kept in an atomic.
    pub(crate) fn into_raw(self) -> *mut () {
        core::ptr::from_ref(self.0).cast_mut().cast()
    }

    /// The account kept by [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// - `raw` was returned by `into_raw`.
    pub(crate) unsafe fn from_raw(raw: *mut ()) -> SpillAccount {
        // SAFETY: `into_raw` made it from a `&'static Slot`.
        SpillAccount(unsafe { &*raw.cast_const().cast::<Slot>() })
    }
}

impl Slot {
    /// The slot's page source. Its fields are immutable or atomic, so reading them races
    /// with nothing the owner of the bump state does.
    pub(super) fn pages(&self) -> &SlotPages {
        // SAFETY: only the source is read through this reference (see above).
        unsafe { self.arena().source() }
    }

    /// A free routed from anywhere but the entering thread; recycles the slot when it
    /// settles the debt of a released arena. `pool` is the slot's pool.
    #[inline]
    pub(super) fn remote_free(&self, pool: &PoolCore) {
        if self.remote_frees.fetch_add(1, Ordering::AcqRel) == -1 {
            // SAFETY: the debt is settled: nothing allocated from the slot is live and
            // its lease is gone, so this thread owns it now.
            unsafe { pool.recycle_settled(self) };
        }
    }
}

/// How a recycled arena reaches the pool.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Returned {
    /// From a lease's release: may lock.
    FromRelease,
    /// From a free on the routing path: must not wait for the lock.
    FromFree,
}

impl PoolCore {
    /// Marks a free slot, just taken off the stack or granted, leased.
    #[inline]
    pub(super) fn lease(&self, index: u32) -> &Slot {
        let slot = &self.slots[index as usize];
        #[cfg(feature = "debug-protect")]
        self.unprotect(slot, index);
        slot.state.store(LEASED, Ordering::Relaxed);
        slot
    }

    /// Resets a slot whose lease is gone and whose allocations are all freed, and puts it
    /// back: to a waiter or the free list. The common case (within its budget, its
    /// arena reset in place: [`Arena::try_reset_warm`]) calls nothing but a waiter's
    /// hand-off; anything else takes the cold path.
    ///
    /// # Safety
    /// - The caller owns the slot (module docs): its lease is gone and nothing allocated
    ///   from it is live.
    #[inline]
    unsafe fn recycle(&self, slot: &Slot, index: u32, how: Returned) {
        // SAFETY: the caller owns the slot, and nothing allocated from it is used again.
        let reset =
            !slot.over_budget.load(Ordering::Relaxed) && unsafe { slot.arena().try_reset_warm() };
        if !reset {
            // SAFETY: forwarded from the caller; the arena is unchanged.
            return unsafe { self.recycle_cold(slot, index, how) };
        }
        // SAFETY: forwarded from the caller; the arena is reset.
        unsafe { self.return_reset(slot, index, how) }
    }

    /// [`recycle`](Self::recycle) of a slot whose arena was not reset in place: it went
    /// over its budget, or its reset releases chunks or decommits pages.
    ///
    /// # Safety
    /// - As for `recycle`.
    #[cold]
    #[inline(never)]
    unsafe fn recycle_cold(&self, slot: &Slot, index: u32, how: Returned) {
        // SAFETY: the caller owns the slot, and nothing allocated from it is used again.
        // An arena that went over its budget (a runaway request) gives back its warm
        // pages too: it is the exception, and what it filled should not stay resident.
        unsafe {
            if slot.over_budget.load(Ordering::Relaxed) {
                slot.arena().reset_cold();
                slot.over_budget.store(false, Ordering::Relaxed);
            } else {
                slot.arena().reset_unchecked();
            }
        }
        // SAFETY: forwarded from the caller; the arena is reset.
        unsafe { self.return_reset(slot, index, how) }
    }

    /// The rest of [`recycle`](Self::recycle) once the arena is reset: clears the
    /// slot's counters and puts it back, to a waiter or the free list.
    ///
    /// # Safety
    /// - As for `recycle`, and the slot's arena is reset and its over-budget flag down.
    #[inline(always)]
    unsafe fn return_reset(&self, slot: &Slot, index: u32, how: Returned) {
        debug_assert!(
            core::ptr::eq(slot, &self.slots[index as usize]),
            "slot {:p} is not number {index} of its pool",
            slot
        );
        slot.local_live.set(0);
        slot.remote_frees.store(0, Ordering::Relaxed);
        slot.end_spill_account();
        slot.state.store(FREE, Ordering::Relaxed);
        #[cfg(feature = "debug-protect")]
        self.protect(slot);
        self.free.push(index);
        // The push is `SeqCst`; so is this load (`handoff`'s docs: no lost grant). Loom models
        // `SeqCst` accesses as `AcqRel`, so its models need the fence the C++ model does
        // not.
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.serve_waiters(how == Returned::FromFree);
        }
    }

    /// [`recycle`](Self::recycle) for a free on the routing path that settled the debt
    /// of a quarantined slot: out of line, so the routing path stays small.
    ///
    /// # Safety
    /// - As for `recycle`.
    #[cold]
    #[inline(never)]
    unsafe fn recycle_settled(&self, slot: &Slot) {
        // SAFETY: forwarded from the caller.
        unsafe { self.recycle(slot, self.index_of_slot(slot), Returned::FromFree) };
    }

    /// Ends the lease of slot `index`: recycles the arena at once, or quarantines it
    /// while routed allocations from it are live. (Leases call
    /// [`release_slot`](Self::release_slot) with the slot they hold.)
    #[cfg(all(test, loom))]
    pub(super) fn release(&self, index: u32) {
        let slot = &self.slots[index as usize];
        // SAFETY: `slot` is number `index`.
        unsafe { self.release_slot(slot, index) }
    }

    /// [`release`](Self::release) of slot `index`, `slot`, as a lease holds both. One
    /// call out of line, with the reset inlined: the quarantine check reads one word,
    /// the count of routed allocations not freed on the entering thread. Zero means none
    /// is live (a free anywhere else would have left it non-zero), so the slot is
    /// recycled without touching the atomics; otherwise one `fetch_sub` settles the
    /// frees other threads made, or quarantines the slot until the rest come.
    ///
    /// # Safety
    /// - `slot` is `&self.slots[index]`.
    #[inline(never)]
    pub(super) unsafe fn release_slot(&self, slot: &Slot, index: u32) {
        debug_assert!(
            core::ptr::eq(slot, &self.slots[index as usize]),
            "slot {:p} is not number {index} of its pool",
            slot
        );
        // No thread routes to the slot any more: a route to it lives only inside `run`
        // (which borrows the lease) or inside an `ArenaGuard` (which owns the lease and
        // leaves the route before dropping it).
        let outstanding = slot.local_live.get() as isize;
        if outstanding != 0 {
            // Some routed allocations were not freed on the entering thread: the slot
            // waits for them, unless other threads have freed them all.
            slot.state.store(QUARANTINED, Ordering::Relaxed);
            if slot.remote_frees.fetch_sub(outstanding, Ordering::AcqRel) != outstanding {
                return;
            }
        }
        // SAFETY: every routed allocation is freed (the debt is settled, or none was
        // left) and the lease is gone: this thread owns the slot.
        unsafe { self.recycle(slot, index, Returned::FromRelease) };
    }

    /// The index of a slot of this pool.
    fn index_of_slot(&self, slot: &Slot) -> u32 {
        // SAFETY: `slot` is an element of `self.slots` (slots only ever refer to their
        // own pool), so both pointers are in the same allocation.
        let index = unsafe { (slot as *const Slot).offset_from(self.slots.as_ptr()) };
        index as u32
    }

    /// With feature `debug-protect`, makes a free slot's committed pages inaccessible, so
    /// that a use after release faults at once.
    #[cfg(feature = "debug-protect")]
    pub(super) fn protect(&self, slot: &Slot) {
        if cfg!(miri) {
            return;
        }
        let pages = slot.pages();
        let committed = pages.committed.load(Ordering::Relaxed);
        if committed > 0 {
            slot.protected_bytes.store(committed, Ordering::Relaxed);
            // SAFETY: the committed part of a free slot, inside the pool's reservation
            // made through `sys`; nothing may touch it until it is leased again.
            let _ = unsafe {
                pagekeep_mmap::sys::protect(pages.base, committed, pagekeep_mmap::Protection::None)
            };
        }
    }

    /// Undoes [`protect`](Self::protect) before a slot is leased.
    #[cfg(feature = "debug-protect")]
    pub(super) fn unprotect(&self, slot: &Slot, _index: u32) {
        let protected = slot.protected_bytes.swap(0, Ordering::Relaxed);
        if protected > 0 {
            let base = slot.pages().base;
            // SAFETY: the range protected by `protect`, inside the reservation.
            let _ = unsafe {
                pagekeep_mmap::sys::protect(base, protected, pagekeep_mmap::Protection::ReadWrite)
            };
        }
    }
}
