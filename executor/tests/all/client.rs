//! The outbound client on its own: non-blocking connect errors and timeouts.

use std::time::Duration;

use crate::support::*;
use executor::client::{ClientConnection, ClientError};
use http_body_util::Empty;

#[test]
fn connect_refused_is_a_connect_error() {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let result = client_runtime().block_on(async move {
        ClientConnection::<Empty<bytes::Bytes>>::connect(address, CLIENT_TIMEOUT)
            .await
            .map(|_| ())
    });
    assert!(matches!(result, Err(ClientError::Connect(_))), "{result:?}");
}

#[test]
fn response_that_never_comes_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let result = client_runtime().block_on(async move {
        let request = http::Request::get("/")
            .header("host", "t")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        executor::client::send_request(address, request, Duration::from_millis(200))
            .await
            .map(|_| ())
    });
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
}

/// Client connections that handlers made and keep (a pool), for
/// `kept_client_connections_hold_no_request_arena`. Room for them is made before the
/// server runs, so that keeping one allocates nothing in a request's arena.
static KEPT_CONNECTIONS: std::sync::Mutex<Vec<ClientConnection<Empty<bytes::Bytes>>>> =
    std::sync::Mutex::new(Vec::new());

#[test]
fn kept_client_connections_hold_no_request_arena() {
    use http::StatusCode;
    let upstream = start(builder());
    let upstream_address = upstream.address;
    KEPT_CONNECTIONS.lock().unwrap().reserve(8);
    // 4 arenas; `/keep` connects upstream, makes a request on the connection and keeps
    // it; anything else is the usual routes.
    let server = start_with_arenas(
        builder().arena_wait(Duration::from_millis(200)),
        executor::PoolConfig::new(4, 256 << 10),
        move |request: http::Request<executor::RequestBody>| async move {
            if request.uri().path() != "/keep" {
                return routes(request).await;
            }
            let mut connection =
                ClientConnection::<Empty<bytes::Bytes>>::connect(upstream_address, CLIENT_TIMEOUT)
                    .await
                    .unwrap();
            let (status, body) = get_on(&mut connection, "/hello").await;
            KEPT_CONNECTIONS.lock().unwrap().push(connection);
            text(status, body)
        },
    );
    for _ in 0..4 {
        let (status, body) = get(server.address, "/keep");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    }
    assert_eq!(KEPT_CONNECTIONS.lock().unwrap().len(), 4);
    // Four kept connections, four arenas: every arena must still be free to serve.
    let arenas = server.stats.arenas();
    assert_eq!(arenas.quarantined, 0, "{arenas:?}");
    for _ in 0..8 {
        assert_eq!(get(server.address, "/hello").0, StatusCode::OK);
    }
    // The kept connections still work, from outside any request.
    client_runtime().block_on(async {
        let mut kept = std::mem::take(&mut *KEPT_CONNECTIONS.lock().unwrap());
        for connection in &mut kept {
            assert_eq!(get_on(connection, "/hello").await.0, StatusCode::OK);
        }
    });
    drop(server);
    drop(upstream);
}
