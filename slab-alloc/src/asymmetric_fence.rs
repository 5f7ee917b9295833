//! An asymmetric fence: a cheap half for the side that runs all the time and an
//! expensive half for the side that runs rarely.
//!
//! A thread's magazines are used by the thread on every allocation and free, and taken
//! from it by a decay pass only when the thread has been idle for a while
//! ([`crate::registry::reclaim_threads`]). The two sides exclude each other as in
//! Dekker's algorithm ([`crate::handshake`]): each stores its own flag, fences, then loads the other's flag, and
//! the fences guarantee that at least one of them sees the other's store. Two `SeqCst`
//! fences would do, but a full fence on every allocation costs more than the allocation.
//! So the owner's half, [`light`], is a compiler fence only, and the pass's half,
//! [`heavy`], makes every running thread of the process execute a full memory barrier
//! (Linux `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`): a thread that is not running
//! has passed through a context switch, which is one. Together they order a store
//! before a load on both sides, as the pair of `SeqCst` fences would (the same
//! construction as the asymmetric barriers of userspace RCU and of hazard-pointer
//! libraries).
//!
//! Where no such call exists (other systems, or a kernel or sandbox that refuses it),
//! [`heavy`] returns `false` and the pass leaves other threads' magazines alone. Under
//! miri both halves are `SeqCst` fences, which miri models.

// Without the `reclaim-idle-threads` feature only the pass side is compiled in (and
// does nothing); the loom model still checks the whole protocol.
#![cfg_attr(not(feature = "reclaim-idle-threads"), allow(dead_code))]

use core::sync::atomic::{self, Ordering::SeqCst};

/// The owner's half: orders the owner's store of its in-use flag before its load of the
/// reclaim flag, given that the other side calls [`heavy`].
#[inline(always)]
pub(crate) fn light() {
    #[cfg(miri)]
    atomic::fence(SeqCst);
    #[cfg(not(miri))]
    atomic::compiler_fence(SeqCst);
}

/// The rare side's half: returns `true` once every thread of the process has executed a
/// full memory barrier (so their earlier stores are visible to the caller and their later
/// loads see the caller's earlier stores), `false` if that cannot be done here (then the
/// caller must not rely on it).
pub(crate) fn heavy() -> bool {
    #[cfg(miri)]
    {
        atomic::fence(SeqCst);
        true
    }
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        linux::barrier_on_every_thread()
    }
    #[cfg(not(any(miri, target_os = "linux")))]
    {
        false
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
mod linux {
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (linux/membarrier.h).
    const PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    /// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`.
    const REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    /// 0: not known yet; 1: works; 2: refused (old kernel, seccomp filter).
    static STATE: AtomicU8 = AtomicU8::new(0);

    fn membarrier(command: libc::c_int) -> bool {
        // SAFETY: `membarrier` takes a command, flags and a CPU number and touches no
        // memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, command, 0, 0) == 0 }
    }

    pub(super) fn barrier_on_every_thread() -> bool {
        if STATE.load(Relaxed) == 2 {
            return false;
        }
        if membarrier(PRIVATE_EXPEDITED) {
            STATE.store(1, Relaxed);
            return true;
        }
        // The process must register first (once; a child of `fork` may need to again).
        if membarrier(REGISTER_PRIVATE_EXPEDITED) && membarrier(PRIVATE_EXPEDITED) {
            STATE.store(1, Relaxed);
            return true;
        }
        STATE.store(2, Relaxed);
        false
    }
}
