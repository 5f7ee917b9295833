//! The examples keep the promises their documentation makes, run as a user runs them:
//! the example's own binary, driven over loopback.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// The example binary `name`, next to this test binary (`cargo test -p pagekeep-executor` builds
/// the examples with the tests); built first when only this test binary was, or when
/// it is older than this test binary (`cargo test --test all` after a change to the
/// crate would otherwise run an example built before the change; when it is fresh,
/// cargo finds nothing to do).
fn example(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    let profile = test_binary.parent().unwrap().parent().unwrap();
    let binary = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let modified = |path: &std::path::Path| path.metadata().and_then(|meta| meta.modified()).ok();
    let stale = match (modified(&binary), modified(&test_binary)) {
        (Some(example), Some(test)) => example < test,
        _ => true,
    };
    // Under wine this test binary cannot wait on the host's cargo (a Linux program:
    // `CreateProcess` starts it, and waiting on it fails with `ERROR_INVALID_HANDLE`).
    // There the script that runs the tests builds the examples first (`.ci/windows.sh`,
    // `cargo build --examples`, which keeps them up to date with their sources), and
    // only their presence is checked.
    if cfg!(windows) {
        assert!(
            binary.exists(),
            "example {name} is missing: build it first \
             (`cargo build -p pagekeep-executor --examples`)"
        );
        return binary;
    }
    if stale {
        // The profile this test binary was built with, named as cargo names it.
        let profile = match profile.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "pagekeep-executor",
                "--example",
                name,
                "--profile",
                profile,
            ])
            .status()
            .expect("run cargo");
        assert!(status.success(), "cannot build example {name}");
    }
    binary
}

/// An example server on a free port with 2 workers; killed on drop.
pub(crate) struct Example(Child);

impl Example {
    /// Starts example `name` and returns it with the address it printed.
    pub(crate) fn start(name: &str) -> (Self, SocketAddr) {
        let child = Command::new(example(name))
            .args(["0", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        // Killed on drop from here on, a failed start included.
        let mut example = Self(child);
        let mut stdout = BufReader::new(example.0.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ' ']).next())
            .and_then(|address| address.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        (example, address)
    }
}

impl Example {
    /// Whether the example's process is still running (it has not exited or crashed).
    pub(crate) fn is_running(&mut self) -> bool {
        self.0
            .try_wait()
            .expect("query the example's process")
            .is_none()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// POSTs `body` to `/echo`; the status line and the response body.
fn post_echo(address: SocketAddr, body: &[u8]) -> (String, Vec<u8>) {
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let (response, ended) = raw_exchange(address, &request);
    assert_eq!(ended, Ended::Closed, "{response}");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.as_bytes().to_vec())
}

#[test]
fn the_echo_example_echoes_every_valid_body_within_its_limit() {
    // "a valid JSON document gets it back; invalid JSON gets 400, a body over 64 KiB
    // gets 413": the largest documents within the limit, of the shapes that take the
    // most memory once parsed, are valid too.
    let (_echo, address) = Example::start("echo");
    let limit = 64 << 10;
    let mut numbers = b"[0".to_vec();
    while numbers.len() + 3 <= limit {
        numbers.extend_from_slice(b",0");
    }
    numbers.push(b']');
    let mut arrays = b"[[]".to_vec();
    while arrays.len() + 4 <= limit {
        arrays.extend_from_slice(b",[]");
    }
    arrays.push(b']');
    let mut objects = b"[{}".to_vec();
    while objects.len() + 4 <= limit {
        objects.extend_from_slice(b",{}");
    }
    objects.push(b']');
    for document in [&numbers, &arrays, &objects] {
        assert!(document.len() <= limit);
        let (status, body) = post_echo(address, document);
        assert_eq!(
            status,
            "HTTP/1.1 200 OK",
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(body == **document, "the echo differs from the document");
    }
    let (status, _) = post_echo(address, b"{\"unclosed\": [1, 2");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let mut too_large = numbers.clone();
    too_large.truncate(numbers.len() - 1);
    too_large.extend_from_slice(b",0,0]");
    assert!(too_large.len() > limit);
    let (status, _) = post_echo(address, &too_large);
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
}

#[cfg(feature = "tower")]
#[test]
fn the_axum_example_serves_its_routes_through_its_middleware() {
    use http::Method;
    let (_axum, address) = Example::start("axum");
    let get = |path: &str| request(Method::GET, path, "");
    let answers = exchange_on_one_connection(
        address,
        vec![
            get("/"),
            get("/hello/you"),
            request(Method::POST, "/users", r#"{"name": "ada"}"#),
            get("/users/1"),
            get("/users/2"),
            request(Method::POST, "/users", r#"{"nom": "ada"}"#),
            get("/stream?lines=3"),
            get("/stats"),
        ],
    );
    let statuses: Vec<u16> = answers
        .iter()
        .map(|answer| answer.status.as_u16())
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 201, 200, 404, 422, 200, 200],
        "{answers:?}"
    );
    assert_eq!(answers[0].body, "Hello from axum on pagekeep-executor!\n");
    assert_eq!(answers[1].body, "Hello, you!\n");
    let created: serde_json::Value = serde_json::from_slice(&answers[2].body).unwrap();
    assert_eq!(created, serde_json::json!({"id": 1, "name": "ada"}));
    let stored: serde_json::Value = serde_json::from_slice(&answers[3].body).unwrap();
    assert_eq!(stored, created);
    assert_eq!(answers[6].body, "line 0\nline 1\nline 2\n");
    assert_eq!(
        answers[6].headers.get("transfer-encoding").unwrap(),
        "chunked"
    );
    // The middleware counted the seven requests before this one, and this one.
    assert_eq!(answers[7].body, "8 requests\n");
    for answer in &answers {
        assert_eq!(
            answer.headers.get("x-served-by").unwrap(),
            "pagekeep-executor",
            "{answer:?}"
        );
    }
}
