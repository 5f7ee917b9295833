//! Test servers, a client runtime and raw-socket helpers.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use pagekeep_executor::client::ClientConnection;
use pagekeep_executor::{
    ArenaPool, PoolConfig, RequestBody, Runtime, ServerBuilder, ServerStats, Shutdown,
};
use pagekeep_slab::SlabHeap;

/// The fallback heap of the tests' global allocator: `SlabHeap`, counting the calls
/// (`alloc`, `alloc_zeroed`, `realloc`; frees are not calls the benchmark counts) each
/// thread makes into it, which is every allocation made outside any arena.
#[derive(Debug)]
pub struct CountingFallback {
    heap: SlabHeap,
}

thread_local! {
    /// Calls this thread made into [`CountingFallback`]. A `const` `Cell` with no
    /// destructor: reading and bumping it never allocates.
    static FALLBACK_HEAP_CALLS: Cell<u64> = const { Cell::new(0) };
}

impl CountingFallback {
    pub const fn new() -> Self {
        Self {
            heap: SlabHeap::new(),
        }
    }

    fn count(&self) {
        // Cannot fail (no destructor); ignored rather than unwind from an allocator.
        let _ = FALLBACK_HEAP_CALLS.try_with(|calls| calls.set(calls.get() + 1));
    }
}

/// Calls into the fallback heap the current thread has made so far. A handler that
/// reads it on a one-worker server reads the count of the worker thread that runs its
/// connection and its requests.
#[cfg_attr(not(feature = "tower"), allow(dead_code))] // Used by the tower tests.
pub fn fallback_heap_calls() -> u64 {
    FALLBACK_HEAP_CALLS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to `SlabHeap`, which keeps the
// `GlobalAlloc` promises; the counting touches only a thread-local `Cell` that never
// allocates and never unwinds.
unsafe impl GlobalAlloc for CountingFallback {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: the caller's promises (a non-zero `layout`) are forwarded unchanged.
        unsafe { self.heap.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: as in `alloc`.
        unsafe { self.heap.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_in(&FALLBACK_FREES);
        // SAFETY: the caller promises `ptr` is a live block of `layout` from this
        // allocator, that is, from the `SlabHeap`.
        unsafe { self.heap.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count();
        // SAFETY: the caller's promises (`ptr` a live block of `layout` from the
        // `SlabHeap`, a valid `new_size`) are forwarded unchanged.
        unsafe { self.heap.realloc(ptr, layout, new_size) }
    }
}

thread_local! {
    /// Frees of [`CountingFallback`]'s blocks this thread has made.
    static FALLBACK_FREES: Cell<u64> = const { Cell::new(0) };
    /// Blocks of an arena this thread has freed while in no arena (see
    /// [`CountingRouter`]).
    static ARENA_FREES_OUTSIDE_ARENAS: Cell<u64> = const { Cell::new(0) };
}

/// Adds one to `counter`, a `const` `Cell` with no destructor: never allocates, never
/// unwinds (a failure to reach it is ignored).
fn count_in(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    let _ = counter.try_with(|count| count.set(count.get() + 1));
}

/// Reads `counter` (0 if it cannot be reached), never allocating.
fn read(counter: &'static std::thread::LocalKey<Cell<u64>>) -> u64 {
    counter.try_with(Cell::get).unwrap_or(0)
}

/// The tests' global allocator: the executor's router over [`CountingFallback`], also
/// counting the blocks of an arena each thread frees while in no arena
/// ([`arena_frees_outside_arenas`]): a free made outside any arena (or while the thread
/// panics, when the router routes nothing) that the router did not hand to the
/// fallback heap. Reallocations are not counted.
#[derive(Debug)]
pub struct CountingRouter {
    router: pagekeep_arena::ArenaRouter<CountingFallback>,
}

impl CountingRouter {
    pub const fn new() -> Self {
        Self {
            router: pagekeep_arena::ArenaRouter::new(CountingFallback::new()),
        }
    }
}

/// Blocks of a request arena the current thread has freed so far while in no arena:
/// frees that find their arena by address and count with an atomic, where a block
/// freed inside its request's arena costs one compare and a plain count. A handler that
/// reads it on a one-worker server reads the count of the thread that runs its
/// connection and its requests.
pub fn arena_frees_outside_arenas() -> u64 {
    read(&ARENA_FREES_OUTSIDE_ARENAS)
}

// SAFETY: every call is forwarded unchanged to the router, which keeps the
// `GlobalAlloc` promises; the counting touches only thread-local `Cell`s that never
// allocate and never unwind.
unsafe impl GlobalAlloc for CountingRouter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promises are forwarded unchanged.
        unsafe { self.router.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { self.router.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let outside = !pagekeep_arena::in_arena();
        let fallback_frees = read(&FALLBACK_FREES);
        // SAFETY: the caller's promises (`ptr` a live block of `layout` from this
        // allocator, so from the router) are forwarded unchanged.
        unsafe { self.router.dealloc(ptr, layout) };
        if outside && read(&FALLBACK_FREES) == fallback_frees {
            count_in(&ARENA_FREES_OUTSIDE_ARENAS);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, with a valid `new_size`.
        unsafe { self.router.realloc(ptr, layout, new_size) }
    }
}

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A server running on its own thread; shut down and joined on drop, which then checks
/// that every request arena went back to the pool.
pub struct TestServer {
    pub address: SocketAddr,
    pub shutdown: Shutdown,
    pub stats: ServerStats,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
    pool: Option<(PoolConfig, &'static ArenaPool)>,
}

impl TestServer {
    /// Triggers shutdown and waits for `serve` to return; returns how long that took.
    pub fn stop(mut self) -> Duration {
        let start = Instant::now();
        self.shutdown.trigger();
        self.thread.take().unwrap().join().unwrap().unwrap();
        start.elapsed()
    }

    /// Waits (bounded) until the server holds no connection: every scenario must end
    /// with nothing leaked once its clients are gone.
    pub fn assert_no_connection_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.stats.open_connections() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} connections still open after the clients left",
                self.stats.open_connections()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's pool of request arenas.
    pub fn pool(&self) -> &'static ArenaPool {
        self.pool.expect("a running test server has its pool").1
    }

    /// Waits (bounded) until every arena of the server's pool is free again: none in
    /// use, none quarantined by memory a request left behind.
    pub fn assert_arenas_returned(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let arenas = self.stats.arenas();
            if arenas.free == arenas.arenas {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "request arenas not returned after the scenario: {arenas:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() && !thread::panicking() {
            self.assert_no_connection_left();
        }
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if !thread::panicking() {
            self.assert_arenas_returned();
            // Only a pool known to be whole is reused by the next server.
            if let Some(pool) = self.pool.take() {
                lock(&IDLE_POOLS).push(pool);
            }
        }
    }
}

/// A server on a Unix socket ([`ServerBuilder::bind_unix`]) in a directory of its own,
/// running on its own thread; on drop, shut down and checked as a [`TestServer`] is,
/// and its directory removed.
#[cfg(unix)]
pub struct UnixTestServer {
    pub path: std::path::PathBuf,
    pub shutdown: Shutdown,
    pub stats: ServerStats,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
    pool: Option<(PoolConfig, &'static ArenaPool)>,
    directory: std::path::PathBuf,
}

#[cfg(unix)]
impl UnixTestServer {
    /// Serves `handler` at a fresh socket path, with the default test arenas.
    pub fn start<H: pagekeep_executor::Handler>(builder: ServerBuilder, handler: H) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let directory = std::env::temp_dir().join(format!(
            "pagekeep-unix-server-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("http.sock");
        let arenas = default_arenas();
        let pool = take_pool(arenas);
        let server = builder
            .arena_pool(pool)
            .bind_unix(&path)
            .expect("bind_unix");
        assert_eq!(server.local_path(), Some(path.as_path()));
        let shutdown = server.shutdown_handle();
        let stats = server.stats();
        let thread = thread::spawn(move || server.serve(handler));
        Self {
            path,
            shutdown,
            stats,
            thread: Some(thread),
            pool: Some((arenas, pool)),
            directory,
        }
    }

    /// The server's pool of request arenas.
    pub fn pool(&self) -> &'static ArenaPool {
        self.pool.expect("a running test server has its pool").1
    }

    /// Triggers shutdown and waits for `serve` to return.
    pub fn stop(mut self) {
        self.shutdown.trigger();
        self.thread.take().unwrap().join().unwrap().unwrap();
    }

    /// As [`TestServer::assert_no_connection_left`].
    pub fn assert_no_connection_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.stats.open_connections() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} connections still open after the clients left",
                self.stats.open_connections()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// As [`TestServer::assert_arenas_returned`].
    pub fn assert_arenas_returned(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let arenas = self.stats.arenas();
            if arenas.free == arenas.arenas {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "request arenas not returned after the scenario: {arenas:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(unix)]
impl Drop for UnixTestServer {
    fn drop(&mut self) {
        if self.thread.is_some() && !thread::panicking() {
            self.assert_no_connection_left();
        }
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if !thread::panicking() {
            self.assert_arenas_returned();
            if let Some(pool) = self.pool.take() {
                lock(&IDLE_POOLS).push(pool);
            }
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// Pools of request arenas that no running test server uses. A process can register at
/// most `pagekeep_arena::MAX_POOLS` pools with the router, ever, so test servers share.
static IDLE_POOLS: Mutex<Vec<(PoolConfig, &'static ArenaPool)>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The arena pool of test servers that don't ask for another: 16 arenas of 256 KiB.
pub fn default_arenas() -> PoolConfig {
    PoolConfig::new(16, 256 << 10)
}

/// An idle pool of exactly `config`, or a new one.
fn take_pool(config: PoolConfig) -> &'static ArenaPool {
    let reused = {
        let mut idle = lock(&IDLE_POOLS);
        idle.iter()
            .position(|(idle_config, _)| *idle_config == config)
            .map(|index| idle.swap_remove(index).1)
    };
    reused.unwrap_or_else(|| {
        ArenaPool::new(config)
            .and_then(ArenaPool::into_static)
            .expect("a test arena pool")
    })
}

/// One pool of 8 arenas of 256 KiB, made once, for tests that bind servers of their
/// own (sharing it between servers, or binding several in turn): a process can
/// register only `pagekeep_arena::MAX_POOLS` pools, ever.
pub fn own_servers_pool() -> &'static ArenaPool {
    static POOL: OnceLock<&'static ArenaPool> = OnceLock::new();
    POOL.get_or_init(|| {
        ArenaPool::new(PoolConfig::new(8, 256 << 10))
            .and_then(ArenaPool::into_static)
            .expect("a test arena pool")
    })
}

/// Short test defaults: 2 workers, no signal handling.
pub fn builder() -> ServerBuilder {
    pagekeep_executor::Server::builder()
        .workers(2)
        .handle_signals(false)
        .header_read_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(5))
        .shutdown_deadline(Duration::from_secs(2))
}

pub fn start(builder: ServerBuilder) -> TestServer {
    start_with(builder, routes)
}

pub fn start_with<H: pagekeep_executor::Handler>(builder: ServerBuilder, handler: H) -> TestServer {
    start_with_arenas(builder, default_arenas(), handler)
}

/// Starts `handler` with request arenas from a pool of `arenas`.
pub fn start_with_arenas<H: pagekeep_executor::Handler>(
    builder: ServerBuilder,
    arenas: PoolConfig,
    handler: H,
) -> TestServer {
    let pool = take_pool(arenas);
    let server = builder
        .arena_pool(pool)
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind");
    let address = server.local_addr();
    let shutdown = server.shutdown_handle();
    let stats = server.stats();
    let thread = thread::spawn(move || server.serve(handler));
    TestServer {
        address,
        shutdown,
        stats,
        thread: Some(thread),
        pool: Some((arenas, pool)),
    }
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// A response body that arrives in three frames (so hyper sends it chunked).
struct ThreeChunks(u8);

impl http_body::Body for ThreeChunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = match self.0 {
            0 => "one,",
            1 => "two,",
            2 => "three",
            _ => return std::task::Poll::Ready(None),
        };
        self.0 += 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            frame.as_bytes(),
        )))))
    }
}

fn query_millis(request: &Request<RequestBody>) -> u64 {
    request
        .uri()
        .query()
        .and_then(|query| query.strip_prefix("ms="))
        .and_then(|millis| millis.parse().ok())
        .unwrap_or(0)
}

/// The routes most tests use.
pub async fn routes(request: Request<RequestBody>) -> Response<TestBody> {
    match request.uri().path() {
        "/hello" => text(StatusCode::OK, "hello"),
        "/typed" => {
            // Response headers of its own, and one copied from the request.
            let mut response = text(StatusCode::OK, "typed");
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            if let Some(id) = request.headers().get("x-request-id") {
                headers.insert("x-request-id", id.clone());
            }
            response
        }
        "/echo" => match request.into_body().collect().await {
            Ok(body) => text(StatusCode::OK, body.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                text(StatusCode::PAYLOAD_TOO_LARGE, "body too large")
            }
            Err(_) => text(StatusCode::BAD_REQUEST, "bad body"),
        },
        "/slow" => {
            pagekeep_executor::sleep(Duration::from_millis(query_millis(&request))).await;
            text(StatusCode::OK, "slow")
        }
        "/panic" => panic!("handler panics on purpose"),
        "/big" => text(StatusCode::OK, vec![b'b'; 1 << 20]),
        "/hog" => {
            // Allocates without bound, yielding between allocations (a poll boundary
            // each time), until the server cancels it for going over its budget.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 64 << 10]);
                pagekeep_executor::sleep(Duration::from_millis(1)).await;
            }
        }
        "/chunked" => {
            let body = ThreeChunks(0).map_err(|never| match never {}).boxed();
            Response::new(body)
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A one-worker runtime shared by the tests' clients.
pub fn client_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::builder().workers(1).build().unwrap())
}

pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// GET `path` on a fresh connection with hyper's client on the executor.
pub fn get(address: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let path = path.to_owned();
    client_runtime().block_on(async move {
        let mut connection = ClientConnection::<Empty<Bytes>>::connect(address, CLIENT_TIMEOUT)
            .await
            .unwrap();
        get_on(&mut connection, &path).await
    })
}

/// GETs each of `paths` in turn on one new keep-alive connection (run inside the client
/// runtime).
pub async fn get_all_on_one_connection(
    address: SocketAddr,
    paths: impl IntoIterator<Item = &'static str>,
) -> Vec<(StatusCode, Bytes)> {
    let mut connection = ClientConnection::<Empty<Bytes>>::connect(address, CLIENT_TIMEOUT)
        .await
        .unwrap();
    let mut results = Vec::new();
    for path in paths {
        results.push(get_on(&mut connection, path).await);
    }
    results
}

/// `clients` concurrent connections, each GETting `path` `times` times in turn.
pub fn spawn_clients(
    address: SocketAddr,
    clients: usize,
    path: &'static str,
    times: usize,
) -> Vec<pagekeep_executor::JoinHandle<Vec<(StatusCode, Bytes)>>> {
    (0..clients)
        .map(|_| {
            pagekeep_executor::spawn(get_all_on_one_connection(
                address,
                std::iter::repeat_n(path, times),
            ))
        })
        .collect()
}

/// GET `path` on an open client connection.
pub async fn get_on(
    connection: &mut ClientConnection<Empty<Bytes>>,
    path: &str,
) -> (StatusCode, Bytes) {
    let request = Request::get(path)
        .header("host", "test")
        .body(Empty::new())
        .unwrap();
    let response = connection.send(request, CLIENT_TIMEOUT).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// What [`exchange_on_one_connection`] got back for one request.
#[derive(Debug)]
#[cfg_attr(not(feature = "tower"), allow(dead_code))] // Used by the tower tests.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends each of `requests` in turn on one new keep-alive connection with hyper's client
/// on the executor, reading each response in full.
#[cfg_attr(not(feature = "tower"), allow(dead_code))] // Used by the tower tests.
pub fn exchange_on_one_connection(
    address: SocketAddr,
    requests: Vec<Request<Full<Bytes>>>,
) -> Vec<Answer> {
    client_runtime().block_on(async move {
        let mut connection = ClientConnection::<Full<Bytes>>::connect(address, CLIENT_TIMEOUT)
            .await
            .unwrap();
        let mut answers = Vec::new();
        for request in requests {
            let response = connection.send(request, CLIENT_TIMEOUT).await.unwrap();
            let (head, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            answers.push(Answer {
                status: head.status,
                headers: head.headers,
                body,
            });
        }
        answers
    })
}

/// A `method` request to `path` with `body` (and a JSON content type).
#[cfg_attr(not(feature = "tower"), allow(dead_code))] // Used by the tower tests.
pub fn request(method: http::Method, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test")
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

/// A blocking loopback connection with a read timeout, for raw HTTP.
pub fn raw(address: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
}

/// What a raw read loop ended on.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// `done` returned true.
    Done,
    /// The server closed the connection (EOF or reset).
    Closed,
    /// The time limit passed.
    TimedOut,
}

/// Reads into `received` until `done(received)`, the peer closes, or `limit` passes.
pub fn read_until(
    stream: &mut std::net::TcpStream,
    received: &mut Vec<u8>,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Ended {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    loop {
        if done(received) {
            return Ended::Done;
        }
        if Instant::now() >= deadline {
            return Ended::TimedOut;
        }
        match stream.read(&mut buffer) {
            Ok(0) => return Ended::Closed,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ended::Closed,
        }
    }
}

/// Sends `request` on a fresh raw connection and reads until the server closes (or 5 s).
pub fn raw_exchange(address: SocketAddr, request: &[u8]) -> (String, Ended) {
    let mut stream = raw(address);
    stream.write_all(request).unwrap();
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, Duration::from_secs(5), |_| {
        false
    });
    (String::from_utf8_lossy(&received).into_owned(), ended)
}

/// Sends `GET path`, then `GET /hello` with `connection: close`, pipelined on one raw
/// connection ([`raw_exchange`]), and fails unless the server closes it: the second
/// answer shows that the connection outlived whatever the first did. Returns the text
/// received.
pub fn get_then_hello(address: SocketAddr, path: &str) -> String {
    let requests = format!(
        "GET {path} HTTP/1.1\r\nhost: t\r\n\r\n\
         GET /hello HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    );
    let (text, ended) = raw_exchange(address, requests.as_bytes());
    assert_eq!(ended, Ended::Closed, "{text}");
    text
}

/// Occurrences of `needle` in `haystack`.
pub fn count(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle.as_bytes())
        .count()
}

/// The environment variable that makes this test binary's `child::entry` run a
/// scenario (a server) instead of skipping.
#[cfg(unix)]
pub const CHILD_SCENARIO: &str = "EXECUTOR_TEST_CHILD_SCENARIO";

/// A server scenario running in a child process (this test binary again, running the
/// ignored `child::entry` test): signals, process exits and descriptor limits cannot
/// be tried on the test process itself. Killed on drop if still running. Unix only
/// (`pre_exec`, `kill`).
#[cfg(unix)]
pub struct ChildServer {
    pub process: std::process::Child,
    pub address: SocketAddr,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

#[cfg(unix)]
impl ChildServer {
    /// Starts `scenario` and waits (bounded) for it to say where it listens.
    pub fn start(scenario: &str) -> Self {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let mut command = Command::new(std::env::current_exe().unwrap());
        // SAFETY: between fork and exec the closure only calls `signal`, which is
        // async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                // The child starts with the default actions of the termination signals,
                // as a program started from a terminal does, whatever the test runner
                // inherited (a background job of a script ignores SIGINT).
                for signal in [libc::SIGINT, libc::SIGTERM] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                Ok(())
            })
        };
        let mut process = command
            .args([
                "--exact",
                "child::entry",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SCENARIO, scenario)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("re-run the test binary");
        let mut stdout = std::io::BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        let address = loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the child ended before listening"
            );
            // The test harness may have started the line ("test child::entry ... ").
            if let Some((_, address)) = line.trim().split_once("listening on ") {
                break address.parse().unwrap();
            }
        };
        Self {
            process,
            address,
            stdout,
        }
    }

    /// Waits for the next line of the child's output that contains `prefix` (the
    /// child's scenarios announce what they do before they do it).
    pub fn wait_for_line(&mut self, prefix: &str) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the child ended before printing {prefix:?}"
            );
            if line.contains(prefix) {
                return line.trim().to_owned();
            }
        }
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.process.id()).unwrap();
        // SAFETY: `kill` has no memory-safety preconditions; the pid is our child's.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the child wrote to stderr (call once it has exited).
    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.process.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

#[cfg(unix)]
impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
