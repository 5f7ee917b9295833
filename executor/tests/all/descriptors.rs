//! Running out of file descriptors: accepts fail (EMFILE) while the connections already
//! open go on being served, the log says so once per episode, with a count, and the
//! server accepts again when descriptors are free.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

fn hello(stream: &mut std::net::TcpStream) -> Ended {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    read_until(stream, &mut received, CLIENT_TIMEOUT, |bytes| {
        count(bytes, "hello") == 1
    })
}

#[test]
fn out_of_descriptors_backs_off_logs_once_and_keeps_serving() {
    // One worker, 8 descriptors to spare.
    let mut child = ChildServer::start("few-descriptors");
    let mut served = raw(child.address);
    assert_eq!(hello(&mut served), Ended::Done);

    // More connections than descriptors: the kernel completes them, the server cannot
    // accept them all.
    let flood: Vec<_> = (0..30)
        .map(|_| std::net::TcpStream::connect(child.address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // The connection already open is still served during the episode.
    assert_eq!(hello(&mut served), Ended::Done);
    drop(flood);
    // Descriptors free again: new connections are accepted (those of the flood first,
    // each seen closed at once).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut fresh = raw(child.address);
        if hello(&mut fresh) == Ended::Done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never accepted again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Accepts keep working for a second: the episode is over (and logged so at the
    // next accept).
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(hello(&mut raw(child.address)), Ended::Done);
    assert_eq!(hello(&mut raw(child.address)), Ended::Done);
    drop(served);

    child.signal(libc::SIGTERM);
    assert!(child.wait_exit(Duration::from_secs(10)).is_some());
    let stderr = child.stderr();
    let failures = stderr
        .lines()
        .filter(|line| line.contains("accept failed"))
        .count();
    assert_eq!(
        failures, 1,
        "one line per episode, not per failure:\n{stderr}"
    );
    let recovered = stderr
        .lines()
        .find(|line| line.contains("accepting again after"))
        .unwrap_or_else(|| panic!("no line saying the episode ended:\n{stderr}"));
    let count: u64 = recovered
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no count in {recovered:?}"));
    assert!(count >= 1, "{recovered}");
}
