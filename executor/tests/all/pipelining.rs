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
