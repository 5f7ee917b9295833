//! Budgets enforced whatever the handler does between awaits: a handler that goes
//! over its budget and finishes in the same poll is still over budget, and one request
//! allocating far past it never takes the process down.

use std::time::Duration;

use crate::support::*;
use http::{Request, Response, StatusCode};

/// `/once?kib=N`: allocates N KiB and answers in its first poll, never awaiting.
async fn in_one_poll(request: Request<pagekeep_executor::RequestBody>) -> Response<TestBody> {
    let kib: usize = request
        .uri()
        .query()
        .and_then(|query| query.strip_prefix("kib="))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    let block = vec![7u8; kib << 10];
    text(StatusCode::OK, format!("{}", block.len()))
}

#[test]
fn going_over_budget_in_the_poll_that_finishes_still_gets_503() {
    // 256 KiB budgets.
    let server = start_with(builder(), in_one_poll);
    let (status, body) = get(server.address, "/once?kib=512");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("memory budget"));
    assert_eq!(server.stats.over_budget(), 1);
    // Within the budget it is served, and the server carries on.
    let (status, body) = get(server.address, "/once?kib=64");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"65536"[..]));
    assert_eq!(server.stats.over_budget(), 1);
}

#[test]
fn growing_far_past_the_budget_without_awaiting_gets_503_and_the_process_lives() {
    // 1 MiB budgets; `/grow` builds a 20 MiB vector in one poll. The spill past the
    // arena is charged in live bytes, under the process-level hard cap (64 times the
    // arena), so it is served to the allocator and the request is answered 503; with
    // the old cap (16 times, counting bytes ever spilled) the allocation failed and
    // Rust's collections aborted the process. The server runs in a child process so
    // that an abort fails this test instead of ending the test binary.
    let mut child = ChildServer::start("budget");
    let address = child.address;
    let (status, body) = get(address, "/grow");
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(child.wait_exit(Duration::from_millis(100)).is_none());
    // The other requests (the same worker among them) are answered.
    for _ in 0..8 {
        assert_eq!(get(address, "/hello").0, StatusCode::OK);
    }
    child.signal(libc::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
}

#[test]
#[ignore = "aborts the server: one allocation past the spill cap (64 times the budget) \
            gets null from the router, and Rust's infallible collections abort on null; \
            answering 503 instead needs the allocation to succeed or to unwind, which \
            GlobalAlloc cannot do (a redesign, see the README's Requests on arenas)"]
fn one_allocation_past_the_spill_cap_gets_503_and_the_process_lives() {
    // 1 MiB budgets; `/huge` asks for 100 MiB in one `vec!`, never awaiting.
    let mut child = ChildServer::start("budget");
    let address = child.address;
    let request = http::Request::get("/huge")
        .header("host", "t")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let answer = client_runtime().block_on(async move {
        pagekeep_executor::client::send_request(address, request, CLIENT_TIMEOUT).await
    });
    let alive = child.wait_exit(Duration::from_millis(200)).is_none();
    assert!(alive, "the server died: {}", child.stderr());
    assert_eq!(answer.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..4 {
        assert_eq!(get(address, "/hello").0, StatusCode::OK);
    }
    child.signal(libc::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn many_small_allocations_past_the_budget_without_awaiting_get_503() {
    // 256 KiB budgets; 60,000 boxes of 64 bytes (about 4 MiB with the vector) in one
    // poll.
    let server = start_with(
        builder(),
        |request: Request<pagekeep_executor::RequestBody>| async move {
            if request.uri().path() != "/boxes" {
                return routes(request).await;
            }
            let boxes: Vec<Box<[u8; 64]>> = (0..60_000).map(|_| Box::new([1u8; 64])).collect();
            text(StatusCode::OK, format!("{}", boxes.len()))
        },
    );
    let (status, body) = get(server.address, "/boxes");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert_eq!(server.stats.over_budget(), 1);
    assert_eq!(get(server.address, "/hello").0, StatusCode::OK);
}
