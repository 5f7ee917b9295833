//! [`TcpStream`]: a connected socket on a worker's reactor.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use crate::reactor::{Direction, Outcome, Registration};

/// A transfer shorter than asked means the socket is drained for now (end of stream
/// aside, which stays ready so that every later read sees it).
fn transfer_outcome(done: usize, asked: usize) -> Outcome<usize> {
    if done > 0 && done < asked {
        Outcome::Drained(done)
    } else {
        Outcome::More(done)
    }
}

/// A TCP connection registered with the worker thread that created it. It may be used
/// from tasks on any worker; readiness events arrive on the creating worker.
///
/// Besides the async methods here it implements `hyper::rt::{Read, Write}`.
pub struct TcpStream {
    inner: mio::net::TcpStream,
    registration: Registration,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("socket", &self.inner)
            .finish()
    }
}

impl TcpStream {
    pub(crate) fn from_mio(mut inner: mio::net::TcpStream) -> io::Result<Self> {
        let registration = Registration::new(&mut inner)?;
        Ok(Self {
            inner,
            registration,
        })
    }

    /// Opens a connection without blocking the worker: the socket is created
    /// non-blocking, `connect` returns `EINPROGRESS`, and the task waits for the socket
    /// to become writable, then checks `SO_ERROR` and the peer address.
    ///
    /// # Errors
    /// Outside a worker thread, or when the connection is refused or fails.
    pub async fn connect(address: SocketAddr) -> io::Result<Self> {
        let stream = Self::from_mio(mio::net::TcpStream::connect(address)?)?;
        poll_fn(|cx| {
            stream.registration.poll_io(cx, Direction::Write, || {
                if let Some(error) = stream.inner.take_error()? {
                    return Err(error);
                }
                match stream.inner.peer_addr() {
                    Ok(_) => Ok(Outcome::More(())),
                    Err(error) if error.kind() == io::ErrorKind::NotConnected => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    Err(error) => Err(error),
                }
            })
        })
        .await?;
        Ok(stream)
    }

    /// The remote address.
    ///
    /// # Errors
    /// As `getpeername`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// As `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    /// As `setsockopt`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Reads into `buffer`; `Ok(0)` is end of stream.
    ///
    /// # Errors
    /// As `recv`.
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            self.registration.poll_io(cx, Direction::Read, || {
                let asked = buffer.len();
                (&self.inner)
                    .read(buffer)
                    .map(|done| transfer_outcome(done, asked))
            })
        })
        .await
    }

    /// Writes part of `buffer`, returning how much.
    ///
    /// # Errors
    /// As `send`.
    pub async fn write(&self, buffer: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_write_bytes(cx, buffer)).await
    }

    /// Writes all of `buffer`.
    ///
    /// # Errors
    /// As `send`; a zero-length write is reported as [`io::ErrorKind::WriteZero`].
    pub async fn write_all(&self, mut buffer: &[u8]) -> io::Result<()> {
        while !buffer.is_empty() {
            let written = self.write(buffer).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buffer = &buffer[written..];
        }
        Ok(())
    }

    /// Writes from several buffers with one `writev`, returning how much.
    ///
    /// # Errors
    /// As `writev`.
    pub async fn write_vectored(&self, buffers: &[IoSlice<'_>]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_write_vectored_bytes(cx, buffers)).await
    }

    /// Shuts down the read, write or both halves.
    ///
    /// # Errors
    /// As `shutdown(2)`; `NotConnected` when the peer already closed.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    pub(crate) fn poll_read_uninit(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        let fd = self.inner.as_raw_fd();
        self.registration.poll_io(cx, Direction::Read, || {
            let asked = buffer.len();
            crate::sys::read_into_uninit(fd, buffer).map(|done| transfer_outcome(done, asked))
        })
    }

    pub(crate) fn poll_write_bytes(
        &self,
        cx: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.registration.poll_io(cx, Direction::Write, || {
            (&self.inner)
                .write(buffer)
                .map(|done| transfer_outcome(done, buffer.len()))
        })
    }

    pub(crate) fn poll_write_vectored_bytes(
        &self,
        cx: &mut Context<'_>,
        buffers: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let asked: usize = buffers.iter().map(|buffer| buffer.len()).sum();
        self.registration.poll_io(cx, Direction::Write, || {
            (&self.inner)
                .write_vectored(buffers)
                .map(|done| transfer_outcome(done, asked))
        })
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.registration.deregister(&mut self.inner);
    }
}
