//! [`ArenaRouter`]: a global allocator that serves a thread's allocations from the arena
//! it has entered, and everything else from a fallback allocator.
//!
//! See [`ArenaRouter`] for the routing path and the budget contract.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use mmap_alloc::{DefaultPages, PageSource};

use crate::pool::{PoolCore, PooledArena, Slot};
use crate::spill;

/// How many pools can be registered with the router.
pub const MAX_POOLS: usize = 32;

/// The registered pools: their source-independent part, so pools over any page source
/// share the registry and the routing path is the same for all.
static POOLS: [AtomicPtr<PoolCore>; MAX_POOLS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_POOLS];
/// Registry entries claimed (may exceed `MAX_POOLS` after failed claims).
static CLAIMED: AtomicUsize = AtomicUsize::new(0);
/// Registry entries that may be filled: readers look at `0..PUBLISHED`.
static PUBLISHED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The slot this thread routes to, or null.
    static CURRENT: Cell<*const Slot> = const { Cell::new(ptr::null()) };
    /// The token of the innermost live guard (0: none, or broken by an out-of-order drop).
    static TOKEN: Cell<u64> = const { Cell::new(0) };
    /// The next token to hand out on this thread.
    static NEXT_TOKEN: Cell<u64> = const { Cell::new(1) };
}

/// Registers a pool so that frees of its memory are routed to it; idempotent.
/// Returns `false` when the registry is full.
pub(crate) fn register(pool: &'static PoolCore) -> bool {
    if pool.registered.load(Ordering::Acquire) {
        return true;
    }
    // Serialise registrations of this pool: only one thread may claim an entry for it.
    static REGISTERING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = REGISTERING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if pool.registered.load(Ordering::Acquire) {
        return true;
    }
    let index = CLAIMED.fetch_add(1, Ordering::AcqRel);
    if index >= MAX_POOLS {
        return false;
    }
    POOLS[index].store(ptr::from_ref(pool).cast_mut(), Ordering::Release);
    PUBLISHED.fetch_max(index + 1, Ordering::AcqRel);
    pool.registered.store(true, Ordering::Release);
    true
}

/// The registered pool and slot holding `address`, if any.
#[inline(always)]
fn locate(address: usize) -> Option<(&'static PoolCore, &'static Slot)> {
    let published = PUBLISHED.load(Ordering::Acquire).min(MAX_POOLS);
    for entry in &POOLS[..published] {
        let pool = entry.load(Ordering::Acquire);
        if pool.is_null() {
            continue;
        }
        // SAFETY: registered pools are `'static` and never dropped.
        let pool: &'static PoolCore = unsafe { &*pool };
        if let Some(slot) = pool.slot_of(address) {
            return Some((pool, slot));
        }
    }
    None
}

/// Runs `body` with routing switched off on this thread: its allocations come from the
/// fallback allocator and may outlive the arena (caches, connection state, anything that
/// outlives the request). Restored afterwards, also when `body` unwinds.
///
/// # Examples
///
/// ```
/// let kept: Vec<u8> = arena_alloc::outside_arena(|| vec![1, 2, 3]);
/// assert_eq!(kept.len(), 3);
/// ```
pub fn outside_arena<R>(body: impl FnOnce() -> R) -> R {
    let _guard = RouteGuard::push(ptr::null());
    body()
}

/// Whether this thread currently routes its allocations to an arena.
pub fn in_arena() -> bool {
    !CURRENT.get().is_null()
}

/// Sets the thread's route and restores the previous one when dropped, if (and only if)
/// it is still the innermost route: a guard dropped out of order switches routing off
/// instead, so the thread never routes to an arena whose guard is gone.
struct RouteGuard {
    token: u64,
    previous: *const Slot,
    previous_token: u64,
}

impl RouteGuard {
    #[inline]
    fn push(slot: *const Slot) -> RouteGuard {
        let token = NEXT_TOKEN.get();
        NEXT_TOKEN.set(token.wrapping_add(1));
        let previous = CURRENT.replace(slot);
        let previous_token = TOKEN.replace(token);
        RouteGuard {
            token,
            previous,
            previous_token,
        }
    }
}

impl Drop for RouteGuard {
    #[inline]
    fn drop(&mut self) {
        if TOKEN.get() == self.token {
            CURRENT.set(self.previous);
            TOKEN.set(self.previous_token);
        } else {
            CURRENT.set(ptr::null());
            TOKEN.set(0);
        }
    }
}

/// An entered lease: while the guard is alive, the thread's global allocations (through
/// [`ArenaRouter`]) come from the lease's arena. Made by [`PooledArena::enter`], which
/// moves the lease into the guard; [`exit`](ArenaGuard::exit) gives it back, and
/// dropping the guard (also during unwinding) leaves the arena and then releases the
/// lease.
///
/// The guard owns the lease and is `!Send`, so while the thread routes to the arena no
/// other thread can reach the lease, and the lease cannot be released. Forgetting the
/// guard (`mem::forget`) forgets the lease inside it: the thread may go on routing to
/// the arena, and the arena is never used by anyone else nor reused. Memory leaks;
/// nothing races.
///
/// Guards nest; dropping them out of order switches routing off for the thread (until
/// the next `enter` or [`run`](PooledArena::run)), so a thread never routes to an arena
/// whose guard is gone.
///
/// # Examples
///
/// ```
/// use arena_alloc::{ArenaPool, PoolConfig, in_arena};
///
/// let pool = ArenaPool::new(PoolConfig::new(1, 1 << 20))?.into_static()?;
/// let guard = pool.try_acquire().expect("a free arena").enter();
/// assert!(in_arena());
/// let lease = guard.exit();
/// assert!(!in_arena());
/// drop(lease);
/// # Ok::<(), arena_alloc::PoolError>(())
/// ```
///
/// The lease is in the guard, so it cannot be moved to another thread while entered,
/// not even after the guard is forgotten:
///
/// ```compile_fail,E0382
/// use arena_alloc::{ArenaPool, PoolConfig};
///
/// let pool = ArenaPool::new(PoolConfig::new(1, 1 << 20))?.into_static()?;
/// let lease = pool.try_acquire().expect("a free arena");
/// std::mem::forget(lease.enter());
/// std::thread::spawn(move || lease.alloc(1u8)); // `lease` was moved into the guard
/// # Ok::<(), arena_alloc::PoolError>(())
/// ```
#[must_use = "dropping the guard leaves the arena and releases the lease"]
pub struct ArenaGuard<P: PageSource + 'static = DefaultPages> {
    /// Declared first, so dropped first: the route is gone before the lease is released.
    route: RouteGuard,
    lease: PooledArena<'static, P>,
    /// The route is this thread's: the guard must stay on it.
    _not_send: PhantomData<*const ()>,
}

impl<P: PageSource + 'static> PooledArena<'static, P> {
    /// Routes this thread's global allocations (through [`ArenaRouter`]) to the arena
    /// until the returned guard is dropped or [exits](ArenaGuard::exit). The lease moves
    /// into the guard, which stays on this thread.
    ///
    /// # Panics
    /// When the pool cannot be registered with the router because
    /// [`MAX_POOLS`] others are.
    pub fn enter(self) -> ArenaGuard<P> {
        assert!(
            register(self.pool().core()),
            "arena-alloc: the router's registry of {MAX_POOLS} pools is full"
        );
        ArenaGuard {
            route: RouteGuard::push(self.slot()),
            lease: self,
            _not_send: PhantomData,
        }
    }

    /// Runs `body` with this thread's global allocations routed to the arena, and
    /// restores the previous route afterwards, also when `body` unwinds. The lease stays
    /// borrowed for the call, so it can be neither moved nor released meanwhile, and
    /// `body` cannot keep the route.
    ///
    /// # Panics
    /// When the pool cannot be registered with the router because
    /// [`MAX_POOLS`] others are.
    ///
    /// # Examples
    ///
    /// ```
    /// use arena_alloc::{ArenaPool, PoolConfig, in_arena};
    ///
    /// let pool = ArenaPool::new(PoolConfig::new(1, 1 << 20))?.into_static()?;
    /// let lease = pool.try_acquire().expect("a free arena");
    /// assert!(lease.run(in_arena));
    /// assert!(!in_arena());
    /// # Ok::<(), arena_alloc::PoolError>(())
    /// ```
    pub fn run<R>(&self, body: impl FnOnce() -> R) -> R {
        assert!(
            register(self.pool().core()),
            "arena-alloc: the router's registry of {MAX_POOLS} pools is full"
        );
        let _route = RouteGuard::push(self.slot());
        body()
    }
}

impl<P: PageSource + 'static> ArenaGuard<P> {
    /// Leaves the arena (restoring the previous route, or switching routing off if
    /// guards were dropped out of order) and gives the lease back.
    pub fn exit(self) -> PooledArena<'static, P> {
        let ArenaGuard { route, lease, .. } = self;
        drop(route);
        lease
    }
}

impl<P: PageSource + 'static> Deref for ArenaGuard<P> {
    type Target = PooledArena<'static, P>;

    #[inline]
    fn deref(&self) -> &Self::Target {
        &self.lease
    }
}

impl<P: PageSource + 'static> fmt::Debug for ArenaGuard<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaGuard")
            .field("token", &self.route.token)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Records a spill of the current lease of `slot` so that freeing it credits the lease;
/// small spills, and large ones when the table is full, stay charged until it ends.
#[inline]
fn record_spill(ptr: *mut u8, bytes: usize, slot: &'static Slot) {
    if bytes >= spill::TRACKED_MIN_BYTES {
        let _ = spill::record(ptr.addr(), bytes, slot, slot.spill_generation());
    }
}

/// A [`GlobalAlloc`] that serves each thread's allocations from the arena it has entered
/// ([`PooledArena::enter`]) and all others from `F`; frees and reallocations are routed
/// by address from any thread.
///
/// # The routing path
///
/// `alloc` reads one thread-local pointer: null means "not in an arena" and the request
/// goes to the fallback `F`; otherwise it is a bump in the entered arena. `dealloc` and
/// `realloc` find the arena of a pointer by address (a registered pool's range check,
/// then one subtraction and one division by the power-of-two slot stride, a shift), so
/// memory is routed back correctly from any thread. The path takes no lock, allocates
/// nothing and has no panic: thread-locals have `const` initialisers and no destructors,
/// indexing is unchecked after a range check, counters wrap. The one exception, still
/// non-blocking, is the rare free that settles a quarantined arena: it resets the arena
/// (an `madvise` for pages above its warm watermark, if any), pushes it on the pool's
/// lock-free free stack and, only if someone is waiting for an arena, `try_lock`s the
/// pool (never waits) to hand it on, unparking a blocking waiter or the pool's servant
/// thread. It never calls a `Waker` or any other user code (see the crate docs,
/// "Leases, guards and quarantine").
///
/// # Budgets: why the router never unwinds and rarely returns null
///
/// Unwinding out of `GlobalAlloc` is undefined behaviour, and Rust aborts the process
/// when an infallible allocation (`Box::new`, `Vec::push`) gets null. So running out of
/// arena must be neither a panic nor, in the usual case, a null. Instead an allocation
/// that does not fit spills to `F`, is charged to the lease in live bytes
/// ([`PooledArena::spilled_bytes`]: credited when freed, a reallocation charges only the
/// difference) and raises the arena's over-budget flag
/// ([`PooledArena::is_over_budget`]). The executor reads the flag and cancels the
/// request at its next poll (its future is dropped, destructors run, the client gets an
/// error). Fallible paths (`try_reserve`, the arena's `try_*`) see errors directly. Only
/// beyond the hard cap ([`PoolConfig::spill_limit_bytes`](crate::PoolConfig::spill_limit_bytes),
/// the process's safety net, by default 64 times the arena) does a routed allocation
/// return null; an infallible one then aborts the process, as any allocation failure
/// does in Rust.
///
/// # Examples
///
/// ```no_run
/// use arena_alloc::{ArenaPool, ArenaRouter, PoolConfig};
/// use std::alloc::System;
///
/// #[global_allocator]
/// static GLOBAL: ArenaRouter<System> = ArenaRouter::new(System);
///
/// let pool = ArenaPool::new(PoolConfig::new(16, 1 << 20))?.into_static()?;
/// let lease = pool.acquire();
/// let text = lease.run(|| format!("{} in an arena", 42));
/// assert_eq!(text, "42 in an arena");
/// drop(text); // freed back into the arena from outside it
/// drop(lease);
/// # Ok::<(), arena_alloc::PoolError>(())
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
    /// An allocation in the entered arena, or a spill.
    ///
    /// # Safety
    /// - `slot` is the slot this thread has entered.
    #[inline(always)]
    unsafe fn alloc_routed(&self, slot: &Slot, layout: Layout) -> *mut u8 {
        // SAFETY: this thread entered the slot, so it owns the bump state.
        match unsafe { slot.arena() }.try_alloc_layout(layout) {
            Ok(ptr) => {
                slot.local_live.set(slot.local_live.get().wrapping_add(1));
                ptr.as_ptr()
            }
            // SAFETY: forwarded.
            Err(_) => unsafe { self.spill(slot, layout, false) },
        }
    }

    /// Serves a routed request that does not fit from `F`, charging the arena.
    ///
    /// # Safety
    /// - `layout` has a non-zero size (as `GlobalAlloc::alloc` requires).
    /// - `slot` is the slot this thread has entered.
    #[cold]
    #[inline(never)]
    unsafe fn spill(&self, slot: &Slot, layout: Layout, zeroed: bool) -> *mut u8 {
        slot.over_budget.store(true, Ordering::Release);
        let size = layout.size();
        if !slot.charge_spill(size) {
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
            slot.credit_spill(slot.spill_generation(), size);
        } else {
            // SAFETY: a slot this thread has entered belongs to a registered pool, which
            // is `'static`.
            let slot: &'static Slot = unsafe { &*ptr::from_ref(slot) };
            record_spill(ptr, size, slot);
        }
        ptr
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
        let slot = spill.slot;
        let old = spill.bytes;
        if new_size > old && !slot.charge_spill(new_size - old) {
            record_spill(ptr, old, slot);
            return ptr::null_mut();
        }
        // SAFETY: forwarded from the caller; `F` made the block.
        let moved = unsafe { self.fallback.realloc(ptr, layout, new_size) };
        if moved.is_null() {
            if new_size > old {
                slot.credit_spill(spill.lease, new_size - old);
            }
            record_spill(ptr, old, slot);
            return moved;
        }
        if new_size < old {
            slot.credit_spill(spill.lease, old - new_size);
        }
        record_spill(moved, new_size, slot);
        moved
    }

    /// Frees routed memory.
    ///
    /// # Safety
    /// - `ptr` is a live allocation of `layout` in `slot`, made through the router.
    #[inline]
    unsafe fn free_routed(&self, pool: &PoolCore, slot: &Slot, ptr: *mut u8, layout: Layout) {
        #[cfg(feature = "debug-poison")]
        // SAFETY: the allocation is dead from now on and `layout.size()` bytes long.
        unsafe {
            ptr.write_bytes(crate::POISON_BYTE, layout.size())
        };
        if ptr::eq(CURRENT.get(), slot) {
            // SAFETY: this thread has entered the slot, so it owns the bump state; `ptr`
            // is an allocation of it.
            unsafe {
                let ptr = core::ptr::NonNull::new_unchecked(ptr);
                slot.arena().dealloc(ptr, layout);
            }
            slot.local_live.set(slot.local_live.get().wrapping_sub(1));
        } else {
            slot.remote_free(pool);
        }
    }
}

// SAFETY: arena memory is handed out by a bump allocator that only the entering thread
// uses and never reuses while a routed allocation from it is live (counted reuse, see
// `pool`); everything else is `F`'s, which keeps its own promises. Frees are routed by
// address, so each block goes back to where it came from. Nothing here unwinds.
unsafe impl<F: GlobalAlloc> GlobalAlloc for ArenaRouter<F> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let slot = CURRENT.get();
        if slot.is_null() {
            // SAFETY: forwarded from the caller.
            return unsafe { self.fallback.alloc(layout) };
        }
        // SAFETY: a non-null route is the slot this thread has entered, alive (pools are
        // `'static`).
        unsafe { self.alloc_routed(&*slot, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let slot = CURRENT.get();
        if slot.is_null() {
            // SAFETY: forwarded from the caller.
            return unsafe { self.fallback.alloc_zeroed(layout) };
        }
        // SAFETY: as in `alloc`.
        let slot = unsafe { &*slot };
        // SAFETY: this thread entered the slot.
        match unsafe { slot.arena() }.try_alloc_layout(layout) {
            Ok(ptr) => {
                slot.local_live.set(slot.local_live.get().wrapping_add(1));
                // SAFETY: fresh memory of `layout.size()` bytes, possibly reused dirty.
                unsafe { ptr.write_bytes(0, layout.size()) };
                ptr.as_ptr()
            }
            // SAFETY: forwarded from the caller.
            Err(_) => unsafe { self.spill(slot, layout, true) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match locate(ptr.addr()) {
            // SAFETY: `ptr` is a live allocation in that slot, made through the router.
            Some((pool, slot)) => unsafe { self.free_routed(pool, slot, ptr, layout) },
            None => {
                if let Some(spill) = spill::take(ptr.addr(), layout.size()) {
                    spill.slot.credit_spill(spill.lease, spill.bytes);
                }
                // SAFETY: not arena memory, so `F` made it.
                unsafe { self.fallback.dealloc(ptr, layout) }
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller promises `new_size`, rounded up to `layout.align()`, does not
        // overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let current = CURRENT.get();
        let located = locate(ptr.addr());
        match located {
            Some((_, slot)) if ptr::eq(current, slot) => {
                // SAFETY: this thread entered the slot and `ptr` is its allocation.
                let arena = unsafe { slot.arena() };
                // SAFETY: a located pointer lies inside a slot, so it is not null.
                let old = unsafe { core::ptr::NonNull::new_unchecked(ptr) };
                // SAFETY: `old` is live with `layout`; it stays counted once either way.
                if let Ok(moved) = unsafe { arena.try_realloc(old, layout, new_layout) } {
                    return moved.as_ptr();
                }
            }
            None => {
                if let Some(spill) = spill::take(ptr.addr(), layout.size()) {
                    if ptr::eq(current, spill.slot) && spill.slot.spill_generation() == spill.lease
                    {
                        // SAFETY: forwarded from the caller.
                        return unsafe { self.realloc_spilled(spill, ptr, layout, new_size) };
                    }
                    // Leaving the lease it was charged to: credit it; the block is moved
                    // below, or reallocated as plain fallback memory.
                    spill.slot.credit_spill(spill.lease, spill.bytes);
                }
                if current.is_null() {
                    // SAFETY: not arena memory and no route: `F` reallocates its own
                    // block.
                    return unsafe { self.fallback.realloc(ptr, layout, new_size) };
                }
            }
            _ => {}
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
