//! `axum-tokio`: the axum app of the executor benchmark ([`pagekeep_alloc_test::bench::axum_app`],
//! the app of `executor/examples/axum.rs`) on tokio's multi-thread runtime, as the
//! `axum` example's peer: its own executable on the system allocator, hyper set up as
//! `tokio-hello` sets it up (keep-alive on, hyper's header-read timer off, a 16 KiB
//! buffer limit, tokio's timer), the router called for every request.
//!
//! ```text
//! axum-tokio --workers N
//! ```
//!
//! binds 127.0.0.1:0, prints its address on a line of standard output, and serves the
//! app, and `/__counters` (the requests so far, outside the app's middleware), until
//! its standard input closes.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::routing::get;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pagekeep_alloc_test::bench::axum_app::{self, Runtime};
use tower_service::Service;

/// hyper's buffer limit, as our executor's default `max_header_bytes`.
const MAX_BUF_BYTES: usize = 16 * 1024;

/// Requests received so far.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// The app's runtime: tokio.
struct Tokio;

impl Runtime for Tokio {
    const SERVED_BY: &'static str = "tokio";

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }
}

/// Parses `--workers N` and serves.
fn main() -> std::process::ExitCode {
    let arguments: Vec<String> = std::env::args().collect();
    let workers = match arguments.as_slice() {
        [_, flag, count] if flag == "--workers" => count.parse::<usize>().ok(),
        _ => None,
    };
    let Some(workers) = workers.filter(|&workers| workers > 0) else {
        eprintln!("usage: {} --workers N", arguments[0]);
        return std::process::ExitCode::from(2);
    };
    // Exit when standard input closes, so the server never outlives its parent.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(0);
    });
    match serve(workers) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axum-tokio: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(workers: usize) -> Result<(), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
    let router = axum_app::app::<Tokio>().route(
        "/__counters",
        get(|| async {
            format!(
                "requests {}\nover_budget 0\n",
                REQUESTS.load(Ordering::Relaxed)
            )
        }),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot build the runtime: {error}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| format!("cannot bind {address}: {error}"))?;
        let local = listener
            .local_addr()
            .map_err(|error| format!("no local address: {error}"))?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{local}")
                .and_then(|()| stdout.flush())
                .map_err(|error| format!("cannot print the address: {error}"))?;
        }
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    REQUESTS.fetch_add(1, Ordering::Relaxed);
                    // A router is always ready: `call` without `poll_ready` is allowed.
                    let mut router = router.clone();
                    async move {
                        Ok::<_, Infallible>(
                            router
                                .call(request)
                                .await
                                .unwrap_or_else(|never| match never {}),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(None)
                    .max_buf_size(MAX_BUF_BYTES)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
