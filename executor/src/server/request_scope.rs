//! The per-request wrapper: every call and poll of a user handler goes through
//! [`RequestTask`].
//!
//! This is the seam for per-request arenas. Today a request's life is: the handler is
//! called when hyper hands over the request ([`RequestTask::start`]; calling it there,
//! not at the first poll, lets the request head go before hyper's next read, which
//! saves a buffer allocation and copy per request), each poll runs under
//! `catch_unwind` (a panic, in the call or a poll, becomes a 500 and the handler future
//! is dropped), and a deadline armed at the handler's first pending poll cancels a
//! handler that runs too long (503). The handler future is stored inline (hyper keeps
//! the `RequestTask` in a per-connection box), so a request costs no allocation here.
//!
//! Next, with arenas, only this file changes:
//! 1. `start`: `ArenaPool::try_acquire`; on success enter the arena and call the handler
//!    inside it (as today); otherwise keep the request in a new `WaitingForArena` state
//!    whose poll drives `acquire_async`, bounded by a configured wait, then calls the
//!    handler, or answers 503 without calling it;
//! 2. every poll: enter the arena (router guard) around the handler poll;
//! 3. after every poll: if the arena is over budget, drop the handler future (inside
//!    the arena, so destructors run) and answer 503 "request exceeded its memory budget";
//! 4. on completion or drop: leave and release the arena.
//!
//! # Safety
//! `RequestTask` structurally pins its handler future (`State::Running`): the future is
//! never moved once the task is pinned, only dropped in place (`drop_handler`:
//! `drop_in_place`, then the state is overwritten). Other states hold no pinned data.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

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
    /// The handler's future; structurally pinned (module `# Safety`).
    Running(H::Future),
    /// Answered without the handler (refused up front, or the handler call panicked).
    Answered(Response<Full<Bytes>>),
    /// The response has been returned.
    Finished,
}

const PANIC_BODY: &str = "internal server error: the request handler panicked\n";

/// One request's handler, run under the server's per-request rules. See the module docs.
pub(crate) struct RequestTask<H: Handler> {
    /// Pinned when `Running`; see the module `# Safety`.
    state: State<H>,
    /// Cancels the handler when it fires; armed at the handler's first pending poll.
    deadline: Option<Sleep>,
    handler_timeout: Duration,
    _in_flight: InFlight,
}

fn refusal<B>(status: StatusCode, body: &'static str) -> Response<ResponseBody<B>> {
    plain_response(status, body).map(Either::Right)
}

impl<H: Handler> RequestTask<H> {
    /// Calls the handler (containing a panic) and wraps its future.
    fn start(
        handler: &H,
        request: Request<RequestBody>,
        handler_timeout: Duration,
        in_flight: InFlight,
    ) -> Self {
        let state = match catch_unwind(AssertUnwindSafe(|| handler.call(request))) {
            Ok(future) => State::Running(future),
            Err(_) => State::Answered(plain_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                PANIC_BODY,
            )),
        };
        Self {
            state,
            deadline: None,
            handler_timeout,
            _in_flight: in_flight,
        }
    }

    fn answered(response: Response<Full<Bytes>>, in_flight: InFlight) -> Self {
        Self {
            state: State::Answered(response),
            deadline: None,
            handler_timeout: Duration::ZERO,
            _in_flight: in_flight,
        }
    }

    /// Drops the handler future in place (never moving it, as pinning requires),
    /// containing a panic from its destructors, and leaves the state `Finished`.
    fn drop_handler(&mut self) {
        if let State::Running(future) = &mut self.state {
            let future: *mut H::Future = future;
            // SAFETY: `future` points to the live handler future inside `self.state`
            // (derived from a unique borrow that ends here). It is dropped exactly once:
            // a panicking destructor still counts as the drop, and the state is then
            // overwritten without being dropped again.
            let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
                std::ptr::drop_in_place(future)
            }));
            // SAFETY: `self.state` is valid for writes; its only field was dropped above,
            // so overwriting it without running its destructor again is exactly right.
            unsafe { std::ptr::write(&mut self.state, State::Finished) };
        }
    }

    fn finish(
        &mut self,
        response: Response<ResponseBody<H::Body>>,
    ) -> Poll<<Self as Future>::Output> {
        self.drop_handler();
        Poll::Ready(Ok(response))
    }
}

impl<H: Handler> Future for RequestTask<H> {
    type Output = Result<Response<ResponseBody<H::Body>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: only `state`'s `Running` future is structurally pinned, and the code
        // below never moves it: it is polled through `Pin::new_unchecked` on its place
        // and dropped in place by `drop_handler`. `Answered` is moved out only while the
        // state holds no future. No other field is pinned.
        let this = unsafe { self.get_unchecked_mut() };
        match &mut this.state {
            State::Running(future) => {
                // SAFETY: see above; the future stays at this address until dropped.
                let future = unsafe { Pin::new_unchecked(future) };
                // Arena seam: enter the request's arena around this poll.
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Ready(response)) => this.finish(response.map(Either::Left)),
                    Err(_) => this.finish(refusal(StatusCode::INTERNAL_SERVER_ERROR, PANIC_BODY)),
                    // Arena seam: the over-budget check goes here, before `Pending`.
                    Ok(Poll::Pending) => {
                        let timeout = this.handler_timeout;
                        let deadline = this.deadline.get_or_insert_with(|| sleep(timeout));
                        if Pin::new(deadline).poll(cx).is_ready() {
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
            State::Answered(_) => {
                let State::Answered(response) = std::mem::replace(&mut this.state, State::Finished)
                else {
                    unreachable!("matched Answered above")
                };
                Poll::Ready(Ok(response.map(Either::Right)))
            }
            State::Finished => panic!("RequestTask polled after completion"),
        }
    }
}

impl<H: Handler> Drop for RequestTask<H> {
    fn drop(&mut self) {
        // The connection went away mid-request: drop the handler in place.
        self.drop_handler();
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
        let request = request.map(|body| Limited::new(body, max_body));
        RequestTask::start(
            &*self.handler,
            request,
            self.config.handler_timeout,
            in_flight,
        )
    }
}
