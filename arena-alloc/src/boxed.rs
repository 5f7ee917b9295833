//! [`ArenaBox`]: an owning pointer into an arena that runs `Drop`.

use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// Owns a value stored in an arena and drops it when the box is dropped; the memory
/// itself comes back when the arena is reset. Plain arena allocations
/// ([`Arena::alloc`](crate::Arena::alloc)) are never dropped; put values that own
/// resources (files, heap buffers, locks) in an `ArenaBox`.
///
/// # Examples
///
/// ```
/// use pagekeep_arena::Arena;
/// use std::rc::Rc;
///
/// let arena = Arena::new();
/// let shared = Rc::new(());
/// let boxed = arena.alloc_box(Rc::clone(&shared));
/// assert_eq!(Rc::strong_count(&shared), 2);
/// drop(boxed);
/// assert_eq!(Rc::strong_count(&shared), 1);
/// ```
pub struct ArenaBox<'arena, T: ?Sized> {
    /// Points to a live, initialised `T` owned by this box, in memory that outlives
    /// `'arena`.
    ptr: NonNull<T>,
    /// The box owns a `T` (for drop check) and borrows the arena.
    _owns: PhantomData<(&'arena mut T, Box<T>)>,
}

// SAFETY: the box owns its `T` exclusively, as `Box<T>` does.
unsafe impl<T: ?Sized + Send> Send for ArenaBox<'_, T> {}
// SAFETY: `&ArenaBox<T>` only gives `&T`.
unsafe impl<T: ?Sized + Sync> Sync for ArenaBox<'_, T> {}

impl<'arena, T: ?Sized> ArenaBox<'arena, T> {
    /// Takes ownership of the value behind `value`: it will be dropped with the box.
    ///
    /// A reference does not prove ownership (the value's owner drops it too), so this is
    /// `unsafe`; [`ArenaBox::new_in`] and [`Arena::alloc_box`](crate::Arena::alloc_box)
    /// are the safe ways to make a box. Calling it from safe code does not compile:
    ///
    /// ```compile_fail,E0133
    /// use pagekeep_arena::ArenaBox;
    ///
    /// let mut owned = String::from("dropped by its owner");
    /// drop(ArenaBox::from_mut(&mut owned)); // would drop `owned` a second time
    /// ```
    ///
    /// # Safety
    /// - Nothing else drops the value behind `value`, or reads it after the box is
    ///   dropped: it is a value written into arena memory (or a `ManuallyDrop`) that the
    ///   caller hands over, not one that an owner still holds.
    pub unsafe fn from_mut(value: &'arena mut T) -> Self {
        ArenaBox {
            ptr: NonNull::from(value),
            _owns: PhantomData,
        }
    }

    /// Gives up ownership without dropping the value.
    pub fn leak(boxed: Self) -> &'arena mut T {
        let ptr = boxed.ptr;
        core::mem::forget(boxed);
        // SAFETY: the box owned the value exclusively for `'arena` and now hands that on.
        unsafe { &mut *ptr.as_ptr() }
    }
}

impl<'arena, T> ArenaBox<'arena, T> {
    /// Moves `value` into `place` and owns it there: it is dropped with the box. After
    /// the box is gone `place` holds a dropped value, which `MaybeUninit` never reads
    /// without `unsafe`.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaBox};
    ///
    /// let arena = Arena::new();
    /// let place = arena.try_alloc_uninit::<String>().expect("room for a String");
    /// let boxed = ArenaBox::new_in(place, String::from("owned by the box"));
    /// assert_eq!(boxed.len(), 16);
    /// drop(boxed); // drops the String, once
    /// ```
    pub fn new_in(place: &'arena mut MaybeUninit<T>, value: T) -> Self {
        let value = place.write(value);
        // SAFETY: `place` was just initialised, and nothing else can drop it: a
        // `MaybeUninit` never drops its contents and the box borrows it for `'arena`.
        unsafe { ArenaBox::from_mut(value) }
    }
}

impl<T> ArenaBox<'_, T> {
    /// Moves the value out of the box.
    pub fn into_inner(boxed: Self) -> T {
        let ptr = boxed.ptr;
        core::mem::forget(boxed);
        // SAFETY: the value is initialised and owned by the box, which is forgotten, so
        // it is read exactly once and never dropped in place.
        unsafe { ptr.read() }
    }
}

impl<T: ?Sized> Deref for ArenaBox<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns a live `T`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for ArenaBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the box owns a live `T` exclusively.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized> Drop for ArenaBox<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the box owns a live `T`, dropped exactly once here.
        unsafe { self.ptr.drop_in_place() }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for ArenaBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for ArenaBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
