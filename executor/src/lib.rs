#![doc = include_str!("../README.md")]

pub mod client;
mod hyper_rt;
mod join;
pub mod net;
mod reactor;
mod runtime;
mod server;
mod shutdown;
mod sync;
mod sys;
mod task;
mod timer;
mod waker;
mod worker;

pub use arena_alloc::{ArenaPool, PoolConfig, PoolStats};
pub use hyper_rt::{HyperExecutor, HyperTimer};
pub use join::{JoinError, JoinHandle};
pub use runtime::{Builder, Runtime};
pub use server::{
    ClientAddr, Handler, RequestBody, ResponseBody, Server, ServerBuilder, ServerStats,
};
pub use shutdown::{Shutdown, ShutdownWait, SignalWatcher};
pub use task::{current_worker, spawn};
pub use timer::{Elapsed, Sleep, Timeout, YieldNow, sleep, sleep_until, timeout, yield_now};

/// The global allocator a server binary installs so that each request's allocations
/// come from its own arena: [`ArenaRouter`](arena_alloc::ArenaRouter) over
/// [`SlabHeap`](slab_alloc::SlabHeap), which serves everything outside requests
/// (connection state, the runtime) and spills of requests over their budget.
///
/// Without it the server still works, leasing an arena per request, but requests
/// allocate from whatever global allocator is installed and their budgets are not
/// enforced.
///
/// # Examples
///
/// ```
/// #[global_allocator]
/// static GLOBAL: executor::RequestAllocator = executor::request_allocator();
///
/// let words: Vec<String> = vec!["allocated".into(), "outside".into(), "any".into(), "arena".into()];
/// assert_eq!(words.join(" "), "allocated outside any arena");
/// ```
pub type RequestAllocator = arena_alloc::ArenaRouter<slab_alloc::SlabHeap>;

/// A [`RequestAllocator`], for `#[global_allocator]`.
pub const fn request_allocator() -> RequestAllocator {
    arena_alloc::ArenaRouter::new(slab_alloc::SlabHeap::new())
}

#[cfg(test)]
mod tests;
