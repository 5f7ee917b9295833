//! HTTP upgrades: the `websocket` example driven by tokio-tungstenite's client (on a
//! tokio runtime, as a user's client would be), and a server in this process whose
//! upgraded connections are checked against the arena pool and the connection count.
//!
//! The rules under test (the README's "Upgrades and WebSocket"): an upgraded connection
//! runs in a task of its own, outside any arena, so it holds no request's arena however
//! long it lives; it keeps its connection's slot (`max_connections`, the open count)
//! until its socket is dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use pagekeep_executor::RequestBody;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::examples::Example;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);

type Client = WebSocketStream<tokio::net::TcpStream>;

/// A tokio runtime for the clients.
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `scenario` on a tokio runtime of its own, bounded by [`LIMIT`].
fn on_tokio<F: Future>(scenario: F) -> F::Output {
    on(&tokio_runtime(), scenario)
}

/// Runs `scenario` on `runtime`, bounded by [`LIMIT`].
fn on<F: Future>(runtime: &tokio::runtime::Runtime, scenario: F) -> F::Output {
    runtime.block_on(async {
        tokio::time::timeout(LIMIT, scenario)
            .await
            .expect("the scenario took too long")
    })
}

/// A WebSocket client connected to `address` (the handshake answered 101).
async fn connect(address: SocketAddr) -> Client {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (client, response) = tokio_tungstenite::client_async(format!("ws://{address}/"), stream)
        .await
        .expect("the WebSocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    client
}

/// Sends `message` and expects it back.
async fn round_trip(client: &mut Client, message: Message) {
    client.send(message.clone()).await.unwrap();
    let echoed = client.next().await.expect("an echo").unwrap();
    assert_eq!(echoed, message);
}

/// Closes `client` with the close handshake: the server answers the client's close
/// frame with its own, and the stream ends.
async fn close(mut client: Client) {
    client.close(None).await.unwrap();
    loop {
        match client.next().await {
            Some(Ok(Message::Close(_))) => {}
            Some(Ok(other)) => panic!("{other:?} after the close frame"),
            Some(Err(error)) => panic!("close handshake: {error}"),
            None => break,
        }
    }
}

/// A message of `len` bytes, text or binary by `index`.
fn message(index: usize, len: usize) -> Message {
    if index.is_multiple_of(2) {
        Message::text("t".repeat(len) + &index.to_string())
    } else {
        Message::binary(vec![index as u8; len])
    }
}

/// A client vanishes mid-message: a handshake, then half of a masked frame's payload,
/// then the socket closes under the server.
async fn vanish_mid_message(address: SocketAddr) {
    let client = connect(address).await;
    let mut stream = client.into_inner();
    // FIN, binary; masked, 126: a 16-bit length of 1000; the mask; 10 payload bytes.
    let mut frame = vec![0x82, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4];
    frame.extend_from_slice(&[0u8; 10]);
    stream.write_all(&frame).await.unwrap();
    stream.flush().await.unwrap();
    drop(stream);
}

#[test]
fn the_websocket_example_echoes_text_and_binary_and_closes() {
    let (_example, address) = Example::start("websocket");
    on_tokio(async {
        let mut client = connect(address).await;
        round_trip(&mut client, Message::text("hello")).await;
        round_trip(&mut client, Message::binary(vec![0, 1, 2, 255])).await;
        round_trip(&mut client, Message::text("")).await;
        // 64 KiB, the example's largest message.
        round_trip(&mut client, Message::binary(vec![7u8; 64 << 10])).await;
        close(client).await;
    });
    // Not a WebSocket handshake: a plain answer.
    let (status, _) = get(address, "/");
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
}

#[test]
fn the_websocket_example_echoes_many_messages_in_order() {
    let (_example, address) = Example::start("websocket");
    on_tokio(async {
        let mut client = connect(address).await;
        // One at a time, then a burst sent before any echo is read.
        for index in 0..500 {
            round_trip(&mut client, message(index, index % 700)).await;
        }
        for index in 0..500 {
            client.feed(message(index, index * 7 % 3000)).await.unwrap();
        }
        client.flush().await.unwrap();
        for index in 0..500 {
            let echoed = client.next().await.expect("an echo").unwrap();
            assert_eq!(echoed, message(index, index * 7 % 3000));
        }
        close(client).await;
    });
}

#[test]
fn the_websocket_example_serves_two_clients_at_once() {
    let (_example, address) = Example::start("websocket");
    on_tokio(async {
        let mut first = connect(address).await;
        let mut second = connect(address).await;
        // Interleaved: each gets its own messages back, none of the other's.
        for index in 0..100 {
            first
                .send(Message::text(format!("first {index}")))
                .await
                .unwrap();
            second
                .send(Message::text(format!("second {index}")))
                .await
                .unwrap();
            let from_second = second.next().await.unwrap().unwrap();
            let from_first = first.next().await.unwrap().unwrap();
            assert_eq!(from_first, Message::text(format!("first {index}")));
            assert_eq!(from_second, Message::text(format!("second {index}")));
        }
        close(first).await;
        round_trip(&mut second, Message::text("still here")).await;
        close(second).await;
    });
}

#[test]
fn the_websocket_example_keeps_serving_after_a_client_vanishes_mid_message() {
    let (_example, address) = Example::start("websocket");
    on_tokio(async {
        let mut staying = connect(address).await;
        round_trip(&mut staying, Message::text("before")).await;
        vanish_mid_message(address).await;
        // The one that stayed, and a new one, are served.
        round_trip(&mut staying, Message::text("after")).await;
        let mut fresh = connect(address).await;
        round_trip(&mut fresh, Message::binary(vec![1u8; 100])).await;
        close(fresh).await;
        close(staying).await;
    });
    let (status, _) = get(address, "/");
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
}

/// The example's handshake, in this process: 101 and an echo task spawned with only
/// the request's `OnUpgrade` (nothing of its arena); plain requests get "hello".
async fn upgrading_handler(mut request: Request<RequestBody>) -> Response<Full<Bytes>> {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Response::new(Full::new(Bytes::from_static(b"hello")));
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    drop(pagekeep_executor::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                return;
            }
        }
    }));
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
    headers.insert(header::UPGRADE, "websocket".parse().unwrap());
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept.parse().unwrap());
    response
}

/// Waits (bounded) until `condition` holds.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn open_websockets_hold_no_request_arena_and_other_requests_are_served() {
    // More WebSockets than the pool has arenas (16), and a short arena wait: if each
    // pinned the arena of the request that upgraded it, the 17th handshake would get
    // 503 and so would the plain requests.
    let server = start_with(
        builder().arena_wait(Duration::from_millis(200)),
        upgrading_handler,
    );
    let address = server.address;
    let arenas = server.stats.arenas().arenas;
    let count = arenas + 4;
    // One runtime: the clients live across the two scenarios.
    let runtime = tokio_runtime();
    let clients = on(&runtime, async {
        let mut clients = Vec::new();
        for index in 0..count {
            let mut client = connect(address).await;
            round_trip(&mut client, message(index, 100)).await;
            clients.push(client);
        }
        clients
    });
    // Every arena back in the pool, none quarantined, with every WebSocket open.
    eventually("every arena free while the WebSockets are open", || {
        server.stats.arenas().free == arenas
    });
    // Each upgraded socket keeps its connection's slot.
    assert_eq!(server.stats.open_connections(), count);
    for _ in 0..arenas * 2 {
        let (status, body) = get(address, "/");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    }
    on(&runtime, async {
        // Still echoing after all that, and closed with the handshake.
        for (index, mut client) in clients.into_iter().enumerate() {
            round_trip(&mut client, message(index, 5000)).await;
            close(client).await;
        }
    });
    // Their slots go back as their sockets are dropped.
    eventually("no connection left once the WebSockets closed", || {
        server.stats.open_connections() == 0
    });
    assert_eq!(server.stats.arenas().free, arenas);
}

#[test]
fn a_websocket_client_that_vanishes_gives_its_slot_back() {
    let server = start_with(builder(), upgrading_handler);
    let address = server.address;
    on_tokio(async {
        let mut staying = connect(address).await;
        round_trip(&mut staying, Message::text("before")).await;
        vanish_mid_message(address).await;
        // Another way to vanish: no close frame, the socket just closes.
        let mut abrupt = connect(address).await;
        round_trip(&mut abrupt, Message::text("bye")).await;
        drop(abrupt);
        round_trip(&mut staying, Message::text("after")).await;
        // Only the one that stayed is still open.
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.stats.open_connections() != 1 {
            assert!(
                Instant::now() < deadline,
                "{} connections open, 1 expected",
                server.stats.open_connections()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        close(staying).await;
    });
    let (status, _) = get(address, "/");
    assert_eq!(status, StatusCode::OK);
    // Dropping the server checks that no connection is left and every arena returned.
}

#[test]
fn shutdown_waits_for_an_open_websocket_until_its_deadline_then_drops_it() {
    let server = start_with(
        builder().shutdown_deadline(Duration::from_secs(3)),
        upgrading_handler,
    );
    let address = server.address;
    let stats = server.stats.clone();
    let runtime = tokio_runtime();
    let mut client = on(&runtime, async {
        let mut client = connect(address).await;
        round_trip(&mut client, Message::text("before")).await;
        client
    });
    server.shutdown.trigger();
    // Shutdown under way: the open WebSocket is still served, and counted.
    on(&runtime, round_trip(&mut client, Message::text("during")));
    assert_eq!(stats.open_connections(), 1);
    server.stop();
    // Past the deadline the runtime dropped the task, and with it the socket and its slot.
    assert_eq!(stats.open_connections(), 0);
    on(&runtime, async {
        match client.next().await {
            None | Some(Err(_)) => {}
            Some(Ok(message)) => panic!("{message:?} from a server that shut down"),
        }
    });
}

#[test]
fn websockets_count_against_max_connections_until_they_close() {
    let server = start_with(builder().max_connections(2), upgrading_handler);
    let address = server.address;
    let runtime = tokio_runtime();
    let (first, mut second) = on(&runtime, async {
        let mut first = connect(address).await;
        let mut second = connect(address).await;
        round_trip(&mut first, Message::text("first")).await;
        round_trip(&mut second, Message::text("second")).await;
        (first, second)
    });
    // Both slots held by upgraded sockets: a third connection is refused.
    let (response, ended) = raw_exchange(address, b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(ended, Ended::Closed);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 503"),
        "{response}"
    );
    assert_eq!(server.stats.refused_connections(), 1);
    // One closes: its slot comes back and a plain request is served again.
    on(&runtime, close(first));
    eventually("a slot freed by the closed WebSocket", || {
        server.stats.open_connections() == 1
    });
    let (status, _) = get(address, "/");
    assert_eq!(status, StatusCode::OK);
    on(&runtime, async {
        round_trip(&mut second, Message::text("still served")).await;
        close(second).await;
    });
}
