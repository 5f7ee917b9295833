//! [`ArenaPool`]: one reservation split into N arenas of fixed capacity, handed out as
//! [`PooledArena`] leases, with counted reuse.
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
//!   `remote_frees`, `spill_account`, `over_budget`.
//! - **Quarantined**: released with routed allocations still live. Nobody uses the bump
//!   state; each free is an atomic decrement of the debt, and the thread whose free
//!   settles it (see below) owns the slot, resets it and returns it to the pool.
//!
//! Counted reuse: routed allocations made while the slot is entered are counted in
//! `local_live` (plain, owner-only), frees on the entering thread decrement it, and frees
//! from anywhere else increment `remote_frees` (atomic). On release the lease subtracts
//! its outstanding count from `remote_frees` with one `fetch_sub`: the result is minus
//! the number of allocations still live. Zero means none: the releaser recycles the slot.
//! Otherwise every later free adds one, and exactly one of them brings the value to zero
//! and recycles. `AcqRel` on these read-modify-writes orders every use of an allocation
//! before the reset that reuses its memory. This is the difference from nea, whose
//! buckets are reset unconditionally at the end of a request, so memory that escaped the
//! request is silently handed to the next one.
//!
//! Free arenas sit on a lock-free stack ([`FreeStack`]): while nobody waits, acquiring
//! and releasing an arena is one compare-and-swap each. Waiting: the pool lock guards a
//! FIFO queue of waiters. A waiter registers (bumping `waiting`) and only then tries the
//! stack; a releaser pushes and only then reads `waiting`, taking the lock to hand free
//! arenas to waiters in order when there are any. With both sides `SeqCst`, either the
//! waiter sees the arena or the releaser sees the waiter, so no grant is lost.
//!
//! Arenas recycled by a free on the routing path (inside `GlobalAlloc::dealloc`) are
//! pushed the same way, but that path never waits for the lock and never calls a waker:
//! it raises `pending` and `try_lock`s. Every lock holder drops the lock through
//! `after_unlock`, which re-checks `pending` (Dekker-style, with `SeqCst` on both sides),
//! so no arena is stranded while a waiter sleeps: either the freer gets the lock and
//! hands the arena on itself, or the holder sees the flag after unlocking. Blocking
//! waiters park their thread and are unparked by whoever grants them an arena (no user
//! code, so the freer may do it); a blocking waiter drops the lock through
//! `after_unlock` before it parks, so it never sleeps with a flagged arena unserved.
//! Async waiters are woken by calling their `Waker`, which is user code: a grant made
//! inside the allocator leaves the waker with the waiter and unparks the pool's
//! *servant*, a thread that a registered pool runs while async waiters wait, which
//! calls it (containing a panic). Any lock holder outside the allocator also calls the
//! wakers still owed. If the servant thread cannot be made, owed wakers are called by
//! the next operation on the pool outside the allocator.

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::ops::Deref;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;
use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use mmap_alloc::{Contents, Decommit, DefaultPages, PageSource};

use crate::arena::Arena;
use crate::config::ArenaConfig;
use crate::free_stack::FreeStack;
use crate::router;
use crate::stats::PoolStats;
use crate::sync::{
    AtomicBool, AtomicIsize, AtomicU8, AtomicU64, AtomicUsize, Builder, Mutex, MutexGuard, Thread,
    fence,
};

/// Sizes and policies of an [`ArenaPool`].
///
/// # Examples
///
/// ```
/// use arena_alloc::PoolConfig;
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
    Reserve(mmap_alloc::Error),
    /// The router's registry of pools is full.
    RegistryFull,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::InvalidConfig => f.write_str("invalid pool configuration"),
            PoolError::Reserve(error) => write!(f, "reserving the pool failed: {error}"),
            PoolError::RegistryFull => write!(
                f,
                "the router's registry of {} pools is full",
                router::MAX_POOLS
            ),
        }
    }
}

impl std::error::Error for PoolError {}

/// The page source of one pool arena: hands out its slot of the pool's reservation once,
/// and forwards commits and decommits to the pool's source.
pub struct SlotPages {
    base: NonNull<u8>,
    len: usize,
    taken: AtomicBool,
    /// Bytes committed so far (commits never shrink: decommitted pages stay read-write).
    committed: AtomicUsize,
    /// The page size of the pool's source.
    page_size: usize,
    /// The pool's source, which made the reservation the slot lies in.
    source: Arc<dyn PageSource + Send + Sync>,
}

// SAFETY: `SlotPages` is an address range, atomics and a shared handle to a `Send + Sync`
// source; the pages it describes are used under the ownership rules of the pool (module
// docs).
unsafe impl Send for SlotPages {}
// SAFETY: as above.
unsafe impl Sync for SlotPages {}

impl fmt::Debug for SlotPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotPages")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("committed", &self.committed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn slot_error(operation: mmap_alloc::Operation) -> mmap_alloc::Error {
    mmap_alloc::Error::new(
        operation,
        mmap_alloc::Cause::InvalidInput("a pool arena has exactly one reservation, its slot"),
        0,
        0,
    )
}

// SAFETY: the slot is a page-aligned part of the pool's live reservation that belongs to
// this source alone, handed out at most once until released; commit and decommit are
// forwarded to the pool's source, which made the reservation, for ranges inside it.
unsafe impl PageSource for SlotPages {
    #[inline]
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn reserve(&self, len: usize, align: usize) -> mmap_alloc::Result<NonNull<u8>> {
        if len > self.len || align > self.page_size() || self.taken.swap(true, Ordering::Relaxed) {
            return Err(slot_error(mmap_alloc::Operation::Reserve));
        }
        Ok(self.base)
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> mmap_alloc::Result<()> {
        // SAFETY: the caller's range lies in the slot, inside the pool's reservation of
        // `self.source`, which this slot's arena owns.
        unsafe { self.source.commit(ptr, len) }?;
        let end = ptr.addr().get() + len - self.base.addr().get();
        self.committed.fetch_max(end, Ordering::Relaxed);
        Ok(())
    }

    unsafe fn decommit(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        mode: Decommit,
    ) -> mmap_alloc::Result<Contents> {
        // SAFETY: as for `commit`; the caller no longer needs the contents.
        unsafe { self.source.decommit(ptr, len, mode) }
    }

    unsafe fn release(
        &self,
        _ptr: NonNull<u8>,
        _len: usize,
        _align: usize,
    ) -> mmap_alloc::Result<()> {
        // The pages stay in the pool's reservation; the slot may be handed out again.
        self.taken.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// The arena type of a pool slot.
pub(crate) type SlotArena = Arena<SlotPages>;

/// Bits of a slot's spill account that hold live bytes; the rest hold the generation.
const SPILL_BYTES_BITS: u32 = 48;
const SPILL_BYTES_MASK: u64 = (1 << SPILL_BYTES_BITS) - 1;
const SPILL_GENERATION_MASK: u64 = (1 << (64 - SPILL_BYTES_BITS)) - 1;

const FREE: u8 = 0;
const LEASED: u8 = 1;
const QUARANTINED: u8 = 2;

/// One arena of the pool and its counters. See the module docs for who owns what.
pub(crate) struct Slot {
    /// The bump allocator over this slot's pages.
    pub(crate) arena: UnsafeCell<SlotArena>,
    /// Routed allocations made minus routed frees on the entering thread.
    pub(crate) local_live: Cell<usize>,
    /// Routed frees from other threads (before release), minus the outstanding count
    /// (at release): zero after release means nothing is live.
    pub(crate) remote_frees: AtomicIsize,
    /// The spill account of the current lease: its generation (the top 16 bits, bumped
    /// by every lease) and the live bytes of routed allocations that spilled to the
    /// fallback allocator (the low 48 bits). Packed, so that a credit for a block spilled
    /// by an earlier lease is recognised and dropped in the same atomic step.
    spill_account: AtomicU64,
    /// Set by a spill: the request went over its budget.
    pub(crate) over_budget: AtomicBool,
    /// The hard cap of `spilled_bytes`.
    pub(crate) spill_limit_bytes: usize,
    /// `FREE`, `LEASED` or `QUARANTINED`, for statistics and checks.
    state: AtomicU8,
    /// Bytes protected by `debug-protect` while free.
    #[cfg_attr(not(feature = "debug-protect"), allow(dead_code))]
    protected_bytes: AtomicUsize,
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
    pub(crate) unsafe fn arena(&self) -> &SlotArena {
        // SAFETY: only shared references to the arena are ever made.
        unsafe { &*self.arena.get() }
    }

    /// Starts the spill account of a new lease: the next generation, nothing charged.
    fn begin_spill_account(&self) {
        let generation = self.spill_account.load(Ordering::Relaxed) >> SPILL_BYTES_BITS;
        let next = (generation + 1) & SPILL_GENERATION_MASK;
        self.spill_account
            .store(next << SPILL_BYTES_BITS, Ordering::Release);
    }

    /// The generation of the current lease's spill account.
    #[inline]
    pub(crate) fn spill_generation(&self) -> u64 {
        self.spill_account.load(Ordering::Acquire) >> SPILL_BYTES_BITS
    }

    /// Live bytes of the current lease's spills.
    #[inline]
    pub(crate) fn spilled_bytes(&self) -> usize {
        (self.spill_account.load(Ordering::Acquire) & SPILL_BYTES_MASK) as usize
    }

    /// Charges `bytes` more spilled bytes to the current lease, unless that would take
    /// its live spills past the hard cap. Returns whether it did.
    pub(crate) fn charge_spill(&self, bytes: usize) -> bool {
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
    pub(crate) fn credit_spill(&self, generation: u64, bytes: usize) {
        let _ = self
            .spill_account
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |account| {
                (account >> SPILL_BYTES_BITS == generation).then(|| {
                    let left = (account & SPILL_BYTES_MASK).saturating_sub(bytes as u64);
                    (account & !SPILL_BYTES_MASK) | left
                })
            });
    }

    /// A free routed from anywhere but the entering thread; recycles the slot when it
    /// settles the debt of a released arena. `pool` is the slot's pool.
    #[inline]
    pub(crate) fn remote_free(&self, pool: &PoolCore) {
        if self.remote_frees.fetch_add(1, Ordering::AcqRel) == -1 {
            // SAFETY: the debt is settled: nothing allocated from the slot is live and
            // its lease is gone, so this thread owns it now.
            unsafe { pool.recycle_settled(self) };
        }
    }
}

/// How a recycled arena reaches the pool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Returned {
    /// From a lease's release: may lock.
    FromRelease,
    /// From a free on the routing path: must not wait for the lock.
    FromFree,
}

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

struct Queue {
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
    /// The pool's servant thread while one runs (registered pools with async waiters
    /// only): it wakes async waiters granted an arena inside the allocator.
    servant: Option<Thread>,
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
    /// servant).
    contain_panics: bool,
}

impl Wakeups {
    const fn new() -> Self {
        Wakeups {
            wakers: [None, None, None, None],
            threads: [None, None, None, None],
            servant: None,
            defer_wakers: false,
            contain_panics: false,
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
        for waker in &mut self.wakers {
            if let Some(waker) = waker.take() {
                if self.contain_panics {
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake()));
                } else {
                    waker.wake();
                }
            }
        }
    }
}

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
/// use arena_alloc::{ArenaPool, PoolConfig};
///
/// let pool = ArenaPool::new(PoolConfig::new(4, 1 << 20))?;
/// let lease = pool.try_acquire().expect("a free arena");
/// let greeting = lease.alloc_str("hello");
/// assert_eq!(&*greeting, "hello");
/// assert_eq!(pool.stats().in_use, 1);
/// drop(lease); // reset and back in the pool
/// assert_eq!(pool.stats().free, 4);
/// # Ok::<(), arena_alloc::PoolError>(())
/// ```
///
/// The pool takes its pages from a [`PageSource`], the OS ([`DefaultPages`]) unless
/// made with [`with_source`](ArenaPool::with_source): tests run it over
/// `mmap_alloc::FailingSource` to see what running out of memory does.
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
    /// Set by a free on the routing path that pushed an arena while someone waits and
    /// could not take the lock: the next lock holder hands it on.
    pending: AtomicBool,
    /// Waiters registered in the queue.
    waiting: AtomicUsize,
    config: PoolConfig,
    /// Registered with the router (only `'static` pools can be).
    pub(crate) registered: AtomicBool,
}

// SAFETY: shared state is behind the lock or atomic; slots follow the module's rules.
unsafe impl Sync for PoolCore {}
// SAFETY: the pool owns its reservation.
unsafe impl Send for PoolCore {}

fn lock(mutex: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic while holding the lock cannot leave the queue inconsistent (every update
    // is a single push or pop), so poisoning is ignored.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ArenaPool {
    /// Reserves `config.arenas() * config.arena_bytes()` bytes of address space (no
    /// memory until used) from the OS and splits it into arenas.
    ///
    /// # Errors
    /// An invalid configuration; the reservation fails.
    pub fn new(config: PoolConfig) -> Result<ArenaPool, PoolError> {
        ArenaPool::with_source(DefaultPages::default(), config)
    }
}

impl<P: PageSource + Send + Sync + 'static> ArenaPool<P> {
    /// Reserves the pool's address space from `source` and splits it into arenas, whose
    /// commits and decommits go to `source` too.
    ///
    /// # Errors
    /// An invalid configuration; the reservation fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use arena_alloc::{ArenaPool, PoolConfig};
    /// use mmap_alloc::HeapPages;
    ///
    /// let pool = ArenaPool::with_source(HeapPages, PoolConfig::new(2, 64 << 10))?;
    /// let lease = pool.try_acquire().expect("a free arena");
    /// assert_eq!(*lease.alloc(7u32), 7);
    /// # Ok::<(), arena_alloc::PoolError>(())
    /// ```
    pub fn with_source(source: P, config: PoolConfig) -> Result<ArenaPool<P>, PoolError> {
        router::outside_arena(|| ArenaPool::new_outside(source, config))
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
        let slots = (0..config.arenas)
            .map(|index| Slot {
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
                over_budget: AtomicBool::new(false),
                spill_limit_bytes: config.spill_limit_bytes,
                state: AtomicU8::new(FREE),
                protected_bytes: AtomicUsize::new(0),
            })
            .collect::<Box<[Slot]>>();
        let core = PoolCore {
            base,
            arena_bytes,
            stride_shift: stride.trailing_zeros(),
            reserved_bytes,
            slots,
            queue: Mutex::new(Queue {
                waiters: VecDeque::with_capacity(16),
                next_ticket: 0,
                servant: None,
            }),
            // Lowest index on top, so a lightly used pool keeps touching the same arenas.
            free: FreeStack::full(count),
            pending: AtomicBool::new(false),
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
        let pool: &'static ArenaPool<P> = router::outside_arena(|| Box::leak(Box::new(self)));
        if router::register(&pool.core) {
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
    pub(crate) fn core(&self) -> &PoolCore {
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
    pub(crate) fn slot_of(&self, address: usize) -> Option<&Slot> {
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

    /// Marks a free slot, just taken off the stack or granted, leased.
    #[inline]
    fn lease(&self, index: u32) -> &Slot {
        let slot = &self.slots[index as usize];
        #[cfg(feature = "debug-protect")]
        self.unprotect(slot, index);
        slot.begin_spill_account();
        slot.state.store(LEASED, Ordering::Relaxed);
        slot
    }

    /// The index of a free arena, or `None` at once when every arena is in use (or
    /// others are already waiting for one).
    #[inline(always)]
    fn try_acquire(&self) -> Option<u32> {
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
        router::outside_arena(|| {
            let mut wakeups = Wakeups::new();
            let index = {
                let mut queue = lock(&self.queue);
                self.settle(&mut queue, &mut wakeups);
                // Arenas left after serving every waiter are up for grabs.
                if queue.waiters.iter().all(|waiter| waiter.granted.is_some()) {
                    self.free.pop()
                } else {
                    None
                }
            };
            self.after_unlock(&mut wakeups);
            index
        })
    }

    /// The index of a free arena, waiting until `deadline` (`None`: for ever).
    ///
    /// The waiter parks its thread, and whoever grants it an arena unparks it. It never
    /// sleeps with the lock's duties undone: it drops the lock through
    /// [`after_unlock`](Self::after_unlock), which hands on arenas that frees flagged
    /// while it held the lock, before it parks (a grant meanwhile makes `park` return at
    /// once).
    fn acquire_until(&self, deadline: Option<Instant>) -> Option<u32> {
        if self.waiting.load(Ordering::SeqCst) == 0
            && let Some(index) = self.free.pop()
        {
            return Some(index);
        }
        router::outside_arena(|| {
            let mut queue = lock(&self.queue);
            let ticket = self.enqueue(&mut queue, None, Some(crate::sync::current()));
            loop {
                let mut wakeups = Wakeups::new();
                self.settle(&mut queue, &mut wakeups);
                let position = queue
                    .waiters
                    .iter()
                    .position(|waiter| waiter.ticket == ticket)
                    .expect("a waiter stays queued until it leaves");
                if let Some(index) = queue.waiters[position].granted {
                    queue.waiters.remove(position);
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    drop(queue);
                    self.after_unlock(&mut wakeups);
                    return Some(index);
                }
                let now = Instant::now();
                if deadline.is_some_and(|deadline| now >= deadline) {
                    self.leave(&mut queue, ticket, &mut wakeups);
                    drop(queue);
                    self.after_unlock(&mut wakeups);
                    return None;
                }
                drop(queue);
                self.after_unlock(&mut wakeups);
                match deadline {
                    None => crate::sync::park(),
                    Some(deadline) => crate::sync::park_timeout(deadline - now),
                }
                queue = lock(&self.queue);
            }
        })
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
    fn leave(&self, queue: &mut Queue, ticket: u64, wakeups: &mut Wakeups) {
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

    /// Moves a granted async waiter's waker into `wakeups`, or calls it now, under the
    /// lock, if there is no room (rare: many grants in one round), rather than lose it.
    /// Never inside the allocator.
    fn take_waker(waiter: &mut Waiter, wakeups: &mut Wakeups) {
        debug_assert!(!wakeups.defer_wakers, "a waker taken inside the allocator");
        if let Some(waker) = waiter.waker.take() {
            match wakeups.wakers.iter_mut().find(|slot| slot.is_none()) {
                Some(slot) => *slot = Some(waker),
                None => waker.wake(),
            }
        }
    }

    /// Grants free arenas to waiters not yet served, in order (under the lock). Outside
    /// the allocator it also collects wake-ups owed to async waiters granted inside it.
    fn settle(&self, queue: &mut Queue, wakeups: &mut Wakeups) {
        // A read-modify-write, not a store: if a free raised the flag, this reads it and
        // so sees the arena that free pushed before it (the stack is read below). A plain
        // store could overwrite the flag while the read of the stack missed the push, and
        // the lock holder would then find the flag down after unlocking: the arena would
        // sit on the stack while the waiter sleeps (found by the loom models).
        self.pending.swap(false, Ordering::SeqCst);
        if !wakeups.defer_wakers {
            for waiter in queue.waiters.iter_mut() {
                if waiter.granted.is_some() && waiter.waker.is_some() {
                    Self::take_waker(waiter, wakeups);
                }
            }
        }
        while queue.waiters.iter().any(|waiter| waiter.granted.is_none()) {
            if wakeups.is_full() {
                // Wake these first; the next round serves the rest.
                self.pending.store(true, Ordering::SeqCst);
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
            let mut queue = lock(&self.queue);
            self.settle(&mut queue, &mut wakeups);
            let owed = queue.waiters.iter().any(|waiter| waiter.needs_servant());
            if !owed {
                queue.servant = None;
            }
            drop(queue);
            self.after_unlock(&mut wakeups);
            if !owed {
                return;
            }
            crate::sync::park();
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

    /// After dropping the lock: wake whom the last round served, then settle arenas
    /// flagged meanwhile by frees that found the lock taken.
    fn after_unlock(&self, wakeups: &mut Wakeups) {
        loop {
            wakeups.run();
            fence(Ordering::SeqCst);
            if !self.pending.load(Ordering::SeqCst) {
                return;
            }
            // Never wait here: a thread that holds the lock will settle after unlocking.
            let Ok(mut queue) = self.queue.try_lock() else {
                return;
            };
            self.settle(&mut queue, wakeups);
        }
    }

    /// Resets a slot whose lease is gone and whose allocations are all freed, and puts it
    /// back: to a waiter or the free list.
    ///
    /// # Safety
    /// - The caller owns the slot (module docs): its lease is gone and nothing allocated
    ///   from it is live.
    #[inline]
    unsafe fn recycle(&self, slot: &Slot, index: u32, how: Returned) {
        debug_assert!(
            core::ptr::eq(slot, &self.slots[index as usize]),
            "slot {:p} is not number {index} of its pool",
            slot
        );
        // SAFETY: the caller owns the slot, and nothing allocated from it is used again.
        // An arena that went over its budget (a runaway request) gives back its warm
        // pages too: it is the exception, and what it filled should not stay resident.
        unsafe {
            if slot.over_budget.load(Ordering::Relaxed) {
                slot.arena().reset_cold();
            } else {
                slot.arena().reset_unchecked();
            }
        }
        slot.local_live.set(0);
        slot.remote_frees.store(0, Ordering::Relaxed);
        slot.over_budget.store(false, Ordering::Relaxed);
        slot.state.store(FREE, Ordering::Relaxed);
        #[cfg(feature = "debug-protect")]
        self.protect(slot);
        self.free.push(index);
        // The push is `SeqCst`; so is this load (module docs: no lost grant). Loom models
        // `SeqCst` accesses as `AcqRel`, so its models need the fence the C++ model does
        // not.
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.serve_waiters(how);
        }
    }

    /// After an arena was pushed back: hands free arenas to waiters (or, on the routing
    /// path, flags them for the lock holder), then wakes whom it served.
    #[cold]
    #[inline(never)]
    fn serve_waiters(&self, how: Returned) {
        router::outside_arena(|| match how {
            Returned::FromRelease => {
                let mut wakeups = Wakeups::new();
                let mut queue = lock(&self.queue);
                self.settle(&mut queue, &mut wakeups);
                drop(queue);
                self.after_unlock(&mut wakeups);
            }
            Returned::FromFree => {
                // Inside the allocator: flag the arena for whoever holds the lock, or
                // hand it on ourselves if nobody does, calling no waker (see `Wakeups`).
                let mut wakeups = Wakeups::inside_allocator();
                self.pending.store(true, Ordering::SeqCst);
                self.after_unlock(&mut wakeups);
            }
        });
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

    /// Ends a lease: recycles the arena at once, or quarantines it while routed
    /// allocations from it are live.
    #[inline]
    fn release(&self, index: u32) {
        // No thread routes to the slot any more: a route to it lives only inside `run`
        // (which borrows the lease) or inside an `ArenaGuard` (which owns the lease and
        // leaves the route before dropping it).
        let slot = &self.slots[index as usize];
        let outstanding = slot.local_live.get() as isize;
        if outstanding == 0 {
            // Every routed allocation was freed on the entering thread, so no other
            // thread holds one to free: the slot is ours without touching the atomics.
            // SAFETY: nothing allocated from the slot is live and the lease is gone.
            unsafe { self.recycle(slot, index, Returned::FromRelease) };
            return;
        }
        self.quarantine(slot, index, outstanding);
    }

    /// Ends a lease with `outstanding` routed allocations not freed on the entering
    /// thread: the slot waits for them, unless other threads have freed them all.
    #[cold]
    #[inline(never)]
    fn quarantine(&self, slot: &Slot, index: u32, outstanding: isize) {
        slot.state.store(QUARANTINED, Ordering::Relaxed);
        if slot.remote_frees.fetch_sub(outstanding, Ordering::AcqRel) == outstanding {
            // SAFETY: the debt is settled (every routed allocation is freed) and the
            // lease is gone: this thread owns the slot.
            unsafe { self.recycle(slot, index, Returned::FromRelease) };
        }
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
    fn protect(&self, slot: &Slot) {
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
                mmap_alloc::sys::protect(pages.base, committed, mmap_alloc::Protection::None)
            };
        }
    }

    /// Undoes [`protect`](Self::protect) before a slot is leased.
    #[cfg(feature = "debug-protect")]
    fn unprotect(&self, slot: &Slot, _index: u32) {
        let protected = slot.protected_bytes.swap(0, Ordering::Relaxed);
        if protected > 0 {
            let base = slot.pages().base;
            // SAFETY: the range protected by `protect`, inside the reservation.
            let _ = unsafe {
                mmap_alloc::sys::protect(base, protected, mmap_alloc::Protection::ReadWrite)
            };
        }
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

impl Slot {
    /// The slot's page source. Its fields are immutable or atomic, so reading them races
    /// with nothing the owner of the bump state does.
    fn pages(&self) -> &SlotPages {
        // SAFETY: only the source is read through this reference (see above).
        unsafe { self.arena().source() }
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
    pub(crate) fn slot(&self) -> &'pool Slot {
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
        self.pool.core.release(self.index);
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
        let ticket = self.ticket;
        if ticket.is_none()
            && pool.waiting.load(Ordering::SeqCst) == 0
            && let Some(index) = pool.free.pop()
        {
            return Poll::Ready(outer.lease(index));
        }
        let (index, ticket) = router::outside_arena(|| {
            let mut wakeups = Wakeups::new();
            let mut queue = lock(&pool.queue);
            let ticket = match ticket {
                Some(ticket) => ticket,
                None => {
                    let ticket = pool.enqueue(&mut queue, None, None);
                    if pool.registered.load(Ordering::Acquire) {
                        // SAFETY: only `'static` pools are registered (`into_static`, or
                        // a pool in a `static`), and they are never dropped.
                        let pool: &'static PoolCore = unsafe { &*ptr::from_ref(pool) };
                        pool.ensure_servant(&mut queue);
                    }
                    ticket
                }
            };
            let position = |queue: &Queue| {
                queue
                    .waiters
                    .iter()
                    .position(|waiter| waiter.ticket == ticket)
                    .expect("a waiter stays queued until it leaves")
            };
            // This waiter's own wake-up, if one is still owed, is moot: it is being
            // polled. Dropped after the lock.
            let mut own_waker = None;
            let own = position(&queue);
            if queue.waiters[own].granted.is_some() {
                own_waker = queue.waiters[own].waker.take();
            }
            pool.settle(&mut queue, &mut wakeups);
            let position = position(&queue);
            let waiter = &mut queue.waiters[position];
            let result = match waiter.granted {
                Some(index) => {
                    queue.waiters.remove(position);
                    pool.waiting.fetch_sub(1, Ordering::SeqCst);
                    // The servant may have nothing left to serve: let it see that.
                    wakeups.servant.clone_from(&queue.servant);
                    (Some(index), None)
                }
                None => {
                    match &mut waiter.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        waker => *waker = Some(cx.waker().clone()),
                    }
                    (None, Some(ticket))
                }
            };
            drop(queue);
            drop(own_waker);
            pool.after_unlock(&mut wakeups);
            result
        });
        self.ticket = ticket;
        match index {
            Some(index) => Poll::Ready(outer.lease(index)),
            None => Poll::Pending,
        }
    }
}

impl<P: PageSource> Drop for AcquireFuture<'_, P> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let pool = &self.pool.core;
            router::outside_arena(|| {
                let mut wakeups = Wakeups::new();
                let mut queue = lock(&pool.queue);
                pool.leave(&mut queue, ticket, &mut wakeups);
                drop(queue);
                pool.after_unlock(&mut wakeups);
            });
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
