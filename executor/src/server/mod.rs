//! [`Server`]: hyper's HTTP/1.1 server on this runtime, with limits and timeouts.

pub(crate) mod body_budget;
mod connection;
mod dispatch;
pub(crate) mod request_scope;
#[cfg(feature = "tower")]
mod service;
mod stats;
#[cfg(feature = "tls")]
mod tls;
pub mod upgrade;

use std::fmt;
use std::future::{Future, poll_fn};
use std::io::{self, Write as _};
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Limited;
use pagekeep_arena::{ArenaPool, PoolConfig};
use pagekeep_mmap::Decommit;

use crate::net::{TcpListener, TcpStream};
#[cfg(unix)]
use crate::net::{UnixListener, UnixStream};
use crate::runtime::{Runtime, block_on_thread};
use crate::shutdown::Shutdown;
use connection::{ConnectionPermit, ConnectionSlot};
use dispatch::Dispatch;
use stats::Counters;
pub use stats::ServerStats;

/// The body a handler receives: hyper's incoming body (its data taken from the server's
/// [`BodyBudget`], if it has one), cut off (with an error) past the server's maximum body
/// size.
pub type RequestBody = Limited<IncomingBody>;

pub use body_budget::{BodyBudget, BodyOverBudget, IncomingBody};

pub use request_scope::ResponseBody;

#[cfg(feature = "tower")]
pub use service::{ServiceBody, ServiceFuture, ServiceHandler};

/// The client's address, in every request's extensions when the server was built with
/// [`ServerBuilder::client_addr`]`(true)`.
///
/// # Examples
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::Full;
///
/// let server = pagekeep_executor::Server::builder()
///     .client_addr(true)
///     .bind("127.0.0.1:8080".parse().unwrap())?;
/// server.serve(|request: http::Request<pagekeep_executor::RequestBody>| async move {
///     let pagekeep_executor::ClientAddr(client) = *request.extensions().get().unwrap();
///     http::Response::new(Full::new(Bytes::from(format!("you are {client}\n"))))
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// A request handler: any `Fn(Request<RequestBody>) -> impl Future<Output =
/// Response<B>>` that can be shared between worker threads.
pub trait Handler: Send + Sync + 'static {
    /// The response body.
    type Body: http_body::Body<Data = Bytes, Error = Self::BodyError> + Send + 'static;
    /// The response body's error.
    type BodyError: Into<Box<dyn std::error::Error + Send + Sync>>;
    /// The future that produces the response.
    type Future: Future<Output = Response<Self::Body>> + Send + 'static;

    /// Starts handling `request`.
    fn call(&self, request: Request<RequestBody>) -> Self::Future;
}

impl<F, Fut, B> Handler for F
where
    F: Fn(Request<RequestBody>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
    type BodyError = B::Error;
    type Future = Fut;

    fn call(&self, request: Request<RequestBody>) -> Fut {
        self(request)
    }
}

/// Limits and timeouts, shared by every connection. `None` is "no limit".
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) header_read_timeout: Option<Duration>,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    /// How long a response may take to write, from the handler's return to its last
    /// byte handed to the socket.
    pub(crate) response_write_timeout: Option<Duration>,
    pub(crate) shutdown_deadline: Option<Duration>,
    pub(crate) max_connections: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_body_bytes: usize,
    /// How long a request waits for a free arena before it gets 503.
    pub(crate) arena_wait: Option<Duration>,
    /// Where requests lease their arenas.
    pub(crate) pool: &'static ArenaPool,
    /// Whether every request carries a [`ClientAddr`] extension.
    pub(crate) client_addr: bool,
    /// Where request bodies' data is held, if bounded.
    pub(crate) body_budget: Option<BodyBudget>,
    /// What the server has done so far; read through [`ServerStats`].
    pub(crate) counters: Arc<Counters>,
    /// Streams an HTTP/2 connection may have open at once.
    #[cfg(feature = "http2")]
    pub(crate) max_concurrent_streams: u32,
    /// Serve over TLS with this configuration.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tls::Tls>,
}

/// The limits and timeouts a builder collects; the pool is made (or taken) at bind.
#[derive(Debug, Clone)]
struct Settings {
    header_read_timeout: Option<Duration>,
    handler_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    response_write_timeout: Option<Duration>,
    shutdown_deadline: Option<Duration>,
    max_connections: usize,
    max_header_bytes: usize,
    max_body_bytes: usize,
    arenas: usize,
    arena_bytes: usize,
    arena_wait: Option<Duration>,
    pool: Option<&'static ArenaPool>,
    client_addr: bool,
    body_budget: Option<BodyBudget>,
    #[cfg(feature = "http2")]
    max_concurrent_streams: u32,
    #[cfg(feature = "tls")]
    tls: Option<tls::Tls>,
}

/// Default number of request arenas.
const DEFAULT_ARENAS: usize = 512;
/// Default request budget (arena capacity).
const DEFAULT_ARENA_BYTES: usize = 1 << 20;

/// Default bound on an HTTP/2 connection's concurrent streams.
#[cfg(feature = "http2")]
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;

/// hyper's smallest read buffer; the header limit cannot go below it.
const MIN_HEADER_BYTES: usize = 8192;

/// Configures a [`Server`]. Every limit has a safe default.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `bind` is called"]
pub struct ServerBuilder {
    config: Settings,
    workers: usize,
    reuse_port: bool,
    handle_signals: bool,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            config: Settings {
                header_read_timeout: Some(Duration::from_secs(10)),
                handler_timeout: Some(Duration::from_secs(30)),
                idle_timeout: Some(Duration::from_secs(60)),
                response_write_timeout: None,
                shutdown_deadline: Some(Duration::from_secs(10)),
                max_connections: 10_000,
                max_header_bytes: 16 * 1024,
                max_body_bytes: 1024 * 1024,
                arenas: DEFAULT_ARENAS,
                arena_bytes: DEFAULT_ARENA_BYTES,
                arena_wait: Some(Duration::from_secs(1)),
                pool: None,
                client_addr: false,
                body_budget: None,
                #[cfg(feature = "http2")]
                max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
                #[cfg(feature = "tls")]
                tls: None,
            },
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            reuse_port: false,
            // SIGINT/SIGTERM on Unix, Ctrl-C on Windows (see `Shutdown::watch_signals`).
            handle_signals: cfg!(any(unix, windows)),
        }
    }
}

impl ServerBuilder {
    /// Worker threads; default one per core.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// One listening socket per worker with `SO_REUSEPORT` (the kernel picks the
    /// socket by a hash of the connection's addresses), or, by default, one socket
    /// shared by all workers, registered with each worker's `Poll` (whichever worker is
    /// free first accepts). Either way each connection is then served by the worker
    /// serving the fewest connections (see the README).
    pub fn reuse_port(mut self, enabled: bool) -> Self {
        self.reuse_port = enabled;
        self
    }

    /// Whether every request carries the client's address as a [`ClientAddr`] extension
    /// (default: no). Off, a request has no extension the server put there; on, each
    /// costs building the extension map in the request's arena (about 5% of the server's
    /// own work per request for a small response), which is why handlers that want the
    /// address ask for it, as axum's `ConnectInfo` does.
    pub fn client_addr(mut self, enabled: bool) -> Self {
        self.config.client_addr = enabled;
        self
    }

    /// Whether SIGINT/SIGTERM (on Windows, Ctrl-C and Ctrl-Break) start a graceful
    /// shutdown (default: yes).
    pub fn handle_signals(mut self, enabled: bool) -> Self {
        self.handle_signals = enabled;
        self
    }

    /// Time a client has to send a request's headers, counted from when the server
    /// starts waiting for them (the connection's start, or the end of the previous
    /// response), so it also bounds keep-alive idleness. Never counts while a handler
    /// runs or a response is being written. Default 10 s.
    ///
    /// Every limit of the builder takes a `Duration` or `None` ("no limit"); a duration
    /// too long to represent (`Duration::MAX`) means about 30 years, in effect none.
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.header_read_timeout = timeout.into();
        self
    }

    /// Time a handler has to produce its response, counted from its first poll that
    /// does not finish (a handler that never yields cannot be interrupted anyway); past
    /// it the handler is dropped and the client gets 503. `None`: no limit. Default 30 s.
    pub fn handler_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.handler_timeout = timeout.into();
        self
    }

    /// A keep-alive connection with no new request for this long is closed; as for
    /// the header read timeout, the wait starts when a response has been written, so a
    /// response in progress is never cut by it. `None`: no limit. Default 60 s.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.idle_timeout = timeout.into();
        self
    }

    /// How long a response may take to write, from the moment the handler returns it
    /// until its last byte is handed to the socket (a streamed body included); past it
    /// the connection is closed. Bounds clients that stop reading. Default: `None`, no
    /// limit (downloads, server-sent events and long polls may take as long as they
    /// take).
    pub fn response_write_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.response_write_timeout = timeout.into();
        self
    }

    /// After shutdown starts, how long in-flight requests get before the runtime drops
    /// them; a worker blocked in a handler that never yields is left behind then (see
    /// [`Server::serve`]). `None`: wait for every connection to end. Default 10 s.
    pub fn shutdown_deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.config.shutdown_deadline = deadline.into();
        self
    }

    /// Connections served at once; more are answered 503 and closed. Default 10 000.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max.max(1);
        self
    }

    /// Largest request head (request line + headers); larger gets 431. At least 8 KiB
    /// (hyper's minimum buffer). Default 16 KiB.
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.config.max_header_bytes = max.max(MIN_HEADER_BYTES);
        self
    }

    /// Holds the data of every request body in `budget` (default: none, no bound but
    /// hyper's own flow control per connection): a handler's body read copies each
    /// piece into the budget, waiting for room when it is full, and while it waits its
    /// connection's socket is not read, so TCP pushes the client back. A chunk goes back
    /// when the handler drops it. Give several servers clones of one budget to bound
    /// them together.
    ///
    /// Handlers should stream their bodies: a read that would take one body's live
    /// chunks past the whole budget fails with [`BodyOverBudget`], and handlers that
    /// each hold part of the budget while waiting for more wait until the handler
    /// timeout cancels them (503), which gives their bytes back. Waiting for room counts
    /// against the handler timeout, not the arena budget: body chunks live outside the
    /// request's arena. See the README's "Request bodies under one budget".
    pub fn body_budget(mut self, budget: impl Into<Option<BodyBudget>>) -> Self {
        self.config.body_budget = budget.into();
        self
    }

    /// Largest request body. A larger declared `content-length` gets 413 without
    /// calling the handler; a chunked body that grows past it makes the handler's body
    /// reads fail. Default 1 MiB.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.config.max_body_bytes = max;
        self
    }

    /// Arenas in the server's pool: how many requests can run their handlers at once
    /// (others wait, see [`arena_wait`](Self::arena_wait)). Each reserves
    /// [`arena_bytes`](Self::arena_bytes) of address space; memory is committed as
    /// requests use it. Default 512.
    pub fn arenas(mut self, count: usize) -> Self {
        self.config.arenas = count.max(1);
        self
    }

    /// Each request's memory budget: the capacity of its arena. A handler whose
    /// allocations go past it is cancelled at its next poll and the client gets 503.
    /// Default 1 MiB.
    pub fn arena_bytes(mut self, bytes: usize) -> Self {
        self.config.arena_bytes = bytes.max(1);
        self
    }

    /// How long a request waits for a free arena, first come first served, before it
    /// is answered 503 without calling the handler. `None`: no limit. Default 1 s.
    pub fn arena_wait(mut self, wait: impl Into<Option<Duration>>) -> Self {
        self.config.arena_wait = wait.into();
        self
    }

    /// Leases request arenas from `pool` (which may be shared with other servers)
    /// instead of a pool of [`arenas`](Self::arenas) x [`arena_bytes`](Self::arena_bytes)
    /// made at bind. The pool must come from [`ArenaPool::into_static`], which
    /// registers it with the router.
    pub fn arena_pool(mut self, pool: &'static ArenaPool) -> Self {
        self.config.pool = Some(pool);
        self
    }

    /// Serves every connection over TLS with `config` (feature `tls`; default: plain
    /// TCP). The handshake runs in the connection's task, outside every request arena,
    /// and must be done within the [header read timeout](Self::header_read_timeout),
    /// counted from the connection's start, or the connection is closed: a client that
    /// connects and sends nothing holds its slot no longer than that. Shutdown abandons
    /// handshakes in progress.
    ///
    /// If `config` names no ALPN protocols, the server offers `h2` (with the `http2`
    /// feature) and `http/1.1`; a list set in `config` is used as it is. Either way the
    /// connection's protocol is then told by its first bytes (an HTTP/2 client starts
    /// with the connection preface), as on a cleartext connection.
    ///
    /// # Examples
    /// ```no_run
    /// // A certificate chain and its key (here a self-signed one, made by rcgen).
    /// let certified = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
    /// let chain = vec![certified.cert.der().clone()];
    /// let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    /// let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key);
    /// let tls = rustls::ServerConfig::builder()
    ///     .with_no_client_auth()
    ///     .with_single_cert(chain, key)
    ///     .unwrap();
    /// let server = pagekeep_executor::Server::builder()
    ///     .tls(tls)
    ///     .bind("127.0.0.1:8443".parse().unwrap())?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: rustls::ServerConfig) -> Self {
        self.config.tls = Some(tls::Tls::new(config));
        self
    }

    /// Streams an HTTP/2 connection may have open at once (feature `http2`), announced
    /// to the client in the server's SETTINGS; a client that opens more gets them
    /// refused (`RST_STREAM` with `REFUSED_STREAM`). Each open stream whose handler runs
    /// holds an arena of the server's pool, so the arenas bound the handlers running at
    /// once across all connections, as for HTTP/1.1 (the rest wait up to the
    /// [arena wait](Self::arena_wait)). At least 1; default 100.
    #[cfg(feature = "http2")]
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.config.max_concurrent_streams = max.max(1);
        self
    }

    /// Binds the listening socket(s) and starts the workers.
    ///
    /// The first bind in a process wraps the panic hook so that it runs outside any
    /// request arena: reporting a handler's panic (a backtrace can take megabytes)
    /// never counts against the request's budget. Without [`arena_pool`](Self::arena_pool), this makes the server's arena pool and
    /// registers it with the router; a registered pool lives as long as the process,
    /// and at most [`pagekeep_arena::MAX_POOLS`] can be registered, so a process that binds
    /// many servers should share one pool between them.
    ///
    /// # Errors
    /// When binding fails, the runtime cannot start, or the arena pool cannot be made
    /// (its address space reserved) or registered. A failed bind registers no pool, so a
    /// server may retry a taken port for as long as it likes.
    pub fn bind(self, address: SocketAddr) -> io::Result<Server> {
        // Sockets and workers first: a bind that fails (the port is taken, say) must
        // not have made a pool, which stays registered for the life of the process
        // (only `MAX_POOLS` can be), so a server that retries its port would run out.
        let listeners = bind_listeners(address, self.workers, self.reuse_port)?;
        let local_addr = listeners[0].local_addr()?;
        let listeners = listeners.into_iter().map(Listening::Tcp).collect();
        self.start(listeners, Bound::Tcp(local_addr))
    }

    /// Binds a Unix domain socket at `path` (Unix only) and starts the workers: the
    /// server then serves HTTP on that socket exactly as [`bind`](Self::bind)'s serves
    /// it on TCP (every request in its arena, the budget and its 503, the limits and
    /// timeouts, TLS and HTTP/2 with their features, graceful shutdown), its workers
    /// sharing the one socket ([`reuse_port`](Self::reuse_port) does not apply).
    /// Requests carry no [`ClientAddr`] (a Unix socket's client has no IP address),
    /// even with [`client_addr`](Self::client_addr)`(true)`.
    ///
    /// A stale socket file at `path` (a socket nobody accepts on, left by an earlier
    /// run) is removed first, as [`UnixListener::bind_replacing_stale`] does; the
    /// socket file is left when the server ends (the next bind replaces it). Its
    /// permissions are the process's umask's: they decide who may connect.
    ///
    /// # Examples
    /// ```no_run
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    ///
    /// let server = pagekeep_executor::Server::builder().bind_unix("/run/app/http.sock")?;
    /// // curl --unix-socket /run/app/http.sock http://localhost/
    /// server.serve(|_request| async { http::Response::new(Full::new(Bytes::from("hello\n"))) })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`bind`](Self::bind)'s; binding fails (the message naming the path) when a
    /// file other than a stale socket is at `path` ([`io::ErrorKind::AddrInUse`]), or
    /// when `path` is longer than the system's `sun_path` (107 bytes on Linux).
    #[cfg(unix)]
    pub fn bind_unix(self, path: impl AsRef<Path>) -> io::Result<Server> {
        let path = path.as_ref();
        let first = unix_listening_socket(path)?;
        let mut listeners = Vec::with_capacity(self.workers);
        for _ in 1..self.workers {
            listeners.push(Listening::Unix(first.try_clone()?));
        }
        listeners.insert(0, Listening::Unix(first));
        self.start(listeners, Bound::Unix(path.to_owned()))
            .inspect_err(|_| {
                // The file this bind made goes with the server that failed to start.
                let _ = std::fs::remove_file(path);
            })
    }

    /// Starts the workers and makes the pool (unless one was given) for `listeners`.
    fn start(self, listeners: Vec<Listening>, bound: Bound) -> io::Result<Server> {
        let settings = self.config;
        let runtime = Runtime::builder().workers(self.workers).build()?;
        let pool = match settings.pool {
            Some(pool) => pool,
            // Pages a request used above the warm watermark go back to the OS at once
            // (`MADV_DONTNEED`): a request that used a lot leaves no resident memory
            // behind, and the usual small request never reaches the watermark.
            None => ArenaPool::new(
                PoolConfig::new(settings.arenas, settings.arena_bytes).decommit(Decommit::Zero),
            )
            .and_then(ArenaPool::into_static)
            .map_err(|error| io::Error::other(format!("request arena pool: {error}")))?,
        };
        request_scope::report_panics_outside_arenas();
        let config = Config {
            header_read_timeout: settings.header_read_timeout,
            handler_timeout: settings.handler_timeout,
            idle_timeout: settings.idle_timeout,
            response_write_timeout: settings.response_write_timeout,
            shutdown_deadline: settings.shutdown_deadline,
            max_connections: settings.max_connections,
            max_header_bytes: settings.max_header_bytes,
            max_body_bytes: settings.max_body_bytes,
            arena_wait: settings.arena_wait,
            pool,
            client_addr: settings.client_addr,
            body_budget: settings.body_budget,
            counters: Arc::default(),
            #[cfg(feature = "http2")]
            max_concurrent_streams: settings.max_concurrent_streams,
            #[cfg(feature = "tls")]
            tls: settings.tls,
        };
        Ok(Server {
            runtime,
            listeners,
            bound,
            config: Arc::new(config),
            shutdown: Shutdown::new(),
            handle_signals: self.handle_signals,
        })
    }
}

fn listening_socket(address: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Neither on Windows: there `SO_REUSEADDR` lets another socket bind the port while
    // this one listens (the port could be stolen), and there is no `SO_REUSEPORT`.
    #[cfg(unix)]
    {
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
    }
    #[cfg(windows)]
    let _ = reuse_port;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A listening Unix domain socket at `path` (a stale socket file there removed first),
/// non-blocking, with the TCP listeners' backlog.
#[cfg(unix)]
fn unix_listening_socket(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use crate::net::unix::{remove_stale_socket, with_path};
    use socket2::{Domain, SockAddr, Socket, Type};
    remove_stale_socket(path)?;
    let address = SockAddr::unix(path).map_err(|error| with_path(error, "bind", path))?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket
        .bind(&address)
        .map_err(|error| with_path(error, "bind", path))?;
    let listening = socket
        .listen(1024)
        .and_then(|()| socket.set_nonblocking(true));
    if let Err(error) = listening {
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    Ok(std::os::unix::net::UnixListener::from(
        std::os::fd::OwnedFd::from(socket),
    ))
}

fn bind_listeners(
    address: SocketAddr,
    workers: usize,
    reuse_port: bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    // Windows has no `SO_REUSEPORT`: its workers share one socket, as documented.
    let reuse_port = reuse_port && cfg!(unix);
    let first = listening_socket(address, reuse_port)?;
    // Port 0 picks a port once; the other sockets join that port.
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        let next = if reuse_port {
            listening_socket(bound, true)?
        } else {
            listeners[0].try_clone()?
        };
        listeners.push(next);
    }
    Ok(listeners)
}

/// An HTTP/1.1 server: bound sockets and running workers, waiting for a handler.
///
/// # Examples
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::Full;
///
/// let server = pagekeep_executor::Server::builder().bind("127.0.0.1:8080".parse().unwrap())?;
/// println!("listening on http://{}", server.local_addr());
/// server.serve(|_request| async { http::Response::new(Full::new(Bytes::from("hello\n"))) })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server {
    runtime: Runtime,
    listeners: Vec<Listening>,
    bound: Bound,
    config: Arc<Config>,
    shutdown: Shutdown,
    handle_signals: bool,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("bound", &self.bound)
            .field("workers", &self.runtime.worker_count())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long the workers get to stop after the shutdown deadline before `serve` leaves
/// a blocked one behind.
const STOP_GRACE: Duration = Duration::from_secs(1);

const REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

impl Server {
    /// A builder with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Where the server listens (the real port when bound to port 0).
    ///
    /// # Panics
    /// On a server bound to a Unix socket ([`ServerBuilder::bind_unix`]), which has no
    /// IP address: see [`local_path`](Self::local_path).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.bound {
            Bound::Tcp(address) => *address,
            #[cfg(unix)]
            Bound::Unix(path) => panic!(
                "Server::local_addr: the server listens on the Unix socket {}, not on TCP",
                path.display()
            ),
        }
    }

    /// The path of the Unix socket the server listens on
    /// ([`ServerBuilder::bind_unix`]); `None` for a TCP server.
    #[cfg(unix)]
    pub fn local_path(&self) -> Option<&Path> {
        match &self.bound {
            Bound::Tcp(_) => None,
            Bound::Unix(path) => Some(path),
        }
    }

    /// Live counters of this server (open connections, refusals, requests).
    pub fn stats(&self) -> ServerStats {
        ServerStats::new(Arc::clone(&self.config.counters), self.config.pool)
    }

    /// The flag that starts a graceful shutdown when triggered (what SIGINT/SIGTERM do).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves `handler` until shutdown: blocks the calling thread, then stops accepting,
    /// lets in-flight requests finish up to the shutdown deadline, and stops the workers.
    ///
    /// The deadline holds even against a handler that blocks its worker thread: the
    /// workers get one more second to drop what is left, and a worker still stuck then
    /// is left behind (detached) and `serve` returns, so a `main` that returns from it
    /// ends the process. With signal handling on, a second SIGINT/SIGTERM during the
    /// shutdown ends the process at once.
    ///
    /// # Errors
    /// When the signal watcher cannot be installed.
    pub fn serve<H: Handler>(self, handler: H) -> io::Result<()> {
        let Self {
            runtime,
            listeners,
            config,
            shutdown,
            handle_signals,
            ..
        } = self;
        #[cfg(any(unix, windows))]
        let _signals = if handle_signals {
            Some(shutdown.watch_signals()?)
        } else {
            None
        };
        let handler = Arc::new(handler);
        let dispatch = Arc::new(Dispatch::new(runtime.spawner()));
        for (index, listener) in listeners.into_iter().enumerate() {
            let accepting = Accepting {
                worker: index,
                config: Arc::clone(&config),
                handler: Arc::clone(&handler),
                shutdown: shutdown.clone(),
                dispatch: Arc::clone(&dispatch),
            };
            drop(runtime.spawn_on(index, accept_loop(listener, accepting)));
        }
        block_on_thread(shutdown.wait());
        let deadline = config
            .shutdown_deadline
            .map(|deadline| crate::timer::deadline_after(Instant::now(), deadline));
        while config.counters.open.load(Ordering::Acquire) > 0
            && deadline.is_none_or(|deadline| Instant::now() < deadline)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = runtime.shutdown_timeout(STOP_GRACE);
        if left > 0 {
            eprintln!(
                "executor: {left} worker(s) still blocked in a handler {STOP_GRACE:?} after the \
                 shutdown deadline; left behind"
            );
        }
        Ok(())
    }

    /// Serves a tower `Service` (feature `tower`), an `axum::Router` for instance, as
    /// [`serve`](Self::serve) serves a closure: every request's call of the service
    /// (routing, extractors, middleware, the handler, the response body) runs in that
    /// request's arena, under its budget (503 past it), the handler timeout, and 500 on
    /// a panic. Each request calls a clone of `service` once it is ready; a service
    /// error is logged and answered 500. See [`ServiceHandler`].
    ///
    /// # Examples
    /// ```no_run
    /// use axum::{Router, routing::get};
    ///
    /// let app = Router::new().route("/", get(|| async { "hello\n" }));
    /// let server = pagekeep_executor::Server::builder().bind("127.0.0.1:8080".parse().unwrap())?;
    /// server.serve_service(app)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    #[cfg(feature = "tower")]
    pub fn serve_service<S, B>(self, service: S) -> io::Result<()>
    where
        S: tower_service::Service<Request<RequestBody>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.serve(ServiceHandler::new(service))
    }
}

/// What an accept loop needs besides its listener.
struct Accepting<H> {
    /// The runtime's index of the worker the loop runs on.
    worker: usize,
    config: Arc<Config>,
    handler: Arc<H>,
    shutdown: Shutdown,
    dispatch: Arc<Dispatch>,
}

impl<H: Handler> Accepting<H> {
    /// Starts serving `accepted` on the worker [`Dispatch`] picks: registered with that
    /// worker's `Poll` and counted against it until the connection ends.
    fn start(&self, accepted: Accepted, permit: ConnectionPermit) {
        let assignment = self.dispatch.assign(self.worker);
        let worker = assignment.worker();
        let config = Arc::clone(&self.config);
        let handler = Arc::clone(&self.handler);
        let shutdown = self.shutdown.clone();
        let serving = async move {
            let slot = ConnectionSlot {
                _counted: assignment,
                _permit: permit,
            };
            match accepted {
                Accepted::Tcp(stream, peer) => {
                    let stream = match TcpStream::from_mio(stream) {
                        Ok(stream) => stream,
                        Err(error) => {
                            eprintln!("executor: cannot register connection: {error}");
                            return;
                        }
                    };
                    // Responses are written whole; Nagle would only delay them.
                    let _ = stream.set_nodelay(true);
                    serve_stream(stream, slot, Some(peer), config, handler, shutdown).await;
                }
                #[cfg(unix)]
                Accepted::Unix(stream) => {
                    let stream = match UnixStream::from_mio(stream) {
                        Ok(stream) => stream,
                        Err(error) => {
                            eprintln!("executor: cannot register connection: {error}");
                            return;
                        }
                    };
                    serve_stream(stream, slot, None, config, handler, shutdown).await;
                }
            }
        };
        self.dispatch.spawn_on(worker, serving);
    }
}

/// A connected socket the server serves: a TCP or Unix stream. With `tls`, also
/// tokio's I/O traits, which rustls's stream is driven over.
#[cfg(feature = "tls")]
trait Served: connection::Io + tokio::io::AsyncRead + tokio::io::AsyncWrite {}
/// A connected socket the server serves: a TCP or Unix stream.
#[cfg(not(feature = "tls"))]
trait Served: connection::Io {}

impl Served for TcpStream {}
#[cfg(unix)]
impl Served for UnixStream {}

/// Serves a registered connection: over TLS when the server has a TLS configuration
/// (the handshake first), as it is otherwise. `peer` is the client's address, if it
/// has one (a TCP client).
async fn serve_stream<H: Handler, S: Served>(
    stream: S,
    slot: ConnectionSlot,
    peer: Option<SocketAddr>,
    config: Arc<Config>,
    handler: Arc<H>,
    shutdown: Shutdown,
) {
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        if let Some(stream) = tls::handshake(tls, stream, &config, &shutdown).await {
            let stream = hyper_util::rt::TokioIo::new(stream);
            connection::serve(stream, slot, peer, config, handler, shutdown).await;
        }
        return;
    }
    connection::serve(stream, slot, peer, config, handler, shutdown).await;
}

/// Where a server listens.
#[derive(Debug, Clone)]
enum Bound {
    Tcp(SocketAddr),
    #[cfg(unix)]
    Unix(PathBuf),
}

/// A bound listening socket, before its accept loop registers it with its worker.
enum Listening {
    Tcp(std::net::TcpListener),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener),
}

/// A listening socket registered with its accept loop's worker.
enum Registered {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener),
}

impl Registered {
    fn new(listening: Listening) -> io::Result<Self> {
        match listening {
            Listening::Tcp(listener) => TcpListener::from_std(listener).map(Self::Tcp),
            #[cfg(unix)]
            Listening::Unix(listener) => UnixListener::from_std(listener).map(Self::Unix),
        }
    }

    fn poll_accept(&self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<Accepted>> {
        match self {
            Self::Tcp(listener) => listener
                .poll_accept(cx)
                .map_ok(|(stream, peer)| Accepted::Tcp(stream, peer)),
            #[cfg(unix)]
            Self::Unix(listener) => listener
                .poll_accept(cx)
                .map_ok(|(stream, _peer)| Accepted::Unix(stream)),
        }
    }
}

/// An accepted connection, not registered with any worker yet.
enum Accepted {
    Tcp(mio::net::TcpStream, SocketAddr),
    #[cfg(unix)]
    Unix(mio::net::UnixStream),
}

impl Accepted {
    /// Over the connection limit: a best-effort 503 on the fresh (empty) send buffer,
    /// then close. Never registered, so it costs the served ones nothing.
    fn refuse(self) {
        let _ = match self {
            Self::Tcp(mut stream, _) => stream.write(REFUSAL),
            #[cfg(unix)]
            Self::Unix(mut stream) => stream.write(REFUSAL),
        };
    }
}

async fn accept_loop<H: Handler>(listener: Listening, accepting: Accepting<H>) {
    let Accepting {
        config, shutdown, ..
    } = &accepting;
    let listener = match Registered::new(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("executor: cannot register listener: {error}; shutting down");
            shutdown.trigger();
            return;
        }
    };
    let mut stop = shutdown.wait();
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = poll_fn(|cx| {
            if Pin::new(&mut stop).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        })
        .await;
        match accepted {
            // Shutdown: dropping the listener closes it, so new connections are refused.
            None => return,
            Some(Ok(accepted)) => {
                failures.recovered(accepting.worker);
                let counters = &config.counters;
                let Some(permit) = ConnectionPermit::try_acquire(counters, config.max_connections)
                else {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    accepted.refuse();
                    continue;
                };
                accepting.start(accepted, permit);
            }
            Some(Err(error)) if connection_gone_before_accept(&error) => {
                // That connection left the backlog: accept the next one at once. A
                // pause here would let any peer that resets stop the server accepting.
            }
            Some(Err(error)) => {
                // Out of descriptors or similar: the connection stays in the backlog, so
                // back off (longer while it lasts) instead of spinning, and keep serving
                // the connections already open meanwhile.
                let mut pause = crate::sleep(failures.failed(accepting.worker, &error));
                let stopped = poll_fn(|cx| {
                    if Pin::new(&mut stop).poll(cx).is_ready() {
                        return Poll::Ready(true);
                    }
                    Pin::new(&mut pause).poll(cx).map(|()| false)
                })
                .await;
                if stopped {
                    return;
                }
            }
        }
    }
}

/// Whether a failed `accept` concerns only the connection it was taking, which its peer
/// reset (or the stack aborted) while it waited in the backlog; the connection is gone
/// from the backlog, so the next `accept` takes the next one, and a pause would let any
/// peer that resets stop the server accepting. Errors of the listener itself (out of
/// descriptors or buffers) are not among these.
///
/// Windows answers `WSAECONNRESET` then (wine `WSAENOTCONN`). Unix answers
/// `ECONNABORTED`, and Linux also passes the network errors already pending on the new
/// connection (accept(2) lists `ENETDOWN`, `EPROTO`, `ENOPROTOOPT`, `EHOSTDOWN`, `ENONET`,
/// `EHOSTUNREACH`, `EOPNOTSUPP`, `ENETUNREACH`: to be retried at once).
fn connection_gone_before_accept(error: &io::Error) -> bool {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    ) {
        return true;
    }
    #[cfg(target_os = "linux")]
    if let Some(code) = error.raw_os_error() {
        return matches!(
            code,
            libc::ENETDOWN
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        );
    }
    false
}

#[cfg(test)]
mod accept_error_tests {
    use super::connection_gone_before_accept;
    use std::io;

    #[test]
    fn a_connection_aborted_in_the_backlog_is_skipped_not_backed_off() {
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert!(connection_gone_before_accept(&aborted));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(connection_gone_before_accept(&reset));
    }

    #[cfg(unix)]
    #[test]
    fn os_errors_of_the_accepted_connection_are_skipped_and_the_listener_s_are_not() {
        let of = io::Error::from_raw_os_error;
        assert!(connection_gone_before_accept(&of(libc::ECONNABORTED)));
        #[cfg(target_os = "linux")]
        for code in [
            libc::EPROTO,
            libc::ENETUNREACH,
            libc::EHOSTUNREACH,
            libc::ENONET,
        ] {
            assert!(connection_gone_before_accept(&of(code)), "errno {code}");
        }
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(!connection_gone_before_accept(&of(code)), "errno {code}");
        }
    }
}

/// Shortest pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after a failed accept.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long accepts must have worked before a run of failures counts as over.
const ACCEPT_EPISODE_QUIET: Duration = Duration::from_secs(1);

/// One accept loop's run of failed accepts (an episode: from the first failure until
/// accepts have worked, without a failure, for a second; while descriptors are short,
/// each closing connection lets one accept through between failures, which does not
/// end it). An episode is logged once when it starts and once when it ends, with
/// its count, however many accepts fail in it: running out of descriptors under a
/// flood must not flood the log too.
#[derive(Debug, Default)]
struct AcceptFailures {
    /// Failed accepts in the current episode; 0 outside one.
    count: u64,
    /// The pause after the last failure.
    backoff: Duration,
    /// When accepts started working again without a failure since, in an episode.
    working_since: Option<Instant>,
}

impl AcceptFailures {
    /// Counts a failure (logging it if it starts an episode); returns how long to pause.
    fn failed(&mut self, worker: usize, error: &io::Error) -> Duration {
        if self.count == 0 {
            eprintln!(
                "executor: worker {worker}: accept failed: {error}; backing off, \
                 logged again when accepting works"
            );
            self.backoff = ACCEPT_BACKOFF_MIN;
        } else {
            self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
        }
        self.count += 1;
        self.working_since = None;
        self.backoff
    }

    /// An accept worked: ends the episode, if one is running and accepts have worked
    /// long enough, with its count.
    fn recovered(&mut self, worker: usize) {
        if self.count == 0 {
            return;
        }
        let since = *self.working_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= ACCEPT_EPISODE_QUIET {
            eprintln!(
                "executor: worker {worker}: accepting again after {} failed accepts",
                self.count
            );
            self.count = 0;
            self.working_since = None;
        }
    }
}
