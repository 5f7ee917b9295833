//! A spin lock that never allocates, never parks through the global allocator, and can
//! be taken and released by raw calls (the fork handlers need that).

use core::hint;
use core::sync::atomic::{AtomicBool, Ordering};

/// What a thread waiting for another does at its `spins`-th look: spins, then yields its
/// time slice (`sched_yield`), then sleeps 50 µs (`nanosleep`); none allocates. The
/// sleep matters for a thread of a real-time class: yielding leaves it runnable at its
/// higher priority, so a holder of lower priority on the same processor would never run
/// again (until the kernel's real-time throttling, up to a second later).
pub(crate) fn back_off(spins: u32) {
    if spins < 64 {
        hint::spin_loop();
    } else if spins < 128 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(core::time::Duration::from_micros(50));
    }
}

/// A test-and-test-and-set lock. Holders keep it for a handful of list operations; a
/// waiter backs off ([`back_off`]).
#[derive(Debug)]
pub(crate) struct RawSpinLock {
    locked: AtomicBool,
    /// Whether the lock is held by the thread that is forking, taken by the registry's
    /// `prepare` handler: set right after taking it there, cleared before the `parent`
    /// or `child` handler releases it. Together with that thread's [`FORKING`] flag it
    /// lets the forking thread re-enter the lock (see [`RawSpinLock::mark_held_for_fork`]).
    held_for_fork: AtomicBool,
}

std::thread_local! {
    /// Whether this thread is between the registry's `prepare` handler and its `parent`
    /// or `child` handler, holding every lock marked [`RawSpinLock::held_for_fork`].
    /// Const-initialised, no destructor: reading it allocates nothing.
    static FORKING: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Records that the calling thread now holds (`true`) or no longer holds (`false`)
/// the locks taken for `fork` by the registry's handlers.
#[cfg(all(unix, not(miri)))]
pub(crate) fn set_forking(forking: bool) {
    FORKING.with(|flag| flag.set(forking));
}

impl RawSpinLock {
    /// An unlocked lock.
    pub(crate) const fn new() -> Self {
        RawSpinLock {
            locked: AtomicBool::new(false),
            held_for_fork: AtomicBool::new(false),
        }
    }

    /// Takes the lock, waiting as long as it takes, and returns `true`; or returns
    /// `false` at once, taking nothing, if the calling thread is forking and already holds
    /// the lock for the fork (see [`mark_held_for_fork`](Self::mark_held_for_fork)).
    #[inline]
    pub(crate) fn lock(&self) -> bool {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
        self.lock_contended()
    }

    /// Takes the lock and returns a guard, and whether the lock was held by another
    /// thread at the first attempt (contention, which the magazine layer measures).
    #[inline]
    pub(crate) fn guard_noting_contention(&self) -> (LockGuard<'_>, bool) {
        let contended = self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err();
        let release = !contended || self.lock_contended();
        (
            LockGuard {
                lock: self,
                release,
            },
            contended,
        )
    }

    /// The waiting part of [`lock`](Self::lock): `true` once the lock is taken, `false`
    /// if the calling thread holds it for a fork (nothing taken).
    #[cold]
    fn lock_contended(&self) -> bool {
        if self.held_for_fork.load(Ordering::Relaxed) && FORKING.with(core::cell::Cell::get) {
            return false;
        }
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                back_off(spins);
                spins = spins.saturating_add(1);
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Marks the lock, which the calling thread has just taken with
    /// [`lock`](Self::lock) in a `fork` prepare handler, as held for the fork: until
    /// [`release_after_fork`](Self::release_after_fork), this thread re-enters it
    /// (taking it returns at once, releasing the guard leaves it held) once it has called
    /// [`set_forking`]`(true)`. glibc runs the prepare handlers in the reverse order of
    /// registration, so those registered before the registry's run after it, and may
    /// allocate: the forking thread then holds every lock, so no other thread is inside a
    /// section they guard, and working on the state without taking them again is sound.
    ///
    /// # Safety
    /// - The calling thread holds the lock, taken for the fork.
    #[cfg(all(unix, not(miri)))]
    pub(crate) unsafe fn mark_held_for_fork(&self) {
        self.held_for_fork.store(true, Ordering::Relaxed);
    }

    /// Releases a lock taken for a fork: clears the mark and unlocks it, if
    /// [`mark_held_for_fork`](Self::mark_held_for_fork) marked it; leaves it alone if
    /// not (a lock that appeared during the fork, for instance of a cache created by a
    /// prepare handler, was never taken for it).
    ///
    /// # Safety
    /// - The caller is the thread that marked the lock (in the parent, or the only
    ///   thread of the child), in a `parent` or `child` handler.
    #[cfg(all(unix, not(miri)))]
    pub(crate) unsafe fn release_after_fork(&self) {
        if self.held_for_fork.swap(false, Ordering::Relaxed) {
            // SAFETY: marked, so held by this thread for the fork (caller).
            unsafe { self.unlock() };
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// - The caller holds the lock (took it with [`lock`](Self::lock) and has not
    ///   released it), or is the only thread of a freshly forked child whose parent
    ///   held it for the fork.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        debug_assert!(self.locked.load(Ordering::Relaxed), "unlock of a free lock");
        self.locked.store(false, Ordering::Release);
    }

    /// Takes the lock if it is free, without waiting.
    #[inline]
    pub(crate) fn try_guard(&self) -> Option<LockGuard<'_>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // Lazily: a guard made for a failed attempt would release another's lock.
            .then(|| LockGuard {
                lock: self,
                release: true,
            })
    }

    /// Takes the lock and returns a guard that releases it when dropped (also when
    /// unwinding).
    #[inline]
    pub(crate) fn guard(&self) -> LockGuard<'_> {
        let release = self.lock();
        LockGuard {
            lock: self,
            release,
        }
    }
}

/// A value alone on its cache lines (128 bytes: two 64-byte lines, since the adjacent-line
/// prefetcher of x86 fetches lines in pairs), so writes to it do not slow down readers
/// of neighbouring fields, and the other way round.
#[derive(Debug)]
#[repr(C, align(128))]
pub(crate) struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Pads `value`.
    pub(crate) const fn new(value: T) -> Self {
        CachePadded { value }
    }
}

impl<T> core::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Holds a [`RawSpinLock`] until dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub(crate) struct LockGuard<'a> {
    lock: &'a RawSpinLock,
    /// Whether dropping the guard releases the lock: `false` for a lock re-entered by
    /// the forking thread, which keeps it until the fork's `parent` or `child` handler.
    release: bool,
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.release {
            // SAFETY: a releasing guard exists only while its lock is held by this
            // thread, which took it for the guard.
            unsafe { self.lock.unlock() };
        }
    }
}

/// Prints `message` and the given addresses to standard error without allocating, then
/// aborts. For corruption detected inside the allocator, where unwinding is not allowed.
#[cold]
#[inline(never)]
pub(crate) fn fatal(message: &str, first: usize, second: usize) -> ! {
    fn write_all(bytes: &[u8]) {
        // A failed write is ignored: we are about to abort.
        crate::sys::write_stderr(bytes);
    }
    fn hex(value: usize) -> ([u8; 18], usize) {
        let mut out = [b'0'; 18];
        out[1] = b'x';
        let mut digits = [0u8; 16];
        let mut n = value;
        let mut len = 0;
        loop {
            digits[len] = b"0123456789abcdef"[n & 15];
            len += 1;
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            out[2 + i] = digits[len - 1 - i];
        }
        (out, 2 + len)
    }
    write_all(b"pagekeep-slab: fatal: ");
    write_all(message.as_bytes());
    let (text, len) = hex(first);
    write_all(b" (");
    write_all(&text[..len]);
    let (text, len) = hex(second);
    write_all(b", ");
    write_all(&text[..len]);
    write_all(b")\n");
    std::process::abort()
}

/// Aborts the process if dropped while unwinding: wrap code that must not unwind (a
/// user constructor run under a lock, the C ABI's entry points).
#[derive(Debug)]
pub struct AbortOnUnwind {
    /// What the guarded code was doing, for the message.
    pub what: &'static str,
}

impl Drop for AbortOnUnwind {
    #[inline]
    fn drop(&mut self) {
        if std::thread::panicking() {
            fatal(self.what, 0, 0);
        }
    }
}
