//! The monitor: one thread per runtime of two or more workers that looks after a
//! worker held by a task that does not yield (a handler computing for a second).
//!
//! Each worker owns a reactor (`mio::Poll`), a timer heap and a run queue, and serves
//! them between task polls. A worker stuck in one poll serves none of them, so its
//! sleeps would not fire, its sockets would get no readiness, and a key alone in its
//! queue would wait (pushing to an empty local queue wakes no sleeper, by design: see
//! `Scheduler::push`). The monitor is Go's `sysmon` idea, cut down: a worker publishes
//! when its current turn started ([`WorkerShared::turn_started`]); a turn older than
//! [`HELD_AFTER`] means the worker is held, and then every [`HELD_CHECK`] the monitor
//! - collects the held worker's I/O events without blocking (`try_lock` on its `Poll`:
//!   when the owner has it, it is not held any more) and dispatches them (their
//!   wakers run like the timers', below); a wake of
//!   the worker's own `mio::Waker` collected so is written again, as the worker may
//!   have ended its turn meanwhile and be about to block counting on it,
//! - fires its due timers (the heap is behind a mutex, locked briefly by its owner);
//!   the wakers of the events and timers run with the table and heap unlocked, each
//!   under `catch_unwind`: one that panics is reported and the monitor goes on,
//! - moves the keys posted to it (first polls aimed at it) to the injector, and
//! - wakes a sleeping worker when the held worker's queue has keys, to steal them.
//!
//! The tasks those wakes schedule go to the injector (the monitor is not a worker)
//! and run on the other workers. The monitor never polls a task.
//!
//! Cost on the common path: a worker stores its turn's start time (one atomic store
//! per turn); when it starts a turn after running out of tasks it also issues a
//! `SeqCst` fence and, if the monitor is parked for lack of busy workers, unparks it.
//! The monitor then sleeps until the oldest turn would count as held, and parks again
//! when every worker is out of tasks. So an idle runtime costs nothing, a busy one a
//! wake-up of the monitor every [`HELD_AFTER`] or so.
//!
//! # No lost unpark
//! The monitor sets `parked`, issues a `SeqCst` fence, then reads every worker's
//! `turn_started`; a worker stores `turn_started`, issues a `SeqCst` fence, then reads
//! `parked`. So either the monitor sees the turn and does not park, or the worker sees
//! `parked` and unparks it (an unpark before the park is kept by `std::thread`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use mio::Events;

use crate::scheduler::Scheduler;
use crate::sync::lock;
use crate::sync::shim;

/// Age of a turn after which its worker counts as held by a task. Under miri, which
/// runs code far slower on a clock of its own, every turn would look held: 1 s there.
pub(crate) const HELD_AFTER: Duration = if cfg!(miri) {
    Duration::from_secs(1)
} else {
    Duration::from_millis(4)
};
/// How often the monitor serves a held worker (a held worker's timers fire up to this
/// late).
pub(crate) const HELD_CHECK: Duration = Duration::from_millis(1);
/// Events collected per look at a held worker's `Poll`.
const EVENT_CAPACITY: usize = 256;

/// The handshake that keeps a parked monitor from missing a turn (see the module
/// docs), apart so that the loom model checks this code.
#[derive(Debug, Default)]
pub(crate) struct ParkGate {
    /// Set by the monitor before its last look and its park with no deadline.
    parked: shim::AtomicBool,
}

impl ParkGate {
    /// Worker side, after storing its `turn_started`: whether to unpark the monitor.
    pub(crate) fn worker_must_unpark(&self) -> bool {
        shim::fence(Ordering::SeqCst);
        self.parked.load(Ordering::Relaxed)
    }

    /// Monitor side, before its last look at the workers' `turn_started`.
    pub(crate) fn monitor_parking(&self) {
        self.parked.store(true, Ordering::Relaxed);
        shim::fence(Ordering::SeqCst);
    }

    /// Monitor side: no longer parked (or not parking after all).
    pub(crate) fn monitor_awake(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }
}

/// The scheduler's side of the monitor: its thread, to unpark it, and whether it is
/// parked for lack of busy workers.
#[derive(Debug, Default)]
pub(crate) struct MonitorShared {
    thread: Mutex<Option<Thread>>,
    gate: ParkGate,
    stop: AtomicBool,
}

impl MonitorShared {
    /// A worker started a turn after running out of tasks: unparks the monitor if it
    /// is parked with no deadline. The caller has stored its `turn_started`.
    pub(crate) fn turn_begun(&self) {
        if self.gate.worker_must_unpark() {
            self.unpark();
        }
    }

    fn unpark(&self) {
        if let Some(thread) = &*lock(&self.thread) {
            thread.unpark();
        }
    }

    /// Tells the monitor to leave (runtime shutdown).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.unpark();
    }
}

/// Starts the monitor of `scheduler` (only worth it with two workers or more: a
/// runtime's only worker, held, has nobody to run what the monitor would wake).
///
/// # Errors
/// When the thread cannot be created.
pub(crate) fn start(
    scheduler: &Arc<Scheduler>,
    name: String,
) -> std::io::Result<thread::JoinHandle<()>> {
    let weak = Arc::downgrade(scheduler);
    let thread = thread::Builder::new()
        .name(name)
        .spawn(move || run(&weak))?;
    *lock(&scheduler.monitor.thread) = Some(thread.thread().clone());
    Ok(thread)
}

fn run(scheduler: &Weak<Scheduler>) {
    let mut events = Events::with_capacity(EVENT_CAPACITY);
    let mut posted = Vec::new();
    let mut wakers = Vec::new();
    loop {
        // Weak: the monitor does not keep a dropped runtime's scheduler alive.
        let Some(scheduler) = scheduler.upgrade() else {
            return;
        };
        let monitor = &scheduler.monitor;
        if monitor.stop.load(Ordering::Acquire) {
            return;
        }
        match look(&scheduler, &mut events, &mut posted, &mut wakers) {
            Some(wait) => {
                drop(scheduler);
                thread::park_timeout(wait);
            }
            None => {
                monitor.gate.monitor_parking();
                let busy = look(&scheduler, &mut events, &mut posted, &mut wakers).is_some();
                let stopping = monitor.stop.load(Ordering::Acquire);
                if !busy && !stopping {
                    // Not holding the scheduler while parked (its runtime may be dropped).
                    let monitor_alive = Arc::downgrade(&scheduler);
                    drop(scheduler);
                    thread::park();
                    if let Some(scheduler) = monitor_alive.upgrade() {
                        scheduler.monitor.gate.monitor_awake();
                    }
                } else {
                    monitor.gate.monitor_awake();
                }
            }
        }
    }
}

/// Says on standard error that a waker panicked on the monitor thread (a worker that
/// meets one dies, and says so; the monitor goes on).
#[cold]
fn report_panicking_waker() {
    use std::io::Write;
    let _ = std::io::stderr()
        .write_all(b"executor: a waker panicked when the monitor woke it; the monitor goes on\n");
}

/// Serves the held workers; returns how long to wait before the next look, or `None`
/// when no worker is in a turn.
fn look(
    scheduler: &Scheduler,
    events: &mut Events,
    posted: &mut Vec<crate::task::store::TaskKey>,
    wakers: &mut Vec<Waker>,
) -> Option<Duration> {
    let now = Instant::now();
    let now_nanos = scheduler.nanos(now);
    let held_after = u64::try_from(HELD_AFTER.as_nanos()).unwrap_or(u64::MAX);
    let mut wait: Option<Duration> = None;
    for worker in scheduler.workers.iter() {
        let Some(started) = worker.turn_started() else {
            continue;
        };
        let age = now_nanos.saturating_sub(started);
        let next = if age >= held_after {
            // The wakers of the I/O events and of the due timers, run once the I/O
            // table and the heap are unlocked.
            worker.poll_events_for_owner(started, events, wakers);
            lock(&worker.timers).fire_due(Instant::now(), wakers);
            for waker in wakers.drain(..) {
                // A waker that panics here (an I/O waker or a timer's) must not end the
                // monitor (every held worker would then go unserved): it is reported and
                // the others are woken.
                if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake())) {
                    // Its payload's destructor is user code too, and may panic.
                    crate::sync::discard_panic(payload);
                    report_panicking_waker();
                }
            }
            worker.take_posted_keys(posted);
            if !posted.is_empty() {
                scheduler.requeue_orphans(posted.drain(..));
            }
            if scheduler.has_queued(worker.local_index())
                && scheduler.move_queued_to_injector(worker.local_index()) != 0
            {
                scheduler.notify_one();
            }
            HELD_CHECK
        } else {
            Duration::from_nanos(held_after - age)
        };
        wait = Some(wait.map_or(next, |wait| wait.min(next)));
    }
    wait
}

/// Loom model of the park handshake: a worker publishing a turn and the monitor
/// parking never miss each other.
///
/// `CARGO_TARGET_DIR=target/loom-executor RUSTFLAGS="--cfg pagekeep_executor_loom"
/// LOOM_MAX_PREEMPTIONS=2 cargo test -p pagekeep-executor --release --lib loom_models`
#[cfg(all(test, pagekeep_executor_loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn a_turn_begun_as_the_monitor_parks_is_seen_or_unparks_it() {
        loom::model(|| {
            let gate = Arc::new(ParkGate::default());
            // A worker's `turn_started`, 0 while it is out of tasks.
            let turn_started = Arc::new(shim::AtomicU64::new(0));
            let worker = {
                let gate = Arc::clone(&gate);
                let turn_started = Arc::clone(&turn_started);
                thread::spawn(move || {
                    turn_started.store(5, Ordering::Release);
                    gate.worker_must_unpark()
                })
            };
            gate.monitor_parking();
            let seen_busy = turn_started.load(Ordering::Acquire) != 0;
            let unparked = worker.join().unwrap();
            assert!(
                seen_busy || unparked,
                "the monitor parks with no deadline and nobody unparks it"
            );
        });
    }
}
