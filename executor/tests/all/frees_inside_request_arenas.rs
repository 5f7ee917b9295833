//! A request's arena blocks are freed inside its arena, before its lease is released:
//! there a free is one range compare and a plain count, where a block freed outside
//! the arena is found by address and counted with an atomic (and the lease's release
//! then takes an atomic too).
//!
//! Counted with the tests' global allocator (`support::arena_frees_outside_arenas`), on
//! the thread that runs the connection and its requests. Until the handler's own header
//! map was freed in its arena, every response with a header the handler set freed its
//! map's two blocks (its index table and its entries) outside it, when the response
//! left with the connection's map.
//!
//! Not covered, still freed outside the arena (by hyper, in the connection's task): a
//! data frame of the body made in the arena (a `Bytes` of an owned `String`), once
//! written; and a custom header name the handler made (`x-served-by`: hyper copies it
//! into a `Bytes` of the arena when it goes into the handler's map), which leaves in the
//! connection's map and is freed when hyper clears that map after writing the head.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use pagekeep_executor::RequestBody;

use crate::support::*;

/// Requests sent between two readings of the count.
const STEADY_REQUESTS: usize = 50;

/// Requests sent first, for the connection and the worker to grow what they keep.
const WARM_UP_REQUESTS: usize = 10;

/// Answers `GET /arena-frees` with the worker thread's count of arena blocks freed
/// outside any arena; any other request with a static body and headers of the
/// handler's: one for `/`, two for `/headers`.
async fn count_or_answer(request: Request<RequestBody>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/arena-frees" {
        return Response::new(Full::new(Bytes::from(
            arena_frees_outside_arenas().to_string(),
        )));
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if path == "/headers" {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Sends `GET path` on `stream` and returns the body of its response (the server's
/// answers carry a `content-length`).
fn exchange(stream: &mut std::net::TcpStream, path: &str) -> String {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n"
    )
    .unwrap();
    let mut received = Vec::new();
    let complete = |received: &[u8]| -> Option<usize> {
        let text = std::str::from_utf8(received).ok()?;
        let head_end = text.find("\r\n\r\n")? + 4;
        let length: usize = text[..head_end].lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })?;
        (received.len() >= head_end + length).then_some(head_end)
    };
    let ended = read_until(stream, &mut received, Duration::from_secs(5), |received| {
        complete(received).is_some()
    });
    assert_eq!(ended, Ended::Done, "{}", String::from_utf8_lossy(&received));
    let head_end = complete(&received).unwrap();
    assert!(received.starts_with(b"HTTP/1.1 200"), "{path}");
    String::from_utf8(received[head_end..].to_vec()).unwrap()
}

/// The count read through `stream`.
fn arena_frees_on(stream: &mut std::net::TcpStream) -> u64 {
    exchange(stream, "/arena-frees").parse().unwrap()
}

#[test]
fn a_response_with_headers_frees_no_arena_block_outside_its_arena() {
    // One worker: the thread that reads the count runs the connection and its requests.
    let server = start_with(builder().workers(1), count_or_answer);
    let mut stream = raw(server.address);
    // (path, arena blocks freed outside any arena over STEADY_REQUESTS requests).
    let mut frees = Vec::new();
    for path in ["/", "/headers"] {
        for _ in 0..WARM_UP_REQUESTS {
            assert_eq!(exchange(&mut stream, path), "Hello, World!");
        }
        // Between the two readings: the tail of the first reading's request (its
        // body, a `Bytes` of its arena, which hyper frees once written: one block),
        // then the requests counted, then the head of the second reading's request.
        let before = arena_frees_on(&mut stream);
        for _ in 0..STEADY_REQUESTS {
            exchange(&mut stream, path);
        }
        let after = arena_frees_on(&mut stream);
        frees.push((path, after - before - 1));
    }
    assert!(
        frees.iter().all(|&(_, frees)| frees == 0),
        "arena blocks freed outside their arena over {STEADY_REQUESTS} requests on one \
         connection, by path: {frees:?}"
    );
    drop(stream);
    server.assert_no_connection_left();
    server.assert_arenas_returned();
}
