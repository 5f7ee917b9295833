//! Request bodies under one `BodyBudget`: many large uploads at once through a budget
//! smaller than their sum, a client that vanishes mid-upload, a handler that collects
//! a body larger than the budget, and the server's resident memory while it all runs
//! (in a child process, see `child.rs`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use pagekeep_executor::{BodyBudget, BodyOverBudget, RequestBody};

use crate::support::*;

const MIB: usize = 1 << 20;

/// Byte `index` of upload `seed`.
fn pattern(seed: u8, index: usize) -> u8 {
    (index as u8).wrapping_mul(31) ^ (index >> 12) as u8 ^ seed
}

/// FNV-1a, 64 bits: order-sensitive, so a reordered or lost piece shows.
#[derive(Clone, Copy)]
struct Checksum(u64);

impl Checksum {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn expected_checksum(seed: u8, len: usize) -> u64 {
    let mut sum = Checksum::new();
    let bytes: Vec<u8> = (0..len).map(|index| pattern(seed, index)).collect();
    sum.update(&bytes);
    sum.0
}

/// Reads the body as fast as the client sends it and hands every chunk to a slow
/// consumer (a task that takes a millisecond per chunk, a slow disk) through an
/// unbounded queue, so only the body budget bounds what the server holds; answers
/// `<checksum> <bytes>`. The consumer frees chunks on its own schedule, never waiting
/// for more input, so a full budget always drains. The queue counts as held: a body
/// larger than the budget would fail here (`BodyOverBudget`), the 4 MiB ones fit.
pub async fn slow_checksum(request: Request<RequestBody>) -> Response<TestBody> {
    let mut body = request.into_body();
    let (queue, mut chunks) = pagekeep_executor::sync::mpsc::unbounded_channel::<Bytes>();
    let consumer = pagekeep_executor::spawn(async move {
        let mut sum = Checksum::new();
        let mut length = 0;
        while let Some(chunk) = chunks.recv().await {
            pagekeep_executor::sleep(Duration::from_millis(1)).await;
            sum.update(&chunk);
            length += chunk.len();
        }
        (sum.0, length)
    });
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    queue
                        .send(data)
                        .expect("the consumer runs until the queue closes");
                }
            }
            Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
        }
    }
    drop(queue);
    let (sum, length) = consumer.await.expect("the consumer finishes");
    text(StatusCode::OK, format!("{sum} {length}\n"))
}

/// Checksums each chunk as it comes and drops it: the plain streaming handler.
async fn inline_checksum(request: Request<RequestBody>) -> Response<TestBody> {
    let mut body = request.into_body();
    let (mut sum, mut length) = (Checksum::new(), 0);
    while let Some(frame) = body.frame().await {
        match frame.map(http_body::Frame::into_data) {
            Ok(Ok(data)) => {
                sum.update(&data);
                length += data.len();
            }
            Ok(Err(_trailers)) => {}
            Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
        }
    }
    text(StatusCode::OK, format!("{} {length}\n", sum.0))
}

/// Holds every chunk until the body ends (or fails): the collecting handler. (Not
/// `to_bytes`, whose copy of the whole body would go to the request's 1 MiB arena.)
async fn collect(request: Request<RequestBody>) -> Response<TestBody> {
    let mut body = request.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => chunks.extend(frame.into_data()),
            Err(error) => {
                return match error.downcast_ref::<BodyOverBudget>() {
                    Some(over) => text(StatusCode::PAYLOAD_TOO_LARGE, format!("{over}\n")),
                    None => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
                };
            }
        }
    }
    let mut sum = Checksum::new();
    for chunk in &chunks {
        sum.update(chunk);
    }
    let length: usize = chunks.iter().map(Bytes::len).sum();
    text(StatusCode::OK, format!("{} {length}\n", sum.0))
}

/// The bytes the slow clients' handlers (`/slow-hold`, `/slow-stream`) have read: only
/// `slow_clients_that_sent_a_few_bytes_leave_the_budget_to_a_normal_upload` uses them.
static SLOW_BYTES_READ: AtomicUsize = AtomicUsize::new(0);

/// Reads the body and counts its bytes in [`SLOW_BYTES_READ`] as they come; holds
/// every chunk until the end (`/slow-hold`) or drops it at once (`/slow-stream`).
async fn count_slow(request: Request<RequestBody>) -> Response<TestBody> {
    let hold = request.uri().path() == "/slow-hold";
    let mut body = request.into_body();
    let (mut held, mut length) = (Vec::new(), 0);
    while let Some(frame) = body.frame().await {
        match frame.map(http_body::Frame::into_data) {
            Ok(Ok(data)) => {
                length += data.len();
                SLOW_BYTES_READ.fetch_add(data.len(), Ordering::Relaxed);
                if hold {
                    held.push(data);
                }
            }
            Ok(Err(_trailers)) => {}
            Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
        }
    }
    drop(held);
    text(StatusCode::OK, format!("{length}\n"))
}

async fn by_path(request: Request<RequestBody>) -> Response<TestBody> {
    match request.uri().path() {
        "/collect" => collect(request).await,
        "/slow-hold" | "/slow-stream" => count_slow(request).await,
        "/inline" => inline_checksum(request).await,
        _ => slow_checksum(request).await,
    }
}

/// A connection that has sent a request head for a body of `len` bytes.
fn start_upload(address: SocketAddr, path: &str, len: usize) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Writes bytes `from..to` of upload `seed`, 64 KiB at a time (the client holds no
/// more); false if the server stopped taking them.
fn send_body(stream: &mut std::net::TcpStream, seed: u8, from: usize, to: usize) -> bool {
    let mut piece = Vec::with_capacity(64 << 10);
    let mut at = from;
    while at < to {
        let end = (at + (64 << 10)).min(to);
        piece.clear();
        piece.extend((at..end).map(|index| pattern(seed, index)));
        if stream.write_all(&piece).is_err() {
            return false;
        }
        at = end;
    }
    true
}

/// Uploads `len` bytes of pattern `seed` to `path`; returns the status and body text
/// (the writes and the read run at once, so an early answer is read too).
fn upload(address: SocketAddr, path: &str, seed: u8, len: usize) -> (u16, String) {
    let stream = start_upload(address, path, len);
    let mut writer = stream.try_clone().unwrap();
    let writing = thread::spawn(move || send_body(&mut writer, seed, 0, len));
    let answer = read_answer(stream);
    let _ = writing.join();
    answer
}

/// Reads a `connection: close` response to its end.
fn read_answer(mut stream: std::net::TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// Waits (bounded) until `condition` holds; false if it never did in 10 s.
fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Eight 4 MiB uploads at once, each a checksum, through `address`; fails on any wrong
/// answer.
pub fn eight_uploads(address: SocketAddr) {
    let uploads: Vec<_> = (0..8u8)
        .map(|seed| thread::spawn(move || upload(address, "/", seed, 4 * MIB)))
        .collect();
    for (seed, upload) in uploads.into_iter().enumerate() {
        let (status, body) = upload.join().unwrap();
        assert_eq!(status, 200, "upload {seed}: {body}");
        let expected = format!("{} {}\n", expected_checksum(seed as u8, 4 * MIB), 4 * MIB);
        assert_eq!(body, expected, "upload {seed}");
    }
}

fn budget_server(budget: &BodyBudget) -> TestServer {
    start_with(
        builder()
            .max_body_bytes(64 * MIB)
            .handler_timeout(Duration::from_secs(60))
            .body_budget(budget.clone()),
        by_path,
    )
}

#[test]
fn eight_uploads_of_4_mib_through_an_8_mib_budget_all_complete() {
    let budget = BodyBudget::new(8 * MIB);
    let server = budget_server(&budget);
    // Watches the budget while the uploads run.
    let watching = {
        let budget = budget.clone();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&done);
        let watcher = thread::spawn(move || {
            let (mut least, mut most_waiting) = (usize::MAX, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                least = least.min(budget.available_bytes());
                most_waiting = most_waiting.max(budget.waiters());
                thread::sleep(Duration::from_micros(200));
            }
            (least, most_waiting)
        });
        (done, watcher)
    };
    eight_uploads(server.address);
    watching.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let (least, most_waiting) = watching.1.join().unwrap();
    eprintln!(
        "body budget: at least {least} of {} bytes free, at most {most_waiting} reads waiting",
        budget.capacity_bytes()
    );
    assert!(
        eventually(|| budget.available_bytes() == budget.capacity_bytes()),
        "every chunk went back: {budget:?}"
    );
    server.assert_no_connection_left();
}

#[test]
fn a_client_that_vanishes_mid_upload_gives_its_bytes_back() {
    let budget = BodyBudget::new(MIB);
    let server = budget_server(&budget);
    // Half of a declared 1 MiB, held by the collecting handler, then the client goes.
    let mut vanishing = start_upload(server.address, "/collect", MIB);
    assert!(send_body(&mut vanishing, 9, 0, MIB / 2));
    assert!(
        eventually(|| budget.available_bytes() <= MIB / 2),
        "the handler holds what was sent: {budget:?}"
    );
    drop(vanishing);
    assert!(
        eventually(|| budget.available_bytes() == budget.capacity_bytes()),
        "the vanished client's bytes came back: {budget:?}"
    );
    // Room for a body of most of the budget, which a leak would have kept out.
    let len = 3 * MIB / 4;
    let (status, body) = upload(server.address, "/collect", 10, len);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{} {len}\n", expected_checksum(10, len)));
    server.assert_no_connection_left();
}

#[test]
fn a_body_collected_past_the_budget_gets_413_and_streamed_it_passes() {
    let budget = BodyBudget::new(256 << 10);
    let server = budget_server(&budget);
    let len = 512 << 10;
    let (status, body) = upload(server.address, "/collect", 11, len);
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("exceed the server's body budget of 262144 bytes"),
        "{body}"
    );
    // The same body, streamed, passes whole through the same budget.
    let (status, body) = upload(server.address, "/inline", 11, len);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{} {len}\n", expected_checksum(11, len)));
    assert!(eventually(
        || budget.available_bytes() == budget.capacity_bytes()
    ));
    server.assert_no_connection_left();
}

/// Found by a review: a body waiting for its client's next bytes kept the partly filled
/// 16 KiB block it was filling, so each slow client that had sent a kilobyte and a half
/// took 16 KiB of the budget for as long as it liked: four of them took a 64 KiB
/// budget, and every other upload waited behind them. Now a body that waits for its
/// client holds nothing itself: a slow client costs only the chunks its handler holds,
/// each charged at most twice its frame and its 112 bytes of bookkeeping.
#[test]
fn slow_clients_that_sent_a_few_bytes_leave_the_budget_to_a_normal_upload() {
    const SLOW: usize = 12;
    const SENT: usize = 1500;
    let budget = BodyBudget::new(64 << 10);
    let server = budget_server(&budget);
    // Half the slow clients' handlers hold what they read, half stream it.
    let slow: Vec<_> = (0..SLOW)
        .map(|index| {
            let path = if index % 2 == 0 {
                "/slow-hold"
            } else {
                "/slow-stream"
            };
            let mut stream = start_upload(server.address, path, MIB);
            assert!(send_body(&mut stream, index as u8, 0, SENT));
            stream
        })
        .collect();
    assert!(
        eventually(|| SLOW_BYTES_READ.load(Ordering::Relaxed) == SLOW * SENT),
        "every slow client's bytes were read, none waits for room: {} of {} bytes, {budget:?}",
        SLOW_BYTES_READ.load(Ordering::Relaxed),
        SLOW * SENT
    );
    // A holding handler's 1,500 bytes (in one frame, or two if hyper's reads split
    // them): at most 2 x (1,500 + 2 x 112) bytes; a streaming one's nothing.
    let charged = budget.capacity_bytes() - budget.available_bytes();
    let per_holding_client = 2 * (SENT + 2 * 112);
    eprintln!(
        "{SLOW} slow clients (half holding their {SENT} bytes) hold {charged} bytes of the budget"
    );
    assert!(
        charged <= SLOW / 2 * per_holding_client,
        "{charged} bytes charged for {SLOW} slow clients: {budget:?}"
    );
    // A normal upload of many times the budget passes while they wait.
    let len = MIB;
    let (status, body) = upload(server.address, "/inline", 12, len);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{} {len}\n", expected_checksum(12, len)));
    drop(slow);
    assert!(
        eventually(|| budget.available_bytes() == budget.capacity_bytes()),
        "the slow clients' bytes came back: {budget:?}"
    );
    server.assert_no_connection_left();
}

/// A connection that has sent a request head for a chunked body, with `TCP_NODELAY`.
fn start_chunked_upload(address: SocketAddr, path: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Writes bytes `0..len` of pattern `seed` in one-byte chunks, each written alone
/// (hyper gives each chunk as a frame of its own), then the last chunk; stops if the
/// server stopped taking them.
fn send_one_byte_chunks(stream: &mut std::net::TcpStream, seed: u8, len: usize) {
    for index in 0..len {
        let chunk = [b'1', b'\r', b'\n', pattern(seed, index), b'\r', b'\n'];
        if stream.write_all(&chunk).is_err() {
            return;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
}

/// Uploads bytes `0..len` of pattern `seed` to `path` in one-byte chunks; returns the
/// status and body text.
fn upload_in_one_byte_chunks(
    address: SocketAddr,
    path: &str,
    seed: u8,
    len: usize,
) -> (u16, String) {
    let stream = start_chunked_upload(address, path);
    let mut writer = stream.try_clone().unwrap();
    let writing = thread::spawn(move || send_one_byte_chunks(&mut writer, seed, len));
    let answer = read_answer(stream);
    let _ = writing.join();
    answer
}

/// Found by a review: a one-byte frame was charged 8 bytes while about 88 bytes of
/// bookkeeping sat outside the budget, so a handler could hold ten times the budget
/// in memory through one-byte chunks. Now each frame counts its bookkeeping: a handler
/// collecting 4,096 one-byte chunks under a 64 KiB budget is told the body is over
/// budget (before, at 8 bytes a frame, the 32 KiB they were charged fit), and the same
/// body streamed passes whole.
#[test]
fn one_byte_chunks_count_their_bookkeeping_against_the_budget() {
    let budget = BodyBudget::new(64 << 10);
    let server = budget_server(&budget);
    let len = 4096;
    let (status, body) = upload_in_one_byte_chunks(server.address, "/collect", 13, len);
    assert_eq!(status, 413, "{body}");
    assert!(
        eventually(|| budget.available_bytes() == budget.capacity_bytes()),
        "{budget:?}"
    );
    let (status, body) = upload_in_one_byte_chunks(server.address, "/inline", 13, len);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{} {len}\n", expected_checksum(13, len)));
    assert!(
        eventually(|| budget.available_bytes() == budget.capacity_bytes()),
        "{budget:?}"
    );
    server.assert_no_connection_left();
}

/// `VmHWM` (peak) and `VmRSS` of process `pid`, in bytes.
#[cfg(unix)] // a child process and /proc (README, "Platforms")
fn resident(pid: u32) -> (usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<usize>().ok())
            .map(|kib| kib << 10)
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The server's peak resident memory during eight 4 MiB uploads, above what it had
/// after a first small upload, in a child process running `scenario`.
#[cfg(unix)]
fn peak_growth(scenario: &str) -> usize {
    let child = ChildServer::start(scenario);
    // Warm up (workers, arenas, buffers, the budget's first slabs) with a small upload.
    let (status, body) = upload(child.address, "/", 0, 256 << 10);
    assert_eq!(status, 200, "{body}");
    let (_, before) = resident(child.process.id());
    eight_uploads(child.address);
    let (peak, after) = resident(child.process.id());
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{scenario}: VmRSS {} KiB before, VmHWM {} KiB, VmRSS {} KiB after: peak growth {} KiB",
        before >> 10,
        peak >> 10,
        after >> 10,
        growth >> 10
    );
    growth
}

/// The bound stated in the README: the budget, plus hyper's buffers (3 x 16 KiB for
/// each of the 8 uploading connections), plus 2 MiB for everything else a server
/// touches for eight uploads (the requests' arenas, the consumers' queues, the budget
/// heap's slab metadata). Measured: 1.1 to 1.3 MiB above the budget in all, over six
/// runs.
#[cfg(unix)] // a child process and /proc (README, "Platforms")
const RESIDENT_ALLOWANCE: usize = 2 * MIB + 8 * 3 * (16 << 10);

#[cfg(unix)] // a child process and /proc (README, "Platforms")
#[test]
fn eight_uploads_keep_the_server_within_its_body_budget_in_resident_memory() {
    let growth = peak_growth("body-budget");
    assert!(
        growth <= 8 * MIB + RESIDENT_ALLOWANCE,
        "peak growth {} KiB past the 8 MiB budget plus {} KiB",
        growth >> 10,
        RESIDENT_ALLOWANCE >> 10
    );
}

#[cfg(unix)] // a child process and /proc (README, "Platforms")
#[test]
#[ignore = "a measurement for comparison: without a budget the server holds what the client sends"]
fn eight_uploads_without_a_budget_for_comparison() {
    peak_growth("no-body-budget");
}

/// The server's peak resident memory while a client sends a 1 MiB body in one-byte
/// chunks to the slow consumer of the 8 MiB budget (in a child process): the chunks
/// pile up in the consumer's queue until the budget, which counts their bookkeeping,
/// is full, then the server stops reading. A measurement: it prints the growth once the
/// resident memory has stopped moving (or after 20 s).
#[cfg(unix)] // a child process and /proc (README, "Platforms")
#[test]
#[ignore = "a measurement: one-byte chunks piling up under the budget"]
fn one_byte_chunks_piling_up_under_the_budget_for_measurement() {
    let child = ChildServer::start("body-budget");
    let (status, body) = upload(child.address, "/", 0, 256 << 10);
    assert_eq!(status, 200, "{body}");
    let pid = child.process.id();
    let (_, before) = resident(pid);
    let address = child.address;
    // Ends when the child is killed.
    thread::spawn(move || send_one_byte_chunks(&mut start_chunked_upload(address, "/"), 1, MIB));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut stable) = (0, 0);
    while Instant::now() < deadline && stable < 4 {
        thread::sleep(Duration::from_millis(500));
        let (_, now) = resident(pid);
        stable = if now.abs_diff(last) < 64 << 10 {
            stable + 1
        } else {
            0
        };
        last = now;
    }
    let (peak, now) = resident(pid);
    eprintln!(
        "one-byte chunks: VmRSS {} KiB before, VmHWM {} KiB, VmRSS {} KiB at the end: peak growth {} KiB",
        before >> 10,
        peak >> 10,
        now >> 10,
        peak.saturating_sub(before) >> 10
    );
}

#[test]
fn collecting_handlers_waiting_on_each_other_are_freed_by_the_handler_timeout() {
    let budget = BodyBudget::new(512 << 10);
    let server = start_with(
        builder()
            .max_body_bytes(64 * MIB)
            .handler_timeout(Duration::from_secs(1))
            .body_budget(budget.clone()),
        by_path,
    );
    let len = 400 << 10;
    // A holds 300 KiB; B fills the rest and waits; then A wants its last 100 KiB,
    // behind B: each waits for room only the other could give.
    let mut first = start_upload(server.address, "/collect", len);
    assert!(send_body(&mut first, 1, 0, 300 << 10));
    assert!(
        eventually(|| budget.available_bytes() <= (512 - 300) << 10),
        "{budget:?}"
    );
    let mut second = start_upload(server.address, "/collect", len);
    let mut second_writer = second.try_clone().unwrap();
    let second_writing = thread::spawn(move || send_body(&mut second_writer, 2, 0, len));
    assert!(eventually(|| budget.waiters() == 1), "{budget:?}");
    let mut first_writer = first.try_clone().unwrap();
    let first_writing = thread::spawn(move || send_body(&mut first_writer, 1, 300 << 10, len));
    assert!(eventually(|| budget.waiters() == 2), "{budget:?}");
    // Nobody gives anything back until the handler timeout drops a handler: its bytes
    // come back, and the other finishes (or is dropped too, if its timeout came first
    // or at the same moment).
    let answers = [
        read_answer_or_reset(&mut first),
        read_answer_or_reset(&mut second),
    ];
    let _ = (first_writing.join(), second_writing.join());
    let timed_out = server.stats.handler_timeouts();
    assert!(timed_out >= 1, "the deadlock was broken: {answers:?}");
    let mut served = 0;
    for (seed, answer) in [1u8, 2].into_iter().zip(&answers) {
        if answer.contains(" 200 ") {
            served += 1;
            let sum = format!("\r\n\r\n{} {len}\n", expected_checksum(seed, len));
            assert!(answer.ends_with(&sum), "upload {seed}: {answer:?}");
        } else {
            assert!(
                answer.is_empty() || answer.contains(" 503 "),
                "a 503 (or a reset after it): {answer:?}"
            );
        }
    }
    assert_eq!(timed_out + served, 2, "{answers:?}");
    assert!(
        eventually(|| budget.available_bytes() == budget.capacity_bytes()),
        "the cancelled handlers' bytes came back: {budget:?}"
    );
    assert_eq!(budget.waiters(), 0);
    // And the budget serves again.
    let (status, body) = upload(server.address, "/collect", 3, len);
    assert_eq!(status, 200, "{body}");
    server.assert_no_connection_left();
}

/// What the server sent before it closed (a close with unread request bytes may reset
/// the connection, which can cost the client what it had not read yet).
fn read_answer_or_reset(stream: &mut std::net::TcpStream) -> String {
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    String::from_utf8_lossy(&received).into_owned()
}
