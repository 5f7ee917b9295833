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
        let response = executor::client::send_request(address, request, CLIENT_TIMEOUT)
            .await
            .unwrap();
        response.into_body()
    });
    assert_eq!(&body[..], b"one,two,three");
}
