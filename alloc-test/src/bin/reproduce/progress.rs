//! The progress bar: what runs now, how far the run is, and the time left.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// A progress line on standard error (redrawn in place on a terminal, one line per step
/// otherwise).
#[derive(Debug)]
pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    terminal: bool,
}

impl Progress {
    /// A bar for `total` steps.
    pub fn new(total: usize) -> Progress {
        Progress {
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Announces the step about to run.
    pub fn step(&mut self, what: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if self.done == 0 {
            "?".to_owned()
        } else {
            let seconds =
                elapsed / self.done as f64 * (self.total - self.done.min(self.total)) as f64;
            format!(
                "{}m{:02}s",
                (seconds / 60.0) as u64,
                (seconds % 60.0) as u64
            )
        };
        let width = 30;
        let filled = width * self.done.min(self.total) / self.total;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
        let line = format!("[{bar}] {}/{} left ~{left} | {what}", self.done, self.total);
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
        self.done += 1;
    }

    /// Ends the bar.
    pub fn finish(&mut self) {
        if self.terminal {
            eprintln!();
        }
    }
}
