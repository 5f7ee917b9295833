//! A keep-alive HTTP/1.1 load generator with a latency histogram, and a side-by-side
//! comparison of the `hello` example on this executor with `tokio_hello`.
//!
//! Each of `--threads` threads drives its share of `--connections` keep-alive
//! connections with its own `mio::Poll`, one request in flight per connection (like
//! `wrk`); a response is complete when its `content-length` bytes have arrived.
//! Latency is measured from writing a request to completing its response.
//!
//! ```text
//! cargo build --release -p executor --examples
//! # against a running server (optionally with its pid, for CPU per request):
//! target/release/examples/loadgen --url 127.0.0.1:8080 --pid 1234
//! # both servers in one run (started and stopped by the load generator):
//! target/release/examples/loadgen --compare --workers 2 --seconds 5
//! ```
//!
//! The server and the load generator share the machine's cores: figures are for
//! comparing servers in the same run, not absolute capacity.

use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

#[derive(Debug, Clone)]
struct Options {
    target: Option<SocketAddr>,
    path: String,
    threads: usize,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    pid: Option<u32>,
    compare: bool,
    workers: usize,
}

fn parse_options() -> Options {
    let mut options = Options {
        target: None,
        path: "/".to_owned(),
        threads: 2,
        connections: 64,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        pid: None,
        compare: false,
        workers: 2,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || {
            arguments
                .next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--url" => {
                options.target = Some(value().parse().unwrap_or_else(|_| usage("--url HOST:PORT")))
            }
            "--path" => options.path = value(),
            "--threads" => {
                options.threads = value().parse().unwrap_or_else(|_| usage("--threads N"))
            }
            "--connections" => {
                options.connections = value().parse().unwrap_or_else(|_| usage("--connections N"));
            }
            "--seconds" => {
                options.duration = Duration::from_secs_f64(
                    value().parse().unwrap_or_else(|_| usage("--seconds S")),
                );
            }
            "--warmup" => {
                options.warmup = Duration::from_secs_f64(
                    value().parse().unwrap_or_else(|_| usage("--warmup S")),
                );
            }
            "--pid" => options.pid = Some(value().parse().unwrap_or_else(|_| usage("--pid PID"))),
            "--workers" => {
                options.workers = value().parse().unwrap_or_else(|_| usage("--workers N"))
            }
            "--compare" => options.compare = true,
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    options.threads = options.threads.max(1);
    options.connections = options.connections.max(options.threads);
    options
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "loadgen: {problem}\nusage: loadgen (--url HOST:PORT [--pid PID] | --compare [--workers N]) \
         [--path P] [--threads N] [--connections N] [--seconds S] [--warmup S]"
    );
    std::process::exit(2)
}

/// What one run measured.
#[derive(Debug)]
struct Report {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency_micros: Histogram<u64>,
    server_cpu: Option<Duration>,
}

impl Report {
    fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, name: &str) {
        let cpu = self.server_cpu.map_or_else(
            || "n/a".to_owned(),
            |cpu| {
                format!(
                    "{:.2} us",
                    cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
                )
            },
        );
        println!(
            "| {name} | {:.0} | {} | {} | {} | {cpu} | {} |",
            self.requests_per_second(),
            self.latency_micros.value_at_quantile(0.5),
            self.latency_micros.value_at_quantile(0.99),
            self.latency_micros.max(),
            self.errors,
        );
    }
}

fn print_header() {
    println!("| server | req/s | p50 us | p99 us | max us | server CPU/request | errors |");
    println!("|---|---|---|---|---|---|---|");
}

/// utime + stime of a process, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: `sysconf` has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&ticks| ticks > 0)?;
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

struct Connection {
    stream: TcpStream,
    received: Vec<u8>,
    sent_at: Instant,
}

/// Length of the complete response at the start of `bytes`, if it is all there.
fn complete_response(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (bytes.len() >= head_end + length).then_some(head_end + length)
}

/// One load thread: `connections` keep-alive connections until `stop_at`; latencies
/// are recorded after `record_from`.
fn load_thread(
    target: SocketAddr,
    request: &[u8],
    connections: usize,
    record_from: Instant,
    stop_at: Instant,
) -> io::Result<(u64, u64, Histogram<u64>)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut poll = Poll::new()?;
    let mut open = Vec::with_capacity(connections);
    for index in 0..connections {
        let mut stream = TcpStream::connect(target)?;
        poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        open.push(Connection {
            stream,
            received: Vec::with_capacity(4096),
            sent_at: Instant::now(),
        });
    }
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut started = vec![false; connections];
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; 64 * 1024];
    while Instant::now() < stop_at {
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for event in events.iter() {
            let index = event.token().0;
            let connection = &mut open[index];
            if !started[index] && event.is_writable() {
                started[index] = true;
                connection.sent_at = Instant::now();
                connection.stream.write_all(request)?;
            }
            if !event.is_readable() {
                continue;
            }
            loop {
                match connection.stream.read(&mut buffer) {
                    Ok(0) => {
                        errors += 1;
                        break;
                    }
                    Ok(read) => connection.received.extend_from_slice(&buffer[..read]),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            while let Some(length) = complete_response(&connection.received) {
                if !connection.received.starts_with(b"HTTP/1.1 200") {
                    errors += 1;
                }
                connection.received.drain(..length);
                let now = Instant::now();
                if now >= record_from {
                    requests += 1;
                    let micros = now.duration_since(connection.sent_at).as_micros();
                    histogram.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
                }
                connection.sent_at = now;
                connection.stream.write_all(request)?;
            }
        }
    }
    Ok((requests, errors, histogram))
}

fn run(options: &Options, target: SocketAddr, pid: Option<u32>) -> io::Result<Report> {
    let request = format!("GET {} HTTP/1.1\r\nhost: {target}\r\n\r\n", options.path).into_bytes();
    let record_from = Instant::now() + options.warmup;
    let stop_at = record_from + options.duration;
    let per_thread = options.connections / options.threads;
    let cpu_before = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..options.threads)
            .map(|index| {
                let extra = usize::from(index < options.connections % options.threads);
                let request = &request;
                scope.spawn(move || {
                    load_thread(target, request, per_thread + extra, record_from, stop_at)
                })
            })
            .collect();
        // Sample the server's CPU at the start of the measured window.
        std::thread::sleep(record_from.saturating_duration_since(Instant::now()));
        let cpu_before = pid.and_then(process_cpu);
        let mut total = (
            0,
            0,
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
        );
        for thread in threads {
            let (requests, errors, histogram) = thread.join().expect("load thread panicked")?;
            total.0 += requests;
            total.1 += errors;
            total.2.add(histogram).expect("same bounds");
        }
        Ok::<_, io::Error>((cpu_before, total))
    })?;
    let (cpu_before, (requests, errors, latency_micros)) = cpu_before;
    let server_cpu = match (cpu_before, pid.and_then(process_cpu)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(Report {
        requests,
        errors,
        elapsed: options.duration,
        latency_micros,
        server_cpu,
    })
}

/// Starts a sibling example binary on port 0 and reads where it listens.
fn start_server(name: &str, workers: usize) -> io::Result<(Child, SocketAddr)> {
    let binary = std::env::current_exe()?.with_file_name(name);
    let mut child = Command::new(&binary)
        .args(["0", &workers.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", binary.display())))?;
    let stdout = child.stdout.take().expect("piped");
    let mut reader = io::BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Keep draining the server's output so its later prints never hit a closed pipe.
    std::thread::spawn(move || io::copy(&mut reader, &mut io::sink()));
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.trim_end_matches('/').parse().ok())
        .ok_or_else(|| io::Error::other(format!("{name} printed {line:?}")))?;
    Ok((child, address))
}

fn stop_server(mut child: Child) -> io::Result<()> {
    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: `kill` has no memory preconditions; `pid` is our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait().map(drop)
}

fn main() -> io::Result<()> {
    let options = parse_options();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "loadgen: {} connections over {} threads, {:?} measured after {:?} warm-up; \
         {cores} cores shared by server and load generator",
        options.connections, options.threads, options.duration, options.warmup
    );
    if options.compare {
        print_header();
        let mut results = Vec::new();
        for name in ["hello", "tokio_hello"] {
            let (child, address) = start_server(name, options.workers)?;
            let report = run(&options, address, Some(child.id()));
            stop_server(child)?;
            let report = report?;
            report.print(&format!("{name} ({} workers)", options.workers));
            results.push(report);
        }
        let ours = results[0].requests_per_second();
        let theirs = results[1].requests_per_second();
        println!("\nreq/s ratio executor/tokio: {:.3}", ours / theirs);
        if let (Some(ours), Some(theirs)) = (results[0].server_cpu, results[1].server_cpu) {
            let per_request =
                |cpu: Duration, report: &Report| cpu.as_secs_f64() / report.requests as f64;
            println!(
                "server CPU per request ratio executor/tokio: {:.3}",
                per_request(ours, &results[0]) / per_request(theirs, &results[1])
            );
        }
    } else {
        let target = options
            .target
            .unwrap_or_else(|| usage("--url or --compare is required"));
        let report = run(&options, target, options.pid)?;
        print_header();
        report.print(&target.to_string());
    }
    Ok(())
}
