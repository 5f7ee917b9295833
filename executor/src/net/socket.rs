//! What every connected stream of this module shares: [`TcpStream`](crate::net::TcpStream)
//! and, on Unix, [`UnixStream`](crate::net::UnixStream). Their readiness-driven reads
//! and writes are the functions here, their halves ([`split`](crate::net::ReadHalf))
//! are generic over [`Socket`], and so are the ecosystem's I/O traits
//! (`io_traits.rs`): each piece is written once for both.

use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::task::{Context, Poll};

use crate::reactor::{Direction, Outcome, Registration};

/// A stream socket of this module: [`TcpStream`](crate::net::TcpStream), or on Unix
/// [`UnixStream`](crate::net::UnixStream). Sealed; it names the streams whose halves
/// ([`ReadHalf`](crate::net::ReadHalf) and the others) work alike.
pub trait Socket: sealed::Io + std::fmt::Debug + Send + Sync + 'static {}

pub(crate) mod sealed {
    use std::io::{self, IoSlice};
    use std::mem::MaybeUninit;
    use std::net::Shutdown;
    use std::task::{Context, Poll};

    /// The readiness-driven operations a stream provides; see `socket.rs`.
    pub trait Io {
        /// The kind of stream, for messages: "TCP", "Unix".
        const KIND: &'static str;
        fn poll_read_bytes(
            &self,
            cx: &mut Context<'_>,
            buffer: &mut [u8],
        ) -> Poll<io::Result<usize>>;
        fn poll_peek(&self, cx: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>>;
        fn poll_read_uninit(
            &self,
            cx: &mut Context<'_>,
            buffer: &mut [MaybeUninit<u8>],
        ) -> Poll<io::Result<usize>>;
        fn poll_write_bytes(&self, cx: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>>;
        fn poll_write_vectored_bytes(
            &self,
            cx: &mut Context<'_>,
            buffers: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>>;
        fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    }
}

use sealed::Io;

/// A transfer shorter than asked means the socket is drained for now (end of stream
/// aside, which stays ready so that every later read sees it). `asked` is what one call
/// can move at most: the system's per-call cap applies (see
/// [`MAX_TRANSFER_BYTES`](crate::sys::MAX_TRANSFER_BYTES)), since a transfer cut short
/// by it leaves the socket ready with no event to come.
///
/// On Windows a short transfer is never taken as drained: mio's readiness there comes
/// from a one-shot AFD poll that it arms again only when a transfer it runs answers
/// `WouldBlock`, so after a short one no event would come however much arrives; the
/// socket is read or written again until it answers `WouldBlock`.
fn transfer_outcome(done: usize, asked: usize) -> Outcome<usize> {
    if cfg!(windows) {
        return Outcome::More(done);
    }
    if done > 0 && done < asked.min(crate::sys::MAX_TRANSFER_BYTES) {
        Outcome::Drained(done)
    } else {
        Outcome::More(done)
    }
}

/// Reads from `socket` (registered as `registration`) into `buffer`.
pub(crate) fn poll_read<M>(
    registration: &Registration,
    socket: &M,
    cx: &mut Context<'_>,
    buffer: &mut [u8],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a M: Read,
{
    registration.poll_io(cx, Direction::Read, || {
        let asked = buffer.len();
        let mut socket = socket;
        socket
            .read(buffer)
            .map(|done| transfer_outcome(done, asked))
    })
}

/// Peeks with `peek`, which leaves what it sees on the socket.
pub(crate) fn poll_peek(
    registration: &Registration,
    cx: &mut Context<'_>,
    mut peek: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    // Never `Drained`: a peek leaves the data it saw on the socket, and no further
    // event will announce it, so clearing the read bit after a short peek would
    // leave the next read waiting for ever. Only `WouldBlock` clears it.
    registration.poll_io(cx, Direction::Read, || peek().map(Outcome::More))
}

/// Reads from the socket `raw` (registered as `registration`) into `buffer`, which may
/// be uninitialised.
pub(crate) fn poll_read_uninit(
    registration: &Registration,
    #[cfg(unix)] raw: std::os::fd::RawFd,
    #[cfg(windows)] raw: &mio::net::TcpStream,
    cx: &mut Context<'_>,
    buffer: &mut [MaybeUninit<u8>],
) -> Poll<io::Result<usize>> {
    registration.poll_io(cx, Direction::Read, || {
        let asked = buffer.len();
        crate::sys::read_into_uninit(raw, buffer).map(|done| transfer_outcome(done, asked))
    })
}

/// Writes `buffer` to `socket` (registered as `registration`).
pub(crate) fn poll_write<M>(
    registration: &Registration,
    socket: &M,
    cx: &mut Context<'_>,
    buffer: &[u8],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a M: Write,
{
    registration.poll_io(cx, Direction::Write, || {
        let mut socket = socket;
        socket
            .write(buffer)
            .map(|done| transfer_outcome(done, buffer.len()))
    })
}

/// Writes `buffers` to `socket` (registered as `registration`) with one `writev`.
pub(crate) fn poll_write_vectored<M>(
    registration: &Registration,
    socket: &M,
    cx: &mut Context<'_>,
    buffers: &[IoSlice<'_>],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a M: Write,
{
    // On Windows `std` passes every slice to `WSASend`, and wine refuses more than the
    // host's `IOV_MAX` (`WSAEMSGSIZE`): at most `MAX_WRITE_SLICES` are passed there.
    #[cfg(windows)]
    let buffers = &buffers[..buffers.len().min(crate::sys::MAX_WRITE_SLICES)];
    // Only the slices one `writev` takes count: `std` passes the first
    // `MAX_WRITE_SLICES`, and a full write of those is no sign of a full socket.
    let asked = buffers
        .iter()
        .take(crate::sys::MAX_WRITE_SLICES)
        .fold(0usize, |total, buffer| total.saturating_add(buffer.len()));
    registration.poll_io(cx, Direction::Write, || {
        let mut socket = socket;
        socket
            .write_vectored(buffers)
            .map(|done| transfer_outcome(done, asked))
    })
}

/// Shuts down the write direction for the I/O traits' `poll_shutdown` and `poll_close`
/// (hyper's, tokio's, futures') and for a dropped owned write half: a peer that
/// already went away (`NotConnected`) is no error.
pub(crate) fn shutdown_write<S: Io + ?Sized>(socket: &S) -> io::Result<()> {
    match socket.shutdown(Shutdown::Write) {
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(()),
        result => result,
    }
}

pub(crate) async fn read<S: Io + ?Sized>(socket: &S, buffer: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| socket.poll_read_bytes(cx, buffer)).await
}

pub(crate) async fn peek<S: Io + ?Sized>(socket: &S, buffer: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| socket.poll_peek(cx, buffer)).await
}

pub(crate) async fn write<S: Io + ?Sized>(socket: &S, buffer: &[u8]) -> io::Result<usize> {
    poll_fn(|cx| socket.poll_write_bytes(cx, buffer)).await
}

pub(crate) async fn write_all<S: Io + ?Sized>(socket: &S, mut buffer: &[u8]) -> io::Result<()> {
    while !buffer.is_empty() {
        let written = write(socket, buffer).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buffer = &buffer[written..];
    }
    Ok(())
}

pub(crate) async fn write_vectored<S: Io + ?Sized>(
    socket: &S,
    buffers: &[IoSlice<'_>],
) -> io::Result<usize> {
    poll_fn(|cx| socket.poll_write_vectored_bytes(cx, buffers)).await
}
