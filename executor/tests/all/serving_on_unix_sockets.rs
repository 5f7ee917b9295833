//! `Server` on a Unix domain socket (`ServerBuilder::bind_unix`): the same HTTP server
//! as on TCP. Clients: curl (`--unix-socket`; CI installs it), the crate's own
//! `ClientConnection::connect_unix`, raw blocking sockets, and (with `http2`) hyper's
//! HTTP/2 client over tokio's `UnixStream`.
//!
//! The rules under test (the README's "Unix domain sockets"): every request in an
//! arena of its own, under its budget (503 past it, the connection goes on); the
//! header read timeout and `max_connections` (503); graceful shutdown lets a request
//! in flight finish and then refuses new connections; no `ClientAddr` on a Unix
//! socket; a stale socket file from an earlier server is replaced.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream as BlockingUnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use pagekeep_executor::client::ClientConnection;
use pagekeep_executor::{ClientAddr, RequestBody};

use crate::support::*;

/// curl's answer over the socket at `path`: the status code and the body.
fn curl(path: &Path, arguments: &[&str], url_path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .arg("--silent")
        .arg("--max-time")
        .arg("10")
        .arg("--unix-socket")
        .arg(path)
        .args(["--write-out", "\n%{http_code}"])
        .args(arguments)
        .arg(format!("http://localhost{url_path}"))
        .output()
        .expect("run curl (CI installs it)");
    assert!(output.status.success(), "curl {url_path}: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// GETs each of `paths` in turn on one connection of the crate's client.
fn get_all_over_unix(path: &Path, paths: &[&'static str]) -> Vec<(StatusCode, Bytes)> {
    let path = path.to_owned();
    let paths = paths.to_vec();
    client_runtime().block_on(async move {
        let mut connection = ClientConnection::<Empty<Bytes>>::connect_unix(&path, CLIENT_TIMEOUT)
            .await
            .expect("connect over the Unix socket");
        let mut results = Vec::new();
        for path in paths {
            results.push(get_on(&mut connection, path).await);
        }
        results
    })
}

/// Reads from `stream` until the server closes it (or 10 s pass); returns the text.
fn read_to_close(stream: &mut BlockingUnixStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(error) => panic!("the server did not close the connection: {error}"),
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn curl_is_served_over_the_unix_socket() {
    let server = UnixTestServer::start(builder(), routes);
    assert_eq!(curl(&server.path, &[], "/hello"), (200, "hello".to_owned()));
    assert_eq!(
        curl(&server.path, &["--data-binary", "a body"], "/echo"),
        (200, "a body".to_owned())
    );
    // Over budget: 503, and the server serves on.
    let (status, reason) = curl(&server.path, &[], "/hog");
    assert_eq!(status, 503);
    assert!(reason.contains("memory budget"), "503 body: {reason}");
    assert_eq!(curl(&server.path, &[], "/hello"), (200, "hello".to_owned()));
    assert_eq!(server.stats.over_budget(), 1);
    assert_eq!(server.stats.accepted_connections(), 4);
}

#[test]
fn the_crates_client_keeps_a_unix_connection_alive_across_requests_each_in_an_arena() {
    /// Where a fresh allocation of the handler landed: in an arena of the pool?
    async fn probe(request: Request<RequestBody>) -> Response<TestBody> {
        if request.uri().path() == "/probe" {
            let probe = Box::new([3u8; 64]);
            let address = probe.as_ptr().addr();
            return text(StatusCode::OK, format!("{address}"));
        }
        routes(request).await
    }
    let server = UnixTestServer::start(builder(), probe);
    let results = get_all_over_unix(&server.path, &["/hello", "/probe", "/hog", "/probe"]);
    assert_eq!(results[0], (StatusCode::OK, Bytes::from_static(b"hello")));
    assert_eq!(results[2].0, StatusCode::SERVICE_UNAVAILABLE);
    for (status, body) in [&results[1], &results[3]] {
        assert_eq!(*status, StatusCode::OK);
        let address: usize = std::str::from_utf8(body).unwrap().parse().unwrap();
        assert!(
            server.pool().arena_index_of(address).is_some(),
            "{address:#x} is not in the server's arenas"
        );
    }
    assert_eq!(server.stats.accepted_connections(), 1, "one connection");
    assert_eq!(server.stats.requests(), 4);
}

#[test]
fn a_silent_unix_client_is_closed_at_the_header_read_timeout() {
    let server = UnixTestServer::start(
        builder().header_read_timeout(Duration::from_millis(200)),
        routes,
    );
    let mut stream = BlockingUnixStream::connect(&server.path).unwrap();
    stream.write_all(b"GET /hel").unwrap();
    let received = read_to_close(&mut stream);
    assert!(!received.contains("200"), "{received}");
    server.assert_no_connection_left();
}

#[test]
fn unix_connections_past_max_connections_get_503() {
    let server = UnixTestServer::start(builder().max_connections(1), routes);
    // The first holds the only slot (served: its answer shows it was accepted).
    let mut first = BlockingUnixStream::connect(&server.path).unwrap();
    first
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 12];
    first.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let mut second = BlockingUnixStream::connect(&server.path).unwrap();
    let refused = read_to_close(&mut second);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert_eq!(server.stats.refused_connections(), 1);
    drop(first);
    server.assert_no_connection_left();
}

#[test]
fn shutdown_lets_a_unix_request_in_flight_finish_then_refuses_connections() {
    let server = UnixTestServer::start(builder(), routes);
    let path = server.path.clone();
    let stats = server.stats.clone();
    let shutdown = server.shutdown.clone();
    let in_flight = std::thread::spawn(move || get_all_over_unix(&path, &["/slow?ms=300"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.requests() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never came"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    shutdown.trigger();
    assert_eq!(
        in_flight.join().unwrap(),
        [(StatusCode::OK, Bytes::from_static(b"slow"))]
    );
    // The listeners are closed (each accept loop drops its own when it sees the
    // shutdown); the file is left (the next bind replaces it).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while BlockingUnixStream::connect(&server.path).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after shutdown"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let error = BlockingUnixStream::connect(&server.path).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    server.stop();
}

#[test]
fn a_unix_server_replaces_a_stale_socket_and_its_requests_carry_no_client_addr() {
    async fn client_addr(request: Request<RequestBody>) -> Response<TestBody> {
        let answer = match request.extensions().get::<ClientAddr>() {
            Some(ClientAddr(address)) => format!("{address}"),
            None => "none".to_owned(),
        };
        text(StatusCode::OK, answer)
    }
    let directory =
        std::env::temp_dir().join(format!("pagekeep-unix-server-stale-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    // A regular file is not replaced.
    let file = directory.join("file");
    std::fs::write(&file, b"not a socket").unwrap();
    let error = pagekeep_executor::Server::builder()
        .workers(1)
        .handle_signals(false)
        .arena_pool(own_servers_pool())
        .bind_unix(&file)
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    // A socket nobody listens on any more (its listener dropped, its file left).
    let path = directory.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = pagekeep_executor::Server::builder()
        .workers(1)
        .handle_signals(false)
        .client_addr(true)
        .arena_pool(own_servers_pool())
        .bind_unix(&path)
        .expect("a stale socket is replaced");
    let shutdown = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.serve(client_addr));
    let answer = get_all_over_unix(&path, &["/"]);
    assert_eq!(answer, [(StatusCode::OK, Bytes::from_static(b"none"))]);
    shutdown.trigger();
    serving.join().unwrap().unwrap();
    std::fs::remove_dir_all(&directory).unwrap();
}

#[cfg(feature = "http2")]
#[test]
fn hypers_http2_client_is_served_over_the_unix_socket() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let server = UnixTestServer::start(builder(), routes);
    let path = server.path.clone();
    let results = crate::http2::on_tokio(async move {
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("the HTTP/2 handshake");
        tokio::spawn(connection);
        let mut streams = Vec::new();
        for path in ["/hello", "/slow?ms=50", "/hog", "/chunked"] {
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                sender.ready().await.unwrap();
                let request = Request::get(format!("http://localhost{path}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.version(), http::Version::HTTP_2);
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            }));
        }
        let mut results = Vec::new();
        for stream in streams {
            results.push(stream.await.unwrap());
        }
        results
    });
    assert_eq!(results[0], (StatusCode::OK, Bytes::from_static(b"hello")));
    assert_eq!(results[1], (StatusCode::OK, Bytes::from_static(b"slow")));
    assert_eq!(results[2].0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        results[3],
        (StatusCode::OK, Bytes::from_static(b"one,two,three"))
    );
    assert_eq!(server.stats.accepted_connections(), 1);
}
