//! One accepted connection: hyper's HTTP/1.1 server state machine, the header-read and
//! idle keep-alive watchdogs, and the graceful-shutdown hook.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::hyper_rt::HyperTimer;
use crate::net::TcpStream;
use crate::server::request_scope::{ConnectionActivity, HandlerService};
use crate::server::stats::Counters;
use crate::server::{Config, Handler};
use crate::shutdown::Shutdown;
use crate::timer::{Sleep, sleep};

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

/// Serves `stream` until the client leaves, an error or timeout ends it, it stays idle
/// past the idle timeout, or shutdown completes it.
///
/// hyper is polled outside any arena: what it allocates while reading and parsing
/// (its buffers, the request head) belongs to the connection, not to a request. Each
/// request's handler runs in an arena of its own (`request_scope`).
pub(crate) async fn serve<H: Handler>(
    stream: TcpStream,
    config: Arc<Config>,
    handler: Arc<H>,
    shutdown: Shutdown,
) {
    // Responses are written whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(ConnectionActivity::new(Arc::clone(&config.counters)));
    let service = HandlerService {
        handler,
        config: Arc::clone(&config),
        activity: Arc::clone(&activity),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header-read timeout is kept below rather than by hyper, whose timer would
    // allocate a fresh `Sleep` for every request.
    builder
        .timer(HyperTimer)
        .header_read_timeout(None)
        .max_buf_size(config.max_header_bytes)
        .keep_alive(true);
    let mut connection = pin!(builder.serve_connection(stream, service));
    let mut shutdown_wait = shutdown.wait();
    let mut graceful = false;
    let mut idle = sleep(config.idle_timeout);
    let mut started_at_arm = 0;
    let mut head_wait = HeadWait::new(config.header_read_timeout);
    poll_fn(|cx| {
        if !graceful && Pin::new(&mut shutdown_wait).poll(cx).is_ready() {
            graceful = true;
            connection.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(_result) = connection.as_mut().poll(cx) {
            // Errors here are the client's (reset, bad request already answered):
            // the connection is over either way.
            return Poll::Ready(());
        }
        let in_flight = activity.in_flight.load(Ordering::Relaxed);
        let started = activity.started.load(Ordering::Relaxed);
        if head_wait.timed_out(cx, in_flight, started) {
            // Slow or silent client: no complete request head in time.
            return Poll::Ready(());
        }
        if Pin::new(&mut idle).poll(cx).is_ready() {
            if in_flight == 0 && started == started_at_arm {
                // No request for a whole idle period: close.
                return Poll::Ready(());
            }
            // Busy, or a request started meanwhile: check again one period from now.
            started_at_arm = started;
            idle.reset(Instant::now() + config.idle_timeout);
            if Pin::new(&mut idle).poll(cx).is_ready() {
                // A tiny timeout already passed again: come back next turn, never spin.
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    })
    .await;
}

/// The header-read timeout: a client has this long to complete a request head, counted
/// from when the connection starts waiting for one (its start, or the end of the
/// previous request). One timer per connection, and no timer operation per request: a
/// new wait only notes its start, and the timer, when it fires, checks the wait it finds
/// and is moved to that wait's deadline if it is not due yet.
struct HeadWait {
    timeout: Duration,
    deadline: Sleep,
    /// `started` when the current wait began; `None` while a request runs.
    waiting_since: Option<u64>,
    /// When the current wait began.
    began: Instant,
}

impl HeadWait {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            deadline: sleep(timeout),
            waiting_since: Some(0),
            began: Instant::now(),
        }
    }

    /// Tracks the connection's state after a poll; true when a head is overdue.
    fn timed_out(&mut self, cx: &mut Context<'_>, in_flight: usize, started: u64) -> bool {
        if in_flight > 0 {
            self.waiting_since = None;
            return false;
        }
        if self.waiting_since != Some(started) {
            // A request ended (or started and ended) since: a new wait begins.
            self.waiting_since = Some(started);
            self.began = Instant::now();
        }
        if Pin::new(&mut self.deadline).poll(cx).is_pending() {
            return false;
        }
        // The timer was set for this wait or an earlier one: is this one due?
        let due = self.began + self.timeout;
        if Instant::now() >= due {
            return true;
        }
        self.deadline.reset(due);
        // Registers the timer again; due by now after all means timed out.
        Pin::new(&mut self.deadline).poll(cx).is_ready()
    }
}
