//! Drives an HTTP/1.1 server with the suite's keep-alive load generator
//! ([`pagekeep_alloc_test::bench::loadgen`]) and prints what it measured.
//!
//! ```sh
//! cargo run --release -p pagekeep-alloc-test --example http_load -- ADDRESS [SECONDS] [CONNECTIONS] [THREADS]
//! ```
//!
//! Defaults: 5 seconds, 64 connections, 2 threads; each connection sends `GET /` with
//! one request in flight, as in `reproduce`'s executor group.

use std::time::Duration;

use pagekeep_alloc_test::bench::loadgen::{self, Load, Stop};

const USAGE: &str = "usage: http_load ADDRESS [SECONDS] [CONNECTIONS] [THREADS]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let target = arguments.next().ok_or(USAGE)?.parse()?;
    let seconds: f64 = arguments.next().map_or(Ok(5.0), |text| text.parse())?;
    let connections: usize = arguments.next().map_or(Ok(64), |text| text.parse())?;
    let threads: usize = arguments.next().map_or(Ok(2), |text| text.parse())?;
    if !(seconds.is_finite() && seconds > 0.0) || arguments.next().is_some() {
        return Err(USAGE.into());
    }
    let mut load = Load::new(
        target,
        connections,
        Stop::After(Duration::from_secs_f64(seconds)),
    );
    load.threads = threads;
    let outcome = loadgen::run(&load)?;
    println!(
        "{:.0} req/s, {} answered, {} failed, p50 {} us, p99 {} us",
        outcome.requests_per_second(),
        outcome.answered(),
        outcome.normal.failed(),
        outcome.latency_micros.value_at_quantile(0.5),
        outcome.latency_micros.value_at_quantile(0.99),
    );
    Ok(())
}
