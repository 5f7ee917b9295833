//! [`Arena::pin_scope`]: pinned boxes from an arena that is not `'static`.

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;
use core::pin::Pin;
use core::ptr::NonNull;

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::PageSource;

use crate::arena::Arena;

/// The scope of [`Arena::pin_scope`]: makes pinned boxes and counts those not dropped.
pub struct PinScope<'p, S: PageSource, const MIN_ALIGN: usize> {
    arena: &'p Arena<S, MIN_ALIGN>,
    /// Pinned boxes of this scope whose value has not been dropped.
    live: Cell<usize>,
}

/// A pinned value in an arena, from [`PinScope::alloc_box_pinned`]: dropped in place when
/// the box is dropped. Not `Send`: its drop updates the scope's count.
pub struct PinnedBox<'p, T: ?Sized> {
    /// A live, initialised `T` owned by this box, in arena memory that is not reused
    /// before it is dropped (see [`Arena::pin_scope`]).
    ptr: NonNull<T>,
    /// The scope's count of live pinned boxes, which this box is part of.
    live: &'p Cell<usize>,
    /// The box owns a `T` (for drop check).
    _owns: PhantomData<(&'p mut T, Box<T>)>,
}

impl<'p, S: PageSource, const MIN_ALIGN: usize> PinScope<'p, S, MIN_ALIGN> {
    /// The arena, for ordinary allocations inside the scope.
    pub fn arena(&self) -> &'p Arena<S, MIN_ALIGN> {
        self.arena
    }

    /// Allocates `value` pinned: it is dropped in place when the box is dropped, and its
    /// memory is not reused before that, even if the box is forgotten.
    ///
    /// # Panics
    /// When the allocation fails.
    pub fn alloc_box_pinned<T>(&self, value: T) -> Pin<PinnedBox<'_, T>> {
        self.pin(self.arena.alloc(value))
    }

    /// Allocates `value` pinned (see [`alloc_box_pinned`](PinScope::alloc_box_pinned)).
    ///
    /// # Errors
    /// As [`Arena::try_alloc`]; `value` is dropped.
    pub fn try_alloc_box_pinned<T>(&self, value: T) -> Result<Pin<PinnedBox<'_, T>>, AllocError> {
        Ok(self.pin(self.arena.try_alloc(value)?))
    }

    /// Pins a value just allocated in the arena.
    fn pin<'b, T>(&'b self, value: &'b mut T) -> Pin<PinnedBox<'b, T>> {
        self.live.set(self.live.get() + 1);
        let boxed = PinnedBox {
            ptr: NonNull::from(value),
            live: &self.live,
            _owns: PhantomData,
        };
        // SAFETY: the box owns the value (fresh from the arena) and hands out `&mut T`
        // only through this `Pin`, so the value is not moved; it is dropped in place with
        // the box. Its memory is not reused before: while the scope runs, the arena is
        // borrowed mutably by `pin_scope` and cannot be reset, rewound or dropped; when
        // it ends with this box not dropped, the arena's chunks are abandoned for good.
        unsafe { Pin::new_unchecked(boxed) }
    }
}

impl<T: ?Sized> Deref for PinnedBox<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the box owns a live `T`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> core::ops::DerefMut for PinnedBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the box owns a live `T` exclusively. A `PinnedBox` only ever exists
        // inside a `Pin`, whose own `DerefMut` gives `&mut T` only for `T: Unpin`; other
        // values are reached through `Pin::as_mut`, as for `Pin<Box<T>>`.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized> Drop for PinnedBox<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the box owns a live `T`, dropped exactly once, in place, here.
        unsafe { self.ptr.drop_in_place() };
        // Counted only once the value is dropped: a drop that unwinds leaves the box
        // counted, and the scope abandons the memory as for a forgotten box.
        self.live.set(self.live.get() - 1);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for PinnedBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> fmt::Debug for PinScope<'_, S, MIN_ALIGN> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinScope")
            .field("live", &self.live.get())
            .finish_non_exhaustive()
    }
}

impl<S: PageSource + Default, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    /// Runs `body` with a [`PinScope`] that makes pinned boxes in this arena, for an arena
    /// that is not `'static` (a `'static` one has
    /// [`alloc_box_pinned`](Arena::alloc_box_pinned)).
    ///
    /// `Pin` promises that a pinned value's memory is not reused before its `drop` runs,
    /// even if its box is forgotten. While `body` runs, the arena is borrowed mutably, so
    /// nothing can reset, rewind or drop it; the scope counts the pinned boxes not yet
    /// dropped, and if any is left when `body` returns or unwinds (it was forgotten or
    /// leaked), the arena gives up all its chunks for good: they are never released or
    /// reused, and the arena carries on empty, with fresh chunks from a new source
    /// (`S::default()`) and the same configuration. Checkpoints taken before are then
    /// refused. Forgetting a pinned box therefore leaks the arena's memory, as forgetting
    /// a `Pin<Box<T>>` leaks its block; otherwise the scope costs one counter.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    /// use std::future::Future;
    /// use std::task::{Context, Poll, Waker};
    ///
    /// let mut arena = Arena::new();
    /// let greeting = String::from("hi");
    /// let answer = arena.pin_scope(|scope| {
    ///     let mut task = scope.alloc_box_pinned(async { greeting.len() * 21 });
    ///     let mut context = Context::from_waker(Waker::noop());
    ///     match task.as_mut().poll(&mut context) {
    ///         Poll::Ready(answer) => answer,
    ///         Poll::Pending => unreachable!(),
    ///     }
    /// });
    /// assert_eq!(answer, 42);
    /// arena.reset(); // every pinned value was dropped: the memory is reused
    /// ```
    pub fn pin_scope<R>(
        &mut self,
        body: impl for<'p> FnOnce(&'p PinScope<'p, S, MIN_ALIGN>) -> R,
    ) -> R {
        /// Abandons the arena's chunks if a pinned box outlived the scope, also when
        /// `body` unwinds.
        struct Guard<'a, S: PageSource + Default, const M: usize> {
            arena: &'a mut Arena<S, M>,
            live: Cell<usize>,
        }
        impl<S: PageSource + Default, const M: usize> Drop for Guard<'_, S, M> {
            fn drop(&mut self) {
                if self.live.get() != 0 {
                    let fresh = Arena::with_source(S::default(), *self.arena.config());
                    // The old arena, with the chunks under the forgotten pinned values,
                    // is never dropped: its memory is neither released nor reused.
                    core::mem::forget(core::mem::replace(self.arena, fresh));
                }
            }
        }
        let guard = Guard {
            arena: self,
            live: Cell::new(0),
        };
        let scope = PinScope {
            arena: &*guard.arena,
            live: Cell::new(0),
        };
        // `scope` must be dropped before the guard reads the count: keep it in a frame
        // that ends first, and copy the count out after `body` (also on unwind).
        struct Count<'g, 'p, S: PageSource, const M: usize>(
            &'g Cell<usize>,
            &'p PinScope<'p, S, M>,
        );
        impl<S: PageSource, const M: usize> Drop for Count<'_, '_, S, M> {
            fn drop(&mut self) {
                self.0.set(self.1.live.get());
            }
        }
        let count = Count(&guard.live, &scope);
        body(count.1)
    }
}
