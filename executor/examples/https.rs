//! "Hello over TLS" on every path, with a self-signed certificate for `localhost` and
//! `127.0.0.1` made at start-up (rcgen). With the `http2` feature, ALPN offers `h2` and
//! `http/1.1`, so a client that speaks HTTP/2 gets it.
//!
//! `cargo run --release -p pagekeep-executor --features tls,http2 --example https -- [PORT] [WORKERS]`
//! then `curl -k https://127.0.0.1:PORT/` (`--http2` for HTTP/2). Ctrl-C shuts down
//! gracefully.

mod common;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

// Routes each request's allocations to its own arena (see `pagekeep_executor::RequestAllocator`).
#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8443);
    let certified = rcgen::generate_simple_self_signed(["localhost".into(), "127.0.0.1".into()])
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    // rustls' process-wide provider: ring, the one this crate's `tls` feature builds.
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(std::io::Error::other)?;
    // No ALPN protocols set: the server offers `h2` (with `http2`) and `http/1.1`.
    let server = pagekeep_executor::Server::builder()
        .workers(workers)
        .tls(tls)
        .bind(address)?;
    println!(
        "https: listening on https://{} with {workers} workers (self-signed certificate)",
        server.local_addr()
    );
    server.serve(
        |request: http::Request<pagekeep_executor::RequestBody>| async move {
            let body = format!("Hello over TLS, {:?}\n", request.version());
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
            response
        },
    )?;
    println!("https: shut down");
    Ok(())
}
