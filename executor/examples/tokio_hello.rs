//! The `hello` service on tokio + hyper (multi-thread runtime, same worker count), for
//! comparison with `examples/hello.rs` in the same run.
//!
//! `cargo run --release -p pagekeep-executor --example tokio_hello -- [PORT] [WORKERS]`

mod common;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8080);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address).await?;
        println!(
            "tokio_hello: listening on http://{} with {workers} workers",
            listener.local_addr()?
        );
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = tokio::signal::ctrl_c() => break,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
        println!("tokio_hello: shut down");
        Ok(())
    })
}
