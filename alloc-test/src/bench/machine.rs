//! The machine a run happened on, written at the head of every page: the CPU, its cores,
//! the kernel, the load, and whether two threads really run at once. The load and the
//! two-thread spin control are taken again before every group ([`Machine::recheck`]), so
//! each page says what the machine was doing when its figures were measured.

use std::fs;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What is known of the machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical cores available.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Load average (1, 5, 15 minutes) when the machine was last checked.
    pub load: String,
    /// `rustc --version`.
    pub rustc: String,
    /// Two threads spinning together did this many times the work of one (2.0 is ideal).
    pub two_thread_scaling: f64,
    /// The spin control and load average of the further process launches whose rounds
    /// were merged into the same figures (`--full`), in launch order.
    pub other_launches: Vec<(f64, String)>,
}

impl Machine {
    /// Reads the machine's description and runs the two-thread spin control.
    pub fn describe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, name)| name.trim().to_owned());
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(
            |_| "unknown".to_owned(),
            |release| release.trim().to_owned(),
        );
        let rustc = Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map_or_else(|| "unknown".to_owned(), |version| version.trim().to_owned());
        Machine {
            cpu,
            cores,
            kernel,
            load: load_average(),
            rustc,
            two_thread_scaling: two_thread_scaling(),
            other_launches: Vec::new(),
        }
    }

    /// The same machine checked again now: the load average (read before the spin
    /// control, which would raise it) and the two-thread spin control. Run before each
    /// group.
    pub fn recheck(&self) -> Machine {
        let load = load_average();
        Machine {
            load,
            two_thread_scaling: two_thread_scaling(),
            ..self.clone()
        }
    }

    /// Whether the machine was busy when last checked: the spin control found the
    /// second core taken. Then every timed figure, one-thread ones too, is marked
    /// unreliable (a busy core preempts a lone thread as well).
    pub fn busy(&self) -> bool {
        !self.runs_two_threads_at_once()
            || self
                .other_launches
                .iter()
                .any(|(scaling, _)| *scaling < Self::QUIET_SCALING)
    }

    /// The line a further launch prints for the launch that merges it: its spin control
    /// and load average.
    pub fn launch_line(&self) -> String {
        format!("machine {} {}", self.two_thread_scaling, self.load)
    }

    /// Reads a [`Machine::launch_line`] back: (spin control, load average).
    pub fn parse_launch_line(line: &str) -> Option<(f64, String)> {
        let rest = line.strip_prefix("machine ")?;
        let (scaling, load) = rest.split_once(' ')?;
        Some((scaling.parse().ok()?, load.to_owned()))
    }

    /// Two spinning threads must get this many times the work of one for the machine
    /// to count as quiet.
    pub const QUIET_SCALING: f64 = 1.8;

    /// Whether multi-thread figures can be trusted: two spinning threads got at least
    /// 1.8 times the work of one.
    pub fn runs_two_threads_at_once(&self) -> bool {
        self.two_thread_scaling >= Self::QUIET_SCALING
    }

    /// The markdown lines describing the machine.
    pub fn markdown(&self) -> String {
        let scaling = if self.runs_two_threads_at_once() {
            format!(
                "{:.2}x (two threads ran at once: the machine was not busy)",
                self.two_thread_scaling
            )
        } else {
            format!(
                "{:.2}x: **the machine was busy: every timed figure is unreliable** (the \
                 other core was taken)",
                self.two_thread_scaling
            )
        };
        let mut launches = String::new();
        for (number, (scaling, load)) in self.other_launches.iter().enumerate() {
            launches.push_str(&format!(
                "- launch {} of this group: load average {load}, spin control {scaling:.2}x{}\n",
                number + 2,
                if *scaling < Self::QUIET_SCALING {
                    " (**busy**)"
                } else {
                    ""
                }
            ));
        }
        format!(
            "- CPU: {} ({} logical cores); the figures hold for this CPU, not for another\n\
             - kernel: Linux {}\n- load average (1, 5, 15 min) before these figures: {}\n\
             - compiler: {}\n- two-thread spin control before these figures: {}\n{launches}",
            self.cpu, self.cores, self.kernel, self.load, self.rustc, scaling
        )
    }
}

/// The load average (1, 5, 15 minutes), or "unknown".
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|load| {
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Spins one thread, then two, for the same time, and compares the work done.
fn two_thread_scaling() -> f64 {
    fn spin(threads: usize, duration: Duration) -> u64 {
        let stop = AtomicBool::new(false);
        let total = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let mut count = 0u64;
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..1000 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                        count += 1;
                    }
                    std::hint::black_box(x);
                    total.fetch_add(count, Ordering::Relaxed);
                });
            }
            let start = Instant::now();
            while start.elapsed() < duration {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
        });
        total.into_inner()
    }
    let duration = Duration::from_millis(300);
    let one = spin(1, duration).max(1);
    let two = spin(2, duration);
    two as f64 / one as f64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::Machine;

    pub(crate) fn machine(two_thread_scaling: f64) -> Machine {
        Machine {
            cpu: "a CPU".into(),
            cores: 2,
            kernel: "6.1".into(),
            load: "0.10 0.20 0.30".into(),
            rustc: "rustc".into(),
            two_thread_scaling,
            other_launches: Vec::new(),
        }
    }

    #[test]
    fn a_launch_line_reads_back_and_a_busy_launch_makes_the_group_busy() {
        let quiet = machine(1.97);
        let line = quiet.launch_line();
        assert_eq!(
            Machine::parse_launch_line(&line),
            Some((1.97, "0.10 0.20 0.30".to_owned()))
        );
        assert_eq!(Machine::parse_launch_line("0 0 0: 1.0"), None);
        assert!(!quiet.busy());
        let mut merged = quiet.clone();
        merged.other_launches.push((1.3, "1.9 1.5 1.2".into()));
        assert!(merged.busy());
        assert!(merged.markdown().contains("launch 2 of this group"));
        assert!(machine(1.2).busy());
        assert!(quiet.markdown().contains("CPU: a CPU"));
    }
}
