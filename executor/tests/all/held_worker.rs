//! A worker held by a handler that computes for seconds without yielding (issue 17):
//! new connections are neither balanced onto it nor left waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::{builder, get, routes, spawn_clients, start_with, text};

/// With one of two workers held by a 2 s computation, 20 requests on new connections
/// are all answered before the computation ends.
#[test]
fn new_connections_are_served_while_a_handler_holds_a_worker() {
    let spinning = Arc::new(AtomicBool::new(false));
    let server = start_with(builder(), {
        let spinning = Arc::clone(&spinning);
        move |request: http::Request<pagekeep_executor::RequestBody>| {
            let spinning = Arc::clone(&spinning);
            async move {
                if request.uri().path() == "/spin" {
                    spinning.store(true, Ordering::SeqCst);
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_secs(2) {
                        std::hint::spin_loop();
                    }
                    spinning.store(false, Ordering::SeqCst);
                    return text(StatusCode::OK, "spun");
                }
                routes(request).await
            }
        }
    });
    let address = server.address;
    let spinning_now = Arc::clone(&spinning);
    let spinner = std::thread::spawn(move || get(address, "/spin"));
    let waiting_since = Instant::now();
    while !spinning.load(Ordering::SeqCst) {
        assert!(
            waiting_since.elapsed() < Duration::from_secs(10),
            "the spin never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Long enough for the worker to count as held.
    std::thread::sleep(Duration::from_millis(50));
    // 20 connections at once: counted by connections served, the held worker (one)
    // would look the least busy after a few.
    let answered_during_spin = crate::support::client_runtime().block_on(async move {
        let clients = spawn_clients(address, 20, "/hello", 1);
        for client in clients {
            for (status, body) in client.await.unwrap() {
                assert_eq!(status, StatusCode::OK);
                assert_eq!(&body[..], b"hello");
            }
        }
        spinning_now.load(Ordering::SeqCst)
    });
    assert_eq!(spinner.join().unwrap().0, StatusCode::OK);
    assert!(
        answered_during_spin,
        "requests answered only once the held worker was free"
    );
}
