//! The servers the executor group measures, each in a child process: ours in
//! `reproduce` itself (`reproduce --http-server-child ours --workers N`, and
//! `--http-server-child ours-axum` for the axum app), the tokio + hyper peers in their
//! own executables (`tokio-hello --workers N` on the system allocator,
//! `tokio-hello-mimalloc --workers N` on mimalloc, `axum-tokio --workers N` for the axum
//! app; `src/bin/`), and for the HTTP/2 rounds the executor's examples built with
//! `tls,http2` (`hello` and `https` for ours, `https_tokio` for tokio + hyper), all built
//! by cargo when first needed; and the parent's handle on such a child.
//!
//! The hello servers serve the same routes:
//! - `/`: plaintext "Hello, World!";
//! - `/oom` (ours only): allocates 64 KiB blocks without bound, sleeping 1 ms between
//!   them, until the server cancels it with 503 for going over its arena budget;
//! - `/spin`: "Hello, World!" after 2 ms of CPU (the imbalanced load of the wrk
//!   shapes, [`wrk::spin`]);
//! - `/__counters`: `requests N` and `over_budget N` lines, and for ours `heap_calls N`,
//!   the calls into the process's fallback heap so far (see
//!   [`crate::fallback_heap_calls`]); the peers' allocators count nothing.
//!
//! The axum servers serve the app of [`axum_app`] and the same `/__counters`. The
//! examples serve "Hello, World!" (`hello`, and `https_tokio` with `PLAIN=1`) or "Hello
//! over TLS" (`https`, `https_tokio`) on every path, and have no counters.
//!
//! A child binds 127.0.0.1:0, prints its address on a line of standard output (an
//! example prints it in a `listening on SCHEME://ADDRESS` line), and serves until its
//! standard input closes (the parent exits or drops its handle) or, for an example,
//! until it is killed.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use pagekeep_alloc_test::bench::axum_app::{self, Runtime};
use pagekeep_alloc_test::bench::{loadgen, process, wrk};

/// Request arenas of our server: more than the connections, so no request waits.
pub const ARENAS: usize = 256;
/// Each request's budget (the executor's default).
pub const ARENA_BYTES: usize = 1 << 20;

/// How long a child may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The same "Hello, World!" response on both servers.
fn hello() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn counters(requests: u64, over_budget: u64) -> Response<Full<Bytes>> {
    text(
        StatusCode::OK,
        format!(
            "heap_calls {}\nrequests {requests}\nover_budget {over_budget}\n",
            crate::fallback_heap_calls()
        ),
    )
}

/// Exits the process when standard input closes, so a child never outlives its parent.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(0);
    });
}

fn announce(address: SocketAddr) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{address}")
        .and_then(|()| stdout.flush())
        .map_err(|error| format!("cannot print the address: {error}"))
}

/// The child side: serves as our server with `workers` worker threads until standard
/// input closes.
pub fn child(kind: &str, workers: usize) -> Result<(), String> {
    exit_with_parent();
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
    match kind {
        "ours" => ours(address, workers),
        "ours-axum" => ours_axum(address, workers),
        other => Err(format!(
            "no server named {other:?} here (ours, ours-axum; the tokio peers are the \
             tokio-hello and axum-tokio executables)"
        )),
    }
}

/// Our server with `workers` workers on `address`, bound and announced.
fn bind_ours(address: SocketAddr, workers: usize) -> Result<pagekeep_executor::Server, String> {
    let server = pagekeep_executor::Server::builder()
        .workers(workers)
        .arenas(ARENAS)
        .arena_bytes(ARENA_BYTES)
        .bind(address)
        .map_err(|error| format!("cannot bind {address}: {error}"))?;
    announce(server.local_addr())?;
    Ok(server)
}

/// The axum app's runtime: ours.
struct Executor;

impl Runtime for Executor {
    const SERVED_BY: &'static str = "pagekeep-executor";

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        pagekeep_executor::sleep(duration)
    }
}

/// The axum app on our server, with `/__counters` beside it (outside the app's
/// middleware).
fn ours_axum(address: SocketAddr, workers: usize) -> Result<(), String> {
    let server = bind_ours(address, workers)?;
    let stats = server.stats();
    let app = axum_app::app::<Executor>().route(
        "/__counters",
        axum::routing::get(move || {
            let stats = stats.clone();
            async move { counters(stats.requests(), stats.over_budget()) }
        }),
    );
    server
        .serve_service(app)
        .map_err(|error| format!("serve: {error}"))
}

fn ours(address: SocketAddr, workers: usize) -> Result<(), String> {
    let server = bind_ours(address, workers)?;
    let stats = server.stats();
    server
        .serve(move |request: Request<pagekeep_executor::RequestBody>| {
            let stats = stats.clone();
            async move {
                match request.uri().path() {
                    "/oom" => {
                        let mut hoard: Vec<Vec<u8>> = Vec::new();
                        loop {
                            // Written, so the memory is really used.
                            hoard.push(vec![0xA5; 64 << 10]);
                            pagekeep_executor::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    "/__counters" => counters(stats.requests(), stats.over_budget()),
                    wrk::SPIN_PATH => {
                        wrk::spin(wrk::SPIN_TIME);
                        hello()
                    }
                    _ => hello(),
                }
            }
        })
        .map_err(|error| format!("serve: {error}"))
}

/// Features the executor's examples are built with for the HTTP/2 rounds.
const EXAMPLE_FEATURES: &str = "tls,http2";

/// The command that starts the `kind` server: `reproduce` itself for ours, the peer's
/// own executable or the executor's example (built with the profile of this one when
/// needed) for the others.
fn server_command(kind: &str, workers: usize) -> Result<Command, String> {
    let reproduce = std::env::current_exe()
        .map_err(|error| format!("cannot find the reproduce executable: {error}"))?;
    let workers = workers.to_string();
    let (peer, example, plain) = match kind {
        "ours" | "ours-axum" => {
            let mut command = Command::new(reproduce);
            command.args(["--http-server-child", kind]);
            command.args(["--workers", &workers]);
            return Ok(command);
        }
        "tokio" => ("tokio-hello", false, false),
        "tokio-mimalloc" => ("tokio-hello-mimalloc", false, false),
        "tokio-axum" => ("axum-tokio", false, false),
        "h2c-ours" => ("hello", true, false),
        "h2c-tokio" => ("https_tokio", true, true),
        "tls-ours" => ("https", true, false),
        "tls-tokio" => ("https_tokio", true, false),
        other => return Err(format!("no server named {other:?}")),
    };
    let (build_arguments, executable) = if example {
        (
            vec![
                "-p",
                "pagekeep-executor",
                "--features",
                EXAMPLE_FEATURES,
                "--example",
                peer,
            ],
            reproduce.with_file_name("examples").join(peer),
        )
    } else {
        (
            vec!["-p", "pagekeep-alloc-test", "--bin", peer],
            reproduce.with_file_name(peer),
        )
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.arg("build").args(&build_arguments);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(Stdio::null())
        .status()
        .map_err(|error| format!("cannot run cargo to build {peer}: {error}"))?;
    if !status.success() || !executable.exists() {
        return Err(format!(
            "cannot build {peer} ({status}): run `cargo build --release {}`",
            build_arguments.join(" ")
        ));
    }
    let mut command = Command::new(executable);
    if example {
        // The examples take `[PORT] [WORKERS]`; port 0 picks a free one.
        command.args(["0", &workers]);
        command.env("PLAIN", if plain { "1" } else { "0" });
    } else {
        command.args(["--workers", &workers]);
    }
    Ok(command)
}

/// The address in a line a server printed: the whole line, or what follows `://` up to
/// the next space or `/` (an example's `listening on http://ADDRESS with N workers`).
fn address_in(line: &str) -> Option<SocketAddr> {
    let line = line.trim();
    line.parse().ok().or_else(|| {
        let (_, rest) = line.split_once("://")?;
        rest.split([' ', '/']).next()?.parse().ok()
    })
}

/// What a server's `/__counters` said.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Calls into the fallback heap so far (0 for a server that does not count them).
    pub heap_calls: u64,
    /// Requests received so far.
    pub requests: u64,
    /// Requests cancelled over their arena budget so far.
    pub over_budget: u64,
}

/// A server running in a child process; stopped when dropped.
#[derive(Debug)]
pub struct ServerChild {
    /// The kind it was started as (`ours`, `tokio`, `tokio-axum`, `h2c-ours`, ...).
    pub kind: &'static str,
    /// Where it listens.
    pub address: SocketAddr,
    child: Child,
    /// Held open: the child exits when it closes.
    _stdin: ChildStdin,
    /// The keep-alive connection `/__counters` is read over (see [`ServerChild::counters`]).
    counters_connection: Mutex<Option<TcpStream>>,
    /// Connections opened for `/__counters` so far.
    counters_connections_opened: AtomicU64,
}

impl ServerChild {
    /// Starts the `kind` server with `workers` workers and waits for its address.
    ///
    /// # Errors
    /// The child cannot be started, exits, or does not print an address in time.
    pub fn start(kind: &'static str, workers: usize) -> Result<ServerChild, String> {
        let mut child = server_command(kind, workers)?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("cannot start the {kind} server: {error}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the {kind} server has no pipes"));
        };
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = sender.send(read);
            // Drain the rest, so that a later print never meets a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = receiver.recv_timeout(START_TIMEOUT);
        let address = match line {
            Ok(Ok(line)) => address_in(&line).ok_or_else(|| {
                if line.is_empty() {
                    let status = child.try_wait().ok().flatten();
                    format!(
                        "the {kind} server did not start (it exited{}; see its error above)",
                        status.map_or_else(String::new, |status| format!(" with {status}"))
                    )
                } else {
                    format!("the {kind} server printed {line:?} instead of its address")
                }
            }),
            Ok(Err(error)) => Err(format!("cannot read the {kind} server's address: {error}")),
            Err(_) => Err(format!(
                "the {kind} server did not print its address within {START_TIMEOUT:?}"
            )),
        };
        match address {
            Ok(address) => Ok(ServerChild {
                kind,
                address,
                child,
                _stdin: stdin,
                counters_connection: Mutex::new(None),
                counters_connections_opened: AtomicU64::new(0),
            }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's CPU time so far (user + system).
    pub fn cpu_time(&self) -> Result<Duration, String> {
        process::cpu_time(self.pid())
            .ok_or_else(|| format!("cannot read the {} server's CPU time", self.kind))
    }

    /// The child's resident memory in bytes.
    pub fn resident_bytes(&self) -> Result<u64, String> {
        process::resident_bytes(self.pid())
            .ok_or_else(|| format!("cannot read the {} server's resident memory", self.kind))
    }

    /// The child's memory given back lazily (`MADV_FREE`) and not yet reclaimed, in bytes:
    /// part of its resident memory.
    pub fn lazy_free_bytes(&self) -> Result<u64, String> {
        process::lazy_free_bytes(self.pid())
            .ok_or_else(|| format!("cannot read the {} server's lazily freed memory", self.kind))
    }

    /// Asks the server for its counters, over one keep-alive connection kept for this:
    /// opening a connection makes a server allocate, so only the first reading (and one
    /// after the server closed the idle connection) pays for that, before the server
    /// reads its counters. [`ServerChild::counters_connections_opened`] tells when a
    /// connection was opened between two readings.
    pub fn counters(&self) -> Result<Counters, String> {
        let failed = |error: std::io::Error| {
            format!("cannot read the {} server's counters: {error}", self.kind)
        };
        let response = self.counters_response().map_err(failed)?;
        let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let mut counters = Counters::default();
        let mut found = 0;
        for line in body.lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse() else {
                continue;
            };
            match name {
                "heap_calls" => counters.heap_calls = value,
                "requests" => counters.requests = value,
                "over_budget" => counters.over_budget = value,
                _ => continue,
            }
            found += 1;
        }
        // `heap_calls` is ours alone.
        if found < 2 {
            return Err(format!(
                "the {} server's counters are unreadable: {response:?}",
                self.kind
            ));
        }
        Ok(counters)
    }

    /// One `/__counters` response, on the kept connection or, when there is none or the
    /// server has closed it meanwhile (its keep-alive timeout), on a fresh one.
    fn counters_response(&self) -> std::io::Result<String> {
        let mut kept = self
            .counters_connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(stream) = kept.as_mut() {
            match exchange_counters(stream) {
                Ok(response) => return Ok(response),
                Err(error) => {
                    *kept = None;
                    if !closed_by_peer(&error) {
                        return Err(error);
                    }
                }
            }
        }
        let stream = kept.insert(self.open_counters_connection()?);
        exchange_counters(stream).inspect_err(|_| *kept = None)
    }

    /// A connection to read the counters over. A server finishes setting up a
    /// connection (its timers, buffers) while answering the first request, so that
    /// answer is thrown away: a reading taken then would leave some of the set-up after
    /// it.
    fn open_counters_connection(&self) -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect(self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        self.counters_connections_opened
            .fetch_add(1, Ordering::Relaxed);
        exchange_counters(&mut stream)?;
        Ok(stream)
    }

    /// Connections opened so far to read the counters.
    pub fn counters_connections_opened(&self) -> u64 {
        self.counters_connections_opened.load(Ordering::Relaxed)
    }
}

/// Whether `error` says the peer closed the connection.
fn closed_by_peer(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        error.kind(),
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted
    )
}

/// One `/__counters` request and its whole response on a keep-alive connection.
fn exchange_counters(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(b"GET /__counters HTTP/1.1\r\nhost: localhost\r\n\r\n")?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some((length, _status)) = loadgen::complete_response(&received) {
            received.truncate(length);
            return Ok(String::from_utf8_lossy(&received).into_owned());
        }
        match stream.read(&mut buffer) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_a_bare_line_and_from_an_examples_line() {
        let address: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(address_in("127.0.0.1:4321\n"), Some(address));
        assert_eq!(
            address_in("hello: listening on http://127.0.0.1:4321 with 2 workers\n"),
            Some(address)
        );
        assert_eq!(
            address_in("https: listening on https://127.0.0.1:4321/ with 2 workers"),
            Some(address)
        );
        assert_eq!(
            address_in("listening on http://nowhere with 2 workers"),
            None
        );
        assert_eq!(address_in(""), None);
    }
}
