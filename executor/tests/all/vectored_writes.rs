//! Vectored writes of more slices than one `writev` takes (1024 on Linux): the first
//! call writes part, and the next must not wait for a writable event that never comes.

use std::io::IoSlice;
use std::time::Duration;

use pagekeep_executor::net::{TcpListener, TcpStream};
use pagekeep_executor::{Runtime, timeout};

/// More one-byte slices than `IOV_MAX`; they all fit in the socket's send buffer, so a
/// writer that waits is waiting for nothing.
const SLICES: usize = 3000;
const LIMIT: Duration = Duration::from_secs(5);

async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

async fn read_exactly(stream: &TcpStream, count: usize) -> Vec<u8> {
    let mut received = vec![0u8; count];
    let mut read = 0;
    while read < count {
        let now = stream.read(&mut received[read..]).await.unwrap();
        assert_ne!(now, 0, "end of stream after {read} bytes");
        read += now;
    }
    received
}

#[test]
fn more_slices_than_iov_max_are_all_written() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    runtime.block_on(async {
        let (client, server) = connected_pair().await;
        let data: Vec<u8> = (0..SLICES).map(|index| index as u8).collect();
        let slices: Vec<IoSlice<'_>> = data.chunks(1).map(IoSlice::new).collect();
        let mut written = 0;
        let mut calls = Vec::new();
        while written < slices.len() {
            let now = timeout(LIMIT, client.write_vectored(&slices[written..]))
                .await
                .unwrap_or_else(|_| {
                    panic!("write_vectored still pending after writes of {calls:?} bytes")
                })
                .unwrap();
            assert_ne!(now, 0);
            calls.push(now);
            written += now;
        }
        assert!(
            calls.len() >= 2,
            "one writev took {SLICES} slices: {calls:?}"
        );
        assert_eq!(read_exactly(&server, SLICES).await, data);
    });
}

#[cfg(feature = "tokio-io")]
#[test]
fn more_slices_than_iov_max_through_tokio_write_half() {
    use tokio::io::AsyncWriteExt;

    let runtime = Runtime::builder().workers(1).build().unwrap();
    runtime.block_on(async {
        let (client, server) = connected_pair().await;
        let (_read_half, mut write_half) = client.into_split();
        let data: Vec<u8> = (0..SLICES).map(|index| index as u8).collect();
        let slices: Vec<IoSlice<'_>> = data.chunks(1).map(IoSlice::new).collect();
        let mut written = 0;
        while written < slices.len() {
            let now = timeout(
                LIMIT,
                AsyncWriteExt::write_vectored(&mut write_half, &slices[written..]),
            )
            .await
            .unwrap_or_else(|_| panic!("write_vectored still pending after {written} bytes"))
            .unwrap();
            assert_ne!(now, 0);
            written += now;
        }
        assert_eq!(read_exactly(&server, SLICES).await, data);
    });
}
