//! The `https` example's service on tokio + hyper (multi-thread runtime, same worker
//! count, tokio-rustls, hyper-util's server that speaks HTTP/1.1 and HTTP/2), for
//! comparison with `examples/https.rs` in the same run (h2load, the README's
//! "HTTP/2"). With `PLAIN=1` it serves cleartext (HTTP/2 with prior knowledge, or
//! HTTP/1.1) and answers as `examples/hello.rs` does, the peer of `hello` built with
//! the `http2` feature.
//!
//! `cargo run --release -p pagekeep-executor --features tls,http2 --example https_tokio -- [PORT] [WORKERS]`

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8443);
    let plain = std::env::var("PLAIN").is_ok_and(|value| value != "0");
    let certified = rcgen::generate_simple_self_signed(["localhost".into(), "127.0.0.1".into()])
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(std::io::Error::other)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let scheme = if plain { "http" } else { "https" };
        println!(
            "https_tokio: listening on {scheme}://{} with {workers} workers",
            listener.local_addr()?
        );
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = tokio::signal::ctrl_c() => break,
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<_>| async move {
                    let body = if plain {
                        Bytes::from_static(b"Hello, World!")
                    } else {
                        Bytes::from(format!("Hello over TLS, {:?}\n", request.version()))
                    };
                    let mut response = Response::new(Full::new(body));
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(response)
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new()).keep_alive(true);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(100);
                if plain {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                } else if let Ok(stream) = acceptor.accept(stream).await {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            });
        }
        println!("https_tokio: shut down");
        Ok(())
    })
}
