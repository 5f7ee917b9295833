//! Integration tests of the executor's HTTP server and client over loopback, one module
//! per scenario. Servers bind 127.0.0.1 port 0; every wait is bounded.
//!
//! The binary's global allocator is the one a server installs, so requests really run
//! in their arenas: budgets, escapes and the return of every arena are all exercised.

#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

mod arenas;
mod budget;
mod child;
mod chunked;
mod client;
mod descriptors;
mod edges;
mod examples;
mod keep_alive;
mod limits;
mod malformed;
mod panics;
mod pipelining;
mod proxy;
mod runtimes;
mod shutdown;
mod sockets;
mod streaming;
mod support;
mod task_api_in_handlers;
mod timeouts;
mod timers;
