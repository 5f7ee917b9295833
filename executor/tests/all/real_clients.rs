//! Load generators we did not write, as users measure a server: wrk (HTTP/1.1 with
//! keep-alive) against the `hello` and `axum` examples, and h2load (HTTP/2, many streams
//! on each connection) in cleartext with prior knowledge and over TLS with ALPN. Every
//! request must be answered 2xx, with no socket error, and the server must serve on
//! afterwards.
//!
//! Ignored by default: they need Debian's `wrk` and `nghttp2-client` (h2load). CI
//! installs both and runs them (`.ci/run`, with `--features tls,http2 --include-ignored`).

use std::net::SocketAddr;
use std::process::Command;

use http::StatusCode;

use crate::examples::Example;
use crate::support::*;

/// What a wrk run reported.
#[derive(Debug)]
struct WrkReport {
    requests: u64,
    /// The "Socket errors: ..." line, printed only when there were any.
    socket_errors: Option<String>,
    /// The "Non-2xx or 3xx responses: N" count, printed only when there were any.
    non_2xx: u64,
    text: String,
}

/// `wrk -t1 -c16 -d2s` against `http://address/path`.
fn wrk(address: SocketAddr, path: &str) -> WrkReport {
    let output = Command::new("wrk")
        .args(["-t1", "-c16", "-d2s", &format!("http://{address}{path}")])
        .output()
        .expect("run wrk (Debian package wrk; CI installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed: {output:?}");
    // "  12345 requests in 2.00s, 1.23MB read"
    let requests = text
        .lines()
        .find_map(|line| {
            let (count, rest) = line.trim().split_once(' ')?;
            rest.starts_with("requests in")
                .then(|| count.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no request count in wrk's report:\n{text}"));
    let socket_errors = text
        .lines()
        .find(|line| line.trim().starts_with("Socket errors:"))
        .map(str::to_owned);
    let non_2xx = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map_or(0, |count| count.trim().parse().unwrap());
    WrkReport {
        requests,
        socket_errors,
        non_2xx,
        text,
    }
}

fn assert_every_request_answered(report: &WrkReport, what: &str) {
    // Two seconds of 16 connections on loopback: thousands of requests even under a
    // debug build on a loaded machine; a server that stalls answers a handful.
    assert!(
        report.requests >= 200,
        "{what}: only {} requests answered:\n{}",
        report.requests,
        report.text
    );
    assert_eq!(report.socket_errors, None, "{what}:\n{}", report.text);
    assert_eq!(report.non_2xx, 0, "{what}:\n{}", report.text);
}

#[test]
#[ignore = "needs wrk (Debian package wrk); CI installs it and runs this test"]
fn wrk_gets_every_request_answered_by_the_hello_example() {
    let (mut hello, address) = Example::start("hello");
    let report = wrk(address, "/");
    assert_every_request_answered(&report, "wrk against hello");
    assert_eq!(get(address, "/").0, StatusCode::OK);
    assert!(hello.is_running(), "the hello example exited under wrk");
}

#[cfg(feature = "tower")]
#[test]
#[ignore = "needs wrk (Debian package wrk); CI installs it and runs this test"]
fn wrk_gets_every_request_answered_by_the_axum_example() {
    let (mut axum, address) = Example::start("axum");
    // A route with a path extractor and the example's middleware, not only the root.
    let report = wrk(address, "/hello/wrk");
    assert_every_request_answered(&report, "wrk against axum");
    let (status, body) = get(address, "/hello/again");
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_empty());
    assert!(axum.is_running(), "the axum example exited under wrk");
}

/// What an h2load run reported.
#[cfg(feature = "http2")]
#[derive(Debug)]
struct H2loadReport {
    /// The "requests: N total, N started, N done, N succeeded, ..." counts.
    succeeded: u64,
    failed: u64,
    errored: u64,
    timeout: u64,
    /// The protocol spoken ("Application protocol: h2", or "h2c" in cleartext).
    protocol: Option<String>,
    /// 2xx answers, from "status codes: N 2xx, ...".
    status_2xx: u64,
    text: String,
}

/// The number before `name` in an h2load line such as `5000 total, 5000 started, ...`.
#[cfg(feature = "http2")]
fn count_before(line: &str, name: &str) -> Option<u64> {
    line.split(',').find_map(|field| {
        let (count, field_name) = field.trim().split_once(' ')?;
        (field_name == name).then(|| count.parse().ok())?
    })
}

/// `h2load -n REQUESTS -c 4 -m 10 url`.
#[cfg(feature = "http2")]
const H2LOAD_REQUESTS: u64 = 4_000;

#[cfg(feature = "http2")]
fn h2load(url: &str) -> H2loadReport {
    let requests = H2LOAD_REQUESTS.to_string();
    let output = Command::new("h2load")
        .args(["-n", &requests, "-c", "4", "-m", "10", "-t", "1", url])
        .output()
        .expect("run h2load (Debian package nghttp2-client; CI installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "h2load failed: {output:?}");
    let line = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in h2load's report:\n{text}"))
            .to_owned()
    };
    let requests = line("requests:");
    let statuses = line("status codes:");
    let field = |line: &str, name: &str| {
        count_before(line, name)
            .unwrap_or_else(|| panic!("no {name:?} count in h2load's report:\n{text}"))
    };
    H2loadReport {
        succeeded: field(&requests, "succeeded"),
        failed: field(&requests, "failed"),
        errored: field(&requests, "errored"),
        timeout: field(&requests, "timeout"),
        protocol: text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Application protocol:"))
            .map(|protocol| protocol.trim().to_owned()),
        status_2xx: field(&statuses, "2xx"),
        text,
    }
}

#[cfg(feature = "http2")]
fn assert_every_stream_answered(report: &H2loadReport, protocol: &str, what: &str) {
    assert_eq!(
        report.protocol.as_deref(),
        Some(protocol),
        "{what}:\n{}",
        report.text
    );
    assert_eq!(
        (report.failed, report.errored, report.timeout),
        (0, 0, 0),
        "{what}:\n{}",
        report.text
    );
    assert_eq!(
        report.succeeded, H2LOAD_REQUESTS,
        "{what}:\n{}",
        report.text
    );
    assert_eq!(
        report.status_2xx, H2LOAD_REQUESTS,
        "{what}:\n{}",
        report.text
    );
}

#[cfg(feature = "http2")]
#[test]
#[ignore = "needs h2load (Debian package nghttp2-client); CI installs it and runs this test"]
fn h2load_gets_every_stream_answered_over_h2c() {
    let server = start(builder());
    let report = h2load(&format!("http://{}/hello", server.address));
    assert_every_stream_answered(&report, "h2c", "h2load over h2c");
    assert_eq!(get(server.address, "/hello").0, StatusCode::OK);
    // h2load closed its connections: none is left, and every stream's arena went back.
    server.assert_no_connection_left();
    server.assert_arenas_returned();
}

#[cfg(all(feature = "http2", feature = "tls"))]
#[test]
#[ignore = "needs h2load (Debian package nghttp2-client); CI installs it and runs this test"]
fn h2load_gets_every_stream_answered_by_the_https_example_over_tls() {
    let (_https, address) = crate::tls::start_https_example();
    // h2load does not check certificates, so the example's self-signed one does.
    let report = h2load(&format!("https://{address}/"));
    assert_every_stream_answered(&report, "h2", "h2load over TLS (ALPN h2)");
}
