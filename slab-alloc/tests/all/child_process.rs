//! One of this binary's ignored tests run in a child process of its own: for tests that
//! leave a process-wide mark (a thread's exit, the registry's lock, a heap over a region
//! for the process's life) or that could hang.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child may take before it counts as hung.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the ignored test at `path` (its module path in this binary, `module::test`) in a
/// child process with the environment variable `marker` set (the test does its work only
/// where it is set), and panics with the child's output unless that test passed. A child
/// still running after a minute is killed, and counts as a failure (a hang).
pub fn run_ignored_test(marker: &str, path: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            path,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(marker, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read on threads of their own, so that a child writing more than a pipe holds does
    // not block while it is waited for.
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CHILD_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        None => panic!(
            "the child {path} hung (killed after {CHILD_DEADLINE:?}):\nstdout: {stdout}\nstderr: {stderr}"
        ),
        Some(status) => assert!(
            status.success() && stdout.contains("1 passed"),
            "the child {path} failed ({status}):\nstdout: {stdout}\nstderr: {stderr}"
        ),
    }
}
