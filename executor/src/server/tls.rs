//! TLS on the server (feature `tls`): rustls through tokio-rustls, over the tokio I/O
//! traits of [`TcpStream`](crate::net::TcpStream) or, on a server bound to a Unix
//! socket, of `UnixStream` (feature `tokio-io`, no tokio runtime).
//!
//! The handshake runs in the connection's task before hyper sees the connection, so
//! what it allocates (rustls' connection state, its buffers) is connection state,
//! outside every request arena, as hyper's own buffers are. It is bounded by the
//! server's header read timeout, counted from the connection's start: a client that
//! opens a TCP connection and never finishes the handshake (never sends a ClientHello,
//! say) gives its slot under `max_connections` back when the timeout fires. Shutdown
//! abandons handshakes in progress.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::server::Config;
use crate::shutdown::Shutdown;
use crate::timer::sleep;

/// ALPN's name for HTTP/2.
#[cfg(feature = "http2")]
const ALPN_H2: &[u8] = b"h2";
/// ALPN's name for HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The server's TLS acceptor: its rustls configuration, shared by every connection.
#[derive(Clone)]
pub(crate) struct Tls(TlsAcceptor);

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("alpn_protocols", &self.0.config().alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The acceptor for `config`; an empty ALPN list is filled with the protocols the
    /// server speaks (`h2` first with the `http2` feature, then `http/1.1`), a list the
    /// caller set is kept as it is.
    pub(crate) fn new(mut config: rustls::ServerConfig) -> Self {
        if config.alpn_protocols.is_empty() {
            #[cfg(feature = "http2")]
            config.alpn_protocols.push(ALPN_H2.to_vec());
            config.alpn_protocols.push(ALPN_HTTP1.to_vec());
        }
        Self(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Runs the TLS handshake on `stream`, bounded by the header read timeout and by
/// shutdown; `None` (and the stream closed) when it fails, times out, or shutdown
/// comes first.
pub(crate) async fn handshake<S>(
    tls: &Tls,
    stream: S,
    config: &Config,
    shutdown: &Shutdown,
) -> Option<TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut accepting = pin!(tls.0.accept(stream));
    let mut deadline = config.header_read_timeout.map(sleep);
    let mut stop = pin!(shutdown.wait());
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(result) = accepting.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut deadline
            && Pin::new(deadline).poll(cx).is_ready()
        {
            config
                .counters
                .tls_handshake_timeouts
                .fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    match outcome {
        Some(Ok(stream)) => Some(stream),
        Some(Err(_)) => {
            // Not TLS, a certificate the client refused, a reset: the client's doing.
            config
                .counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            None
        }
        None => None,
    }
}
