//! Any tower service as the handler (`ServiceHandler`): each request clones the service,
//! waits for the clone to be ready and calls it, all inside the request's arena; a
//! service that fails, or fails to be ready, gets 500 and the connection goes on; one
//! never ready gets 503 at the handler timeout.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use pagekeep_executor::{RequestBody, ServiceHandler};

use crate::support::*;

fn get_request(path: &str) -> Request<Full<Bytes>> {
    request(Method::GET, path, "")
}

#[test]
fn a_failing_service_gets_500_and_the_connection_goes_on() {
    let service = tower::service_fn(|request: Request<RequestBody>| async move {
        if request.uri().path() == "/fail" {
            return Err(io::Error::other("the database is gone (on purpose)"));
        }
        Ok(Response::new(Full::new(Bytes::from_static(b"fine"))))
    });
    let server = start_with(builder(), ServiceHandler::new(service));
    let answers = exchange_on_one_connection(
        server.address,
        vec![
            get_request("/fail"),
            get_request("/ok"),
            get_request("/fail"),
        ],
    );
    let statuses: Vec<_> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK,
            StatusCode::INTERNAL_SERVER_ERROR
        ],
        "{answers:?}"
    );
    let reason = String::from_utf8_lossy(&answers[0].body);
    assert!(reason.contains("service failed"), "500 body: {reason}");
    assert_eq!(answers[1].body, "fine");
    // An error is not a panic.
    assert_eq!(server.stats.panics(), 0);
}

/// How a [`Picky`] service's clones become ready.
#[derive(Clone, Copy)]
enum Readiness {
    /// Not ready (waking itself) for this many polls, then ready.
    After(usize),
    /// Never ready (and never wakes).
    Never,
    /// Fails to become ready.
    Fails,
}

/// What the clones of a [`Picky`] service saw.
#[derive(Default)]
struct Seen {
    clones_in_arena: AtomicUsize,
    clones_outside: AtomicUsize,
    ready_polls_in_arena: AtomicUsize,
    ready_polls_outside: AtomicUsize,
    calls_in_arena: AtomicUsize,
    calls_outside: AtomicUsize,
}

/// Counts `in_arena` or `outside` by where the thread routes its allocations.
fn record(in_arena: &AtomicUsize, outside: &AtomicUsize) {
    let counter = if pagekeep_arena::in_arena() {
        in_arena
    } else {
        outside
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A service whose clones each start unready, recording where each clone, readiness
/// poll and call ran.
struct Picky {
    readiness: Readiness,
    /// Polls this clone has still to answer "not ready".
    not_ready_polls: usize,
    /// Whether this clone has said it is ready (and may be called).
    ready: bool,
    seen: Arc<Seen>,
}

impl Picky {
    fn new(readiness: Readiness) -> Self {
        Self {
            readiness,
            not_ready_polls: match readiness {
                Readiness::After(polls) => polls,
                Readiness::Never | Readiness::Fails => 0,
            },
            ready: false,
            seen: Arc::default(),
        }
    }
}

impl Clone for Picky {
    fn clone(&self) -> Self {
        record(&self.seen.clones_in_arena, &self.seen.clones_outside);
        Self {
            readiness: self.readiness,
            not_ready_polls: match self.readiness {
                Readiness::After(polls) => polls,
                Readiness::Never | Readiness::Fails => 0,
            },
            ready: false,
            seen: Arc::clone(&self.seen),
        }
    }
}

impl tower::Service<Request<RequestBody>> for Picky {
    type Response = Response<Full<Bytes>>;
    type Error = io::Error;
    type Future = std::future::Ready<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        record(
            &self.seen.ready_polls_in_arena,
            &self.seen.ready_polls_outside,
        );
        match self.readiness {
            Readiness::Never => Poll::Pending,
            Readiness::Fails => Poll::Ready(Err(io::Error::other("not ready (on purpose)"))),
            Readiness::After(_) if self.not_ready_polls > 0 => {
                self.not_ready_polls -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Readiness::After(_) => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        record(&self.seen.calls_in_arena, &self.seen.calls_outside);
        assert!(self.ready, "called before it said it was ready");
        let body = Bytes::from(request.uri().path().to_owned());
        std::future::ready(Ok(Response::new(Full::new(body))))
    }
}

#[test]
fn each_request_clones_waits_for_readiness_and_calls_in_its_arena() {
    let service = Picky::new(Readiness::After(3));
    let seen = Arc::clone(&service.seen);
    let server = start_with(builder(), ServiceHandler::new(service));
    let answers = exchange_on_one_connection(
        server.address,
        vec![get_request("/one"), get_request("/two")],
    );
    assert_eq!(answers[0].status, StatusCode::OK, "{answers:?}");
    assert_eq!(answers[0].body, "/one");
    assert_eq!(answers[1].body, "/two");
    let load = |counter: &AtomicUsize| counter.load(Ordering::Relaxed);
    assert_eq!(load(&seen.clones_in_arena), 2, "one clone per request");
    // Each clone: 3 polls not ready, then ready.
    assert_eq!(load(&seen.ready_polls_in_arena), 8);
    assert_eq!(load(&seen.calls_in_arena), 2);
    assert_eq!(load(&seen.clones_outside), 0, "a clone outside an arena");
    assert_eq!(load(&seen.ready_polls_outside), 0, "poll_ready outside");
    assert_eq!(load(&seen.calls_outside), 0, "a call outside an arena");
}

#[test]
fn a_service_that_fails_to_be_ready_gets_500_and_is_never_called() {
    let service = Picky::new(Readiness::Fails);
    let seen = Arc::clone(&service.seen);
    let server = start_with(builder(), ServiceHandler::new(service));
    let answers = exchange_on_one_connection(
        server.address,
        vec![get_request("/one"), get_request("/two")],
    );
    for answer in &answers {
        assert_eq!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{answer:?}"
        );
    }
    assert_eq!(seen.calls_in_arena.load(Ordering::Relaxed), 0);
    assert_eq!(seen.calls_outside.load(Ordering::Relaxed), 0);
}

#[test]
fn a_service_never_ready_gets_503_at_the_handler_timeout() {
    let service = Picky::new(Readiness::Never);
    let server = start_with(
        builder().handler_timeout(Duration::from_millis(100)),
        ServiceHandler::new(service),
    );
    let answers = exchange_on_one_connection(server.address, vec![get_request("/one")]);
    assert_eq!(answers[0].status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = String::from_utf8_lossy(&answers[0].body);
    assert!(reason.contains("timed out"), "503 body: {reason}");
    assert_eq!(server.stats.handler_timeouts(), 1);
}
