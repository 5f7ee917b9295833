//! Every limit of the README's table at its edge (just within: served) and past it
//! (refused or cut). The timeouts use margins wide enough for a loaded machine; the
//! byte limits are exact. (`max_connections`, `arenas` and `arena_wait`, the shutdown
//! deadline and the response write timeout have theirs in `limits`, `arenas`,
//! `shutdown` and `streaming`.)

use std::io::Write;
use std::time::Duration;

use crate::support::*;
use http::StatusCode;

/// A request head of exactly `length` bytes.
fn head_of(length: usize) -> Vec<u8> {
    let start = b"GET /hello HTTP/1.1\r\nhost: t\r\nx-pad: ";
    let end = b"\r\n\r\n";
    let mut head = start.to_vec();
    head.extend(std::iter::repeat_n(b'a', length - start.len() - end.len()));
    head.extend_from_slice(end);
    assert_eq!(head.len(), length);
    head
}

/// Sends `bytes` on `stream` and returns the status line of the response (empty if the
/// connection closed first).
fn status_after(stream: &mut std::net::TcpStream, bytes: &[u8]) -> String {
    let _ = stream.write_all(bytes);
    let mut received = Vec::new();
    read_until(stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        bytes.windows(4).any(|window| window == b"\r\n\r\n")
    });
    let text = String::from_utf8_lossy(&received);
    text.lines().next().unwrap_or("").to_owned()
}

/// `status_after` on a fresh connection.
fn status_of(server: &TestServer, bytes: &[u8]) -> String {
    status_after(&mut raw(server.address), bytes)
}

#[test]
fn max_header_bytes_at_and_past_the_limit() {
    let limit = 8 * 1024;
    let server = start(builder().max_header_bytes(limit));
    assert_eq!(status_of(&server, &head_of(limit)), "HTTP/1.1 200 OK");
    assert_eq!(
        status_of(&server, &head_of(limit + 1)),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[test]
fn max_body_bytes_at_and_past_the_limit() {
    let server = start(builder().max_body_bytes(1000));
    let post = |length: usize| {
        let mut request =
            format!("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {length}\r\n\r\n")
                .into_bytes();
        request.extend(std::iter::repeat_n(b'x', length));
        request
    };
    let chunked = |length: usize| {
        let mut request = format!(
            "POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n{length:x}\r\n"
        )
        .into_bytes();
        request.extend(std::iter::repeat_n(b'x', length));
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        request
    };
    assert_eq!(status_of(&server, &post(1000)), "HTTP/1.1 200 OK");
    assert_eq!(
        status_of(&server, &post(1001)),
        "HTTP/1.1 413 Payload Too Large"
    );
    assert_eq!(status_of(&server, &chunked(1000)), "HTTP/1.1 200 OK");
    assert_eq!(
        status_of(&server, &chunked(1001)),
        "HTTP/1.1 413 Payload Too Large"
    );
}

#[test]
fn header_read_timeout_within_and_past() {
    let server = start(
        builder()
            .header_read_timeout(Duration::from_millis(600))
            .idle_timeout(Duration::from_secs(30)),
    );
    // Within: the head arrives in two halves 100 ms apart.
    let mut stream = raw(server.address);
    stream.write_all(b"GET /hello HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        status_after(&mut stream, b"host: t\r\n\r\n"),
        "HTTP/1.1 200 OK"
    );
    // Past: the second half comes after the timeout; the connection is closed.
    let mut stream = raw(server.address);
    stream.write_all(b"GET /hello HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_after(&mut stream, b"host: t\r\n\r\n"), "");
}

#[test]
fn idle_timeout_within_and_past() {
    let server = start(
        builder()
            .idle_timeout(Duration::from_millis(600))
            .header_read_timeout(Duration::from_secs(30)),
    );
    let request = b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n";
    let mut stream = raw(server.address);
    assert_eq!(status_after(&mut stream, request), "HTTP/1.1 200 OK");
    // Within: the next request after 100 ms of idleness is served on the same
    // connection.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(status_after(&mut stream, request), "HTTP/1.1 200 OK");
    // Past: after 1.5 s the connection has been closed.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_after(&mut stream, request), "");
}

#[test]
fn handler_timeout_within_and_past() {
    let server = start(builder().handler_timeout(Duration::from_millis(600)));
    assert_eq!(get(server.address, "/slow?ms=100").0, StatusCode::OK);
    assert_eq!(
        get(server.address, "/slow?ms=3000").0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(server.stats.handler_timeouts(), 1);
}

#[test]
fn arena_bytes_within_and_past() {
    // 256 KiB budgets: `/hold?kib=N` holds N KiB across an await.
    let server = start_with(
        builder(),
        |request: http::Request<pagekeep_executor::RequestBody>| async move {
            let kib: usize = request
                .uri()
                .query()
                .and_then(|query| query.strip_prefix("kib="))
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0);
            let held = vec![1u8; kib << 10];
            pagekeep_executor::sleep(Duration::from_millis(1)).await;
            text(StatusCode::OK, format!("{}", held.len()))
        },
    );
    // Within: three quarters of the budget (the rest is the request's own head and
    // bookkeeping).
    assert_eq!(get(server.address, "/hold?kib=192").0, StatusCode::OK);
    assert_eq!(
        get(server.address, "/hold?kib=320").0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(server.stats.over_budget(), 1);
}

#[test]
fn usize_max_for_every_size_setting() {
    // Limits at usize::MAX serve as "no limit"; sizes that cannot be reserved make
    // `bind` fail with an error instead of panicking.
    let server = start(
        builder()
            .max_header_bytes(usize::MAX)
            .max_body_bytes(usize::MAX)
            .max_connections(usize::MAX),
    );
    assert_eq!(get(server.address, "/hello").0, StatusCode::OK);
    let (response, _) = raw_exchange(
        server.address,
        b"POST /echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 3\r\n\r\nabc",
    );
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("abc"),
        "{response}"
    );
    for builder in [
        pagekeep_executor::Server::builder().arenas(usize::MAX),
        pagekeep_executor::Server::builder().arena_bytes(usize::MAX),
    ] {
        let bound = builder
            .workers(1)
            .handle_signals(false)
            .bind("127.0.0.1:0".parse().unwrap());
        assert!(bound.is_err(), "{bound:?}");
    }
}
