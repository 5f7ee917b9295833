//! h2load (Debian's `nghttp2-client`), nghttp2's HTTP/2 load generator, as the client of
//! the executor benchmark's HTTP/2 rounds: `h2load -n N -c C -m M -t 1 URL`, N requests
//! over C connections with up to M streams in flight on each, in cleartext with prior
//! knowledge (`http://`, h2c) or over TLS with ALPN (`https://`; h2load does not check
//! the certificate, so a self-signed one does).
//!
//! h2load reports no percentiles: the latency figures are its "time for request" line's
//! mean and maximum (from sending a request to its response's end).

use std::process::Command;

/// A load: h2load's `-n`, `-c` and `-m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Requests in all (`-n`).
    pub requests: u64,
    /// Connections (`-c`).
    pub connections: usize,
    /// Streams in flight per connection (`-m`).
    pub streams: usize,
}

impl Shape {
    /// The command line's options, as a reader would type them.
    pub fn describe(&self) -> String {
        format!(
            "h2load -n {} -c {} -m {}",
            self.requests, self.connections, self.streams
        )
    }
}

/// What one h2load run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Requests per second over the run, as h2load computes it.
    pub requests_per_second: f64,
    /// Requests answered 2xx or 3xx.
    pub succeeded: u64,
    /// Requests failed, errored or timed out, and answers outside 2xx/3xx.
    pub errors: u64,
    /// Mean time from sending a request to the end of its response.
    pub mean_micros: f64,
    /// The longest such time.
    pub max_micros: f64,
}

/// A duration as h2load prints it (`812us`, `1.52ms`, `2.01s`), in microseconds.
fn micros(field: &str) -> Result<f64, String> {
    let (number, scale) = if let Some(number) = field.strip_suffix("us") {
        (number, 1.0)
    } else if let Some(number) = field.strip_suffix("ms") {
        (number, 1e3)
    } else if let Some(number) = field.strip_suffix("ns") {
        (number, 1e-3)
    } else if let Some(number) = field.strip_suffix('s') {
        (number, 1e6)
    } else {
        return Err(format!("not a duration in h2load's report: {field:?}"));
    };
    number
        .parse::<f64>()
        .map(|value| value * scale)
        .map_err(|_| format!("not a duration in h2load's report: {field:?}"))
}

/// The number before `name` in a `N name, M other` list of h2load's report.
fn count_before(line: &str, name: &str) -> Result<u64, String> {
    line.split(',')
        .find_map(|item| {
            let mut words = item.split_whitespace().rev();
            let last = words.next()?;
            (last == name).then(|| words.next()?.parse::<u64>().ok())?
        })
        .ok_or_else(|| format!("no {name:?} count in h2load's line {line:?}"))
}

/// Parses h2load's report.
fn parse(output: &str) -> Result<Outcome, String> {
    let line = |prefix: &str| {
        output
            .lines()
            .find_map(|line| line.trim_start().strip_prefix(prefix))
            .ok_or_else(|| format!("h2load printed no {prefix:?} line:\n{output}"))
    };
    // finished in 1.23s, 81234.56 req/s, 2.81MB/s
    let finished = line("finished in")?;
    let requests_per_second = finished
        .split(',')
        .find_map(|item| item.trim().strip_suffix(" req/s"))
        .and_then(|number| number.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no req/s in h2load's line {finished:?}"))?;
    // requests: 100000 total, 100000 started, 100000 done, 100000 succeeded, 0 failed, ...
    let requests = line("requests:")?;
    let succeeded = count_before(requests, "succeeded")?;
    let unsuccessful = count_before(requests, "failed")?
        + count_before(requests, "errored")?
        + count_before(requests, "timeout")?;
    // status codes: 100000 2xx, 0 3xx, 0 4xx, 0 5xx
    let statuses = line("status codes:")?;
    let refused = count_before(statuses, "4xx")? + count_before(statuses, "5xx")?;
    // time for request:      101us     10.24ms      1.52ms       612us    71.23%
    let times = line("time for request:")?
        .split_whitespace()
        .collect::<Vec<_>>();
    let [_min, max, mean, ..] = times[..] else {
        return Err(format!(
            "h2load's time for request line is short: {times:?}"
        ));
    };
    Ok(Outcome {
        requests_per_second,
        succeeded,
        errors: unsuccessful + refused,
        mean_micros: micros(mean)?,
        max_micros: micros(max)?,
    })
}

/// Whether `h2load` can be run here.
pub fn available() -> bool {
    Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs h2load with `shape` and one client thread against `url` (`http://` for h2c with
/// prior knowledge, `https://` for HTTP/2 over TLS).
pub fn run(url: &str, shape: &Shape) -> Result<Outcome, String> {
    let output = Command::new("h2load")
        .arg("-n")
        .arg(shape.requests.to_string())
        .arg("-c")
        .arg(shape.connections.to_string())
        .arg("-m")
        .arg(shape.streams.to_string())
        .args(["-t", "1"])
        .arg(url)
        .output()
        .map_err(|error| {
            format!("cannot run h2load ({error}); install it with `apt-get install nghttp2-client`")
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "h2load exited with {}: {}{}",
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

    const REPORT: &str = "starting benchmark...\n\
        spawning thread #0: 8 total client(s). 100000 total requests\n\
        Application protocol: h2c\n\
        progress: 100% done\n\
        \n\
        finished in 1.23s, 81234.56 req/s, 2.81MB/s\n\
        requests: 100000 total, 100000 started, 100000 done, 99990 succeeded, 10 failed, \
        2 errored, 1 timeout\n\
        status codes: 99990 2xx, 0 3xx, 3 4xx, 4 5xx\n\
        traffic: 3.45MB (3617382) total, 293.55KB (300600) headers (space savings 95.12%)\n\
        \x20                    min         max         mean         sd        +/- sd\n\
        time for request:      101us     10.24ms      1.52ms       612us    71.23%\n\
        time for connect:      230us       1.1ms       600us       300us    62.50%\n";

    #[test]
    fn the_report_is_parsed() {
        let outcome = parse(REPORT).unwrap();
        assert_eq!(outcome.requests_per_second, 81234.56);
        assert_eq!(outcome.succeeded, 99_990);
        assert_eq!(outcome.errors, 10 + 2 + 1 + 3 + 4);
        assert_eq!(outcome.mean_micros, 1520.0);
        assert_eq!(outcome.max_micros, 10_240.0);
    }

    #[test]
    fn durations_in_every_unit_and_bad_fields() {
        assert_eq!(micros("812us").unwrap(), 812.0);
        assert_eq!(micros("2.5s").unwrap(), 2_500_000.0);
        assert_eq!(micros("500ns").unwrap(), 0.5);
        assert!(micros("12").is_err());
        assert!(micros("xms").is_err());
    }

    #[test]
    fn a_report_without_its_lines_is_an_error() {
        assert!(parse("finished in 1s, 10 req/s, 1MB/s\n").is_err());
        let without_times = REPORT.replace("time for request:", "time for nothing:");
        assert!(parse(&without_times).is_err());
    }
}
