//! Unix domain stream sockets on the worker reactors: [`UnixListener`] and
//! [`UnixStream`], with the same reads, writes, halves and I/O traits as
//! [`TcpStream`](crate::net::TcpStream) (the code is shared, `socket.rs`).

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::net::socket;
use crate::net::split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, WriteHalf};
use crate::reactor::{Direction, Outcome, Registration};

/// A listening Unix domain socket registered with the worker thread that created it.
///
/// Binding creates the socket file; dropping the listener closes the socket and leaves
/// the file, as `std`'s does: remove it yourself, or bind the next time with
/// [`bind_replacing_stale`](Self::bind_replacing_stale).
///
/// # Examples
/// ```
/// use pagekeep_executor::net::{UnixListener, UnixStream};
///
/// let directory = std::env::temp_dir().join(format!("pagekeep-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&directory)?;
/// let path = directory.join("listener.sock");
/// let _ = std::fs::remove_file(&path);
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let at = path.clone();
/// runtime.block_on(async move {
///     let listener = UnixListener::bind(&at)?;
///     let client = UnixStream::connect(&at).await?;
///     let (server, _peer) = listener.accept().await?;
///     client.write_all(b"ping").await?;
///     let mut buffer = [0u8; 4];
///     let read = server.read(&mut buffer).await?;
///     assert_eq!(&buffer[..read], &b"ping"[..read]);
///     Ok::<_, std::io::Error>(())
/// })?;
/// std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UnixListener {
    inner: mio::net::UnixListener,
    registration: Registration,
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("socket", &self.inner)
            .finish()
    }
}

/// Adds the path to an error from `bind` or `connect`.
/// `error`, its message naming `what` was done to `path`.
pub(crate) fn with_path(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

/// Removes the file at `path` if it is a stale socket: a socket that nobody accepts on
/// (a connect is refused). Anything else at `path`, or nothing, is left as it is.
///
/// # Errors
/// When the stale socket cannot be removed (the message names the path).
pub(crate) fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let is_socket =
        std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_socket());
    // A blocking connect to a Unix socket does not wait: it is accepted into the
    // backlog or refused at once.
    if is_socket
        && std::os::unix::net::UnixStream::connect(path)
            .is_err_and(|error| error.kind() == io::ErrorKind::ConnectionRefused)
    {
        std::fs::remove_file(path).map_err(|error| with_path(error, "remove", path))?;
    }
    Ok(())
}

impl UnixListener {
    /// Binds a listener at `path` on the current worker.
    ///
    /// # Errors
    /// Outside a worker thread. As `bind(2)`, the message naming the path: a file
    /// already at `path` (a socket left by an earlier run included) is
    /// [`io::ErrorKind::AddrInUse`]; a path longer than the system's `sun_path`
    /// (107 bytes on Linux) is [`io::ErrorKind::InvalidInput`], and no file is made.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let inner =
            mio::net::UnixListener::bind(path).map_err(|error| with_path(error, "bind", path))?;
        Self::from_mio(inner)
    }

    /// Binds at `path` as [`bind`](Self::bind) does, first removing a stale socket
    /// file there: one that is a socket and that nobody accepts on (a connect is
    /// refused), left by a process that ended without removing it. A socket someone
    /// listens on, and a file that is not a socket, are left alone
    /// ([`io::ErrorKind::AddrInUse`]).
    ///
    /// Another process may bind the path between the check and the bind; the bind then
    /// fails as [`bind`](Self::bind)'s does.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn bind_replacing_stale(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        remove_stale_socket(path)?;
        Self::bind(path)
    }

    /// Takes over a listening socket made elsewhere, switching it to non-blocking mode
    /// and registering it with the current worker.
    ///
    /// # Errors
    /// Outside a worker thread, or when the socket cannot be made non-blocking.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Self::from_mio(mio::net::UnixListener::from_std(listener))
    }

    fn from_mio(mut inner: mio::net::UnixListener) -> io::Result<Self> {
        let registration = Registration::new(&mut inner)?;
        Ok(Self {
            inner,
            registration,
        })
    }

    /// The address the socket is bound to.
    ///
    /// # Errors
    /// As `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits for the next connection; the stream is registered with the current worker.
    ///
    /// # Errors
    /// As `accept4`, or when the new stream cannot be registered.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, peer) = poll_fn(|cx| self.poll_accept(cx)).await?;
        Ok((UnixStream::from_mio(stream)?, peer))
    }

    /// Polls for the next connection, not yet registered with any worker.
    pub(crate) fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(mio::net::UnixStream, SocketAddr)>> {
        self.registration.poll_io(cx, Direction::Read, || {
            self.inner.accept().map(Outcome::More)
        })
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        self.registration.deregister(&mut self.inner);
    }
}

/// A connected Unix domain stream socket registered with the worker thread that
/// created it; usable from tasks on any worker.
///
/// It has what [`TcpStream`](crate::net::TcpStream) has, from the same code: `read`,
/// `peek`, `write`, `write_all`, `write_vectored`, `shutdown`,
/// [`split`](Self::split) and [`into_split`](Self::into_split) into the same half types
/// (`ReadHalf<'_, UnixStream>` and so on), `hyper::rt::{Read, Write}`, and with the
/// `tokio-io` and `futures-io` features those crates' `AsyncRead`/`AsyncWrite`, so
/// hyper's client and server connections run over it.
pub struct UnixStream {
    inner: mio::net::UnixStream,
    registration: Registration,
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("socket", &self.inner)
            .finish()
    }
}

impl UnixStream {
    pub(crate) fn from_mio(mut inner: mio::net::UnixStream) -> io::Result<Self> {
        let registration = Registration::new(&mut inner)?;
        Ok(Self {
            inner,
            registration,
        })
    }

    /// Connects to the socket at `path` without blocking the worker.
    ///
    /// # Errors
    /// Outside a worker thread; as `connect(2)`, the message naming the path: no file
    /// ([`io::ErrorKind::NotFound`]), nobody listening
    /// ([`io::ErrorKind::ConnectionRefused`]), a path longer than `sun_path`
    /// ([`io::ErrorKind::InvalidInput`]).
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let inner = mio::net::UnixStream::connect(path)
            .map_err(|error| with_path(error, "connect to", path))?;
        let stream = Self::from_mio(inner)?;
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
        .await
        .map_err(|error| with_path(error, "connect to", path))?;
        Ok(stream)
    }

    /// A connected pair of unnamed sockets (`socketpair(2)`), both registered with the
    /// current worker.
    ///
    /// # Errors
    /// Outside a worker thread, or as `socketpair`.
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((Self::from_mio(a)?, Self::from_mio(b)?))
    }

    /// Takes over a connected socket made elsewhere, switching it to non-blocking mode
    /// and registering it with the current worker.
    ///
    /// # Errors
    /// Outside a worker thread, or when the socket cannot be made non-blocking.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Self::from_mio(mio::net::UnixStream::from_std(stream))
    }

    /// The peer's address (unnamed for a client that did not bind).
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

    /// Reads into `buffer`; `Ok(0)` is end of stream.
    ///
    /// # Errors
    /// As `recv`.
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        socket::read(self, buffer).await
    }

    /// Reads into `buffer` without taking the data off the socket; see
    /// [`TcpStream::peek`](crate::net::TcpStream::peek).
    ///
    /// # Errors
    /// As `recv` with `MSG_PEEK`.
    pub async fn peek(&self, buffer: &mut [u8]) -> io::Result<usize> {
        socket::peek(self, buffer).await
    }

    /// Writes part of `buffer`, returning how much.
    ///
    /// # Errors
    /// As `send`.
    pub async fn write(&self, buffer: &[u8]) -> io::Result<usize> {
        socket::write(self, buffer).await
    }

    /// Writes all of `buffer`.
    ///
    /// # Errors
    /// As `send`; a zero-length write is reported as [`io::ErrorKind::WriteZero`].
    pub async fn write_all(&self, buffer: &[u8]) -> io::Result<()> {
        socket::write_all(self, buffer).await
    }

    /// Writes from several buffers with one `writev`, returning how much.
    ///
    /// # Errors
    /// As `writev`.
    pub async fn write_vectored(&self, buffers: &[IoSlice<'_>]) -> io::Result<usize> {
        socket::write_vectored(self, buffers).await
    }

    /// Shuts down the read, write or both halves.
    ///
    /// # Errors
    /// As `shutdown(2)`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Splits the stream into borrowed read and write halves; see
    /// [`TcpStream::split`](crate::net::TcpStream::split).
    #[must_use = "the halves are the way to use the stream while it is split"]
    pub fn split(&mut self) -> (ReadHalf<'_, Self>, WriteHalf<'_, Self>) {
        (ReadHalf::new(self), WriteHalf::new(self))
    }

    /// Splits the stream into owned read and write halves; see
    /// [`TcpStream::into_split`](crate::net::TcpStream::into_split). Dropping the write
    /// half shuts down the write direction.
    #[must_use = "dropping the halves closes the stream"]
    pub fn into_split(self) -> (OwnedReadHalf<Self>, OwnedWriteHalf<Self>) {
        let stream = Arc::new(self);
        (
            OwnedReadHalf::new(Arc::clone(&stream)),
            OwnedWriteHalf::new(stream),
        )
    }
}

impl socket::Socket for UnixStream {}

impl socket::sealed::Io for UnixStream {
    const KIND: &'static str = "Unix";

    fn poll_read_bytes(&self, cx: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        socket::poll_read(&self.registration, &self.inner, cx, buffer)
    }

    fn poll_peek(&self, cx: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        let fd = self.inner.as_raw_fd();
        socket::poll_peek(&self.registration, cx, || {
            // SAFETY: `buffer` is a valid, writable region of `buffer.len()` bytes for
            // the whole call (exclusively borrowed, and initialised, so whatever `recv`
            // leaves in it stays valid `u8`s); `fd` is open while `self` is borrowed.
            let seen = unsafe {
                libc::recv(
                    fd,
                    buffer.as_mut_ptr().cast::<libc::c_void>(),
                    buffer.len(),
                    libc::MSG_PEEK,
                )
            };
            if seen < 0 {
                Err(io::Error::last_os_error())
            } else {
                // Non-negative and at most `buffer.len()`.
                Ok(seen.unsigned_abs())
            }
        })
    }

    fn poll_read_uninit(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        socket::poll_read_uninit(&self.registration, self.inner.as_raw_fd(), cx, buffer)
    }

    fn poll_write_bytes(&self, cx: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        socket::poll_write(&self.registration, &self.inner, cx, buffer)
    }

    fn poll_write_vectored_bytes(
        &self,
        cx: &mut Context<'_>,
        buffers: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        socket::poll_write_vectored(&self.registration, &self.inner, cx, buffers)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }
}

impl Drop for UnixStream {
    fn drop(&mut self) {
        self.registration.deregister(&mut self.inner);
    }
}

crate::net::io_traits::impl_async_read!([] UnixStream, this => this);
crate::net::io_traits::impl_async_write!([] UnixStream, this => this);
crate::net::io_traits::impl_hyper_io!(UnixStream);
