//! The router's registry of `'static` pools: address to slot, for frees from any thread.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::PoolCore;
use super::route::Entered;
use super::slot::Slot;

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

/// Registers a pool so that frees of its memory are routed to it; idempotent.
/// Returns `false` when the registry is full.
#[inline]
pub(super) fn register(pool: &'static PoolCore) -> bool {
    // Every `run` and `enter` asks: after the first, one load.
    pool.registered.load(Ordering::Acquire) || register_first(pool)
}

#[cold]
#[inline(never)]
fn register_first(pool: &'static PoolCore) -> bool {
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

/// A slot of a registered pool that holds a routed allocation: what a free or a
/// reallocation found by address. The only way the router frees arena memory.
#[derive(Clone, Copy)]
pub(crate) struct Routed {
    pool: &'static PoolCore,
    slot: &'static Slot,
}

/// The registered slot holding `address`, if any: a range check per registered pool,
/// then one subtraction and a shift.
#[inline(always)]
pub(crate) fn locate(address: usize) -> Option<Routed> {
    let published = PUBLISHED.load(Ordering::Acquire).min(MAX_POOLS);
    for entry in &POOLS[..published] {
        let pool = entry.load(Ordering::Acquire);
        if pool.is_null() {
            continue;
        }
        // SAFETY: registered pools are `'static` and never dropped.
        let pool: &'static PoolCore = unsafe { &*pool };
        if let Some(slot) = pool.slot_of(address) {
            return Some(Routed { pool, slot });
        }
    }
    None
}

impl Routed {
    /// Frees a routed allocation: on the thread that has entered the slot, back to its
    /// bump allocator (counted there); from anywhere else, one atomic count, and the free
    /// that settles a quarantined slot's debt recycles it.
    ///
    /// # Safety
    /// - `ptr` is a live allocation of `layout` in this slot, made through the router,
    ///   and freed once.
    #[inline]
    pub(crate) unsafe fn free(self, entered: Option<Entered>, ptr: NonNull<u8>, layout: Layout) {
        match entered {
            Some(entered) if entered.is(self.slot) => {
                // SAFETY: forwarded; the allocation is this entered slot's.
                unsafe { entered.free(ptr, layout) }
            }
            _ => self.slot.remote_free(self.pool),
        }
    }

    /// Reallocates a routed allocation in place, or by a move within the arena, when
    /// this thread has entered its slot; `None` otherwise, or when the arena is full.
    ///
    /// # Safety
    /// - `ptr` is a live allocation of `layout` in this slot, made through the router;
    ///   `new_layout` has a non-zero size.
    #[inline]
    pub(crate) unsafe fn try_realloc(
        self,
        entered: Option<Entered>,
        ptr: NonNull<u8>,
        layout: Layout,
        new_layout: Layout,
    ) -> Option<NonNull<u8>> {
        let entered = entered.filter(|entered| entered.is(self.slot))?;
        // SAFETY: forwarded; the allocation is this entered slot's.
        unsafe { entered.try_realloc(ptr, layout, new_layout) }
    }
}
