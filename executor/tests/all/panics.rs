//! A panicking handler gets a 500; everything else carries on.

use std::time::Duration;

use crate::support::*;
use executor::client::ClientConnection;
use http::StatusCode;

#[test]
fn panic_gets_500_while_concurrent_requests_succeed() {
    let server = start(builder());
    let address = server.address;
    let results = client_runtime().block_on(async move {
        let slow = spawn_clients(address, 8, "/slow?ms=100", 1);
        executor::sleep(Duration::from_millis(20)).await;
        let mut connection = ClientConnection::connect(address, CLIENT_TIMEOUT)
            .await
            .unwrap();
        let panicked = get_on(&mut connection, "/panic").await;
        // The same connection keeps working after the 500.
        let after = get_on(&mut connection, "/hello").await;
        let mut slow_results = Vec::new();
        for handle in slow {
            slow_results.extend(handle.await.unwrap());
        }
        (panicked, after, slow_results)
    });
    let (panicked, after, slow) = results;
    assert_eq!(panicked.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(after, (StatusCode::OK, bytes::Bytes::from_static(b"hello")));
    assert_eq!(slow.len(), 8);
    for (status, body) in slow {
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow"[..]));
    }
}

#[test]
fn handler_that_panics_before_returning_a_future_gets_500() {
    let server = start_with(
        builder(),
        |_request| -> std::future::Ready<http::Response<TestBody>> {
            panic!("the handler function itself panics")
        },
    );
    for _ in 0..3 {
        let (status, _) = get(server.address, "/");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}

#[test]
fn handler_whose_destructor_panics_is_still_cancelled_cleanly() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("destructor panics on purpose");
        }
    }
    let server = start_with(
        builder().handler_timeout(Duration::from_millis(100)),
        |_request| async {
            let _guard = PanicOnDrop;
            std::future::pending::<http::Response<TestBody>>().await
        },
    );
    for _ in 0..3 {
        let (status, _) = get(server.address, "/");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
