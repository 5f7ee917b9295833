//! The thread's route: which leased slot, if any, this thread has entered. Entering and
//! leaving are transitions of the slot state machine (see `slot`): a route lives only
//! inside [`PooledArena::run`], which borrows the lease, or inside an [`ArenaGuard`],
//! which owns it; the types below tie the route to that borrow or ownership.

use core::alloc::Layout;
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::{DefaultPages, PageSource};

use super::PooledArena;
use super::registry::{MAX_POOLS, register};
use super::slot::{Slot, SpillAccount};

thread_local! {
    /// The slot this thread routes to, or null.
    static CURRENT: Cell<*const Slot> = const { Cell::new(ptr::null()) };
    /// The token of the innermost live guard (0: none, or broken by an out-of-order drop).
    static TOKEN: Cell<u64> = const { Cell::new(0) };
    /// The next token to hand out on this thread.
    static NEXT_TOKEN: Cell<u64> = const { Cell::new(1) };
}

/// Proof that this thread has entered a leased slot, so that it alone uses the slot's
/// bump state: read from the thread's route by [`current`]. It is `!Send`, and is used
/// only within the allocator call that read it (no allocator entry point changes the
/// route), so the route it was read from, and the lease behind it, outlive it.
#[derive(Clone, Copy)]
pub(crate) struct Entered {
    slot: &'static Slot,
    _not_send: PhantomData<*const ()>,
}

/// The slot this thread has entered, if any: one thread-local load.
#[inline(always)]
pub(crate) fn current() -> Option<Entered> {
    let slot = CURRENT.get();
    if slot.is_null() {
        return None;
    }
    Some(Entered {
        // SAFETY: a non-null route is a slot of a registered pool (`'static`), set by a
        // `RouteGuard` of this thread that is still alive (module docs).
        slot: unsafe { &*slot },
        _not_send: PhantomData,
    })
}

impl Entered {
    /// A bump allocation in the entered arena, counted as a live routed allocation.
    ///
    /// # Errors
    /// The arena cannot hold it (its capacity, or a failed commit).
    #[inline(always)]
    pub(crate) fn try_alloc(self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        // SAFETY: this thread entered the slot, so it owns the bump state.
        let ptr = unsafe { self.slot.arena() }.try_alloc_layout(layout)?;
        self.slot
            .local_live
            .set(self.slot.local_live.get().wrapping_add(1));
        Ok(ptr)
    }

    /// Whether this is the entered slot `slot`.
    #[inline(always)]
    pub(super) fn is(self, slot: &Slot) -> bool {
        ptr::eq(self.slot, slot)
    }

    /// Whether `address` lies in the entered slot's part of its pool's reservation: one
    /// subtraction and one compare. Every allocation of the slot's arena lies there (its
    /// chunks come from [`SlotPages`](super::SlotPages), which hands out nothing else),
    /// and no other slot's does.
    #[inline(always)]
    pub(crate) fn holds(self, address: usize) -> bool {
        let pages = self.slot.pages();
        address.wrapping_sub(pages.base.addr().get()) < pages.len
    }

    /// Frees a routed allocation of the entered slot on the entering thread: back to
    /// its bump allocator (a bump back when it is the latest allocation) and one count
    /// less, without atomics.
    ///
    /// # Safety
    /// - `ptr` is a live allocation of `layout` in this slot, made through the router.
    #[inline(always)]
    pub(crate) unsafe fn free(self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: this thread entered the slot, so it owns the bump state; `ptr` is an
        // allocation of it.
        unsafe { self.slot.arena().dealloc(ptr, layout) };
        self.slot
            .local_live
            .set(self.slot.local_live.get().wrapping_sub(1));
    }

    /// Reallocates a routed allocation of the entered slot within its arena; it stays
    /// counted once either way. `None` when the arena cannot hold the new size.
    ///
    /// # Safety
    /// - `ptr` is a live allocation of `layout` in this slot, made through the router.
    #[inline]
    pub(super) unsafe fn try_realloc(
        self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_layout: Layout,
    ) -> Option<NonNull<u8>> {
        // SAFETY: this thread entered the slot and `ptr` is its allocation.
        unsafe { self.slot.arena().try_realloc(ptr, layout, new_layout) }.ok()
    }

    /// The entered slot's spill account.
    #[inline]
    pub(crate) fn account(self) -> SpillAccount {
        SpillAccount::of(self.slot)
    }
}

/// The slot this thread's *allocations* go to: as [`current`], but `None` while the
/// thread panics. The panic hook runs before unwinding leaves the routed scope, and what
/// a panicking thread allocates (the hook's message and backtrace, symbol caches std
/// keeps for good, destructors' work) must neither fill the arena nor keep it
/// quarantined; so it goes to the fallback allocator. Frees keep using [`current`].
///
/// The check costs the routed path one relaxed load of std's global panic count (its
/// inlined fast path) and a branch that is never taken; the unrouted path is unchanged.
#[inline(always)]
pub(crate) fn current_for_alloc() -> Option<Entered> {
    let slot = CURRENT.get();
    if slot.is_null() || std::thread::panicking() {
        return None;
    }
    Some(Entered {
        // SAFETY: as in `current`.
        slot: unsafe { &*slot },
        _not_send: PhantomData,
    })
}

/// Runs `body` with routing switched off on this thread: its allocations come from the
/// fallback allocator and may outlive the arena (caches, connection state, anything that
/// outlives the request). Restored afterwards, also when `body` unwinds.
///
/// # Examples
///
/// ```
/// let kept: Vec<u8> = pagekeep_arena::outside_arena(|| vec![1, 2, 3]);
/// assert_eq!(kept.len(), 3);
/// ```
pub fn outside_arena<R>(body: impl FnOnce() -> R) -> R {
    let _guard = RouteGuard::push(None);
    body()
}

/// Whether this thread currently routes its allocations to an arena. Never while the
/// thread panics: from the panic (the panic hook included) until it is caught, a
/// thread's allocations go to the fallback allocator.
pub fn in_arena() -> bool {
    !CURRENT.get().is_null() && !std::thread::panicking()
}

/// Sets the thread's route and restores the previous one when dropped, if (and only if)
/// it is still the innermost route: a guard dropped out of order switches routing off
/// instead, so the thread never routes to an arena whose guard is gone.
///
/// `'lease` is the borrow of the lease routed to (`'static` in an [`ArenaGuard`], which
/// owns its lease): the route cannot outlive it. The raw pointers make it `!Send`: a
/// route is the thread's.
struct RouteGuard<'lease> {
    token: u64,
    previous: *const Slot,
    previous_token: u64,
    _lease: PhantomData<&'lease Slot>,
}

impl<'lease> RouteGuard<'lease> {
    /// Routes to `slot`, or nowhere (`None`: [`outside_arena`]).
    #[inline]
    fn push(slot: Option<&'lease Slot>) -> RouteGuard<'lease> {
        let token = NEXT_TOKEN.get();
        NEXT_TOKEN.set(token.wrapping_add(1));
        let previous = CURRENT.replace(slot.map_or(ptr::null(), ptr::from_ref));
        let previous_token = TOKEN.replace(token);
        RouteGuard {
            token,
            previous,
            previous_token,
            _lease: PhantomData,
        }
    }
}

impl Drop for RouteGuard<'_> {
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
/// [`ArenaRouter`](crate::ArenaRouter)) come from the lease's arena. Made by [`PooledArena::enter`], which
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
/// use pagekeep_arena::{ArenaPool, PoolConfig, in_arena};
///
/// let pool = ArenaPool::new(PoolConfig::new(1, 1 << 20))?.into_static()?;
/// let guard = pool.try_acquire().expect("a free arena").enter();
/// assert!(in_arena());
/// let lease = guard.exit();
/// assert!(!in_arena());
/// drop(lease);
/// # Ok::<(), pagekeep_arena::PoolError>(())
/// ```
///
/// The lease is in the guard, so it cannot be moved to another thread while entered,
/// not even after the guard is forgotten:
///
/// ```compile_fail,E0382
/// use pagekeep_arena::{ArenaPool, PoolConfig};
///
/// let pool = ArenaPool::new(PoolConfig::new(1, 1 << 20))?.into_static()?;
/// let lease = pool.try_acquire().expect("a free arena");
/// std::mem::forget(lease.enter());
/// std::thread::spawn(move || lease.alloc(1u8)); // `lease` was moved into the guard
/// # Ok::<(), pagekeep_arena::PoolError>(())
/// ```
#[must_use = "dropping the guard leaves the arena and releases the lease"]
pub struct ArenaGuard<P: PageSource + 'static = DefaultPages> {
    /// Declared first, so dropped first: the route is gone before the lease is released.
    route: RouteGuard<'static>,
    lease: PooledArena<'static, P>,
    /// The route is this thread's: the guard must stay on it.
    _not_send: PhantomData<*const ()>,
}

impl<P: PageSource + 'static> PooledArena<'static, P> {
    /// Routes this thread's global allocations (through [`ArenaRouter`](crate::ArenaRouter)) to the arena
    /// until the returned guard is dropped or [exits](ArenaGuard::exit). The lease moves
    /// into the guard, which stays on this thread.
    ///
    /// # Panics
    /// When the pool cannot be registered with the router because
    /// [`MAX_POOLS`] others are.
    pub fn enter(self) -> ArenaGuard<P> {
        assert!(
            register(self.pool().core()),
            "pagekeep-arena: the router's registry of {MAX_POOLS} pools is full"
        );
        ArenaGuard {
            route: RouteGuard::push(Some(self.slot())),
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
    /// use pagekeep_arena::{ArenaPool, PoolConfig, in_arena};
    ///
    /// let pool = ArenaPool::new(PoolConfig::new(1, 1 << 20))?.into_static()?;
    /// let lease = pool.try_acquire().expect("a free arena");
    /// assert!(lease.run(in_arena));
    /// assert!(!in_arena());
    /// # Ok::<(), pagekeep_arena::PoolError>(())
    /// ```
    pub fn run<R>(&self, body: impl FnOnce() -> R) -> R {
        assert!(
            register(self.pool().core()),
            "pagekeep-arena: the router's registry of {MAX_POOLS} pools is full"
        );
        let _route = RouteGuard::push(Some(self.slot_borrowed()));
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
