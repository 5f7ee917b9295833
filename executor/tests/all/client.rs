//! The outbound client on its own: non-blocking connect errors and timeouts.

use std::time::Duration;

use crate::support::*;
use http_body_util::Empty;
use pagekeep_executor::client::{ClientConnection, ClientError};

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
        pagekeep_executor::client::send_request(address, request, Duration::from_millis(200))
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
        pagekeep_executor::PoolConfig::new(4, 256 << 10),
        move |request: http::Request<pagekeep_executor::RequestBody>| async move {
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

/// A one-connection server on a plain thread: reads the request, writes `reply`, then
/// closes the connection (with a reset when `reset`).
fn one_reply_server(reply: &'static [u8], reset: bool) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buffer = [0u8; 1024];
        let _ = stream.read(&mut buffer);
        let _ = stream.write_all(reply);
        if reset {
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    });
    address
}

#[test]
fn a_server_that_closes_resets_or_cuts_the_response_fails_the_exchange_at_once() {
    // Each failure is reported as such, not waited out until the (long) limit.
    let replies: [(&[u8], bool); 6] = [
        (b"", false),
        (b"", true),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", true),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nshort",
            false,
        ),
        (b"not http at all\r\n\r\n", false),
    ];
    for (reply, reset) in replies {
        let address = one_reply_server(reply, reset);
        let result = client_runtime().block_on(async move {
            let request = http::Request::get("/")
                .header("host", "t")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            pagekeep_executor::client::send_request(address, request, CLIENT_TIMEOUT)
                .await
                .map(|_| ())
        });
        assert!(
            matches!(result, Err(ClientError::Http(_))),
            "{:?} (reset: {reset}): {result:?}",
            String::from_utf8_lossy(reply)
        );
    }
}

#[test]
fn a_kept_connection_reports_a_body_cut_short_and_a_server_gone_idle() {
    use http_body_util::BodyExt;
    // The head arrives, the body stops short and the server closes: the body's read
    // fails (it does not wait forever), and so does the next request on the connection.
    let address = one_reply_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",
        false,
    );
    let (body, next) = client_runtime().block_on(async move {
        let mut connection =
            ClientConnection::<Empty<bytes::Bytes>>::connect(address, CLIENT_TIMEOUT)
                .await
                .unwrap();
        let request = http::Request::get("/")
            .header("host", "t")
            .body(Empty::new())
            .unwrap();
        let response = connection.send(request, CLIENT_TIMEOUT).await.unwrap();
        let body = pagekeep_executor::timeout(CLIENT_TIMEOUT, response.into_body().collect())
            .await
            .map(|collected| collected.map(|_| ()));
        let request = http::Request::get("/")
            .header("host", "t")
            .body(Empty::new())
            .unwrap();
        let next = connection.send(request, CLIENT_TIMEOUT).await.map(|_| ());
        (body, next)
    });
    assert!(matches!(body, Ok(Err(_))), "{body:?}");
    assert!(matches!(next, Err(ClientError::Http(_))), "{next:?}");

    // A keep-alive connection the server closed as idle fails the next request at once.
    let server = start(builder().idle_timeout(Duration::from_millis(100)));
    let address = server.address;
    let stats = server.stats.clone();
    let next = client_runtime().block_on(async move {
        let mut connection =
            ClientConnection::<Empty<bytes::Bytes>>::connect(address, CLIENT_TIMEOUT)
                .await
                .unwrap();
        assert_eq!(
            get_on(&mut connection, "/hello").await.0,
            http::StatusCode::OK
        );
        // Until the server has closed it.
        let closed = pagekeep_executor::timeout(CLIENT_TIMEOUT, async {
            while stats.open_connections() > 0 {
                pagekeep_executor::sleep(Duration::from_millis(10)).await;
            }
        });
        closed
            .await
            .expect("the server never closed the idle connection");
        let request = http::Request::get("/hello")
            .header("host", "t")
            .body(Empty::new())
            .unwrap();
        connection.send(request, CLIENT_TIMEOUT).await.map(|_| ())
    });
    assert!(matches!(next, Err(ClientError::Http(_))), "{next:?}");
}
