//! TLS (feature `tls`): the server over rustls, driven by hyper's client over
//! tokio-rustls (HTTP/1.1, and HTTP/2 by ALPN with the `http2` feature), by curl, and
//! by clients that never finish the handshake; the `https` example run as a user runs
//! it.
//!
//! The rules under test (the README's "TLS"): the handshake is bounded by the header
//! read timeout and gives the connection's slot back when it fails; it and the TLS
//! state of the connection live outside every request arena, so a kept-alive TLS
//! connection holds no arena between its requests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `scenario` on a tokio runtime of its own, bounded by [`LIMIT`].
fn on_tokio<F: Future>(scenario: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(LIMIT, scenario)
                .await
                .expect("the scenario took too long")
        })
}

/// A self-signed certificate for `localhost`, and the server configuration that
/// presents it (no ALPN set: the server fills in its own).
fn server_tls() -> (CertificateDer<'static>, rustls::ServerConfig) {
    let certified = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
    let certificate = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .unwrap();
    (certificate, config)
}

/// A client that trusts `certificate` and offers `alpn`.
fn connector(certificate: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

type Stream = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A TLS connection to `address` (the handshake done), and the protocol ALPN chose.
async fn tls_connect(address: SocketAddr, connector: &TlsConnector) -> (Stream, Option<Vec<u8>>) {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = connector
        .connect(name, tcp)
        .await
        .expect("the TLS handshake");
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (TokioIo::new(stream), alpn)
}

/// GETs each of `paths` in turn over one HTTP/1.1 connection on `stream`.
async fn get_all_http1<S>(stream: S, paths: &[&str]) -> Vec<(StatusCode, Bytes)>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(stream).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut results = Vec::new();
    for path in paths {
        sender.ready().await.unwrap();
        let request = Request::get(*path)
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_11);
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        results.push((status, body));
    }
    drop(sender);
    let _ = driver.await;
    results
}

#[test]
fn an_http1_client_gets_its_responses_over_tls() {
    let (certificate, tls) = server_tls();
    let server = start(builder().tls(tls));
    let results = on_tokio(async {
        let (stream, alpn) =
            tls_connect(server.address, &connector(&certificate, &[b"http/1.1"])).await;
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        get_all_http1(stream, &["/hello", "/chunked", "/panic", "/hello"]).await
    });
    let statuses: Vec<_> = results.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK
        ]
    );
    assert_eq!(results[0].1, Bytes::from_static(b"hello"));
    assert_eq!(results[1].1, Bytes::from_static(b"one,two,three"));
    assert_eq!(server.stats.accepted_connections(), 1);
}

#[cfg(unix)]
#[test]
fn an_http1_client_gets_its_responses_over_tls_on_a_unix_socket() {
    let (certificate, tls) = server_tls();
    let server = UnixTestServer::start(builder().tls(tls), routes);
    let path = server.path.clone();
    let results = on_tokio(async move {
        let socket = tokio::net::UnixStream::connect(&path).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = connector(&certificate, &[b"http/1.1"])
            .connect(name, socket)
            .await
            .expect("the TLS handshake over the Unix socket");
        get_all_http1(TokioIo::new(stream), &["/hello", "/hog", "/hello"]).await
    });
    assert_eq!(results[0], (StatusCode::OK, Bytes::from_static(b"hello")));
    assert_eq!(results[1].0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(results[2], (StatusCode::OK, Bytes::from_static(b"hello")));
    assert_eq!(server.stats.accepted_connections(), 1);
}

#[test]
fn a_kept_alive_tls_connection_holds_no_arena_between_requests() {
    let (certificate, tls) = server_tls();
    let server = start(builder().tls(tls));
    on_tokio(async {
        let (stream, _) = tls_connect(server.address, &connector(&certificate, &[])).await;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(stream).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        for path in ["/hello", "/chunked", "/typed"] {
            sender.ready().await.unwrap();
            let request = Request::get(path)
                .header(http::header::HOST, "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().collect().await.unwrap();
            // The connection stays open, its TLS state alive: no arena may be held
            // for it (in use or quarantined).
            let pool = server.pool();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let stats = pool.stats();
                if stats.free == stats.arenas {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "an open TLS connection keeps an arena: {stats:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
}

#[test]
fn a_client_that_never_sends_a_client_hello_is_closed_at_the_header_read_timeout() {
    let (_, tls) = server_tls();
    let server = start(
        builder()
            .tls(tls)
            .header_read_timeout(Duration::from_millis(200)),
    );
    let mut stream = raw(server.address);
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, Duration::from_secs(10), |_| {
        false
    });
    assert_eq!(ended, Ended::Closed);
    assert!(received.is_empty(), "{received:?}");
    server.assert_no_connection_left();
    assert_eq!(server.stats.tls_handshake_timeouts(), 1);
}

#[test]
fn plain_http_on_a_tls_port_fails_the_handshake_and_frees_the_slot() {
    let (_, tls) = server_tls();
    let server = start(builder().tls(tls).max_connections(1));
    let (_, ended) = raw_exchange(server.address, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(ended, Ended::Closed);
    // The slot goes back after the failure is counted (the socket may close before).
    server.assert_no_connection_left();
    assert_eq!(server.stats.tls_handshake_failures(), 1);
}

#[cfg(feature = "http2")]
#[test]
fn an_http2_client_gets_h2_by_alpn_with_each_stream_in_its_own_arena() {
    let (certificate, tls) = server_tls();
    let server = start(builder().tls(tls));
    let results = on_tokio(async {
        let (stream, alpn) = tls_connect(
            server.address,
            &connector(&certificate, &[b"h2", b"http/1.1"]),
        )
        .await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let (sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), stream)
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let streams: Vec<_> = ["/slow?ms=20", "/hog", "/hello", "/panic"]
            .into_iter()
            .map(|path| tokio::spawn(crate::http2::get_h2(sender.clone(), path)))
            .collect();
        let mut results = Vec::new();
        for stream in streams {
            results.push(stream.await.unwrap().0);
        }
        results
    });
    assert_eq!(
        results,
        [
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK,
            StatusCode::INTERNAL_SERVER_ERROR
        ]
    );
    assert_eq!(server.stats.accepted_connections(), 1);
}

/// The `https` example, built with this test binary's features, on a free port with 2
/// workers; killed on drop.
pub(crate) struct HttpsExample(Child);

impl Drop for HttpsExample {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_https_example() -> (HttpsExample, SocketAddr) {
    let features = if cfg!(feature = "http2") {
        "tls,http2"
    } else {
        "tls"
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "pagekeep-executor",
            "--example",
            "https",
            "--features",
            features,
        ])
        .status()
        .expect("run cargo");
    assert!(status.success(), "cannot build the https example");
    let test_binary = std::env::current_exe().unwrap();
    let binary = test_binary
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("https{}", std::env::consts::EXE_SUFFIX));
    let child = Command::new(binary)
        .args(["0", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the example");
    let mut example = HttpsExample(child);
    let mut line = String::new();
    BufReader::new(example.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split("https://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ' ']).next())
        .and_then(|address| address.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (example, address)
}

/// `curl -k` against the example: HTTP/1.1, and HTTP/2 by ALPN with the `http2`
/// feature. CI installs curl (`.ci/run`).
#[cfg(unix)]
#[test]
fn curl_gets_the_https_example() {
    let (_example, address) = start_https_example();
    let curl = |version: &str| {
        let output = Command::new("curl")
            .args([
                "-k",
                "-s",
                "--max-time",
                "10",
                version,
                &format!("https://{address}/"),
            ])
            .output()
            .expect("run curl (CI installs it)");
        assert!(output.status.success(), "curl {version}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(curl("--http1.1"), "Hello over TLS, HTTP/1.1\n");
    if cfg!(feature = "http2") {
        assert_eq!(curl("--http2"), "Hello over TLS, HTTP/2.0\n");
    }
}
