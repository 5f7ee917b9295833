//! [`ArenaRouter`]: a global allocator that serves a thread's allocations from the arena
//! it has entered, and everything else from a fallback allocator.
//!
//! See [`ArenaRouter`] for the routing path and the budget contract.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr::{self, NonNull};

use crate::pool::{self, Entered, SpillAccount};
use crate::spill;

/// Records a spill of the current lease of `account` so that freeing it credits the
/// lease; small spills, and large ones when the table is full, stay charged until it
/// ends.
#[inline]
fn record_spill(ptr: *mut u8, bytes: usize, account: SpillAccount) {
    if bytes >= spill::TRACKED_MIN_BYTES {
        let _ = spill::record(ptr.addr(), bytes, account, account.generation());
    }
}

/// A [`GlobalAlloc`] that serves each thread's allocations from the arena it has entered
/// ([`PooledArena::enter`](crate::PooledArena::enter)) and all others from `F`; frees and reallocations are routed
/// by address from any thread.
///
/// # The routing path
///
/// While the thread panics (from the panic, through the panic hook, until it is caught)
/// every allocation goes to `F`: the hook's message and backtrace, and what std caches
/// for good while symbolising it, must neither fill the arena nor keep it quarantined.
///
/// `alloc` reads one thread-local pointer: null means "not in an arena" and the request
/// goes to the fallback `F`; otherwise it is a bump in the entered arena. `dealloc` reads
/// the same pointer and, for a block of the entered arena (one range compare), bumps back
/// if it is the latest allocation and counts one allocation less, without atomics. Other
/// frees, and `realloc`, find the arena of a pointer by address (a registered pool's
/// range check, then one subtraction and one division by the power-of-two slot stride, a
/// shift), so memory is routed back correctly from any thread; a free of `F`'s memory is
/// one call further, out of line. The path takes no lock, allocates nothing and has no
/// panic: thread-locals have `const` initialisers and no destructors, indexing is
/// unchecked after a range check, counters wrap. The one exception, still
/// non-blocking, is the rare free that settles a quarantined arena: it resets the arena
/// (an `madvise` for pages above its warm watermark, if any), pushes it on the pool's
/// lock-free free stack and, only if someone is waiting for an arena, flags it for the
/// pool's lock holders or `try_lock`s the pool (never waits) to hand it on, unparking a
/// blocking waiter or the pool's servant thread. It never calls a `Waker` or any other user code (see the crate docs,
/// "Leases, guards and quarantine").
///
/// # Budgets: why the router never unwinds and rarely returns null
///
/// Unwinding out of `GlobalAlloc` is undefined behaviour, and Rust aborts the process
/// when an infallible allocation (`Box::new`, `Vec::push`) gets null. So running out of
/// arena must be neither a panic nor, in the usual case, a null. Instead an allocation
/// that does not fit spills to `F`, is charged to the lease in live bytes
/// ([`PooledArena::spilled_bytes`](crate::PooledArena::spilled_bytes): credited when freed, a reallocation charges only the
/// difference) and raises the arena's over-budget flag
/// ([`PooledArena::is_over_budget`](crate::PooledArena::is_over_budget)). The executor reads the flag and cancels the
/// request at its next poll (its future is dropped, destructors run, the client gets an
/// error). Fallible paths (`try_reserve`, the arena's `try_*`) see errors directly. Only
/// beyond the hard cap ([`PoolConfig::spill_limit_bytes`](crate::PoolConfig::spill_limit_bytes),
/// the process's safety net, by default 64 times the arena) does a routed allocation
/// return null; an infallible one then aborts the process, as any allocation failure
/// does in Rust. With feature `fail-over-budget`, for nightly builds whose allocation
/// error hook panics, the first routed allocation past the arena fails instead, so the
/// request unwinds there (see the crate docs, "Budgets").
///
/// # Examples
///
/// ```
/// use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig};
/// use std::alloc::System;
///
/// #[global_allocator]
/// static GLOBAL: ArenaRouter<System> = ArenaRouter::new(System);
///
/// # // Runs natively; under miri, which runs the doctests too, the pool's 16 MiB take
/// # // too long (the router's own tests run there, with smaller pools).
/// # if cfg!(miri) { return Ok(()); }
/// let pool = ArenaPool::new(PoolConfig::new(16, 1 << 20))?.into_static()?;
/// let lease = pool.acquire();
/// let text = lease.run(|| format!("{} in an arena", 42));
/// assert_eq!(text, "42 in an arena");
/// drop(text); // freed back into the arena from outside it
/// drop(lease);
/// # Ok::<(), pagekeep_arena::PoolError>(())
/// ```
pub struct ArenaRouter<F> {
    fallback: F,
}

impl<F> ArenaRouter<F> {
    /// A router over `fallback`.
    pub const fn new(fallback: F) -> Self {
        ArenaRouter { fallback }
    }

    /// The fallback allocator.
    pub const fn fallback(&self) -> &F {
        &self.fallback
    }
}

impl<F: fmt::Debug> fmt::Debug for ArenaRouter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaRouter")
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl<F: GlobalAlloc> ArenaRouter<F> {
    /// Serves a routed request that does not fit the entered arena from `F`, charging
    /// the lease; with feature `fail-over-budget`, fails the first one of the lease
    /// instead (the crate docs, "Budgets").
    ///
    /// # Safety
    /// - `layout` has a non-zero size (as `GlobalAlloc::alloc` requires).
    #[cold]
    #[inline(never)]
    unsafe fn spill(&self, entered: Entered, layout: Layout, zeroed: bool) -> *mut u8 {
        let account = entered.account();
        let was_over_budget = account.raise_over_budget();
        if cfg!(feature = "fail-over-budget") && !was_over_budget {
            return ptr::null_mut();
        }
        let size = layout.size();
        if !account.charge(size) {
            return ptr::null_mut();
        }
        // SAFETY: forwarded from the caller.
        let ptr = unsafe {
            if zeroed {
                self.fallback.alloc_zeroed(layout)
            } else {
                self.fallback.alloc(layout)
            }
        };
        if ptr.is_null() {
            account.credit(account.generation(), size);
        } else {
            record_spill(ptr, size, account);
        }
        ptr
    }

    /// Frees a block that is not in the thread's entered arena (`current`, as
    /// `pool::current` read it): one of another slot of a registered pool (found by
    /// address, freed with one atomic count), or `F`'s.
    ///
    /// # Safety
    /// - As `GlobalAlloc::dealloc`, for `ptr` and `layout`.
    #[inline]
    unsafe fn dealloc_elsewhere(&self, current: Option<Entered>, ptr: *mut u8, layout: Layout) {
        match pool::locate(ptr.addr()) {
            Some(routed) => {
                #[cfg(feature = "debug-poison")]
                // SAFETY: the allocation is dead from now on and `layout.size()` bytes
                // long.
                unsafe {
                    ptr.write_bytes(crate::POISON_BYTE, layout.size())
                };
                // SAFETY: a located pointer lies inside a slot, so it is not null; it is
                // a live routed allocation of `layout` there, freed once.
                unsafe { routed.free(current, NonNull::new_unchecked(ptr), layout) }
            }
            // SAFETY: forwarded from the caller; not arena memory.
            None => unsafe { self.dealloc_fallback(ptr, layout) },
        }
    }

    /// Frees a block of `F`, crediting the lease it was spilled for, if any. Out of line,
    /// so that the arena paths of `dealloc` need none of `F`'s registers.
    ///
    /// # Safety
    /// - As `GlobalAlloc::dealloc`, for `ptr` and `layout`; `F` made the block.
    #[inline(never)]
    unsafe fn dealloc_fallback(&self, ptr: *mut u8, layout: Layout) {
        if let Some(spill) = spill::take(ptr.addr(), layout.size()) {
            spill.account.credit(spill.lease, spill.bytes);
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.fallback.dealloc(ptr, layout) }
    }

    /// Reallocates a spilled block `spill` of the entered slot's current lease in `F`,
    /// charging or crediting only the difference in size.
    ///
    /// # Safety
    /// - As `GlobalAlloc::realloc`, for `ptr`, `layout` and `new_size`; `spill` was taken
    ///   from the table for `ptr`.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_spilled(
        &self,
        spill: spill::Spill,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
    ) -> *mut u8 {
        let account = spill.account;
        let old = spill.bytes;
        let growth = new_size.saturating_sub(old);
        if growth > 0 && !account.charge(growth) {
            record_spill(ptr, old, account);
            return ptr::null_mut();
        }
        // SAFETY: forwarded from the caller; `F` made the block.
        let moved = unsafe { self.fallback.realloc(ptr, layout, new_size) };
        if moved.is_null() {
            if growth > 0 {
                account.credit(spill.lease, growth);
            }
            record_spill(ptr, old, account);
            return moved;
        }
        if new_size < old {
            account.credit(spill.lease, old - new_size);
        }
        record_spill(moved, new_size, account);
        moved
    }
}

// SAFETY: arena memory is handed out by a bump allocator that only the entering thread
// uses and never reuses while a routed allocation from it is live (counted reuse, see
// `pool`); everything else is `F`'s, which keeps its own promises. Frees are routed by
// address, so each block goes back to where it came from. Nothing here unwinds.
unsafe impl<F: GlobalAlloc> GlobalAlloc for ArenaRouter<F> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match pool::current_for_alloc() {
            // SAFETY: forwarded from the caller.
            None => unsafe { self.fallback.alloc(layout) },
            Some(entered) => match entered.try_alloc(layout) {
                Ok(ptr) => ptr.as_ptr(),
                // SAFETY: forwarded from the caller.
                Err(_) => unsafe { self.spill(entered, layout, false) },
            },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match pool::current_for_alloc() {
            // SAFETY: forwarded from the caller.
            None => unsafe { self.fallback.alloc_zeroed(layout) },
            Some(entered) => match entered.try_alloc(layout) {
                Ok(ptr) => {
                    // SAFETY: fresh memory of `layout.size()` bytes, possibly reused
                    // dirty.
                    unsafe { ptr.write_bytes(0, layout.size()) };
                    ptr.as_ptr()
                }
                // SAFETY: forwarded from the caller.
                Err(_) => unsafe { self.spill(entered, layout, true) },
            },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The entered arena first: one thread-local load and one range compare, then a
        // bump back or nothing, and one count less, without atomics.
        let current = pool::current();
        if let Some(entered) = current
            && entered.holds(ptr.addr())
        {
            #[cfg(feature = "debug-poison")]
            // SAFETY: the allocation is dead from now on and `layout.size()` bytes long.
            unsafe {
                ptr.write_bytes(crate::POISON_BYTE, layout.size())
            };
            // SAFETY: the pointer lies inside the entered slot, so it is not null; it is a
            // live routed allocation of `layout` there (the router made it, and routed
            // allocations of the slot's earlier leases were all freed before it was
            // reused), freed once.
            unsafe { entered.free(NonNull::new_unchecked(ptr), layout) };
            return;
        }
        // SAFETY: forwarded from the caller; not in the entered arena.
        unsafe { self.dealloc_elsewhere(current, ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller promises `new_size`, rounded up to `layout.align()`, does not
        // overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // While the thread panics, `None`: a routed block is moved to the fallback
        // allocator rather than grown in the arena.
        let current = pool::current_for_alloc();
        match pool::locate(ptr.addr()) {
            Some(routed) => {
                // SAFETY: a located pointer lies inside a slot, so it is not null.
                let old = unsafe { NonNull::new_unchecked(ptr) };
                // SAFETY: `old` is a live routed allocation of `layout` in that slot, and
                // `new_layout` is non-zero; it stays counted once either way.
                let moved = unsafe { routed.try_realloc(current, old, layout, new_layout) };
                if let Some(moved) = moved {
                    return moved.as_ptr();
                }
            }
            None => {
                if let Some(spill) = spill::take(ptr.addr(), layout.size()) {
                    if current.is_some_and(|entered| entered.account().same_slot(spill.account))
                        && spill.account.generation() == spill.lease
                    {
                        // SAFETY: forwarded from the caller.
                        return unsafe { self.realloc_spilled(spill, ptr, layout, new_size) };
                    }
                    // Leaving the lease it was charged to: credit it; the block is moved
                    // below, or reallocated as plain fallback memory.
                    spill.account.credit(spill.lease, spill.bytes);
                }
                if current.is_none() {
                    // SAFETY: not arena memory and no route: `F` reallocates its own
                    // block.
                    return unsafe { self.fallback.realloc(ptr, layout, new_size) };
                }
            }
        }
        // Move: the new block is routed by this thread's route, the old one by address.
        // SAFETY: `new_layout` is valid and non-zero (as `realloc` requires).
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks are live and distinct; the smaller size is in both.
            unsafe { ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size)) };
            // SAFETY: the old block, freed once, routed by address.
            unsafe { self.dealloc(ptr, layout) };
        }
        moved
    }
}
