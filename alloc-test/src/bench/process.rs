//! What `/proc` says about another process: CPU time used and resident memory.

use std::time::Duration;

/// User plus system CPU time of process `pid` so far (`utime + stime` of
/// `/proc/PID/stat`, in clock ticks of usually 10 ms), or `None` when it cannot be read
/// (always off Unix: the benchmarks that read it run on Linux).
#[cfg(not(unix))]
pub fn cpu_time(_pid: u32) -> Option<Duration> {
    None
}

/// User plus system CPU time of process `pid` so far (`utime + stime` of
/// `/proc/PID/stat`, in clock ticks of usually 10 ms), or `None` when it cannot be read.
#[cfg(unix)]
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces); utime and
    // stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: `sysconf` has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&ticks| ticks > 0)?;
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/PID/status`), or `None`
/// when it cannot be read.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Bytes of process `pid` given back with `MADV_FREE` that the kernel has not reclaimed
/// yet (`LazyFree` of `/proc/PID/smaps_rollup`): still counted in `VmRSS`, but dropped
/// without any write-back as soon as the kernel needs the memory. `None` when it cannot
/// be read.
pub fn lazy_free_bytes(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "LazyFree:")
}

/// The `name   N kB` line of a `/proc` file, in bytes.
fn kib_field(file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|line| line.starts_with(name))?;
    let kibibytes: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kibibytes * 1024)
}

// Linux's `/proc`. (Under wine, `/proc` is the host's, where a Windows process id names
// nothing.)
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_time(pid).is_some());
        let resident = resident_bytes(pid).expect("VmRSS");
        assert!(resident > 0);
        assert!(lazy_free_bytes(pid).is_some());
    }
}
