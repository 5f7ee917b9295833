//! [`ServerStats`]: counters a running server keeps, for tests and monitoring.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pagekeep_arena::{ArenaPool, PoolStats};

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
    /// Handlers cancelled for going over their arena budget (503).
    pub(crate) over_budget: AtomicU64,
    /// Requests refused after waiting the configured time for a free arena (503).
    pub(crate) arena_waits_timed_out: AtomicU64,
    /// Handlers cancelled at the handler timeout (503).
    pub(crate) handler_timeouts: AtomicU64,
    /// Handlers (or their response bodies) that panicked.
    pub(crate) panics: AtomicU64,
    /// Connections closed because a response took longer than the response write
    /// timeout to write.
    pub(crate) response_write_timeouts: AtomicU64,
    /// TLS connections closed because the handshake was not done within the header
    /// read timeout.
    #[cfg(feature = "tls")]
    pub(crate) tls_handshake_timeouts: AtomicU64,
    /// TLS connections whose handshake failed.
    #[cfg(feature = "tls")]
    pub(crate) tls_handshake_failures: AtomicU64,
}

/// A live view of a [`Server`](crate::Server)'s counters; cheap to clone, valid after
/// the server has stopped.
#[derive(Debug, Clone)]
pub struct ServerStats {
    counters: Arc<Counters>,
    pool: &'static ArenaPool,
}

impl ServerStats {
    pub(crate) fn new(counters: Arc<Counters>, pool: &'static ArenaPool) -> Self {
        Self { counters, pool }
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

    /// Handlers cancelled so far because they went over their arena budget (each
    /// answered 503), and streamed response bodies cut off for it.
    pub fn over_budget(&self) -> u64 {
        self.counters.over_budget.load(Ordering::Relaxed)
    }

    /// Requests refused so far because no arena became free within the arena wait
    /// (each answered 503 without calling the handler).
    pub fn arena_waits_timed_out(&self) -> u64 {
        self.counters.arena_waits_timed_out.load(Ordering::Relaxed)
    }

    /// Handlers cancelled so far at the handler timeout (each answered 503).
    pub fn handler_timeouts(&self) -> u64 {
        self.counters.handler_timeouts.load(Ordering::Relaxed)
    }

    /// Handlers that panicked so far (each answered 500), and response bodies that
    /// panicked while streaming (each response cut off, its connection closed).
    pub fn panics(&self) -> u64 {
        self.counters.panics.load(Ordering::Relaxed)
    }

    /// Connections closed so far because a response took longer than the response
    /// write timeout to write.
    pub fn response_write_timeouts(&self) -> u64 {
        self.counters
            .response_write_timeouts
            .load(Ordering::Relaxed)
    }

    /// TLS connections closed so far because their handshake was not done within the
    /// header read timeout (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_handshake_timeouts(&self) -> u64 {
        self.counters.tls_handshake_timeouts.load(Ordering::Relaxed)
    }

    /// TLS connections whose handshake failed so far (not TLS, a certificate the client
    /// refused, a reset) (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_handshake_failures(&self) -> u64 {
        self.counters.tls_handshake_failures.load(Ordering::Relaxed)
    }

    /// The request arenas: free, in use, quarantined (released while something they
    /// hold is still alive, such as a response being written), committed bytes.
    pub fn arenas(&self) -> PoolStats {
        self.pool.stats()
    }
}
