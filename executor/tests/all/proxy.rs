//! A handler that makes an outbound HTTP/1 request with the executor's client.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;

fn proxy_to(
    upstream: SocketAddr,
) -> impl Fn(
    Request<pagekeep_executor::RequestBody>,
) -> std::pin::Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
+ Send
+ Sync
+ 'static {
    move |request| {
        Box::pin(async move {
            let outbound = Request::get(request.uri().path())
                .header("host", "upstream")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            match pagekeep_executor::client::send_request(
                upstream,
                outbound,
                Duration::from_secs(2),
            )
            .await
            {
                Ok(response) => text(response.status(), response.into_body()),
                Err(pagekeep_executor::client::ClientError::Timeout) => {
                    text(StatusCode::GATEWAY_TIMEOUT, "upstream timed out")
                }
                Err(_) => text(StatusCode::BAD_GATEWAY, "upstream failed"),
            }
        })
    }
}

#[test]
fn proxy_forwards_to_upstream_and_reports_its_failures() {
    let upstream = start(builder());
    let proxy = start_with(builder(), proxy_to(upstream.address));
    for _ in 0..5 {
        let (status, body) = get(proxy.address, "/hello");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    }
    let (status, _) = get(proxy.address, "/missing");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let upstream_address = upstream.address;
    upstream.stop();

    // The upstream is gone: connecting is refused, the proxy answers 502.
    let refused = start_with(builder(), proxy_to(upstream_address));
    let (status, _) = get(refused.address, "/hello");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[test]
fn outbound_request_to_a_silent_server_times_out() {
    // Accepts (the kernel does) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = start_with(builder(), proxy_to(silent.local_addr().unwrap()));
    let (status, _) = get(proxy.address, "/hello");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[test]
fn outbound_response_counts_against_the_request_budget() {
    // The upstream's own requests have room for its 1 MiB response.
    let upstream = start_with_arenas(
        builder(),
        pagekeep_executor::PoolConfig::new(2, 4 << 20),
        routes,
    );
    // 1 MiB from upstream cannot fit the proxy's 256 KiB request arenas.
    let proxy = start_with(builder(), proxy_to(upstream.address));
    let (status, body) = get(proxy.address, "/big");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("memory budget"));
    assert_eq!(proxy.stats.over_budget(), 1);
    // Small responses still go through.
    assert_eq!(get(proxy.address, "/hello").0, StatusCode::OK);
}
