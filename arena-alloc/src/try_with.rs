//! [`Arena::alloc_try_with`]: allocation of a value whose construction may fail, rolled
//! back when it does.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::PageSource;

use crate::arena::Arena;

/// Why [`Arena::try_alloc_try_with`] failed: no room, or the constructor's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocOrInitError<E> {
    /// The allocation failed; the constructor was not called.
    Alloc(AllocError),
    /// The constructor returned this error; the room was given back when nothing else
    /// was allocated since.
    Init(E),
}

impl<E> From<AllocError> for AllocOrInitError<E> {
    fn from(error: AllocError) -> Self {
        AllocOrInitError::Alloc(error)
    }
}

impl<E: fmt::Display> fmt::Display for AllocOrInitError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocOrInitError::Alloc(error) => write!(f, "arena allocation failed: {error}"),
            AllocOrInitError::Init(error) => write!(f, "initialisation failed: {error}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for AllocOrInitError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AllocOrInitError::Alloc(_) => None,
            AllocOrInitError::Init(error) => Some(error),
        }
    }
}

/// Gives the room of a value that was never written back to the arena when dropped: on
/// the constructor's error, and when the constructor unwinds.
struct GiveBack<'a, S: PageSource, const MIN_ALIGN: usize> {
    arena: &'a Arena<S, MIN_ALIGN>,
    room: NonNull<u8>,
    layout: Layout,
}

impl<S: PageSource, const MIN_ALIGN: usize> Drop for GiveBack<'_, S, MIN_ALIGN> {
    fn drop(&mut self) {
        // SAFETY: `room` was allocated by this arena with `layout`, nothing was written
        // to it and nothing uses it afterwards. The arena frees it only when it is still
        // the latest allocation.
        unsafe { self.arena.dealloc(self.room, self.layout) };
    }
}

/// The panic of [`Arena::alloc_try_with`].
#[cold]
#[inline(never)]
#[track_caller]
fn try_with_failed(layout: Layout) -> ! {
    panic!(
        "arena allocation of {} bytes (alignment {}) failed: limit reached or page source exhausted",
        layout.size(),
        layout.align()
    )
}

impl<S: PageSource, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    /// Allocates room for a `T`, then calls `make`: on `Ok` the value is stored there, on
    /// `Err` the room is given back (when nothing else was allocated from the arena
    /// meanwhile, by `make` itself) and the error is returned.
    ///
    /// # Errors
    /// The error of `make`.
    ///
    /// # Panics
    /// When the allocation fails (`make` is then not called), or if `make` panics (the
    /// room is then given back as on `Err`).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let arena = Arena::new();
    /// let port = arena.alloc_try_with(|| "8080".parse::<u16>())?;
    /// assert_eq!(*port, 8080);
    /// let before = arena.stats().allocated_bytes;
    /// assert!(arena.alloc_try_with(|| "x".parse::<u16>()).is_err());
    /// assert_eq!(arena.stats().allocated_bytes, before); // rolled back
    /// # Ok::<(), std::num::ParseIntError>(())
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_try_with<T, E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<&mut T, E> {
        match self.try_alloc_try_with(make) {
            Ok(value) => Ok(value),
            Err(AllocOrInitError::Init(error)) => Err(error),
            Err(AllocOrInitError::Alloc(AllocError)) => try_with_failed(Layout::new::<T>()),
        }
    }

    /// [`alloc_try_with`](Arena::alloc_try_with) that also reports a failed allocation.
    ///
    /// # Errors
    /// [`AllocOrInitError::Alloc`] when there is no room (`make` is not called),
    /// [`AllocOrInitError::Init`] with the error of `make`.
    ///
    /// # Panics
    /// If `make` panics (the room is then given back as on `Err`).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{AllocOrInitError, Arena, ArenaConfig};
    ///
    /// let arena = Arena::with_config(ArenaConfig::new().limit_bytes(8));
    /// let made = arena.try_alloc_try_with(|| Ok::<_, ()>([0u8; 16]));
    /// assert!(matches!(made, Err(AllocOrInitError::Alloc(_))));
    /// let made = arena.try_alloc_try_with(|| Err::<u64, _>("bad input"));
    /// assert_eq!(made, Err(AllocOrInitError::Init("bad input")));
    /// assert_eq!(arena.stats().allocated_bytes, 0);
    /// ```
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_try_with<T, E>(
        &self,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<&mut T, AllocOrInitError<E>> {
        let layout = Layout::new::<T>();
        let room = self.try_alloc_layout(layout)?;
        let give_back = GiveBack {
            arena: self,
            room,
            layout,
        };
        let value = make().map_err(AllocOrInitError::Init)?;
        core::mem::forget(give_back);
        let room = room.cast::<T>();
        // SAFETY: fresh memory, aligned and large enough for a `T`, owned by the borrow.
        unsafe {
            room.write(value);
            Ok(&mut *room.as_ptr())
        }
    }
}
