//! Ctrl-C and Ctrl-Break on Windows: a console control handler that raises the
//! [`Shutdown`] flags of the live watchers, as the SIGINT/SIGTERM watcher does on Unix.
//!
//! `SetConsoleCtrlHandler` runs the handler on a thread the system starts for each
//! event. The first Ctrl-C or Ctrl-Break while a watcher is alive triggers every
//! watched flag and is handled (the process goes on and drains); a second one while a
//! watcher is still alive ends the process at once with `STATUS_CONTROL_C_EXIT`, the
//! status the default handler gives. When the last watcher is dropped the handler is
//! removed and Ctrl-C has its default action again. Console close, logoff and system
//! shutdown events are left to the other handlers and the default one (the system ends
//! the process when they return): they are not Ctrl-C.

use std::fmt;
use std::io;
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

static WATCHERS: Mutex<Watchers> = Mutex::new(Watchers {
    live: Vec::new(),
    next_id: 0,
    received: false,
});

fn watchers() -> std::sync::MutexGuard<'static, Watchers> {
    // A panic while the lock was held left the list consistent (every change is one
    // push or remove).
    WATCHERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Starts watching Ctrl-C for `shutdown`; installs the handler for the first watch.
///
/// # Errors
/// `SetConsoleCtrlHandler` fails.
pub(crate) fn watch(shutdown: Shutdown) -> io::Result<CtrlCWatch> {
    let mut watchers = watchers();
    if watchers.live.is_empty() {
        // SAFETY: `handler` is a function of the signature the system calls, valid for
        // the life of the process.
        if unsafe { SetConsoleCtrlHandler(Some(handler), 1) } == 0 {
            return Err(io::Error::last_os_error());
        }
        watchers.received = false;
    }
    let id = watchers.next_id;
    watchers.next_id += 1;
    watchers.live.push((id, shutdown));
    Ok(CtrlCWatch { id })
}

impl Drop for CtrlCWatch {
    fn drop(&mut self) {
        let mut watchers = watchers();
        watchers.live.retain(|(id, _)| *id != self.id);
        if watchers.live.is_empty() {
            // SAFETY: removes the handler installed by the first watch; a failure leaves
            // it installed, and with no watcher it handles nothing (returns FALSE).
            unsafe { SetConsoleCtrlHandler(Some(handler), 0) };
        }
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

/// Decides, and raises the flags, for one control event.
pub(crate) fn on_event(event: u32) -> Action {
    if event != CTRL_C_EVENT && event != CTRL_BREAK_EVENT {
        return Action::Pass;
    }
    let mut watchers = watchers();
    if watchers.live.is_empty() {
        return Action::Pass;
    }
    if watchers.received {
        return Action::Exit;
    }
    watchers.received = true;
    for (_, shutdown) in &watchers.live {
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
            eprintln!("executor: second Ctrl-C: exiting at once");
            std::process::exit(STATUS_CONTROL_C_EXIT)
        }
    }
}

#[cfg(test)]
mod tests {
    use windows_sys::Win32::System::Console::CTRL_CLOSE_EVENT;

    use super::*;

    /// The whole life of the watch in one test: the watcher list is process-wide.
    #[test]
    fn ctrl_c_triggers_every_watched_flag_once_then_asks_to_exit() {
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
}
