//! Runtimes made and dropped as programs do: many in turn, and one dropped by its own
//! task (whose worker cannot join itself).

use std::sync::Arc;
use std::time::Duration;

#[test]
fn fifteen_hundred_runtimes_in_turn_each_get_their_workers() {
    // The process-wide worker table has 1024 entries: a dropped runtime gives its back.
    for round in 0..1500 {
        let runtime = pagekeep_executor::Runtime::builder()
            .workers(1)
            .build()
            .unwrap_or_else(|error| panic!("runtime {round}: {error}"));
        assert_eq!(runtime.block_on(async move { round }), round);
    }
}

#[test]
fn a_runtime_dropped_by_its_own_task_does_not_hang() {
    let runtime = Arc::new(
        pagekeep_executor::Runtime::builder()
            .workers(2)
            .build()
            .unwrap(),
    );
    let kept = Arc::clone(&runtime);
    let (sender, receiver) = std::sync::mpsc::channel();
    drop(runtime.spawn(async move {
        pagekeep_executor::sleep(Duration::from_millis(20)).await;
        // The last handle goes on one of the runtime's own workers.
        drop(kept);
        let _ = sender.send(());
    }));
    drop(runtime);
    // The worker cannot join itself: the drop leaves it to stop after this poll, and
    // the task goes on to the end of it.
    assert_eq!(receiver.recv_timeout(Duration::from_secs(10)), Ok(()));
}
