//! One accepted connection: hyper's HTTP/1.1 server state machine, its watchdog (the
//! header-read and idle keep-alive timeouts while it waits for a request, the response
//! write timeout while it writes one), and the graceful-shutdown hook.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[cfg(feature = "http2")]
use crate::hyper_rt::HyperExecutor;
use crate::hyper_rt::HyperTimer;
use crate::server::dispatch::Assignment;
use crate::server::request_scope::{ConnectionActivity, HandlerService};
use crate::server::stats::Counters;
use crate::server::{Config, Handler};
use crate::shutdown::Shutdown;
use crate::timer::{Sleep, deadline_after, sleep_until};

/// A slot under the connection limit, given back on drop.
#[derive(Debug)]
pub(crate) struct ConnectionPermit(Arc<Counters>);

impl ConnectionPermit {
    /// Takes a slot if fewer than `max` connections are open.
    pub(crate) fn try_acquire(counters: &Arc<Counters>, max: usize) -> Option<Self> {
        let open = &counters.open;
        let mut current = open.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return None;
            }
            match open.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    return Some(Self(Arc::clone(counters)));
                }
                Err(actual) => current = actual,
            }
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an open connection holds until its socket is dropped: its worker's count and
/// its slot under `max_connections`. The socket carries it (in [`WatchedStream`]), so
/// a connection a handler upgraded keeps both for as long as the upgraded socket
/// lives, whichever task holds it.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    /// Dropped first: the worker's count goes down before the open connections do, so
    /// a server seen with none open has settled its counts.
    pub(crate) _counted: Assignment,
    pub(crate) _permit: ConnectionPermit,
}

/// What hyper reads requests from and writes responses to: the socket, or a TLS
/// stream over it.
pub(crate) trait Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static {}

impl<S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static> Io for S {}

/// Serves `stream` until the client leaves, an error or timeout ends it, it stays idle
/// past the idle timeout, shutdown completes it, or a handler upgrades it (the socket
/// then belongs to whoever awaits `hyper::upgrade::on`, and its slot under
/// `max_connections` is given back).
///
/// Without the `http2` feature the connection speaks HTTP/1.1. With it, hyper-util's
/// server reads the client's first bytes: the HTTP/2 connection preface makes it an
/// HTTP/2 connection (h2c with prior knowledge, or h2 after ALPN over TLS), anything
/// else HTTP/1.1. That read is bounded by the header read timeout, as a request head
/// is.
///
/// hyper is polled outside any arena: what it allocates while reading and parsing
/// (its buffers, the request head, HTTP/2's streams and frames) belongs to the
/// connection, not to a request. Each request's (each stream's) handler runs in an
/// arena of its own (`request_scope`).
pub(crate) async fn serve<H: Handler, S: Io>(
    stream: S,
    slot: ConnectionSlot,
    peer: Option<SocketAddr>,
    config: Arc<Config>,
    handler: Arc<H>,
    shutdown: Shutdown,
) {
    let activity = Arc::new(ConnectionActivity::new(
        Arc::clone(&config.counters),
        peer.filter(|_| config.client_addr),
    ));
    let service = HandlerService {
        handler,
        config: Arc::clone(&config),
        activity: Arc::clone(&activity),
    };
    let stream = WatchedStream {
        stream,
        activity: Arc::clone(&activity),
        _slot: slot,
        #[cfg(feature = "http2")]
        written: false,
    };
    #[cfg(not(feature = "http2"))]
    {
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The header-read timeout is kept below rather than by hyper, whose timer would
        // allocate a fresh `Sleep` for every request.
        builder
            .timer(HyperTimer)
            .header_read_timeout(None)
            .max_buf_size(config.max_header_bytes)
            .keep_alive(true);
        // Upgrades on: a handler that answers 101 Switching Protocols (or 2xx to
        // CONNECT) gets the socket through `hyper::upgrade::on`, and this task ends once
        // hyper has handed it over (the README's "Upgrades and WebSocket").
        let connection = pin!(builder.serve_connection(stream, service).with_upgrades());
        watch(
            connection,
            |connection| connection.graceful_shutdown(),
            &activity,
            &config,
            &shutdown,
        )
        .await;
    }
    #[cfg(feature = "http2")]
    {
        let mut builder = hyper_util::server::conn::auto::Builder::new(HyperExecutor);
        // As above: the header-read timeout is the watchdog's; upgrades are on.
        builder
            .http1()
            .timer(HyperTimer)
            .header_read_timeout(None)
            .max_buf_size(config.max_header_bytes)
            .keep_alive(true);
        // Each stream's request is handed to `HandlerService` in this task; its
        // `RequestTask` and response body then run in a task of their own on this
        // runtime (`HyperExecutor`), still each in the request's arena.
        builder
            .http2()
            .timer(HyperTimer)
            .max_concurrent_streams(config.max_concurrent_streams)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
        let connection = pin!(builder.serve_connection_with_upgrades(stream, service));
        watch(
            connection,
            |connection| connection.graceful_shutdown(),
            &activity,
            &config,
            &shutdown,
        )
        .await;
    }
}

/// Drives `connection` to its end under the connection's timers, starting its graceful
/// shutdown (`graceful`) when the server's shutdown starts, or, on an HTTP/2
/// connection, when the header read or idle timeout expires (then bounded by
/// `CLOSE_GRACE`); an HTTP/1.1 connection's timeouts, and a response write timeout,
/// drop the connection at once.
async fn watch<C: Future>(
    mut connection: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    activity: &ConnectionActivity,
    config: &Config,
    shutdown: &Shutdown,
) {
    let mut shutdown_wait = shutdown.wait();
    // Whether the connection's graceful shutdown has started (for the server's
    // shutdown, or for a timeout in the waiting phase).
    let mut shutting_down = false;
    // After a timeout on an HTTP/2 connection: how long its graceful close may take.
    let mut closing: Option<Sleep> = None;
    let mut watchdog = Watchdog::new();
    // Waiting for a request head: the header read timeout and the idle timeout both
    // count from the same moment (the connection's start, or the end of the last
    // response), so the shorter one decides.
    let waiting_limit = match (config.header_read_timeout, config.idle_timeout) {
        (Some(header), Some(idle)) => Some(header.min(idle)),
        (header, idle) => header.or(idle),
    };
    poll_fn(|cx| {
        if !shutting_down && Pin::new(&mut shutdown_wait).poll(cx).is_ready() {
            shutting_down = true;
            graceful(connection.as_mut());
        }
        if let Poll::Ready(_result) = connection.as_mut().poll(cx) {
            // Errors here are the client's (reset, bad request already answered), or a
            // response body's (cut off): the connection is over either way.
            return Poll::Ready(());
        }
        if let Some(grace) = closing.as_mut() {
            // Closing after a timeout: the connection ends when hyper is done, or
            // when the grace runs out.
            return Pin::new(grace).poll(cx);
        }
        // An HTTP/2 connection's requests run in tasks of their own: the one whose
        // end changes the phase wakes this task (`ConnectionActivity::watch`).
        #[cfg(feature = "http2")]
        activity.watch(cx.waker());
        let phase = Phase::of(activity);
        let limit = match phase {
            Phase::Waiting => waiting_limit,
            Phase::Handling => None,
            Phase::Responding => config.response_write_timeout,
        };
        let started = activity.started.load(Ordering::Relaxed);
        if watchdog.expired(cx, (phase, started), limit) {
            if phase == Phase::Responding {
                config
                    .counters
                    .response_write_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                // A response the client does not take: a GOAWAY would wait behind it,
                // so the socket is closed at once.
                return Poll::Ready(());
            }
            // Slow or silent client (no complete request head in time), or an idle
            // keep-alive connection. HTTP/1.1: closed at once (hyper's graceful
            // shutdown would wait for a head half read, and serve it). HTTP/2: closed
            // gracefully, so the client gets GOAWAY with the last stream the server
            // took (it knows no request of its was lost) before the socket closes; a
            // client that does not let the close finish (hyper's last GOAWAY waits
            // for the answer to a PING) is dropped after `CLOSE_GRACE`.
            #[cfg(feature = "http2")]
            if activity.is_http2() {
                if !shutting_down {
                    shutting_down = true;
                    graceful(connection.as_mut());
                }
                closing = Some(crate::timer::sleep(CLOSE_GRACE));
                // Polled again at once: the graceful close has work to do.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
}

/// How long an HTTP/2 connection closed for a header-read or idle timeout has to
/// finish its graceful close (GOAWAY, the client's answer to hyper's PING, the final
/// GOAWAY) before its socket is dropped.
#[cfg(feature = "http2")]
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection is doing, for its timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head (idle, or reading one): the header read and idle
    /// timeouts run.
    Waiting,
    /// A handler is running: its own timeout runs, in the request's task.
    Handling,
    /// A response is being written (its body streamed, or bytes the client has not
    /// taken yet): only the response write timeout runs.
    Responding,
}

impl Phase {
    fn of(activity: &ConnectionActivity) -> Self {
        if activity.handling.load(Ordering::Relaxed) > 0 {
            Self::Handling
        } else if activity.in_flight.load(Ordering::Relaxed) > 0
            || activity.write_blocked.load(Ordering::Relaxed)
        {
            Self::Responding
        } else {
            Self::Waiting
        }
    }
}

/// The connection's one timer: it bounds the phase the connection is in (a phase and
/// the count of requests started name one occurrence of it). No timer operation per
/// request: a new phase only notes its start (and only when it has a limit), and the
/// timer, when it fires or when it is set later than the current phase's due time,
/// is moved to that time.
///
/// Nor is the timer polled when a new phase begins before it is due: the clock read
/// that notes the phase's start says it has not fired (see [`Watchdog::expired`]).
struct Watchdog {
    timer: Sleep,
    /// Whether `timer` is armed (set to a deadline that has not been seen firing).
    armed: bool,
    /// The phase occurrence being timed.
    current: (Phase, u64),
    /// When it began, noted the first time it is seen with a limit.
    began: Option<Instant>,
}

impl Watchdog {
    fn new() -> Self {
        Self {
            timer: sleep_until(Instant::now()),
            armed: false,
            current: (Phase::Waiting, 0),
            began: Some(Instant::now()),
        }
    }

    /// Tracks the connection's phase after a poll; true when it has lasted past
    /// `limit` (`None`: no limit).
    fn expired(
        &mut self,
        cx: &mut Context<'_>,
        phase: (Phase, u64),
        limit: Option<Duration>,
    ) -> bool {
        if self.current != phase {
            self.current = phase;
            self.began = None;
        }
        let Some(limit) = limit else {
            return false;
        };
        // The clock is read once per phase, when its start is noted.
        let (began, read_now) = match self.began {
            Some(began) => (began, None),
            None => {
                let now = Instant::now();
                self.began = Some(now);
                (now, Some(now))
            }
        };
        let due = deadline_after(began, limit);
        if self.armed && self.timer.deadline() <= due {
            // Read in this poll before the timer's deadline, the clock says the timer
            // has not fired yet (a timer fires at a reading past its deadline, and the
            // clock is monotonic); registered in this worker's heap, it fires from
            // there and wakes this task (it was last polled here, with this task's
            // waker). Polling it would only say it is pending: one poll of it less per
            // request (about 70 instructions, callgrind). Registered elsewhere (the
            // task was moved off a held worker), it is polled, which moves it here.
            if read_now.is_some_and(|now| now < self.timer.deadline()) && self.timer.is_armed_here()
            {
                return false;
            }
            if Pin::new(&mut self.timer).poll(cx).is_pending() {
                return false;
            }
            self.armed = false;
        }
        // The timer fired (for this phase or an earlier one), is not armed, or is set
        // later than this phase is due.
        if Instant::now() >= due {
            return true;
        }
        self.timer.reset(due);
        self.armed = true;
        // Registers the timer; due by now after all means expired.
        if Pin::new(&mut self.timer).poll(cx).is_ready() {
            self.armed = false;
            return Instant::now() >= due;
        }
        false
    }
}

/// The connection's socket as hyper sees it: notes whether hyper's last write was
/// refused (the client is not taking the response as fast as it is written), for the
/// connection's timers.
///
/// It also holds the connection's [`ConnectionSlot`]: after an upgrade it is the
/// upgraded socket (inside `hyper::upgrade::Upgraded`), and the slot goes with it.
struct WatchedStream<S> {
    stream: S,
    activity: Arc<ConnectionActivity>,
    _slot: ConnectionSlot,
    /// Whether hyper has written anything yet: its first bytes tell HTTP/2 (the
    /// server's SETTINGS) from HTTP/1.1 (a response head, `HTTP/1.x ...`).
    #[cfg(feature = "http2")]
    written: bool,
}

impl<S> WatchedStream<S> {
    fn note<T>(&self, polled: Poll<T>) -> Poll<T> {
        self.activity
            .write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    /// Notes the protocol from the first bytes hyper writes (`first`: the start of
    /// them).
    #[cfg(feature = "http2")]
    fn note_first_write(&mut self, first: &[u8]) {
        if !self.written && !first.is_empty() {
            self.written = true;
            if !first.starts_with(b"HTTP/") {
                self.activity.note_http2();
            }
        }
    }
}

impl<S: Io> hyper::rt::Read for WatchedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buffer)
    }
}

impl<S: Io> hyper::rt::Write for WatchedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        #[cfg(feature = "http2")]
        self.note_first_write(buffer);
        let polled = Pin::new(&mut self.stream).poll_write(cx, buffer);
        self.note(polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.stream)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        #[cfg(feature = "http2")]
        if let Some(first) = buffers.iter().find(|buffer| !buffer.is_empty()) {
            self.note_first_write(first);
        }
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, buffers);
        self.note(polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Runtime;

    const LIMIT: Duration = Duration::from_millis(50);

    /// Runs `steps` on a worker, as a connection's task runs its watchdog: each call
    /// gets the watchdog, the poll's context and the number of the call, and returns
    /// whether the test is done. A call that returns false leaves the task waiting for
    /// whatever woke it (the watchdog's timer, or a wake the step asked for).
    fn on_a_worker(
        mut steps: impl FnMut(&mut Watchdog, &mut Context<'_>, usize) -> bool + Send + 'static,
    ) {
        let runtime = Runtime::builder().workers(1).build().unwrap();
        let task = runtime.spawn(async move {
            let mut watchdog = Watchdog::new();
            let mut call = 0;
            let steps = poll_fn(|cx| {
                call += 1;
                if steps(&mut watchdog, cx, call - 1) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            // A wake-up lost for good ends the test after 10 s (the step then polled
            // finds the watchdog late) instead of hanging it.
            crate::timer::timeout(Duration::from_secs(10), steps)
                .await
                .expect("the watchdog's task was never woken");
        });
        runtime.block_on(async move { task.await.unwrap() });
    }

    #[test]
    fn a_phase_begun_before_the_timer_is_due_still_times_out_when_it_is_due() {
        let mut began = None;
        on_a_worker(move |watchdog, cx, call| match call {
            // Arms the timer for the first phase, and asks to be polled again at once.
            0 => {
                assert!(!watchdog.expired(cx, (Phase::Waiting, 0), Some(LIMIT)));
                cx.waker().wake_by_ref();
                false
            }
            // A new phase, before the timer is due: the timer is not polled, and its
            // firing for the first phase still wakes the task.
            1 => {
                began = Some(Instant::now());
                assert!(!watchdog.expired(cx, (Phase::Waiting, 1), Some(LIMIT)));
                false
            }
            _ => {
                let began = began.unwrap();
                if !watchdog.expired(cx, (Phase::Waiting, 1), Some(LIMIT)) {
                    assert!(began.elapsed() < LIMIT * 100, "never woken when due");
                    return false;
                }
                assert!(began.elapsed() >= LIMIT, "expired early");
                assert!(began.elapsed() < LIMIT * 100, "expired late");
                true
            }
        });
    }

    #[test]
    fn a_phase_begun_when_the_timer_fired_is_timed_from_its_own_start() {
        let mut began = None;
        on_a_worker(move |watchdog, cx, call| match call {
            // Arms the timer for the first phase and waits for it.
            0 => {
                assert!(!watchdog.expired(cx, (Phase::Waiting, 0), Some(LIMIT)));
                false
            }
            // Woken by the timer; a new phase begins in this very poll, past the
            // timer's deadline: the timer must be polled (it has fired, and will not
            // wake the task again) and set for the new phase.
            1 => {
                let now = Instant::now();
                began = Some(now);
                assert!(!watchdog.expired(cx, (Phase::Waiting, 1), Some(LIMIT)));
                false
            }
            _ => {
                let began = began.unwrap();
                if !watchdog.expired(cx, (Phase::Waiting, 1), Some(LIMIT)) {
                    assert!(began.elapsed() < LIMIT * 100, "never woken when due");
                    return false;
                }
                assert!(began.elapsed() >= LIMIT, "expired early");
                assert!(began.elapsed() < LIMIT * 100, "expired late");
                true
            }
        });
    }
}
