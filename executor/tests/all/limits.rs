//! Connection, header and body limits.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

fn request_hello(stream: &mut std::net::TcpStream, round: usize) -> Ended {
    let mut received = Vec::new();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let _ = round;
    read_until(stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        count(bytes, "hello") == 1
    })
}

#[test]
fn connections_past_the_maximum_are_refused_without_disturbing_served_ones() {
    let server = start(builder().max_connections(2));
    let mut first = raw(server.address);
    let mut second = raw(server.address);
    assert_eq!(request_hello(&mut first, 1), Ended::Done);
    assert_eq!(request_hello(&mut second, 1), Ended::Done);

    // A small flood: each is answered 503 and closed.
    for _ in 0..10 {
        let (response, ended) =
            raw_exchange(server.address, b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n");
        assert_eq!(ended, Ended::Closed);
        assert!(
            response.is_empty() || response.starts_with("HTTP/1.1 503"),
            "{response}"
        );
    }
    assert_eq!(server.stats.refused_connections(), 10);
    // The served connections are untouched.
    assert_eq!(request_hello(&mut first, 2), Ended::Done);
    assert_eq!(request_hello(&mut second, 2), Ended::Done);

    // Closing one frees its slot (once the server has seen the close).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = raw(server.address);
        if request_hello(&mut next, 1) == Ended::Done {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn oversized_request_head_gets_431() {
    let server = start(builder().max_header_bytes(8 * 1024));
    let mut request = b"GET /hello HTTP/1.1\r\nhost: t\r\nx-big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let (response, _) = raw_exchange(server.address, &request);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    // A normal request right after is fine.
    assert_eq!(get(server.address, "/hello").0, http::StatusCode::OK);
}

#[test]
fn declared_oversized_body_gets_413_without_the_handler() {
    let server = start(builder().max_body_bytes(1000));
    let (response, ended) = raw_exchange(
        server.address,
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2000\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(
        ended,
        Ended::Closed,
        "connection closed instead of draining the body"
    );
}

#[test]
fn chunked_body_growing_past_the_limit_fails_the_read() {
    let server = start(builder().max_body_bytes(1000));
    let mut request =
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        request.extend_from_slice(b"200\r\n");
        request.extend(std::iter::repeat_n(b'x', 0x200));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (response, _) = raw_exchange(server.address, &request);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    // Within the limit is fine.
    let (response, _) = raw_exchange(
        server.address,
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nconnection: close\r\n\r\nsmall",
    );
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("small"),
        "{response}"
    );
}

#[test]
fn a_bind_that_fails_takes_nothing_from_the_process() {
    // A server retrying a taken port, twice as many times as the process can register
    // arena pools, then binding another one: every failed bind must have left the
    // process as it found it (a registered pool is never given back).
    let mut child = ChildServer::start("bind-retries");
    assert_eq!(get(child.address, "/hello").0, http::StatusCode::OK);
    child.signal(libc::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn fifteen_hundred_connections_at_once_are_all_served() {
    let server = start(builder());
    let mut streams: Vec<std::net::TcpStream> = (0..1500)
        .map(|_| std::net::TcpStream::connect(server.address).unwrap())
        .collect();
    for stream in &mut streams {
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
            .unwrap();
    }
    for stream in &mut streams {
        let mut received = Vec::new();
        let ended = read_until(stream, &mut received, CLIENT_TIMEOUT, |bytes| {
            count(bytes, "hello") == 1
        });
        assert_eq!(ended, Ended::Done);
    }
    assert_eq!(server.stats.accepted_connections(), 1500);
}

/// A response may carry more values of one header than a header map has slots for
/// names (`set-cookie` 30,000 times, with a budget that fits them): it is sent whole,
/// and the connection serves its next request. It used to panic while the response was
/// moved into the connection's header map, and the client got an empty reply.
#[test]
fn a_response_with_30000_values_of_one_header_is_sent_whole() {
    const COOKIES: usize = 30_000;
    let server = start_with_arenas(
        builder(),
        pagekeep_arena::PoolConfig::new(2, 8 << 20),
        |request: http::Request<pagekeep_executor::RequestBody>| async move {
            let mut response = text(http::StatusCode::OK, "done");
            if request.uri().path() == "/cookies" {
                // Static values: no allocation per value (debug builds of the arena
                // check every allocation).
                for _ in 0..COOKIES {
                    response.headers_mut().append(
                        http::header::SET_COOKIE,
                        http::HeaderValue::from_static("c=1"),
                    );
                }
            }
            response
        },
    );
    let mut stream = raw(server.address);
    stream
        .write_all(b"GET /cookies HTTP/1.1\r\nhost: t\r\n\r\nGET /next HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    // Longer than the other tests wait: the workspace builds the `http` crate without
    // its debug assertions, but a copy of this crate from crates.io has none of the
    // workspace's profile settings, and there `http` checks each of the 30,000 values as
    // the response moves (about 16 s here, against 1 s without the checks).
    let timeout = CLIENT_TIMEOUT * 12;
    let ended = read_until(&mut stream, &mut received, timeout, |bytes| {
        count(bytes, "done") == 2
    });
    assert_eq!(ended, Ended::Done, "{} bytes received", received.len());
    assert_eq!(count(&received, "HTTP/1.1 200 OK"), 2);
    assert_eq!(count(&received, "set-cookie: c=1\r\n"), COOKIES);
}
