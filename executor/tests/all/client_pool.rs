//! The pooled client (`client::Client`): reuse, the per-host bound, connections closed
//! by the server, timeouts, URLs a user gets wrong, and no request arena pinned by a
//! pooled connection.

use std::io::{Read, Write};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use pagekeep_executor::client::{Client, ClientError};

/// GETs `url` with `client` and reads the whole body.
async fn fetch(client: &Client, url: &str) -> Result<(StatusCode, Bytes), ClientError> {
    let response = client.get(url).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(ClientError::Http)?
        .to_bytes();
    Ok((status, body))
}

#[test]
fn the_pool_reuses_one_connection_for_requests_in_turn() {
    let server = start(builder());
    let url = format!("http://127.0.0.1:{}/hello", server.address.port());
    let client = Client::new();
    let (answers, open, idle) = client_runtime().block_on({
        let client = client.clone();
        let url = url.clone();
        async move {
            let mut answers = Vec::new();
            for _ in 0..5 {
                answers.push(fetch(&client, &url).await.unwrap());
            }
            (
                answers,
                client.open_connections(),
                client.idle_connections(),
            )
        }
    });
    for answer in answers {
        assert_eq!(answer, (StatusCode::OK, Bytes::from_static(b"hello")));
    }
    assert_eq!((open, idle), (1, 1));
    assert_eq!(server.stats.accepted_connections(), 1);
    assert_eq!(server.stats.requests(), 5);
}

#[test]
fn the_bound_per_host_holds_and_requests_past_it_wait() {
    let server = start(builder());
    let url = format!("http://127.0.0.1:{}/slow?ms=50", server.address.port());
    let client = Client::builder().max_connections_per_host(2).build();
    let (answers, most_open) = client_runtime().block_on({
        let client = client.clone();
        let url = url.clone();
        async move {
            let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let requests: Vec<_> = (0..6)
                .map(|_| {
                    let client = client.clone();
                    let url = url.clone();
                    let done = std::sync::Arc::clone(&done);
                    pagekeep_executor::spawn(async move {
                        let answer = fetch(&client, &url).await;
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        answer
                    })
                })
                .collect();
            let mut most_open = 0;
            while done.load(std::sync::atomic::Ordering::SeqCst) < requests.len() {
                most_open = most_open.max(client.open_connections());
                pagekeep_executor::sleep(Duration::from_millis(1)).await;
            }
            let mut answers = Vec::new();
            for request in requests {
                answers.push(request.await.unwrap());
            }
            (answers, most_open)
        }
    });
    for answer in answers {
        assert_eq!(answer.unwrap().0, StatusCode::OK);
    }
    assert!(most_open <= 2, "{most_open} connections open at once");
    assert!(server.stats.accepted_connections() <= 2);
    assert_eq!(server.stats.requests(), 6);
}

#[test]
fn an_idle_connection_the_server_closed_is_not_reused() {
    let server = start(builder().idle_timeout(Duration::from_millis(100)));
    let url = format!("http://127.0.0.1:{}/hello", server.address.port());
    let client = Client::new();
    let stats = server.stats.clone();
    let (first, second) = client_runtime().block_on({
        let client = client.clone();
        let url = url.clone();
        async move {
            let first = fetch(&client, &url).await;
            pagekeep_executor::timeout(CLIENT_TIMEOUT, async {
                while stats.open_connections() > 0 {
                    pagekeep_executor::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the server never closed the idle connection");
            (first, fetch(&client, &url).await)
        }
    });
    assert_eq!(first.unwrap().0, StatusCode::OK);
    assert_eq!(second.unwrap().0, StatusCode::OK);
    assert_eq!(server.stats.accepted_connections(), 2);
    drop(client);
}

/// A server on a plain thread that answers one request per connection with a
/// keep-alive response, then closes the connection without a word, `connections`
/// times.
fn one_answer_then_close(connections: usize) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    address
}

#[test]
fn a_get_on_a_connection_closed_under_it_is_sent_again_once() {
    // The server closes each connection after one answer, right away: the second GET
    // finds its pooled connection closed (before or after writing to it) and goes
    // again on a new one.
    for _ in 0..20 {
        let address = one_answer_then_close(2);
        let url = format!("http://{address}/");
        let client = Client::new();
        let (first, second) = client_runtime().block_on({
            let client = client.clone();
            async move { (fetch(&client, &url).await, fetch(&client, &url).await) }
        });
        assert_eq!(first.unwrap().1, "ok");
        assert_eq!(second.unwrap().1, "ok");
    }
}

#[test]
fn a_server_that_never_answers_gives_the_timeout_error() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    let client = Client::builder()
        .request_timeout(Duration::from_millis(200))
        .build();
    let result = client_runtime().block_on({
        let client = client.clone();
        let url = url.clone();
        async move { client.get(&url).await.map(|_| ()) }
    });
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    // The timed-out request's connection is closed, not pooled.
    assert_eq!(client.open_connections(), 0);
}

#[test]
fn urls_the_client_cannot_serve_are_clear_errors() {
    let client = Client::new();
    client_runtime().block_on({
        let client = client.clone();
        async move {
            let https = client.get("https://127.0.0.1/").await.unwrap_err();
            assert!(
                matches!(https, ClientError::UnsupportedScheme(_)),
                "{https:?}"
            );
            assert!(https.to_string().contains("TLS"), "{https}");
            let relative = client.get("/just/a/path").await.unwrap_err();
            assert!(
                matches!(relative, ClientError::InvalidUrl(_)),
                "{relative:?}"
            );
            let garbage = client.get("http://exa mple/").await.unwrap_err();
            assert!(matches!(garbage, ClientError::InvalidUrl(_)), "{garbage:?}");
            let unknown = client
                .get("http://no-such-host.invalid/")
                .await
                .unwrap_err();
            assert!(matches!(unknown, ClientError::Connect(_)), "{unknown:?}");
            assert!(
                unknown.to_string().contains("no-such-host.invalid"),
                "{unknown}"
            );
        }
    });
    assert_eq!(client.open_connections(), 0);
}

#[test]
fn a_url_without_a_port_goes_to_port_80_with_a_bare_host_header() {
    // Port 80 may be served on this machine or not: whichever, the request must go
    // there (the error names it) and not to some other port.
    let client = Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(4))
        .build();
    let result = client_runtime().block_on({
        let client = client.clone();
        async move { client.get("http://127.0.0.1/").await }
    });
    if let Err(error) = result {
        assert!(
            matches!(
                error,
                ClientError::Connect(_) | ClientError::ConnectTimeout | ClientError::Timeout
            ),
            "{error:?}"
        );
        if let ClientError::Connect(error) = error {
            assert!(error.to_string().contains("127.0.0.1:80"), "{error}");
        }
    }
    // The Host header a request without one gets.
    let server = start_with(
        builder(),
        |request: http::Request<pagekeep_executor::RequestBody>| async move {
            let host = request.headers().get("host").cloned();
            text(
                StatusCode::OK,
                host.map_or_else(Bytes::new, |host| Bytes::copy_from_slice(host.as_bytes())),
            )
        },
    );
    let url = format!("http://LocalHost:{}/", server.address.port());
    let answer = client_runtime().block_on({
        let client = client.clone();
        let url = url.clone();
        async move { fetch(&client, &url).await.unwrap() }
    });
    assert_eq!(answer.1, format!("LocalHost:{}", server.address.port()));
    // The pooled connection goes before the server checks that none is left.
    drop(client);
}

#[test]
fn a_response_cut_short_or_dropped_unread_closes_its_connection_and_frees_its_slot() {
    // Cut short: the body fails, and the connection is not pooled.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort");
    });
    let client = Client::builder().max_connections_per_host(1).build();
    let url = format!("http://{address}/");
    let cut = client_runtime().block_on({
        let client = client.clone();
        let url = url.clone();
        async move { fetch(&client, &url).await }
    });
    assert!(matches!(cut, Err(ClientError::Http(_))), "{cut:?}");
    assert_eq!(client.open_connections(), 0);

    // Dropped unread, with a bound of one: the next request gets a connection.
    let server = start(builder());
    let url = format!("http://127.0.0.1:{}/hello", server.address.port());
    let answer = client_runtime().block_on({
        let client = client.clone();
        let url = url.clone();
        async move {
            let unread = client.get(&url).await.unwrap();
            assert_eq!(client.open_connections(), 1);
            drop(unread);
            pagekeep_executor::timeout(CLIENT_TIMEOUT, fetch(&client, &url))
                .await
                .expect("the slot of the dropped response was never freed")
        }
    });
    assert_eq!(answer.unwrap().1, "hello");
    assert_eq!(server.stats.accepted_connections(), 2);
    drop(client);
}

#[test]
fn a_response_held_unread_keeps_its_slot_and_a_request_past_the_bound_times_out() {
    let server = start(builder());
    let url = format!("http://127.0.0.1:{}/hello", server.address.port());
    let client = Client::builder()
        .max_connections_per_host(1)
        .request_timeout(Duration::from_millis(200))
        .build();
    let (waited, after) = client_runtime().block_on({
        let client = client.clone();
        let url = url.clone();
        async move {
            let held = client.get(&url).await.unwrap();
            let waited = client.get(&url).await.map(|_| ());
            drop(held);
            (waited, fetch(&client, &url).await)
        }
    });
    assert!(matches!(waited, Err(ClientError::Timeout)), "{waited:?}");
    assert_eq!(after.unwrap().1, "hello");
    drop(client);
}

#[test]
fn connections_pooled_on_a_runtime_that_is_gone_are_not_reused() {
    let server = start(builder());
    let url = format!("http://127.0.0.1:{}/hello", server.address.port());
    let client = Client::new();
    // Each connection's task runs on the runtime that opened it.
    let first = pagekeep_executor::Runtime::builder()
        .workers(1)
        .build()
        .unwrap();
    let answer = first.block_on({
        let (client, url) = (client.clone(), url.clone());
        async move { fetch(&client, &url).await }
    });
    assert_eq!(answer.unwrap().1, "hello");
    assert_eq!(client.idle_connections(), 1);
    drop(first);
    let answer = client_runtime().block_on({
        let (client, url) = (client.clone(), url.clone());
        async move { fetch(&client, &url).await }
    });
    assert_eq!(answer.unwrap().1, "hello");
    assert_eq!(server.stats.accepted_connections(), 2);
    drop(client);
}

#[test]
fn requests_in_flight_finish_when_the_client_is_dropped() {
    let server = start(builder());
    let url = format!("http://127.0.0.1:{}/slow?ms=100", server.address.port());
    let answers = client_runtime().block_on({
        let url = url.clone();
        async move {
            let client = Client::new();
            let requests: Vec<_> = (0..3)
                .map(|_| {
                    let client = client.clone();
                    let url = url.clone();
                    pagekeep_executor::spawn(async move { fetch(&client, &url).await })
                })
                .collect();
            pagekeep_executor::sleep(Duration::from_millis(20)).await;
            drop(client);
            let mut answers = Vec::new();
            for request in requests {
                answers.push(request.await.unwrap());
            }
            answers
        }
    });
    for answer in answers {
        assert_eq!(answer.unwrap().1, "slow");
    }
    // The pool went with its last request, and its idle connections with it.
    let stats = server.stats.clone();
    client_runtime().block_on(async move {
        pagekeep_executor::timeout(CLIENT_TIMEOUT, async {
            while stats.open_connections() > 0 {
                pagekeep_executor::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the dropped pool's connections were never closed");
    });
}

/// The client the handlers of `a_handler_s_requests_pin_no_arena` share, made outside
/// any request.
static SHARED_CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();

#[test]
fn a_handler_s_requests_pin_no_arena() {
    let upstream = start(builder());
    let upstream_url = format!("http://127.0.0.1:{}/hello", upstream.address.port());
    let client = SHARED_CLIENT.get_or_init(Client::new);
    // 4 arenas; `/forward` fetches the upstream's `/hello` through the shared client,
    // whose connection stays in the pool after the request.
    let server = start_with_arenas(
        builder().arena_wait(Duration::from_millis(200)),
        pagekeep_executor::PoolConfig::new(4, 256 << 10),
        move |request: http::Request<pagekeep_executor::RequestBody>| {
            let upstream_url = upstream_url.clone();
            async move {
                if request.uri().path() != "/forward" {
                    return routes(request).await;
                }
                match fetch(client, &upstream_url).await {
                    Ok((status, body)) => text(status, body),
                    Err(error) => text(StatusCode::BAD_GATEWAY, error.to_string()),
                }
            }
        },
    );
    for _ in 0..8 {
        let (status, body) = get(server.address, "/forward");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    }
    // The pooled connection lives on; every arena is back in the pool.
    assert_eq!(client.idle_connections(), 1);
    assert_eq!(upstream.stats.accepted_connections(), 1);
    let arenas = server.stats.arenas();
    assert_eq!(arenas.quarantined, 0, "{arenas:?}");
    server.assert_arenas_returned();
}
