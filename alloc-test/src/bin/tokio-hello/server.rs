//! The tokio + hyper peer of the executor benchmark, as users deploy it: its own
//! executable, tokio's multi-thread runtime, hyper-util's `TokioIo`, and the global
//! allocator its binary chooses (the system allocator for `tokio-hello`, mimalloc for
//! `tokio-hello-mimalloc`). hyper is set up as our executor sets it up
//! (`executor/src/server/connection.rs`): keep-alive on, hyper's own header-read timer
//! off, a 16 KiB buffer limit, and a timer given to hyper.
//!
//! ```text
//! tokio-hello --workers N
//! ```
//!
//! binds 127.0.0.1:0, prints its address on a line of standard output, and serves
//! "Hello, World!" (and `/__counters`: the requests so far; `/spin`: the same after
//! 2 ms of CPU) until its standard input closes.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pagekeep_alloc_test::bench::wrk;

/// hyper's buffer limit, as our executor's default `max_header_bytes`.
const MAX_BUF_BYTES: usize = 16 * 1024;

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn hello() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Parses `--workers N` and serves.
pub fn main() -> std::process::ExitCode {
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
            eprintln!("tokio-hello: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(workers: usize) -> Result<(), String> {
    static REQUESTS: AtomicU64 = AtomicU64::new(0);
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
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
            tokio::spawn(async move {
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let requests = REQUESTS.fetch_add(1, Ordering::Relaxed) + 1;
                    Ok::<_, Infallible>(match request.uri().path() {
                        "/oom" => text(
                            StatusCode::NOT_FOUND,
                            "/oom is served by our executor only\n".into(),
                        ),
                        "/__counters" => text(
                            StatusCode::OK,
                            format!("requests {requests}\nover_budget 0\n"),
                        ),
                        wrk::SPIN_PATH => {
                            wrk::spin(wrk::SPIN_TIME);
                            hello()
                        }
                        _ => hello(),
                    })
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
