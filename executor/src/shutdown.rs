//! Shutdown: a broadcast "stop now" flag that tasks can await, and the SIGINT/SIGTERM
//! watcher that raises it (Ctrl-C on Windows, `sys/ctrl_c.rs`).
//!
//! Sequence (driven by [`Server`](crate::Server)): the signal (or
//! [`Shutdown::trigger`]) raises the flag; accept loops see it and drop their
//! listeners, so new connections are refused; every connection asks hyper for a
//! graceful shutdown (finish the request in flight, then close; idle keep-alive
//! connections close at once); the server waits until no connection is left or the
//! shutdown deadline passes, then stops the runtime, which drops whatever is left.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
#[cfg(unix)]
use std::thread;

#[derive(Default)]
struct Waiters {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    waiters: Mutex<Waiters>,
}

/// A cloneable shutdown flag: [`trigger`](Shutdown::trigger) it once, and every
/// [`wait`](Shutdown::wait) completes.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let shutdown = pagekeep_executor::Shutdown::new();
/// let waiter = runtime.spawn(shutdown.wait());
/// shutdown.trigger();
/// runtime.block_on(waiter).unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Shutdown {
    /// A flag not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        crate::sync::lock(&self.inner.waiters)
    }

    /// Raises the flag and wakes every waiter. Idempotent.
    pub fn trigger(&self) {
        if self.inner.triggered.swap(true, Ordering::AcqRel) {
            return;
        }
        let wakers: Vec<Waker> = self
            .lock()
            .wakers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the flag is raised.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// A future that completes once the flag is raised.
    pub fn wait(&self) -> ShutdownWait {
        ShutdownWait {
            shutdown: self.clone(),
            slot: None,
            registered: None,
        }
    }

    /// Raises the flag on the first SIGINT or SIGTERM, until the returned watcher is
    /// dropped. A second SIGINT or SIGTERM while the watcher lives ends the process at
    /// once, as that signal's default action does (the way out of a shutdown that
    /// waits for a stuck request).
    ///
    /// Once the last watcher of the process is dropped, a signal whose action was the
    /// default before the first watcher was made has its default action again (a
    /// program that goes on after its server is done can still be interrupted).
    ///
    /// On Windows, which has no signals, Ctrl-C and Ctrl-Break (console control events,
    /// through `SetConsoleCtrlHandler`) stand for SIGINT: the first raises the flag, a
    /// second while a watcher lives ends the process with `STATUS_CONTROL_C_EXIT`, and
    /// once the last watcher is dropped Ctrl-C has its default action again (the handler
    /// stays installed and passes the event on). There is
    /// no SIGTERM: console close, logoff and system shutdown are not watched (the system
    /// ends the process when its handlers return).
    ///
    /// # Errors
    /// When the signal handlers (the console control handler on Windows) cannot be
    /// installed or the watcher thread not started.
    #[cfg(unix)]
    pub fn watch_signals(&self) -> std::io::Result<SignalWatcher> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let watching = Watching::start()?;
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let shutdown = self.clone();
        let thread = thread::Builder::new()
            .name("executor-signals".to_owned())
            .spawn(move || {
                let mut received = signals.forever();
                if received.next().is_some() {
                    shutdown.trigger();
                }
                if let Some(signal) = received.next() {
                    eprintln!("executor: second termination signal: exiting at once");
                    // Restores the default action and raises the signal again: the process
                    // ends as if no handler had been installed.
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    std::process::exit(128 + signal);
                }
            })?;
        Ok(SignalWatcher {
            handle,
            thread: Some(thread),
            _watching: watching,
        })
    }

    /// Raises the flag on the first Ctrl-C or Ctrl-Break, until the returned watcher is
    /// dropped (see the Unix version of this method for the whole contract; the watch
    /// is `sys/ctrl_c.rs`).
    ///
    /// # Errors
    /// When the console control handler cannot be installed.
    #[cfg(windows)]
    pub fn watch_signals(&self) -> std::io::Result<SignalWatcher> {
        Ok(SignalWatcher {
            _watch: crate::sys::watch_ctrl_c(self.clone())?,
        })
    }
}

/// The process's live [`SignalWatcher`]s, and whether none is alive.
///
/// signal-hook never uninstalls its handler: once every watcher is gone, a signal it
/// handled would be ignored for the rest of the process. So the first watcher
/// registers, for each of SIGINT and SIGTERM whose action was still the default, one
/// more action that performs the default action whenever `unwatched` is set.
#[cfg(unix)]
struct WatcherCount {
    live: usize,
    /// Set while no watcher is alive; read by the signal actions.
    unwatched: Arc<AtomicBool>,
    /// The default-action fallbacks are registered.
    fallbacks_registered: bool,
}

#[cfg(unix)]
static WATCHERS: Mutex<Option<WatcherCount>> = Mutex::new(None);

/// One live watcher, counted in [`WATCHERS`] until dropped.
#[cfg(unix)]
struct Watching;

#[cfg(unix)]
impl Watching {
    fn start() -> std::io::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut watchers = crate::sync::lock(&WATCHERS);
        let count = watchers.get_or_insert_with(|| WatcherCount {
            live: 0,
            unwatched: Arc::new(AtomicBool::new(true)),
            fallbacks_registered: false,
        });
        if !count.fallbacks_registered {
            // Read before signal-hook installs its handler for the first watcher.
            for signal in [SIGINT, SIGTERM] {
                if crate::sys::has_default_action(signal)? {
                    signal_hook::flag::register_conditional_default(
                        signal,
                        Arc::clone(&count.unwatched),
                    )?;
                }
            }
            count.fallbacks_registered = true;
        }
        count.live += 1;
        count.unwatched.store(false, Ordering::SeqCst);
        Ok(Self)
    }
}

#[cfg(unix)]
impl Drop for Watching {
    fn drop(&mut self) {
        let mut watchers = crate::sync::lock(&WATCHERS);
        if let Some(count) = watchers.as_mut() {
            count.live -= 1;
            if count.live == 0 {
                count.unwatched.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Waits for a [`Shutdown`] flag. Made by [`Shutdown::wait`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct ShutdownWait {
    shutdown: Shutdown,
    /// Index of this waiter's waker in the flag's table, once registered.
    slot: Option<usize>,
    /// The waker stored in that slot: while a poll brings the same one, the table (a
    /// lock every connection shares) is not touched.
    registered: Option<Waker>,
}

impl Future for ShutdownWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        // Already registered with this waker: `trigger` raises the flag before it wakes
        // the table, and the flag was clear just now, so the wake-up will come.
        if this
            .registered
            .as_ref()
            .is_some_and(|registered| registered.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let mut waiters = this.shutdown.lock();
        // Checked again under the lock: `trigger` sets the flag before taking the lock,
        // so either we see it here or it sees our waker.
        if this.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        match this.slot {
            Some(index) => waiters.wakers[index] = waker,
            None => {
                let index = match waiters.free.pop() {
                    Some(index) => {
                        waiters.wakers[index] = waker;
                        index
                    }
                    None => {
                        waiters.wakers.push(waker);
                        waiters.wakers.len() - 1
                    }
                };
                this.slot = Some(index);
            }
        }
        this.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ShutdownWait {
    fn drop(&mut self) {
        if let Some(index) = self.slot {
            let mut waiters = self.shutdown.lock();
            waiters.wakers[index] = None;
            waiters.free.push(index);
        }
    }
}

/// Watches SIGINT/SIGTERM for a [`Shutdown`]; dropping it uninstalls the watch (see
/// [`Shutdown::watch_signals`]).
#[cfg(unix)]
#[must_use = "dropping the watcher stops watching for signals"]
pub struct SignalWatcher {
    handle: signal_hook::iterator::Handle,
    thread: Option<thread::JoinHandle<()>>,
    /// Counted among the live watchers until the watch is over (dropped last).
    _watching: Watching,
}

/// Watches Ctrl-C and Ctrl-Break for a [`Shutdown`]; dropping it ends the watch (see
/// [`Shutdown::watch_signals`]).
#[cfg(windows)]
#[must_use = "dropping the watcher stops watching for Ctrl-C"]
pub struct SignalWatcher {
    _watch: crate::sys::CtrlCWatch,
}

#[cfg(windows)]
impl fmt::Debug for SignalWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalWatcher").finish_non_exhaustive()
    }
}

#[cfg(unix)]
impl fmt::Debug for SignalWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalWatcher").finish_non_exhaustive()
    }
}

#[cfg(unix)]
impl Drop for SignalWatcher {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
