//! Where a thread's magazines live by default: in a `thread_local!`, reached the way
//! the platform reaches a crate's thread-locals (a `%fs`-relative address in an
//! executable, a call to the dynamic linker's resolver in a shared library).

use core::ptr::NonNull;
use core::sync::atomic::Ordering::Relaxed;

use super::{RETIRED, ThreadMagazines};

std::thread_local! {
    /// Const-initialised and without `Drop`, so touching it never allocates nor registers
    /// a destructor; the exit hook is a separate pthread key or fiber-local index (see
    /// [`crate::registry`]).
    static MAGAZINES: ThreadMagazines = const { ThreadMagazines::new() };
}

/// Runs `f` on the calling thread's magazines. Never allocates nor fails, even while the
/// thread exits.
#[inline(always)]
pub(super) fn with_current<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> R {
    MAGAZINES.with(f)
}

/// [`with_current`] for the inlined fast paths (which always find magazines here).
#[inline(always)]
pub(super) fn try_with_current<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> Option<R> {
    Some(MAGAZINES.with(f))
}

/// The magazines that [`crate::registry::activate`] registers for the calling thread,
/// whose current ones are `current` (in state `UNREGISTERED`): these same ones.
pub(crate) fn to_register(current: &ThreadMagazines) -> Option<NonNull<ThreadMagazines>> {
    Some(NonNull::from(current))
}

/// The calling thread's magazines `entry` (from [`to_register`]) could not be
/// registered: the thread works without magazines from now on.
///
/// # Safety
/// - `entry` is the calling thread's, from [`to_register`], and not registered.
pub(crate) unsafe fn retire_unregistered(entry: NonNull<ThreadMagazines>) {
    // SAFETY: the calling thread's thread-local magazines, live while it runs (caller).
    unsafe { entry.as_ref() }.state.store(RETIRED, Relaxed);
}

/// The exit hook is done with the calling thread's magazines `entry`: nothing to give
/// back (the thread-local storage goes with the thread).
///
/// # Safety
/// - `entry` is the calling thread's registered magazines, retired, emptied and off the
///   registry's list.
pub(crate) unsafe fn release(entry: NonNull<ThreadMagazines>) {
    let _ = entry;
}

/// Whether `entry` is the calling thread's own magazines (compared by address, never
/// read). Touching [`MAGAZINES`] never allocates nor fails, even while the thread exits.
#[cfg(windows)]
pub(crate) fn is_current_thread(entry: *const ThreadMagazines) -> bool {
    MAGAZINES.with(|magazines| core::ptr::eq(magazines, entry))
}
