//! [`ServerStats`]: counters a running server keeps, for tests and monitoring.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The counters behind [`ServerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connections being served (each holds a permit).
    pub(crate) open: AtomicUsize,
    /// Connections accepted and served since the start.
    pub(crate) accepted: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub(crate) refused: AtomicU64,
    /// Requests handed to the request scope (handler or early refusal).
    pub(crate) requests: AtomicU64,
}

/// A live view of a [`Server`](crate::Server)'s counters; cheap to clone, valid after
/// the server has stopped.
#[derive(Debug, Clone)]
pub struct ServerStats {
    counters: Arc<Counters>,
}

impl ServerStats {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self { counters }
    }

    /// Connections currently being served.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::Acquire)
    }

    /// Connections accepted and served so far.
    pub fn accepted_connections(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused at the `max_connections` limit so far.
    pub fn refused_connections(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }
}
