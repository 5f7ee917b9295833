//! Slices filled with copies, clones, defaults or the items of an iterator, built on
//! [`Arena::try_alloc_slice_fill_with`].
//!
//! If the closure, `clone`, `default` or iterator panics halfway, the values made so far
//! are leaked (never dropped) and their room stays allocated until the next reset or
//! rewind; the arena stays consistent and usable.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::PageSource;

use crate::arena::Arena;

/// The panic of the infallible fills.
#[cold]
#[inline(never)]
#[track_caller]
fn fill_failed<T>(len: usize) -> ! {
    panic!(
        "arena allocation of {len} values of {} bytes failed: limit reached or page source exhausted",
        size_of::<T>()
    )
}

impl<S: PageSource, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    /// Allocates `len` copies of `value`.
    ///
    /// # Panics
    /// When the allocation fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let arena = Arena::new();
    /// assert_eq!(arena.alloc_slice_fill_copy(3, 7u16), &[7, 7, 7]);
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_slice_fill_copy<T: Copy>(&self, len: usize, value: T) -> &mut [T] {
        self.try_alloc_slice_fill_copy(len, value)
            .unwrap_or_else(|AllocError| fill_failed::<T>(len))
    }

    /// Allocates `len` copies of `value`.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc) (also when `len` values of `T` are more than
    /// any allocation can hold).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let arena = Arena::new();
    /// assert!(arena.try_alloc_slice_fill_copy(usize::MAX, 0u32).is_err());
    /// assert_eq!(arena.try_alloc_slice_fill_copy(2, 'x')?, &['x', 'x']);
    /// # Ok::<(), pagekeep_arena::AllocError>(())
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_slice_fill_copy<T: Copy>(
        &self,
        len: usize,
        value: T,
    ) -> Result<&mut [T], AllocError> {
        self.try_alloc_slice_fill_with(len, |_| value)
    }

    /// Allocates `len` clones of `value` (`len` calls to `clone`; `value` itself is not
    /// moved into the slice).
    ///
    /// # Panics
    /// When the allocation fails, or if a `clone` panics (the clones made so far are
    /// leaked).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let arena = Arena::new();
    /// let names = arena.alloc_slice_fill_clone(2, &String::from("anon"));
    /// assert_eq!(names, &["anon", "anon"]);
    /// # for name in names.iter_mut() { drop(core::mem::take(name)); }
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_slice_fill_clone<T: Clone>(&self, len: usize, value: &T) -> &mut [T] {
        self.try_alloc_slice_fill_clone(len, value)
            .unwrap_or_else(|AllocError| fill_failed::<T>(len))
    }

    /// Allocates `len` clones of `value`.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc); `clone` is then not called.
    ///
    /// # Panics
    /// If a `clone` panics (the clones made so far are leaked).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaConfig};
    /// use std::rc::Rc;
    ///
    /// let arena = Arena::with_config(ArenaConfig::new().limit_bytes(64));
    /// let shared = Rc::new(1);
    /// assert!(arena.try_alloc_slice_fill_clone(100, &shared).is_err());
    /// assert_eq!(Rc::strong_count(&shared), 1); // nothing was cloned
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_slice_fill_clone<T: Clone>(
        &self,
        len: usize,
        value: &T,
    ) -> Result<&mut [T], AllocError> {
        self.try_alloc_slice_fill_with(len, |_| value.clone())
    }

    /// Allocates `len` values of `T::default()`.
    ///
    /// # Panics
    /// When the allocation fails, or if `default` panics (the values made so far are
    /// leaked).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let arena = Arena::new();
    /// let counters = arena.alloc_slice_fill_default::<u64>(4);
    /// counters[2] += 5;
    /// assert_eq!(counters, &[0, 0, 5, 0]);
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_slice_fill_default<T: Default>(&self, len: usize) -> &mut [T] {
        self.try_alloc_slice_fill_default(len)
            .unwrap_or_else(|AllocError| fill_failed::<T>(len))
    }

    /// Allocates `len` values of `T::default()`.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc); `default` is then not called.
    ///
    /// # Panics
    /// If `default` panics (the values made so far are leaked).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let arena = Arena::new();
    /// assert_eq!(arena.try_alloc_slice_fill_default::<bool>(2)?, &[false, false]);
    /// # Ok::<(), pagekeep_arena::AllocError>(())
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_slice_fill_default<T: Default>(
        &self,
        len: usize,
    ) -> Result<&mut [T], AllocError> {
        self.try_alloc_slice_fill_with(len, |_| T::default())
    }

    /// Allocates a slice of the items of an iterator whose length is known up front: one
    /// allocation of `len()` items, filled in order.
    ///
    /// `ExactSizeIterator` is a safe trait, so its `len()` may be wrong. Items beyond
    /// `len()` are not taken. If the iterator ends early, the slice holds the items it
    /// gave, and the room for the missing ones is given back when the slice is the
    /// arena's latest allocation.
    ///
    /// # Panics
    /// When the allocation fails, or if the iterator panics (the items taken so far are
    /// leaked).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let arena = Arena::new();
    /// let squares = arena.alloc_slice_fill_iter((1..5u32).map(|n| n * n));
    /// assert_eq!(squares, &[1, 4, 9, 16]);
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_slice_fill_iter<I>(&self, items: I) -> &mut [I::Item]
    where
        I: IntoIterator,
        I::IntoIter: ExactSizeIterator,
    {
        let items = items.into_iter();
        let len = items.len();
        self.try_alloc_slice_fill_iter(items)
            .unwrap_or_else(|AllocError| fill_failed::<I::Item>(len))
    }

    /// Allocates a slice of the items of an iterator whose length is known up front (see
    /// [`alloc_slice_fill_iter`](Arena::alloc_slice_fill_iter)).
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc), for room for `len()` items; the iterator is
    /// then not advanced.
    ///
    /// # Panics
    /// If the iterator panics (the items taken so far are leaked).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaConfig};
    ///
    /// let arena = Arena::with_config(ArenaConfig::new().limit_bytes(16));
    /// assert!(arena.try_alloc_slice_fill_iter((0..100u32).map(u64::from)).is_err());
    /// assert_eq!(arena.try_alloc_slice_fill_iter([3u64, 4])?, &[3, 4]);
    /// # Ok::<(), pagekeep_arena::AllocError>(())
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_slice_fill_iter<I>(&self, items: I) -> Result<&mut [I::Item], AllocError>
    where
        I: IntoIterator,
        I::IntoIter: ExactSizeIterator,
    {
        let mut items = items.into_iter();
        let len = items.len();
        let layout = Layout::array::<I::Item>(len).map_err(|_| AllocError)?;
        let start = self.try_alloc_layout(layout)?.cast::<I::Item>();
        let mut written = 0;
        while written < len {
            let Some(item) = items.next() else { break };
            // SAFETY: `written < len`, inside the fresh room for `len` items.
            unsafe { start.add(written).write(item) };
            written += 1;
        }
        let start = if written < len {
            self.give_back_tail(start, layout, written)
        } else {
            start
        };
        // SAFETY: the first `written` items at `start` are initialised, and the room is
        // this call's alone.
        Ok(unsafe { core::slice::from_raw_parts_mut(start.as_ptr(), written) })
    }

    /// Shrinks the room for a slice of `T` made with `layout` to its first `len` items
    /// (in place when it is the latest allocation, otherwise it stays as it is) and
    /// returns where they are.
    #[cold]
    fn give_back_tail<T>(&self, start: NonNull<T>, layout: Layout, len: usize) -> NonNull<T> {
        let Ok(kept) = Layout::array::<T>(len) else {
            return start;
        };
        // SAFETY: `start` was allocated by this arena with `layout`, and only the result
        // is used from now on (the old block only if the resize fails). The first `len`
        // items are initialised; a resize that moved them would have copied them.
        match unsafe { self.try_realloc(start.cast(), layout, kept) } {
            Ok(resized) => resized.cast(),
            Err(AllocError) => start,
        }
    }
}
