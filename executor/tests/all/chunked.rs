//! Chunked transfer encoding, both directions.

use std::io::Write;

use crate::support::*;

#[test]
fn chunked_request_body_is_reassembled() {
    let server = start(builder());
    let (response, _) = raw_exchange(
        server.address,
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("hello world"), "{response}");
}

#[test]
fn streamed_response_is_sent_chunked_and_decoded_by_the_client() {
    let server = start(builder());
    let mut stream = raw(server.address);
    stream
        .write_all(b"GET /chunked HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |_| false);
    let text = String::from_utf8_lossy(&received).to_lowercase();
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "{text}");

    let address = server.address;
    let body = client_runtime().block_on(async move {
        let request = http::Request::get("/chunked")
            .header("host", "t")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = pagekeep_executor::client::send_request(address, request, CLIENT_TIMEOUT)
            .await
            .unwrap();
        response.into_body()
    });
    assert_eq!(&body[..], b"one,two,three");
}

#[test]
fn expect_100_continue_gets_the_go_ahead_then_the_answer() {
    let server = start(builder());
    let mut stream = raw(server.address);
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        count(bytes, "HTTP/1.1 100 Continue") == 1
    });
    assert_eq!(ended, Ended::Done, "{}", String::from_utf8_lossy(&received));
    stream.write_all(b"hello").unwrap();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        count(bytes, "hello") == 1
    });
    assert_eq!(ended, Ended::Done, "{}", String::from_utf8_lossy(&received));
    // A declared body past the limit is refused without the go-ahead.
    let (response, _) = raw_exchange(
        server.address,
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2000000\r\nexpect: 100-continue\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
}
