//! Several tasks waiting on one socket direction: none loses its wake-up.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

#[test]
fn two_tasks_reading_one_stream_are_both_woken() {
    let runtime = pagekeep_executor::Runtime::builder()
        .workers(1)
        .build()
        .unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = peer.local_addr().unwrap();
    let stream = Arc::new(
        runtime
            .block_on(async move { pagekeep_executor::net::TcpStream::connect(address).await })
            .unwrap(),
    );
    let (mut writer, _) = peer.accept().unwrap();
    // Both wait for data on the same stream (the second registration used to replace
    // the first).
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stream = Arc::clone(&stream);
            runtime.spawn(async move {
                let mut byte = [0u8; 1];
                stream.read(&mut byte).await.map(|read| (read, byte[0]))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    // One byte each, some time apart: each event must reach a waiting task.
    writer.write_all(b"a").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    writer.write_all(b"b").unwrap();
    let mut got: Vec<u8> = Vec::new();
    for reader in readers {
        let read = client_runtime().block_on(async move {
            pagekeep_executor::timeout(Duration::from_secs(5), reader).await
        });
        let (count, byte) = read.expect("a reader was never woken").unwrap().unwrap();
        assert_eq!(count, 1);
        got.push(byte);
    }
    got.sort_unstable();
    assert_eq!(got, b"ab");
}
