//! Graceful shutdown: stop accepting, finish in-flight requests, respect the deadline.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

#[test]
fn in_flight_request_finishes_and_new_connections_are_refused() {
    let server = start(builder().shutdown_deadline(Duration::from_secs(5)));
    let address = server.address;
    let mut busy = raw(address);
    busy.write_all(b"GET /slow?ms=300 HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut idle = raw(address);
    idle.write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut idle_received = Vec::new();
    assert_eq!(
        read_until(&mut idle, &mut idle_received, CLIENT_TIMEOUT, |b| count(
            b, "hello"
        ) == 1),
        Ended::Done
    );
    std::thread::sleep(Duration::from_millis(50));

    let stopper = std::thread::spawn(move || server.stop());

    // The idle keep-alive connection is closed promptly.
    assert_eq!(
        read_until(
            &mut idle,
            &mut idle_received,
            Duration::from_secs(3),
            |_| false
        ),
        Ended::Closed
    );
    // The in-flight request is answered, then its connection closes.
    let mut received = Vec::new();
    let ended = read_until(&mut busy, &mut received, Duration::from_secs(5), |_| false);
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("slow"),
        "{text}"
    );
    assert_eq!(ended, Ended::Closed);

    let took = stopper.join().unwrap();
    assert!(
        took < Duration::from_secs(5),
        "serve returned after {took:?}"
    );
    // Nothing listens any more.
    match std::net::TcpStream::connect(address) {
        Err(_) => {}
        Ok(mut stream) => {
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = stream.write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n");
            let mut buffer = [0; 64];
            let read = std::io::Read::read(&mut stream, &mut buffer).unwrap_or(0);
            assert_eq!(read, 0, "a connection was served after shutdown");
        }
    }
}

#[test]
fn requests_past_the_deadline_are_dropped() {
    let server = start(builder().shutdown_deadline(Duration::from_millis(100)));
    let mut busy = raw(server.address);
    busy.write_all(b"GET /slow?ms=60000 HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let took = server.stop();
    assert!(
        took < Duration::from_secs(3),
        "serve returned after {took:?}"
    );
    let mut received = Vec::new();
    assert_eq!(
        read_until(&mut busy, &mut received, Duration::from_secs(3), |_| false),
        Ended::Closed
    );
    assert!(received.is_empty());
}

/// Sends `path` on a fresh raw connection to `child` and waits for the child to say
/// its handler got it.
fn start_request(child: &mut ChildServer, path: &str, announced: &str) -> std::net::TcpStream {
    let mut stream = raw(child.address);
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .unwrap();
    child.wait_for_line(announced);
    stream
}

#[test]
fn a_handler_blocking_its_worker_cannot_hold_shutdown_past_the_deadline() {
    // Deadline 300 ms; the handler blocks its thread for an hour.
    let mut child = ChildServer::start("stuck");
    let _blocked = start_request(&mut child, "/block", "blocking");
    let signalled = std::time::Instant::now();
    child.signal(libc::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "the process still runs 10 s after SIGTERM (deadline 300 ms)"
    );
    // The deadline, then at most a second's grace for the workers to stop.
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
    let stderr = child.stderr();
    assert!(stderr.contains("left behind"), "{stderr}");
}

#[test]
fn a_second_signal_ends_the_process_at_once() {
    // Deadline 600 s; the request awaits for an hour: the first signal starts a
    // graceful shutdown that would wait for it.
    let mut child = ChildServer::start("patient");
    let _waiting = start_request(&mut child, "/await", "awaiting");
    child.signal(libc::SIGTERM);
    assert!(
        child.wait_exit(Duration::from_millis(500)).is_none(),
        "the first signal must drain, not exit"
    );
    child.signal(libc::SIGINT);
    let status = child
        .wait_exit(Duration::from_secs(5))
        .expect("the second signal did not end the process");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
}

#[test]
fn after_serve_returns_a_termination_signal_has_its_default_action_again() {
    // The server's signal handling ends with `serve`: a program that goes on
    // afterwards (cleaning up, or stuck) must still be ended by SIGTERM or SIGINT.
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = ChildServer::start("lingering");
        assert_eq!(get(child.address, "/hello").0, http::StatusCode::OK);
        child.signal(libc::SIGTERM);
        child.wait_for_line("lingering");
        child.signal(signal);
        let status = child
            .wait_exit(Duration::from_secs(5))
            .expect("the signal was ignored after serve returned");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal), "{status:?}");
    }
}

/// A response body without end: a frame every 50 ms, for ever.
struct Endless(Option<pagekeep_executor::Sleep>);

impl http_body::Body for Endless {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::future::Future;
        let pause = self
            .0
            .get_or_insert_with(|| pagekeep_executor::sleep(Duration::from_millis(50)));
        if std::pin::Pin::new(pause).poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        self.0 = None;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"tick\n",
        )))))
    }
}

#[test]
fn an_endless_streamed_response_is_cut_at_the_shutdown_deadline() {
    use http_body_util::BodyExt;
    let server = start_with(
        builder().shutdown_deadline(Duration::from_millis(300)),
        |_request: http::Request<pagekeep_executor::RequestBody>| async {
            http::Response::new(Endless(None).map_err(|never| match never {}).boxed())
        },
    );
    let mut stream = raw(server.address);
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let streaming = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        count(bytes, "tick") >= 2
    });
    assert_eq!(streaming, Ended::Done);
    let took = server.stop();
    assert!(
        took < Duration::from_secs(3),
        "serve returned after {took:?}"
    );
    assert_eq!(
        read_until(&mut stream, &mut received, Duration::from_secs(3), |_| {
            false
        }),
        Ended::Closed
    );
    assert!(
        !received.ends_with(b"0\r\n\r\n"),
        "a cut-off body must not look complete"
    );
}

#[test]
fn a_server_shut_down_before_it_serves_returns_from_serve() {
    let server = builder()
        .arena_pool(own_servers_pool())
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let address = server.local_addr();
    server.shutdown_handle().trigger();
    server.serve(routes).unwrap();
    assert!(std::net::TcpStream::connect(address).is_err());
}
