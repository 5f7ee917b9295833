#![doc = include_str!("../README.md")]

pub mod client;
mod hyper_rt;
mod join;
pub mod net;
mod reactor;
mod runtime;
mod server;
mod shutdown;
mod sys;
mod task;
mod timer;
mod waker;
mod worker;

pub use hyper_rt::{HyperExecutor, HyperTimer};
pub use join::{JoinError, JoinHandle};
pub use runtime::{Builder, Runtime};
pub use server::{Handler, RequestBody, ResponseBody, Server, ServerBuilder, ServerStats};
pub use shutdown::{Shutdown, ShutdownWait, SignalWatcher};
pub use task::{current_worker, spawn};
pub use timer::{Elapsed, Sleep, Timeout, sleep, sleep_until, timeout};

#[cfg(test)]
mod tests;
