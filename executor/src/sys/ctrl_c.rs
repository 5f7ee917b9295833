//! Ctrl-C and Ctrl-Break on Windows: a console control handler that raises the
//! [`Shutdown`] flags of the live watchers, as the SIGINT/SIGTERM watcher does on Unix.
//!
//! `SetConsoleCtrlHandler` runs the handler on a thread the system starts for each
//! event. The first Ctrl-C or Ctrl-Break while a watcher is alive triggers every
//! watched flag and is handled (the process goes on and drains); a second one while a
//! watcher is still alive ends the process at once with `STATUS_CONTROL_C_EXIT`, the
//! status the default handler gives. With no watcher alive the handler returns FALSE
//! (not handled), so Ctrl-C has its default action. Console close, logoff and system
//! shutdown events are left to the other handlers and the default one (the system ends
//! the process when they return): they are not Ctrl-C.
//!
//! # Locks
//! The system calls the handlers with its console lock held (wine's `ctrl_routine`
//! holds `console_section` while it walks the handler list), and `SetConsoleCtrlHandler`
//! takes that lock too. The handler takes [`WATCHERS`], so nothing may call
//! `SetConsoleCtrlHandler` while holding [`WATCHERS`]: the handler is installed once for
//! the process, under a lock of its own that the handler never takes, and never
//! removed. The flags are triggered (which wakes their waiters: code of any kind) after
//! [`WATCHERS`] is released.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use windows_sys::Win32::Foundation::STATUS_CONTROL_C_EXIT;
use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, CTRL_C_EVENT, SetConsoleCtrlHandler};
use windows_sys::core::BOOL;

use crate::Shutdown;

/// The live watchers and what the handler has seen.
struct Watchers {
    /// The flags to raise, each with the id of its watch.
    live: Vec<(u64, Shutdown)>,
    /// The id of the next watch.
    next_id: u64,
    /// A Ctrl-C has been handled since the first of the live watchers started.
    received: bool,
}

/// Taken by the handler (with the system's console lock held): never held across a call
/// to `SetConsoleCtrlHandler` nor across [`Shutdown::trigger`].
static WATCHERS: Mutex<Watchers> = Mutex::new(Watchers {
    live: Vec::new(),
    next_id: 0,
    received: false,
});

/// Whether [`handler`] is installed (it then stays for the life of the process). Held
/// across `SetConsoleCtrlHandler`; the handler never takes it, and it is never held
/// together with [`WATCHERS`].
static INSTALLED: Mutex<bool> = Mutex::new(false);

fn watchers() -> std::sync::MutexGuard<'static, Watchers> {
    // A panic while the lock was held left the list consistent (every change is one
    // push or remove).
    WATCHERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Installs [`handler`] for the process, the first time only; a failure is retried by
/// the next call.
///
/// # Errors
/// `SetConsoleCtrlHandler` fails.
fn install_handler() -> io::Result<()> {
    // A panic while the lock was held left a plain bool.
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*installed {
        // SAFETY: `handler` is a function of the signature the system calls, valid for
        // the life of the process (it is never removed).
        if unsafe { SetConsoleCtrlHandler(Some(handler), 1) } == 0 {
            return Err(io::Error::last_os_error());
        }
        *installed = true;
    }
    Ok(())
}

/// One flag watched for Ctrl-C until dropped.
#[must_use = "dropping the watch stops watching for Ctrl-C"]
pub(crate) struct CtrlCWatch {
    id: u64,
}

impl fmt::Debug for CtrlCWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CtrlCWatch").field("id", &self.id).finish()
    }
}

/// Starts watching Ctrl-C for `shutdown`; the first watch of the process installs the
/// handler, which stays installed (and passes events on while no watch is alive).
///
/// # Errors
/// `SetConsoleCtrlHandler` fails.
pub(crate) fn watch(shutdown: Shutdown) -> io::Result<CtrlCWatch> {
    install_handler()?;
    let mut watchers = watchers();
    if watchers.live.is_empty() {
        watchers.received = false;
    }
    let id = watchers.next_id;
    watchers.next_id += 1;
    watchers.live.push((id, shutdown));
    Ok(CtrlCWatch { id })
}

impl Drop for CtrlCWatch {
    fn drop(&mut self) {
        // The handler stays installed: with no watcher left it returns FALSE.
        watchers().live.retain(|(id, _)| *id != self.id);
    }
}

/// What the handler does with a control event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Not ours (another event, or no watcher): the next handler decides.
    Pass,
    /// The flags were raised; the process goes on.
    Triggered,
    /// A second Ctrl-C: the process ends at once.
    Exit,
}

/// Decides, and raises the flags, for one control event. The flags are triggered after
/// the watcher list is released (a waker may do anything, a watch or a drop included).
pub(crate) fn on_event(event: u32) -> Action {
    if event != CTRL_C_EVENT && event != CTRL_BREAK_EVENT {
        return Action::Pass;
    }
    let to_trigger: Vec<Shutdown> = {
        let mut watchers = watchers();
        if watchers.live.is_empty() {
            return Action::Pass;
        }
        if watchers.received {
            return Action::Exit;
        }
        watchers.received = true;
        watchers
            .live
            .iter()
            .map(|(_, shutdown)| shutdown.clone())
            .collect()
    };
    for shutdown in to_trigger {
        shutdown.trigger();
    }
    Action::Triggered
}

/// The console control handler.
///
/// # Safety
/// Called by the system only, with a control event number.
unsafe extern "system" fn handler(event: u32) -> BOOL {
    match on_event(event) {
        Action::Pass => 0,
        Action::Triggered => 1,
        Action::Exit => {
            // Not `eprintln!`, which panics when standard error is closed (and a panic
            // out of this `extern "system"` function aborts): a failed write is ignored.
            let _ = writeln!(io::stderr(), "executor: second Ctrl-C: exiting at once");
            std::process::exit(STATUS_CONTROL_C_EXIT)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, MutexGuard, Once, mpsc};
    use std::thread;
    use std::time::{Duration, Instant};

    use windows_sys::Win32::System::Console::{CTRL_CLOSE_EVENT, GenerateConsoleCtrlEvent};

    use super::*;

    /// The watcher list and the handler are process-wide: the tests that use them run
    /// one at a time.
    fn serial() -> MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Events that no handler of ours handled (they reached [`fallback`]).
    static FALLBACK_EVENTS: AtomicUsize = AtomicUsize::new(0);

    /// Handles every event that reaches it, so that the default action (ending the
    /// process) never runs in the tests.
    unsafe extern "system" fn fallback(_event: u32) -> BOOL {
        FALLBACK_EVENTS.fetch_add(1, Ordering::SeqCst);
        1
    }

    /// Installs [`fallback`] behind [`handler`] (handlers run last installed first).
    fn install_fallback_behind_handler() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let mut installed = INSTALLED
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if *installed {
                // SAFETY: removes `handler`, to be added again in front of `fallback`;
                // no test sends an event meanwhile (the tests that do are serial).
                assert_ne!(unsafe { SetConsoleCtrlHandler(Some(handler), 0) }, 0);
                *installed = false;
            }
            // SAFETY: `fallback` has the signature the system calls and lives as long
            // as the process.
            assert_ne!(unsafe { SetConsoleCtrlHandler(Some(fallback), 1) }, 0);
        });
        install_handler().unwrap();
    }

    /// The whole life of the watch in one test: the watcher list is process-wide.
    #[test]
    fn ctrl_c_triggers_every_watched_flag_once_then_asks_to_exit() {
        let _serial = serial();
        let first = Shutdown::new();
        let second = Shutdown::new();
        let watch_first = watch(first.clone()).unwrap();
        let watch_second = watch(second.clone()).unwrap();
        assert_eq!(on_event(CTRL_CLOSE_EVENT), Action::Pass);
        assert!(!first.is_triggered() && !second.is_triggered());
        assert_eq!(on_event(CTRL_C_EVENT), Action::Triggered);
        assert!(first.is_triggered() && second.is_triggered());
        assert_eq!(on_event(CTRL_BREAK_EVENT), Action::Exit);
        drop(watch_first);
        assert_eq!(on_event(CTRL_C_EVENT), Action::Exit, "a watcher is left");
        drop(watch_second);
        assert_eq!(on_event(CTRL_C_EVENT), Action::Pass, "no watcher left");

        // A new watch starts afresh.
        let third = Shutdown::new();
        let watch_third = watch(third.clone()).unwrap();
        assert_eq!(on_event(CTRL_BREAK_EVENT), Action::Triggered);
        assert!(third.is_triggered());
        drop(watch_third);
    }

    /// A waker run by the trigger may watch or drop a watch: the list is not locked then
    /// (it was, and this deadlocked on the non-reentrant mutex).
    #[test]
    fn a_triggered_flag_may_watch_and_drop_watches_from_its_waiters() {
        let _serial = serial();
        let shutdown = Shutdown::new();
        let watch_outer = watch(shutdown.clone()).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = {
            let shutdown = shutdown.clone();
            thread::spawn(move || {
                let (tx, rx) = mpsc::channel::<()>();
                // The waker of this future watches and drops a watch when woken.
                struct Rewatch(mpsc::Sender<()>);
                impl std::task::Wake for Rewatch {
                    fn wake(self: Arc<Self>) {
                        drop(watch(Shutdown::new()).unwrap());
                        let _ = self.0.send(());
                    }
                }
                let waker = std::task::Waker::from(Arc::new(Rewatch(tx)));
                let mut context = std::task::Context::from_waker(&waker);
                let mut wait = std::pin::pin!(shutdown.wait());
                assert!(wait.as_mut().poll(&mut context).is_pending());
                done_tx.send(()).unwrap();
                rx.recv_timeout(Duration::from_secs(60)).unwrap();
            })
        };
        done_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let (event_tx, event_rx) = mpsc::channel();
        thread::spawn(move || event_tx.send(on_event(CTRL_C_EVENT)));
        let action = event_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the handler deadlocked: it woke a waker with the watcher list locked");
        assert_eq!(action, Action::Triggered);
        waiter.join().unwrap();
        drop(watch_outer);
    }

    /// The console's event dispatcher, `CtrlRoutine` (exported by kernelbase, on Windows
    /// and in wine): the function the console starts a thread at for each event, which
    /// calls the handlers with the console lock held.
    fn dispatcher() -> Option<unsafe extern "system" fn(*mut c_void) -> u32> {
        #[link(name = "kernel32")]
        unsafe extern "system" {
            fn GetModuleHandleA(name: *const u8) -> *mut c_void;
            fn GetProcAddress(module: *mut c_void, name: *const u8) -> *mut c_void;
        }
        // SAFETY: a NUL-terminated name; kernelbase is loaded in every process.
        let module = unsafe { GetModuleHandleA(c"kernelbase.dll".as_ptr().cast()) };
        if module.is_null() {
            return None;
        }
        // SAFETY: a module handle from above and a NUL-terminated name.
        let routine = unsafe { GetProcAddress(module, c"CtrlRoutine".as_ptr().cast()) };
        // SAFETY: `CtrlRoutine` is a thread routine: one pointer-sized argument (the
        // event), a u32 result, the system calling convention.
        (!routine.is_null()).then(|| unsafe {
            std::mem::transmute::<*mut c_void, unsafe extern "system" fn(*mut c_void) -> u32>(
                routine,
            )
        })
    }

    /// Delivers one Ctrl-Break: through the console's dispatcher called on a new thread,
    /// as the console does (wine's `GenerateConsoleCtrlEvent` fails with
    /// `ERROR_INVALID_HANDLE` when run from cargo, with or without a terminal and with a
    /// fresh `AllocConsole`), else through `GenerateConsoleCtrlEvent`.
    fn send_ctrl_break() {
        match dispatcher() {
            Some(routine) => {
                // The event number travels as the thread argument.
                let event = CTRL_BREAK_EVENT as usize;
                thread::spawn(move || {
                    // SAFETY: the dispatcher takes the event as its argument, and runs
                    // the handlers as on a console's thread.
                    unsafe { routine(std::ptr::without_provenance_mut(event)) }
                });
            }
            None => {
                // SAFETY: plain arguments; group 0 is every process of this console.
                let sent = unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, 0) };
                assert_ne!(
                    sent,
                    0,
                    "GenerateConsoleCtrlEvent: {}",
                    io::Error::last_os_error()
                );
            }
        }
    }

    /// Ctrl-Break events through the console's dispatcher (which calls the handlers with
    /// its console lock held) while another thread creates and drops watches (which
    /// installed and removed the handler, taking that lock with the watcher list locked:
    /// a lock-order deadlock). Each event must reach the live watch or, with none alive,
    /// pass to the next handler; the whole test runs under a timeout.
    #[test]
    fn ctrl_break_through_the_console_while_watches_come_and_go() {
        let _serial = serial();
        install_fallback_behind_handler();
        let (done_tx, done_rx) = mpsc::channel();
        let body = thread::spawn(move || {
            let counts = events_while_watches_come_and_go();
            let _ = done_tx.send(());
            counts
        });
        match done_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(()) => {
                let (reached_watch, passed) = body.join().unwrap();
                eprintln!("Ctrl-Break events: {reached_watch} raised a watch, {passed} passed");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The body panicked: report its panic.
                body.join().unwrap();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("deadlock: Ctrl-Break events while watches come and go did not finish")
            }
        }
    }

    /// Returns how many events reached a watch and how many passed.
    fn events_while_watches_come_and_go() -> (usize, usize) {
        const ROUNDS: usize = 200;
        // The flag the churning thread's watches raise; replaced each round.
        let current = Arc::new(Mutex::new(Shutdown::new()));
        let iterations = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (current, iterations, stop) = (current.clone(), iterations.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let flag = current.lock().unwrap().clone();
                    drop(watch(flag).unwrap());
                    iterations.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let (mut reached_watch, mut passed) = (0, 0);
        for _ in 0..ROUNDS {
            let flag = Shutdown::new();
            *current.lock().unwrap() = flag.clone();
            // Every watch alive from here on raises `flag`.
            let seen = iterations.load(Ordering::SeqCst);
            while iterations.load(Ordering::SeqCst) < seen + 2 {
                thread::yield_now();
            }
            // The previous event was handled (or passed): the next one is a first.
            watchers().received = false;
            let fallback_before = FALLBACK_EVENTS.load(Ordering::SeqCst);
            send_ctrl_break();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if flag.is_triggered() {
                    reached_watch += 1;
                    break;
                }
                if FALLBACK_EVENTS.load(Ordering::SeqCst) > fallback_before {
                    passed += 1;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a Ctrl-Break event was never handled"
                );
                thread::sleep(Duration::from_millis(1));
            }
        }
        stop.store(true, Ordering::SeqCst);
        churn.join().unwrap();
        assert_eq!(reached_watch + passed, ROUNDS);
        (reached_watch, passed)
    }
}
