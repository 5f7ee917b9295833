//! Responses that take their time: a streamed body or a slow reader is never cut by the
//! header or idle timers; the response write timeout (off by default) bounds a reader
//! that stops; a body is polled in its request's arena, under its budget and panic
//! guard.

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;

use crate::support::*;

/// A body of `frames` frames made by `make`, one every `interval`.
struct Paced {
    frames: usize,
    sent: usize,
    interval: Duration,
    pause: Option<pagekeep_executor::Sleep>,
    make: fn(usize) -> Bytes,
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent == self.frames {
            return Poll::Ready(None);
        }
        if self.sent > 0 {
            let interval = self.interval;
            let pause = self
                .pause
                .get_or_insert_with(|| pagekeep_executor::sleep(interval));
            if Pin::new(pause).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        let frame = (self.make)(self.sent);
        self.sent += 1;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

fn paced(frames: usize, interval: Duration, make: fn(usize) -> Bytes) -> Response<TestBody> {
    let body = Paced {
        frames,
        sent: 0,
        interval,
        pause: None,
        make,
    };
    Response::new(body.map_err(|never| match never {}).boxed())
}

static LARGE: [u8; 16 << 20] = [b'x'; 16 << 20];

/// `/ticks`: 8 short chunks 100 ms apart; `/large`: 16 MiB in one frame (static, no
/// allocation); `/panics`: a chunk, then the body panics; `/hog`: 64 KiB chunks
/// allocated one per poll, without end; `/forever`: a tick every 100 ms, without end.
async fn streams(request: Request<pagekeep_executor::RequestBody>) -> Response<TestBody> {
    match request.uri().path() {
        "/ticks" => paced(8, Duration::from_millis(100), |index| {
            Bytes::from(format!("tick {index}\n"))
        }),
        "/large" => text(StatusCode::OK, Bytes::from_static(&LARGE)),
        "/panics" => paced(2, Duration::from_millis(10), |index| {
            assert!(index == 0, "the response body panics on purpose");
            Bytes::from_static(b"first\n")
        }),
        "/hog" => paced(1 << 20, Duration::ZERO, |_| {
            Bytes::from(vec![b'h'; 64 << 10])
        }),
        "/forever" => paced(usize::MAX, Duration::from_millis(100), |_| {
            Bytes::from_static(b"tick\n")
        }),
        _ => routes(request).await,
    }
}

/// Writes a GET for `path` on a fresh raw connection.
fn request(server: &TestServer, path: &str) -> std::net::TcpStream {
    let mut stream = raw(server.address);
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .unwrap();
    stream
}

#[test]
fn a_streamed_response_outlives_the_header_and_idle_timeouts() {
    // The body takes about 700 ms; both timers are 250 ms.
    let server = start_with(
        builder()
            .header_read_timeout(Duration::from_millis(250))
            .idle_timeout(Duration::from_millis(250)),
        streams,
    );
    let mut stream = request(&server, "/ticks");
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        bytes.ends_with(b"0\r\n\r\n")
    });
    let text = String::from_utf8_lossy(&received);
    assert_eq!(ended, Ended::Done, "cut off: {text}");
    assert_eq!(count(&received, "tick "), 8, "{text}");
    // Once written, the connection is idle: the timers apply again.
    let ended = read_until(&mut stream, &mut received, Duration::from_secs(5), |_| {
        false
    });
    assert_eq!(ended, Ended::Closed);
}

#[test]
fn a_slow_reader_of_a_large_response_is_not_cut_off() {
    let server = start_with(
        builder()
            .header_read_timeout(Duration::from_millis(250))
            .idle_timeout(Duration::from_millis(250)),
        streams,
    );
    let mut stream = request(&server, "/large");
    // About 16 MiB at 8 MiB/s: two seconds, far past the timers, with the server's
    // writes blocked on the full socket most of the time.
    let mut buffer = vec![0u8; 64 << 10];
    let mut total = 0;
    let started = std::time::Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while total < LARGE.len() {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "cut off after {total} bytes");
        total += read;
        let on_schedule = Duration::from_secs_f64(total as f64 / f64::from(8u32 << 20));
        if let Some(ahead) = on_schedule.checked_sub(started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    assert!(total >= LARGE.len());
}

#[test]
fn a_response_the_client_does_not_read_is_cut_at_the_response_write_timeout() {
    let server = start_with(
        builder().response_write_timeout(Duration::from_millis(300)),
        streams,
    );
    // Never read: the server's writes block once the socket buffers are full.
    let stream = request(&server, "/large");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.stats.response_write_timeouts() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck response was never cut"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stream);
    // A response that takes less than the limit to write is not cut: its edge.
    let mut stream = request(&server, "/hello");
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        count(bytes, "hello") == 1
    });
    assert_eq!(ended, Ended::Done);
    assert_eq!(server.stats.response_write_timeouts(), 1);
}

#[test]
fn a_streamed_response_within_the_response_write_timeout_is_written_whole() {
    // 8 chunks over about 700 ms, limit 5 s: not cut.
    let server = start_with(
        builder().response_write_timeout(Duration::from_secs(5)),
        streams,
    );
    let (status, body) = get(server.address, "/ticks");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&body, "tick "), 8);
    assert_eq!(server.stats.response_write_timeouts(), 0);
}

#[test]
fn a_response_body_that_panics_is_cut_off_and_counted() {
    let server = start_with(builder(), streams);
    let mut stream = request(&server, "/panics");
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |_| false);
    let text = String::from_utf8_lossy(&received);
    assert_eq!(ended, Ended::Closed);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("first"),
        "{text}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut-off body must not look complete"
    );
    assert_eq!(
        server.stats.panics(),
        1,
        "the body's panic is the handler's"
    );
    assert_eq!(get(server.address, "/hello").0, StatusCode::OK);
}

#[test]
fn a_response_body_allocating_past_the_budget_is_cut_off() {
    // 256 KiB budgets; the body allocates 64 KiB a frame without end.
    let server = start_with(builder(), streams);
    let mut stream = request(&server, "/hog");
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |_| false);
    assert_eq!(ended, Ended::Closed, "the body was never stopped");
    assert!(
        received.len() < 2 << 20,
        "{} bytes went out",
        received.len()
    );
    assert_eq!(server.stats.over_budget(), 1);
    assert_eq!(get(server.address, "/hello").0, StatusCode::OK);
}

/// A response body's data whose owner panics when hyper drops it, once written.
struct OwnerPanicsOnDrop(&'static [u8]);

impl AsRef<[u8]> for OwnerPanicsOnDrop {
    fn as_ref(&self) -> &[u8] {
        self.0
    }
}

impl Drop for OwnerPanicsOnDrop {
    fn drop(&mut self) {
        panic!("the owner of a response's bytes panics on purpose");
    }
}

#[test]
#[ignore = "the connection is closed after the response: hyper drops each written frame's \
            bytes in the connection's task, unguarded; containing it would take wrapping \
            every frame in a guard of its own (an allocation per frame)"]
fn response_bytes_whose_owner_panics_on_drop_leave_the_connection_usable() {
    let server = start_with(
        builder(),
        |request: Request<pagekeep_executor::RequestBody>| async move {
            if request.uri().path() != "/owned" {
                return routes(request).await;
            }
            text(
                StatusCode::OK,
                Bytes::from_owner(OwnerPanicsOnDrop(b"owned")),
            )
        },
    );
    let text = get_then_hello(server.address, "/owned");
    assert_eq!(count(text.as_bytes(), "HTTP/1.1 200"), 2, "{text}");
}

#[test]
fn clients_leaving_an_endless_stream_free_its_connection_and_arena() {
    // Nothing is read from them and nothing ends the stream: the server finds out at
    // its next write, closes the connection and drops the body in its arena.
    let server = start_with(builder(), streams);
    for _ in 0..5 {
        let mut stream = request(&server, "/forever");
        let mut received = Vec::new();
        let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
            count(bytes, "tick") >= 1
        });
        assert_eq!(ended, Ended::Done);
        drop(stream);
    }
    server.assert_no_connection_left();
    server.assert_arenas_returned();
}
