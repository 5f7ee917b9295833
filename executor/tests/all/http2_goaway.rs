//! HTTP/2 connections the server closes send GOAWAY first (feature `http2`): for the
//! idle timeout and the header read timeout as for shutdown. The client is the `h2`
//! crate's, on tokio, over a socket that records what it receives, so the test reads
//! the GOAWAY frames the client was sent (`h2` does not expose the last-stream id).
//!
//! The server's close is graceful (RFC 9113 §6.8): a first GOAWAY naming stream
//! 2^31-1, a PING, and once the client answers it a last GOAWAY naming the last stream
//! the server took. `h2`'s client, with no stream open, closes its side at the first
//! GOAWAY; a client of frames written here (`FrameClient`) answers the PING and stays,
//! to see the last one.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};

use crate::http2::on_tokio;
use crate::support::*;

/// A TCP stream that keeps a copy of every byte it reads.
struct Recording {
    stream: tokio::net::TcpStream,
    received: Arc<Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buffer);
        if let Poll::Ready(Ok(())) = polled {
            self.received
                .lock()
                .unwrap()
                .extend_from_slice(&buffer.filled()[before..]);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A GOAWAY frame: the last stream the server took, and its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GoAway {
    last_stream_id: u32,
    error_code: u32,
}

/// The GOAWAY frames in the bytes a client received (the server's frames, in order).
fn go_aways(received: &[u8]) -> Vec<GoAway> {
    let mut found = Vec::new();
    let mut rest = received;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let kind = rest[3];
        let Some(payload) = rest.get(9..9 + length) else {
            break;
        };
        if kind == 7 {
            found.push(GoAway {
                last_stream_id: u32::from_be_bytes(payload[0..4].try_into().unwrap()) & 0x7fff_ffff,
                error_code: u32::from_be_bytes(payload[4..8].try_into().unwrap()),
            });
        }
        rest = &rest[9 + length..];
    }
    found
}

/// An `h2` client connection to `address` over a recording socket; the connection's
/// task ends (with its result) when the server closes the connection.
async fn connect(
    address: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    Arc<Mutex<Vec<u8>>>,
) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let stream = Recording {
        stream: tokio::net::TcpStream::connect(address).await.unwrap(),
        received: Arc::clone(&received),
    };
    let (sender, connection) = h2::client::handshake(stream).await.expect("the handshake");
    (sender, tokio::spawn(connection), received)
}

/// GETs `path` on a new stream and reads its whole body.
async fn get_h2(sender: &mut h2::client::SendRequest<Bytes>, path: &str) -> (StatusCode, Bytes) {
    let request = Request::get(format!("http://localhost{path}"))
        .body(())
        .unwrap();
    let (response, _) = sender.send_request(request, true).expect("a stream");
    let response = response.await.expect("a response");
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, Bytes::from(bytes))
}

/// A client of hand-written HTTP/2 frames on a blocking socket: the preface, empty
/// SETTINGS, GET requests of static and literal header fields (no HPACK table), and
/// then, until the server closes, an answer to every PING.
struct FrameClient {
    stream: std::net::TcpStream,
    next_stream_id: u32,
}

impl FrameClient {
    fn connect(address: SocketAddr) -> Self {
        let mut stream = raw(address);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        // An empty SETTINGS frame.
        stream.write_all(&frame_header(0, 4, 0, 0)).unwrap();
        Self {
            stream,
            next_stream_id: 1,
        }
    }

    /// Sends `GET path` (ended, no body) on the next stream; returns its id.
    fn get(&mut self, path: &str) -> u32 {
        // :method GET, :scheme http (static table entries 2 and 6); :path and
        // :authority as literals without indexing (name indices 4 and 1).
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 9]);
        block.extend_from_slice(b"localhost");
        let id = self.next_stream_id;
        self.next_stream_id += 2;
        // HEADERS with END_STREAM and END_HEADERS.
        let mut frame = frame_header(block.len(), 1, 0x5, id).to_vec();
        frame.extend_from_slice(&block);
        self.stream.write_all(&frame).unwrap();
        id
    }

    /// Reads frames until the server closes, answering PINGs; returns what it read:
    /// every frame as (type, flags, stream id, payload).
    fn read_to_close(&mut self) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut frames = Vec::new();
        loop {
            let mut header = [0u8; 9];
            match self.stream.read_exact(&mut header) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return frames;
                }
                Err(error) => panic!("reading a frame: {error}"),
            }
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let (kind, flags) = (header[3], header[4]);
            let id = u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let mut payload = vec![0u8; length];
            self.stream.read_exact(&mut payload).unwrap();
            if kind == 6 && flags & 1 == 0 {
                // PING: the same payload back, with ACK.
                let mut pong = frame_header(8, 6, 1, 0).to_vec();
                pong.extend_from_slice(&payload);
                let _ = self.stream.write_all(&pong);
            }
            frames.push((kind, flags, id, payload));
        }
    }
}

/// A frame header: the payload's length, the frame's type, flags and stream.
fn frame_header(length: usize, kind: u8, flags: u8, stream_id: u32) -> [u8; 9] {
    let mut header = [0u8; 9];
    header[0..3].copy_from_slice(&(length as u32).to_be_bytes()[1..]);
    header[3] = kind;
    header[4] = flags;
    header[5..9].copy_from_slice(&stream_id.to_be_bytes());
    header
}

/// The GOAWAY frames among `frames`, in order.
fn go_aways_of(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<GoAway> {
    frames
        .iter()
        .filter(|(kind, ..)| *kind == 7)
        .map(|(_, _, _, payload)| GoAway {
            last_stream_id: u32::from_be_bytes(payload[0..4].try_into().unwrap()) & 0x7fff_ffff,
            error_code: u32::from_be_bytes(payload[4..8].try_into().unwrap()),
        })
        .collect()
}

/// Checks the GOAWAY frames of a graceful close: the first names stream 2^31-1 (or,
/// when `last_stream_id` is `None`, already the last one), the last names
/// `last_stream_id` if given, all with no error.
fn assert_graceful_go_aways(frames: &[GoAway], last_stream_id: Option<u32>) {
    assert!(!frames.is_empty(), "no GOAWAY before the close");
    assert!(
        frames.iter().all(|frame| frame.error_code == 0),
        "a GOAWAY with an error: {frames:?}"
    );
    assert_eq!(frames[0].last_stream_id, 0x7fff_ffff, "{frames:?}");
    if let Some(last_stream_id) = last_stream_id {
        assert_eq!(
            frames.last().unwrap().last_stream_id,
            last_stream_id,
            "the GOAWAY frames: {frames:?}"
        );
    }
}

/// The GOAWAY frames `h2`'s client received, checked as a graceful close's.
fn assert_closed_with_go_away(received: &Mutex<Vec<u8>>, last_stream_id: Option<u32>) {
    assert_graceful_go_aways(&go_aways(&received.lock().unwrap()), last_stream_id);
}

#[test]
fn an_idle_http2_connection_gets_goaway_naming_its_last_stream_before_it_closes() {
    let server = start(builder().idle_timeout(Duration::from_millis(300)));
    let address = server.address;
    let (ended, received) = on_tokio(async move {
        let (mut sender, connection, received) = connect(address).await;
        // Streams 1 and 3, then nothing.
        assert_eq!(get_h2(&mut sender, "/hello").await.0, StatusCode::OK);
        assert_eq!(get_h2(&mut sender, "/chunked").await.0, StatusCode::OK);
        (connection.await.unwrap(), received)
    });
    // `h2` closes at the first GOAWAY, having no stream open.
    assert_closed_with_go_away(&received, None);
    assert!(ended.is_ok(), "the client saw an unclean close: {ended:?}");
    server.assert_no_connection_left();
}

#[test]
fn an_idle_http2_connection_whose_client_answers_the_ping_gets_goaway_naming_its_last_stream() {
    let server = start(builder().idle_timeout(Duration::from_millis(300)));
    let mut client = FrameClient::connect(server.address);
    assert_eq!(client.get("/hello"), 1);
    assert_eq!(client.get("/chunked"), 3);
    let frames = client.read_to_close();
    // Both answered (HEADERS on streams 1 and 3), then the graceful close.
    for id in [1, 3] {
        assert!(
            frames
                .iter()
                .any(|(kind, _, stream, _)| *kind == 1 && *stream == id),
            "no response on stream {id}"
        );
    }
    assert_graceful_go_aways(&go_aways_of(&frames), Some(3));
    server.assert_no_connection_left();
}

#[test]
fn an_http2_client_that_answers_the_ping_and_sends_no_request_gets_goaway_naming_stream_0() {
    let server = start(builder().header_read_timeout(Duration::from_millis(300)));
    let mut client = FrameClient::connect(server.address);
    let frames = client.read_to_close();
    assert_graceful_go_aways(&go_aways_of(&frames), Some(0));
    server.assert_no_connection_left();
}

#[test]
fn an_http2_client_that_sends_no_request_gets_goaway_at_the_header_read_timeout() {
    let server = start(builder().header_read_timeout(Duration::from_millis(300)));
    let address = server.address;
    let (ended, received) = on_tokio(async move {
        let (_sender, connection, received) = connect(address).await;
        (connection.await.unwrap(), received)
    });
    assert_closed_with_go_away(&received, None);
    assert!(ended.is_ok(), "the client saw an unclean close: {ended:?}");
    server.assert_no_connection_left();
}

#[test]
fn shutdown_sends_goaway_naming_the_streams_in_flight_and_lets_them_finish() {
    let server = start(builder());
    let address = server.address;
    let shutdown = server.shutdown.clone();
    let stats = server.stats.clone();
    let (results, ended, received) = on_tokio(async move {
        let (sender, connection, received) = connect(address).await;
        // Streams 1, 3, 5 and 7, each in its handler when shutdown starts.
        let streams: Vec<_> = (0..4)
            .map(|_| {
                let mut sender = sender.clone();
                tokio::spawn(async move { get_h2(&mut sender, "/slow?ms=300").await })
            })
            .collect();
        while stats.requests() < 4 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        shutdown.trigger();
        let mut results = Vec::new();
        for stream in streams {
            results.push(stream.await.unwrap());
        }
        drop(sender);
        (results, connection.await.unwrap(), received)
    });
    for result in results {
        assert_eq!(result, (StatusCode::OK, Bytes::from_static(b"slow")));
    }
    assert_closed_with_go_away(&received, Some(7));
    assert!(ended.is_ok(), "the client saw an unclean close: {ended:?}");
    server.stop();
}
