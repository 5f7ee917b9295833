//! A worker's inbox: the keys of spawns aimed at it (first polls that must run there,
//! `spawn_on`), posted by any thread, oldest first.
//!
//! The worker takes them one at a time at its picks, so that all but the one it polls
//! stay here, where the monitor can move them to the injector while a task holds the
//! worker (see `monitor`). A count of the keys (`posted`, written under the lock) lets
//! a worker with nothing posted skip the lock at every pick.
//!
//! # No lost post
//! A poster from another thread pushes under the lock, stores the count (`Release`),
//! then sets `notified` with a swap and, if it was clear, wakes the worker's `Poll`
//! (a `mio::Waker`: a wake before the worker blocks still ends its next block). The
//! worker clears `notified` with a swap after each `epoll_wait`: when that swap reads
//! a poster's `true` it acquires its count, so the next pick sees the key; a poster
//! whose swap comes after it reads `false` and wakes the worker again. Before it
//! blocks, the worker looks at `notified` and the count once more ([`Inbox::pending`]).

use std::collections::VecDeque;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use pagekeep_arena::outside_arena;

use crate::sync::shim::{AtomicBool, AtomicUsize, Mutex};

#[derive(Debug)]
struct Keys<K> {
    keys: VecDeque<K>,
    /// The worker has exited: nothing posted now would ever run there.
    closed: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Inbox<K> {
    keys: Mutex<Keys<K>>,
    /// `keys.keys.len()`, written under the lock and read without it.
    posted: AtomicUsize,
    /// Set by whoever posts from another thread and has woken (or will wake) the
    /// worker's `Poll`, and by a stop request; cleared by the worker after each
    /// `epoll_wait`.
    notified: AtomicBool,
}

impl<K> Default for Inbox<K> {
    fn default() -> Self {
        Self {
            keys: Mutex::new(Keys {
                keys: VecDeque::new(),
                closed: false,
            }),
            posted: AtomicUsize::new(0),
            notified: AtomicBool::new(false),
        }
    }
}

impl<K> Inbox<K> {
    fn lock(&self) -> impl std::ops::DerefMut<Target = Keys<K>> + '_ {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Posts `key`; `from_owner` when the worker itself posts (it picks the key at its
    /// next pick, unwoken). Returns whether the caller must wake the worker's `Poll`,
    /// or gives the key back when the worker has exited.
    pub(crate) fn post(&self, key: K, from_owner: bool) -> Result<bool, K> {
        {
            let mut keys = self.lock();
            if keys.closed {
                return Err(key);
            }
            // Runtime state outlives any request: never grow it inside a request's arena.
            outside_arena(|| keys.keys.push_back(key));
            self.posted.store(keys.keys.len(), Ordering::Release);
        }
        Ok(!from_owner && !self.notified.swap(true, Ordering::AcqRel))
    }

    /// Takes the oldest key posted, if any.
    pub(crate) fn pop(&self) -> Option<K> {
        if self.posted.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut keys = self.lock();
        let key = keys.keys.pop_front();
        self.posted.store(keys.keys.len(), Ordering::Release);
        key
    }

    /// Moves every key posted into `into`. With `close`, every later post is refused.
    pub(crate) fn take_all(&self, into: &mut Vec<K>, close: bool) {
        let mut keys = self.lock();
        outside_arena(|| into.extend(keys.keys.drain(..)));
        self.posted.store(0, Ordering::Release);
        keys.closed |= close;
    }

    /// Refuses every later post.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Sets `notified` (a stop request); the caller wakes the `Poll`.
    pub(crate) fn notify(&self) {
        self.notified.store(true, Ordering::Release);
    }

    /// The worker, after `epoll_wait`: clears `notified`. A swap, not a store: reading
    /// a poster's `true` makes its count visible to the next pick.
    pub(crate) fn woken(&self) {
        let _ = self.notified.swap(false, Ordering::AcqRel);
    }

    /// Whether a key or a notification is waiting (the worker's last look before it
    /// blocks).
    pub(crate) fn pending(&self) -> bool {
        self.notified.load(Ordering::Acquire) || self.posted.load(Ordering::Acquire) > 0
    }
}

/// Loom models of the hand-off between a poster and the worker.
///
/// `CARGO_TARGET_DIR=target/loom-executor RUSTFLAGS="--cfg pagekeep_executor_loom"
/// LOOM_MAX_PREEMPTIONS=2 cargo test -p pagekeep-executor --release --lib loom_models`
#[cfg(all(test, pagekeep_executor_loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A poster on another thread and a worker that finds no key and is about to
    /// block: either the worker sees the key (now, or as pending) or the poster wakes
    /// its `Poll`. With `notified` already set, the worker clears it first (as after
    /// an `epoll_wait` woken by an earlier post whose key it took), so the poster's
    /// swap may read the stale `true` and not wake.
    fn post_racing_a_sleeper(notified_before: bool) {
        loom::model(move || {
            let inbox = Arc::new(Inbox::<u32>::default());
            if notified_before {
                inbox.notify();
            }
            // The worker's `mio::Waker`.
            let waker = Arc::new(AtomicBool::new(false));
            let poster = {
                let inbox = Arc::clone(&inbox);
                let waker = Arc::clone(&waker);
                thread::spawn(move || {
                    if inbox.post(7, false).expect("open") {
                        waker.store(true, Ordering::Release);
                    }
                })
            };
            inbox.woken();
            let mut got = inbox.pop();
            let blocks = got.is_none() && !inbox.pending();
            poster.join().unwrap();
            if blocks {
                assert!(
                    waker.load(Ordering::Acquire),
                    "the worker blocks with a key posted and no wake"
                );
            }
            // Woken (or not blocked): the next turn picks the key.
            inbox.woken();
            got = got.or_else(|| inbox.pop());
            assert_eq!(got, Some(7));
        });
    }

    #[test]
    fn a_post_racing_a_sleeper_is_seen_or_wakes_it() {
        post_racing_a_sleeper(false);
    }

    #[test]
    fn a_post_racing_the_clearing_of_a_notification_is_seen_or_wakes() {
        post_racing_a_sleeper(true);
    }
}
