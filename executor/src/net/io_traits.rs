//! The ecosystem's I/O traits for every stream of this module (`TcpStream`, on Unix
//! `UnixStream`) and their halves: tokio's
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

#[cfg(feature = "tokio-io")]
use crate::net::socket::sealed::Io;

/// Reads into the unfilled part of tokio's `ReadBuf`, which may be uninitialised, with
/// `recv`: the bytes are never seen as initialised before the kernel wrote them, and
/// nothing is zeroed first.
#[cfg(feature = "tokio-io")]
pub(crate) fn tokio_poll_read<S: Io + ?Sized>(
    stream: &S,
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
    ([$($generics:tt)*] $type:ty, $this:ident => $stream:expr) => {
        #[cfg(feature = "tokio-io")]
        impl<$($generics)*> tokio::io::AsyncRead for $type {
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
        impl<$($generics)*> futures_io::AsyncRead for $type {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::socket::sealed::Io::poll_read_bytes($stream, cx, buffer)
            }
        }
    };
}

/// Implements tokio's and futures' `AsyncWrite` (each behind its feature) for `$type`,
/// whose stream `$stream` names with `$this` bound to `&Self`.
macro_rules! impl_async_write {
    ([$($generics:tt)*] $type:ty, $this:ident => $stream:expr) => {
        #[cfg(feature = "tokio-io")]
        impl<$($generics)*> tokio::io::AsyncWrite for $type {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::socket::sealed::Io::poll_write_bytes($stream, cx, buffer)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffers: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::socket::sealed::Io::poll_write_vectored_bytes($stream, cx, buffers)
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
                std::task::Poll::Ready($crate::net::socket::shutdown_write($stream))
            }
        }

        #[cfg(feature = "futures-io")]
        impl<$($generics)*> futures_io::AsyncWrite for $type {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::socket::sealed::Io::poll_write_bytes($stream, cx, buffer)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffers: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                $crate::net::socket::sealed::Io::poll_write_vectored_bytes($stream, cx, buffers)
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
                std::task::Poll::Ready($crate::net::socket::shutdown_write($stream))
            }
        }
    };
}

/// Reads into the unfilled part of hyper's read cursor, which may be uninitialised,
/// with `recv`, as [`tokio_poll_read`] does.
#[cfg(unix)]
pub(crate) fn hyper_poll_read<S: crate::net::socket::sealed::Io + ?Sized>(
    stream: &S,
    cx: &mut std::task::Context<'_>,
    mut buffer: hyper::rt::ReadBufCursor<'_>,
) -> std::task::Poll<std::io::Result<()>> {
    // SAFETY: `as_mut` requires that no byte of the cursor be de-initialised;
    // `poll_read_uninit` only hands the slice to `recv`, which writes bytes into it and
    // never reads it.
    let unfilled = unsafe { buffer.as_mut() };
    let read = std::task::ready!(stream.poll_read_uninit(cx, unfilled))?;
    // SAFETY: `recv` initialised the first `read` bytes of the unfilled part
    // (`read_into_uninit` guarantees `read <= unfilled.len()`).
    unsafe { buffer.advance(read) };
    std::task::Poll::Ready(Ok(()))
}

/// Implements `hyper::rt::{Read, Write}` for the stream `$type`, as `hyper_rt.rs` does
/// for `TcpStream`.
#[cfg(unix)]
macro_rules! impl_hyper_io {
    ($type:ty) => {
        impl hyper::rt::Read for $type {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: hyper::rt::ReadBufCursor<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                $crate::net::io_traits::hyper_poll_read(&*self, cx, buffer)
            }
        }

        impl hyper::rt::Write for $type {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffer: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::net::socket::sealed::Io::poll_write_bytes(&*self, cx, buffer)
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
                std::task::Poll::Ready($crate::net::socket::shutdown_write(&*self))
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buffers: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::net::socket::sealed::Io::poll_write_vectored_bytes(&*self, cx, buffers)
            }
        }
    };
}

#[cfg(unix)]
pub(crate) use impl_hyper_io;
pub(crate) use {impl_async_read, impl_async_write};

impl_async_read!([] crate::net::TcpStream, this => this);
impl_async_write!([] crate::net::TcpStream, this => this);
