//! Which worker serves a connection: the one serving the fewest, whichever worker
//! accepted it.
//!
//! Every worker accepts from the shared listening socket, and a keep-alive connection
//! stays on the worker that serves it for its whole life, so where it lands at accept
//! time is the only balancing there is. Left to "whoever accepts first", a burst of
//! connections splits unevenly (24 and 40 of 64 in one measurement), and the busier
//! worker's connections wait longer for every request. So the accepting worker counts
//! the connections each worker serves and hands a new one to the least loaded (itself
//! on a tie); the hand-off is one spawn into the other worker's inbox, once per
//! connection, and the socket is registered with the serving worker's `Poll` there.
//!
//! A worker held by a task that does not yield (a handler computing for a second)
//! serves few connections and would look the least loaded, so a held worker is passed
//! over while another is not (see `monitor`). One that gets held after the hand-off
//! does not keep the connection waiting: the monitor moves the keys still in a held
//! worker's inbox to the injector (a worker takes its posted keys one at a time, so
//! the inbox holds all but the one it polls), and collects its sockets' events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::runtime::Spawner;

/// Connections served per worker, and the means to start one on any worker.
#[derive(Debug)]
pub(crate) struct Dispatch {
    spawner: Spawner,
    /// Connections each worker serves, by the runtime's worker index.
    served: Box<[AtomicUsize]>,
}

/// One connection counted against its worker until dropped.
#[derive(Debug)]
pub(crate) struct Assignment {
    dispatch: Arc<Dispatch>,
    worker: usize,
}

impl Dispatch {
    pub(crate) fn new(spawner: Spawner) -> Self {
        let served = (0..spawner.worker_count())
            .map(|_| AtomicUsize::new(0))
            .collect();
        Self { spawner, served }
    }

    /// Picks the worker to serve a connection accepted on worker `accepting`: the one
    /// serving the fewest connections, `accepting` itself unless another serves
    /// strictly fewer. The connection counts against the chosen worker from now on.
    ///
    /// Two workers assigning at once may both pick the same worker; the next
    /// assignment corrects that, so the counts never drift more than a connection or
    /// two per concurrent accept.
    ///
    /// A worker that died (its loop panicked) is never picked: its connections were
    /// failed when it died, and a connection handed to it would never be served. A
    /// worker held by a task is picked only when every live worker is held.
    pub(crate) fn assign(self: &Arc<Self>, accepting: usize) -> Assignment {
        // Lowest first: a live worker that is not held, a held one, a dead one; then
        // the fewest connections.
        let rank = |index: usize| {
            let availability = if self.spawner.is_dead(index) {
                2
            } else if self.spawner.is_held(index) {
                1
            } else {
                0
            };
            (availability, self.served[index].load(Ordering::Relaxed))
        };
        let mut worker = accepting;
        let mut least = rank(accepting);
        for index in 0..self.served.len() {
            let candidate = rank(index);
            if candidate < least {
                worker = index;
                least = candidate;
            }
        }
        self.served[worker].fetch_add(1, Ordering::Relaxed);
        Assignment {
            dispatch: Arc::clone(self),
            worker,
        }
    }

    /// Spawns `future` on worker `worker` (directly when that is the calling worker).
    pub(crate) fn spawn_on<F>(&self, worker: usize, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.spawner.spawn_on(worker, future));
    }

    /// Connections worker `worker` serves now.
    #[cfg(test)]
    pub(crate) fn served(&self, worker: usize) -> usize {
        self.served[worker].load(Ordering::Relaxed)
    }
}

impl Assignment {
    /// The worker chosen.
    pub(crate) fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.dispatch.served[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Runtime;

    #[test]
    fn assigns_the_least_loaded_worker_preferring_the_accepting_one() {
        let runtime = Runtime::builder().workers(3).build().unwrap();
        let dispatch = Arc::new(Dispatch::new(runtime.spawner()));
        // A worker still in its first turn after 4 ms (a slow machine, miri) counts as
        // held and is passed over: wait until every worker is out of tasks.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while runtime
            .scheduler_for_tests()
            .workers
            .iter()
            .any(|worker| worker.turn_started().is_some())
        {
            assert!(std::time::Instant::now() < deadline, "workers never idle");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let first = dispatch.assign(1);
        assert_eq!(
            first.worker(),
            1,
            "a tie keeps the connection where it was accepted"
        );
        let second = dispatch.assign(1);
        assert_eq!(second.worker(), 0, "the first of the least loaded");
        let third = dispatch.assign(1);
        assert_eq!(third.worker(), 2);
        let fourth = dispatch.assign(0);
        assert_eq!(fourth.worker(), 0, "all equal again: stays");
        drop(third);
        assert_eq!(dispatch.served(2), 0, "an ended connection stops counting");
        assert_eq!(dispatch.assign(1).worker(), 2);
        assert_eq!((dispatch.served(0), dispatch.served(1)), (2, 1));
    }

    #[test]
    fn spawns_on_the_chosen_worker() {
        let runtime = Runtime::builder().workers(2).build().unwrap();
        let dispatch = Arc::new(Dispatch::new(runtime.spawner()));
        let (sender, receiver) = std::sync::mpsc::channel();
        for worker in [0, 1, 1] {
            let sender = sender.clone();
            dispatch.spawn_on(worker, async move {
                sender.send((worker, crate::current_worker())).unwrap();
            });
        }
        let mut seen: Vec<_> = (0..3).map(|_| receiver.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(
            seen[1].1, seen[2].1,
            "both spawns on worker 1 ran on one thread"
        );
        assert_ne!(seen[0].1, seen[1].1, "worker 0 is another thread");
    }

    #[test]
    fn passes_over_a_held_worker() {
        let runtime = Runtime::builder().workers(2).build().unwrap();
        let dispatch = Arc::new(Dispatch::new(runtime.spawner()));
        let (held_sender, held) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        // Holds its worker without yielding until released (a blocking receive, not a
        // spin, so that it is quick under miri too).
        let holder = runtime.spawn(async move {
            let index = crate::worker::with_local(|local| local.shared.local_index());
            held_sender.send(index.unwrap()).unwrap();
            released.recv().unwrap();
        });
        let held = held.recv().unwrap();
        // Well past `HELD_AFTER`.
        std::thread::sleep(crate::monitor::HELD_AFTER * 2 + std::time::Duration::from_millis(50));
        let free = 1 - held;
        // The held worker serves none, the other several: the free one still gets them.
        let assignments: Vec<_> = (0..4).map(|_| dispatch.assign(held)).collect();
        release.send(()).unwrap();
        runtime.block_on(async move { holder.await.unwrap() });
        assert!(
            assignments
                .iter()
                .all(|assignment| assignment.worker() == free),
            "a connection went to the held worker"
        );
    }
}
