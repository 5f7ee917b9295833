//! A stream split into a read half and a write half: both directions wait at the same
//! time without stealing each other's wake-ups, halves go back together only with
//! their own, and dropping the owned write half ends the stream for the peer only.

use std::future::{Future, poll_fn};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use pagekeep_executor::net::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, TcpStream, WriteHalf};
use pagekeep_executor::{Runtime, timeout};

/// 8 MiB: far more than loopback socket buffers hold before the peer reads, so the
/// write half has to wait for room.
const STREAMED_BYTES: usize = 8 << 20;
const CHUNK_BYTES: usize = 64 << 10;
const LIMIT: Duration = Duration::from_secs(30);

/// The byte at `position` of a streamed pattern (not periodic in any buffer size used
/// here, so a lost, repeated or reordered chunk shows).
fn pattern(position: usize, seed: u8) -> u8 {
    (position.wrapping_mul(31) ^ (position >> 13)) as u8 ^ seed
}

fn check_pattern(bytes: &[u8], start: usize, seed: u8) {
    for (offset, byte) in bytes.iter().enumerate() {
        let position = start + offset;
        assert_eq!(*byte, pattern(position, seed), "byte {position} differs");
    }
}

fn fill_pattern(buffer: &mut [u8], start: usize, seed: u8) {
    for (offset, byte) in buffer.iter_mut().enumerate() {
        *byte = pattern(start + offset, seed);
    }
}

/// Polls `future` to completion, raising `parked` the first time it is pending.
async fn noting_park<F: Future>(future: F, parked: &AtomicBool) -> F::Output {
    let mut future = pin!(future);
    poll_fn(|cx| {
        let polled = future.as_mut().poll(cx);
        if polled.is_pending() {
            parked.store(true, Ordering::Release);
        }
        polled
    })
    .await
}

/// Waits (bounded) until every flag is raised.
fn wait_for(flags: &[&AtomicBool], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flags.iter().all(|flag| flag.load(Ordering::Acquire)) {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Writes all of `bytes` from the blocking peer, sending again after a send that wrote
/// nothing. Under wine a blocking send that waited for room can complete having written
/// no byte (in about one run in four of these tests); `write_all` takes that for an
/// error, though the next send goes through and the patterns checked on both sides show
/// no byte lost or repeated. A peer whose sends keep writing nothing fails the test.
fn write_all_past_empty_sends(peer: &mut std::net::TcpStream, mut bytes: &[u8]) {
    let mut empty_sends = 0;
    while !bytes.is_empty() {
        let written = peer.write(bytes).unwrap();
        if written == 0 {
            empty_sends += 1;
            assert!(empty_sends < 100, "the peer's sends keep writing nothing");
        }
        bytes = &bytes[written..];
    }
}

/// A plain blocking peer that, once both halves are parked, streams `STREAMED_BYTES`
/// to the stream and reads as many back, each on its own thread.
struct Peer {
    sender: thread::JoinHandle<()>,
    receiver: thread::JoinHandle<Vec<u8>>,
}

impl Peer {
    fn start(peer: std::net::TcpStream, parked: [Arc<AtomicBool>; 2]) -> Self {
        let mut outgoing = peer.try_clone().unwrap();
        let mut incoming = peer;
        let parked_for_sender = parked.clone();
        let sender = thread::spawn(move || {
            wait_for(
                &[&parked_for_sender[0], &parked_for_sender[1]],
                "the read half and the write half were never both waiting",
            );
            let mut chunk = vec![0u8; CHUNK_BYTES];
            for start in (0..STREAMED_BYTES).step_by(CHUNK_BYTES) {
                fill_pattern(&mut chunk, start, 0x5a);
                write_all_past_empty_sends(&mut outgoing, &chunk);
            }
            outgoing.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let receiver = thread::spawn(move || {
            wait_for(
                &[&parked[0], &parked[1]],
                "the read half and the write half were never both waiting",
            );
            let mut received = Vec::with_capacity(STREAMED_BYTES);
            incoming.read_to_end(&mut received).unwrap();
            received
        });
        Self { sender, receiver }
    }

    fn finish(self) {
        self.sender.join().unwrap();
        let received = self.receiver.join().unwrap();
        assert_eq!(received.len(), STREAMED_BYTES);
        check_pattern(&received, 0, 0xa5);
    }
}

fn connected(runtime: &Runtime) -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let stream = runtime
        .block_on(async move { TcpStream::connect(address).await })
        .unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

async fn read_pattern_owned(half: OwnedReadHalf, parked: Arc<AtomicBool>) -> usize {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut total = 0;
    loop {
        let read = noting_park(half.read(&mut buffer), &parked).await.unwrap();
        if read == 0 {
            return total;
        }
        check_pattern(&buffer[..read], total, 0x5a);
        total += read;
    }
}

async fn write_pattern_owned(half: OwnedWriteHalf, parked: Arc<AtomicBool>) {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    for start in (0..STREAMED_BYTES).step_by(CHUNK_BYTES) {
        fill_pattern(&mut chunk, start, 0xa5);
        noting_park(half.write_all(&chunk), &parked).await.unwrap();
    }
    // Dropping the half shuts down the write direction: the peer's read ends.
}

/// The owned halves in two tasks: the read half waits for data while the write half
/// waits for room, both parked at once, and each must be woken by its own direction's
/// events (one waker per socket would lose one of them and hang).
fn owned_halves_stream_both_ways(workers: usize) {
    let runtime = Runtime::builder().workers(workers).build().unwrap();
    let (stream, peer) = connected(&runtime);
    let parked = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let peer = Peer::start(peer, parked.clone());
    let (read_half, write_half) = stream.into_split();
    let [read_parked, write_parked] = parked;
    // With two workers the tasks run on different threads from the stream's reactor.
    let reader = runtime.spawn_on(workers - 1, read_pattern_owned(read_half, read_parked));
    let writer = runtime.spawn_on(0, write_pattern_owned(write_half, write_parked));
    let read = runtime.block_on(async move {
        let read = timeout(LIMIT, reader)
            .await
            .expect("the read half hung")
            .unwrap();
        timeout(LIMIT, writer)
            .await
            .expect("the write half hung")
            .unwrap();
        read
    });
    assert_eq!(read, STREAMED_BYTES);
    peer.finish();
}

#[test]
fn owned_halves_in_two_tasks_on_one_worker_stream_8_mib_each_way_at_once() {
    owned_halves_stream_both_ways(1);
}

#[test]
fn owned_halves_in_two_tasks_on_two_workers_stream_8_mib_each_way_at_once() {
    owned_halves_stream_both_ways(2);
}

async fn read_pattern_borrowed(half: ReadHalf<'_>, parked: &AtomicBool) -> usize {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut total = 0;
    loop {
        let read = noting_park(half.read(&mut buffer), parked).await.unwrap();
        if read == 0 {
            return total;
        }
        check_pattern(&buffer[..read], total, 0x5a);
        total += read;
    }
}

async fn write_pattern_borrowed(half: WriteHalf<'_>, parked: &AtomicBool) {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    for start in (0..STREAMED_BYTES).step_by(CHUNK_BYTES) {
        fill_pattern(&mut chunk, start, 0xa5);
        noting_park(half.write_all(&chunk), parked).await.unwrap();
    }
    half.as_ref().shutdown(std::net::Shutdown::Write).unwrap();
}

/// The borrowed halves in one task, both futures pending at once.
#[test]
fn borrowed_halves_joined_in_one_task_stream_8_mib_each_way_at_once() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (mut stream, peer) = connected(&runtime);
    let parked = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let peer = Peer::start(peer, parked.clone());
    let read = runtime.block_on(async move {
        let [read_parked, write_parked] = parked;
        let (read_half, write_half) = stream.split();
        let both = futures::future::join(
            read_pattern_borrowed(read_half, &read_parked),
            write_pattern_borrowed(write_half, &write_parked),
        );
        let (read, ()) = timeout(LIMIT, both).await.expect("a borrowed half hung");
        read
    });
    assert_eq!(read, STREAMED_BYTES);
    peer.finish();
}

/// Reads from a blocking peer with a short timeout: `None` when nothing came.
fn peer_read(peer: &mut std::net::TcpStream, buffer: &mut [u8]) -> Option<usize> {
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    match peer.read(buffer) {
        Ok(read) => Some(read),
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(error) => panic!("peer read failed: {error}"),
    }
}

fn read_exactly(peer: &mut std::net::TcpStream, expected: &[u8]) {
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffer = vec![0u8; expected.len()];
    peer.read_exact(&mut buffer).unwrap();
    assert_eq!(buffer, expected);
}

#[test]
fn reunited_halves_are_the_whole_stream_with_its_write_direction_open() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream, mut peer) = connected(&runtime);
    let local = stream.local_addr().unwrap();
    let (read_half, write_half) = stream.into_split();
    let stream = read_half.reunite(write_half).expect("halves of one stream");
    assert_eq!(stream.local_addr().unwrap(), local);
    // The write half went away inside `reunite` without shutting anything down.
    let mut byte = [0u8; 1];
    assert_eq!(
        peer_read(&mut peer, &mut byte),
        None,
        "the peer saw end of stream"
    );
    let (read_half, write_half) = stream.into_split();
    let stream = write_half.reunite(read_half).expect("halves of one stream");
    peer.write_all(b"ping").unwrap();
    let stream = runtime.block_on(async move {
        stream.write_all(b"still open").await.unwrap();
        let mut buffer = [0u8; 4];
        let mut read = 0;
        while read < buffer.len() {
            read += stream.read(&mut buffer[read..]).await.unwrap();
        }
        assert_eq!(&buffer, b"ping");
        stream
    });
    read_exactly(&mut peer, b"still open");
    drop(stream);
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn halves_of_two_streams_do_not_reunite_and_come_back_working() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (stream_a, mut peer_a) = connected(&runtime);
    let (stream_b, mut peer_b) = connected(&runtime);
    let (read_a, write_a) = stream_a.into_split();
    let (read_b, write_b) = stream_b.into_split();
    let error = read_a.reunite(write_b).expect_err("halves of two streams");
    assert_eq!(
        error.to_string(),
        "tried to reunite halves of two different TCP streams"
    );
    let pagekeep_executor::net::ReuniteError(read_a, write_b) = error;
    let error = write_a.reunite(read_b).expect_err("halves of two streams");
    let pagekeep_executor::net::ReuniteError(read_b, write_a) = error;
    // Neither failed reunion shut anything down: each peer still waits for data.
    let mut byte = [0u8; 1];
    assert_eq!(peer_read(&mut peer_a, &mut byte), None);
    assert_eq!(peer_read(&mut peer_b, &mut byte), None);
    peer_a.write_all(b"to a").unwrap();
    let (read_a, write_b) = runtime.block_on(async move {
        write_b.write_all(b"from b").await.unwrap();
        let mut buffer = [0u8; 4];
        let mut read = 0;
        while read < buffer.len() {
            read += read_a.read(&mut buffer[read..]).await.unwrap();
        }
        assert_eq!(&buffer, b"to a");
        (read_a, write_b)
    });
    read_exactly(&mut peer_b, b"from b");
    let stream_a = read_a.reunite(write_a).expect("halves of one stream");
    let stream_b = write_b.reunite(read_b).expect("halves of one stream");
    assert_eq!(stream_a.peer_addr().unwrap(), peer_a.local_addr().unwrap());
    assert_eq!(stream_b.peer_addr().unwrap(), peer_b.local_addr().unwrap());
}

#[test]
fn dropping_the_owned_write_half_ends_the_stream_for_the_peer_only() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let (stream, mut peer) = connected(&runtime);
    let (read_half, write_half) = stream.into_split();
    // The write half goes away on another worker than the stream's reactor.
    let writer = runtime.spawn_on(1, async move { write_half.write_all(b"last words").await });
    runtime
        .block_on(async move { timeout(LIMIT, writer).await })
        .expect("the write half hung")
        .unwrap()
        .unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    peer.read_to_end(&mut received).unwrap();
    assert_eq!(received, b"last words");
    // The read half goes on: the peer answers after our end of stream, then closes.
    peer.write_all(b"answer").unwrap();
    drop(peer);
    let received = runtime.block_on(async move {
        let mut received = Vec::new();
        let mut buffer = [0u8; 16];
        loop {
            let read = timeout(LIMIT, read_half.read(&mut buffer))
                .await
                .expect("the read half hung")
                .unwrap();
            if read == 0 {
                return received;
            }
            received.extend_from_slice(&buffer[..read]);
        }
    });
    assert_eq!(received, b"answer");
}

#[test]
fn dropping_borrowed_halves_leaves_the_stream_open() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (mut stream, mut peer) = connected(&runtime);
    {
        // Borrowed halves own nothing: their going out of scope does nothing.
        let (read_half, write_half) = stream.split();
        assert_eq!(
            read_half.as_ref().local_addr().unwrap(),
            write_half.as_ref().local_addr().unwrap()
        );
    }
    let mut byte = [0u8; 1];
    assert_eq!(
        peer_read(&mut peer, &mut byte),
        None,
        "the peer saw end of stream"
    );
    runtime.block_on(async move {
        stream.write_all(b"open").await.unwrap();
        stream
    });
    read_exactly(&mut peer, b"open");
}

/// The owned halves can go anywhere a spawned task can (checked at compile time), and
/// the socket closes only when both are gone.
#[test]
fn owned_halves_move_to_other_tasks_and_the_socket_closes_with_the_last() {
    fn assert_send_static<T: Send + Sync + 'static>(_: &T) {}
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let (stream, mut peer) = connected(&runtime);
    let address: SocketAddr = stream.local_addr().unwrap();
    let (read_half, write_half) = stream.into_split();
    assert_send_static(&read_half);
    assert_send_static(&write_half);
    let read_half = runtime
        .block_on(async move {
            pagekeep_executor::spawn(async move {
                drop(write_half);
                read_half
            })
            .await
        })
        .unwrap();
    let mut rest = Vec::new();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // The read half still holds the socket open: the peer can still send to it.
    peer.write_all(b"x").unwrap();
    assert_eq!(read_half.as_ref().local_addr().unwrap(), address);
    drop(read_half);
    // Now closed: the peer's next writes fail (reset) or its reads see the end.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match peer.write_all(b"more") {
            Err(_) => break,
            Ok(()) => {
                assert!(Instant::now() < deadline, "the socket stayed open");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
