//! Unix implementation of the [`super`] functions.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Most slices one `writev` passes, as `std` caps them (`UIO_MAXIOV`, 1024 on Linux and
/// Android). Elsewhere the POSIX minimum (`_XOPEN_IOV_MAX`, 16): an undercount is only
/// ever a transfer taken for complete (one more attempt, which may say `WouldBlock`),
/// while an overcount would take a full `writev` for a short one.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const MAX_WRITE_SLICES: usize = libc::UIO_MAXIOV as usize;
/// See the Linux definition.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const MAX_WRITE_SLICES: usize = 16;

/// Most bytes one `read`, `recv`, `write` or `writev` is counted on to transfer: Linux
/// moves at most `MAX_RW_COUNT` (`INT_MAX` rounded down to a page, a little under 2 GiB
/// whatever the page size) per call, and `std` caps lengths at `isize::MAX` (`INT_MAX`
/// on Apple systems). 1 GiB lies below every such cap; a larger transfer is taken for
/// complete, at the cost of at most one more attempt.
pub(crate) const MAX_TRANSFER_BYTES: usize = 1 << 30;

/// Reads from the non-blocking socket `fd` into `buf`, which may be uninitialised.
///
/// Preconditions: `fd` is an open socket for the duration of the call (the caller
/// borrows the object that owns it). `buf` may be empty.
///
/// On `Ok(n)` the OS guaranteed that the first `n` bytes of `buf` are initialised
/// (`n <= buf.len()`); `Ok(0)` with a non-empty `buf` is end of stream. A socket with
/// nothing to read gives an error of kind [`io::ErrorKind::WouldBlock`].
pub(crate) fn read_into_uninit(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the whole call
    // (exclusively borrowed); `recv` writes at most that many bytes into it and does not
    // read it, so its being uninitialised is fine. `fd` validity is the caller's
    // precondition, and a stale descriptor would only make `recv` fail with EBADF.
    let read = unsafe { libc::recv(fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len(), 0) };
    if read < 0 {
        Err(io::Error::last_os_error())
    } else {
        // `read` is non-negative and at most `buf.len()`.
        Ok(read.unsigned_abs())
    }
}

/// Whether `signal`'s disposition is the default action (`SIG_DFL`): no handler
/// installed and not ignored.
///
/// Preconditions: `signal` is a valid signal number (an invalid one gives an error of
/// kind [`io::ErrorKind::InvalidInput`], `EINVAL`). Only reads the disposition; a
/// handler installed by another thread at the same time may or may not be seen.
pub(crate) fn has_default_action(signal: libc::c_int) -> io::Result<bool> {
    let mut current = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null `act` makes `sigaction` only read the disposition into `oldact`,
    // which points to writable memory of the right type for the whole call.
    let result = unsafe { libc::sigaction(signal, std::ptr::null(), current.as_mut_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `sigaction` succeeded, so it filled `oldact` in; it was zeroed before
    // anyway, and every field of `sigaction` is valid when zeroed.
    let current = unsafe { current.assume_init() };
    Ok(current.sa_sigaction == libc::SIG_DFL)
}
