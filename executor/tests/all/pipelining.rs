//! Several requests written at once, before any response is read.

use std::io::Write;

use crate::support::*;

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = start(builder());
    let mut stream = raw(server.address);
    stream
        .write_all(
            b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n\
              POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 6\r\n\r\nsecond\
              GET /slow?ms=10 HTTP/1.1\r\nhost: t\r\n\r\n\
              GET /hello HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |_| false);
    assert_eq!(
        ended,
        Ended::Closed,
        "server closes after `connection: close`"
    );
    let text = String::from_utf8_lossy(&received);
    assert_eq!(count(&received, "HTTP/1.1 200 OK"), 4, "{text}");
    let first = text.find("hello").unwrap();
    let second = text.find("second").unwrap();
    let third = text.find("slow").unwrap();
    let fourth = text.rfind("hello").unwrap();
    assert!(
        first < second && second < third && third < fourth,
        "out of order: {text}"
    );
}

#[test]
fn a_panic_among_pipelined_requests_is_answered_in_its_place() {
    let server = start(builder());
    let mut stream = raw(server.address);
    stream
        .write_all(
            b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n\
              GET /panic HTTP/1.1\r\nhost: t\r\n\r\n\
              GET /hello HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |_| false);
    let text = String::from_utf8_lossy(&received);
    assert_eq!(ended, Ended::Closed);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &text[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "500", "200"], "{text}");
}

#[test]
fn a_thousand_pipelined_requests_in_one_stream_are_all_answered() {
    // 33 KB of requests, more than the server's 16 KiB head limit, written while the
    // responses are read: the limit is per head, not per read buffer.
    let server = start(builder());
    let mut stream = raw(server.address);
    let mut requests = b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n".repeat(999);
    requests.extend_from_slice(b"GET /hello HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&requests))
    };
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |_| false);
    writer.join().unwrap().unwrap();
    assert_eq!(ended, Ended::Closed);
    assert_eq!(count(&received, "HTTP/1.1 200 OK"), 1000);
}
