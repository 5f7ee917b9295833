//! The per-request wrapper: every call and poll of a user handler goes through
//! [`RequestTask`], which runs it inside the request's own arena.
//!
//! A request's life:
//! 1. [`RequestTask::start`] (when hyper hands over the request): lease an arena from
//!    the server's pool without waiting, and call the handler inside it (calling it
//!    here, not at the first poll, lets the request head go before hyper's next read).
//!    With every arena in use, the request waits in `WaitingForArena` (first come,
//!    first served, through `acquire_async`) for at most the configured arena wait,
//!    then gets 503 without the handler ever being called.
//! 2. Every poll of the handler enters the arena (the router's guard), so all its
//!    global allocations are bump allocations in the arena, and runs under
//!    `catch_unwind`: a panic, in the call or a poll, becomes a 500.
//! 3. After every poll of the handler, pending or finished, the arena's over-budget
//!    flag is read: an allocation that did not fit spilled to the fallback heap and
//!    raised it. The handler future (or the response it just returned) is then dropped
//!    (inside the arena, so destructors run and free into it) and the client gets 503
//!    saying the request exceeded its memory budget. A deadline armed at the first
//!    pending poll cancels a handler that runs too long.
//! 4. The handler's response body ([`ResponseBody`]) keeps the lease and is polled by
//!    the same rules (arena entered, `catch_unwind`, over-budget flag); a body that
//!    panics or goes over budget ends with an error, which cuts the response off.
//! 5. When the body is done (or the handler dropped, or the server answered instead),
//!    the lease is released. Whatever the request allocated and is still alive (frames
//!    not yet written; anything that escaped) keeps the arena quarantined, and the last
//!    free returns it to the pool: no memory is reused while something allocated from
//!    it lives.
//!
//! hyper's own work for a request (reading and parsing its head) happens in the
//! connection's task, outside the arena: it also allocates connection state there (its
//! read buffer), which inside an arena would pin that arena for as long as the
//! connection lives. The head hyper parsed is copied into the arena before the handler
//! sees it, and the header map it was parsed into goes back to the connection and out
//! with the response, for hyper to parse the next request into ([`own_head`],
//! [`ConnectionActivity::lend_header_map`]): in the steady state a request costs the
//! fallback heap no allocation at all, and an idle connection holds nothing of an arena.
//!
//! Everything the server makes itself (these wrappers, refusal responses, timers, the
//! runtime's queues) is allocated outside the arena.
//!
//! The handler's future is boxed in the request's arena (one bump allocation), so the
//! `RequestTask` hyper moves around (returned by the service, then put in the
//! connection's slot for it) is a few words, not the handler's whole future.
//!
//! # Safety
//! `ResponseBody` structurally pins the handler's body (`BodyKind::Handler`): the body is
//! never moved once the response body is pinned, only dropped in place (`drop_body`:
//! `drop_in_place`, then the state is overwritten). Other states hold no pinned data.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{Entry, OccupiedEntry};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header, uri};
use http_body::Body as _;
use http_body_util::{Full, Limited};
use hyper::body::Incoming;
use pagekeep_arena::{AcquireFuture, PooledArena};

use crate::server::stats::Counters;
use crate::server::{ClientAddr, Config, Handler, IncomingBody, RequestBody};
use crate::sync::lock;
use crate::timer::{Sleep, sleep};

/// What one connection shares with its requests: counters (for the idle watchdog), the
/// server's counters, and the connection's header map.
#[derive(Debug)]
pub(crate) struct ConnectionActivity {
    /// Requests whose response has not been written yet (from hyper's call until the
    /// response body is done and dropped).
    pub(crate) in_flight: AtomicUsize,
    /// Requests whose handler has not finished (a subset of `in_flight`).
    pub(crate) handling: AtomicUsize,
    /// Requests started on this connection.
    pub(crate) started: AtomicU64,
    /// hyper's last write was refused for lack of room in the socket's send buffer:
    /// it holds response bytes the client has not taken yet. Set by the connection's
    /// stream; read by its watchdog.
    pub(crate) write_blocked: AtomicBool,
    /// The client's address, given to every handler (`ClientAddr`) when the server was
    /// built to.
    peer: Option<SocketAddr>,
    /// The server's counters, for what a request's outcome adds to them.
    counters: Arc<Counters>,
    /// The connection's own header map (allocated outside any arena) between the moment
    /// a request's head is copied into its arena and the moment the response goes out
    /// (see [`ConnectionActivity::lend_header_map`]). On an HTTP/1.1 connection only the
    /// connection's task touches it, so the lock is never contended; an HTTP/2
    /// connection's streams, each in a task of its own, take turns.
    header_map: Mutex<Option<HeaderMap>>,
    /// The connection is HTTP/2: its requests run in tasks of their own, and the end of
    /// one wakes the connection's task ([`ConnectionActivity::watch`]).
    #[cfg(feature = "http2")]
    multiplexed: AtomicBool,
    /// The connection task's waker, on an HTTP/2 connection.
    #[cfg(feature = "http2")]
    watcher: Mutex<Option<std::task::Waker>>,
    /// The URI of the connection's first request in origin form with a path other than
    /// `/`, copied outside any arena when that request came (see
    /// [`ConnectionActivity::share_path`]).
    kept_path: OnceLock<Uri>,
}

impl ConnectionActivity {
    pub(crate) fn new(counters: Arc<Counters>, peer: Option<SocketAddr>) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            handling: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            peer,
            counters,
            header_map: Mutex::new(None),
            kept_path: OnceLock::new(),
            #[cfg(feature = "http2")]
            multiplexed: AtomicBool::new(false),
            #[cfg(feature = "http2")]
            watcher: Mutex::new(None),
        }
    }

    /// Notes the connection task's `waker`, on an HTTP/2 connection, for the requests
    /// whose end changes what the connection's timers measure.
    ///
    /// An HTTP/1.1 connection polls its request in its own task and sees every change
    /// as it happens. An HTTP/2 stream's request runs in a task of its own, which may
    /// finish after the connection task's last poll: without a wake-up, the connection
    /// would go on believing a request is in flight, and its idle timeout would never
    /// start.
    #[cfg(feature = "http2")]
    pub(crate) fn watch(&self, waker: &std::task::Waker) {
        if !self.multiplexed.load(Ordering::Relaxed) {
            return;
        }
        let mut watcher = lock(&self.watcher);
        if !watcher.as_ref().is_some_and(|kept| kept.will_wake(waker)) {
            *watcher = Some(waker.clone());
        }
    }

    /// Notes that the connection speaks HTTP/2 (its first bytes written were not an
    /// HTTP/1 response head: hyper's HTTP/2 server writes its SETTINGS first), before
    /// any request came.
    #[cfg(feature = "http2")]
    pub(crate) fn note_http2(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
    }

    /// Whether the connection is known to speak HTTP/2.
    #[cfg(feature = "http2")]
    pub(crate) fn is_http2(&self) -> bool {
        self.multiplexed.load(Ordering::Relaxed)
    }

    /// Wakes the connection's task on an HTTP/2 connection (see [`Self::watch`]).
    #[cfg(feature = "http2")]
    fn wake_watcher(&self) {
        if self.multiplexed.load(Ordering::Relaxed)
            && let Some(waker) = lock(&self.watcher).as_ref()
        {
            waker.wake_by_ref();
        }
    }

    /// An owned `uri` (origin form: a path and query, nothing else) that shares the
    /// connection's kept copy, made by the first request for such a path; `None` when
    /// the connection kept another path.
    ///
    /// A client on a keep-alive connection usually asks for the same path again and
    /// again (a load generator always does): copying and parsing it again for every
    /// request cost about 2.6% of the server's instructions per small request (callgrind,
    /// wrk client), where sharing the kept copy is a comparison and a reference count.
    /// The copy is made outside any arena (connection state, it never pins one) and
    /// never replaced, so after a connection's first request its requests still make no
    /// call into the fallback heap, whatever the paths; a request for another path
    /// gets a copy in its arena (see [`own_uri`]).
    ///
    /// Only a path of at most [`KEPT_PATH_BYTES`] is kept: the copy lives as long as the
    /// connection and no budget counts it, so a long one is copied into each request's
    /// arena (and charged to it) instead.
    fn share_path(&self, uri: &Uri) -> Option<Uri> {
        let path = uri.path_and_query()?;
        if let Some(kept) = self.kept_path.get() {
            return (kept.path_and_query() == Some(path)).then(|| kept.clone());
        }
        if path.as_str().len() > KEPT_PATH_BYTES {
            return None;
        }
        let copy = pagekeep_arena::outside_arena(|| {
            // An owner's reference count: sharing the copy never allocates.
            Uri::from_maybe_shared(Bytes::from_owner(path.as_str().to_owned())).ok()
        })?;
        Some(self.kept_path.get_or_init(|| copy).clone())
    }

    /// Keeps `map`, the header map hyper parsed a request into, emptied, for the
    /// connection's next response; a map grown past [`KEPT_HEADER_CAPACITY`] by an
    /// unusually large head is freed instead, so an idle connection stays small.
    fn keep_header_map(&self, mut map: HeaderMap) {
        if map.capacity() > KEPT_HEADER_CAPACITY {
            return;
        }
        map.clear();
        *lock(&self.header_map) = Some(map);
    }

    /// Puts the connection's header map, holding `response`'s headers, into `response`.
    ///
    /// hyper keeps the header map of the response it has just written and parses the
    /// connection's next request into it. A map the handler built lives in the
    /// request's arena: kept by an idle keep-alive connection, it would pin that arena
    /// (quarantined, not reusable) until the next request. So every response leaves with
    /// the connection's own map, and the map cycles, allocation-free in the steady state:
    /// hyper parses a request into it, [`own_head`] copies the head into the request's
    /// arena and hands the map back here, the response carries it to hyper.
    ///
    /// Called outside any arena: if the connection has no map yet, or this response has
    /// more headers than it holds, it grows on the fallback heap, as connection state.
    ///
    /// Room is reserved for the response's names, not its values: many values of one
    /// name (30,000 `set-cookie` lines) take one slot each in a map of any size, while
    /// slots for 30,000 names are more than a `HeaderMap` can have. A response whose
    /// names alone do not fit keeps the handler's map.
    ///
    /// The map `response` held, emptied, is freed inside `lease`'s arena, the request's
    /// (none: where the caller is, outside any arena, for a response the server made):
    /// there each of its blocks is freed with a compare and a plain count, where a
    /// block of the arena freed outside it is found by address and counted with an
    /// atomic, and the lease's release then takes an atomic too. Dropping an emptied
    /// `HeaderMap` runs no user code and allocates nothing.
    fn lend_header_map(&self, response: &mut HeaderMap, lease: Option<&PooledArena<'static>>) {
        let mut map = lock(&self.header_map).take().unwrap_or_default();
        if map.try_reserve(response.keys_len()).is_err() {
            *lock(&self.header_map) = Some(map);
            return;
        }
        // Each name is moved into the map, never cloned: a name the handler made (a
        // custom name, `x-served-by`) is a `Bytes` in the request's arena, and its first
        // clone would allocate the shared handle of that `Bytes`, here, on the fallback
        // heap (one call for every response that carries such a name).
        let mut entry: Option<OccupiedEntry<'_, HeaderValue>> = None;
        for (next, value) in response.drain() {
            // `drain` names a header once, before the first of its values; the
            // values of one name follow it.
            match (next, &mut entry) {
                (Some(name), _) => {
                    entry = Some(match map.entry(name) {
                        Entry::Vacant(vacant) => vacant.insert_entry(value),
                        Entry::Occupied(mut occupied) => {
                            occupied.append(value);
                            occupied
                        }
                    });
                }
                (None, Some(occupied)) => occupied.append(value),
                // Not reached: `drain` names a header before its first value.
                (None, None) => {}
            }
        }
        // Assigned in place, the handler's map dropped in its arena (a move out and
        // back, to drop it there, cost about 35 instructions a request more, callgrind).
        in_lease(lease, || *response = map);
    }
}

/// The longest path (with its query) a connection keeps a copy of, outside any arena,
/// for its later requests (see [`ConnectionActivity::share_path`]).
const KEPT_PATH_BYTES: usize = 256;

/// The most headers a connection's kept header map holds room for (about 6 KiB); a
/// larger one is not kept between requests.
const KEPT_HEADER_CAPACITY: usize = 64;

/// Copies `request`'s head into the current arena, leaving nothing that points into
/// hyper's buffers, and gives the header map hyper parsed it into back to `activity`.
///
/// hyper parses a request without copying: its header values and URI are slices of the
/// connection's read buffer. A handler holding them keeps that buffer shared, so hyper's
/// next read cannot reuse it and allocates a new one (and its header map) on the
/// fallback heap, every request. Copied into the arena (a few bump allocations), the
/// head belongs to the request alone and the connection's buffers are reused.
///
/// Custom header names are an exception: hyper has already copied each into an
/// allocation of its own while parsing (outside the arena); they are shared, not copied.
fn own_head<B>(request: Request<B>, activity: &ConnectionActivity) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    // A clone keeps the parsed map's layout (no name is hashed again); its values still
    // share hyper's buffer until each is replaced by a copy of its own.
    let mut headers = parts.headers.clone();
    for value in headers.values_mut() {
        *value = own_value(value);
    }
    // Swapped in place: taking the parsed map out first would build an empty map to
    // leave behind and drop it again (about 70 instructions a request, callgrind).
    let parsed = std::mem::replace(&mut parts.headers, headers);
    parts.uri = own_uri(&parts.uri, activity);
    activity.keep_header_map(parsed);
    Request::from_parts(parts, body)
}

/// A copy of `value` in its own (arena) allocation.
///
/// The bytes come from a `HeaderValue`, so they are valid as one: they are not checked
/// again (a byte-by-byte scan that cost about as much as the copy).
fn own_value(value: &HeaderValue) -> HeaderValue {
    let bytes = Bytes::copy_from_slice(value.as_bytes());
    // SAFETY: `from_maybe_shared_unchecked` requires bytes that are valid in a header
    // value; these are a copy of the bytes of `value`, a `HeaderValue`, so they are.
    let mut copy = unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) };
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// A copy of `uri` that shares nothing with hyper's buffers: `/` is static, a path the
/// connection kept is shared with it ([`ConnectionActivity::share_path`]), and any other
/// URI is copied into its own (arena) allocations.
fn own_uri(uri: &Uri, activity: &ConnectionActivity) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        // Not `uri == "/"`, which holds for `/?` too (an empty query compares equal).
        if uri.path_and_query().map(uri::PathAndQuery::as_str) == Some("/") {
            return Uri::from_static("/");
        }
        if let Some(shared) = activity.share_path(uri) {
            return shared;
        }
    }
    let copy = |text: &str| Bytes::copy_from_slice(text.as_bytes());
    let mut parts = uri::Parts::default();
    parts.scheme = uri.scheme_str().and_then(|scheme| scheme.parse().ok());
    parts.authority = uri
        .authority()
        .and_then(|authority| uri::Authority::from_maybe_shared(copy(authority.as_str())).ok());
    parts.path_and_query = uri
        .path_and_query()
        .and_then(|path| uri::PathAndQuery::from_maybe_shared(copy(path.as_str())).ok());
    // Cannot fail (the parts come from a valid URI); sharing it is correct, only slower.
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// Marks one request in flight until its response is written (moved from its
/// [`RequestTask`] into its [`ResponseBody`]), and its handler running until
/// [`InFlight::handler_done`].
#[derive(Debug)]
pub(crate) struct InFlight {
    activity: Arc<ConnectionActivity>,
    /// The handler is still counted in `handling`.
    handling: bool,
}

impl InFlight {
    fn new(activity: &Arc<ConnectionActivity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.handling.fetch_add(1, Ordering::Relaxed);
        activity.started.fetch_add(1, Ordering::Relaxed);
        Self {
            activity: Arc::clone(activity),
            handling: true,
        }
    }

    fn counters(&self) -> &Counters {
        &self.activity.counters
    }

    /// The handler has produced the response (or been dropped): from now on the
    /// request is a response being written.
    fn handler_done(&mut self) {
        if std::mem::take(&mut self.handling) {
            let _was = self.activity.handling.fetch_sub(1, Ordering::Relaxed);
            #[cfg(feature = "http2")]
            if _was == 1 {
                self.activity.wake_watcher();
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.handler_done();
        let _was = self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        #[cfg(feature = "http2")]
        if _was == 1 {
            self.activity.wake_watcher();
        }
    }
}

/// A plain-text response with `status` and `body`.
pub(crate) fn plain_response(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// Makes the process's panic hook run outside any request arena (once per process).
///
/// A handler that panics does so inside its arena, and the hook that reports the panic
/// (the default one prints it, and with `RUST_BACKTRACE` resolves a backtrace, which
/// allocates megabytes) would otherwise be charged to the request, spill past the hard
/// cap, and abort the process. The hook in place when the first server binds is kept
/// and called as before, only outside the arena.
pub(crate) fn report_panics_outside_arenas() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            pagekeep_arena::outside_arena(|| report(info));
        }));
    });
}

/// A request that found every arena in use, waiting (bounded) for one.
struct Waiting<H> {
    request: Request<RequestBody>,
    handler: Arc<H>,
    acquire: AcquireFuture<'static>,
    /// Ends the wait; armed when the wait starts (none: wait as long as it takes).
    deadline: Option<Sleep>,
}

enum State<H: Handler> {
    /// Every arena was in use when the request came; boxed, as it is the rare case.
    WaitingForArena(Box<Waiting<H>>),
    /// The handler's future, boxed in the request's arena (allocated there by
    /// [`call_in_arena`], freed there by [`RequestTask::drop_handler`]).
    Running(Pin<Box<H::Future>>),
    /// Answered without the handler (refused up front, or the handler call panicked);
    /// boxed, as it is the rare case (a response head is about 200 bytes, which every
    /// task would otherwise carry and hyper move).
    Answered(Box<Response<Full<Bytes>>>),
    /// The response has been returned.
    Finished,
}

const PANIC_BODY: &str = "internal server error: the request handler panicked\n";
const OVER_BUDGET_BODY: &str =
    "service unavailable: the request exceeded its memory budget and was cancelled\n";
const NO_ARENA_BODY: &str =
    "service unavailable: the server is at its limit of concurrent requests; retry later\n";
const TIMED_OUT_BODY: &str = "service unavailable: the request handler timed out\n";

/// One request's handler, run in its own arena under the server's per-request rules.
/// See the module docs.
pub(crate) struct RequestTask<H: Handler> {
    state: State<H>,
    /// The request's arena while the handler lives; handed to the response body with
    /// the handler's response, or released.
    lease: Option<PooledArena<'static>>,
    /// Cancels the handler when it fires; armed at the handler's first pending poll.
    deadline: Option<Sleep>,
    handler_timeout: Option<Duration>,
    /// Moves into the response body when the response is returned.
    in_flight: Option<InFlight>,
    /// The connection, for the counters (also reachable through `in_flight` until the
    /// response goes).
    activity: Arc<ConnectionActivity>,
}

/// Copies the request's head into `lease`'s arena, gives it the client's address, and
/// calls the handler there, containing a panic; the handler's future is boxed there
/// too.
fn call_in_arena<H: Handler>(
    handler: &H,
    request: Request<RequestBody>,
    lease: &PooledArena<'static>,
    activity: &ConnectionActivity,
) -> State<H> {
    lease.run(|| {
        let counters = &activity.counters;
        let mut request = own_head(request, activity);
        if let Some(peer) = activity.peer {
            request.extensions_mut().insert(ClientAddr(peer));
        }
        match catch_unwind(AssertUnwindSafe(|| Box::pin(handler.call(request)))) {
            Ok(future) => State::Running(future),
            Err(payload) => {
                // The payload is user code too: its destructor may panic.
                crate::sync::discard_panic(payload);
                counters.panics.fetch_add(1, Ordering::Relaxed);
                State::Answered(Box::new(plain_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PANIC_BODY,
                )))
            }
        }
    })
}

/// Drops the extensions of the handler's `response` here, in its arena, containing a
/// panic of their destructors (user code), instead of leaving them to hyper, which
/// drops them once it has written the head, where a panic would take the connection
/// down with the response unsent. The one extension hyper reads from a response, its
/// reason phrase, is kept.
///
/// A destructor that panics ends the map's clearing: the values it had not reached
/// yet, in an order set by their `TypeId`s, are forgotten, not dropped (hashbrown's
/// `clear`), and `http::Extensions` has no way to drop them one at a time. So the
/// reason phrase is taken out of the map before any of the handler's destructors
/// runs: left in it, its box (allocated in the arena when the handler inserted it)
/// was forgotten whenever a panicking extension came first, and kept the arena
/// quarantined for good. Another extension of the handler's that a panicking one
/// comes before is forgotten all the same, as any value is that a panicking
/// destructor leaves behind in a `HashMap` the handler owns.
fn contain_extensions<B>(response: &mut Response<B>, lease: Option<&PooledArena<'static>>) {
    if response.extensions().is_empty() {
        return;
    }
    let mut extensions = std::mem::take(response.extensions_mut());
    // Moved out (its box freed into the arena), before any destructor of the
    // handler's runs; hyper's own type, whose destructor does not panic.
    let reason = extensions.remove::<hyper::ext::ReasonPhrase>();
    // Emptied first: a panic while the map drops its values would leak its table (an
    // allocation in the arena, keeping it quarantined for good), where a panic while
    // it is cleared leaves the table to the map, freed below.
    in_lease(lease, || {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| extensions.clear())) {
            crate::sync::discard_panic(payload);
        }
    });
    drop_contained(extensions, lease);
    if let Some(reason) = reason {
        response.extensions_mut().insert(reason);
    }
}

/// Runs `body` inside the request's arena, if it has one.
fn in_lease<R>(lease: Option<&PooledArena<'static>>, body: impl FnOnce() -> R) -> R {
    match lease {
        Some(lease) => lease.run(body),
        None => body(),
    }
}

/// Drops `value` inside `lease`'s arena (where it was allocated), containing a panic
/// of its destructors (user code).
fn drop_contained<T>(value: T, lease: Option<&PooledArena<'static>>) {
    in_lease(lease, move || {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
            crate::sync::discard_panic(payload);
        }
    });
}

impl<H: Handler> RequestTask<H> {
    /// Leases an arena and calls the handler in it, or starts waiting for one.
    fn start(
        handler: &Arc<H>,
        request: Request<RequestBody>,
        config: &Config,
        in_flight: InFlight,
    ) -> Self {
        let activity = Arc::clone(&in_flight.activity);
        let (state, lease) = match config.pool.try_acquire() {
            Some(lease) => {
                let state = call_in_arena(&**handler, request, &lease, &activity);
                (state, Some(lease))
            }
            None => {
                let waiting = Waiting {
                    request,
                    handler: Arc::clone(handler),
                    acquire: config.pool.acquire_async(),
                    deadline: config.arena_wait.map(sleep),
                };
                (State::WaitingForArena(Box::new(waiting)), None)
            }
        };
        Self {
            state,
            lease,
            deadline: None,
            handler_timeout: config.handler_timeout,
            in_flight: Some(in_flight),
            activity,
        }
    }

    fn answered(response: Response<Full<Bytes>>, in_flight: InFlight) -> Self {
        Self {
            state: State::Answered(Box::new(response)),
            lease: None,
            deadline: None,
            handler_timeout: None,
            activity: Arc::clone(&in_flight.activity),
            in_flight: Some(in_flight),
        }
    }

    fn counters(&self) -> &Counters {
        &self.activity.counters
    }

    /// Drops the handler future (and frees its box) inside the request's arena,
    /// containing a panic from its destructors, and leaves the state `Finished`. The
    /// lease stays.
    fn drop_handler(&mut self) {
        if matches!(self.state, State::Running(_)) {
            let future = std::mem::replace(&mut self.state, State::Finished);
            drop_contained(future, self.lease.as_ref());
        }
    }

    /// Ends the handler and returns `response`: the handler's own (whose body goes on
    /// in the request's arena, under its budget, see [`ResponseBody`]) or one the
    /// server made (the lease is released: what the request still holds keeps the
    /// arena quarantined, and the last free hands it back to the pool). Every response
    /// leaves through here, outside the arena, with the connection's header map
    /// ([`ConnectionActivity::lend_header_map`]).
    fn finish(
        &mut self,
        mut response: Response<BodyKind<H::Body>>,
    ) -> Poll<<Self as Future>::Output> {
        self.drop_handler();
        if matches!(response.body(), BodyKind::Handler(_)) {
            contain_extensions(&mut response, self.lease.as_ref());
        }
        let mut in_flight = self.in_flight.take().expect("a request task finishes once");
        in_flight.handler_done();
        let lease = match response.body() {
            BodyKind::Handler(_) => self.lease.take(),
            BodyKind::Server(_) | BodyKind::Finished => {
                self.lease = None;
                None
            }
        };
        // The handler's map is freed in its arena, before the lease can be released.
        self.activity
            .lend_header_map(response.headers_mut(), lease.as_ref());
        Poll::Ready(Ok(response.map(|body| ResponseBody {
            kind: body,
            lease,
            in_flight,
        })))
    }

    fn refuse(&mut self, status: StatusCode, body: &'static str) -> Poll<<Self as Future>::Output> {
        self.finish(plain_response(status, body).map(BodyKind::Server))
    }

    fn cancel_over_budget(&mut self) -> Poll<<Self as Future>::Output> {
        self.counters().over_budget.fetch_add(1, Ordering::Relaxed);
        self.refuse(StatusCode::SERVICE_UNAVAILABLE, OVER_BUDGET_BODY)
    }

    fn is_over_budget(&self) -> bool {
        self.lease.as_ref().is_some_and(PooledArena::is_over_budget)
    }

    /// Polls the running handler inside its arena and applies the per-request rules.
    fn poll_handler(&mut self, cx: &mut Context<'_>) -> Poll<<Self as Future>::Output> {
        let State::Running(future) = &mut self.state else {
            unreachable!("poll_handler on a task that is not running")
        };
        let future = future.as_mut();
        let outcome = in_lease(self.lease.as_ref(), || {
            catch_unwind(AssertUnwindSafe(|| future.poll(cx)))
        });
        match outcome {
            Ok(Poll::Ready(response)) => {
                if self.is_over_budget() {
                    // Finished in the very poll that went over: over budget all the
                    // same. The response goes, in its arena, and the client gets 503.
                    drop_contained(response, self.lease.as_ref());
                    return self.cancel_over_budget();
                }
                self.finish(response.map(BodyKind::Handler))
            }
            Err(payload) => {
                // Freed in the arena it was allocated in, containing its destructor.
                in_lease(self.lease.as_ref(), || crate::sync::discard_panic(payload));
                self.counters().panics.fetch_add(1, Ordering::Relaxed);
                self.refuse(StatusCode::INTERNAL_SERVER_ERROR, PANIC_BODY)
            }
            Ok(Poll::Pending) => {
                if self.is_over_budget() {
                    return self.cancel_over_budget();
                }
                let Some(timeout) = self.handler_timeout else {
                    return Poll::Pending;
                };
                let deadline = self.deadline.get_or_insert_with(|| sleep(timeout));
                if Pin::new(deadline).poll(cx).is_ready() {
                    self.counters()
                        .handler_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    self.refuse(StatusCode::SERVICE_UNAVAILABLE, TIMED_OUT_BODY)
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<H: Handler> Future for RequestTask<H> {
    type Output = Result<Response<ResponseBody<H::Body>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The response goes with the connection's header map: see `finish`. (Lent here,
        // after the fact, the response was moved once more: about 30 instructions.)
        self.get_mut().poll_response(cx)
    }
}

impl<H: Handler> RequestTask<H> {
    /// The response, by the per-request rules (module docs).
    fn poll_response(&mut self, cx: &mut Context<'_>) -> Poll<<Self as Future>::Output> {
        match &mut self.state {
            State::Running(_) => self.poll_handler(cx),
            State::WaitingForArena(waiting) => {
                if let Poll::Ready(lease) = Pin::new(&mut waiting.acquire).poll(cx) {
                    let State::WaitingForArena(waiting) =
                        std::mem::replace(&mut self.state, State::Finished)
                    else {
                        unreachable!("matched WaitingForArena above")
                    };
                    let Waiting {
                        request, handler, ..
                    } = *waiting;
                    self.state = call_in_arena(&*handler, request, &lease, &self.activity);
                    self.lease = Some(lease);
                    // Poll the new state at once: the handler's first poll, or the 500.
                    return self.poll_response(cx);
                }
                if let Some(deadline) = &mut waiting.deadline
                    && Pin::new(deadline).poll(cx).is_ready()
                {
                    // Dropping the waiting state gives up its place in the queue.
                    self.counters()
                        .arena_waits_timed_out
                        .fetch_add(1, Ordering::Relaxed);
                    self.state = State::Finished;
                    return self.refuse(StatusCode::SERVICE_UNAVAILABLE, NO_ARENA_BODY);
                }
                Poll::Pending
            }
            State::Answered(_) => {
                let State::Answered(response) = std::mem::replace(&mut self.state, State::Finished)
                else {
                    unreachable!("matched Answered above")
                };
                self.finish((*response).map(BodyKind::Server))
            }
            State::Finished => panic!("RequestTask polled after completion"),
        }
    }
}

impl<H: Handler> Drop for RequestTask<H> {
    fn drop(&mut self) {
        // The connection went away mid-request: drop the handler in place, in its arena.
        self.drop_handler();
    }
}

/// What a [`ResponseBody`] holds.
enum BodyKind<B> {
    /// The handler's body; structurally pinned (see [`ResponseBody`]).
    Handler(B),
    /// A short body the server made itself (413, 500, 503).
    Server(Full<Bytes>),
    /// Done, failed or dropped.
    Finished,
}

/// The body the server sends: the handler's own, or a short plain-text body for the
/// responses the server makes itself (413, 500, 503).
///
/// The handler's body is polled exactly as the handler was: inside the request's
/// arena (which it keeps until the body is done), under `catch_unwind`, and against
/// the request's budget. A body that panics or goes over budget is dropped in its
/// arena and ends with an error: the response is cut off and its connection closed
/// (its head is already on its way, so no 500 or 503 can replace it), and the server's
/// counters say why. Until it is dropped the body also marks its request as in flight,
/// so the connection's header and idle timers do not run while a response is still
/// being written.
pub struct ResponseBody<B> {
    /// Structurally pinned in `Handler`: never moved, dropped in place.
    kind: BodyKind<B>,
    /// The request's arena while the handler's body lives.
    lease: Option<PooledArena<'static>>,
    in_flight: InFlight,
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            BodyKind::Handler(_) => "handler",
            BodyKind::Server(_) => "server",
            BodyKind::Finished => "finished",
        };
        f.debug_struct("ResponseBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// Why the server cut a response body off.
#[derive(Debug)]
enum BodyCutOff {
    Panicked,
    OverBudget,
}

impl std::fmt::Display for BodyCutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Panicked => "the response body panicked",
            Self::OverBudget => "the response body exceeded the request's memory budget",
        })
    }
}

impl std::error::Error for BodyCutOff {}

/// The error of a [`ResponseBody`].
type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl<B> ResponseBody<B> {
    /// Drops the handler's body in place inside its arena (containing a panic), then
    /// releases the arena.
    fn drop_body(&mut self) {
        if let BodyKind::Handler(body) = &mut self.kind {
            let body: *mut B = body;
            in_lease(self.lease.as_ref(), || {
                // SAFETY: `body` points to the live body inside `self.kind`, dropped
                // exactly once (a panicking destructor still counts as the drop); the
                // state is then overwritten without dropping it again.
                let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
                    std::ptr::drop_in_place(body)
                }));
                if let Err(payload) = dropped {
                    crate::sync::discard_panic(payload);
                }
            });
            // SAFETY: `self.kind` is valid for writes and its field was dropped above.
            unsafe { std::ptr::write(&mut self.kind, BodyKind::Finished) };
        }
        self.lease = None;
    }

    fn cut_off(
        &mut self,
        why: BodyCutOff,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        let counter = match why {
            BodyCutOff::Panicked => &self.in_flight.counters().panics,
            BodyCutOff::OverBudget => &self.in_flight.counters().over_budget,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.drop_body();
        Poll::Ready(Some(Err(Box::new(why))))
    }
}

impl<B> http_body::Body for ResponseBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        // SAFETY: only `kind`'s `Handler` body is structurally pinned; it is polled in
        // place through `Pin::new_unchecked` and dropped in place by `drop_body`, never
        // moved. No other field is pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let body = match &mut this.kind {
            BodyKind::Handler(body) => body,
            BodyKind::Server(body) => {
                return Pin::new(body)
                    .poll_frame(cx)
                    .map_err(|never| match never {});
            }
            BodyKind::Finished => return Poll::Ready(None),
        };
        // SAFETY: see above; the body stays in place until `drop_body`.
        let body = unsafe { Pin::new_unchecked(body) };
        let outcome = in_lease(this.lease.as_ref(), || {
            catch_unwind(AssertUnwindSafe(|| body.poll_frame(cx)))
        });
        let polled = match outcome {
            Ok(polled) => polled,
            Err(payload) => {
                in_lease(this.lease.as_ref(), || crate::sync::discard_panic(payload));
                return this.cut_off(BodyCutOff::Panicked);
            }
        };
        if this.lease.as_ref().is_some_and(PooledArena::is_over_budget) {
            drop_contained(polled, this.lease.as_ref());
            return this.cut_off(BodyCutOff::OverBudget);
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(error))) => {
                this.drop_body();
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                // Done: the body goes and the arena with it (once the frames sent are
                // freed).
                this.drop_body();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Handler(body) => {
                // A panic here says nothing: poll the body to find out.
                in_lease(self.lease.as_ref(), || {
                    catch_unwind(AssertUnwindSafe(|| body.is_end_stream())).unwrap_or_else(
                        |payload| {
                            crate::sync::discard_panic(payload);
                            false
                        },
                    )
                })
            }
            BodyKind::Server(body) => body.is_end_stream(),
            BodyKind::Finished => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            BodyKind::Handler(body) => in_lease(self.lease.as_ref(), || {
                catch_unwind(AssertUnwindSafe(|| body.size_hint())).unwrap_or_else(|payload| {
                    crate::sync::discard_panic(payload);
                    http_body::SizeHint::default()
                })
            }),
            BodyKind::Server(body) => body.size_hint(),
            BodyKind::Finished => http_body::SizeHint::with_exact(0),
        }
    }
}

impl<B> Drop for ResponseBody<B> {
    fn drop(&mut self) {
        // Written, or the connection went away: the body goes, in its arena.
        self.drop_body();
    }
}

/// The hyper `Service` of one connection: turns each request into a [`RequestTask`].
pub(crate) struct HandlerService<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) config: Arc<Config>,
    pub(crate) activity: Arc<ConnectionActivity>,
}

impl<H: Handler> hyper::service::Service<Request<Incoming>> for HandlerService<H> {
    type Response = Response<ResponseBody<H::Body>>;
    type Error = Infallible;
    type Future = RequestTask<H>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        #[cfg(feature = "http2")]
        if request.version() == http::Version::HTTP_2 {
            self.activity.multiplexed.store(true, Ordering::Relaxed);
        }
        let in_flight = InFlight::new(&self.activity);
        self.config
            .counters
            .requests
            .fetch_add(1, Ordering::Relaxed);
        let max_body = self.config.max_body_bytes;
        // The length the request declares (`Content-Length`), as hyper parsed and
        // checked it for the body: exact for a body of declared length (0 for none),
        // at least 0 for a chunked one. Read from the body, not the header map: a
        // lookup there hashed the name and probed the map (about 50 instructions a
        // request, callgrind).
        let declared_too_large = request.body().size_hint().lower() > max_body as u64;
        if declared_too_large {
            let mut response = plain_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload too large: the request body exceeds the server's limit\n",
            );
            // The unread body would otherwise be drained; close instead.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return RequestTask::answered(response, in_flight);
        }
        let budget = self.config.body_budget.as_ref();
        let request = request.map(|body| Limited::new(IncomingBody::new(body, budget), max_body));
        RequestTask::start(&self.handler, request, &self.config, in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> ConnectionActivity {
        ConnectionActivity::new(Arc::default(), None)
    }

    /// Whether `inner` lies inside `outer`.
    fn within(inner: &[u8], outer: &[u8]) -> bool {
        let outer = outer.as_ptr_range();
        outer.contains(&inner.as_ptr())
    }

    /// The size of the task a handler's requests run in.
    fn task_bytes<H: Handler>(_handler: &H) -> usize {
        std::mem::size_of::<RequestTask<H>>()
    }

    /// The size of a handler's future.
    fn future_bytes<H: Handler>(_handler: &H) -> usize {
        std::mem::size_of::<H::Future>()
    }

    #[test]
    fn the_request_task_stays_small_whatever_the_size_of_the_handler_future() {
        // A handler whose future keeps 4 KiB across an await. hyper moves the task it is
        // given (out of the service's call, into the connection's slot for it): the
        // future must not be part of it.
        let handler = |request: Request<RequestBody>| async move {
            let scratch = [1u8; 4096];
            crate::timer::yield_now().await;
            drop(request);
            Response::new(Full::new(Bytes::copy_from_slice(&scratch[..1])))
        };
        assert!(future_bytes(&handler) > 4096);
        let task = task_bytes(&handler);
        assert!(task <= 160, "a request task of {task} bytes");
    }

    #[test]
    fn the_head_is_copied_and_the_parsed_map_goes_back_to_the_connection() {
        // A "read buffer" the head's parts are slices of, as hyper makes them.
        let buffer = Bytes::from_static(b"/a/b?c=d example.com:8080 v1 v2 secret");
        let slice = |text: &str| {
            let start = buffer
                .windows(text.len())
                .position(|window| window == text.as_bytes())
                .unwrap();
            buffer.slice(start..start + text.len())
        };
        let mut parsed = HeaderMap::with_capacity(8);
        parsed.append(
            "x-multi",
            HeaderValue::from_maybe_shared(slice("v1")).unwrap(),
        );
        parsed.append(
            "x-multi",
            HeaderValue::from_maybe_shared(slice("v2")).unwrap(),
        );
        let mut secret = HeaderValue::from_maybe_shared(slice("secret")).unwrap();
        secret.set_sensitive(true);
        parsed.insert(header::AUTHORIZATION, secret);
        let parsed_capacity = parsed.capacity();
        let mut request = Request::new(());
        *request.headers_mut() = parsed;
        *request.uri_mut() = Uri::from_maybe_shared(slice("/a/b?c=d")).unwrap();

        let activity = activity();
        let owned = own_head(request, &activity);
        assert_eq!(owned.uri(), "/a/b?c=d");
        assert_eq!(owned.uri().query(), Some("c=d"));
        let multi: Vec<_> = owned.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["v1", "v2"]);
        let secret = &owned.headers()[header::AUTHORIZATION];
        assert_eq!(secret, "secret");
        assert!(secret.is_sensitive());
        for value in owned.headers().values() {
            assert!(!within(value.as_bytes(), &buffer), "{value:?} still shared");
        }
        assert!(!within(owned.uri().path().as_bytes(), &buffer));

        // The connection has the parsed map back, empty, its capacity kept.
        let kept = lock(&activity.header_map).take().unwrap();
        assert!(kept.is_empty());
        assert_eq!(kept.capacity(), parsed_capacity);
    }

    #[test]
    fn a_repeated_path_shares_the_connection_copy_and_another_path_is_copied() {
        let buffer = Bytes::from_static(b"/hello /other");
        let request = |range: std::ops::Range<usize>| {
            let mut request = Request::new(());
            *request.uri_mut() = Uri::from_maybe_shared(buffer.slice(range)).unwrap();
            request
        };
        let activity = activity();
        let first = own_head(request(0..6), &activity);
        let second = own_head(request(0..6), &activity);
        assert_eq!(first.uri(), "/hello");
        assert_eq!(second.uri(), "/hello");
        assert!(!within(first.uri().path().as_bytes(), &buffer));
        assert_eq!(
            first.uri().path().as_ptr(),
            second.uri().path().as_ptr(),
            "the kept copy, shared"
        );
        let other = own_head(request(7..13), &activity);
        assert_eq!(other.uri(), "/other");
        assert!(!within(other.uri().path().as_bytes(), &buffer));
        assert_ne!(other.uri().path().as_ptr(), first.uri().path().as_ptr());
        // The first path stays kept.
        let again = own_head(request(0..6), &activity);
        assert_eq!(again.uri().path().as_ptr(), first.uri().path().as_ptr());
    }

    #[test]
    fn a_long_path_is_not_kept_but_copied_into_each_request() {
        let long = format!("/{}", "x".repeat(KEPT_PATH_BYTES));
        let activity = activity();
        let request = || {
            let mut request = Request::new(());
            *request.uri_mut() = long.parse().unwrap();
            request
        };
        let first = own_head(request(), &activity);
        let second = own_head(request(), &activity);
        assert_eq!(first.uri().path(), long);
        assert_eq!(second.uri().path(), long);
        assert!(activity.kept_path.get().is_none(), "nothing kept");
        assert_ne!(first.uri().path().as_ptr(), second.uri().path().as_ptr());
        // A short path later on the same connection is kept.
        let mut short = Request::new(());
        *short.uri_mut() = Uri::from_static("/short");
        own_head(short, &activity);
        assert_eq!(activity.kept_path.get().unwrap(), "/short");
    }

    #[test]
    fn every_form_of_uri_survives_the_copy() {
        let activity = activity();
        for text in [
            "/",
            "/?",
            "/?x",
            "/plain",
            "/q?x=1&y=%20",
            "*",
            "http://example.com/path?q",
            "https://example.com:8443/",
            "custom+scheme://user@host:1/p",
            "example.com:443",
        ] {
            let mut request = Request::new(());
            *request.uri_mut() = text.parse().unwrap();
            let before = request.uri().clone();
            let owned = own_head(request, &activity);
            assert_eq!(owned.uri(), &before, "{text}");
            assert_eq!(owned.uri().to_string(), before.to_string(), "{text}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "30,000 header values take minutes under miri")]
    fn a_response_with_more_values_than_a_map_has_slots_keeps_them_all() {
        let activity = activity();
        activity.keep_header_map(HeaderMap::with_capacity(16));
        // 30,000 values of one name: more than `reserve` could make room for as slots.
        let mut response = HeaderMap::new();
        for index in 0..30_000 {
            response.append(
                header::SET_COOKIE,
                HeaderValue::from_str(&format!("c{index}=1")).unwrap(),
            );
        }
        activity.lend_header_map(&mut response, None);
        assert_eq!(response.len(), 30_000);
        assert_eq!(response.keys_len(), 1);
        let last = response
            .get_all(header::SET_COOKIE)
            .iter()
            .next_back()
            .unwrap();
        assert_eq!(last, "c29999=1");
    }

    #[test]
    fn a_response_leaves_with_the_connection_map_and_all_its_headers() {
        let activity = activity();
        let mut connection_map = HeaderMap::with_capacity(16);
        connection_map.insert("x-stale", HeaderValue::from_static("gone"));
        activity.keep_header_map(connection_map);
        let connection_capacity = lock(&activity.header_map).as_ref().unwrap().capacity();

        let mut response = HeaderMap::new();
        response.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        response.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        activity.lend_header_map(&mut response, None);

        assert_eq!(
            response.capacity(),
            connection_capacity,
            "the connection's map"
        );
        assert_eq!(response.len(), 3);
        assert_eq!(response[header::CONTENT_TYPE], "text/plain");
        let cookies: Vec<_> = response.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(!response.contains_key("x-stale"));
        assert!(lock(&activity.header_map).is_none(), "lent out");

        // A map grown by a large head is not kept.
        let mut large = HeaderMap::new();
        for index in 0..100 {
            large.insert(
                header::HeaderName::from_bytes(format!("x-{index}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        activity.keep_header_map(large);
        assert!(lock(&activity.header_map).is_none(), "too large to keep");

        // With no map kept (the first response), one is made.
        let mut response = HeaderMap::new();
        response.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        activity.lend_header_map(&mut response, None);
        assert_eq!(response.len(), 1);
    }
}
