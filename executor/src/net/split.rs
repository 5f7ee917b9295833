//! The halves of a [`TcpStream`] (or, on Unix, a `UnixStream`; the types are generic
//! over the stream, [`Socket`], with `TcpStream` as the default): borrowed
//! ([`ReadHalf`], [`WriteHalf`], from [`TcpStream::split`]) and owned
//! ([`OwnedReadHalf`], [`OwnedWriteHalf`], from [`TcpStream::into_split`]).
//!
//! A half is only a handle on the stream: every operation takes the stream by shared
//! reference, and the reactor keeps the waiting tasks of each direction apart (see
//! `reactor.rs`), so a read half and a write half waiting at the same time, in one task
//! or two, are each woken by their own direction's events.

use std::error::Error;
use std::fmt;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::sync::Arc;

use crate::net::TcpStream;
use crate::net::socket::{self, Socket};

/// The read half of a [`TcpStream`], borrowed from it by [`TcpStream::split`].
///
/// With the `tokio-io` or `futures-io` feature it implements that crate's `AsyncRead`.
#[derive(Debug)]
pub struct ReadHalf<'stream, S: Socket = TcpStream> {
    stream: &'stream S,
}

/// The write half of a [`TcpStream`], borrowed from it by [`TcpStream::split`].
///
/// With the `tokio-io` or `futures-io` feature it implements that crate's `AsyncWrite`;
/// its `poll_shutdown` (`poll_close`) shuts down the stream's write direction. Dropping
/// it does nothing to the stream; without the features,
/// `half.as_ref().shutdown(Shutdown::Write)` shuts the write direction down.
#[derive(Debug)]
pub struct WriteHalf<'stream, S: Socket = TcpStream> {
    stream: &'stream S,
}

/// The read half of a [`TcpStream`], owned: made by [`TcpStream::into_split`], `Send`
/// and `'static`, so it can move into a task of its own.
///
/// With the `tokio-io` or `futures-io` feature it implements that crate's `AsyncRead`.
/// The socket closes when both halves are dropped.
#[derive(Debug)]
pub struct OwnedReadHalf<S: Socket = TcpStream> {
    stream: Arc<S>,
}

/// The write half of a [`TcpStream`], owned: made by [`TcpStream::into_split`], `Send`
/// and `'static`, so it can move into a task of its own.
///
/// With the `tokio-io` or `futures-io` feature it implements that crate's `AsyncWrite`.
/// Dropping it shuts down the write direction, as tokio's does: the peer reads end of
/// stream while the read half goes on reading. The socket closes when both halves are
/// dropped.
#[derive(Debug)]
pub struct OwnedWriteHalf<S: Socket = TcpStream> {
    stream: Arc<S>,
    /// Cleared only by a successful reunion, which hands the stream back whole.
    shutdown_on_drop: bool,
}

/// [`OwnedReadHalf::reunite`] or [`OwnedWriteHalf::reunite`] was given halves of two
/// different streams; both are handed back unchanged.
#[derive(Debug)]
pub struct ReuniteError<S: Socket = TcpStream>(pub OwnedReadHalf<S>, pub OwnedWriteHalf<S>);

impl<S: Socket> fmt::Display for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tried to reunite halves of two different {} streams",
            <S as socket::sealed::Io>::KIND
        )
    }
}

impl<S: Socket> Error for ReuniteError<S> {}

/// Puts two owned halves back together; see [`OwnedReadHalf::reunite`].
fn reunite<S: Socket>(
    read: OwnedReadHalf<S>,
    mut write: OwnedWriteHalf<S>,
) -> Result<S, ReuniteError<S>> {
    if !Arc::ptr_eq(&read.stream, &write.stream) {
        return Err(ReuniteError(read, write));
    }
    // The stream goes on whole: its write direction stays open.
    write.shutdown_on_drop = false;
    drop(write);
    // `into_split` makes exactly two references and the halves are not `Clone`, so with
    // the write half gone the read half holds the only one.
    Ok(
        Arc::try_unwrap(read.stream)
            .expect("the halves of one stream hold its only two references"),
    )
}

impl<'stream, S: Socket> ReadHalf<'stream, S> {
    pub(crate) fn new(stream: &'stream S) -> Self {
        Self { stream }
    }
}

impl<'stream, S: Socket> WriteHalf<'stream, S> {
    pub(crate) fn new(stream: &'stream S) -> Self {
        Self { stream }
    }
}

impl<S: Socket> OwnedReadHalf<S> {
    pub(crate) fn new(stream: Arc<S>) -> Self {
        Self { stream }
    }

    /// Puts this half and `write` back together into the stream they came from, with
    /// its write direction still open.
    ///
    /// # Errors
    /// [`ReuniteError`], holding both halves unchanged, when `write` is the write half
    /// of another stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_executor::net::{TcpListener, TcpStream};
    ///
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// runtime.block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    ///     let address = listener.local_addr()?;
    ///     let (read_a, write_a) = TcpStream::connect(address).await?.into_split();
    ///     let (read_b, write_b) = TcpStream::connect(address).await?.into_split();
    ///     // Halves of two streams do not make one.
    ///     let mismatch = read_a.reunite(write_b).unwrap_err();
    ///     let (read_a, write_b) = (mismatch.0, mismatch.1);
    ///     let stream_a = read_a.reunite(write_a).expect("halves of one stream");
    ///     let stream_b = write_b.reunite(read_b).expect("halves of one stream");
    ///     assert_ne!(stream_a.local_addr()?, stream_b.local_addr()?);
    ///     Ok::<_, std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reunite(self, write: OwnedWriteHalf<S>) -> Result<S, ReuniteError<S>> {
        reunite(self, write)
    }
}

impl<S: Socket> OwnedWriteHalf<S> {
    pub(crate) fn new(stream: Arc<S>) -> Self {
        Self {
            stream,
            shutdown_on_drop: true,
        }
    }

    /// Puts `read` and this half back together; see [`OwnedReadHalf::reunite`].
    ///
    /// # Errors
    /// [`ReuniteError`], holding both halves unchanged, when `read` is the read half of
    /// another stream.
    pub fn reunite(self, read: OwnedReadHalf<S>) -> Result<S, ReuniteError<S>> {
        reunite(read, self)
    }
}

impl<S: Socket> Drop for OwnedWriteHalf<S> {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            // Nothing to report to: a peer already gone (`NotConnected`) or any other
            // failure leaves the socket to close when the read half goes.
            let _ = socket::sealed::Io::shutdown(&*self.stream, Shutdown::Write);
        }
    }
}

/// The methods every read half has, delegating to the stream.
macro_rules! read_half_methods {
    ([$($generics:tt)*] $half:ty) => {
        impl<$($generics)*> $half {
            /// Reads into `buffer`; `Ok(0)` is end of stream. See [`TcpStream::read`].
            ///
            /// # Errors
            /// As `recv`.
            pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
                socket::read(&*self.stream, buffer).await
            }

            /// Reads into `buffer` without taking the data off the socket. See
            /// [`TcpStream::peek`].
            ///
            /// # Errors
            /// As `recv` with `MSG_PEEK`.
            pub async fn peek(&self, buffer: &mut [u8]) -> io::Result<usize> {
                socket::peek(&*self.stream, buffer).await
            }
        }

        impl<$($generics)*> AsRef<S> for $half {
            fn as_ref(&self) -> &S {
                &self.stream
            }
        }

        crate::net::io_traits::impl_async_read!([$($generics)*] $half, this => &*this.stream);
    };
}

/// The methods every write half has, delegating to the stream.
macro_rules! write_half_methods {
    ([$($generics:tt)*] $half:ty) => {
        impl<$($generics)*> $half {
            /// Writes part of `buffer`, returning how much. See [`TcpStream::write`].
            ///
            /// # Errors
            /// As `send`.
            pub async fn write(&self, buffer: &[u8]) -> io::Result<usize> {
                socket::write(&*self.stream, buffer).await
            }

            /// Writes all of `buffer`. See [`TcpStream::write_all`].
            ///
            /// # Errors
            /// As `send`; a zero-length write is reported as
            /// [`io::ErrorKind::WriteZero`].
            pub async fn write_all(&self, buffer: &[u8]) -> io::Result<()> {
                socket::write_all(&*self.stream, buffer).await
            }

            /// Writes from several buffers with one `writev`, returning how much. See
            /// [`TcpStream::write_vectored`].
            ///
            /// # Errors
            /// As `writev`.
            pub async fn write_vectored(&self, buffers: &[IoSlice<'_>]) -> io::Result<usize> {
                socket::write_vectored(&*self.stream, buffers).await
            }
        }

        impl<$($generics)*> AsRef<S> for $half {
            fn as_ref(&self) -> &S {
                &self.stream
            }
        }

        crate::net::io_traits::impl_async_write!([$($generics)*] $half, this => &*this.stream);
    };
}

read_half_methods!([S: Socket] ReadHalf<'_, S>);
read_half_methods!([S: Socket] OwnedReadHalf<S>);
write_half_methods!([S: Socket] WriteHalf<'_, S>);
write_half_methods!([S: Socket] OwnedWriteHalf<S>);
