//! Outbound HTTP/1: hyper's client connection over a non-blocking [`TcpStream`]
//! connect, bounded by a timeout. Usable from inside a request handler.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::net::TcpStream;
use crate::timer::{Elapsed, timeout};

/// Why an outbound request failed.
#[derive(Debug)]
pub enum ClientError {
    /// The TCP connection could not be opened.
    Connect(std::io::Error),
    /// hyper reported a protocol or I/O error.
    Http(hyper::Error),
    /// The timeout passed first.
    Timeout,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(error) => write!(f, "connect failed: {error}"),
            Self::Http(error) => write!(f, "HTTP error: {error}"),
            Self::Timeout => f.write_str("request timed out"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(error) => Some(error),
            Self::Http(error) => Some(error),
            Self::Timeout => None,
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
/// this value is dropped.
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
        timeout(limit, async move {
            let stream = TcpStream::connect(address)
                .await
                .map_err(ClientError::Connect)?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(stream)
                .await
                .map_err(ClientError::Http)?;
            // Drives the socket; finishes when `sender` is dropped.
            drop(crate::spawn(async move {
                let _ = connection.await;
            }));
            Ok(Self { sender })
        })
        .await?
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
        timeout(limit, async move {
            sender.ready().await.map_err(ClientError::Http)?;
            sender
                .send_request(request)
                .await
                .map_err(ClientError::Http)
        })
        .await?
    }
}

/// Connects to `address`, sends `request` and returns the response, all within
/// `limit`. Set the `host` header yourself; the URI may be just a path.
///
/// # Errors
/// As [`ClientConnection::connect`] and [`ClientConnection::send`].
pub async fn send_request<B>(
    address: SocketAddr,
    request: Request<B>,
    limit: Duration,
) -> Result<Response<Incoming>, ClientError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    timeout(limit, async move {
        let mut connection = ClientConnection::connect(address, limit).await?;
        connection.send(request, limit).await
    })
    .await?
}
