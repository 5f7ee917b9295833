//! [`HeapBox`]: an owned value in an [`AsyncHeap`], as `Box` is in the global heap.

use core::alloc::Layout;
use core::borrow::{Borrow, BorrowMut};
use core::cmp::Ordering;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use pagekeep_mmap::{DefaultPages, PageSource};

use super::{AsyncHeap, HeapBlock};

/// A value owned in an [`AsyncHeap`]: dropped and freed (its bytes given back, waking
/// waiters they let in) when the box is dropped. Behaves as `Box<T>`: `Deref`,
/// `DerefMut`, `Send`/`Sync` as `T` (and the heap) allow, comparisons, hashing and
/// formatting through the value.
///
/// # Examples
///
/// ```
/// use pagekeep_slab::async_heap::{AsyncHeap, HeapBox};
///
/// let heap = AsyncHeap::new(1024);
/// let mut boxed: HeapBox<'_, String> = heap.try_alloc(String::from("in the heap")).unwrap();
/// boxed.push('!');
/// assert_eq!(boxed.as_str(), "in the heap!");
/// assert_eq!(HeapBox::into_inner(boxed), "in the heap!");
/// assert_eq!(heap.available(), 1024);
/// ```
pub struct HeapBox<'h, T: ?Sized, S: PageSource + Clone = DefaultPages> {
    /// A live block of `heap` holding an initialised `T`, owned by this box; its layout
    /// is `Layout::for_value` of the value.
    ptr: NonNull<T>,
    heap: &'h AsyncHeap<S>,
    /// Owns a `T` (for the drop check and variance).
    _owns: PhantomData<T>,
}

// SAFETY: the box owns its `T`, so sending it sends the `T`; its drop frees through
// `&AsyncHeap`, which is fine from another thread if the heap is `Sync`.
unsafe impl<T: ?Sized + Send, S: PageSource + Clone> Send for HeapBox<'_, T, S> where
    AsyncHeap<S>: Sync
{
}
// SAFETY: `&HeapBox` gives only `&T`.
unsafe impl<T: ?Sized + Sync, S: PageSource + Clone> Sync for HeapBox<'_, T, S> where
    AsyncHeap<S>: Sync
{
}

// The box never pins its value in place (as `Box`).
impl<T: ?Sized, S: PageSource + Clone> Unpin for HeapBox<'_, T, S> {}

impl<'h, T, S: PageSource + Clone> HeapBox<'h, T, S> {
    /// Moves `value` into `block`, which must have `T`'s layout.
    #[inline(always)]
    pub(super) fn write(block: HeapBlock<'h, S>, value: T) -> Self {
        debug_assert_eq!(block.layout(), Layout::new::<T>());
        let heap = block.heap();
        let (ptr, _) = block.into_raw();
        let ptr = ptr.cast::<T>();
        // SAFETY: the block is live, owned, sized and aligned for a `T`.
        unsafe { ptr.write(value) };
        HeapBox {
            ptr,
            heap,
            _owns: PhantomData,
        }
    }

    /// Moves the value out and frees its block.
    pub fn into_inner(boxed: Self) -> T {
        let boxed = ManuallyDrop::new(boxed);
        // SAFETY: the value is initialised and read once: the box is not dropped.
        let value = unsafe { boxed.ptr.read() };
        // SAFETY: the box's own block with `T`'s layout, freed once (its value moved
        // out above).
        unsafe { boxed.heap.dealloc(boxed.ptr.cast(), Layout::new::<T>()) };
        value
    }
}

impl<'h, T: Copy, S: PageSource + Clone> HeapBox<'h, [T], S> {
    /// Copies `slice` into `block`, which must have its layout.
    pub(super) fn copy_slice(block: HeapBlock<'h, S>, slice: &[T]) -> Self {
        debug_assert_eq!(block.layout(), Layout::for_value(slice));
        let heap = block.heap();
        let (ptr, _) = block.into_raw();
        let start = ptr.cast::<T>();
        // SAFETY: the block is live, owned, and has room and alignment for `slice`;
        // a fresh block does not overlap the caller's slice.
        unsafe { ptr::copy_nonoverlapping(slice.as_ptr(), start.as_ptr(), slice.len()) };
        HeapBox {
            ptr: NonNull::slice_from_raw_parts(start, slice.len()),
            heap,
            _owns: PhantomData,
        }
    }
}

impl<'h, T: ?Sized, S: PageSource + Clone> HeapBox<'h, T, S> {
    /// The heap the value lives in.
    pub fn heap(boxed: &Self) -> &'h AsyncHeap<S> {
        boxed.heap
    }

    /// Gives up the box: the value stays in the heap, its bytes taken, until
    /// [`from_raw`](Self::from_raw) takes it back.
    pub fn into_raw(boxed: Self) -> NonNull<T> {
        ManuallyDrop::new(boxed).ptr
    }

    /// Takes back a value given up by [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// - `ptr` was returned by `into_raw` of a box of `heap` and is taken back once.
    pub unsafe fn from_raw(heap: &'h AsyncHeap<S>, ptr: NonNull<T>) -> Self {
        HeapBox {
            ptr,
            heap,
            _owns: PhantomData,
        }
    }

    /// Leaks the box: the value lives (and its bytes stay taken) as long as the heap.
    pub fn leak(boxed: Self) -> &'h mut T {
        let mut ptr = Self::into_raw(boxed);
        // SAFETY: the value is initialised, and nobody else will ever reach it: the box
        // is gone and its block is never freed, so it lives while the heap lives.
        unsafe { ptr.as_mut() }
    }
}

impl<T: ?Sized, S: PageSource + Clone> Drop for HeapBox<'_, T, S> {
    #[inline(always)]
    fn drop(&mut self) {
        /// Frees the block even if the value's drop panics.
        struct Free<'a, S: PageSource + Clone> {
            heap: &'a AsyncHeap<S>,
            ptr: NonNull<u8>,
            layout: Layout,
        }
        impl<S: PageSource + Clone> Drop for Free<'_, S> {
            #[inline(always)]
            fn drop(&mut self) {
                // SAFETY: the box's block with the layout of its value, freed once.
                unsafe { self.heap.dealloc(self.ptr, self.layout) };
            }
        }
        // SAFETY: the value is initialised (box invariant).
        let layout = Layout::for_value(unsafe { self.ptr.as_ref() });
        if !core::mem::needs_drop::<T>() {
            // Nothing to drop, nothing that can unwind: no guard (whose construction
            // cost a store-forwarding stall on the fast path).
            // SAFETY: the box's block with the layout of its value, freed once.
            unsafe { self.heap.dealloc(self.ptr.cast(), layout) };
            return;
        }
        let _free = Free {
            heap: self.heap,
            ptr: self.ptr.cast(),
            layout,
        };
        // SAFETY: the value is initialised and dropped once, here.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr()) };
    }
}

impl<T: ?Sized, S: PageSource + Clone> Deref for HeapBox<'_, T, S> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: initialised, owned by this box, borrowed for the box's borrow.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized, S: PageSource + Clone> DerefMut for HeapBox<'_, T, S> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: initialised, owned by this box, borrowed mutably for its borrow.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized, S: PageSource + Clone> AsRef<T> for HeapBox<'_, T, S> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: ?Sized, S: PageSource + Clone> AsMut<T> for HeapBox<'_, T, S> {
    fn as_mut(&mut self) -> &mut T {
        self
    }
}

impl<T: ?Sized, S: PageSource + Clone> Borrow<T> for HeapBox<'_, T, S> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: ?Sized, S: PageSource + Clone> BorrowMut<T> for HeapBox<'_, T, S> {
    fn borrow_mut(&mut self) -> &mut T {
        self
    }
}

impl<T: ?Sized + fmt::Debug, S: PageSource + Clone> fmt::Debug for HeapBox<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display, S: PageSource + Clone> fmt::Display for HeapBox<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized, S: PageSource + Clone> fmt::Pointer for HeapBox<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&self.ptr, f)
    }
}

impl<T: ?Sized + PartialEq, S: PageSource + Clone> PartialEq for HeapBox<'_, T, S> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: ?Sized + Eq, S: PageSource + Clone> Eq for HeapBox<'_, T, S> {}

impl<T: ?Sized + PartialOrd, S: PageSource + Clone> PartialOrd for HeapBox<'_, T, S> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: ?Sized + Ord, S: PageSource + Clone> Ord for HeapBox<'_, T, S> {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: ?Sized + Hash, S: PageSource + Clone> Hash for HeapBox<'_, T, S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl<T: ?Sized + Iterator, S: PageSource + Clone> Iterator for HeapBox<'_, T, S> {
    type Item = T::Item;

    fn next(&mut self) -> Option<T::Item> {
        (**self).next()
    }
}

impl<F: ?Sized + core::future::Future + Unpin, S: PageSource + Clone> core::future::Future
    for HeapBox<'_, F, S>
{
    type Output = F::Output;

    fn poll(
        mut self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<F::Output> {
        core::pin::Pin::new(&mut **self).poll(cx)
    }
}
