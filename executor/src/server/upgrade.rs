//! [`Upgraded`]: a connection a handler took over with `hyper::upgrade::on`, with the
//! ecosystem's I/O traits (tokio's with the `tokio-io` feature, `futures-io`'s with the
//! `futures-io` feature), so protocol crates written against them (tokio-tungstenite,
//! tokio-util's codecs, `futures::io::copy`) run over it without hyper-util's `TokioIo`.

use std::fmt;
#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
use std::io;
#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
use std::pin::Pin;
#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
use std::task::{Context, Poll};

/// An upgraded connection (a WebSocket's, a `CONNECT` tunnel's): hyper's
/// [`hyper::upgrade::Upgraded`] with tokio's `AsyncRead`/`AsyncWrite` (feature
/// `tokio-io`) and `futures_io::{AsyncRead, AsyncWrite}` (feature `futures-io`).
///
/// Reads give first the bytes the client sent after its request head (hyper read
/// them with the head), then the socket's. Writes, flushes and shutdowns (`poll_close`
/// for futures-io) go to hyper's, which go to the connection's socket (or its TLS
/// stream). Dropping it closes the connection, and gives back its slot under the
/// server's `max_connections`.
///
/// # Examples
///
/// A handler that answers a WebSocket-style upgrade with 101 and echoes every byte
/// through tokio's traits, in a task of its own (outside the request's arena):
///
/// ```no_run
/// # #[cfg(feature = "tokio-io")]
/// # fn main() -> std::io::Result<()> {
/// use bytes::Bytes;
/// use http::{Response, StatusCode, header};
/// use http_body_util::Full;
/// use pagekeep_executor::upgrade::Upgraded;
///
/// let server = pagekeep_executor::Server::builder().bind("127.0.0.1:8080".parse().unwrap())?;
/// server.serve(|mut request: http::Request<pagekeep_executor::RequestBody>| {
///     let upgrade = hyper::upgrade::on(&mut request);
///     drop(pagekeep_executor::spawn(async move {
///         let Ok(upgraded) = upgrade.await else { return };
///         let (mut reader, mut writer) = tokio::io::split(Upgraded::new(upgraded));
///         let _ = tokio::io::copy(&mut reader, &mut writer).await;
///     }));
///     async {
///         let mut response = Response::new(Full::new(Bytes::new()));
///         *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
///         response.headers_mut().insert(header::CONNECTION, "upgrade".parse().unwrap());
///         response.headers_mut().insert(header::UPGRADE, "echo".parse().unwrap());
///         response
///     }
/// })?;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "tokio-io"))]
/// # fn main() {}
/// ```
pub struct Upgraded {
    inner: hyper::upgrade::Upgraded,
}

impl Upgraded {
    /// Wraps hyper's upgraded connection (what `hyper::upgrade::on(&mut request)`
    /// gives).
    pub fn new(upgraded: hyper::upgrade::Upgraded) -> Self {
        Self { inner: upgraded }
    }

    /// hyper's upgraded connection, for its `downcast` or its `rt` traits.
    pub fn into_inner(self) -> hyper::upgrade::Upgraded {
        self.inner
    }

    /// A reference to hyper's upgraded connection.
    pub fn get_ref(&self) -> &hyper::upgrade::Upgraded {
        &self.inner
    }

    /// A mutable reference to hyper's upgraded connection. Reading or writing through
    /// it and through `self` both is fine: they are the same byte streams.
    pub fn get_mut(&mut self) -> &mut hyper::upgrade::Upgraded {
        &mut self.inner
    }

    /// Reads into `buffer` (empty: filled from its start) through hyper's `rt::Read`;
    /// returns how many bytes were read.
    #[cfg(any(feature = "tokio-io", feature = "futures-io"))]
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        mut buffer: hyper::rt::ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(hyper::rt::Read::poll_read(
            Pin::new(&mut self.inner),
            cx,
            buffer.unfilled()
        ))?;
        Poll::Ready(Ok(buffer.filled().len()))
    }
}

impl From<hyper::upgrade::Upgraded> for Upgraded {
    fn from(upgraded: hyper::upgrade::Upgraded) -> Self {
        Self::new(upgraded)
    }
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded").finish_non_exhaustive()
    }
}

#[cfg(feature = "tokio-io")]
impl tokio::io::AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: `unfilled_mut` requires that no initialised byte be de-initialised
        // through the slice. The slice goes only into hyper's `ReadBuf`, whose safe API
        // writes initialised bytes into it and never writes uninitialised ones (its
        // only unsafe writer, `ReadBufCursor::advance`, requires the bytes to be
        // initialised).
        let unfilled = unsafe { buffer.unfilled_mut() };
        let read =
            std::task::ready!(this.poll_read_into(cx, hyper::rt::ReadBuf::uninit(unfilled)))?;
        // SAFETY: hyper's `ReadBuf` counts as filled only initialised bytes, and its
        // filled part starts at the start of `unfilled`: the first `read` bytes of the
        // unfilled part are initialised.
        unsafe { buffer.assume_init(read) };
        buffer.advance(read);
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "tokio-io")]
impl tokio::io::AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.get_mut().inner), cx, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(Pin::new(&mut self.get_mut().inner), cx, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.inner)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.get_mut().inner), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.get_mut().inner), cx)
    }
}

#[cfg(feature = "futures-io")]
impl futures_io::AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_read_into(cx, hyper::rt::ReadBuf::new(buffer))
    }
}

#[cfg(feature = "futures-io")]
impl futures_io::AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.get_mut().inner), cx, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(Pin::new(&mut self.get_mut().inner), cx, buffers)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.get_mut().inner), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.get_mut().inner), cx)
    }
}
