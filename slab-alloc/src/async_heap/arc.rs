//! [`HeapArc`]: a shared value in an [`AsyncHeap`], as `Arc` is in the global heap.

use core::alloc::Layout;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering, fence};

use pagekeep_mmap::{DefaultPages, PageSource};

use super::AsyncHeap;

/// The most references an arc may count, as `Arc`'s: beyond, the process aborts.
const MAX_REFERENCES: usize = isize::MAX as usize;

/// The block of a [`HeapArc`]: its count, then its value.
#[repr(C)]
struct Shared<T> {
    /// How many [`HeapArc`]s point here.
    references: AtomicUsize,
    value: T,
}

/// A value shared in an [`AsyncHeap`], counted by atomic references: dropped and freed
/// (its bytes given back) when the last reference goes. Behaves as `Arc<T>`: `Clone`,
/// `Deref`, `Send` and `Sync` only for `T: Send + Sync` (and a `Sync` heap).
///
/// # Examples
///
/// ```
/// use pagekeep_slab::async_heap::{AsyncHeap, HeapArc};
/// # fn block_on<F: core::future::Future>(future: F) -> F::Output {
/// #     let mut future = core::pin::pin!(future);
/// #     let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
/// #     loop {
/// #         if let core::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
/// #             return output;
/// #         }
/// #     }
/// # }
///
/// let heap = AsyncHeap::new(1024);
/// let shared = block_on(HeapArc::new(&heap, [1u32, 2, 3]));
/// let other = shared.clone();
/// std::thread::scope(|scope| {
///     scope.spawn(move || assert_eq!(other.iter().sum::<u32>(), 6));
/// });
/// assert_eq!(HeapArc::references(&shared), 1);
/// ```
pub struct HeapArc<'h, T, S: PageSource + Clone = DefaultPages> {
    /// A live block of `heap` holding an initialised [`Shared<T>`], which this arc counts
    /// for one reference.
    shared: NonNull<Shared<T>>,
    heap: &'h AsyncHeap<S>,
    _owns: PhantomData<T>,
}

// SAFETY: as `Arc`: clones on other threads read the `T` (so `Sync`), and the last one,
// on any thread, drops it (so `Send`); the free goes through a `Sync` heap.
unsafe impl<T: Send + Sync, S: PageSource + Clone> Send for HeapArc<'_, T, S> where
    AsyncHeap<S>: Sync
{
}
// SAFETY: as above: `&HeapArc` can be cloned into a `HeapArc` on another thread.
unsafe impl<T: Send + Sync, S: PageSource + Clone> Sync for HeapArc<'_, T, S> where
    AsyncHeap<S>: Sync
{
}

impl<T, S: PageSource + Clone> Unpin for HeapArc<'_, T, S> {}

impl<'h, T, S: PageSource + Clone> HeapArc<'h, T, S> {
    /// Moves `value` into `heap`, waiting for room.
    ///
    /// # Panics
    /// As [`AsyncHeap::alloc_layout`].
    pub async fn new(heap: &'h AsyncHeap<S>, value: T) -> Self {
        let block = heap.alloc_layout(Layout::new::<Shared<T>>()).await;
        Self::write(block.into_raw().0, heap, value)
    }

    /// Moves `value` into `heap` if there is room now and nobody waits; gives it back
    /// otherwise. Never waits.
    ///
    /// # Errors
    /// As [`AsyncHeap::try_alloc_layout`], with the value.
    pub fn try_new(heap: &'h AsyncHeap<S>, value: T) -> Result<Self, T> {
        match heap.try_alloc_layout(Layout::new::<Shared<T>>()) {
            Ok(block) => Ok(Self::write(block.into_raw().0, heap, value)),
            Err(_) => Err(value),
        }
    }

    /// Builds the shared block in `ptr`, a block of `heap` with `Shared<T>`'s layout.
    fn write(ptr: NonNull<u8>, heap: &'h AsyncHeap<S>, value: T) -> Self {
        let shared = ptr.cast::<Shared<T>>();
        // SAFETY: a live block, owned, sized and aligned for a `Shared<T>`.
        unsafe {
            shared.write(Shared {
                references: AtomicUsize::new(1),
                value,
            });
        }
        HeapArc {
            shared,
            heap,
            _owns: PhantomData,
        }
    }

    fn shared(&self) -> &Shared<T> {
        // SAFETY: initialised, and kept alive by this arc's reference.
        unsafe { self.shared.as_ref() }
    }

    /// How many arcs share the value.
    pub fn references(arc: &Self) -> usize {
        arc.shared().references.load(Ordering::Acquire)
    }

    /// Whether two arcs share one value.
    pub fn ptr_eq(first: &Self, second: &Self) -> bool {
        first.shared == second.shared
    }

    /// The value, mutably, if this is its only arc.
    pub fn get_mut(arc: &mut Self) -> Option<&mut T> {
        if arc.shared().references.load(Ordering::Acquire) == 1 {
            // SAFETY: the only reference, borrowed mutably: nobody else can reach the
            // value (the `Acquire` saw the other arcs' drops).
            Some(unsafe { &mut (*arc.shared.as_ptr()).value })
        } else {
            None
        }
    }

    /// The value, if this is its only arc; the arc back otherwise.
    ///
    /// # Errors
    /// The arc, when others share the value.
    pub fn try_unwrap(arc: Self) -> Result<T, Self> {
        if arc
            .shared()
            .references
            .compare_exchange(1, 0, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(arc);
        }
        let arc = core::mem::ManuallyDrop::new(arc);
        // SAFETY: the last reference, now given up: the value is read once and its
        // block freed once, with the layout it was allocated with.
        unsafe {
            let value = ptr::addr_of!((*arc.shared.as_ptr()).value).read();
            arc.heap
                .dealloc(arc.shared.cast(), Layout::new::<Shared<T>>());
            Ok(value)
        }
    }
}

impl<T, S: PageSource + Clone> Clone for HeapArc<'_, T, S> {
    fn clone(&self) -> Self {
        let before = self.shared().references.fetch_add(1, Ordering::Relaxed);
        if before > MAX_REFERENCES {
            std::process::abort();
        }
        HeapArc {
            shared: self.shared,
            heap: self.heap,
            _owns: PhantomData,
        }
    }
}

impl<T, S: PageSource + Clone> Drop for HeapArc<'_, T, S> {
    fn drop(&mut self) {
        if self.shared().references.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other arc's uses happen before the drop of the value.
        fence(Ordering::Acquire);
        /// Frees the block even if the value's drop panics.
        struct Free<'a, T, S: PageSource + Clone> {
            heap: &'a AsyncHeap<S>,
            shared: NonNull<Shared<T>>,
        }
        impl<T, S: PageSource + Clone> Drop for Free<'_, T, S> {
            fn drop(&mut self) {
                // SAFETY: the last reference's block, with its layout, freed once.
                unsafe {
                    self.heap
                        .dealloc(self.shared.cast(), Layout::new::<Shared<T>>())
                };
            }
        }
        let _free = Free {
            heap: self.heap,
            shared: self.shared,
        };
        // SAFETY: the last reference: the value is dropped once, by nobody else.
        unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*self.shared.as_ptr()).value)) };
    }
}

impl<T, S: PageSource + Clone> Deref for HeapArc<'_, T, S> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.shared().value
    }
}

impl<T, S: PageSource + Clone> AsRef<T> for HeapArc<'_, T, S> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T, S: PageSource + Clone> core::borrow::Borrow<T> for HeapArc<'_, T, S> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: fmt::Debug, S: PageSource + Clone> fmt::Debug for HeapArc<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: fmt::Display, S: PageSource + Clone> fmt::Display for HeapArc<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: PartialEq, S: PageSource + Clone> PartialEq for HeapArc<'_, T, S> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Eq, S: PageSource + Clone> Eq for HeapArc<'_, T, S> {}

impl<T: Hash, S: PageSource + Clone> Hash for HeapArc<'_, T, S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}
