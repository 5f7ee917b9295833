//! [`HeapVec`]: a growable array in an [`AsyncHeap`], whose growth waits for room.

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::{DefaultPages, PageSource};

use super::{AsyncHeap, HeapBlock};

/// A vector in an [`AsyncHeap`]: as `Vec<T>`, but growing (with
/// [`push`](Self::push), [`reserve`](Self::reserve),
/// [`extend_from_slice`](Self::extend_from_slice)) waits for room in the heap, and the
/// `try_` forms never wait.
///
/// Growth allocates the new buffer before it frees the old one, so while it waits the
/// vector holds its old buffer: a vector can grow only to a capacity whose buffer fits
/// beside its current one (old plus new at most the heap's capacity). Growth doubles the
/// capacity when that fits beside the old buffer, and asks for just what is needed
/// otherwise; if even that cannot fit, it panics instead of waiting forever. Size a
/// vector up front ([`with_capacity`](Self::with_capacity)) to avoid both.
///
/// # Examples
///
/// ```
/// use pagekeep_slab::async_heap::{AsyncHeap, HeapVec};
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
/// let heap = AsyncHeap::new(64 * 1024);
/// block_on(async {
///     let mut squares = HeapVec::new(&heap);
///     for i in 0..100u64 {
///         squares.push(i * i).await;
///     }
///     assert_eq!(squares[99], 9801);
///     assert_eq!(squares.len(), 100);
/// });
/// assert_eq!(heap.available(), 64 * 1024);
/// ```
pub struct HeapVec<'h, T, S: PageSource + Clone = DefaultPages> {
    /// A live block of `heap` of `Layout::array::<T>(capacity)` (dangling when that is
    /// zero-sized), whose first `len` elements are initialised.
    ptr: NonNull<T>,
    len: usize,
    capacity: usize,
    heap: &'h AsyncHeap<S>,
    _owns: PhantomData<T>,
}

// SAFETY: owns its elements, as `Vec`; frees through a `Sync` heap.
unsafe impl<T: Send, S: PageSource + Clone> Send for HeapVec<'_, T, S> where AsyncHeap<S>: Sync {}
// SAFETY: `&HeapVec` gives only `&[T]`.
unsafe impl<T: Sync, S: PageSource + Clone> Sync for HeapVec<'_, T, S> where AsyncHeap<S>: Sync {}

impl<T, S: PageSource + Clone> Unpin for HeapVec<'_, T, S> {}

impl<'h, T, S: PageSource + Clone> HeapVec<'h, T, S> {
    /// An empty vector in `heap`; allocates nothing.
    pub fn new(heap: &'h AsyncHeap<S>) -> Self {
        HeapVec {
            ptr: NonNull::dangling(),
            len: 0,
            capacity: if size_of::<T>() == 0 { usize::MAX } else { 0 },
            heap,
            _owns: PhantomData,
        }
    }

    /// An empty vector with room for `capacity` elements, waiting for it.
    ///
    /// # Panics
    /// If the buffer's size overflows or counts for more than the heap's capacity.
    pub async fn with_capacity(heap: &'h AsyncHeap<S>, capacity: usize) -> Self {
        let mut vec = Self::new(heap);
        vec.reserve_exact(capacity).await;
        vec
    }

    /// The heap the vector lives in.
    pub fn heap(&self) -> &'h AsyncHeap<S> {
        self.heap
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many elements fit without growing.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised, in one block (or dangling and
        // aligned for an empty or zero-sized slice).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as `as_slice`, borrowed mutably.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Appends `value`, waiting for room if the vector must grow.
    ///
    /// # Panics
    /// As [`reserve`](Self::reserve).
    pub async fn push(&mut self, value: T) {
        if self.len == self.capacity {
            self.reserve(1).await;
        }
        self.push_within_capacity(value);
    }

    /// Appends `value` if the vector has room or can grow now; gives it back otherwise.
    /// Never waits.
    ///
    /// # Errors
    /// As [`try_reserve`](Self::try_reserve), with the value.
    pub fn try_push(&mut self, value: T) -> Result<(), T> {
        if self.len == self.capacity && self.try_reserve(1).is_err() {
            return Err(value);
        }
        self.push_within_capacity(value);
        Ok(())
    }

    fn push_within_capacity(&mut self, value: T) {
        debug_assert!(self.len < self.capacity);
        // SAFETY: `len < capacity`: the slot is inside the buffer and uninitialised.
        unsafe { self.ptr.add(self.len).write(value) };
        self.len += 1;
    }

    /// Removes the last element.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: the element was initialised and is now outside `len`: read once.
        Some(unsafe { self.ptr.add(self.len).read() })
    }

    /// Drops the elements from `len` on.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let tail = ptr::slice_from_raw_parts_mut(
            // SAFETY: `len < self.len`: inside the initialised part.
            unsafe { self.ptr.add(len) }.as_ptr(),
            self.len - len,
        );
        // Shortened first, so a panicking drop leaks instead of dropping twice.
        self.len = len;
        // SAFETY: the tail was initialised and is now outside `len`: dropped once.
        unsafe { ptr::drop_in_place(tail) };
    }

    /// Drops every element; keeps the buffer.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Makes room for `additional` more elements, waiting for it.
    ///
    /// # Panics
    /// If the new size overflows, or the new buffer cannot fit beside the old one in the
    /// heap's capacity (it could never be served).
    pub async fn reserve(&mut self, additional: usize) {
        self.grow(additional, false).await;
    }

    /// Makes room for exactly `additional` more elements (no doubling), waiting for it.
    ///
    /// # Panics
    /// As [`reserve`](Self::reserve).
    pub async fn reserve_exact(&mut self, additional: usize) {
        self.grow(additional, true).await;
    }

    async fn grow(&mut self, additional: usize, exact: bool) {
        if self.capacity - self.len >= additional {
            return;
        }
        let layout = self.grown_layout(additional, exact).unwrap_or_else(|()| {
            panic!(
                "a vector of {} elements cannot grow by {} beside its buffer in a heap of {} bytes",
                self.len,
                additional,
                self.heap.capacity()
            )
        });
        let block = self.heap.alloc_layout(layout).await;
        self.move_to(block);
    }

    /// Makes room for `additional` more elements if it is there now and nobody waits.
    /// Never waits.
    ///
    /// # Errors
    /// No room now, someone waiting, an overflow, or a buffer that cannot fit beside the
    /// old one.
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), AllocError> {
        if self.capacity - self.len >= additional {
            return Ok(());
        }
        let layout = self
            .grown_layout(additional, false)
            .map_err(|()| AllocError)?;
        let block = self.heap.try_alloc_layout(layout)?;
        self.move_to(block);
        Ok(())
    }

    /// Copies `slice` to the end, waiting for room.
    ///
    /// # Panics
    /// As [`reserve`](Self::reserve).
    pub async fn extend_from_slice(&mut self, slice: &[T])
    where
        T: Clone,
    {
        self.reserve(slice.len()).await;
        for value in slice {
            self.push_within_capacity(value.clone());
        }
    }

    /// The layout of the grown buffer: doubled (unless `exact`) if that fits beside the
    /// old buffer, just enough otherwise; `Err` if even that cannot fit or the size
    /// overflows.
    fn grown_layout(&self, additional: usize, exact: bool) -> Result<Layout, ()> {
        let needed = self.len.checked_add(additional).ok_or(())?;
        let held = self.heap.charge(self.layout()).ok_or(())?;
        let room = self.heap.capacity() - held;
        let fits = |capacity: usize| {
            let layout = Layout::array::<T>(capacity).ok()?;
            let bytes = self.heap.charge(layout)?;
            (bytes <= room).then_some(layout)
        };
        if exact {
            return fits(needed).ok_or(());
        }
        let doubled = needed.max(self.capacity.saturating_mul(2)).max(4);
        fits(doubled).or_else(|| fits(needed)).ok_or(())
    }

    /// The layout of the buffer.
    fn layout(&self) -> Layout {
        if size_of::<T>() == 0 {
            return Layout::new::<T>();
        }
        Layout::array::<T>(self.capacity).expect("the buffer's layout was valid when made")
    }

    /// Moves the elements to `block` (a bigger buffer) and frees the old buffer.
    fn move_to(&mut self, block: HeapBlock<'h, S>) {
        let capacity = block.layout().size() / size_of::<T>();
        let old = self.layout();
        let (new, _) = block.into_raw();
        let new = new.cast::<T>();
        // SAFETY: distinct live blocks; the old one holds `len` initialised elements,
        // the new one has room for them.
        unsafe { ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len) };
        let (old_ptr, old_capacity) = (self.ptr, self.capacity);
        // The vector owns the new buffer before the old one is freed: the free can
        // panic (it re-raises the panic of a waiter's waker it wakes), and the vector
        // must then still be whole.
        self.ptr = new;
        self.capacity = capacity;
        if old_capacity != 0 {
            // SAFETY: the old buffer, a block of this heap with this layout, freed once:
            // its elements were moved out above, and the vector no longer points at it.
            unsafe { self.heap.dealloc(old_ptr.cast(), old) };
        }
    }
}

impl<T, S: PageSource + Clone> Drop for HeapVec<'_, T, S> {
    fn drop(&mut self) {
        /// Frees the buffer even if an element's drop panics.
        struct Free<'a, S: PageSource + Clone> {
            heap: &'a AsyncHeap<S>,
            ptr: NonNull<u8>,
            layout: Layout,
        }
        impl<S: PageSource + Clone> Drop for Free<'_, S> {
            fn drop(&mut self) {
                if self.layout.size() != 0 {
                    // SAFETY: the vector's buffer with its layout, freed once.
                    unsafe { self.heap.dealloc(self.ptr, self.layout) };
                }
            }
        }
        let _free = Free {
            heap: self.heap,
            ptr: self.ptr.cast(),
            layout: if self.capacity == 0 || size_of::<T>() == 0 {
                Layout::new::<()>()
            } else {
                self.layout()
            },
        };
        // SAFETY: the initialised elements, dropped once.
        unsafe { ptr::drop_in_place(self.as_mut_slice()) };
    }
}

impl<T, S: PageSource + Clone> Deref for HeapVec<'_, T, S> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T, S: PageSource + Clone> DerefMut for HeapVec<'_, T, S> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T, S: PageSource + Clone> AsRef<[T]> for HeapVec<'_, T, S> {
    fn as_ref(&self) -> &[T] {
        self
    }
}

impl<T, S: PageSource + Clone> AsMut<[T]> for HeapVec<'_, T, S> {
    fn as_mut(&mut self) -> &mut [T] {
        self
    }
}

impl<T: fmt::Debug, S: PageSource + Clone> fmt::Debug for HeapVec<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl<T: PartialEq, S: PageSource + Clone> PartialEq for HeapVec<'_, T, S> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Eq, S: PageSource + Clone> Eq for HeapVec<'_, T, S> {}

impl<T: core::hash::Hash, S: PageSource + Clone> core::hash::Hash for HeapVec<'_, T, S> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}
