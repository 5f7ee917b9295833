//! hyper glue: `hyper::rt::{Read, Write}` for [`TcpStream`], and [`HyperExecutor`] /
//! [`HyperTimer`] so hyper spawns and sleeps on this runtime.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::net::TcpStream;
use crate::timer::{Sleep, sleep, sleep_until};

impl hyper::rt::Read for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buffer: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: `as_mut` requires that we never de-initialise bytes of the cursor;
        // `poll_read_uninit` only lets `recv` write into the slice.
        let unfilled = unsafe { buffer.as_mut() };
        let read = match self.poll_read_uninit(cx, unfilled) {
            Poll::Ready(Ok(read)) => read,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        };
        // SAFETY: `recv` initialised the first `read` bytes of the unfilled part
        // (`read_into_uninit` guarantees `read <= unfilled.len()`).
        unsafe { buffer.advance(read) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bytes(cx, buffer)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket; there is no user-space buffer to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored_bytes(cx, buffers)
    }
}

/// `hyper::rt::Executor`: spawns hyper's background futures on the current worker.
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperExecutor;

impl<F> hyper::rt::Executor<F> for HyperExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        // Detached: hyper tracks its own background futures.
        drop(crate::spawn(future));
    }
}

/// `hyper::rt::Timer`: hyper's sleeps are this runtime's [`Sleep`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperTimer;

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(sleep(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(sleep_until(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        // Reuse the allocation when it is ours (it always is, unless hyper mixes timers).
        if let Some(ours) = sleep.as_mut().downcast_mut_pin::<Sleep>() {
            ours.get_mut().reset(new_deadline);
        } else {
            *sleep = self.sleep_until(new_deadline);
        }
    }
}
