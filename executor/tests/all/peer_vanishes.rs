//! A peer that goes away while a task waits on the stream: the task sees end of stream
//! or an error, never a hang (every wait is bounded by the crate's `timeout`).

use std::io::Write;
use std::thread;
use std::time::Duration;

use pagekeep_executor::net::TcpStream;
use pagekeep_executor::{Runtime, timeout};

const LIMIT: Duration = Duration::from_secs(10);

fn connected(runtime: &Runtime) -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let stream = runtime
        .block_on(async move { TcpStream::connect(address).await })
        .unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

/// Reads until 1 KiB arrived or the stream ended or failed: the bytes and how it ended.
async fn read_message(stream: &TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 256];
    while received.len() < 1024 {
        match stream.read(&mut buffer).await {
            Ok(0) => return (received, Ok(())),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) => return (received, Err(error)),
        }
    }
    panic!("the peer never sent a whole message");
}

#[test]
fn a_peer_closing_mid_message_gives_end_of_stream_after_its_bytes() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream, mut peer) = connected(&runtime);
    let peer = thread::spawn(move || {
        peer.write_all(&[7u8; 100]).unwrap();
        // Long enough for the reader to be parked on the rest of the message.
        thread::sleep(Duration::from_millis(100));
        drop(peer);
    });
    let (received, ended) = runtime.block_on(async move {
        timeout(LIMIT, read_message(&stream))
            .await
            .expect("the read hung after the peer left")
    });
    peer.join().unwrap();
    assert_eq!(received, [7u8; 100]);
    ended.expect("a closed peer is end of stream, not an error");
}

#[test]
fn a_peer_resetting_mid_message_gives_an_error_or_end_of_stream() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream, mut peer) = connected(&runtime);
    let peer = thread::spawn(move || {
        peer.write_all(&[7u8; 100]).unwrap();
        thread::sleep(Duration::from_millis(100));
        // Linger zero: close sends a reset instead of an orderly end of stream.
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
    });
    let (received, ended) = runtime.block_on(async move {
        timeout(LIMIT, read_message(&stream))
            .await
            .expect("the read hung after the peer reset")
    });
    peer.join().unwrap();
    assert!(received.len() <= 100 && received.iter().all(|byte| *byte == 7));
    if let Err(error) = ended {
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    }
}

#[test]
fn a_peer_resetting_while_we_wait_to_write_gives_an_error() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream, peer) = connected(&runtime);
    let peer = thread::spawn(move || {
        // Never reads: our writes fill the buffers and park; then the peer resets.
        thread::sleep(Duration::from_millis(200));
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
    });
    let written = runtime.block_on(async move {
        let chunk = vec![1u8; 64 << 10];
        let writing = async {
            loop {
                if let Err(error) = stream.write_all(&chunk).await {
                    return error;
                }
            }
        };
        timeout(LIMIT, writing)
            .await
            .expect("the write hung after the peer reset")
    });
    peer.join().unwrap();
    assert!(
        matches!(
            written.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{written}"
    );
}
