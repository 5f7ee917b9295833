//! The ecosystem's I/O traits for [`TcpStream`] and its halves: tokio's
//! `AsyncRead`/`AsyncWrite` with the `tokio-io` feature, those of `futures-io` (which
//! `futures::io` re-exports) with the `futures-io` feature.
//!
//! Every type gets the same behaviour from the functions here: reads and writes go
//! through the stream's reactor registration (a read and a write wait on separate
//! directions); flushing has nothing to do (writes go straight to the socket); shutting
//! down (`poll_shutdown`, `poll_close`) shuts down the write direction, and a peer that
//! already went away is no error; vectored writes are one `writev`.

#[cfg(feature = "tokio-io")]
use std::io;
#[cfg(feature = "tokio-io")]
use std::task::{Context, Poll};

#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
use crate::net::TcpStream;

/// Reads into the unfilled part of tokio's `ReadBuf`, which may be uninitialised, with
/// `recv`: the bytes are never seen as initialised before the kernel wrote them, and
/// nothing is zeroed first.
#[cfg(feature = "tokio-io")]
pub(crate) fn tokio_poll_read(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buffer: &mut tokio::io::ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    // SAFETY: `unfilled_mut` requires that no initialised byte of the buffer be
    // de-initialised through the slice. `poll_read_uninit` only hands the slice to
    // `recv`, which writes bytes into it (never uninitialised ones) and never reads it;
    // no Rust code reads or writes the slice.
    let unfilled = unsafe { buffer.unfilled_mut() };
    let read = std::task::ready!(stream.poll_read_uninit(cx, unfilled))?;
    // SAFETY: `recv` initialised the first `read` bytes of the unfilled part
    // (`read_into_uninit` guarantees `read <= unfilled.len()`).
    unsafe { buffer.assume_init(read) };
    buffer.advance(read);
    Poll::Ready(Ok(()))
}

/// Implements tokio's and futures' `AsyncRead` (each behind its feature) for `$type`,
/// whose stream `$stream` names with `$this` bound to `&Self`.
macro_rules! impl_async_read {
    ($type:ty, $this:ident => $stream:expr) => {
        #[cfg(feature = "tokio-io")]
        impl tokio::io::AsyncRead for $type {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let $this = &*self;
                $crate::net::io_traits::tokio_poll_read($stream, cx, buffer)
            }
        }

        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncRead for $type {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::TcpStream::poll_read_bytes($stream, cx, buffer)
            }
        }
    };
}

/// Implements tokio's and futures' `AsyncWrite` (each behind its feature) for `$type`,
/// whose stream `$stream` names with `$this` bound to `&Self`.
macro_rules! impl_async_write {
    ($type:ty, $this:ident => $stream:expr) => {
        #[cfg(feature = "tokio-io")]
        impl tokio::io::AsyncWrite for $type {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::TcpStream::poll_write_bytes($stream, cx, buffer)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffers: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::TcpStream::poll_write_vectored_bytes($stream, cx, buffers)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                // Writes go straight to the socket: no user-space buffer to flush.
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let $this = &*self;
                std::task::Poll::Ready($crate::net::TcpStream::shutdown_write($stream))
            }
        }

        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncWrite for $type {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::TcpStream::poll_write_bytes($stream, cx, buffer)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffers: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::TcpStream::poll_write_vectored_bytes($stream, cx, buffers)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                // Writes go straight to the socket: no user-space buffer to flush.
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let $this = &*self;
                std::task::Poll::Ready($crate::net::TcpStream::shutdown_write($stream))
            }
        }
    };
}

pub(crate) use {impl_async_read, impl_async_write};

impl_async_read!(TcpStream, this => this);
impl_async_write!(TcpStream, this => this);
