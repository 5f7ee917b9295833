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

/// Events taken per `epoll_wait` call by [`take_ready_events`].
#[cfg(target_os = "linux")]
const TAKE_BATCH: usize = 64;
/// Most `epoll_wait` calls one [`take_ready_events`] makes (1,024 events).
#[cfg(target_os = "linux")]
const TAKE_BATCHES: usize = 16;

/// Takes the events pending in the `epoll` instance `epoll` without waiting, and
/// appends each to `into` as (`mio` token, readiness), decoded as `mio` decodes them.
///
/// Preconditions: none beyond the borrow: `epoll` is an open descriptor for the
/// whole call. It need not be this thread's, and another thread may be blocked in
/// `epoll_wait` on it at the same time: the kernel hands each ready event to one caller
/// (every registration of this crate is edge-triggered), so an event taken here is not
/// reported to that thread, which goes on waiting for the next one.
///
/// On success every event the kernel reported is in `into` (up to 1,024; more stay
/// pending for a later call). An interrupted call reports what was taken so far; a
/// descriptor that is not an `epoll` instance gives an error (`EINVAL`).
#[cfg(target_os = "linux")]
pub(crate) fn take_ready_events(
    epoll: std::os::fd::BorrowedFd<'_>,
    into: &mut Vec<(mio::Token, crate::reactor::Readiness)>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut batch = [libc::epoll_event { events: 0, u64: 0 }; TAKE_BATCH];
    for _ in 0..TAKE_BATCHES {
        // SAFETY: `batch` is valid for writes of `TAKE_BATCH` (64, which fits a
        // `c_int`) events for the whole call and is not read by the kernel; `epoll` is
        // open for the call (borrowed). A zero timeout never blocks.
        let taken = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                batch.as_mut_ptr(),
                TAKE_BATCH as libc::c_int,
                0,
            )
        };
        if taken < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(error)
            };
        }
        // `taken` is non-negative and at most `TAKE_BATCH`: the kernel filled that many.
        let taken = taken.unsigned_abs() as usize;
        into.extend(batch[..taken].iter().map(|event| {
            // Copied out of the (packed on x86-64) struct before use.
            let (flags, token) = (event.events, event.u64);
            (
                mio::Token(usize::try_from(token).unwrap_or(usize::MAX)),
                epoll_readiness(flags),
            )
        }));
        if taken < TAKE_BATCH {
            break;
        }
    }
    Ok(())
}

/// The readiness `epoll` flags report, as `mio` decodes them (its
/// `sys::unix::selector::epoll::event` functions): `EPOLLIN` or `EPOLLPRI` readable,
/// `EPOLLOUT` writable, `EPOLLERR` an error; read closed on `EPOLLHUP`, or `EPOLLIN`
/// with `EPOLLRDHUP`; write closed on `EPOLLHUP`, `EPOLLOUT` with `EPOLLERR`, or
/// `EPOLLERR` alone.
#[cfg(target_os = "linux")]
fn epoll_readiness(flags: u32) -> crate::reactor::Readiness {
    let has = |flag: libc::c_int| flags & flag.cast_unsigned() != 0;
    crate::reactor::Readiness {
        readable: has(libc::EPOLLIN) || has(libc::EPOLLPRI),
        writable: has(libc::EPOLLOUT),
        read_closed: has(libc::EPOLLHUP) || (has(libc::EPOLLIN) && has(libc::EPOLLRDHUP)),
        write_closed: has(libc::EPOLLHUP)
            || (has(libc::EPOLLOUT) && has(libc::EPOLLERR))
            || flags == libc::EPOLLERR.cast_unsigned(),
        error: has(libc::EPOLLERR),
    }
}
