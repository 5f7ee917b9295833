//! [`ArenaPool`]: one reservation split into N arenas of fixed capacity, handed out as
//! [`PooledArena`] leases, with counted reuse; and the thread's route to a lease, which
//! [`ArenaRouter`](crate::ArenaRouter) follows.
//!
//! This module owns every transition of an arena's slot; the router reaches slots only
//! through three narrow handles: [`Entered`](route::Entered) (this thread routes to a
//! leased slot: bump, free and reallocate in it), [`Routed`](registry::Routed) (a slot
//! found by the address of a routed allocation: free it from any thread) and
//! [`SpillAccount`] (charge and credit spills, raise the over-budget flag).
//!
//! | file | what it holds |
//! |---|---|
//! | `slot.rs` | the slot state machine: lease, release, quarantine, the last remote free, recycling |
//! | `route.rs` | entering and leaving: the thread's route, [`ArenaGuard`], `run`, [`outside_arena`] |
//! | `handoff.rs` | waiting: try, blocking and async acquire, the hand-off of free arenas to waiters |
//! | `registry.rs` | the registry of `'static` pools: address to slot |
//! | `slot_pages.rs` | [`SlotPages`], a slot's page source |
//!
//! # Safety
//!
//! Who owns what, per arena slot:
//! - **Free** (on the free list or granted to a waiter): the pool, under its lock. The
//!   arena's bump state is untouched; its counters are zero.
//! - **Leased**: the lease. The arena's bump state (`Slot::arena`, `Slot::local_live`) is
//!   used only by the thread that holds the lease, or that routes to it through the
//!   router: the same thread, since a route lives only inside `run` (which borrows the
//!   lease, which is `!Sync`) or an `ArenaGuard` (which owns the lease and is `!Send`;
//!   forgetting it forgets the lease). Other threads touch only atomics:
//!   `remote_frees`, `spill_account`, `spill_generation`, `over_budget`.
//! - **Quarantined**: released with routed allocations still live. Nobody uses the bump
//!   state; each free is an atomic decrement of the debt, and the thread whose free
//!   settles it (see below) owns the slot, resets it and returns it to the pool.
//!
//! Counted reuse: routed allocations made while the slot is entered are counted in
//! `local_live` (plain, owner-only), frees on the entering thread decrement it, and frees
//! from anywhere else increment `remote_frees` (atomic). On release, an outstanding
//! count of zero means no allocation is live and no other thread holds one (each remote
//! free is of an allocation the count still includes): the releaser recycles the slot
//! without touching the atomics. Otherwise the lease subtracts its outstanding count
//! from `remote_frees` with one `fetch_sub`: the result is minus the number of
//! allocations still live. Zero means none: the releaser recycles the slot.
//! Otherwise every later free adds one, and exactly one of them brings the value to zero
//! and recycles. `AcqRel` on these read-modify-writes orders every use of an allocation
//! before the reset that reuses its memory. This is the difference from nea, whose
//! buckets are reset unconditionally at the end of a request, so memory that escaped the
//! request is silently handed to the next one.
//!
//! Waiting, and the hand-off of recycled arenas to waiters without a lost wake-up and
//! without user code inside the allocator: see `handoff.rs`.

mod handoff;
mod registry;
mod route;
mod slot;
mod slot_pages;

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::ops::Deref;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;
use core::task::{Context, Poll};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagekeep_mmap::{Decommit, DefaultPages, PageSource};

pub use registry::MAX_POOLS;
pub(crate) use registry::locate;
pub use route::{ArenaGuard, in_arena, outside_arena};
pub(crate) use route::{Entered, current, current_for_alloc};
pub(crate) use slot::SpillAccount;
pub use slot_pages::SlotPages;

use crate::arena::Arena;
use crate::config::ArenaConfig;
use crate::free_stack::FreeStack;
use crate::stats::PoolStats;
use crate::sync::{AtomicBool, AtomicIsize, AtomicU8, AtomicU64, AtomicUsize, Mutex};
use handoff::Queue;
use slot::{FREE, LEASED, QUARANTINED, Slot};

/// Sizes and policies of an [`ArenaPool`].
///
/// # Examples
///
/// ```
/// use pagekeep_arena::PoolConfig;
///
/// let config = PoolConfig::new(64, 1 << 20).warm_bytes(16 << 10);
/// assert_eq!(config.arenas(), 64);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    arenas: usize,
    arena_bytes: usize,
    warm_bytes: usize,
    commit_step_bytes: usize,
    decommit: Decommit,
    spill_limit_bytes: usize,
}

impl PoolConfig {
    /// `arenas` arenas of `arena_bytes` each (rounded up to pages). By default 64 KiB of
    /// each stays warm across reuse, and routed allocations that do not fit may spill
    /// to the fallback allocator, holding up to 64 times the arena's capacity live.
    pub const fn new(arenas: usize, arena_bytes: usize) -> Self {
        PoolConfig {
            arenas,
            arena_bytes,
            warm_bytes: 64 << 10,
            commit_step_bytes: 64 << 10,
            decommit: Decommit::Lazy,
            spill_limit_bytes: arena_bytes.saturating_mul(64),
        }
    }

    /// Bytes at the start of each arena kept committed and untouched on reuse. An arena
    /// released over its budget (a spill raised its flag) gives these back as well.
    pub const fn warm_bytes(mut self, bytes: usize) -> Self {
        self.warm_bytes = bytes;
        self
    }

    /// The first commit of an arena; later commits double.
    pub const fn commit_step_bytes(mut self, bytes: usize) -> Self {
        self.commit_step_bytes = bytes;
        self
    }

    /// How memory above the warm watermark is given back on reuse.
    pub const fn decommit(mut self, mode: Decommit) -> Self {
        self.decommit = mode;
        self
    }

    /// The hard cap of live bytes a lease may hold spilled to the router's fallback
    /// allocator (spills are charged when made and credited when freed or shrunk; those
    /// under 4 KiB stay charged until the lease ends). Beyond it routed allocations
    /// return null. It is the process's safety net, not a request's budget (the arena
    /// is that): at most `arenas * spill_limit_bytes` bytes are spilled at once, so size
    /// it such that this, plus the arenas, fits the memory the process may use.
    pub const fn spill_limit_bytes(mut self, bytes: usize) -> Self {
        self.spill_limit_bytes = bytes;
        self
    }

    /// The number of arenas.
    pub const fn arenas(&self) -> usize {
        self.arenas
    }

    /// The capacity of each arena as configured.
    pub const fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }
}

/// Why a pool could not be made or registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// Zero arenas, zero capacity, or sizes that overflow.
    InvalidConfig,
    /// The reservation failed.
    Reserve(pagekeep_mmap::Error),
    /// The router's registry of pools is full.
    RegistryFull,
    /// The pool's table of its arenas could not be allocated (too many arenas for the
    /// memory available).
    OutOfMemory,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::InvalidConfig => f.write_str("invalid pool configuration"),
            PoolError::Reserve(error) => write!(f, "reserving the pool failed: {error}"),
            PoolError::RegistryFull => {
                write!(f, "the router's registry of {} pools is full", MAX_POOLS)
            }
            PoolError::OutOfMemory => f.write_str("out of memory for the pool's table of arenas"),
        }
    }
}

impl std::error::Error for PoolError {}

/// One reservation split into arenas of fixed capacity, leased out one at a time and
/// reused only when nothing allocated from them is alive.
///
/// Address to arena is one subtraction and one division. Leases come from
/// [`try_acquire`](ArenaPool::try_acquire) (never waits), [`acquire`](ArenaPool::acquire)
/// and [`acquire_timeout`](ArenaPool::acquire_timeout) (block the thread), and
/// [`acquire_async`](ArenaPool::acquire_async) (a future, first come first served,
/// cancellation-safe). To route a thread's global allocations to a lease, the pool must
/// be `'static` and registered with the router: see [`ArenaPool::into_static`].
///
/// # Examples
///
/// ```
/// use pagekeep_arena::{ArenaPool, PoolConfig};
///
/// let pool = ArenaPool::new(PoolConfig::new(4, 1 << 20))?;
/// let lease = pool.try_acquire().expect("a free arena");
/// let greeting = lease.alloc_str("hello");
/// assert_eq!(&*greeting, "hello");
/// assert_eq!(pool.stats().in_use, 1);
/// drop(lease); // reset and back in the pool
/// assert_eq!(pool.stats().free, 4);
/// # Ok::<(), pagekeep_arena::PoolError>(())
/// ```
///
/// The pool takes its pages from a [`PageSource`], the OS ([`DefaultPages`]) unless
/// made with [`with_source`](ArenaPool::with_source): tests run it over
/// `pagekeep_mmap::FailingSource` to see what running out of memory does.
pub struct ArenaPool<P: PageSource = DefaultPages> {
    /// Everything but the source: what leases and the router use.
    core: PoolCore,
    /// The source of the reservation, shared with every slot's [`SlotPages`].
    source: Arc<P>,
}

/// The part of an [`ArenaPool`] that does not depend on its page source: slots, free
/// stack and waiters. The router registers this, so pools over any source route alike.
pub(crate) struct PoolCore {
    /// Start of the reservation: slot `i` is `base + (i << stride_shift)`.
    base: NonNull<u8>,
    /// The capacity of each arena: a multiple of the page size.
    arena_bytes: usize,
    /// Slots are `1 << stride_shift` bytes apart: `arena_bytes` rounded up to a power of
    /// two, so that address to arena is a subtraction and a shift (a division by a power
    /// of two). The gap after each arena is address space only, never committed.
    stride_shift: u32,
    /// `slots.len() << stride_shift`.
    reserved_bytes: usize,
    slots: Box<[Slot]>,
    queue: Mutex<Queue>,
    /// Free arenas (not granted to a waiter).
    free: FreeStack,
    /// The hand-off word (`handoff`'s module docs): a `PENDING` bit, raised by a free on
    /// the routing path that pushed an arena while someone waits, and the number of
    /// threads counted as holders of `queue`'s lock.
    handoff: AtomicUsize,
    /// Waiters registered in the queue.
    waiting: AtomicUsize,
    config: PoolConfig,
    /// Registered with the router (only `'static` pools can be).
    registered: AtomicBool,
}

// SAFETY: shared state is behind the lock or atomic; slots follow the module's rules.
unsafe impl Sync for PoolCore {}
// SAFETY: the pool owns its reservation.
unsafe impl Send for PoolCore {}

impl ArenaPool {
    /// Reserves `config.arenas() * config.arena_bytes()` bytes of address space (no
    /// memory until used) from the OS and splits it into arenas.
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`] for an invalid configuration, [`PoolError::Reserve`]
    /// when the reservation fails, [`PoolError::OutOfMemory`] when the table of the
    /// arenas cannot be allocated.
    pub fn new(config: PoolConfig) -> Result<ArenaPool, PoolError> {
        ArenaPool::with_source(DefaultPages::default(), config)
    }
}

impl<P: PageSource + Send + Sync + 'static> ArenaPool<P> {
    /// Reserves the pool's address space from `source` and splits it into arenas, whose
    /// commits and decommits go to `source` too.
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`] for an invalid configuration, [`PoolError::Reserve`]
    /// when the reservation fails, [`PoolError::OutOfMemory`] when the table of the
    /// arenas cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{ArenaPool, PoolConfig};
    /// use pagekeep_mmap::HeapPages;
    ///
    /// let pool = ArenaPool::with_source(HeapPages, PoolConfig::new(2, 64 << 10))?;
    /// let lease = pool.try_acquire().expect("a free arena");
    /// assert_eq!(*lease.alloc(7u32), 7);
    /// # Ok::<(), pagekeep_arena::PoolError>(())
    /// ```
    pub fn with_source(source: P, config: PoolConfig) -> Result<ArenaPool<P>, PoolError> {
        outside_arena(|| ArenaPool::new_outside(source, config))
    }

    fn new_outside(source: P, config: PoolConfig) -> Result<ArenaPool<P>, PoolError> {
        let page = source.page_size();
        let arena_bytes = crate::chunk::round_up(config.arena_bytes, page)
            .filter(|&bytes| bytes > 0)
            .ok_or(PoolError::InvalidConfig)?;
        let stride = arena_bytes
            .checked_next_power_of_two()
            .ok_or(PoolError::InvalidConfig)?;
        let count = u32::try_from(config.arenas)
            .ok()
            .filter(|&count| count > 0)
            .ok_or(PoolError::InvalidConfig)?;
        let reserved_bytes = stride
            .checked_mul(config.arenas)
            .ok_or(PoolError::InvalidConfig)?;
        // The tables are allocated fallibly, and before the reservation (which then never
        // needs giving back): a pool of many small arenas may be reservable (address
        // space) while its tables exceed the memory.
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(config.arenas)
            .map_err(|_| PoolError::OutOfMemory)?;
        let free = FreeStack::try_full(count).ok_or(PoolError::OutOfMemory)?;
        let base = source
            .reserve(reserved_bytes, page)
            .map_err(PoolError::Reserve)?;
        let source = Arc::new(source);
        let shared: Arc<dyn PageSource + Send + Sync> = source.clone();
        let arena_config = ArenaConfig::new()
            .chunk_bytes(arena_bytes)
            .commit_step_bytes(config.commit_step_bytes)
            .oversize_bytes(usize::MAX)
            .warm_bytes(config.warm_bytes)
            .decommit(config.decommit);
        slots.extend((0..config.arenas).map(|index| Slot {
            arena: UnsafeCell::new(Arena::with_source(
                SlotPages {
                    // SAFETY: `index * stride < reserved_bytes`: inside the
                    // reservation.
                    base: unsafe { base.add(index * stride) },
                    len: arena_bytes,
                    taken: AtomicBool::new(false),
                    committed: AtomicUsize::new(0),
                    page_size: page,
                    source: shared.clone(),
                },
                arena_config,
            )),
            local_live: Cell::new(0),
            remote_frees: AtomicIsize::new(0),
            spill_account: AtomicU64::new(0),
            spill_generation: AtomicU64::new(0),
            over_budget: AtomicBool::new(false),
            spill_limit_bytes: config.spill_limit_bytes,
            state: AtomicU8::new(FREE),
            protected_bytes: AtomicUsize::new(0),
        }));
        let slots = slots.into_boxed_slice();
        let core = PoolCore {
            base,
            arena_bytes,
            stride_shift: stride.trailing_zeros(),
            reserved_bytes,
            slots,
            queue: Mutex::new(Queue::new()),
            // Lowest index on top, so a lightly used pool keeps touching the same arenas.
            free,
            handoff: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            config,
            registered: AtomicBool::new(false),
        };
        Ok(ArenaPool { core, source })
    }

    /// Leaks the pool and registers it with the router, so that its leases can be
    /// [entered](PooledArena::enter) and frees of their memory are routed back to them
    /// from any thread. A registered pool lives for the rest of the process. (A pool in
    /// a `static` is registered the first time one of its leases is entered.)
    ///
    /// # Errors
    /// [`PoolError::RegistryFull`] when [`MAX_POOLS`](crate::MAX_POOLS) pools are
    /// registered already (the pool is then leaked but unused).
    pub fn into_static(self) -> Result<&'static ArenaPool<P>, PoolError> {
        let pool: &'static ArenaPool<P> = outside_arena(|| Box::leak(Box::new(self)));
        if registry::register(&pool.core) {
            Ok(pool)
        } else {
            Err(PoolError::RegistryFull)
        }
    }
}

impl<P: PageSource> ArenaPool<P> {
    /// The page source the pool's reservation came from.
    pub fn source(&self) -> &P {
        &self.source
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.core.config
    }

    /// The capacity of each arena in bytes (a multiple of the page size).
    pub fn arena_bytes(&self) -> usize {
        self.core.arena_bytes
    }

    /// The index of the arena that holds `address`, if it lies in this pool.
    pub fn arena_index_of(&self, address: usize) -> Option<usize> {
        self.core.arena_index_of(address)
    }

    /// The part of the pool the router registers.
    fn core(&self) -> &PoolCore {
        &self.core
    }

    #[inline]
    fn lease(&self, index: u32) -> PooledArena<'_, P> {
        PooledArena {
            pool: self,
            slot: self.core.lease(index),
            index,
            _not_sync: PhantomData,
        }
    }

    /// A free arena, or `None` at once when every arena is in use (or others are
    /// already waiting for one).
    #[inline]
    pub fn try_acquire(&self) -> Option<PooledArena<'_, P>> {
        let index = self.core.try_acquire()?;
        Some(self.lease(index))
    }

    /// A free arena, waiting as long as it takes (first come, first served).
    pub fn acquire(&self) -> PooledArena<'_, P> {
        match self.core.acquire_until(None) {
            Some(index) => self.lease(index),
            None => unreachable!("waiting without a deadline ends with a grant"),
        }
    }

    /// A free arena, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<PooledArena<'_, P>> {
        let index = self
            .core
            .acquire_until(Instant::now().checked_add(timeout))?;
        Some(self.lease(index))
    }

    /// A future that resolves to a free arena: waiters are served first come, first
    /// served, and dropping the future before it resolves gives up its place (and any
    /// arena already granted to it) without losing anything.
    pub fn acquire_async(&self) -> AcquireFuture<'_, P> {
        AcquireFuture {
            pool: self,
            ticket: None,
        }
    }

    /// Statistics: arenas free, in use, quarantined; waiters; committed bytes.
    pub fn stats(&self) -> PoolStats {
        self.core.stats()
    }
}

impl PoolCore {
    /// The slot holding `address`: one subtraction and one division, by a power of two,
    /// so a shift (no panic path: the index is in bounds by construction).
    #[inline(always)]
    fn slot_of(&self, address: usize) -> Option<&Slot> {
        let offset = address.wrapping_sub(self.base.addr().get());
        if offset < self.reserved_bytes {
            let index = offset >> self.stride_shift;
            // SAFETY: `offset < slots.len() << stride_shift`, so `index < slots.len()`.
            Some(unsafe { self.slots.get_unchecked(index) })
        } else {
            None
        }
    }

    /// The index of the arena that holds `address`, if it lies in this pool.
    fn arena_index_of(&self, address: usize) -> Option<usize> {
        let offset = address.wrapping_sub(self.base.addr().get());
        (offset < self.reserved_bytes).then(|| offset >> self.stride_shift)
    }

    /// Statistics: arenas free, in use, quarantined; waiters; committed bytes.
    fn stats(&self) -> PoolStats {
        let mut counts = [0usize; 3];
        let mut committed = 0;
        for slot in self.slots.iter() {
            counts[usize::from(slot.state.load(Ordering::Relaxed)).min(2)] += 1;
            committed += slot.pages().committed.load(Ordering::Relaxed);
        }
        PoolStats {
            arenas: self.slots.len(),
            free: counts[usize::from(FREE)],
            in_use: counts[usize::from(LEASED)],
            quarantined: counts[usize::from(QUARANTINED)],
            waiting: self.waiting.load(Ordering::Relaxed),
            committed_bytes: committed,
        }
    }
}

impl<P: PageSource> Drop for ArenaPool<P> {
    fn drop(&mut self) {
        // Leases borrow the pool and registered pools are never dropped, so every slot
        // is free here and nothing points into the reservation.
        #[cfg(feature = "debug-protect")]
        for (index, slot) in self.core.slots.iter().enumerate() {
            self.core.unprotect(slot, index as u32);
        }
        // Release the arenas' bookkeeping first (their chunks are parts of the slots).
        self.core.slots = Box::new([]);
        let page = self.source.page_size();
        // SAFETY: the whole reservation made from this source in `new_outside`, with
        // this alignment, unused from now on.
        let _ = unsafe {
            self.source
                .release(self.core.base, self.core.reserved_bytes, page)
        };
    }
}

impl<P: PageSource + fmt::Debug> fmt::Debug for ArenaPool<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaPool")
            .field("base", &self.core.base)
            .field("arena_bytes", &self.core.arena_bytes)
            .field("config", &self.core.config)
            .field("source", &self.source)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A lease of one arena of an [`ArenaPool`]: dereferences to the [`Arena`], and gives it
/// back when dropped (reset at once, or quarantined while routed allocations from it
/// are live).
///
/// A lease is `Send` (a request may move between worker threads between polls) but not
/// `Sync`: one thread uses the arena at a time.
#[must_use = "dropping the lease gives the arena back at once"]
pub struct PooledArena<'pool, P: PageSource = DefaultPages> {
    pool: &'pool ArenaPool<P>,
    /// `&pool.slots[index]`, kept so that every use of the arena is one load.
    slot: &'pool Slot,
    index: u32,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: the lease owns the slot's bump state (module docs); moving it to another thread
// moves that ownership. No thread routes to the slot while the lease can move: a route
// lives inside `run`, which borrows the lease, or inside an `ArenaGuard`, which owns the
// lease and is `!Send` (forgetting the guard forgets the lease with it).
unsafe impl<P: PageSource + Send + Sync> Send for PooledArena<'_, P> {}

impl<'pool, P: PageSource> PooledArena<'pool, P> {
    /// The pool this arena belongs to.
    pub fn pool(&self) -> &'pool ArenaPool<P> {
        self.pool
    }

    /// The arena's index in its pool.
    pub fn index(&self) -> usize {
        self.index as usize
    }

    #[inline(always)]
    fn slot(&self) -> &'pool Slot {
        self.slot
    }

    /// The slot, borrowed for as long as the lease is: what a route to it may borrow.
    #[inline(always)]
    fn slot_borrowed(&self) -> &Slot {
        self.slot
    }

    /// Whether a routed allocation spilled to the fallback allocator: the request went
    /// over its budget, and an executor should cancel it at its next poll.
    pub fn is_over_budget(&self) -> bool {
        self.slot().over_budget.load(Ordering::Acquire)
    }

    /// Live bytes of routed allocations of this lease that spilled to the fallback
    /// allocator: charged when spilled, credited when freed or shrunk (spills smaller
    /// than 4 KiB stay charged until the lease ends). The hard cap
    /// ([`PoolConfig::spill_limit_bytes`]) bounds it.
    pub fn spilled_bytes(&self) -> usize {
        self.slot().spilled_bytes()
    }

    /// Routed allocations from this arena that are live: made while entered and not
    /// freed yet (frees from other threads are counted too).
    pub fn live_routed_allocations(&self) -> usize {
        let slot = self.slot();
        let remote = slot.remote_frees.load(Ordering::Acquire).max(0) as usize;
        slot.local_live.get().saturating_sub(remote)
    }

    /// Gives the arena back (as dropping the lease does).
    pub fn release(self) {
        drop(self);
    }
}

impl<P: PageSource> Deref for PooledArena<'_, P> {
    type Target = Arena<SlotPages>;

    #[inline(always)]
    fn deref(&self) -> &Self::Target {
        // SAFETY: the lease owns the slot's bump state.
        unsafe { self.slot().arena() }
    }
}

impl<P: PageSource> Drop for PooledArena<'_, P> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `slot` is `&pool.slots[index]`.
        unsafe { self.pool.core.release_slot(self.slot, self.index) };
    }
}

impl<P: PageSource> fmt::Debug for PooledArena<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledArena")
            .field("index", &self.index)
            .field("stats", &self.stats())
            .field("over_budget", &self.is_over_budget())
            .finish()
    }
}

/// The future of [`ArenaPool::acquire_async`]: resolves to a lease, first come first
/// served. Dropping it gives up its place in the queue, passing on an arena already
/// granted to it.
#[must_use = "futures do nothing unless polled"]
pub struct AcquireFuture<'pool, P: PageSource = DefaultPages> {
    pool: &'pool ArenaPool<P>,
    /// The place in the queue once the future has waited.
    ticket: Option<u64>,
}

impl<'pool, P: PageSource> Future for AcquireFuture<'pool, P> {
    type Output = PooledArena<'pool, P>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outer = self.pool;
        let pool = &outer.core;
        let registered = pool.registered.load(Ordering::Acquire).then(|| {
            // SAFETY: only `'static` pools are registered (`into_static`, or a pool in a
            // `static`), and they are never dropped.
            unsafe { &*ptr::from_ref(pool) }
        });
        match pool.poll_acquire(self.ticket, cx, registered) {
            Ok(index) => {
                self.ticket = None;
                Poll::Ready(outer.lease(index))
            }
            Err(ticket) => {
                self.ticket = Some(ticket);
                Poll::Pending
            }
        }
    }
}

impl<P: PageSource> Drop for AcquireFuture<'_, P> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.pool.core.cancel_acquire(ticket);
        }
    }
}

impl<P: PageSource> fmt::Debug for AcquireFuture<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireFuture")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, loom))]
mod loom_models;
