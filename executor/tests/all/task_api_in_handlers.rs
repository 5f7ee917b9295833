//! Handlers use the task API inside their requests' arenas: a `JoinSet` of spawned
//! tasks, an abort of a task blocked for ever, a `JoinSet` dropped with tasks in it and
//! `spawn_blocking`. The tasks and the blocking closures run outside any arena, and
//! every arena comes back once the requests are answered: nothing the task API keeps
//! (join records, a set's wakers and ready list, queued closures) pins one.

use http::{Request, StatusCode};
use pagekeep_executor::{JoinError, JoinSet, RequestBody};

use crate::support::*;

async fn task_api(request: Request<RequestBody>) -> Response {
    let body = match request.uri().path() {
        "/set" => {
            let mut set = JoinSet::new();
            for n in 0..16_u64 {
                set.spawn(async move {
                    let values = vec![n; 100];
                    (values.iter().sum::<u64>(), pagekeep_arena::in_arena())
                });
            }
            let (mut total, mut in_an_arena) = (0, false);
            while let Some(result) = set.join_next().await {
                let (sum, routed) = result.unwrap();
                total += sum;
                in_an_arena |= routed;
            }
            format!("{total} {in_an_arena}")
        }
        "/abort" => {
            let task = pagekeep_executor::spawn(std::future::pending::<()>());
            task.abort();
            match task.await {
                Err(JoinError::Aborted) => "aborted".to_owned(),
                other => format!("{other:?}"),
            }
        }
        "/drop-set" => {
            let mut set = JoinSet::new();
            for _ in 0..8 {
                set.spawn(std::future::pending::<()>());
            }
            drop(set);
            "dropped".to_owned()
        }
        "/blocking" => {
            let (routed, worker) = pagekeep_executor::spawn_blocking(|| {
                let probe = vec![1_u8; 1000];
                drop(probe);
                (
                    pagekeep_arena::in_arena(),
                    pagekeep_executor::current_worker(),
                )
            })
            .await
            .unwrap();
            format!("{routed} {worker:?}")
        }
        _ => return routes(request).await,
    };
    text(StatusCode::OK, body)
}

type Response = http::Response<TestBody>;

#[test]
fn join_sets_aborts_and_blocking_closures_in_handlers_leave_no_arena_behind() {
    let server = start_with(builder(), task_api);
    for _ in 0..3 {
        for (path, expected) in [
            ("/set", "12000 false"),
            ("/abort", "aborted"),
            ("/drop-set", "dropped"),
            ("/blocking", "false None"),
        ] {
            let (status, body) = get(server.address, path);
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body, expected.as_bytes(), "{path}");
        }
    }
    server.assert_no_connection_left();
    // Dropping the server checks that every arena went back to its pool.
    drop(server);
}
