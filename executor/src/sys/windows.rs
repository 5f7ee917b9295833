//! Windows implementation of the [`super`] functions (Winsock). Built and tested under
//! wine by `.ci/windows.sh` (which of the executor's tests run there, and why not the
//! others: the README's "Platforms").

use std::io;
use std::mem::MaybeUninit;
use std::os::windows::io::AsRawSocket;

use windows_sys::Win32::Networking::WinSock::{SOCKET, SOCKET_ERROR, WSAGetLastError, recv};

/// Most slices one vectored write is counted on to pass. Winsock's `WSASend` takes a
/// 32-bit count of buffers and `std` passes them all; 1024, as on Linux, keeps the count
/// an undercount (see the Unix definition: an undercount costs at most one more attempt).
pub(crate) const MAX_WRITE_SLICES: usize = 1024;

/// Most bytes one `recv` or `send` is counted on to transfer: Winsock lengths are 32-bit
/// (`std` caps them at `i32::MAX`); 1 GiB lies below that cap, as on Unix.
pub(crate) const MAX_TRANSFER_BYTES: usize = 1 << 30;

/// Reads from the non-blocking socket of `stream` into `buf`, which may be uninitialised.
///
/// The read goes through [`mio::net::TcpStream::try_io`]: on Windows mio learns of
/// readiness from a one-shot AFD poll that it arms again only when an I/O call it runs
/// answers `WouldBlock`. A `recv` made behind its back that ends in `WSAEWOULDBLOCK`
/// would leave the poll unarmed, and the socket would never be reported readable again
/// (the connection stalls until a timeout closes it).
///
/// Preconditions: none beyond the borrow (the stream owns its open socket). `buf` may be
/// empty; at most `i32::MAX` bytes are asked for.
///
/// On `Ok(n)` the OS guaranteed that the first `n` bytes of `buf` are initialised
/// (`n <= buf.len()`); `Ok(0)` with a non-empty `buf` is end of stream. A socket with
/// nothing to read gives an error of kind [`io::ErrorKind::WouldBlock`]
/// (`WSAEWOULDBLOCK`).
pub(crate) fn read_into_uninit(
    stream: &mio::net::TcpStream,
    buf: &mut [MaybeUninit<u8>],
) -> io::Result<usize> {
    let len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
    let socket = stream.as_raw_socket() as SOCKET;
    stream.try_io(|| {
        // SAFETY: `buf` is a valid, writable region of at least `len` bytes for the
        // whole call (exclusively borrowed); `recv` writes at most that many bytes into
        // it and does not read it, so its being uninitialised is fine. The socket is
        // open: `stream`, which owns it, is borrowed.
        let read = unsafe { recv(socket, buf.as_mut_ptr().cast::<u8>(), len, 0) };
        if read == SOCKET_ERROR {
            // SAFETY: no preconditions; reads this thread's last Winsock error.
            return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
        }
        // `read` is non-negative and at most `len`.
        Ok(read.unsigned_abs() as usize)
    })
}
