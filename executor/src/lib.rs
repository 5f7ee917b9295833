#![doc = include_str!("../README.md")]

mod blocking;
pub mod client;
mod coop;
mod handle;
mod hyper_rt;
mod inbox;
mod interval;
mod join;
mod join_set;
mod monitor;
pub mod net;
mod reactor;
mod run_queue;
mod runtime;
mod scheduler;
mod server;
mod shutdown;
pub mod sync;
mod sys;
pub mod task;
mod timer;
mod waker;
mod worker;

pub use blocking::spawn_blocking;
pub use handle::{Handle, TryCurrentError};
pub use hyper_rt::{HyperExecutor, HyperTimer};
pub use interval::{Interval, MissedTickBehavior, Tick, interval, interval_at};
pub use join::{AbortHandle, JoinError, JoinHandle};
pub use join_set::JoinSet;
pub use pagekeep_arena::{ArenaPool, PoolConfig, PoolStats};
pub use runtime::{Builder, Runtime};
pub use server::upgrade;
pub use server::{
    BodyBudget, BodyOverBudget, ClientAddr, Handler, IncomingBody, RequestBody, ResponseBody,
    Server, ServerBuilder, ServerStats,
};
#[cfg(feature = "tower")]
pub use server::{ServiceBody, ServiceFuture, ServiceHandler};
#[cfg(any(unix, windows))]
pub use shutdown::SignalWatcher;
pub use shutdown::{Shutdown, ShutdownWait};
pub use task::{current_worker, spawn};
pub use timer::{Elapsed, Sleep, Timeout, YieldNow, sleep, sleep_until, timeout, yield_now};

/// The global allocator a server binary installs so that each request's allocations
/// come from its own arena: [`ArenaRouter`](pagekeep_arena::ArenaRouter) over
/// [`SlabHeap`](pagekeep_slab::SlabHeap), which serves everything outside requests
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
/// static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();
///
/// let words: Vec<String> = vec!["allocated".into(), "outside".into(), "any".into(), "arena".into()];
/// assert_eq!(words.join(" "), "allocated outside any arena");
/// ```
pub type RequestAllocator = pagekeep_arena::ArenaRouter<pagekeep_slab::SlabHeap>;

/// A [`RequestAllocator`], for `#[global_allocator]`.
pub const fn request_allocator() -> RequestAllocator {
    pagekeep_arena::ArenaRouter::new(pagekeep_slab::SlabHeap::new())
}

#[cfg(test)]
mod tests;
