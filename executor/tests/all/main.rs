//! Integration tests of the executor's HTTP server and client over loopback, one module
//! per scenario. Servers bind 127.0.0.1 port 0; every wait is bounded.
//!
//! The binary's global allocator is the one a server installs, so requests really run
//! in their arenas: budgets, escapes and the return of every arena are all exercised.
//! Its fallback heap counts the calls each thread makes into it, for the tests of
//! requests that make none.
//!
//! In the workspace, the crate's dev-dependency on itself turns on `tokio-io`,
//! `futures-io` and `tower`. A packaged copy (crates.io) has no such dev-dependency, as cargo drops a
//! path dependency without a version: the tests that need those features are left out
//! there (`cargo test --all-features` runs them).
//!
//! The modules that run a server in a child process (`budget`, `child`, `descriptors`,
//! `limits`, `shutdown`: `pre_exec`, signals, `setrlimit`, `/proc`) are Unix only; the
//! rest run on Windows under wine, two of them skipped there (the README's
//! "Platforms").

// The executor's `RequestAllocator` (`ArenaRouter` over `SlabHeap`), with the calls
// into the fallback heap counted per thread (`support::fallback_heap_calls`), and the
// arena blocks freed outside any arena (`support::arena_frees_outside_arenas`).
#[global_allocator]
static GLOBAL: support::CountingRouter = support::CountingRouter::new();

mod always_ready_tasks;
mod arenas;
#[cfg(feature = "tower")]
mod axum_app;
#[cfg(unix)]
mod budget;
#[cfg(unix)]
mod child;
mod chunked;
mod client;
mod client_pool;
mod connect_by_name;
#[cfg(unix)]
mod descriptors;
mod edges;
mod examples;
mod frees_inside_request_arenas;
#[cfg(feature = "futures-io")]
mod futures_io;
mod held_worker;
#[cfg(feature = "http2")]
mod http2;
#[cfg(feature = "http2")]
mod http2_goaway;
#[cfg(feature = "http2")]
mod http2_reset_streams;
mod keep_alive;
#[cfg(unix)]
mod limits;
mod malformed;
mod moved_sleeps;
mod outliving_the_runtime;
mod panics;
mod peer_vanishes;
mod pipelining;
mod posts_without_fallback_calls;
mod proxy;
mod real_clients;
#[cfg(windows)]
mod resets_before_accept;
mod runtimes;
#[cfg(unix)]
mod serving_on_unix_sockets;
#[cfg(unix)]
mod shutdown;
mod socket_options;
mod sockets;
mod split_halves;
mod streaming;
mod support;
mod task_api_in_handlers;
mod timeouts;
mod timers;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tokio-io")]
mod tokio_io;
#[cfg(feature = "tower")]
mod tower_services;
#[cfg(unix)]
mod unix_sockets;
#[cfg(all(feature = "tokio-io", feature = "futures-io"))]
mod upgraded_io;
mod uploads_past_the_body_budget;
mod vectored_writes;
// The `websocket` example needs `tokio-io` (its `required-features`).
#[cfg(feature = "tokio-io")]
mod websockets;
