//! A keep-alive HTTP/1.1 load generator with a latency histogram, for the executor
//! group of `reproduce` (no external tool needed).
//!
//! Each of [`Load::threads`] threads drives its share of [`Load::connections`]
//! keep-alive connections with its own `mio::Poll`, one request in flight per connection
//! (like `wrk`). A response is complete when its `content-length` bytes have arrived;
//! latency runs from writing a request to completing its response. Requests are
//! numbered across all threads; with a [`Mix`], every `every`-th request goes to the
//! mix's path instead of the main one (e.g. one `/oom` in a hundred). A load stops after
//! a duration (requests in flight then are abandoned) or after a number of requests
//! (every one of them answered or lost).
//!
//! A connection the server closes, or that fails, counts its request in flight as lost
//! and is replaced by a new one. A load where no response arrives for
//! [`Load::stall_timeout`] fails with [`io::ErrorKind::TimedOut`].

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// When a load stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long; requests in flight at the end are abandoned, not counted.
    After(Duration),
    /// After this many requests have been sent and answered (or lost).
    Requests(u64),
    /// After each connection has had this many requests answered: with 1, a load that
    /// only opens its connections.
    PerConnection(u64),
}

/// A second path that every `every`-th request goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// The path, e.g. `/oom`.
    pub path: String,
    /// Request number `n` (counting from 1) goes to `path` when `n % every == 0`.
    pub every: u64,
}

/// What to send, where, and for how long.
#[derive(Clone, Debug)]
pub struct Load {
    /// The server.
    pub target: SocketAddr,
    /// The path of normal requests, e.g. `/`.
    pub path: String,
    /// Another path mixed in, if any.
    pub mix: Option<Mix>,
    /// Keep-alive connections, spread over the threads.
    pub connections: usize,
    /// Load threads, each with its own `mio::Poll`.
    pub threads: usize,
    /// When to stop.
    pub stop: Stop,
    /// Fail when no response arrives for this long.
    pub stall_timeout: Duration,
}

impl Load {
    /// `connections` connections over two threads sending `GET /` until `stop`.
    pub fn new(target: SocketAddr, connections: usize, stop: Stop) -> Load {
        Load {
            target,
            path: "/".to_owned(),
            mix: None,
            connections,
            threads: 2,
            stop,
            stall_timeout: Duration::from_secs(10),
        }
    }

    /// Mixes in `path` as every `every`-th request.
    pub fn mix(mut self, path: &str, every: u64) -> Load {
        self.mix = Some(Mix {
            path: path.to_owned(),
            every: every.max(1),
        });
        self
    }
}

/// Responses to the requests of one path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Answered with a 2xx status.
    pub ok: u64,
    /// Answered with another status.
    pub other_status: u64,
    /// Sent, but the connection closed or failed before the response was complete.
    pub lost: u64,
}

impl PathCounts {
    /// Requests answered, whatever the status.
    pub fn answered(&self) -> u64 {
        self.ok + self.other_status
    }

    /// Requests not answered with 2xx.
    pub fn failed(&self) -> u64 {
        self.other_status + self.lost
    }

    fn add(&mut self, other: &PathCounts) {
        self.ok += other.ok;
        self.other_status += other.other_status;
        self.lost += other.lost;
    }
}

/// What a load measured.
#[derive(Debug)]
pub struct Outcome {
    /// Requests to the main path.
    pub normal: PathCounts,
    /// Requests to the mixed-in path.
    pub mixed: PathCounts,
    /// From the start of the load (connections being opened) to its end.
    pub elapsed: Duration,
    /// Latency of the main path's answered requests, in microseconds.
    pub latency_micros: Histogram<u64>,
}

impl Outcome {
    /// Requests answered, on any path.
    pub fn answered(&self) -> u64 {
        self.normal.answered() + self.mixed.answered()
    }

    /// Answered requests per second.
    pub fn requests_per_second(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 us to 60 s with three significant digits: valid bounds, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// Runs `load` to its end.
///
/// # Errors
/// A connection cannot be opened, the poll fails, or no response arrives for
/// [`Load::stall_timeout`].
pub fn run(load: &Load) -> io::Result<Outcome> {
    run_observed(
        load,
        SteadyState {
            begins: &|| {},
            ends: &|| {},
        },
    )
}

/// Calls a load makes at the edges of its steady state, where what a server spends on
/// opening and closing connections is behind it or still ahead.
#[derive(Clone, Copy)]
pub struct SteadyState<'a> {
    /// Called once, from a load thread, as soon as every connection is open and has had
    /// its first response. The other load threads keep going meanwhile.
    pub begins: &'a (dyn Fn() + Sync),
    /// Called once after the load has stopped sending and before any of its
    /// connections closes (requests still in flight then are abandoned).
    pub ends: &'a (dyn Fn() + Sync),
}

impl fmt::Debug for SteadyState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SteadyState").finish_non_exhaustive()
    }
}

/// Runs `load` to its end like [`run`], calling `steady` at the edges of its steady
/// state. `begins` is not called when some connection never gets a response; `ends`
/// is not called when the load fails.
///
/// # Errors
/// As [`run`].
pub fn run_observed(load: &Load, steady: SteadyState<'_>) -> io::Result<Outcome> {
    let threads = load.threads.max(1);
    let connections = load.connections.max(threads);
    let requests = [
        request_bytes(&load.path, load.target),
        request_bytes(
            load.mix
                .as_ref()
                .map_or(load.path.as_str(), |mix| &mix.path),
            load.target,
        ),
    ];
    let tickets = AtomicU64::new(0);
    let started = Instant::now();
    let opened = AtomicUsize::new(0);
    let shared = Shared {
        load,
        requests: &requests,
        tickets: &tickets,
        connections,
        opened: &opened,
        steady_state_begins: steady.begins,
        deadline: match load.stop {
            Stop::After(duration) => Some(started + duration),
            Stop::Requests(_) | Stop::PerConnection(_) => None,
        },
    };
    let results: Vec<io::Result<ThreadOutcome>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let share = connections / threads + usize::from(index < connections % threads);
                let shared = &shared;
                scope.spawn(move || load_thread(shared, share))
            })
            .collect();
        crate::bench::threads::join_all(workers, || Err(io::Error::other("a load thread panicked")))
    });
    let elapsed = started.elapsed();
    let mut outcome = Outcome {
        normal: PathCounts::default(),
        mixed: PathCounts::default(),
        elapsed,
        latency_micros: histogram(),
    };
    let mut threads = Vec::with_capacity(results.len());
    for result in results {
        threads.push(result?);
    }
    // Every thread has stopped; their connections are still open.
    (steady.ends)();
    for thread in threads {
        outcome.normal.add(&thread.counts[0]);
        outcome.mixed.add(&thread.counts[1]);
        outcome
            .latency_micros
            .add(thread.latency_micros)
            .map_err(|error| io::Error::other(format!("merging histograms: {error}")))?;
    }
    Ok(outcome)
}

fn request_bytes(path: &str, target: SocketAddr) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: {target}\r\n\r\n").into_bytes()
}

/// What the load threads share.
struct Shared<'a> {
    load: &'a Load,
    /// The main request and the mixed-in one.
    requests: &'a [Vec<u8>; 2],
    /// Requests numbered so far, across threads.
    tickets: &'a AtomicU64,
    /// Connections of the load, across threads.
    connections: usize,
    /// Connections that have had their first response, across threads.
    opened: &'a AtomicUsize,
    /// Called when `opened` reaches `connections`.
    steady_state_begins: &'a (dyn Fn() + Sync),
    deadline: Option<Instant>,
}

impl Shared<'_> {
    /// The next request to send (0: main path, 1: mixed in), or `None` when the load has
    /// sent all it should.
    fn next_request(&self) -> Option<usize> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        if let Stop::Requests(limit) = self.load.stop
            && ticket >= limit
        {
            return None;
        }
        let number = ticket + 1;
        Some(match &self.load.mix {
            Some(mix) if number.is_multiple_of(mix.every) => 1,
            _ => 0,
        })
    }
}

struct ThreadOutcome {
    counts: [PathCounts; 2],
    latency_micros: Histogram<u64>,
    /// The thread's connections, handed over open so that they close only after
    /// [`SteadyState::ends`].
    connections: Vec<Connection>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the connect to complete (the first writable event).
    Connecting,
    /// A request to path `kind` is in flight since `sent_at`.
    InFlight { kind: usize, sent_at: Instant },
    /// Nothing more to send.
    Done,
}

struct Connection {
    stream: TcpStream,
    state: State,
    received: Vec<u8>,
    /// Requests sent on this connection.
    sent: u64,
    /// A response has arrived on this connection.
    answered: bool,
}

fn connect(poll: &Poll, target: SocketAddr, token: Token) -> io::Result<Connection> {
    let mut stream = TcpStream::connect(target)?;
    stream.set_nodelay(true)?;
    poll.registry()
        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(Connection {
        stream,
        state: State::Connecting,
        received: Vec::with_capacity(4096),
        sent: 0,
        answered: false,
    })
}

/// Sends the next request on `connection`, or marks it done. Returns `false` when the
/// write failed (the connection is broken).
fn send_next(shared: &Shared<'_>, connection: &mut Connection) -> bool {
    if shared
        .deadline
        .is_some_and(|deadline| Instant::now() >= deadline)
    {
        connection.state = State::Done;
        return true;
    }
    if let Stop::PerConnection(limit) = shared.load.stop
        && connection.sent >= limit
    {
        connection.state = State::Done;
        return true;
    }
    let Some(kind) = shared.next_request() else {
        connection.state = State::Done;
        return true;
    };
    connection.sent += 1;
    connection.state = State::InFlight {
        kind,
        sent_at: Instant::now(),
    };
    // A request is a few dozen bytes, written into an idle socket: it fits at once.
    connection.stream.write_all(&shared.requests[kind]).is_ok()
}

/// The length of the complete HTTP/1.1 response at the start of `bytes` (head and a
/// `content-length` body) and its status, if it is all there.
pub fn complete_response(bytes: &[u8]) -> Option<(usize, u16)> {
    let head_end = bytes.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0);
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (bytes.len() >= head_end + length).then_some((head_end + length, status))
}

/// One load thread with `connections` connections.
fn load_thread(shared: &Shared<'_>, connections: usize) -> io::Result<ThreadOutcome> {
    let target = shared.load.target;
    let mut poll = Poll::new()?;
    let mut open = Vec::with_capacity(connections);
    for index in 0..connections {
        open.push(connect(&poll, target, Token(index))?);
    }
    let mut outcome = ThreadOutcome {
        counts: [PathCounts::default(); 2],
        latency_micros: histogram(),
        connections: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut last_progress = Instant::now();
    loop {
        let now = Instant::now();
        if shared.deadline.is_some_and(|deadline| now >= deadline)
            || open
                .iter()
                .all(|connection| connection.state == State::Done)
        {
            break;
        }
        if now.duration_since(last_progress) > shared.load.stall_timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no response from {target} for {:?}",
                    shared.load.stall_timeout
                ),
            ));
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for event in events.iter() {
            let index = event.token().0;
            let connection = &mut open[index];
            let mut broken = event.is_error();
            if connection.state == State::Connecting && event.is_writable() && !broken {
                broken = !send_next(shared, connection);
            }
            if event.is_readable() || event.is_read_closed() {
                loop {
                    match connection.stream.read(&mut buffer) {
                        Ok(0) => {
                            broken = true;
                            break;
                        }
                        Ok(read) => connection.received.extend_from_slice(&buffer[..read]),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
            }
            while let Some((length, status)) = complete_response(&connection.received) {
                connection.received.drain(..length);
                let State::InFlight { kind, sent_at } = connection.state else {
                    // A response nobody asked for: the server is broken.
                    return Err(io::Error::other(format!(
                        "{target} sent a response with no request in flight"
                    )));
                };
                let now = Instant::now();
                last_progress = now;
                let counts = &mut outcome.counts[kind];
                if (200..300).contains(&status) {
                    counts.ok += 1;
                } else {
                    counts.other_status += 1;
                }
                if kind == 0 {
                    let micros = now.duration_since(sent_at).as_micros();
                    outcome
                        .latency_micros
                        .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
                }
                if !connection.answered {
                    connection.answered = true;
                    // Replacements of broken connections count too, but only the
                    // count reaching the total calls back, so that happens once.
                    if shared.opened.fetch_add(1, Ordering::AcqRel) + 1 == shared.connections {
                        (shared.steady_state_begins)();
                    }
                }
                if !send_next(shared, connection) {
                    broken = true;
                    break;
                }
            }
            if broken {
                if let State::InFlight { kind, .. } = connection.state {
                    outcome.counts[kind].lost += 1;
                }
                let _ = poll.registry().deregister(&mut connection.stream);
                *connection = connect(&poll, target, Token(index))?;
            }
        }
    }
    outcome.connections = open;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn parses_complete_responses_only() {
        let response = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nbusy!";
        assert_eq!(
            complete_response(response),
            Some((response.len(), 503)),
            "a whole response"
        );
        assert_eq!(complete_response(&response[..response.len() - 1]), None);
        assert_eq!(complete_response(b"HTTP/1.1 200 OK\r\n"), None);
    }

    /// Connections a test server has accepted, and those whose client closed them.
    #[derive(Default)]
    struct ServerCounts {
        accepted: AtomicUsize,
        closed: AtomicUsize,
    }

    /// A tiny blocking keep-alive server on another thread: answers every request on a
    /// connection with 200, or 503 for `/busy`.
    fn start_server() -> (SocketAddr, Arc<ServerCounts>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let target = listener.local_addr().expect("an address");
        let counts = Arc::new(ServerCounts::default());
        let server_counts = Arc::clone(&counts);
        std::thread::spawn(move || serve_forever(listener, &server_counts));
        (target, counts)
    }

    fn serve_forever(listener: std::net::TcpListener, counts: &Arc<ServerCounts>) {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counts.accepted.fetch_add(1, Ordering::SeqCst);
            let counts = Arc::clone(counts);
            std::thread::spawn(move || {
                let _closed = CountOnDrop(&counts.closed);
                let mut pending = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Ok(read) = stream.read(&mut buffer) else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buffer[..read]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let busy = pending.starts_with(b"GET /busy ");
                        pending.drain(..end + 4);
                        let answer: &[u8] = if busy {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        };
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }

    /// Counts the end of a connection's thread, however it ends.
    struct CountOnDrop<'a>(&'a AtomicUsize);

    impl Drop for CountOnDrop<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn counts_a_mix_to_the_request() {
        let (target, _) = start_server();
        let load = Load::new(target, 4, Stop::Requests(1_000)).mix("/busy", 10);
        let outcome = run(&load).expect("the load runs");
        assert_eq!(outcome.normal.ok, 900);
        assert_eq!(outcome.mixed.other_status, 100);
        assert_eq!(outcome.normal.failed() + outcome.mixed.lost, 0);
        assert_eq!(outcome.latency_micros.len(), 900);
    }

    #[test]
    fn steady_state_begins_with_every_connection_open_and_ends_before_any_closes() {
        let (target, server) = start_server();
        let mut load = Load::new(target, 6, Stop::Requests(300));
        load.threads = 2;
        let begins = Mutex::new(Vec::new());
        let ends = Mutex::new(Vec::new());
        let outcome = run_observed(
            &load,
            SteadyState {
                begins: &|| {
                    begins
                        .lock()
                        .unwrap()
                        .push(server.accepted.load(Ordering::SeqCst))
                },
                ends: &|| {
                    // Time for the server to see a close, had there been one.
                    std::thread::sleep(Duration::from_millis(50));
                    ends.lock()
                        .unwrap()
                        .push(server.closed.load(Ordering::SeqCst))
                },
            },
        )
        .unwrap();
        assert_eq!(outcome.normal.ok, 300);
        assert_eq!(*begins.lock().unwrap(), [6], "once, with all six accepted");
        assert_eq!(*ends.lock().unwrap(), [0], "once, with none closed yet");
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.closed.load(Ordering::SeqCst) < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            server.closed.load(Ordering::SeqCst),
            6,
            "closed after the load"
        );
    }
}
