//! The outbound client on its own: non-blocking connect errors and timeouts.

use std::time::Duration;

use crate::support::*;
use executor::client::{ClientConnection, ClientError};
use http_body_util::Empty;

#[test]
fn connect_refused_is_a_connect_error() {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let result = client_runtime().block_on(async move {
        ClientConnection::<Empty<bytes::Bytes>>::connect(address, CLIENT_TIMEOUT)
            .await
            .map(|_| ())
    });
    assert!(matches!(result, Err(ClientError::Connect(_))), "{result:?}");
}

#[test]
fn response_that_never_comes_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let result = client_runtime().block_on(async move {
        let request = http::Request::get("/")
            .header("host", "t")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        executor::client::send_request(address, request, Duration::from_millis(200))
            .await
            .map(|_| ())
    });
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
}
