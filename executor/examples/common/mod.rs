//! Shared by the examples: port and worker count from the arguments or environment.
//!
//! `cargo run --example NAME -- [PORT] [WORKERS]`, or `PORT=.. WORKERS=..`; port 0 picks
//! a free port; workers default to one per core.

#![allow(dead_code)]

use std::net::SocketAddr;

/// The listening address and worker count asked for.
pub fn settings(default_port: u16) -> (SocketAddr, usize) {
    let mut arguments = std::env::args().skip(1);
    let port = arguments
        .next()
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(default_port);
    let workers = arguments
        .next()
        .or_else(|| std::env::var("WORKERS").ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    (SocketAddr::from(([127, 0, 0, 1], port)), workers)
}
