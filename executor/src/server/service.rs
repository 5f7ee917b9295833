//! [`ServiceHandler`]: a tower `Service` as the server's [`Handler`] (feature `tower`), so
//! an `axum::Router` is served as it is.
//!
//! A service gets no rules of its own: [`ServiceHandler`] is a [`Handler`], so the
//! server runs it through the same `RequestTask` as a closure (`request_scope`).
//! `Handler::call` runs inside the request's arena lease, and there the service is
//! cloned; every poll of the returned [`ServiceFuture`] runs inside the lease too, and
//! in those polls the clone's `poll_ready`, its `call` (axum's routing, extractors and
//! middleware) and the response future run. The response body is polled as a closure's
//! is. So everything the service does for a request allocates from that request's
//! arena, is cancelled with 503 when it goes over the budget or past the handler
//! timeout, and a panic anywhere in it is a 500.
//!
//! # Safety
//! [`ServiceFuture`] structurally pins the service's response future (`called`): it is
//! written in place once, while `called` is `None`, polled through `Pin::new_unchecked`
//! and dropped in place (by the assignment of `None` once it is done, or with the
//! `ServiceFuture`), never moved. `waiting` (the clone and the request) is not pinned.

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use tower_service::Service;

use crate::server::request_scope::plain_response;
use crate::server::{Handler, RequestBody};

/// The error type the service's errors are turned into, as tower's `BoxError`.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a [`ServiceHandler`]'s responses: the service's own (`Left`), or the
/// server's 500 for a service that failed (`Right`).
pub type ServiceBody<B> = Either<B, Full<Bytes>>;

const SERVICE_FAILED_BODY: &str = "internal server error: the request's service failed\n";

/// A tower [`Service`] as a [`Handler`], which is what [`Server::serve_service`] serves
/// (feature `tower`). An `axum::Router` (its state given with `with_state`) is such a
/// service.
///
/// For each request, inside the request's arena:
/// - the service is cloned (axum's `Router` is an `Arc`: a clone is a reference count),
///   as tower's `ServiceExt::oneshot` does, so each request has its own readiness;
/// - the clone's `poll_ready` is polled until ready. A service that is not ready waits,
///   its wait counting against the handler timeout (503 past it); axum's `Router` is
///   always ready, so this costs one call that says so;
/// - the clone is called with the request and dropped; the response future is polled
///   to its response.
///
/// A service error, from `poll_ready` or from the response future, is written to
/// stderr (outside the arena) and answered 500; the connection and the server go on.
/// axum's `Router` never fails (its error is `Infallible`: its handlers' rejections and
/// errors are responses already).
///
/// The handler is shared by every worker thread, so the service must be `Sync` as well
/// as `Clone + Send` (axum's `Router` is; a boxed tower service can be tower's
/// `BoxCloneSyncService`).
///
/// # Examples
/// ```no_run
/// use std::convert::Infallible;
///
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use pagekeep_executor::{RequestBody, ServiceHandler};
///
/// #[derive(Clone)]
/// struct Hello;
///
/// impl tower_service::Service<http::Request<RequestBody>> for Hello {
///     type Response = http::Response<Full<Bytes>>;
///     type Error = Infallible;
///     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
///
///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
///         std::task::Poll::Ready(Ok(()))
///     }
///
///     fn call(&mut self, _request: http::Request<RequestBody>) -> Self::Future {
///         std::future::ready(Ok(http::Response::new(Full::new(Bytes::from("hello\n")))))
///     }
/// }
///
/// let server = pagekeep_executor::Server::builder().bind("127.0.0.1:8080".parse().unwrap())?;
/// // The same as `server.serve_service(Hello)`.
/// server.serve(ServiceHandler::new(Hello))?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// [`Server::serve_service`]: crate::Server::serve_service
#[derive(Clone)]
pub struct ServiceHandler<S> {
    service: S,
}

impl<S> ServiceHandler<S> {
    /// Serves `service`.
    pub fn new(service: S) -> Self {
        Self { service }
    }

    /// The service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The service back.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S> fmt::Debug for ServiceHandler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandler")
            .field("service", &std::any::type_name::<S>())
            .finish()
    }
}

impl<S, B> Handler for ServiceHandler<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = ServiceBody<B>;
    type BodyError = BoxError;
    type Future = ServiceFuture<S>;

    fn call(&self, request: Request<RequestBody>) -> ServiceFuture<S> {
        // Inside the request's arena (`RequestTask` calls the handler there).
        ServiceFuture {
            waiting: Some((self.service.clone(), request)),
            called: None,
        }
    }
}

/// One request's call of a [`ServiceHandler`]'s service: waits for the service's clone
/// to be ready, calls it, and resolves to its response (or to a 500 if it fails).
#[must_use = "futures do nothing unless polled"]
pub struct ServiceFuture<S: Service<Request<RequestBody>>> {
    /// The request and the clone of the service that takes it, until the clone is
    /// ready and called. Not pinned.
    waiting: Option<(S, Request<RequestBody>)>,
    /// The service's response future once the clone was called, until it is done;
    /// structurally pinned (module `# Safety`).
    called: Option<S::Future>,
}

impl<S: Service<Request<RequestBody>>> fmt::Debug for ServiceFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.waiting.is_some() {
            "waiting for the service to be ready"
        } else if self.called.is_some() {
            "called"
        } else {
            "done"
        };
        f.debug_struct("ServiceFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, B> Future for ServiceFuture<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Response<ServiceBody<B>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: only `called` is structurally pinned (module `# Safety`): below it is
        // written only while `None`, polled in place through `Pin::new_unchecked` and
        // dropped in place by assigning `None`; nothing moves it. `waiting` may move.
        let this = unsafe { self.get_unchecked_mut() };
        if let Some((service, _)) = &mut this.waiting {
            match service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    this.waiting = None;
                    return Poll::Ready(failed("was not ready", error.into()));
                }
                Poll::Ready(Ok(())) => {
                    let Some((mut service, request)) = this.waiting.take() else {
                        unreachable!("matched Some above")
                    };
                    // The clone goes once called, as with tower's `oneshot`: what it
                    // reserved in `poll_ready` is the response future's now.
                    this.called = Some(service.call(request));
                }
            }
        }
        let Some(called) = &mut this.called else {
            panic!("ServiceFuture polled after completion")
        };
        // SAFETY: see above; `called` stays in place until dropped in place below (or
        // with `self`).
        let called = unsafe { Pin::new_unchecked(called) };
        let Poll::Ready(result) = called.poll(cx) else {
            return Poll::Pending;
        };
        // Done: dropped in place, here, in the request's arena.
        this.called = None;
        Poll::Ready(match result {
            Ok(response) => response.map(Either::Left),
            Err(error) => failed("failed", error.into()),
        })
    }
}

/// Logs a service's `error` (outside the request's arena: logging is the server's
/// work, not the request's) and answers 500.
fn failed<B>(what: &str, error: BoxError) -> Response<ServiceBody<B>> {
    pagekeep_arena::outside_arena(|| {
        // Best effort: stderr gone is no reason to fail the response.
        let _ = writeln!(std::io::stderr(), "executor: the service {what}: {error}");
    });
    // Freed where it was allocated, in the arena, by the router.
    drop(error);
    plain_response(StatusCode::INTERNAL_SERVER_ERROR, SERVICE_FAILED_BODY).map(Either::Right)
}
