//! `peek` and the socket options of `TcpStream`: a peek consumes nothing (a short peek
//! included, which must not leave the next read waiting for an event that never comes),
//! and every setting reads back, refuses what the system refuses, and is left as it was
//! by a refused call.

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

#[test]
fn a_short_peek_consumes_nothing_and_the_next_read_gets_the_bytes() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream, mut peer) = connected(&runtime);
    peer.write_all(b"hello").unwrap();
    runtime.block_on(async move {
        // A buffer larger than what is there: the peek is short, as a drained read is.
        let mut seen = [0u8; 64];
        let mut peeked = 0;
        while peeked < 5 {
            peeked = timeout(LIMIT, stream.peek(&mut seen))
                .await
                .expect("peek hung")
                .unwrap();
        }
        assert_eq!(&seen[..peeked], b"hello");
        let again = timeout(LIMIT, stream.peek(&mut seen))
            .await
            .expect("a second peek hung")
            .unwrap();
        assert_eq!(&seen[..again], b"hello");
        // No new event will come for these bytes: the read must not wait for one.
        let mut read = [0u8; 64];
        let count = timeout(LIMIT, stream.read(&mut read))
            .await
            .expect("the read after a short peek hung")
            .unwrap();
        assert_eq!(&read[..count], b"hello");
    });
}

#[test]
fn peek_waits_for_data_and_sees_end_of_stream() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (mut stream, mut peer) = connected(&runtime);
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        peer.write_all(b"late").unwrap();
        thread::sleep(Duration::from_millis(50));
        drop(peer);
    });
    runtime.block_on(async move {
        let (read_half, _write_half) = stream.split();
        let mut seen = [0u8; 4];
        let peeked = timeout(LIMIT, read_half.peek(&mut seen))
            .await
            .expect("peek was never woken")
            .unwrap();
        assert!(peeked > 0);
        assert_eq!(&seen[..peeked], &b"late"[..peeked]);
        let mut received = Vec::new();
        loop {
            let read = timeout(LIMIT, read_half.read(&mut seen))
                .await
                .expect("read hung")
                .unwrap();
            if read == 0 {
                break;
            }
            received.extend_from_slice(&seen[..read]);
        }
        assert_eq!(received, b"late");
        let at_end = timeout(LIMIT, read_half.peek(&mut seen))
            .await
            .expect("peek at end of stream hung")
            .unwrap();
        assert_eq!(at_end, 0);
    });
    writer.join().unwrap();
}

#[test]
fn nodelay_and_ttl_read_back_and_refused_values_change_nothing() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream, _peer) = connected(&runtime);
    stream.set_nodelay(true).unwrap();
    assert!(stream.nodelay().unwrap());
    stream.set_nodelay(false).unwrap();
    assert!(!stream.nodelay().unwrap());

    stream.set_ttl(17).unwrap();
    assert_eq!(stream.ttl().unwrap(), 17);
    stream.set_ttl(255).unwrap();
    assert_eq!(stream.ttl().unwrap(), 255);
    stream.set_ttl(1).unwrap();
    assert_eq!(stream.ttl().unwrap(), 1);
    if cfg!(target_os = "linux") {
        for refused in [0, 256, u32::MAX - 1] {
            let error = stream.set_ttl(refused).unwrap_err();
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::InvalidInput,
                "ttl {refused}"
            );
            assert_eq!(stream.ttl().unwrap(), 1, "a refused ttl changed it");
        }
        // `u32::MAX` reaches the kernel as -1: the system's default.
        let default: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        stream.set_ttl(u32::MAX).unwrap();
        assert_eq!(stream.ttl().unwrap(), default);
    }
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Windows cannot read the keep-alive idle time back (`SIO_KEEPALIVE_VALS` only \
              sets it): `keepalive` answers `Unsupported` there, as documented"
)]
fn keepalive_rounds_up_to_whole_seconds_and_refused_values_change_nothing() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream, _peer) = connected(&runtime);
    assert_eq!(stream.keepalive().unwrap(), None, "off by default");
    stream.set_keepalive(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(stream.keepalive().unwrap(), Some(Duration::from_secs(30)));
    stream
        .set_keepalive(Some(Duration::from_millis(1_500)))
        .unwrap();
    assert_eq!(stream.keepalive().unwrap(), Some(Duration::from_secs(2)));
    stream.set_keepalive(Some(Duration::ZERO)).unwrap();
    assert_eq!(stream.keepalive().unwrap(), Some(Duration::from_secs(1)));
    stream.set_keepalive(Some(Duration::from_nanos(1))).unwrap();
    assert_eq!(stream.keepalive().unwrap(), Some(Duration::from_secs(1)));
    stream.set_keepalive(None).unwrap();
    assert_eq!(stream.keepalive().unwrap(), None);
    if cfg!(target_os = "linux") {
        // Linux takes at most 32,767 seconds.
        stream
            .set_keepalive(Some(Duration::from_secs(32_767)))
            .unwrap();
        assert_eq!(
            stream.keepalive().unwrap(),
            Some(Duration::from_secs(32_767))
        );
        stream.set_keepalive(None).unwrap();
        for refused in [Duration::from_secs(32_768), Duration::MAX] {
            // Refused while off: stays off.
            let error = stream.set_keepalive(Some(refused)).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
            assert_eq!(
                stream.keepalive().unwrap(),
                None,
                "{refused:?} turned it on"
            );
            // Refused while on: keeps its time.
            stream.set_keepalive(Some(Duration::from_secs(45))).unwrap();
            let error = stream.set_keepalive(Some(refused)).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
            assert_eq!(stream.keepalive().unwrap(), Some(Duration::from_secs(45)));
            stream.set_keepalive(None).unwrap();
        }
    }
}

/// Windows sets the keep-alive idle time (`SIO_KEEPALIVE_VALS`) but cannot read it back:
/// `keepalive` says so while keep-alive is on, and answers `None` once it is off.
#[cfg(windows)]
#[test]
fn keepalive_is_set_but_not_read_back_on_windows() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream, _peer) = connected(&runtime);
    assert_eq!(stream.keepalive().unwrap(), None, "off by default");
    stream.set_keepalive(Some(Duration::from_secs(30))).unwrap();
    let error = stream.keepalive().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::Unsupported, "{error}");
    stream.set_keepalive(None).unwrap();
    assert_eq!(stream.keepalive().unwrap(), None);
}
