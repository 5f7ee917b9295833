//! An axum app served by this executor, every request in its own arena.
//!
//! The app is ordinary axum: routes with path and JSON extractors, a shared state
//! (`with_state`), a middleware layer (`from_fn_with_state`) and a streamed response.
//! Only `main` differs from the app on tokio: the allocator line, and
//! `Server::serve_service(app)` where tokio's version has `axum::serve(listener, app)`.
//!
//! The benchmark's copy of this app (`alloc-test/src/bench/axum_app.rs`, served on
//! this executor and on tokio by `reproduce`'s executor group) is kept identical by
//! hand, with the sleep and the `x-served-by` value taken from the runtime: a change to
//! the app here belongs there too.
//!
//! - `GET /`: the greeting from the state.
//! - `GET /hello/{name}`: `Hello, {name}!` (a path extractor).
//! - `POST /users` with `{"name": "..."}`: 201 and the stored user as JSON (a JSON
//!   extractor); `GET /users/{id}`: that user, or 404.
//! - `GET /stream?lines=N`: N lines (default 5), one every 10 ms, sent as they come
//!   (a chunked body).
//! - `GET /stats`: how many requests the middleware has seen.
//!
//! Every response carries `x-served-by: pagekeep-executor`, added by the middleware,
//! which also counts the requests.
//!
//! `cargo run --release -p pagekeep-executor --features tower --example axum -- [PORT] [WORKERS]`,
//! then `curl http://127.0.0.1:8083/hello/you`,
//! `curl -d '{"name":"ada"}' -H 'content-type: application/json' http://127.0.0.1:8083/users`,
//! `curl -N http://127.0.0.1:8083/stream`.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

// Routes each request's allocations to its own arena (see `pagekeep_executor::RequestAllocator`).
#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

/// What every handler shares (`with_state`): cloned for each request, so only `Arc`s.
#[derive(Clone)]
struct AppState {
    greeting: Arc<str>,
    users: Arc<Mutex<BTreeMap<u32, User>>>,
    next_id: Arc<AtomicU32>,
    requests: Arc<AtomicU64>,
}

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u32,
    name: String,
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
}

#[derive(Deserialize)]
struct StreamQuery {
    lines: Option<u32>,
}

async fn greeting(State(state): State<AppState>) -> String {
    format!("{}\n", state.greeting)
}

async fn hello(Path(name): Path<String>) -> String {
    format!("Hello, {name}!\n")
}

async fn create_user(
    State(state): State<AppState>,
    Json(new): Json<NewUser>,
) -> (StatusCode, Json<User>) {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    // The stored copy outlives the request: made outside its arena, or the arena would
    // stay out of use (quarantined) for as long as the user is stored.
    pagekeep_arena::outside_arena(|| {
        let user = User {
            id,
            name: new.name.clone(),
        };
        lock(&state.users).insert(id, user);
    });
    (StatusCode::CREATED, Json(User { id, name: new.name }))
}

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<u32>,
) -> Result<Json<User>, StatusCode> {
    // The clone is the response's, in the request's arena.
    let user = lock(&state.users).get(&id).cloned();
    user.map(Json).ok_or(StatusCode::NOT_FOUND)
}

async fn stream(Query(query): Query<StreamQuery>) -> Body {
    let lines = query.lines.unwrap_or(5);
    let lines = futures::stream::unfold(0, move |line| async move {
        if line == lines {
            return None;
        }
        if line > 0 {
            pagekeep_executor::sleep(Duration::from_millis(10)).await;
        }
        let text = Bytes::from(format!("line {line}\n"));
        Some((Ok::<_, Infallible>(text), line + 1))
    });
    Body::from_stream(lines)
}

async fn stats(State(state): State<AppState>) -> String {
    format!("{} requests\n", state.requests.load(Ordering::Relaxed))
}

/// The middleware: counts every request and marks every response.
async fn count_and_mark(State(state): State<AppState>, request: Request, next: Next) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let mut response = next.run(request).await.into_response();
    response
        .headers_mut()
        .insert("x-served-by", HeaderValue::from_static("pagekeep-executor"));
    response
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The app, as it would be written for tokio.
fn app() -> Router {
    let state = AppState {
        greeting: Arc::from("Hello from axum on pagekeep-executor!"),
        users: Arc::default(),
        next_id: Arc::new(AtomicU32::new(1)),
        requests: Arc::default(),
    };
    Router::new()
        .route("/", get(greeting))
        .route("/hello/{name}", get(hello))
        .route("/users", axum::routing::post(create_user))
        .route("/users/{id}", get(get_user))
        .route("/stream", get(stream))
        .route("/stats", get(stats))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_and_mark,
        ))
        .with_state(state)
}

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8083);
    let server = pagekeep_executor::Server::builder()
        .workers(workers)
        .bind(address)?;
    println!(
        "axum: listening on http://{}/ with {workers} workers",
        server.local_addr()
    );
    server.serve_service(app())?;
    println!("axum: shut down");
    Ok(())
}
