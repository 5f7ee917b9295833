//! Outbound HTTP/1: [`Client`], requests by URL over a pool of keep-alive
//! connections; [`ClientConnection`], one connection of your own; [`send_request`], one
//! exchange charged to the calling request. All run on hyper's HTTP/1 client over a
//! non-blocking [`TcpStream`] connect, bounded by timeouts, and are usable from inside
//! a request handler.

mod pool;

pub use pool::{Client, ClientBody, ClientBuilder};

use std::fmt;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::net::TcpStream;
use crate::timer::{Elapsed, timeout};

/// Why an outbound request failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened: the host did not resolve, or no address
    /// of it accepted (the message names the host).
    Connect(std::io::Error),
    /// hyper reported a protocol or I/O error.
    Http(hyper::Error),
    /// The timeout passed first (for [`Client`], its request timeout).
    Timeout,
    /// [`Client`]'s connect timeout passed before the connection was open.
    ConnectTimeout,
    /// The URL is not one [`Client`] can request: not absolute, no host, user
    /// information. The message says which.
    InvalidUrl(String),
    /// The URL's scheme is not `http`: `https` needs TLS, which the client does not
    /// have. The message says which.
    UnsupportedScheme(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(error) => write!(f, "connect failed: {error}"),
            Self::Http(error) => write!(f, "HTTP error: {error}"),
            Self::Timeout => f.write_str("request timed out"),
            Self::ConnectTimeout => f.write_str("connect timed out"),
            Self::InvalidUrl(message) => write!(f, "invalid URL {message}"),
            Self::UnsupportedScheme(message) => write!(f, "unsupported scheme: {message}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(error) => Some(error),
            Self::Http(error) => Some(error),
            Self::Timeout
            | Self::ConnectTimeout
            | Self::InvalidUrl(_)
            | Self::UnsupportedScheme(_) => None,
        }
    }
}

impl From<Elapsed> for ClientError {
    fn from(_: Elapsed) -> Self {
        Self::Timeout
    }
}

/// A keep-alive HTTP/1 client connection; requests go one after another.
///
/// The connection's I/O runs as a task spawned on the current worker; it ends when
/// this value is dropped. It is not part of any request, even when a handler makes it:
/// the connect, the handshake (hyper's buffers and channels), the connection's task
/// and every [`send`](Self::send) run outside the calling request's arena, so a
/// handler may keep the connection (in a pool, say) past its request without holding
/// that request's arena, and its memory does not count against the handler's budget.
/// For an exchange charged to the calling request, use [`send_request`].
pub struct ClientConnection<B> {
    sender: SendRequest<B>,
}

impl<B> fmt::Debug for ClientConnection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConnection")
            .field("closed", &self.sender.is_closed())
            .finish()
    }
}

impl<B> ClientConnection<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Connects to `address` (non-blocking connect plus HTTP/1 handshake) within
    /// `limit`.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the connection fails, [`ClientError::Timeout`]
    /// when `limit` passes first.
    pub async fn connect(address: SocketAddr, limit: Duration) -> Result<Self, ClientError> {
        // Built and polled outside the caller's arena: everything the connection keeps
        // is allocated while this future runs.
        let connecting = pagekeep_arena::outside_arena(|| {
            Box::pin(timeout(limit, async move {
                let stream = TcpStream::connect(address)
                    .await
                    .map_err(ClientError::Connect)?;
                let _ = stream.set_nodelay(true);
                Self::handshake(stream).await
            }))
        });
        OutsideArena(connecting).await?
    }

    /// Connects to the Unix domain socket at `path` (Unix only; a server's
    /// [`bind_unix`](crate::ServerBuilder::bind_unix), say) and does the HTTP/1
    /// handshake, within `limit`. Requests then go as on a TCP connection; give them a
    /// `host` header (`localhost`, say), which HTTP/1.1 requires.
    ///
    /// # Examples
    /// ```no_run
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Empty};
    /// use pagekeep_executor::client::ClientConnection;
    /// use std::time::Duration;
    ///
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// runtime.block_on(async {
    ///     let limit = Duration::from_secs(5);
    ///     let mut connection =
    ///         ClientConnection::<Empty<Bytes>>::connect_unix("/run/app/http.sock", limit).await?;
    ///     let request = http::Request::get("/").header("host", "localhost").body(Empty::new())?;
    ///     let response = connection.send(request, limit).await?;
    ///     println!("{}: {:?}", response.status(), response.into_body().collect().await?.to_bytes());
    ///     Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// })
    /// .map_err(std::io::Error::other)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`connect`](Self::connect)'s.
    #[cfg(unix)]
    pub async fn connect_unix(
        path: impl AsRef<std::path::Path>,
        limit: Duration,
    ) -> Result<Self, ClientError> {
        let path = path.as_ref();
        // As `connect`: everything the connection keeps is allocated outside the
        // caller's arena, the path's copy included.
        let connecting = pagekeep_arena::outside_arena(|| {
            let path = path.to_owned();
            Box::pin(timeout(limit, async move {
                let stream = crate::net::UnixStream::connect(&path)
                    .await
                    .map_err(ClientError::Connect)?;
                Self::handshake(stream).await
            }))
        });
        OutsideArena(connecting).await?
    }

    /// hyper's HTTP/1 handshake on `stream`, its connection driven by a spawned task.
    async fn handshake<S>(stream: S) -> Result<Self, ClientError>
    where
        S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(stream)
            .await
            .map_err(ClientError::Http)?;
        // Drives the socket; finishes when `sender` is dropped.
        drop(crate::spawn(async move {
            let _ = connection.await;
        }));
        Ok(Self { sender })
    }

    /// Sends `request` and waits for the response head within `limit` (the body then
    /// streams from the connection task).
    ///
    /// # Errors
    /// [`ClientError::Http`] on protocol errors or when the connection closed,
    /// [`ClientError::Timeout`] when `limit` passes first.
    pub async fn send(
        &mut self,
        request: Request<B>,
        limit: Duration,
    ) -> Result<Response<Incoming>, ClientError> {
        let sender = &mut self.sender;
        // Outside the caller's arena: sending grows the connection's queue, which
        // lives as long as the connection.
        let sending = pagekeep_arena::outside_arena(|| {
            Box::pin(timeout(limit, async move {
                sender.ready().await.map_err(ClientError::Http)?;
                sender
                    .send_request(request)
                    .await
                    .map_err(ClientError::Http)
            }))
        });
        OutsideArena(sending).await?
    }
}

/// Connects to `address`, sends `request` and returns the response with its body read
/// in full, all within `limit`, on a connection of its own that is closed afterwards.
/// Set the `host` header yourself; the URI may be just a path.
///
/// The connection is driven by the calling future itself, not by a spawned task, so
/// inside a request handler everything the exchange allocates (hyper's buffers, the
/// response and its body) comes from the request's arena and counts against its
/// budget: a response too large for the budget cancels the request like any other
/// allocation past it.
///
/// # Errors
/// As [`ClientConnection::connect`] and [`ClientConnection::send`]; a failure while
/// reading the body is [`ClientError::Http`].
pub async fn send_request<B>(
    address: SocketAddr,
    request: Request<B>,
    limit: Duration,
) -> Result<Response<Bytes>, ClientError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    timeout(limit, async move {
        let stream = TcpStream::connect(address)
            .await
            .map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(stream)
            .await
            .map_err(ClientError::Http)?;
        let exchange = async move {
            sender.ready().await.map_err(ClientError::Http)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(ClientError::Http)?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(ClientError::Http)?.to_bytes();
            Ok(Response::from_parts(parts, body))
        };
        drive_alongside(connection, exchange).await
    })
    .await?
}

/// Polls a future outside any request's arena: what it allocates while polled is not
/// charged to (nor pins) the arena of the request that awaits it.
struct OutsideArena<F>(Pin<Box<F>>);

impl<F: Future> Future for OutsideArena<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let future = self.0.as_mut();
        pagekeep_arena::outside_arena(|| future.poll(cx))
    }
}

/// Runs `main` to completion while also polling `driver` (a connection's I/O) until the
/// driver finishes; the driver's own result is not needed: its failures reach `main`
/// through the request channel.
async fn drive_alongside<D, M, T>(driver: D, main: M) -> T
where
    D: Future,
    M: Future<Output = T>,
{
    let mut driver = pin!(driver);
    let mut main = pin!(main);
    let mut driver_done = false;
    poll_fn(|cx| {
        if !driver_done && driver.as_mut().poll(cx).is_ready() {
            driver_done = true;
        }
        main.as_mut().poll(cx)
    })
    .await
}
