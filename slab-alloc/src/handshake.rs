//! The handshake between a thread using its magazines and a decay pass (or `trim`)
//! taking them from it ([`crate::registry::reclaim_threads`]).
//!
//! It is Dekker's: each side stores its own flag, fences, then loads the other's. The
//! thread marks itself *in use* ([`enter`], [`try_enter_fast`]) and then checks the
//! *reclaiming* flag; the pass sets that flag ([`flag`]) and then reads the marks
//! ([`owner_out`]).
//!
//! The thread has two marks. The inlined fast paths set and clear the *fast* mark with
//! two stores and never load it: a load of a mark the previous operation has just
//! stored would chain every operation to the one before through store forwarding
//! (measured: 20 to 45% on allocate/free loops). The slow paths use the *slow* mark,
//! which they restore to its previous value on the way out, since they may nest (a
//! constructor or a destructor that allocates runs inside one); a fast path nested in a
//! slow one leaves the slow mark set. A fast path cannot nest in a fast path, short of a
//! signal handler that allocates, which interrupting any allocator's fast path does not
//! survive either. The fences
//! guarantee that at least one side sees the other's store: a thread that sees the flag
//! waits until the pass clears it ([`unflag`]); a pass that sees the mark leaves the
//! thread alone. The fences are asymmetric ([`crate::asymmetric_fence`]): a compiler
//! fence on the thread's side, which runs on every allocation and free, and a
//! `membarrier` system call on the pass's side, which runs once per pass.
//!
//! The protocol is written once, over [`Flags`], so that the loom model at the end of
//! this file checks the very functions the allocator runs (with `SeqCst` fences on both
//! sides, which is what the asymmetric pair provides).

// Without the `reclaim-idle-threads` feature only the pass side is compiled in (and
// does nothing); the loom model still checks the whole protocol.
#![cfg_attr(not(feature = "reclaim-idle-threads"), allow(dead_code))]

use core::sync::atomic::Ordering::{self, Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicBool, AtomicU8};

/// One thread's handshake flags, and the fences and the pause the sides use.
pub(crate) trait Flags {
    /// Loads the fast paths' mark (1 inside a fast path, else 0).
    fn load_fast(&self, order: Ordering) -> u8;
    /// Stores the fast paths' mark.
    fn store_fast(&self, mark: u8, order: Ordering);
    /// Loads the slow paths' mark (1 inside [`enter`]..[`leave`], else 0).
    fn load_slow(&self, order: Ordering) -> u8;
    /// Stores the slow paths' mark.
    fn store_slow(&self, mark: u8, order: Ordering);
    /// Loads the reclaiming flag.
    fn load_reclaiming(&self, order: Ordering) -> bool;
    /// Stores the reclaiming flag.
    fn store_reclaiming(&self, flag: bool, order: Ordering);
    /// The thread's half of the fence.
    fn light_fence();
    /// The pass's half of the fence; `false` if it cannot be had here.
    fn heavy_fence() -> bool;
    /// What a waiting thread does between two looks at the flag.
    fn pause(spins: u32);
}

/// The flags of a thread's magazines, on the standard atomics. All-zero bytes are a valid
/// value (out of use, not flagged).
#[derive(Debug)]
pub(crate) struct ThreadFlags {
    fast: AtomicU8,
    slow: AtomicU8,
    reclaiming: AtomicBool,
}

impl ThreadFlags {
    pub(crate) const fn new() -> Self {
        ThreadFlags {
            fast: AtomicU8::new(0),
            slow: AtomicU8::new(0),
            reclaiming: AtomicBool::new(false),
        }
    }
}

impl Flags for ThreadFlags {
    #[inline(always)]
    fn load_fast(&self, order: Ordering) -> u8 {
        self.fast.load(order)
    }
    #[inline(always)]
    fn store_fast(&self, mark: u8, order: Ordering) {
        self.fast.store(mark, order);
    }
    #[inline(always)]
    fn load_slow(&self, order: Ordering) -> u8 {
        self.slow.load(order)
    }
    #[inline(always)]
    fn store_slow(&self, mark: u8, order: Ordering) {
        self.slow.store(mark, order);
    }
    #[inline(always)]
    fn load_reclaiming(&self, order: Ordering) -> bool {
        self.reclaiming.load(order)
    }
    #[inline(always)]
    fn store_reclaiming(&self, flag: bool, order: Ordering) {
        self.reclaiming.store(flag, order);
    }
    #[inline(always)]
    fn light_fence() {
        crate::asymmetric_fence::light();
    }
    fn heavy_fence() -> bool {
        crate::asymmetric_fence::heavy()
    }
    fn pause(spins: u32) {
        crate::sync::back_off(spins);
    }
}

/// The slow paths' side, before they touch the magazines: set the slow mark, then wait
/// while a pass holds the magazines. Returns the mark to restore in [`leave`], so that
/// a nested call (a constructor that allocates, a signal handler) keeps the outer
/// call's mark. A nested call waits like any other: a signal handler may run while the
/// outer call waits, or between the outer call's mark and its check, when a pass may be
/// taking the magazines; waiting never deadlocks, since the pass takes no lock while any
/// thread is flagged.
#[inline(always)]
pub(crate) fn enter<F: Flags>(flags: &F) -> u8 {
    let outer = flags.load_slow(Relaxed);
    flags.store_slow(1, Relaxed);
    F::light_fence();
    // `Acquire`: a pass's changes to the slots, published by its `unflag`, are seen.
    if flags.load_reclaiming(Acquire) {
        wait_while_flagged(flags);
    }
    outer
}

/// The slow paths' side, after their last touch of the magazines.
#[inline(always)]
pub(crate) fn leave<F: Flags>(flags: &F, outer: u8) {
    // `Release`: the thread's uses of its slots happen before a pass's (`owner_out`).
    flags.store_slow(outer, Release);
}

/// The fast paths' side: sets the fast mark and returns `true`, or, while a pass holds
/// the magazines, clears it again and returns `false` (the caller then takes its slow
/// path, which waits). Two stores and a load, no call: the fast paths save no registers.
#[inline(always)]
pub(crate) fn try_enter_fast<F: Flags>(flags: &F) -> bool {
    flags.store_fast(1, Relaxed);
    F::light_fence();
    if flags.load_reclaiming(Acquire) {
        flags.store_fast(0, Relaxed);
        return false;
    }
    true
}

/// The fast paths' side, after their last touch of the magazines.
#[inline(always)]
pub(crate) fn leave_fast<F: Flags>(flags: &F) {
    // `Release`: as in `leave`.
    flags.store_fast(0, Release);
}

/// Waits until the pass that flagged the thread clears the flag. The pass holds it for a
/// bounded walk over the thread's slots and takes no lock meanwhile, so this waits for
/// no lock the caller may hold.
#[cold]
#[inline(never)]
fn wait_while_flagged<F: Flags>(flags: &F) {
    let mut spins = 0u32;
    while flags.load_reclaiming(Acquire) {
        F::pause(spins);
        spins = spins.saturating_add(1);
    }
}

/// The pass's side, first: flags the thread. Then [`F::heavy_fence`](Flags::heavy_fence)
/// (once for all the threads flagged), then [`owner_out`].
pub(crate) fn flag<F: Flags>(flags: &F) {
    flags.store_reclaiming(true, Relaxed);
}

/// Whether the thread is out of its magazines (neither mark set), after [`flag`] and
/// the heavy fence: then the pass may use the thread's slots until [`unflag`].
pub(crate) fn owner_out<F: Flags>(flags: &F) -> bool {
    // `Acquire`: the thread's last use of its slots (its `leave`) happens before.
    flags.load_fast(Acquire) == 0 && flags.load_slow(Acquire) == 0
}

/// The pass's side, last: lets the thread go on.
pub(crate) fn unflag<F: Flags>(flags: &F) {
    // `Release`: the pass's changes to the slots happen before the thread's next use.
    flags.store_reclaiming(false, Release);
}

/// A loom model of the handshake: whatever the interleaving, the thread and the pass
/// never use the slots at once (loom's `UnsafeCell` checks every access), the thread
/// sees what the pass did, and nested calls neither wait nor end the outer mark.
/// `RUSTFLAGS="--cfg loom" cargo test -p pagekeep-slab --release --lib loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::{Flags, enter, flag, leave, leave_fast, owner_out, try_enter_fast, unflag};
    use core::sync::atomic::Ordering;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, AtomicU8, fence};

    struct LoomFlags {
        fast: AtomicU8,
        slow: AtomicU8,
        reclaiming: AtomicBool,
    }

    impl Flags for LoomFlags {
        fn load_fast(&self, order: Ordering) -> u8 {
            self.fast.load(order)
        }
        fn store_fast(&self, mark: u8, order: Ordering) {
            self.fast.store(mark, order);
        }
        fn load_slow(&self, order: Ordering) -> u8 {
            self.slow.load(order)
        }
        fn store_slow(&self, mark: u8, order: Ordering) {
            self.slow.store(mark, order);
        }
        fn load_reclaiming(&self, order: Ordering) -> bool {
            self.reclaiming.load(order)
        }
        fn store_reclaiming(&self, flag: bool, order: Ordering) {
            self.reclaiming.store(flag, order);
        }
        fn light_fence() {
            fence(Ordering::SeqCst);
        }
        fn heavy_fence() -> bool {
            fence(Ordering::SeqCst);
            true
        }
        fn pause(_spins: u32) {
            loom::thread::yield_now();
        }
    }

    /// A thread's slot: the number of objects its magazine holds.
    struct Shared {
        flags: LoomFlags,
        slot: UnsafeCell<u32>,
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            flags: LoomFlags {
                fast: AtomicU8::new(0),
                slow: AtomicU8::new(0),
                reclaiming: AtomicBool::new(false),
            },
            slot: UnsafeCell::new(4),
        })
    }

    /// The pass: takes the slot's objects if the thread is out; returns how many.
    fn pass(shared: &Shared) -> u32 {
        flag(&shared.flags);
        assert!(LoomFlags::heavy_fence());
        let taken = if owner_out(&shared.flags) {
            // SAFETY: (model) exclusive by the handshake, which loom checks.
            shared
                .slot
                .with_mut(|slot| unsafe { core::mem::take(&mut *slot) })
        } else {
            0
        };
        unflag(&shared.flags);
        taken
    }

    /// One fast-path operation: takes an object if there is one; `false` if it had to
    /// go to the slow path instead.
    fn fast_operation(shared: &Shared, used: &mut u32) -> bool {
        if !try_enter_fast(&shared.flags) {
            return false;
        }
        // SAFETY: (model) inside the fast path's mark, checked by loom.
        shared.slot.with_mut(|slot| unsafe {
            if *slot > 0 {
                *slot -= 1;
                *used += 1;
            }
        });
        leave_fast(&shared.flags);
        true
    }

    /// One slow-path operation: the same, after waiting for the pass.
    fn slow_operation(shared: &Shared, used: &mut u32) {
        let outer = enter(&shared.flags);
        // SAFETY: (model) inside the slow path's mark.
        shared.slot.with_mut(|slot| unsafe {
            if *slot > 0 {
                *slot -= 1;
                *used += 1;
            }
        });
        leave(&shared.flags, outer);
    }

    #[test]
    fn the_thread_and_a_pass_never_use_the_slot_at_once() {
        loom::model(|| {
            let shared = shared();
            let reclaimer = {
                let shared = Arc::clone(&shared);
                loom::thread::spawn(move || pass(&shared))
            };
            // Two operations, each through the fast path or, when flagged, the slow one.
            let mut used = 0;
            for _ in 0..2 {
                if !fast_operation(&shared, &mut used) {
                    slow_operation(&shared, &mut used);
                }
            }
            let taken = reclaimer.join().unwrap();
            // SAFETY: (model) both sides are done.
            let left = shared.slot.with(|slot| unsafe { *slot });
            assert_eq!(used + taken + left, 4, "no object lost or handed out twice");
        });
    }

    #[test]
    fn a_fast_path_nested_in_a_slow_one_keeps_the_slow_mark() {
        loom::model(|| {
            let shared = shared();
            let reclaimer = {
                let shared = Arc::clone(&shared);
                loom::thread::spawn(move || pass(&shared))
            };
            let outer = enter(&shared.flags);
            // A constructor or destructor that allocates, in the middle of the slow path.
            let mut used = 0;
            if !fast_operation(&shared, &mut used) {
                slow_operation(&shared, &mut used);
            }
            // SAFETY: (model) still inside the outer slow path.
            shared.slot.with_mut(|slot| unsafe { *slot += 1 });
            leave(&shared.flags, outer);
            reclaimer.join().unwrap();
        });
    }

    /// A signal handler that runs between a slow path's mark and its check: modelled as
    /// a nested slow path that starts right after the outer mark is stored, before the
    /// outer call looks at the flag.
    #[test]
    fn a_slow_path_nested_inside_the_outer_check_is_still_excluded() {
        loom::model(|| {
            let shared = shared();
            let reclaimer = {
                let shared = Arc::clone(&shared);
                loom::thread::spawn(move || pass(&shared))
            };
            let flags = &shared.flags;
            let outer = flags.load_slow(Ordering::Relaxed);
            flags.store_slow(1, Ordering::Relaxed);
            // The handler.
            let mut used = 0;
            slow_operation(&shared, &mut used);
            // The rest of the outer `enter`, and its use.
            LoomFlags::light_fence();
            while flags.load_reclaiming(Ordering::Acquire) {
                loom::thread::yield_now();
            }
            // SAFETY: (model) inside the outer use.
            shared.slot.with_mut(|slot| unsafe { *slot += 1 });
            leave(flags, outer);
            reclaimer.join().unwrap();
        });
    }
}
