//! [`Client`]: requests by URL over pooled keep-alive HTTP/1 connections.
//!
//! The pool is a map from `host:port` to that host's idle connections, the count of its
//! open ones (idle, lent out or connecting) and the tasks waiting for a slot, under one
//! mutex held only to take or give back a connection. Every change to it, and every
//! connection, is allocated outside the calling request's arena
//! ([`pagekeep_arena::outside_arena`]): the pool outlives the requests that use it and
//! must pin none of their arenas.
//!
//! A connection is lent for one exchange: it goes back to the idle list when the
//! response's body has been read to its end, and is closed instead when the body is
//! dropped unread, fails, or the request fails. Idle connections are taken most recent
//! first; one idle past the idle timeout, or that hyper saw close, is closed at the next
//! checkout (each checkout looks at every host's idle list, and forgets hosts with
//! nothing open: a cost in the number of hosts, under the lock). No task reaps idle
//! connections meanwhile; one the server closed has already lost its socket (its
//! connection task ended), one past the timeout keeps its socket until then.

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::{ClientError, OutsideArena};
use crate::net::TcpStream;
use crate::timer::timeout;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body every pooled connection sends: the caller's, boxed.
type OutboundBody = UnsyncBoxBody<Bytes, BoxError>;

/// Settings of a [`Client`]; see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    max_per_host: usize,
    idle_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            max_per_host: 32,
            idle_timeout: Some(Duration::from_secs(90)),
            connect_timeout: Some(Duration::from_secs(10)),
            request_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl ClientBuilder {
    /// Most connections open to one `host:port` at once (idle, in use and connecting);
    /// a request that finds them all in use waits for one to come back or close,
    /// within its request timeout. Every waiting request is woken when one does, and
    /// the first to run takes it: there is no strict first-come order. Default 32; 0
    /// is taken as 1.
    #[must_use]
    pub fn max_connections_per_host(mut self, connections: usize) -> Self {
        self.max_per_host = connections.max(1);
        self
    }

    /// How long a connection may stay idle in the pool before it is closed rather than
    /// reused (checked whenever the pool is used); `None` keeps idle connections until
    /// the server closes them. Default 90 s.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = timeout.into();
        self
    }

    /// Longest time to open a connection: name resolution, TCP connect and HTTP/1
    /// handshake ([`ClientError::ConnectTimeout`] past it). `None`: no limit of its
    /// own. Default 10 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// Longest time from a request's call to its response head: waiting for a
    /// connection, connecting, sending and waiting for the answer
    /// ([`ClientError::Timeout`] past it). The body is then read at the caller's pace;
    /// bound it with [`timeout`](crate::timeout). `None`: no limit. Default 30 s.
    #[must_use]
    pub fn request_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.request_timeout = timeout.into();
        self
    }

    /// The client. Nothing is connected until the first request.
    #[must_use]
    pub fn build(self) -> Client {
        // Outside any arena: a client made in a handler may outlive its request.
        pagekeep_arena::outside_arena(|| Client {
            shared: Arc::new(Shared {
                config: self,
                hosts: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// An HTTP/1 client with a pool of keep-alive connections per `host:port`, for
/// requests by URL (`http://host:port/path`) made from anywhere, request handlers
/// included (a proxy, say).
///
/// Cloning is cheap and shares the pool. Host names are resolved off the worker (see
/// [`TcpStream::connect`]). The pool, its connections and their buffers are allocated
/// outside the calling request's arena, so connections kept in the pool never hold a
/// request's arena, and what the client allocates does not count against the
/// caller's budget. There is no TLS: `https://` URLs are refused with
/// [`ClientError::UnsupportedScheme`].
///
/// A request hands its connection back to the pool when its response body has been
/// read to the end. Drop a response whose body you do not want: its connection is then
/// closed, which frees its slot under the per-host bound. A response held unread keeps
/// its connection, and its slot, for as long as it lives.
///
/// Dropping the client leaves requests in flight to finish: each holds the pool, which
/// closes its idle connections when the last of them is gone.
///
/// # Examples
///
/// ```
/// use http_body_util::BodyExt;
/// use pagekeep_executor::client::Client;
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// # let server = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let port = server.local_addr()?.port();
/// # std::thread::spawn(move || {
/// #     use std::io::{Read, Write};
/// #     let (mut stream, _) = server.accept().unwrap();
/// #     for _ in 0..2 {
/// #         let mut request = [0u8; 1024];
/// #         let _ = stream.read(&mut request).unwrap();
/// #         stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").unwrap();
/// #     }
/// #     // Open until the client closes.
/// #     let _ = stream.read(&mut [0u8; 1]);
/// # });
/// runtime.block_on(async move {
///     let client = Client::builder()
///         .max_connections_per_host(8)
///         .request_timeout(std::time::Duration::from_secs(5))
///         .build();
///     let url = format!("http://localhost:{port}/hello");
///     for _ in 0..2 {
///         let response = client.get(&url).await?;
///         assert_eq!(response.status(), 200);
///         // Read to its end, the body gives the connection back to the pool.
///         let body = response.into_body().collect().await?.to_bytes();
///         assert_eq!(body, "hello");
///     }
///     // Both requests went over one connection.
///     assert_eq!(client.open_connections(), 1);
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.shared.config)
            .field("open_connections", &self.open_connections())
            .field("idle_connections", &self.idle_connections())
            .finish()
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

struct Shared {
    config: ClientBuilder,
    /// Per `host:port` (lower-case host), allocated outside any arena.
    hosts: Mutex<HashMap<String, Host>>,
}

#[derive(Default)]
struct Host {
    /// Connections waiting for a request, oldest first.
    idle: Vec<Idle>,
    /// Connections open to this host: idle, lent out and being opened. At most the
    /// per-host bound.
    open: usize,
    /// Tasks waiting for a slot; all are woken when one frees (each checks again).
    waiters: Vec<Waker>,
}

struct Idle {
    sender: SendRequest<OutboundBody>,
    since: Instant,
}

/// What a request gets from the pool.
enum Checkout {
    /// An idle connection.
    Reuse(SendRequest<OutboundBody>),
    /// A slot to open a new connection in.
    Connect,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Host>> {
        // A panic under the lock cannot leave the map half-updated in a way that
        // matters more than losing the pool: carry on with it.
        self.hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes an idle connection to `key`, or a slot for a new one, or registers
    /// `waker` to be woken when either may be there. Connections found closed or idle
    /// too long are handed back in `closed`, to be dropped after the lock.
    fn poll_checkout(
        &self,
        key: &str,
        waker: &Waker,
        closed: &mut Vec<SendRequest<OutboundBody>>,
    ) -> Poll<Checkout> {
        pagekeep_arena::outside_arena(|| {
            let now = Instant::now();
            let mut hosts = self.lock();
            self.expire(&mut hosts, now, closed);
            let max = self.config.max_per_host;
            // The key is copied only for a host not in the map yet.
            if !hosts.contains_key(key) {
                hosts.insert(key.to_owned(), Host::default());
            }
            let Some(host) = hosts.get_mut(key) else {
                unreachable!("the host was just inserted");
            };
            if let Some(idle) = host.idle.pop() {
                return Poll::Ready(Checkout::Reuse(idle.sender));
            }
            if host.open < max {
                host.open += 1;
                return Poll::Ready(Checkout::Connect);
            }
            host.waiters.retain(|waiting| !waiting.will_wake(waker));
            host.waiters.push(waker.clone());
            Poll::Pending
        })
    }

    /// Closes the idle connections (of every host) that hyper saw close or that have
    /// been idle too long, and forgets hosts with nothing left.
    fn expire(
        &self,
        hosts: &mut HashMap<String, Host>,
        now: Instant,
        closed: &mut Vec<SendRequest<OutboundBody>>,
    ) {
        let idle_timeout = self.config.idle_timeout;
        hosts.retain(|_, host| {
            let mut index = 0;
            while index < host.idle.len() {
                let idle = &host.idle[index];
                let expired = idle_timeout
                    .is_some_and(|limit| now.saturating_duration_since(idle.since) > limit);
                if expired || idle.sender.is_closed() {
                    closed.push(host.idle.remove(index).sender);
                    host.open -= 1;
                } else {
                    index += 1;
                }
            }
            host.open > 0 || !host.waiters.is_empty()
        });
    }

    /// Gives a lent connection back: to the idle list if `sender` is given, else its
    /// slot is freed. Wakes the host's waiting tasks either way.
    fn give_back(&self, key: &str, sender: Option<SendRequest<OutboundBody>>) {
        let (waiters, dropped) = pagekeep_arena::outside_arena(|| {
            let mut hosts = self.lock();
            let Some(host) = hosts.get_mut(key) else {
                return (Vec::new(), sender);
            };
            let dropped = match sender {
                Some(sender) if !sender.is_closed() => {
                    host.idle.push(Idle {
                        sender,
                        since: Instant::now(),
                    });
                    None
                }
                other => {
                    host.open -= 1;
                    other
                }
            };
            (std::mem::take(&mut host.waiters), dropped)
        });
        // Outside the lock: a sender's drop wakes its connection task.
        drop(dropped);
        for waiter in waiters {
            waiter.wake();
        }
    }
}

/// A connection (or a slot being connected) lent to one request. Dropped without
/// [`keep`](Self::keep), it closes the connection and frees the slot.
struct Lease {
    shared: Arc<Shared>,
    /// Allocated outside any arena (it may live in a response a handler holds).
    key: String,
    sender: Option<SendRequest<OutboundBody>>,
    /// Whether the connection served an earlier request (so may have been closed by
    /// the server meanwhile).
    reused: bool,
    /// Set once the connection went back to the pool.
    settled: bool,
}

impl Lease {
    /// Hands the connection back to the pool for the next request.
    fn keep(mut self) {
        let sender = self.sender.take();
        self.shared.give_back(&self.key, sender);
        self.settled = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled {
            // The connection (if any) is closed with its sender; its slot is freed.
            drop(self.sender.take());
            self.shared.give_back(&self.key, None);
        }
    }
}

/// A request's target, from its URL.
struct Target {
    /// `host:port` with the host in lower case: the pool's key.
    key: String,
    host: String,
    port: u16,
}

/// Checks `request`'s URL (absolute, `http`), sets its `Host` header if it has none,
/// and turns its URI into the origin form (path and query) a server expects.
fn prepare<B>(request: &mut Request<B>) -> Result<Target, ClientError> {
    let uri = request.uri();
    let invalid = |reason: &str| ClientError::InvalidUrl(format!("{uri}: {reason}"));
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP => {}
        Some(scheme) if *scheme == Scheme::HTTPS => {
            return Err(ClientError::UnsupportedScheme(format!(
                "{uri}: https needs TLS, which this client does not have"
            )));
        }
        Some(scheme) => {
            return Err(ClientError::UnsupportedScheme(format!(
                "{uri}: only http:// is supported, not {scheme}://"
            )));
        }
        None => return Err(invalid("not an absolute http:// URL")),
    }
    let authority: &Authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("user information in URLs is not supported"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = host.to_ascii_lowercase();
    let target = Target {
        key: format!("{host}:{port}"),
        host,
        port,
    };
    if !request.headers().contains_key(http::header::HOST) {
        let value = match authority.port_u16() {
            Some(80) | None => HeaderValue::from_str(authority.host()),
            Some(_) => HeaderValue::from_str(authority.as_str()),
        }
        .map_err(|_| invalid("the host is not a valid header value"))?;
        request.headers_mut().insert(http::header::HOST, value);
    }
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
    Ok(target)
}

/// Opens a connection to `target` and starts its task.
async fn connect(target: &Target) -> Result<SendRequest<OutboundBody>, ClientError> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(ClientError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(stream)
        .await
        .map_err(ClientError::Http)?;
    // Drives the socket; finishes when the last `sender` is dropped or the server
    // closes the connection.
    drop(crate::spawn(async move {
        let _ = connection.await;
    }));
    Ok(sender)
}

/// Runs `future` within `limit`, if any; `elapsed` is the error past it.
async fn within<F, T>(
    limit: Option<Duration>,
    elapsed: ClientError,
    future: F,
) -> Result<T, ClientError>
where
    F: Future<Output = Result<T, ClientError>>,
{
    match limit {
        Some(limit) => timeout(limit, future).await.unwrap_or(Err(elapsed)),
        None => future.await,
    }
}

/// Whether a request that may have reached the server can be sent again: its method
/// is idempotent and it has no body (so nothing is lost by building it again).
fn replayable<B: Body>(request: &Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::DELETE | Method::PUT
    ) && request.body().is_end_stream()
}

/// A copy of `request`'s head with an empty body, for a replay.
fn head_copy(request: &Request<OutboundBody>) -> Request<OutboundBody> {
    let mut copy = Request::new(empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether `error` says the server closed the connection (before or while the
/// request went out): hyper saw it close, or the socket was reset or its write end
/// broken.
fn closed_under_us(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        source = cause.source();
    }
    false
}

fn empty() -> OutboundBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

impl Client {
    /// A client with the default settings (see [`ClientBuilder`]).
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Settings for a client: per-host bound, idle timeout, connect and request
    /// timeouts.
    #[must_use]
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connections open (idle, in use or being opened), all hosts together.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.shared.lock().values().map(|host| host.open).sum()
    }

    /// Connections idle in the pool, all hosts together.
    #[must_use]
    pub fn idle_connections(&self) -> usize {
        self.shared
            .lock()
            .values()
            .map(|host| host.idle.len())
            .sum()
    }

    /// `GET url`; see [`request`](Self::request).
    ///
    /// # Errors
    /// As [`request`](Self::request); a string that is not a URI is
    /// [`ClientError::InvalidUrl`].
    pub async fn get(&self, url: &str) -> Result<Response<ClientBody>, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|error| ClientError::InvalidUrl(format!("{url:?}: {error}")))?;
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = uri;
        self.request(request).await
    }

    /// Sends `request`, whose URI is an absolute `http://host[:port]/path` URL (port 80
    /// when none is given), and returns the response once its head has arrived; the
    /// body streams from the connection.
    ///
    /// The `Host` header is set from the URL unless the request has one, and the
    /// request goes out with the path and query only. A connection is taken from the
    /// pool, or opened (name resolution off the worker) when none is idle and the host
    /// has fewer than its bound; otherwise the request waits for one. A reused
    /// connection that turns out to be closed by the server (it timed the connection
    /// out while idle) is replaced once, on a new connection, when the request was not
    /// sent on it, or when it has no body and an idempotent method (`GET`, `HEAD`,
    /// `PUT`, `DELETE`, `OPTIONS`, `TRACE`).
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] or [`ClientError::UnsupportedScheme`] (`https`) for
    /// the URL; [`ClientError::Connect`] when the host does not resolve or refuses
    /// (the message names it); [`ClientError::ConnectTimeout`] and
    /// [`ClientError::Timeout`] past the client's limits; [`ClientError::Http`] when the
    /// server answers with something that is not HTTP/1, or closes before answering.
    pub async fn request<B>(
        &self,
        mut request: Request<B>,
    ) -> Result<Response<ClientBody>, ClientError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let shared = Arc::clone(&self.shared);
        // Everything below is allocated outside the caller's arena: the pool's state,
        // connections, and what hyper keeps of the request while it writes it.
        let exchange = pagekeep_arena::outside_arena(move || {
            let prepared = prepare(&mut request);
            let request = request.map(|body| body.map_err(Into::into).boxed_unsync());
            Box::pin(async move {
                let target = prepared?;
                let limit = shared.config.request_timeout;
                within(
                    limit,
                    ClientError::Timeout,
                    exchange(shared, target, request),
                )
                .await
            })
        });
        OutsideArena(exchange).await
    }
}

/// Waits for a connection to `target` (taking an idle one or opening one).
async fn checkout(shared: &Arc<Shared>, target: &Target) -> Result<Lease, ClientError> {
    let mut closed = Vec::new();
    let checkout = poll_fn(|cx| shared.poll_checkout(&target.key, cx.waker(), &mut closed)).await;
    drop(closed);
    let mut lease = Lease {
        shared: Arc::clone(shared),
        key: target.key.clone(),
        sender: None,
        reused: false,
        settled: false,
    };
    match checkout {
        Checkout::Reuse(sender) => {
            lease.sender = Some(sender);
            lease.reused = true;
        }
        Checkout::Connect => {
            // The lease holds the slot: dropped on failure, it frees it.
            let limit = shared.config.connect_timeout;
            lease.sender = Some(within(limit, ClientError::ConnectTimeout, connect(target)).await?);
        }
    }
    Ok(lease)
}

/// Sends `request` to `target` on a pooled connection, replacing a reused connection
/// found closed once.
async fn exchange(
    shared: Arc<Shared>,
    target: Target,
    mut request: Request<OutboundBody>,
) -> Result<Response<ClientBody>, ClientError> {
    let can_replay = replayable(&request);
    loop {
        let mut lease = checkout(&shared, &target).await?;
        let sender = lease
            .sender
            .as_mut()
            .expect("a checked-out lease has a connection");
        // A connection still busy with the last response's end, or closed meanwhile.
        if let Err(error) = sender.ready().await {
            if lease.reused {
                // Closed while idle: nothing was sent; take another.
                continue;
            }
            return Err(ClientError::Http(error));
        }
        let copy = (lease.reused && can_replay).then(|| head_copy(&request));
        match sender.try_send_request(request).await {
            Ok(response) => return Ok(ClientBody::wrap(response, lease)),
            Err(mut error) => {
                let unsent = error.take_message();
                let replay = lease.reused.then(|| {
                    unsent.or_else(|| {
                        let closed = closed_under_us(error.error());
                        copy.filter(|_| closed)
                    })
                });
                drop(lease);
                match replay.flatten() {
                    Some(again) => request = again,
                    None => return Err(ClientError::Http(error.into_error())),
                }
                // Once: the second attempt is not replayed.
                let lease = checkout(&shared, &target).await?;
                return send_once(lease, request).await;
            }
        }
    }
}

/// Sends `request` on `lease`'s connection, without replay.
async fn send_once(
    mut lease: Lease,
    request: Request<OutboundBody>,
) -> Result<Response<ClientBody>, ClientError> {
    let sender = lease
        .sender
        .as_mut()
        .expect("a checked-out lease has a connection");
    sender.ready().await.map_err(ClientError::Http)?;
    match sender.try_send_request(request).await {
        Ok(response) => Ok(ClientBody::wrap(response, lease)),
        Err(error) => Err(ClientError::Http(error.into_error())),
    }
}

/// The body of a [`Client`] response: hyper's body, which gives its connection back to
/// the pool when read to its end. Dropped before its end (or after an error), it closes
/// the connection instead.
pub struct ClientBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBody")
            .field("body", &self.body)
            .field("holds_connection", &self.lease.is_some())
            .finish()
    }
}

impl ClientBody {
    fn wrap(response: Response<Incoming>, lease: Lease) -> Response<ClientBody> {
        let lease = if response.body().is_end_stream() {
            lease.keep();
            None
        } else {
            Some(lease)
        };
        response.map(|body| ClientBody { body, lease })
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => {
                if let Some(lease) = this.lease.take() {
                    lease.keep();
                }
            }
            Some(Ok(_)) if this.body.is_end_stream() => {
                if let Some(lease) = this.lease.take() {
                    lease.keep();
                }
            }
            Some(Ok(_)) => {}
            // The connection is broken: closed with the lease.
            Some(Err(_)) => drop(this.lease.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
