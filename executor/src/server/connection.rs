//! One accepted connection: hyper's HTTP/1.1 server state machine, plus the idle
//! keep-alive watchdog and the graceful-shutdown hook.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;

use crate::hyper_rt::HyperTimer;
use crate::net::TcpStream;
use crate::server::request_scope::{ConnectionActivity, HandlerService};
use crate::server::stats::Counters;
use crate::server::{Config, Handler};
use crate::shutdown::Shutdown;
use crate::timer::sleep;

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
pub(crate) async fn serve<H: Handler>(
    stream: TcpStream,
    config: Arc<Config>,
    handler: Arc<H>,
    shutdown: Shutdown,
    permit: ConnectionPermit,
) {
    let _permit = permit;
    // Responses are written whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(ConnectionActivity::new(Arc::clone(&config.counters)));
    let service = HandlerService {
        handler,
        config: Arc::clone(&config),
        activity: Arc::clone(&activity),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HyperTimer)
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes)
        .keep_alive(true);
    let mut connection = pin!(builder.serve_connection(stream, service));
    let mut shutdown_wait = shutdown.wait();
    let mut graceful = false;
    let mut idle = sleep(config.idle_timeout);
    let mut started_at_arm = 0;
    poll_fn(|cx| {
        if !graceful && Pin::new(&mut shutdown_wait).poll(cx).is_ready() {
            graceful = true;
            connection.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(_result) = connection.as_mut().poll(cx) {
            // Errors here are the client's (reset, bad request already answered,
            // header timeout): the connection is over either way.
            return Poll::Ready(());
        }
        if Pin::new(&mut idle).poll(cx).is_ready() {
            let started = activity.started.load(Ordering::Relaxed);
            if activity.in_flight.load(Ordering::Relaxed) == 0 && started == started_at_arm {
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
