//! Windows: peers that connect and reset before the server accepts them. Each reset
//! connection makes one `accept` fail (`WSAECONNRESET`; under wine `WSAENOTCONN`); the
//! accept loop must take the next connection at once instead of backing off as it does
//! when descriptors run out (10 ms doubling up to 1 s per failure, which made a burst of
//! 30 resets stop a server accepting for about 25 seconds).

use std::io::Write;
use std::time::Duration;

use http::StatusCode;
use socket2::SockRef;

use crate::support::{Ended, builder, raw, read_until, start_with, text};

/// Long enough for a stalled accept loop to show (30 failures back off for about
/// 25 s in all), short enough that a working one answers with room to spare.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn resets_before_accept_do_not_stall_the_accept_loop() {
    // One worker: while its handler blocks it, the accept loop (on the same worker)
    // cannot run, so the connections below wait in the backlog and are reset there.
    let server = start_with(
        builder().workers(1),
        |request: http::Request<pagekeep_executor::RequestBody>| async move {
            if request.uri().path() == "/block" {
                std::thread::sleep(Duration::from_millis(500));
            }
            text(StatusCode::OK, "hello")
        },
    );
    let mut blocker = raw(server.address);
    blocker
        .write_all(b"GET /block HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    // Give the worker time to take the request and block in its handler.
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..30 {
        let stream = std::net::TcpStream::connect(server.address).unwrap();
        // Linger 0: closing sends a reset instead of a FIN.
        SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    }
    let mut received = Vec::new();
    let ended = read_until(&mut blocker, &mut received, ANSWER_LIMIT, |bytes| {
        bytes.ends_with(b"hello")
    });
    assert_eq!(ended, Ended::Done, "the blocking request was not answered");
    let mut stream = raw(server.address);
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, ANSWER_LIMIT, |bytes| {
        bytes.ends_with(b"hello")
    });
    assert_eq!(
        ended,
        Ended::Done,
        "no answer within {ANSWER_LIMIT:?} after 30 peers reset before accept: {}",
        String::from_utf8_lossy(&received)
    );
    drop(stream);
    drop(blocker);
    server.assert_no_connection_left();
    server.stop();
}
