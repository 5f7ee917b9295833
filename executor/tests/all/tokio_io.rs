//! tokio's I/O traits (feature `tokio-io`) on this runtime's streams and halves, driven
//! by the ecosystem's code instead of ours: tokio-util's `Framed` with `LinesCodec`,
//! `tokio::io::copy` and `copy_bidirectional`, vectored writes, shutdown and
//! `read_exact` against a peer that leaves.

use std::io::{IoSlice, Write};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pagekeep_executor::net::{TcpListener, TcpStream};
use pagekeep_executor::{Runtime, spawn, timeout};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LinesCodec};

const LIMIT: Duration = Duration::from_secs(30);

/// Every type of ours implements both traits (checked at compile time).
fn assert_tokio_io<T: AsyncRead + AsyncWrite + Unpin>() {}
fn assert_tokio_read<T: AsyncRead + Unpin + Send>() {}
fn assert_tokio_write<T: AsyncWrite + Unpin + Send>() {}

#[test]
fn framed_lines_echo_both_ways_over_our_streams() {
    assert_tokio_io::<TcpStream>();
    assert_tokio_read::<pagekeep_executor::net::ReadHalf<'static>>();
    assert_tokio_write::<pagekeep_executor::net::WriteHalf<'static>>();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let (lines_echoed, replies) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        // The server echoes every line through a FramedRead and a FramedWrite over the
        // borrowed halves of its stream, until the client's end of stream.
        let server = spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (read_half, write_half) = stream.split();
            let mut lines = FramedRead::new(read_half, LinesCodec::new());
            let mut replies = FramedWrite::new(write_half, LinesCodec::new());
            replies.send("hello").await.unwrap();
            let mut echoed = 0;
            while let Some(line) = lines.next().await {
                replies
                    .send(format!("echo {}", line.unwrap()))
                    .await
                    .unwrap();
                echoed += 1;
            }
            SinkExt::<&str>::close(&mut replies).await.unwrap();
            echoed
        });
        // The client: one `Framed` over the whole stream, in the same conversation.
        let mut framed = Framed::new(
            TcpStream::connect(address).await.unwrap(),
            LinesCodec::new(),
        );
        let client = async {
            let mut replies = vec![framed.next().await.unwrap().unwrap()];
            for index in 0..200 {
                framed.send(format!("line {index}")).await.unwrap();
                replies.push(framed.next().await.unwrap().unwrap());
            }
            // A line longer than the socket buffers hold: both ends wait for room.
            let long = "x".repeat(3 << 20);
            framed.send(&long).await.unwrap();
            let echo = framed.next().await.unwrap().unwrap();
            assert_eq!(echo.len(), long.len() + 5);
            // `close` is `poll_shutdown`: the server's stream of lines ends.
            SinkExt::<&str>::close(&mut framed).await.unwrap();
            assert!(framed.next().await.is_none(), "the server's end of stream");
            replies
        };
        let replies = timeout(LIMIT, client).await.expect("the client hung");
        let echoed = timeout(LIMIT, server)
            .await
            .expect("the server hung")
            .unwrap();
        (echoed, replies)
    });
    assert_eq!(lines_echoed, 201);
    assert_eq!(replies[0], "hello");
    for (index, reply) in replies[1..].iter().enumerate() {
        assert_eq!(reply, &format!("echo line {index}"));
    }
}

#[test]
fn tokio_copy_through_owned_halves_and_copy_bidirectional_relay() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let (echoed, relayed) = runtime.block_on(async {
        // Echo server: `tokio::io::copy` from its owned read half to its write half.
        let echo_listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let echo_address = echo_listener.local_addr().unwrap();
        let echo = spawn(async move {
            let (stream, _) = echo_listener.accept().await.unwrap();
            let (mut read_half, mut write_half) = stream.into_split();
            let copied = tokio::io::copy(&mut read_half, &mut write_half)
                .await
                .unwrap();
            write_half.shutdown().await.unwrap();
            copied
        });
        // Relay: `copy_bidirectional` between two of our streams.
        let relay_listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let relay_address = relay_listener.local_addr().unwrap();
        let relay = spawn(async move {
            let (mut inbound, _) = relay_listener.accept().await.unwrap();
            let mut outbound = TcpStream::connect(echo_address).await.unwrap();
            tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                .await
                .unwrap()
        });
        // Client: writes 4 MiB in vectored writes while reading the echo back.
        let client = TcpStream::connect(relay_address).await.unwrap();
        let (mut read_half, mut write_half) = client.into_split();
        assert!(write_half.is_write_vectored());
        let total = 4 << 20;
        let writer = spawn(async move {
            let head = [1u8; 1000];
            let tail = [2u8; 24];
            let mut sent = 0;
            while sent < total {
                let slices = [IoSlice::new(&head), IoSlice::new(&tail)];
                let written = write_half.write_vectored(&slices).await.unwrap();
                assert!(written > 0);
                // Finish a partly written pair so the stream stays 1024-byte records.
                let mut record = [&head[..], &tail[..]].concat();
                record.drain(..written.min(1024));
                write_half.write_all(&record).await.unwrap();
                sent += 1024;
            }
            write_half.shutdown().await.unwrap();
            sent
        });
        let mut received = Vec::with_capacity(total);
        timeout(LIMIT, read_half.read_to_end(&mut received))
            .await
            .expect("the echo hung")
            .unwrap();
        let sent = writer.await.unwrap();
        assert_eq!(sent, total);
        assert_eq!(received.len(), total);
        for record in received.chunks(1024) {
            assert!(record[..1000].iter().all(|byte| *byte == 1));
            assert!(record[1000..].iter().all(|byte| *byte == 2));
        }
        let echoed = timeout(LIMIT, echo).await.expect("echo hung").unwrap();
        let relayed = timeout(LIMIT, relay).await.expect("relay hung").unwrap();
        (echoed, relayed)
    });
    assert_eq!(echoed, 4 << 20);
    assert_eq!(relayed, (4 << 20, 4 << 20));
}

#[test]
fn read_exact_against_a_peer_that_leaves_is_an_unexpected_eof() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"half a").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    });
    let result = runtime.block_on(async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let mut message = [0u8; 64];
        timeout(LIMIT, stream.read_exact(&mut message))
            .await
            .expect("read_exact hung after the peer left")
    });
    peer.join().unwrap();
    assert_eq!(
        result.unwrap_err().kind(),
        std::io::ErrorKind::UnexpectedEof
    );
}
