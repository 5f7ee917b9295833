//! The few calls into the platform this crate makes itself (pages come from
//! `pagekeep-mmap`): a per-thread value whose destructor runs when the thread exits (the
//! exit hook of [`crate::registry`]), the `fork` handlers (Unix only: Windows has no
//! `fork`), and a write to standard error that never allocates.
//!
//! - Unix: a pthread key (`pthread_key_create` / `pthread_setspecific`) and
//!   `pthread_atfork`.
//! - Windows: two hooks carry the same value, and the registry's hook runs once, from
//!   whichever comes first (it retires the magazines, so the second does nothing):
//!   - a fiber-local storage index (`FlsAlloc` / `FlsSetValue`), whose callback runs
//!     when the thread exits, as a pthread key's destructor does (for threads that never
//!     became fibers, fiber-local and thread-local storage are the same). It also runs
//!     when a fiber is deleted, on the deleting thread, and when a thread converts back
//!     from a fiber: the registry's hook acts only on the calling thread's own magazines
//!     (see [`crate::registry::thread_exit`]). It does not run when a thread exits while
//!     a fiber other than the one that set the value runs: Windows runs the callbacks of
//!     the running fiber's values only.
//!   - a thread-local storage index (`TlsAlloc` / `TlsSetValue`: per thread, whatever
//!     fiber runs) read by a TLS callback of this crate, which the loader calls with
//!     `DLL_THREAD_DETACH` on every thread exit. It closes the case above, and it is the
//!     only hook of a thread that is a fiber when it registers
//!     ([`set_thread_exit_value`]). The callback lives in section `.CRT$XLAB`, which
//!     sorts before std's (`.CRT$XLB`): on targets without native thread-locals
//!     (`x86_64-pc-windows-gnu`) std's callback frees the thread's `thread_local!`
//!     values, the magazines among them, so the registry's hook must run before it.
//!
//!   During process shutdown (`RtlDllShutdownInProgress`) both return at once: the other
//!   threads were killed, possibly holding a lock the hook would wait for forever, and
//!   the memory is about to go anyway.

use core::ffi::c_void;
#[cfg(windows)]
use core::ptr;
#[cfg(windows)]
use core::sync::atomic::{AtomicU32, Ordering};

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

/// The thread-local storage index read by [`tls_callback`]; [`NO_TLS_INDEX`] until
/// [`create_exit_key`] made it.
#[cfg(windows)]
static EXIT_TLS_INDEX: AtomicU32 = AtomicU32::new(NO_TLS_INDEX);

/// The fiber-local storage index of [`create_exit_key`], for [`tls_callback`] (valid
/// once [`EXIT_TLS_INDEX`] is set, which is stored after it).
#[cfg(windows)]
static EXIT_FLS_INDEX: AtomicU32 = AtomicU32::new(0);

/// No index (`TLS_OUT_OF_INDEXES`).
#[cfg(windows)]
const NO_TLS_INDEX: u32 = windows_sys::Win32::System::Threading::TLS_OUT_OF_INDEXES;

/// The loader's reason code for a thread's exit (`DLL_THREAD_DETACH`).
#[cfg(windows)]
const DLL_THREAD_DETACH: u32 = 3;

/// The TLS callback: the loader calls every callback in the `.CRT$XL*` sections (between
/// the C runtime's `__xl_a` in `.CRT$XLA` and `__xl_z` in `.CRT$XLZ`, sorted by section
/// name) when a thread starts and exits, on that thread, whatever fiber runs. `XLAB`
/// sorts after `XLA` and before std's `XLB` (see the module docs).
#[cfg(windows)]
#[used]
#[unsafe(link_section = ".CRT$XLAB")]
static TLS_CALLBACK: unsafe extern "system" fn(*mut c_void, u32, *mut c_void) = tls_callback;

/// On a thread's exit, runs the registry's exit hook with the value [`set_exit_value`]
/// or [`set_thread_exit_value`] set on this thread, if any, and clears it: the hook runs
/// even if the thread exits while a fiber other than the one that registered runs, when
/// the fiber-local callback does not.
///
/// # Safety
/// - Called by the loader only, on the thread the `reason` is about (the other
///   arguments are not used).
#[cfg(windows)]
unsafe extern "system" fn tls_callback(_module: *mut c_void, reason: u32, _reserved: *mut c_void) {
    use windows_sys::Win32::System::Threading::{
        FlsGetValue, FlsSetValue, TlsGetValue, TlsSetValue,
    };
    if reason != DLL_THREAD_DETACH {
        return;
    }
    let index = EXIT_TLS_INDEX.load(Ordering::Acquire);
    if index == NO_TLS_INDEX || process_shutting_down() {
        return;
    }
    // SAFETY: a valid index (made by `create_exit_key`, never freed).
    let value = unsafe { TlsGetValue(index) };
    if value.is_null() {
        return;
    }
    // SAFETY: as above; clearing our own thread's slot.
    unsafe { TlsSetValue(index, ptr::null()) };
    // Should the loader run the fiber-local callbacks after this one, the running
    // fiber's value must not reach the hook once std has freed the magazines: clear it
    // if it is ours (only then, so that no fiber-local data is made afresh here).
    let fiber_index = EXIT_FLS_INDEX.load(Ordering::Relaxed);
    // SAFETY: a valid index (made with the thread-local one, never freed).
    if unsafe { FlsGetValue(fiber_index) } == value {
        // SAFETY: as above; the running fiber's own slot, which exists (it holds a value).
        unsafe { FlsSetValue(fiber_index, ptr::null()) };
    }
    crate::registry::thread_exit(value);
}

/// Creates the key whose destructor is the registry's exit hook (a fiber-local storage
/// index, and the thread-local storage index of [`tls_callback`]); `None` when the
/// platform has no index left.
#[cfg(windows)]
pub(crate) fn create_exit_key() -> Option<usize> {
    use windows_sys::Win32::System::Threading::{FLS_OUT_OF_INDEXES, FlsAlloc, TlsAlloc};
    // The TLS directory of the image (from the C runtime: mingw-w64's `tlssup` or
    // MSVC's) and the callback must be linked in: they are only reached through the
    // loader, so keep both referenced, as std does for its own callback.
    unsafe extern "C" {
        #[link_name = "_tls_used"]
        static TLS_USED: u8;
    }
    // SAFETY: reads one byte of a static the C runtime defines (the TLS directory).
    unsafe { ptr::from_ref(&TLS_USED).read_volatile() };
    // SAFETY: reads a static of this module, a valid function pointer.
    let _ = unsafe { ptr::from_ref(&TLS_CALLBACK).read_volatile() };
    // SAFETY: no arguments.
    let tls_index = unsafe { TlsAlloc() };
    if tls_index == NO_TLS_INDEX {
        return None;
    }
    // SAFETY: the callback has the required signature and never unwinds.
    let index = unsafe { FlsAlloc(Some(exit_hook)) };
    if index == FLS_OUT_OF_INDEXES {
        // Both indexes or neither: without the fiber-local one no thread registers, and
        // the callback finds no value set.
        return None;
    }
    EXIT_FLS_INDEX.store(index, Ordering::Relaxed);
    EXIT_TLS_INDEX.store(tls_index, Ordering::Release);
    Some(index as usize)
}

/// Sets the calling thread's value of `key` (from [`create_exit_key`]); the exit hook
/// runs with it when the thread exits, if it is non-null. Returns whether it was set.
#[cfg(unix)]
pub(crate) fn set_exit_value(key: usize, value: *mut c_void) -> bool {
    // SAFETY: the key was created by `create_exit_key` (its value came from a
    // `pthread_key_t`); the value is only handed back to the exit hook.
    unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, value) == 0 }
}

/// Sets the calling thread's value of `key` (from [`create_exit_key`]), in the running
/// fiber's fiber-local storage and in the thread's thread-local storage; the exit hook
/// runs with it when the thread exits, if it is non-null (from the fiber-local callback
/// or from [`tls_callback`], whichever comes first). Returns whether both were set.
#[cfg(windows)]
pub(crate) fn set_exit_value(key: usize, value: *mut c_void) -> bool {
    use windows_sys::Win32::System::Threading::{FlsSetValue, TlsSetValue};
    let tls_index = EXIT_TLS_INDEX.load(Ordering::Acquire);
    // SAFETY: the index was created by `create_exit_key` (it fits a u32); the value is
    // only handed back to the exit hook.
    let fiber_local = unsafe { FlsSetValue(key as u32, value.cast_const()) != 0 };
    // SAFETY: `create_exit_key` made this index before it returned `key`; as above.
    let thread_local =
        tls_index != NO_TLS_INDEX && unsafe { TlsSetValue(tls_index, value.cast_const()) != 0 };
    fiber_local && thread_local
}

/// Sets the calling thread's value of the thread-local storage index of
/// [`create_exit_key`] alone (made once `create_exit_key` returned), for a thread that is
/// a fiber: a fiber-local value would belong to the running fiber, whose callback runs
/// when that fiber is deleted (possibly on another thread) or converted back, not when
/// the thread exits. [`tls_callback`] runs the exit hook with it when the thread exits,
/// whatever fiber runs then. Returns whether it was set.
#[cfg(windows)]
pub(crate) fn set_thread_exit_value(value: *mut c_void) -> bool {
    use windows_sys::Win32::System::Threading::TlsSetValue;
    let tls_index = EXIT_TLS_INDEX.load(Ordering::Acquire);
    // SAFETY: `create_exit_key` made this index; the value is only handed back to the
    // exit hook.
    tls_index != NO_TLS_INDEX && unsafe { TlsSetValue(tls_index, value.cast_const()) != 0 }
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
