//! `net::UnixListener` / `net::UnixStream` over socket files in a temporary directory:
//! the same reads, writes, halves and I/O traits as TCP, a stale socket file, and paths
//! the system refuses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;
use pagekeep_executor::net::{UnixListener, UnixStream};

/// A fresh directory for this test's socket files, removed when dropped.
struct SocketDirectory(PathBuf);

impl SocketDirectory {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pagekeep-unix-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for SocketDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_listener_accepts_and_streams_carry_bytes_both_ways_and_split() {
    let directory = SocketDirectory::new();
    let path = directory.socket("echo.sock");
    let result = client_runtime().block_on(async move {
        let listener = UnixListener::bind(&path)?;
        assert_eq!(listener.local_addr()?.as_pathname(), Some(path.as_path()));
        let client = UnixStream::connect(&path).await?;
        let (mut server, peer) = listener.accept().await?;
        // The client did not bind: unnamed.
        assert!(peer.is_unnamed());
        assert_eq!(client.peer_addr()?.as_pathname(), Some(path.as_path()));

        client.write_all(b"hello").await?;
        let mut buffer = [0u8; 16];
        let seen = server.peek(&mut buffer).await?;
        assert!(seen > 0 && b"hello".starts_with(&buffer[..seen]));
        let mut received = Vec::new();
        while received.len() < 5 {
            let read = server.read(&mut buffer).await?;
            received.extend_from_slice(&buffer[..read]);
        }
        assert_eq!(received, b"hello");

        // Borrowed halves of the server, owned halves of the client.
        let (server_reader, server_writer) = server.split();
        server_writer.write_all(b"back").await?;
        let (client_reader, client_writer) = client.into_split();
        let read = client_reader.read(&mut buffer).await?;
        assert!(b"back".starts_with(&buffer[..read]));
        // Dropping the owned write half: the server reads end of stream.
        drop(client_writer);
        let mut rest = Vec::new();
        loop {
            let read = server_reader.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            rest.extend_from_slice(&buffer[..read]);
        }
        assert!(rest.is_empty(), "{rest:?}");
        Ok::<_, std::io::Error>(())
    });
    result.unwrap();
}

#[test]
fn owned_halves_reunite_only_with_their_own() {
    let result = client_runtime().block_on(async {
        let (a, _peer_a) = UnixStream::pair()?;
        let (b, _peer_b) = UnixStream::pair()?;
        let (read_a, write_a) = a.into_split();
        let (read_b, write_b) = b.into_split();
        let mismatch = read_a.reunite(write_b).unwrap_err();
        assert_eq!(
            mismatch.to_string(),
            "tried to reunite halves of two different Unix streams"
        );
        let (read_a, write_b) = (mismatch.0, mismatch.1);
        read_a.reunite(write_a).expect("halves of one stream");
        write_b.reunite(read_b).expect("halves of one stream");
        Ok::<_, std::io::Error>(())
    });
    result.unwrap();
}

#[cfg(all(feature = "tokio-io", feature = "futures-io"))]
#[test]
fn tokio_codecs_and_futures_copy_run_over_unix_streams() {
    use futures::{SinkExt, StreamExt};
    use tokio_util::codec::{Framed, LinesCodec};
    let result = client_runtime().block_on(async {
        // tokio: a line codec in both directions.
        let (left, right) = UnixStream::pair()?;
        let mut left = Framed::new(left, LinesCodec::new());
        let mut right = Framed::new(right, LinesCodec::new());
        left.send("one line").await.unwrap();
        assert_eq!(right.next().await.unwrap().unwrap(), "one line");
        // futures: `copy` from an owned read half until the peer closes.
        let (source, mut feeder) = UnixStream::pair()?;
        let copying = pagekeep_executor::spawn(async move {
            let (reader, _writer) = source.into_split();
            let mut copy = futures::io::AllowStdIo::new(Vec::new());
            futures::io::copy(reader, &mut copy)
                .await
                .map(|_| copy.into_inner())
        });
        futures::AsyncWriteExt::write_all(&mut feeder, b"copied bytes").await?;
        futures::AsyncWriteExt::close(&mut feeder).await?;
        assert_eq!(copying.await.unwrap()?, b"copied bytes");
        Ok::<_, std::io::Error>(())
    });
    result.unwrap();
}

#[test]
fn hyper_serves_and_requests_over_a_unix_socket() {
    use http_body_util::{BodyExt, Empty, Full};
    let directory = SocketDirectory::new();
    let path = directory.socket("http.sock");
    let body = client_runtime().block_on(async move {
        let listener = UnixListener::bind(&path).unwrap();
        let serving = pagekeep_executor::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|request: http::Request<_>| async move {
                let answer = format!("served {}", request.uri().path());
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                    bytes::Bytes::from(answer),
                )))
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(stream, service)
                .await
        });
        let stream = UnixStream::connect(&path).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(stream).await.unwrap();
        let driving = pagekeep_executor::spawn(connection);
        let request = http::Request::get("/over/unix")
            .header("host", "local")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        drop(sender);
        driving.await.unwrap().unwrap();
        serving.await.unwrap().unwrap();
        body
    });
    assert_eq!(body, "served /over/unix");
}

#[test]
fn a_stale_socket_file_is_refused_by_bind_and_replaced_only_when_stale() {
    let directory = SocketDirectory::new();
    let path = directory.socket("stale.sock");
    let runtime = client_runtime();
    // A listener that goes away leaves its file behind.
    runtime
        .block_on({
            let path = path.clone();
            async move { UnixListener::bind(&path).map(drop) }
        })
        .unwrap();
    assert!(path.exists());
    let (refused, replaced, live_refused, live_still_serves) = runtime.block_on({
        let path = path.clone();
        async move {
            let refused = UnixListener::bind(&path).unwrap_err();
            let listener = UnixListener::bind_replacing_stale(&path).unwrap();
            let replaced = listener.local_addr().unwrap();
            // A live socket is not stale: left alone.
            let live_refused = UnixListener::bind_replacing_stale(&path).unwrap_err();
            let client = UnixStream::connect(&path).await.unwrap();
            let live_still_serves = listener.accept().await.is_ok();
            drop(client);
            (refused, replaced, live_refused, live_still_serves)
        }
    });
    assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse, "{refused}");
    assert!(refused.to_string().contains("stale.sock"), "{refused}");
    assert_eq!(replaced.as_pathname(), Some(path.as_path()));
    assert_eq!(live_refused.kind(), std::io::ErrorKind::AddrInUse);
    assert!(live_still_serves);

    // A file that is not a socket is never removed.
    let regular = directory.socket("not-a-socket");
    std::fs::write(&regular, b"keep me").unwrap();
    let error = runtime
        .block_on({
            let regular = regular.clone();
            async move { UnixListener::bind_replacing_stale(&regular).map(drop) }
        })
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(std::fs::read(&regular).unwrap(), b"keep me");
}

#[test]
fn paths_longer_than_sun_path_and_missing_sockets_are_clear_errors() {
    let directory = SocketDirectory::new();
    // `sun_path` holds 108 bytes on Linux (104 on the BSDs), the terminating NUL
    // included.
    let long = directory.socket(&"s".repeat(120));
    let missing = directory.socket("nobody-here.sock");
    let (bind, connect, absent) = client_runtime().block_on({
        let (long, missing) = (long.clone(), missing.clone());
        async move {
            (
                UnixListener::bind(&long).unwrap_err(),
                UnixStream::connect(&long).await.unwrap_err(),
                UnixStream::connect(&missing).await.unwrap_err(),
            )
        }
    });
    assert_eq!(bind.kind(), std::io::ErrorKind::InvalidInput, "{bind}");
    assert_eq!(
        connect.kind(),
        std::io::ErrorKind::InvalidInput,
        "{connect}"
    );
    assert!(!long.exists());
    assert_eq!(absent.kind(), std::io::ErrorKind::NotFound, "{absent}");
    assert!(absent.to_string().contains("nobody-here.sock"), "{absent}");
}
