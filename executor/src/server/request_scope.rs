//! The per-request wrapper: every poll of a user handler goes through [`RequestTask`].
//!
//! This is the seam for per-request arenas. Today a request's life is: its future is
//! created on the first poll (so the handler function itself runs inside the scope),
//! each poll runs under `catch_unwind` (a panic becomes a 500 and the handler future is
//! dropped), and a deadline cancels a handler that runs too long (503). Next, in
//! [`RequestTask::poll`] only:
//! 1. first poll: acquire an arena from the `ArenaPool` with `acquire_async`, waiting at
//!    most a configured time, else answer 503 without calling the handler;
//! 2. every poll: enter the arena (router guard) around the handler poll;
//! 3. after every poll: if the arena is over budget, drop the handler future (inside
//!    the arena, destructors run) and answer 503 "request exceeded its memory budget";
//! 4. on completion or drop: leave and release the arena.
//!
//! The handler future is boxed when created: that box is the first allocation the
//! arena will take over.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;

use crate::server::{Config, Handler, RequestBody, ResponseBody};
use crate::timer::{Sleep, sleep};

/// Counters one connection shares with its requests (for the idle watchdog).
#[derive(Debug, Default)]
pub(crate) struct ConnectionActivity {
    /// Requests whose handler has not finished.
    pub(crate) in_flight: AtomicUsize,
    /// Requests started on this connection.
    pub(crate) started: AtomicU64,
}

/// Marks one request in flight for its whole life.
#[derive(Debug)]
struct InFlight(Arc<ConnectionActivity>);

impl InFlight {
    fn new(activity: &Arc<ConnectionActivity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.started.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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

enum State<H: Handler> {
    /// The handler has not been called yet.
    NotStarted {
        handler: Arc<H>,
        request: Request<RequestBody>,
    },
    /// The handler's future, polled once per `RequestTask` poll.
    Running(Pin<Box<H::Future>>),
    /// Answered without the handler (request refused up front).
    Refused(Response<Full<Bytes>>),
    /// The response has been returned.
    Finished,
}

/// One request's handler, run under the server's per-request rules. See the module docs.
pub(crate) struct RequestTask<H: Handler> {
    state: State<H>,
    /// Cancels the handler when it fires; armed at the first poll.
    deadline: Option<Sleep>,
    handler_timeout: std::time::Duration,
    _in_flight: InFlight,
}

impl<H: Handler> Unpin for RequestTask<H> {}

impl<H: Handler> RequestTask<H> {
    fn finish(
        &mut self,
        response: Response<ResponseBody<H::Body>>,
    ) -> Poll<<Self as Future>::Output> {
        if let State::Running(future) = std::mem::replace(&mut self.state, State::Finished) {
            drop_quietly(future);
        }
        Poll::Ready(Ok(response))
    }
}

/// Drops a handler future, containing a panic from its destructors.
fn drop_quietly<T>(value: T) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(value)));
}

fn refusal<B>(status: StatusCode, body: &'static str) -> Response<ResponseBody<B>> {
    plain_response(status, body).map(Either::Right)
}

impl<H: Handler> Future for RequestTask<H> {
    type Output = Result<Response<ResponseBody<H::Body>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Arena seam (next session): acquire on the first poll, enter here.
        if let State::NotStarted { .. } = this.state {
            let State::NotStarted { handler, request } =
                std::mem::replace(&mut this.state, State::Finished)
            else {
                unreachable!()
            };
            match catch_unwind(AssertUnwindSafe(|| Box::pin(handler.call(request)))) {
                Ok(future) => this.state = State::Running(future),
                Err(_) => {
                    return this.finish(refusal(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal server error: the request handler panicked\n",
                    ));
                }
            }
            this.deadline = Some(sleep(this.handler_timeout));
        }
        match &mut this.state {
            State::Running(future) => {
                match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Ready(response)) => this.finish(response.map(Either::Left)),
                    Err(_) => this.finish(refusal(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal server error: the request handler panicked\n",
                    )),
                    // Arena seam: the over-budget check goes here, before `Pending`.
                    Ok(Poll::Pending) => {
                        let expired = this
                            .deadline
                            .as_mut()
                            .is_some_and(|deadline| Pin::new(deadline).poll(cx).is_ready());
                        if expired {
                            this.finish(refusal(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "service unavailable: the request handler timed out\n",
                            ))
                        } else {
                            Poll::Pending
                        }
                    }
                }
            }
            State::Refused(_) => {
                let State::Refused(response) = std::mem::replace(&mut this.state, State::Finished)
                else {
                    unreachable!()
                };
                Poll::Ready(Ok(response.map(Either::Right)))
            }
            State::NotStarted { .. } | State::Finished => {
                panic!("RequestTask polled after completion")
            }
        }
    }
}

impl<H: Handler> Drop for RequestTask<H> {
    fn drop(&mut self) {
        // The connection went away mid-request: drop the handler, containing panics.
        if let State::Running(future) = std::mem::replace(&mut self.state, State::Finished) {
            drop_quietly(future);
        }
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
        let in_flight = InFlight::new(&self.activity);
        self.config
            .counters
            .requests
            .fetch_add(1, Ordering::Relaxed);
        let max_body = self.config.max_body_bytes;
        let declared_too_large = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .is_some_and(|length| length > max_body as u64);
        let state = if declared_too_large {
            let mut response = plain_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload too large: the request body exceeds the server's limit\n",
            );
            // The unread body would otherwise be drained; close instead.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            State::Refused(response)
        } else {
            let request = request.map(|body| Limited::new(body, max_body));
            State::NotStarted {
                handler: Arc::clone(&self.handler),
                request,
            }
        };
        RequestTask {
            state,
            deadline: None,
            handler_timeout: self.config.handler_timeout,
            _in_flight: in_flight,
        }
    }
}
