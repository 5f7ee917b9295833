//! [`TcpStream`]: a connected socket on a worker's reactor.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
#[cfg(unix)]
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::net::resolve::{ToSocketAddrs, resolve, target};
use crate::net::socket;
use crate::net::split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, WriteHalf};
use crate::reactor::{Direction, Outcome, Registration};

/// A TCP connection registered with the worker thread that created it. It may be used
/// from tasks on any worker; readiness events arrive on the creating worker.
///
/// Besides the async methods here it implements `hyper::rt::{Read, Write}`, and with
/// the `tokio-io` and `futures-io` features `tokio::io::{AsyncRead, AsyncWrite}` and
/// `futures_io::{AsyncRead, AsyncWrite}` (vectored writes included; shutting down, or
/// closing, shuts down the write direction). A read and a write may wait at the same
/// time, from different tasks: each direction keeps its own waiting tasks. To read in
/// one task and write in another, [`split`](Self::split) the stream or
/// [`into_split`](Self::into_split) it.
///
/// Readiness comes from the creating worker only: once its runtime is dropped (or the
/// worker dies), tasks waiting on the stream or its halves are woken, and every
/// operation that would wait fails with an [`io::ErrorKind::Other`] error ("the runtime
/// that registered this socket has shut down") instead of waiting for ever.
///
/// # Examples
///
/// With the `tokio-io` feature, tokio's extension traits (and tokio-util's codecs) work
/// on it; no tokio runtime is involved:
///
/// ```
/// # #[cfg(feature = "tokio-io")]
/// # fn main() -> std::io::Result<()> {
/// use pagekeep_executor::net::{TcpListener, TcpStream};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
///     let address = listener.local_addr()?;
///     let client = pagekeep_executor::spawn(async move {
///         let mut stream = TcpStream::connect(address).await?;
///         stream.write_all(b"ping").await?;
///         // tokio's `shutdown` (end of stream for the peer), spelt out: the inherent
///         // `TcpStream::shutdown` takes a `std::net::Shutdown` and is not async.
///         AsyncWriteExt::shutdown(&mut stream).await?;
///         let mut answer = String::new();
///         stream.read_to_string(&mut answer).await?;
///         Ok::<_, std::io::Error>(answer)
///     });
///     let (mut stream, _) = listener.accept().await?;
///     let mut request = Vec::new();
///     stream.read_to_end(&mut request).await?;
///     assert_eq!(request, b"ping");
///     stream.write_all(b"pong").await?;
///     drop(stream);
///     assert_eq!(client.await.unwrap()?, "pong");
///     Ok(())
/// })
/// # }
/// # #[cfg(not(feature = "tokio-io"))]
/// # fn main() {}
/// ```
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
    /// `address` is a [`SocketAddr`] or anything else [`ToSocketAddrs`] takes:
    /// `"localhost:8080"`, `("example.com", 80)`. A host name is resolved on the
    /// runtime's blocking pool ([`spawn_blocking`](crate::spawn_blocking)), never on the
    /// worker, and each of its addresses is tried in turn until one connects. A
    /// resolution cannot be interrupted: if the connect is dropped meanwhile (a timeout),
    /// the lookup still runs to its end on its blocking thread and its result is dropped.
    ///
    /// # Errors
    /// Outside a worker thread; an address that does not parse
    /// ([`io::ErrorKind::InvalidInput`]); a name that does not resolve (the error names
    /// the host); when no address connects, the last address's error (its kind kept),
    /// its message naming the target and how many addresses were tried.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_executor::net::{TcpListener, TcpStream};
    ///
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// runtime.block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    ///     let port = listener.local_addr()?.port();
    ///     // By name: "localhost" is resolved on the blocking pool.
    ///     let stream = TcpStream::connect(("localhost", port)).await?;
    ///     assert_eq!(stream.peer_addr()?.port(), port);
    ///     let stream = TcpStream::connect(format!("127.0.0.1:{port}")).await?;
    ///     assert!(stream.peer_addr()?.ip().is_loopback());
    ///     let unknown = TcpStream::connect("no-such-host.invalid:80").await.unwrap_err();
    ///     assert!(unknown.to_string().contains("no-such-host.invalid"), "{unknown}");
    ///     Ok::<_, std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn connect<A: ToSocketAddrs>(address: A) -> io::Result<Self> {
        let target = target(&address)?;
        drop(address);
        let (target, addresses) = resolve(target).await?;
        let mut last_error = None;
        for &candidate in &addresses {
            match Self::connect_to(candidate).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last_error = Some(error),
            }
        }
        let error = last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
        });
        Err(io::Error::new(
            error.kind(),
            format!(
                "could not connect to {target} ({} address{} tried): {error}",
                addresses.len(),
                if addresses.len() == 1 { "" } else { "es" },
            ),
        ))
    }

    /// Connects to one address; see [`connect`](Self::connect).
    async fn connect_to(address: SocketAddr) -> io::Result<Self> {
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

    /// Sets `TCP_NODELAY`: `true` sends small writes at once instead of coalescing
    /// them (Nagle's algorithm off).
    ///
    /// # Errors
    /// As `setsockopt`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set; see [`set_nodelay`](Self::set_nodelay).
    ///
    /// # Errors
    /// As `getsockopt`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.nodelay()
    }

    /// Sets the IP time-to-live (`IP_TTL`) of the packets this socket sends. On Linux,
    /// `u32::MAX` (which reaches the kernel as -1) restores the system's default
    /// (`net.ipv4.ip_default_ttl`).
    ///
    /// # Errors
    /// As `setsockopt`: Linux accepts 1 to 255 (and `u32::MAX`) and refuses anything
    /// else, 0 included, with [`io::ErrorKind::InvalidInput`], leaving the setting as
    /// it was.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// The IP time-to-live (`IP_TTL`); see [`set_ttl`](Self::set_ttl).
    ///
    /// # Errors
    /// As `getsockopt`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Turns TCP keep-alive probes on, sent after the connection has been idle for
    /// `Some(idle)` (`SO_KEEPALIVE` and `TCP_KEEPIDLE`, `TCP_KEEPALIVE` on macOS), or
    /// off with `None`. The idle time is whole seconds: a fraction is rounded up, so
    /// `Duration::ZERO` and anything below a second mean one second. The interval
    /// between probes and their count stay the system's.
    ///
    /// # Errors
    /// As `setsockopt`: an idle time longer than the system accepts (Linux: 32,767
    /// seconds; `Duration::MAX` included) is refused with
    /// [`io::ErrorKind::InvalidInput`], and the setting is left as it was.
    pub fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        let socket = socket2::SockRef::from(&self.inner);
        let Some(idle) = idle else {
            return socket.set_keepalive(false);
        };
        let seconds = idle
            .as_secs()
            .saturating_add(u64::from(idle.subsec_nanos() > 0))
            .max(1);
        let was_on = socket.keepalive()?;
        // socket2 turns `SO_KEEPALIVE` on before it sets the idle time; undo that when
        // the system refuses the time, so a refused call changes nothing.
        let result = socket.set_tcp_keepalive(
            &socket2::TcpKeepalive::new().with_time(Duration::from_secs(seconds)),
        );
        if result.is_err() && !was_on {
            let _ = socket.set_keepalive(false);
        }
        result
    }

    /// The keep-alive idle time when TCP keep-alive is on, `None` when it is off; see
    /// [`set_keepalive`](Self::set_keepalive).
    ///
    /// # Errors
    /// As `getsockopt`; on Windows, which cannot read the idle time back
    /// (`SIO_KEEPALIVE_VALS` only sets it), [`io::ErrorKind::Unsupported`] when
    /// keep-alive is on.
    pub fn keepalive(&self) -> io::Result<Option<Duration>> {
        let socket = socket2::SockRef::from(&self.inner);
        if !socket.keepalive()? {
            return Ok(None);
        }
        #[cfg(unix)]
        return socket.tcp_keepalive_time().map(Some);
        #[cfg(windows)]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Windows cannot read the keep-alive idle time back",
        ));
    }

    /// Reads into `buffer` without taking the data off the socket: a later
    /// [`read`](Self::read) (or peek) sees the same bytes. Waits until there is
    /// something to see; `Ok(0)` is end of stream. A peek that saw fewer bytes than
    /// wanted returns at once when repeated (the data is still there): to wait for more,
    /// read.
    ///
    /// # Errors
    /// As `recv` with `MSG_PEEK`.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_executor::net::{TcpListener, TcpStream};
    ///
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// runtime.block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     client.write_all(b"GET /").await?;
    ///     let mut first = [0u8; 3];
    ///     let seen = server.peek(&mut first).await?;
    ///     assert_eq!(&first[..seen], &b"GET"[..seen]);
    ///     let mut all = [0u8; 5];
    ///     let read = server.read(&mut all).await?; // the peeked bytes are still there
    ///     assert_eq!(&all[..read], &b"GET /"[..read]);
    ///     Ok::<_, std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn peek(&self, buffer: &mut [u8]) -> io::Result<usize> {
        socket::peek(self, buffer).await
    }

    /// Splits the stream into a read half and a write half that borrow it, to read and
    /// write at the same time from one task (`join`ing two futures, say). Each half
    /// waits on its own direction, so neither steals the other's wake-up. The halves
    /// implement the same I/O traits as the stream; shutting down the write half (its
    /// `poll_shutdown` or `poll_close`) shuts down the stream's write direction.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_executor::net::{TcpListener, TcpStream};
    ///
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// runtime.block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    ///     let mut client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     // The server echoes one message.
    ///     let echo = pagekeep_executor::spawn(async move {
    ///         let mut buffer = [0u8; 5];
    ///         let mut read = 0;
    ///         while read < buffer.len() {
    ///             read += server.read(&mut buffer[read..]).await?;
    ///         }
    ///         server.write_all(&buffer).await
    ///     });
    ///     let (reader, writer) = client.split();
    ///     let mut answer = [0u8; 5];
    ///     let reading = async {
    ///         let mut read = 0;
    ///         while read < answer.len() {
    ///             read += reader.read(&mut answer[read..]).await?;
    ///         }
    ///         Ok::<_, std::io::Error>(())
    ///     };
    ///     let writing = writer.write_all(b"hello");
    ///     // Both wait at once: the read until the echo comes back.
    ///     let (read, written) = futures::future::join(reading, writing).await;
    ///     read?;
    ///     written?;
    ///     assert_eq!(&answer, b"hello");
    ///     echo.await.unwrap()
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use = "the halves are the way to use the stream while it is split"]
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf::new(self), WriteHalf::new(self))
    }

    /// Splits the stream into an owned read half and an owned write half, each `Send`
    /// and `'static`, so two tasks (on any workers) can read and write at the same
    /// time. Dropping the write half shuts down the write direction (the peer sees end
    /// of stream, the read half still reads); the socket closes when both halves are
    /// gone. [`OwnedReadHalf::reunite`] puts the halves back together.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_executor::net::{TcpListener, TcpStream};
    ///
    /// let runtime = pagekeep_executor::Runtime::builder().workers(2).build()?;
    /// runtime.block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     let (reader, writer) = client.into_split();
    ///     let writing = pagekeep_executor::spawn(async move {
    ///         writer.write_all(b"one way").await
    ///         // `writer` dropped here: the server reads end of stream.
    ///     });
    ///     let mut received = Vec::new();
    ///     let mut buffer = [0u8; 64];
    ///     loop {
    ///         let read = server.read(&mut buffer).await?;
    ///         if read == 0 {
    ///             break;
    ///         }
    ///         received.extend_from_slice(&buffer[..read]);
    ///     }
    ///     assert_eq!(received, b"one way");
    ///     writing.await.unwrap()?;
    ///     // The read half still works after the write half is gone.
    ///     server.write_all(b"and back").await?;
    ///     let read = reader.read(&mut buffer).await?;
    ///     assert_eq!(&buffer[..read], &b"and back"[..read]);
    ///     Ok::<_, std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use = "dropping the halves closes the stream"]
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let stream = Arc::new(self);
        (
            OwnedReadHalf::new(Arc::clone(&stream)),
            OwnedWriteHalf::new(stream),
        )
    }

    /// Reads into `buffer`; `Ok(0)` is end of stream.
    ///
    /// # Errors
    /// As `recv`.
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        socket::read(self, buffer).await
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

    /// Writes from several buffers with one `writev`, returning how much. One call
    /// passes at most the system's limit of slices (1024 on Linux, as `std` does), so
    /// write the rest in a loop, as with any partial write.
    ///
    /// # Errors
    /// As `writev`.
    pub async fn write_vectored(&self, buffers: &[IoSlice<'_>]) -> io::Result<usize> {
        socket::write_vectored(self, buffers).await
    }

    /// Shuts down the read, write or both halves.
    ///
    /// # Errors
    /// As `shutdown(2)`; `NotConnected` when the peer already closed.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Shuts down the write direction for the I/O traits' `poll_shutdown` and
    /// `poll_close` (hyper's, tokio's, futures'): a peer that already went away
    /// (`NotConnected`) is no error.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        socket::shutdown_write(self)
    }

    pub(crate) fn poll_read_bytes(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        socket::poll_read(&self.registration, &self.inner, cx, buffer)
    }

    pub(crate) fn poll_peek(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        socket::poll_peek(&self.registration, cx, || self.inner.peek(buffer))
    }

    pub(crate) fn poll_read_uninit(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        #[cfg(unix)]
        let raw = self.inner.as_raw_fd();
        // On Windows the read goes through mio (`sys::read_into_uninit` says why).
        #[cfg(windows)]
        let raw = &self.inner;
        socket::poll_read_uninit(&self.registration, raw, cx, buffer)
    }

    pub(crate) fn poll_write_bytes(
        &self,
        cx: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        socket::poll_write(&self.registration, &self.inner, cx, buffer)
    }

    pub(crate) fn poll_write_vectored_bytes(
        &self,
        cx: &mut Context<'_>,
        buffers: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        socket::poll_write_vectored(&self.registration, &self.inner, cx, buffers)
    }
}

impl socket::Socket for TcpStream {}

impl socket::sealed::Io for TcpStream {
    const KIND: &'static str = "TCP";

    fn poll_read_bytes(&self, cx: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        Self::poll_read_bytes(self, cx, buffer)
    }

    fn poll_peek(&self, cx: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        Self::poll_peek(self, cx, buffer)
    }

    fn poll_read_uninit(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        Self::poll_read_uninit(self, cx, buffer)
    }

    fn poll_write_bytes(&self, cx: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        Self::poll_write_bytes(self, cx, buffer)
    }

    fn poll_write_vectored_bytes(
        &self,
        cx: &mut Context<'_>,
        buffers: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Self::poll_write_vectored_bytes(self, cx, buffers)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        Self::shutdown(self, how)
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.registration.deregister(&mut self.inner);
    }
}
