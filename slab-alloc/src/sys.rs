//! The few calls into the platform this crate makes itself (pages come from
//! `pagekeep-mmap`): a per-thread value whose destructor runs when the thread exits (the
//! exit hook of [`crate::registry`]), the `fork` handlers (Unix only: Windows has no
//! `fork`), and a write to standard error that never allocates.
//!
//! - Unix: a pthread key (`pthread_key_create` / `pthread_setspecific`) and
//!   `pthread_atfork`.
//! - Windows: a fiber-local storage index (`FlsAlloc` / `FlsSetValue`), whose callback
//!   runs when the thread exits, as a pthread key's destructor does (for threads that
//!   never became fibers, fiber-local and thread-local storage are the same). It also
//!   runs when a fiber is deleted, on the deleting thread, and when a thread converts
//!   back from a fiber: the registry's hook acts only on the calling thread's own
//!   magazines (see [`crate::registry::thread_exit`]). During process shutdown
//!   (`RtlDllShutdownInProgress`) the callback returns at once: the other threads were
//!   killed, possibly holding a lock the hook would wait for forever, and the memory is
//!   about to go anyway.

use core::ffi::c_void;

/// The exit hook the platform calls with the value set by [`set_exit_value`].
#[cfg(unix)]
extern "C" fn exit_hook(data: *mut c_void) {
    crate::registry::thread_exit(data);
}

/// The exit hook the platform calls with the value set by [`set_exit_value`]: on thread
/// exit, on fiber deletion (possibly on another thread) and during process shutdown,
/// when it does nothing.
#[cfg(windows)]
unsafe extern "system" fn exit_hook(data: *const c_void) {
    if process_shutting_down() {
        return;
    }
    crate::registry::thread_exit(data.cast_mut());
}

/// Whether the process is exiting (`ExitProcess` has killed the other threads and runs
/// the DLL detach and fiber-local callbacks).
#[cfg(windows)]
fn process_shutting_down() -> bool {
    // Not in windows-sys 0.61: declared as ntdll exports it (a BOOLEAN result).
    #[link(name = "ntdll")]
    unsafe extern "system" {
        fn RtlDllShutdownInProgress() -> u8;
    }
    // SAFETY: no arguments; only reads the loader's shutdown flag.
    unsafe { RtlDllShutdownInProgress() != 0 }
}

/// Whether the calling thread is a fiber (`IsThreadAFiber`).
#[cfg(windows)]
pub(crate) fn running_on_a_fiber() -> bool {
    // SAFETY: no arguments, no preconditions.
    unsafe { windows_sys::Win32::System::Threading::IsThreadAFiber() != 0 }
}

/// The id of the calling thread (`GetCurrentThreadId`).
#[cfg(windows)]
pub(crate) fn current_thread_id() -> u32 {
    // SAFETY: no arguments, no preconditions.
    unsafe { windows_sys::Win32::System::Threading::GetCurrentThreadId() }
}

/// Creates the key whose destructor is the registry's exit hook; `None` when the
/// platform has no key left.
#[cfg(unix)]
pub(crate) fn create_exit_key() -> Option<usize> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor has the required signature
    // and never unwinds.
    let created = unsafe { libc::pthread_key_create(&mut key, Some(exit_hook)) } == 0;
    created.then_some(key as usize)
}

/// Creates the key whose destructor is the registry's exit hook; `None` when the
/// platform has no key left.
#[cfg(windows)]
pub(crate) fn create_exit_key() -> Option<usize> {
    use windows_sys::Win32::System::Threading::{FLS_OUT_OF_INDEXES, FlsAlloc};
    // SAFETY: the callback has the required signature and never unwinds.
    let index = unsafe { FlsAlloc(Some(exit_hook)) };
    (index != FLS_OUT_OF_INDEXES).then_some(index as usize)
}

/// Sets the calling thread's value of `key` (from [`create_exit_key`]); the exit hook
/// runs with it when the thread exits, if it is non-null. Returns whether it was set.
#[cfg(unix)]
pub(crate) fn set_exit_value(key: usize, value: *mut c_void) -> bool {
    // SAFETY: the key was created by `create_exit_key` (its value came from a
    // `pthread_key_t`); the value is only handed back to the exit hook.
    unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, value) == 0 }
}

/// Sets the calling thread's value of `key` (from [`create_exit_key`]); the exit hook
/// runs with it when the thread exits, if it is non-null. Returns whether it was set.
#[cfg(windows)]
pub(crate) fn set_exit_value(key: usize, value: *mut c_void) -> bool {
    use windows_sys::Win32::System::Threading::FlsSetValue;
    // SAFETY: the index was created by `create_exit_key` (it fits a u32); the value is
    // only handed back to the exit hook.
    unsafe { FlsSetValue(key as u32, value.cast_const()) != 0 }
}

/// Registers the `fork` handlers (`pthread_atfork`); whether it worked.
#[cfg(all(unix, not(miri)))]
pub(crate) fn install_fork_handlers(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> bool {
    // SAFETY: the handlers are `extern "C"` functions that never unwind; registering may
    // allocate, which the caller allows.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// Writes `bytes` to standard error without allocating; a failure is ignored.
pub(crate) fn write_stderr(bytes: &[u8]) {
    #[cfg(unix)]
    let len = bytes.len();
    // The C runtime's `_write` takes a 32-bit count.
    #[cfg(windows)]
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    // SAFETY: `bytes` is valid for reads of `len <= bytes.len()` bytes; fd 2 is standard
    // error.
    let _ = unsafe { libc::write(2, bytes.as_ptr().cast(), len) };
}
