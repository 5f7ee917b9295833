//! [`ObjectCache`]: a typed cache with Bonwick's object caching.
//!
//! With a constructor, an object is built once, when its slot is first carved from a
//! slab, and handed out already initialised; it comes back without being dropped, ready
//! for the next user, and is dropped only when its slab is reclaimed (trimmed, or the
//! cache dropped). The link word of a free object then lives after the object, so the
//! object's bytes are never disturbed. Without a constructor the cache is a typed pool:
//! [`ObjectCache::insert`] moves a value in, dropping the handle drops it, and nothing is
//! tracked.

use core::fmt;
use core::marker::PhantomData;
use core::mem::needs_drop;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::{DefaultPages, PageSource};

use crate::cache::{
    CacheCore, CacheError, CoreConfig, default_magazine_capacity, default_max_magazine_capacity,
    free_core, new_core,
};
use crate::slab::Geometry;
use crate::stats::CacheStats;

/// The constructor of a constructed cache.
type Constructor<T> = Box<dyn Fn() -> T + Send + Sync>;

/// A typed object cache (Bonwick 1994, section 3), on slabs with per-thread magazines.
///
/// # Examples
///
/// Object caching: the constructor runs once per slot, not once per `get`.
///
/// ```
/// use pagekeep_slab::ObjectCache;
///
/// let cache = ObjectCache::with_constructor(|| Vec::<u8>::with_capacity(4096))?;
/// {
///     let mut buffer = cache.get();
///     assert!(buffer.capacity() >= 4096);
///     buffer.extend_from_slice(b"request");
///     buffer.clear(); // return it in its constructed state
/// } // back to the cache, not dropped: its capacity is kept
/// let again = cache.get();
/// assert!(again.capacity() >= 4096);
/// # Ok::<(), pagekeep_slab::CacheError>(())
/// ```
///
/// A typed pool:
///
/// ```
/// use pagekeep_slab::ObjectCache;
///
/// let cache = ObjectCache::<String>::new()?;
/// let name = cache.insert(String::from("slab"));
/// assert_eq!(&*name, "slab");
/// # Ok::<(), pagekeep_slab::CacheError>(())
/// ```
pub struct ObjectCache<T, S: PageSource = DefaultPages> {
    core: NonNull<CacheCore<S>>,
    /// Copies of the core's cache id and link offset, read on the fast paths.
    id: u32,
    link_offset: usize,
    constructor: Option<Constructor<T>>,
    _owns: PhantomData<(T, CacheCore<S>)>,
}

// SAFETY: objects move between threads through the cache, so `T: Send`; the core is
// shareable when its source is.
unsafe impl<T: Send, S: PageSource + Sync + Send> Sync for ObjectCache<T, S> {}
// SAFETY: as above.
unsafe impl<T: Send, S: PageSource + Send> Send for ObjectCache<T, S> {}

/// Drops the `T` at `object`.
///
/// # Safety
/// - `object` holds a valid `T` that is not used afterwards.
unsafe fn drop_object<T>(object: NonNull<u8>) {
    // SAFETY: the caller's obligation.
    unsafe { object.cast::<T>().drop_in_place() };
}

impl<T> ObjectCache<T, DefaultPages> {
    /// A typed pool without a constructor (use [`insert`](Self::insert)).
    ///
    /// # Errors
    /// As [`SlabCache::new`](crate::SlabCache::new).
    pub fn new() -> Result<Self, CacheError> {
        Self::with_source(DefaultPages::default(), None, 4)
    }

    /// A constructed cache: `constructor` builds each object once (use
    /// [`get`](Self::get)).
    ///
    /// The constructor runs with the cache lock held: it must not use this cache, and a
    /// panic in it aborts the process.
    ///
    /// # Errors
    /// As [`SlabCache::new`](crate::SlabCache::new).
    pub fn with_constructor(
        constructor: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<Self, CacheError> {
        Self::with_source(DefaultPages::default(), Some(Box::new(constructor)), 4)
    }
}

impl<T, S: PageSource> ObjectCache<T, S> {
    /// A cache on `source`, with an optional constructor, keeping up to
    /// `max_empty_slabs` empty slabs.
    ///
    /// # Errors
    /// As [`SlabCache::new`](crate::SlabCache::new).
    pub fn with_source(
        source: S,
        constructor: Option<Constructor<T>>,
        max_empty_slabs: usize,
    ) -> Result<Self, CacheError> {
        let constructed = constructor.is_some();
        let geometry = Geometry::new(size_of::<T>(), align_of::<T>(), constructed)
            .ok_or(CacheError::UnsupportedLayout)?;
        let core = new_core(
            CoreConfig {
                geometry,
                max_empty_slabs,
                magazine_capacity: default_magazine_capacity(geometry.slot_size),
                max_magazine_capacity: default_max_magazine_capacity(geometry.slot_size),
                max_depot_magazines: crate::depot::DEPOT_MAGAZINES,
                purge_free_objects: false,
                magazines: true,
                drop_object: (constructed && needs_drop::<T>()).then_some(drop_object::<T>),
            },
            source,
        )?;
        // SAFETY: just made, live until the cache is dropped.
        let (id, link_offset) = unsafe { core.as_ref() }.hints();
        Ok(ObjectCache {
            core,
            id,
            link_offset,
            constructor,
            _owns: PhantomData,
        })
    }

    fn core(&self) -> &CacheCore<S> {
        // SAFETY: the core lives as long as `self`.
        unsafe { self.core.as_ref() }
    }

    /// Whether objects are built by a constructor (and cached constructed).
    pub fn is_constructed(&self) -> bool {
        self.constructor.is_some()
    }

    #[inline(always)]
    fn alloc_slot(&self) -> Result<NonNull<T>, AllocError> {
        let object = match &self.constructor {
            None => self.core().alloc_hinted(self.id, self.link_offset, None),
            Some(constructor) => {
                let construct = |place: NonNull<u8>| {
                    // SAFETY: a fresh slot of this cache, sized and aligned for `T`.
                    unsafe { place.cast::<T>().write(constructor()) }
                };
                self.core()
                    .alloc_hinted(self.id, self.link_offset, Some(&construct))
            }
        };
        object.map(NonNull::cast).ok_or(AllocError)
    }

    /// Takes a constructed object.
    ///
    /// # Errors
    /// [`AllocError`] when the page source is exhausted.
    ///
    /// # Panics
    /// If the cache has no constructor (use [`insert`](Self::insert)).
    #[inline(always)]
    pub fn try_get(&self) -> Result<ObjectBox<'_, T, S>, AllocError> {
        assert!(
            self.is_constructed(),
            "ObjectCache::get needs a constructor; use insert"
        );
        let object = self.alloc_slot()?;
        Ok(ObjectBox {
            cache: self,
            object,
        })
    }

    /// Takes a constructed object; calls [`std::alloc::handle_alloc_error`] when memory
    /// is exhausted.
    ///
    /// # Panics
    /// If the cache has no constructor.
    #[inline(always)]
    pub fn get(&self) -> ObjectBox<'_, T, S> {
        match self.try_get() {
            Ok(object) => object,
            Err(AllocError) => alloc_failed::<T>(),
        }
    }

    /// Moves `value` into a slot. In a constructed cache the slot's constructed object
    /// is dropped first and `value` stays cached in its place when the handle drops.
    ///
    /// # Errors
    /// [`AllocError`] (with `value` dropped) when the page source is exhausted.
    #[inline(always)]
    pub fn try_insert(&self, value: T) -> Result<ObjectBox<'_, T, S>, AllocError> {
        // Only the magazine pop is inline; the miss is a call that returns a slot, so
        // the value is used once, by the move below: it is built in the slot rather
        // than on the stack and copied.
        let object = match self.core().alloc_fast_hinted(self.id, self.link_offset) {
            Some(object) => object.cast::<T>(),
            None => self.alloc_slot_missed()?,
        };
        if self.is_constructed() {
            // SAFETY: slots of a constructed cache hold a valid `T`, replaced here.
            unsafe { *object.as_ptr() = value };
        } else {
            // SAFETY: a fresh slot sized and aligned for `T`.
            unsafe { object.write(value) };
        }
        Ok(ObjectBox {
            cache: self,
            object,
        })
    }

    /// A slot after a miss of the inlined magazine pop (out of line).
    #[cold]
    #[inline(never)]
    fn alloc_slot_missed(&self) -> Result<NonNull<T>, AllocError> {
        self.alloc_slot()
    }

    /// Moves `value` into a slot; calls [`std::alloc::handle_alloc_error`] when memory
    /// is exhausted.
    #[inline(always)]
    pub fn insert(&self, value: T) -> ObjectBox<'_, T, S> {
        match self.try_insert(value) {
            Ok(object) => object,
            Err(AllocError) => alloc_failed::<T>(),
        }
    }

    /// Statistics (see [`SlabCache::stats`](crate::SlabCache::stats)).
    pub fn stats(&self) -> CacheStats {
        self.core().stats()
    }

    /// Returns the calling thread's magazines to the depot.
    pub fn flush_thread_cache(&self) {
        self.core().flush_thread();
    }

    /// Empties the depot and reclaims every empty slab, dropping its constructed objects.
    pub fn trim(&self) {
        self.core().trim();
    }

    /// Walks and checks every list (see [`SlabCache::check_invariants`](crate::SlabCache::check_invariants)).
    ///
    /// # Panics
    /// On the first inconsistency.
    pub fn check_invariants(&self) {
        self.core().check_invariants();
    }

    /// The page source.
    pub fn source(&self) -> &S {
        self.core().source()
    }
}

#[cold]
#[inline(never)]
fn alloc_failed<T>() -> ! {
    std::alloc::handle_alloc_error(core::alloc::Layout::new::<T>())
}

impl<T, S: PageSource> Drop for ObjectCache<T, S> {
    fn drop(&mut self) {
        // SAFETY: handles borrow the cache, so none is alive; the core is ours.
        unsafe { free_core(self.core) };
    }
}

impl<T, S: PageSource> fmt::Debug for ObjectCache<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache")
            .field("type", &core::any::type_name::<T>())
            .field("constructed", &self.is_constructed())
            .field("stats", &self.stats())
            .finish()
    }
}

/// An object of an [`ObjectCache`]; returns it to the cache when dropped (without
/// dropping it in a constructed cache, dropping it in a plain one).
#[must_use = "dropping the handle returns the object to its cache at once"]
pub struct ObjectBox<'cache, T, S: PageSource = DefaultPages> {
    cache: &'cache ObjectCache<T, S>,
    object: NonNull<T>,
}

// SAFETY: the handle owns its `T` like a `Box`, and can free it from any thread.
unsafe impl<T: Send, S: PageSource + Sync + Send> Send for ObjectBox<'_, T, S> {}
// SAFETY: shared access only gives `&T`.
unsafe impl<T: Sync + Send, S: PageSource + Sync + Send> Sync for ObjectBox<'_, T, S> {}

impl<T, S: PageSource> ObjectBox<'_, T, S> {
    /// The object's address.
    pub fn as_ptr(this: &Self) -> NonNull<T> {
        this.object
    }
}

impl<T, S: PageSource> Deref for ObjectBox<'_, T, S> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the slot holds a valid `T` owned by this handle.
        unsafe { self.object.as_ref() }
    }
}

impl<T, S: PageSource> DerefMut for ObjectBox<'_, T, S> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and the handle is borrowed mutably.
        unsafe { self.object.as_mut() }
    }
}

impl<T, S: PageSource> Drop for ObjectBox<'_, T, S> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.cache.is_constructed() {
            // SAFETY: the handle owns a valid `T`, dropped once here.
            unsafe { self.object.drop_in_place() };
        }
        // SAFETY: the slot came from this cache and the handle goes away with it.
        unsafe {
            self.cache
                .core()
                .free_hinted(self.cache.id, self.cache.link_offset, self.object.cast())
        };
    }
}

impl<T: fmt::Debug, S: PageSource> fmt::Debug for ObjectBox<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
