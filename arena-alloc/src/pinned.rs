//! Pinned [`ArenaBox`]es: `Pin<ArenaBox<'static, T>>` from an arena that lives forever.
//! (`pin_scope.rs` pins values in any arena.)
//!
//! # Why only `'static`
//!
//! `Pin`'s drop guarantee: the memory of a pinned value is not reused or freed before
//! the value's `drop` has run. An `ArenaBox` drops its value in place, but it can be
//! forgotten (`mem::forget` is safe), which ends its borrow of the arena without running
//! `drop`; an arena borrowed for less than `'static` could then be reset, rewound or
//! dropped and its memory reused under the pinned value, which code relying on the
//! guarantee (an intrusive list the value is linked into) would follow. bumpalo's
//! `Box::pin_in` has exactly this hole (fitzgen/bumpalo#186, #226), and std's
//! `Box::pin_in` requires `A: 'static` for the same reason. A `&'static Arena` (from
//! `Box::leak`, or a pool lease that is itself leaked) can never be reset, rewound or
//! dropped by safe code, so memory that held a pinned value is never reused: a forgotten
//! pinned box merely leaks. The unsafe `reset_unchecked` and `rewind_unchecked` state
//! the same obligation.

use core::pin::Pin;

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::PageSource;

use crate::arena::Arena;
use crate::boxed::ArenaBox;

impl<T: ?Sized> ArenaBox<'static, T> {
    /// Pins the box's value where it is. Only a box whose memory is never reused before
    /// its value is dropped can be pinned, which `'static` proves (see "Why only
    /// `'static`" at [`alloc_box_pinned`](Arena::alloc_box_pinned)).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaBox};
    /// use std::marker::PhantomPinned;
    ///
    /// # let raw = Box::into_raw(Box::new(Arena::new()));
    /// # // SAFETY: `raw` is freed only after every use of `arena` below.
    /// # let arena: &'static Arena = unsafe { &*raw };
    /// // let arena: &'static Arena = Box::leak(Box::new(Arena::new()));
    /// let boxed = arena.alloc_box((5u8, PhantomPinned));
    /// let pinned = ArenaBox::into_pin(boxed);
    /// assert_eq!(pinned.0, 5);
    /// # drop(pinned);
    /// # // SAFETY: `arena` is not used again, and the pinned value was dropped.
    /// # drop(unsafe { Box::from_raw(raw) });
    /// ```
    pub fn into_pin(boxed: Self) -> Pin<Self> {
        // SAFETY: the box owns its value and gives out `&mut T` only through this `Pin`
        // from now on, so the value is not moved; it is dropped in place when the box is.
        // `'static`: the memory is never reused before that, even if the box is
        // forgotten: nothing but the box refers to it for `'static`, and an arena
        // borrowed for `'static` is never reset, rewound or dropped by safe code.
        unsafe { Pin::new_unchecked(boxed) }
    }
}

impl<T: ?Sized> From<ArenaBox<'static, T>> for Pin<ArenaBox<'static, T>> {
    fn from(boxed: ArenaBox<'static, T>) -> Self {
        ArenaBox::into_pin(boxed)
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    /// Allocates `value` in a pinned [`ArenaBox`], which drops it in place when dropped.
    ///
    /// The arena must be borrowed for `'static` (leaked, for instance), and so must the
    /// value be; [`pin_scope`](Arena::pin_scope) pins values in any arena.
    ///
    /// # Why only `'static`
    ///
    /// `Pin`'s drop guarantee: the memory of a pinned value is not reused or freed before
    /// its `drop` has run. The box drops the value in place, but `mem::forget` is safe:
    /// forgetting the box ends its borrow of the arena without running `drop`, and an
    /// arena borrowed for less than `'static` could then be reset, rewound or dropped and
    /// its memory reused under the value, which code relying on the guarantee (an
    /// intrusive list the value is linked into) would still follow. An arena borrowed for
    /// `'static` is never reset, rewound or dropped by safe code, so a forgotten pinned
    /// box only leaks. bumpalo's `Box::pin_in` has this hole (fitzgen/bumpalo#186); std's
    /// `Box::pin_in` requires `A: 'static` for the same reason.
    ///
    /// # Panics
    /// When the allocation fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    /// use std::future::Future;
    /// use std::pin::Pin;
    /// use std::task::{Context, Poll, Waker};
    ///
    /// # let raw = Box::into_raw(Box::new(Arena::new()));
    /// # // SAFETY: `raw` is freed only after every use of `arena` below.
    /// # let arena: &'static Arena = unsafe { &*raw };
    /// // let arena: &'static Arena = Box::leak(Box::new(Arena::new()));
    /// let mut task = arena.alloc_box_pinned(async { 6 * 7 });
    /// let mut context = Context::from_waker(Waker::noop());
    /// assert_eq!(task.as_mut().poll(&mut context), Poll::Ready(42));
    /// # drop(task);
    /// # // SAFETY: `arena` is not used again, and the pinned value was dropped.
    /// # drop(unsafe { Box::from_raw(raw) });
    /// ```
    pub fn alloc_box_pinned<T>(&'static self, value: T) -> Pin<ArenaBox<'static, T>> {
        ArenaBox::into_pin(self.alloc_box(value))
    }

    /// Allocates `value` in a pinned [`ArenaBox`] (see
    /// [`alloc_box_pinned`](Arena::alloc_box_pinned)).
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc); `value` is dropped.
    pub fn try_alloc_box_pinned<T>(
        &'static self,
        value: T,
    ) -> Result<Pin<ArenaBox<'static, T>>, AllocError> {
        self.try_alloc_box(value).map(ArenaBox::into_pin)
    }
}
