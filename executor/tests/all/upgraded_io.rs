//! `pagekeep_executor::upgrade::Upgraded`: an upgraded connection read and written
//! through tokio's and futures-io's traits, without hyper-util. A WebSocket echo with
//! tokio-tungstenite's client, and a raw byte echo through `futures::io::copy` whose
//! first bytes came with the request head (hyper read them already: the adapter must
//! give them first).

use std::io::{Read as _, Write as _};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use pagekeep_executor::RequestBody;
use pagekeep_executor::upgrade::Upgraded;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::support::*;

/// `/ws`: a WebSocket echo over tokio's traits; `/bytes`: a byte echo over
/// futures-io's, until the client closes its write direction.
async fn upgrading(mut request: Request<RequestBody>) -> Response<Full<Bytes>> {
    let websocket = request.uri().path() == "/ws";
    let accept = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()));
    let upgrade = hyper::upgrade::on(&mut request);
    drop(pagekeep_executor::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let upgraded = Upgraded::new(upgraded);
        if websocket {
            let mut socket =
                tokio_tungstenite::WebSocketStream::from_raw_socket(upgraded, Role::Server, None)
                    .await;
            while let Some(Ok(message)) = socket.next().await {
                if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err()
                {
                    return;
                }
            }
        } else {
            let (reader, mut writer) = futures::io::AsyncReadExt::split(upgraded);
            let _ = futures::io::copy(reader, &mut writer).await;
            let _ = futures::io::AsyncWriteExt::close(&mut writer).await;
        }
    }));
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
    if let Some(accept) = accept {
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept.parse().unwrap());
    } else {
        headers.insert(header::UPGRADE, "echo".parse().unwrap());
    }
    response
}

/// Runs `scenario` on a tokio runtime of its own, bounded by 30 s.
fn on_tokio<F: Future>(scenario: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), scenario)
                .await
                .expect("the scenario took too long")
        })
}

#[test]
fn a_websocket_echoes_through_the_tokio_traits_of_upgraded() {
    let server = start_with(builder(), upgrading);
    let address = server.address;
    on_tokio(async move {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut client, response) =
            tokio_tungstenite::client_async(format!("ws://{address}/ws"), stream)
                .await
                .expect("the WebSocket handshake");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        for index in 0..200usize {
            let message = if index % 2 == 0 {
                Message::text("x".repeat(index * 37))
            } else {
                Message::binary(vec![index as u8; index * 331])
            };
            client.send(message.clone()).await.unwrap();
            assert_eq!(client.next().await.unwrap().unwrap(), message);
        }
        client.close(None).await.unwrap();
        while let Some(Ok(_)) = client.next().await {}
    });
}

#[test]
fn bytes_sent_with_the_head_come_first_through_the_futures_traits_of_upgraded() {
    let server = start_with(builder(), upgrading);
    let mut stream = raw(server.address);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The head and the first upgraded bytes in one write: hyper reads both at once.
    stream
        .write_all(
            b"GET /bytes HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nearly ",
        )
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the 101's head ended");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let late = vec![b'z'; 100_000];
    stream.write_all(&late).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    let mut expected = b"early ".to_vec();
    expected.extend_from_slice(&late);
    assert_eq!(echoed.len(), expected.len());
    assert!(echoed == expected, "the echo differs from what was sent");
}
