//! wrk (the Debian package `wrk`), a load generator none of this project wrote, as the
//! second client of the executor benchmark: keep-alive connections over a few client
//! threads, each request sent as soon as the previous response on its connection ended.
//! Unlike the suite's own generator ([`crate::bench::loadgen`]), one wrk thread can
//! leave a core to the servers, which is where a scheduler without work stealing loses
//! (a descheduled worker's connections wait while the other worker idles).
//!
//! A Lua script of wrk's prints the figures on one line when the run ends (requests,
//! duration, the 50th, 99th and 99.9th latency percentiles, errors), so nothing depends
//! on the layout of wrk's human-readable report. The imbalanced shape sends every
//! `spin_every`-th request of each connection to [`SPIN_PATH`], whose handler burns
//! [`SPIN_TIME`] of CPU on both servers ([`spin`]).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The route whose handler burns [`SPIN_TIME`] of CPU before answering.
pub const SPIN_PATH: &str = "/spin";

/// How long the handler of [`SPIN_PATH`] keeps its worker busy.
pub const SPIN_TIME: Duration = Duration::from_millis(2);

/// Burns `duration` of the calling thread's time without yielding, as a handler with
/// real work to do would (the imbalanced load's requests).
pub fn spin(duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// A load shape: wrk's `-t` and `-c`, and whether a part of the requests spin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Client threads (`-t`).
    pub threads: usize,
    /// Keep-alive connections over them (`-c`).
    pub connections: usize,
    /// Every this-many-th request of a client thread goes to [`SPIN_PATH`]; `None`: all
    /// go to `/`.
    pub spin_every: Option<u32>,
}

impl Shape {
    /// The command line's options, as a reader would type them.
    pub fn describe(&self) -> String {
        let base = format!("wrk -t{} -c{}", self.threads, self.connections);
        match self.spin_every {
            Some(every) => format!("{base}, 1 request in {every} to {SPIN_PATH}"),
            None => base,
        }
    }
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Responses completed.
    pub requests: u64,
    /// Responses per second of the run.
    pub requests_per_second: f64,
    /// Latency percentiles, from sending a request to its response.
    pub p50_micros: f64,
    /// The 99th.
    pub p99_micros: f64,
    /// The 99.9th.
    pub p999_micros: f64,
    /// Socket errors (connect, read, write, timeout) and responses outside 2xx/3xx.
    pub errors: u64,
}

/// The marker of the line the script prints.
const MARKER: &str = "pagekeep-wrk";

/// The Lua script for `shape`: the figures line at the end, and the spinning requests
/// when asked (a `request` function makes wrk build each request, so the plain shapes
/// leave it out and send wrk's prepared one).
fn script(shape: &Shape) -> String {
    let mut script = String::new();
    if let Some(every) = shape.spin_every {
        script.push_str(&format!(
            "local sent = 0\n\
             request = function()\n\
             \x20 sent = sent + 1\n\
             \x20 if sent % {every} == 0 then return wrk.format(nil, \"{SPIN_PATH}\") end\n\
             \x20 return wrk.format(nil, \"/\")\n\
             end\n"
        ));
    }
    script.push_str(&format!(
        "done = function(summary, latency, requests)\n\
         \x20 local e = summary.errors\n\
         \x20 io.write(string.format(\"{MARKER} %d %d %d %d %d %d\\n\", summary.requests,\n\
         \x20   summary.duration, latency:percentile(50), latency:percentile(99),\n\
         \x20   latency:percentile(99.9), e.connect + e.read + e.write + e.timeout + e.status))\n\
         end\n"
    ));
    script
}

/// Parses the script's line out of wrk's output.
fn parse(output: &str) -> Result<Outcome, String> {
    let line = output
        .lines()
        .find_map(|line| line.strip_prefix(MARKER))
        .ok_or_else(|| format!("wrk printed no figures line:\n{output}"))?;
    let numbers = line
        .split_whitespace()
        .map(|field| {
            field
                .parse::<f64>()
                .map_err(|_| format!("not a number in wrk's figures line: {field:?}"))
        })
        .collect::<Result<Vec<f64>, String>>()?;
    let [requests, duration_micros, p50, p99, p999, errors] = numbers[..] else {
        return Err(format!(
            "wrk's figures line has {} fields, not 6",
            numbers.len()
        ));
    };
    if duration_micros <= 0.0 {
        return Err(format!("wrk ran for {duration_micros} µs"));
    }
    Ok(Outcome {
        requests: requests as u64,
        requests_per_second: requests / (duration_micros / 1e6),
        p50_micros: p50,
        p99_micros: p99,
        p999_micros: p999,
        errors: errors as u64,
    })
}

/// Whether `wrk` can be run here.
pub fn available() -> bool {
    // `wrk -v` prints its version and exits with status 1: only whether it ran counts.
    Command::new("wrk").arg("-v").output().is_ok()
}

/// Runs wrk with `shape` against `address` for `duration` (whole seconds, at least 1).
pub fn run(address: SocketAddr, shape: &Shape, duration: Duration) -> Result<Outcome, String> {
    let directory = std::env::temp_dir().join(format!("pagekeep-wrk-{}", std::process::id()));
    std::fs::create_dir_all(&directory)
        .map_err(|error| format!("cannot make {}: {error}", directory.display()))?;
    let script_path = directory.join(format!(
        "t{}-c{}-s{}.lua",
        shape.threads,
        shape.connections,
        shape.spin_every.unwrap_or(0)
    ));
    std::fs::write(&script_path, script(shape))
        .map_err(|error| format!("cannot write {}: {error}", script_path.display()))?;
    let seconds = duration.as_secs().max(1);
    let output = Command::new("wrk")
        .arg(format!("-t{}", shape.threads))
        .arg(format!("-c{}", shape.connections))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(&script_path)
        .arg(format!("http://{address}/"))
        .output()
        .map_err(|error| {
            format!("cannot run wrk ({error}); install it with `apt-get install wrk`")
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk exited with {}: {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse(&stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_line_is_found_among_the_report_and_parsed() {
        let output = "Running 2s test @ http://127.0.0.1:4000/\n  1 threads and 64 \
                      connections\n  Latency   380.12us\npagekeep-wrk 300000 2000500 350 \
                      1200 4100 3\nRequests/sec: 149962.51\n";
        let outcome = parse(output).unwrap();
        assert_eq!(outcome.requests, 300_000);
        assert!((outcome.requests_per_second - 149_962.5).abs() < 1.0);
        assert_eq!(
            (
                outcome.p50_micros,
                outcome.p99_micros,
                outcome.p999_micros,
                outcome.errors
            ),
            (350.0, 1200.0, 4100.0, 3)
        );
    }

    #[test]
    fn a_report_without_the_line_or_with_a_bad_field_is_an_error() {
        assert!(parse("Requests/sec: 10\n").is_err());
        assert!(parse("pagekeep-wrk 1 2 3\n").is_err());
        assert!(parse("pagekeep-wrk 1 2 3 x 5 6\n").is_err());
        assert!(parse("pagekeep-wrk 1 0 3 4 5 6\n").is_err());
    }

    #[test]
    fn only_the_imbalanced_shape_builds_its_requests() {
        let plain = Shape {
            threads: 1,
            connections: 64,
            spin_every: None,
        };
        let imbalanced = Shape {
            spin_every: Some(4),
            ..plain
        };
        assert!(!script(&plain).contains("request = function"));
        assert!(script(&imbalanced).contains("sent % 4 == 0"));
        assert!(script(&imbalanced).contains(SPIN_PATH));
        assert_eq!(
            imbalanced.describe(),
            "wrk -t1 -c64, 1 request in 4 to /spin"
        );
    }

    #[test]
    fn spin_keeps_the_thread_busy_for_its_time() {
        let start = Instant::now();
        spin(Duration::from_millis(3));
        assert!(start.elapsed() >= Duration::from_millis(3));
    }
}
