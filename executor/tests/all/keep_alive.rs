//! Many requests on one keep-alive connection.

use crate::support::*;
use executor::client::ClientConnection;
use http::StatusCode;

#[test]
fn twenty_requests_share_one_connection() {
    let server = start(builder());
    let address = server.address;
    let statuses = client_runtime().block_on(async move {
        let mut connection = ClientConnection::connect(address, CLIENT_TIMEOUT)
            .await
            .unwrap();
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(get_on(&mut connection, "/hello").await);
        }
        statuses
    });
    assert_eq!(statuses.len(), 20);
    for (status, body) in statuses {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"hello");
    }
}

#[test]
fn raw_keep_alive_connection_stays_open_between_requests() {
    use std::io::Write;
    let server = start(builder());
    let mut stream = raw(server.address);
    let mut received = Vec::new();
    for round in 1..=3 {
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
            .unwrap();
        let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |bytes| {
            count(bytes, "hello") == round
        });
        assert_eq!(ended, Ended::Done);
    }
    assert_eq!(count(&received, "HTTP/1.1 200 OK"), 3);
}

#[test]
fn per_worker_reuse_port_sockets_serve_every_connection() {
    let server = start(builder().reuse_port(true));
    for _ in 0..10 {
        let (status, body) = get(server.address, "/hello");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    }
    assert_eq!(server.stats.accepted_connections(), 10);
}
