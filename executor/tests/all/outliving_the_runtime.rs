//! Sockets and sleeps used after the runtime whose worker registered them is dropped:
//! they must fail or complete, never wait for an event that no worker will deliver.

use std::time::Duration;

use pagekeep_executor::net::{TcpListener, TcpStream};
use pagekeep_executor::{Runtime, timeout};

const LIMIT: Duration = Duration::from_secs(5);

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

fn assert_driver_gone(error: &std::io::Error) {
    assert_eq!(error.kind(), std::io::ErrorKind::Other, "{error}");
    assert!(
        error.to_string().contains("has shut down"),
        "unexpected error: {error}"
    );
}

#[test]
fn a_read_after_the_registering_runtime_is_dropped_fails() {
    let first = runtime(1);
    let (client, server) = first.block_on(connected_pair());
    drop(first);
    let second = runtime(1);
    let read = second.block_on(async move {
        let mut buffer = [0u8; 8];
        timeout(LIMIT, client.read(&mut buffer)).await
    });
    let error = read
        .expect("the read waited for an event no worker will deliver")
        .unwrap_err();
    assert_driver_gone(&error);
    drop(server);
}

#[test]
fn a_read_waiting_when_the_registering_runtime_is_dropped_is_woken_with_an_error() {
    let first = runtime(1);
    let (client, server) = first.block_on(connected_pair());
    let (reader, _writer) = client.into_split();
    let second = runtime(1);
    let waiting = second.spawn(async move {
        let mut buffer = [0u8; 8];
        timeout(LIMIT, reader.read(&mut buffer)).await
    });
    // Let the read start waiting on the first runtime's reactor.
    std::thread::sleep(Duration::from_millis(50));
    drop(first);
    let read = second.block_on(waiting).unwrap();
    let error = read.expect("the waiting read was never woken").unwrap_err();
    assert_driver_gone(&error);
    drop(server);
}

#[test]
fn a_sleep_registered_on_a_dropped_runtime_fires_on_another() {
    let first = runtime(1);
    #[expect(
        clippy::async_yields_async,
        reason = "the registered sleep is handed to another worker, to be awaited there"
    )]
    let registered = first.block_on(async {
        let mut sleep = Box::pin(pagekeep_executor::sleep(Duration::from_millis(50)));
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(sleep.as_mut().poll(cx).is_pending()))
                .await;
        assert!(polled, "the sleep completed at its first poll");
        sleep
    });
    drop(first);
    let second = runtime(1);
    let fired = second.block_on(async move { timeout(LIMIT, registered).await });
    assert!(
        fired.is_ok(),
        "the sleep waited for the heap of a runtime that is gone"
    );
}
