//! The `futures-io` traits (feature `futures-io`) on this runtime's streams and halves,
//! driven by the `futures` crate: `futures::io::copy` between our streams, vectored
//! writes, `close` as end of stream.

use std::io::IoSlice;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use pagekeep_executor::net::{
    OwnedReadHalf, OwnedWriteHalf, ReadHalf, TcpListener, TcpStream, WriteHalf,
};
use pagekeep_executor::{Runtime, spawn, timeout};

const LIMIT: Duration = Duration::from_secs(30);
const COPIED_BYTES: usize = 3 << 20;

fn pattern(position: usize) -> u8 {
    (position.wrapping_mul(131) ^ (position >> 11)) as u8
}

/// Every type of ours implements the traits (checked at compile time).
fn assert_futures_io<T: AsyncRead + AsyncWrite + Unpin + Send>() {}
fn assert_futures_read<T: AsyncRead + Unpin + Send>() {}
fn assert_futures_write<T: AsyncWrite + Unpin + Send>() {}

#[test]
fn futures_io_copy_relays_between_our_streams() {
    assert_futures_io::<TcpStream>();
    assert_futures_read::<ReadHalf<'static>>();
    assert_futures_read::<OwnedReadHalf>();
    assert_futures_write::<WriteHalf<'static>>();
    assert_futures_write::<OwnedWriteHalf>();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let (relayed, received) = runtime.block_on(async {
        // Sink: reads everything until end of stream.
        let sink_listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let sink_address = sink_listener.local_addr().unwrap();
        let sink = spawn(async move {
            let (mut stream, _) = sink_listener.accept().await.unwrap();
            let mut received = Vec::with_capacity(COPIED_BYTES);
            stream.read_to_end(&mut received).await.unwrap();
            received
        });
        // Relay: `futures::io::copy` from the inbound stream to the outbound one, then
        // `close` (end of stream for the sink).
        let relay_listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let relay_address = relay_listener.local_addr().unwrap();
        let relay = spawn(async move {
            let (inbound, _) = relay_listener.accept().await.unwrap();
            let mut outbound = TcpStream::connect(sink_address).await.unwrap();
            let copied = futures::io::copy(inbound, &mut outbound).await.unwrap();
            outbound.close().await.unwrap();
            copied
        });
        // Source: a borrowed write half, vectored writes, then `close`.
        let mut source = TcpStream::connect(relay_address).await.unwrap();
        // Spelt out: with futures' `AsyncReadExt` in scope, `source.split()` would be
        // that trait's `split(self)`.
        let (_read_half, mut write_half) = TcpStream::split(&mut source);
        let data: Vec<u8> = (0..COPIED_BYTES).map(pattern).collect();
        let mut sent = 0;
        let sending = async {
            while sent < data.len() {
                let middle = (sent + 40_000).min(data.len());
                let end = (middle + 25_000).min(data.len());
                let slices = [
                    IoSlice::new(&data[sent..middle]),
                    IoSlice::new(&data[middle..end]),
                ];
                let written = write_half.write_vectored(&slices).await.unwrap();
                assert!(written > 0);
                sent += written;
            }
            write_half.close().await.unwrap();
        };
        timeout(LIMIT, sending).await.expect("the source hung");
        let relayed = timeout(LIMIT, relay)
            .await
            .expect("the relay hung")
            .unwrap();
        let received = timeout(LIMIT, sink).await.expect("the sink hung").unwrap();
        (relayed, received)
    });
    assert_eq!(relayed, COPIED_BYTES as u64);
    assert_eq!(received.len(), COPIED_BYTES);
    for (position, byte) in received.iter().enumerate() {
        assert_eq!(*byte, pattern(position), "byte {position} differs");
    }
}

#[test]
fn futures_io_owned_halves_echo_in_two_tasks() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let echoed = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        // Echo server: copies its owned read half into its owned write half.
        let echo = spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read_half, mut write_half) = stream.into_split();
            let copied = futures::io::copy(read_half, &mut write_half).await.unwrap();
            write_half.close().await.unwrap();
            copied
        });
        let (mut read_half, mut write_half) =
            TcpStream::connect(address).await.unwrap().into_split();
        let writer = spawn(async move {
            let data: Vec<u8> = (0..COPIED_BYTES).map(pattern).collect();
            write_half.write_all(&data).await.unwrap();
            write_half.close().await.unwrap();
        });
        let mut received = vec![0u8; COPIED_BYTES];
        timeout(LIMIT, read_half.read_exact(&mut received))
            .await
            .expect("the echo hung")
            .unwrap();
        let mut rest = Vec::new();
        read_half.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        writer.await.unwrap();
        for (position, byte) in received.iter().enumerate() {
            assert_eq!(*byte, pattern(position), "byte {position} differs");
        }
        timeout(LIMIT, echo).await.expect("echo hung").unwrap()
    });
    assert_eq!(echoed, COPIED_BYTES as u64);
}
