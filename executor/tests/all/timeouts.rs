//! Header-read (slowloris), handler and idle keep-alive timeouts.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;
use http::StatusCode;

#[test]
fn slowloris_is_cut_off_by_the_header_timeout() {
    let server = start(builder().header_read_timeout(Duration::from_millis(300)));
    let mut stream = raw(server.address);
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let _ = stream.write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n");
    let start = Instant::now();
    let mut received = Vec::new();
    let mut ended = Ended::TimedOut;
    // Dribble a header line every 50 ms for at most 5 s.
    for index in 0..100 {
        if stream
            .write_all(format!("x-drip-{index}: y\r\n").as_bytes())
            .is_err()
        {
            ended = Ended::Closed;
            break;
        }
        ended = read_until(
            &mut stream,
            &mut received,
            Duration::from_millis(50),
            |_| false,
        );
        if ended == Ended::Closed {
            break;
        }
    }
    assert_eq!(ended, Ended::Closed, "slow client never cut off");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(count(&received, "200 OK"), 0);
    // The server goes on.
    assert_eq!(get(server.address, "/hello").0, StatusCode::OK);
}

#[test]
fn slow_handler_is_cancelled_with_503() {
    let server = start(builder().handler_timeout(Duration::from_millis(100)));
    let (status, body) = get(server.address, "/slow?ms=10000");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("timed out"));
    assert_eq!(get(server.address, "/slow?ms=1").0, StatusCode::OK);
}

fn idle_connection_closes(server: &TestServer) {
    let mut stream = raw(server.address);
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        count(bytes, "hello") == 1
    });
    assert_eq!(ended, Ended::Done);
    let ended = read_until(&mut stream, &mut received, Duration::from_secs(5), |_| {
        false
    });
    assert_eq!(ended, Ended::Closed, "idle keep-alive connection left open");
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let server = start(
        builder()
            .idle_timeout(Duration::from_millis(200))
            .header_read_timeout(Duration::from_secs(30)),
    );
    idle_connection_closes(&server);
}

#[test]
fn header_timeout_also_bounds_keep_alive_idleness() {
    let server = start(
        builder()
            .idle_timeout(Duration::from_secs(30))
            .header_read_timeout(Duration::from_millis(200)),
    );
    idle_connection_closes(&server);
}

#[test]
fn busy_connection_is_not_closed_as_idle() {
    let server = start(builder().idle_timeout(Duration::from_millis(100)));
    // The request takes longer than the idle timeout; it must still be answered.
    let (status, _) = get(server.address, "/slow?ms=300");
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn a_long_poll_and_a_slow_upload_outlive_the_header_and_idle_timeouts() {
    // Both timers 300 ms: a handler that waits 1.2 s, and a body (length-delimited,
    // then chunked) trickling in for about a second while the handler reads it.
    let server = start(
        builder()
            .header_read_timeout(Duration::from_millis(300))
            .idle_timeout(Duration::from_millis(300)),
    );
    assert_eq!(get(server.address, "/slow?ms=1200").0, StatusCode::OK);
    for (head, piece, end) in [
        (
            &b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\n"[..],
            &b"u"[..],
            &b""[..],
        ),
        (
            &b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            &b"1\r\nu\r\n"[..],
            &b"0\r\n\r\n"[..],
        ),
    ] {
        let mut stream = raw(server.address);
        stream.write_all(head).unwrap();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            stream.write_all(piece).unwrap();
        }
        stream.write_all(end).unwrap();
        let mut received = Vec::new();
        let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
            count(bytes, "uuuuuuuuuu") == 1
        });
        assert_eq!(ended, Ended::Done, "{}", String::from_utf8_lossy(&received));
    }
}
