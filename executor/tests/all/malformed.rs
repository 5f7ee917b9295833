//! Bad input gets a 4xx or a closed connection, and the server carries on.

use crate::support::*;

fn rejected(response: &str, ended: &Ended) -> bool {
    (response.starts_with("HTTP/1.1 4") || response.is_empty()) && *ended == Ended::Closed
}

#[test]
fn malformed_requests_are_rejected() {
    let server = start(builder());
    let cases: [&[u8]; 6] = [
        b"GARBAGE\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nhost: t\r\ncontent-length: abc\r\n\r\n",
        b"GET /hello HTTP/9.9\r\nhost: t\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nbad header line\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
    ];
    for case in cases {
        let (response, ended) = raw_exchange(server.address, case);
        assert!(
            rejected(&response, &ended),
            "{:?} -> {response:?} {ended:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(get(server.address, "/hello").0, http::StatusCode::OK);
}

#[test]
fn broken_chunked_body_is_a_client_error() {
    let server = start(builder());
    let (response, _) = raw_exchange(
        server.address,
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 4"),
        "{response}"
    );
    assert_eq!(get(server.address, "/hello").0, http::StatusCode::OK);
}

#[test]
fn client_vanishing_mid_request_does_not_hurt_the_server() {
    use std::io::Write;
    let server = start(builder());
    for _ in 0..20 {
        let mut stream = raw(server.address);
        let _ = stream
            .write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\npartial");
        drop(stream);
        let mut stream = raw(server.address);
        let _ = stream.write_all(b"GET /slow?ms=50 HTTP/1.1\r\nhost: t\r\n\r\n");
        drop(stream);
    }
    assert_eq!(get(server.address, "/hello").0, http::StatusCode::OK);
}
