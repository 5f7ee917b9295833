//! `net::TcpStream::connect` by host name and by a list of addresses: resolution off
//! the worker, each address tried in turn, errors that name the target.

use std::net::SocketAddr;

use crate::support::*;
use pagekeep_executor::net::{TcpListener, TcpStream};

#[test]
fn each_address_is_tried_in_turn_until_one_connects() {
    // A port that was just free refuses; the listener after it accepts.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let peer = client_runtime().block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let listening = listener.local_addr()?;
        let addresses: [SocketAddr; 2] = [refused, listening];
        let stream = TcpStream::connect(&addresses[..]).await?;
        assert_eq!(stream.peer_addr()?, listening);
        // By name, port as a tuple and in the string.
        let by_tuple = TcpStream::connect(("localhost", listening.port())).await?;
        let by_string = TcpStream::connect(format!("localhost:{}", listening.port())).await?;
        Ok::<_, std::io::Error>((by_tuple.peer_addr()?.port(), by_string.peer_addr()?.port()))
    });
    let (tuple_port, string_port) = peer.unwrap();
    assert_eq!(tuple_port, string_port);
}

#[test]
fn failures_name_the_host_and_keep_the_last_error_kind() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (unknown, all_refused, bad_port, no_port) = client_runtime().block_on(async move {
        (
            TcpStream::connect(("no-such-host.invalid", 80))
                .await
                .unwrap_err(),
            TcpStream::connect(&[refused, refused][..])
                .await
                .unwrap_err(),
            TcpStream::connect("localhost:99999").await.unwrap_err(),
            TcpStream::connect("localhost").await.unwrap_err(),
        )
    });
    assert!(
        unknown.to_string().contains("no-such-host.invalid:80"),
        "{unknown}"
    );
    assert_eq!(all_refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        all_refused.to_string().contains("2 addresses tried"),
        "{all_refused}"
    );
    assert_eq!(
        bad_port.kind(),
        std::io::ErrorKind::InvalidInput,
        "{bad_port}"
    );
    assert_eq!(
        no_port.kind(),
        std::io::ErrorKind::InvalidInput,
        "{no_port}"
    );
}
