//! The scenarios other tests run in a child process (see `support::ChildServer`):
//! `entry` is ignored, and does nothing unless the child's environment names a
//! scenario.

use std::time::Duration;

use crate::support::*;
use http::{Request, Response, StatusCode};

/// Serves `handler` with signal handling on, printing where it listens; returns when
/// the server has shut down.
fn serve<H: pagekeep_executor::Handler>(builder: pagekeep_executor::ServerBuilder, handler: H) {
    let server = builder
        .workers(2)
        .handle_signals(true)
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind");
    println!("listening on {}", server.local_addr());
    server.serve(handler).expect("serve");
    println!("served");
}

/// `/block` blocks its worker thread for an hour (announcing it first), `/await`
/// awaits an hour; anything else is the usual routes.
async fn stuck(request: Request<pagekeep_executor::RequestBody>) -> Response<TestBody> {
    match request.uri().path() {
        "/block" => {
            println!("blocking");
            std::thread::sleep(Duration::from_secs(3600));
            text(StatusCode::OK, "unblocked")
        }
        "/await" => {
            println!("awaiting");
            pagekeep_executor::sleep(Duration::from_secs(3600)).await;
            text(StatusCode::OK, "awaited")
        }
        "/grow" => {
            // 20 MiB in one poll, far past the budget (and the arena's spill cap).
            let mut grown = Vec::new();
            for _ in 0..(20 << 20) / 4096 {
                grown.extend_from_slice(&[1u8; 4096]);
            }
            text(StatusCode::OK, format!("{}", grown.len()))
        }
        "/huge" => {
            // 100 MiB in one allocation, past the spill cap (64 times the 1 MiB arena).
            let huge = vec![1u8; 100 << 20];
            text(StatusCode::OK, format!("{}", huge.len()))
        }
        _ => routes(request).await,
    }
}

/// Lowers this process's soft limit of open descriptors to `extra` above those open.
fn limit_descriptors(extra: u64) {
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let limit = libc::rlimit {
        rlim_cur: open + extra,
        rlim_max: open + extra,
    };
    // SAFETY: `limit` is a valid `rlimit` for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

#[test]
#[ignore = "a server scenario, run in a child process by other tests"]
fn entry() {
    let Ok(scenario) = std::env::var(CHILD_SCENARIO) else {
        return;
    };
    let builder = pagekeep_executor::Server::builder();
    match scenario.as_str() {
        "stuck" => serve(builder.shutdown_deadline(Duration::from_millis(300)), stuck),
        "patient" => serve(builder.shutdown_deadline(Duration::from_secs(600)), stuck),
        "few-descriptors" => {
            // Room for the workers' and the listener's descriptors, and a handful of
            // connections.
            let server = builder
                .workers(1)
                .handle_signals(true)
                .bind("127.0.0.1:0".parse().unwrap())
                .expect("bind");
            limit_descriptors(8);
            println!("listening on {}", server.local_addr());
            server.serve(routes).expect("serve");
            println!("served");
        }
        "budget" => serve(
            builder
                .arena_bytes(1 << 20)
                .arenas(4)
                .shutdown_deadline(Duration::from_secs(1)),
            stuck,
        ),
        "bind-retries" => {
            // A port taken by someone else: binding it fails, again and again, as a
            // server waiting for its port to be free retries. Then another port.
            let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = taken.local_addr().unwrap();
            for _ in 0..2 * pagekeep_arena::MAX_POOLS {
                let refused = pagekeep_executor::Server::builder()
                    .workers(1)
                    .arenas(2)
                    .arena_bytes(64 << 10)
                    .bind(address);
                assert!(refused.is_err(), "the port is taken");
            }
            serve(builder.arenas(2).arena_bytes(64 << 10), routes);
        }
        "body-budget" | "no-body-budget" => {
            let budgeted = scenario == "body-budget";
            serve(
                builder
                    .max_body_bytes(64 << 20)
                    .handler_timeout(Duration::from_secs(60))
                    .body_budget(budgeted.then(|| pagekeep_executor::BodyBudget::new(8 << 20))),
                crate::uploads_past_the_body_budget::slow_checksum,
            );
        }
        "lingering" => {
            // Goes on after the server is done, as a program that cleans up does.
            serve(builder.shutdown_deadline(Duration::from_secs(1)), routes);
            println!("lingering");
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("no child scenario {other:?}"),
    }
}
