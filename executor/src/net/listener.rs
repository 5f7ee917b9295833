//! [`TcpListener`]: accepts connections on a worker's reactor.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;

use crate::net::TcpStream;
use crate::reactor::{Direction, Outcome, Registration};

/// A listening socket registered with the worker thread that created it.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async {
///     let listener = pagekeep_executor::net::TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
///     let address = listener.local_addr()?;
///     let client = pagekeep_executor::spawn(async move {
///         pagekeep_executor::net::TcpStream::connect(address).await.map(|_| ())
///     });
///     let (_stream, _peer) = listener.accept().await?;
///     client.await.unwrap()
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpListener {
    inner: mio::net::TcpListener,
    registration: Registration,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("socket", &self.inner)
            .finish()
    }
}

impl TcpListener {
    /// Binds a listener (`SO_REUSEADDR`, backlog 1024) on the current worker.
    ///
    /// # Errors
    /// Outside a worker thread, or when binding fails.
    pub fn bind(address: SocketAddr) -> io::Result<Self> {
        Self::from_mio(mio::net::TcpListener::bind(address)?)
    }

    /// Takes over a listening socket made elsewhere (for example with `socket2` and
    /// `SO_REUSEPORT`), switching it to non-blocking mode and registering it with the
    /// current worker.
    ///
    /// # Errors
    /// Outside a worker thread, or when the socket cannot be made non-blocking.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Self::from_mio(mio::net::TcpListener::from_std(listener))
    }

    fn from_mio(mut inner: mio::net::TcpListener) -> io::Result<Self> {
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

    /// Polls for the next connection, not yet registered with any worker.
    pub(crate) fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<(mio::net::TcpStream, SocketAddr)>> {
        self.registration.poll_io(cx, Direction::Read, || {
            self.inner.accept().map(Outcome::More)
        })
    }

    /// Waits for the next connection; the stream is registered with the current worker.
    ///
    /// # Errors
    /// As `accept4`, or when the new stream cannot be registered.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = poll_fn(|cx| self.poll_accept(cx)).await?;
        Ok((TcpStream::from_mio(stream)?, peer))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.registration.deregister(&mut self.inner);
    }
}
