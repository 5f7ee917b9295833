//! pagekeep-slab: a `SlabCache` of one size, an `ObjectCache` of 64-byte objects.
//! (`SlabHeap` needs no adapter of its own: it is a `GlobalAlloc` and an `Allocator`.)

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use std::collections::HashMap;

use pagekeep_mmap::PageSource;

use crate::metered::MeteredPages;
use pagekeep_slab::{CacheConfig, ObjectBox, ObjectCache, SlabCache};

use crate::subject::{Promises, Refused, Subject};

/// A [`SlabCache`] of `object_size`-byte objects: requests that fit are served from it,
/// larger ones refused (as its promises say); growth within the object is in place.
pub struct SlabCacheSubject<S: PageSource = MeteredPages> {
    /// `None` when the cache could not be created (its source refused): every request is
    /// then refused.
    cache: Option<SlabCache<S>>,
    layout: Layout,
    promises: Promises,
    /// What the cache holds from its source, where the source can tell.
    footprint: Option<fn(&S) -> usize>,
    /// The subject as one that may move between threads (a `Send` source).
    threaded: Option<fn(&mut Self) -> &mut (dyn Subject + Send)>,
}

impl SlabCacheSubject<MeteredPages> {
    /// A cache of objects of `object_size` bytes aligned to `align`, over OS pages
    /// counted for the footprint check.
    pub fn new(object_size: usize, align: usize) -> Self {
        SlabCacheSubject {
            footprint: Some(MeteredPages::held_bytes),
            ..SlabCacheSubject::with_source(object_size, align, MeteredPages::default(), false)
        }
    }
}

impl<S: PageSource> SlabCacheSubject<S> {
    /// A cache over `source`; `may_refuse` when the source fails on purpose (creating the
    /// cache may then fail too, and the subject refuses everything).
    ///
    /// # Panics
    /// When `object_size` and `align` are not a valid cache configuration.
    pub fn with_source(object_size: usize, align: usize, source: S, may_refuse: bool) -> Self
    where
        S: Send + Sync,
    {
        let layout = Layout::from_size_align(object_size, align).expect("a valid object layout");
        let cache = SlabCache::with_config(CacheConfig::new(object_size, align), source);
        assert!(
            cache.is_ok() || may_refuse,
            "a valid cache configuration: {:?}",
            cache.err()
        );
        let promises = Promises {
            max_size: Some(object_size),
            max_align: align,
            may_refuse,
            ..Promises::default()
        };
        SlabCacheSubject {
            cache: cache.ok(),
            layout,
            promises,
            footprint: None,
            threaded: Some(|subject| subject),
        }
    }

    /// The cache, for statistics and invariant checks.
    pub fn cache(&self) -> Option<&SlabCache<S>> {
        self.cache.as_ref()
    }
}

impl<S: PageSource> fmt::Debug for SlabCacheSubject<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabCacheSubject")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl<S: PageSource> SlabCacheSubject<S> {
    fn fits(&self, layout: Layout) -> bool {
        layout.size() <= self.layout.size() && layout.align() <= self.layout.align()
    }
}

// SAFETY: requests that fit are forwarded to the cache unchanged; others are refused as
// the promises say.
unsafe impl<S: PageSource> Subject for SlabCacheSubject<S> {
    fn name(&self) -> String {
        format!("SlabCache({} bytes)", self.layout.size())
    }

    fn promises(&self) -> Promises {
        self.promises
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        match &self.cache {
            Some(cache) if self.fits(layout) => cache
                .try_alloc()
                .map(|ptr| NonNull::slice_from_raw_parts(ptr, layout.size()))
                .map_err(|_| Refused),
            _ => Err(Refused),
        }
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        let block = self.alloc(layout)?;
        // SAFETY: a fresh object of at least `layout.size()` bytes. A slab cache hands out
        // objects as freed (Bonwick), so zeroing is the caller's, as here.
        unsafe { block.cast::<u8>().write_bytes(0, layout.size()) };
        Ok(block)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, _layout: Layout) {
        if let Some(cache) = &self.cache {
            // SAFETY: forwarded from the caller: a live object of this cache.
            unsafe { cache.free(ptr) }
        }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        _layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        if self.fits(new) {
            Ok(NonNull::slice_from_raw_parts(ptr, new.size()))
        } else {
            Err(Refused)
        }
    }

    unsafe fn resize_in_place(
        &mut self,
        _ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> bool {
        Layout::from_size_align(new_size, layout.align()).is_ok_and(|new| self.fits(new))
    }

    fn footprint(&self) -> Option<usize> {
        let (cache, footprint) = (self.cache.as_ref()?, self.footprint?);
        Some(footprint(cache.source()))
    }

    fn threaded(&mut self) -> Option<&mut (dyn Subject + Send)> {
        self.threaded.map(|threaded| threaded(self))
    }
}

/// An object of the [`ObjectCacheSubject`]: 64 bytes, 8-aligned.
pub type Object = [u64; 8];

/// An [`ObjectCache`] of 64-byte objects; the cache is leaked so its handles can live in
/// the adapter (a few KiB per subject, in tests only).
pub struct ObjectCacheSubject {
    cache: &'static ObjectCache<Object>,
    live: HashMap<usize, ObjectBox<'static, Object>>,
}

impl ObjectCacheSubject {
    /// A cache whose constructor fills objects with a recognisable value.
    pub fn new() -> Self {
        let cache = ObjectCache::with_constructor(|| [0x0b1e_c7ed; 8]).expect("an object cache");
        ObjectCacheSubject {
            cache: Box::leak(Box::new(cache)),
            live: HashMap::new(),
        }
    }
}

impl Default for ObjectCacheSubject {
    fn default() -> Self {
        ObjectCacheSubject::new()
    }
}

impl fmt::Debug for ObjectCacheSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCacheSubject")
            .field("live", &self.live.len())
            .finish()
    }
}

// SAFETY: objects come from the cache and go back to it unchanged.
unsafe impl Subject for ObjectCacheSubject {
    fn name(&self) -> String {
        "ObjectCache<[u64; 8]>".to_owned()
    }

    fn promises(&self) -> Promises {
        Promises {
            max_size: Some(size_of::<Object>()),
            max_align: align_of::<Object>(),
            ..Promises::default()
        }
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        if layout.size() > size_of::<Object>() || layout.align() > align_of::<Object>() {
            return Err(Refused);
        }
        let object = self.cache.try_get().map_err(|_| Refused)?;
        let ptr = ObjectBox::as_ptr(&object).cast::<u8>();
        self.live.insert(ptr.addr().get(), object);
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        let block = self.alloc(layout)?;
        // SAFETY: a live object of at least `layout.size()` bytes, owned by the model.
        unsafe { block.cast::<u8>().write_bytes(0, layout.size()) };
        Ok(block)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, _layout: Layout) {
        // Dropping the handle returns the object to its cache.
        drop(self.live.remove(&ptr.addr().get()));
    }

    fn threaded(&mut self) -> Option<&mut (dyn Subject + Send)> {
        Some(self)
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        _layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        if new.size() <= size_of::<Object>() && new.align() <= align_of::<Object>() {
            Ok(NonNull::slice_from_raw_parts(ptr, new.size()))
        } else {
            Err(Refused)
        }
    }
}
