//! Integration tests of the executor's HTTP server and client over loopback, one module
//! per scenario. Servers bind 127.0.0.1 port 0; every wait is bounded.

mod chunked;
mod client;
mod keep_alive;
mod limits;
mod malformed;
mod panics;
mod pipelining;
mod proxy;
mod shutdown;
mod support;
mod timeouts;
