//! The primitives of the scheduler's task-state machine behind one name, so that the
//! loom models (`--cfg pagekeep_executor_loom`, see `task::store::loom_models` and
//! `monitor::loom_models`) check the
//! same code that runs: std's by default, loom's in the crate's own
//! test build under that cfg (the copy of the library the integration tests link keeps
//! std's).
//!
//! The cfg is the executor's own rather than `loom`: pagekeep-arena and pagekeep-slab
//! switch to loom's primitives under `cfg(loom)`, and as dependencies (without their
//! dev-dependency on loom) they would not build.

#[cfg(not(all(test, pagekeep_executor_loom)))]
pub(crate) use std::sync::Mutex;
#[cfg(not(all(test, pagekeep_executor_loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};

#[cfg(all(test, pagekeep_executor_loom))]
pub(crate) use loom::sync::Mutex;
#[cfg(all(test, pagekeep_executor_loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};

/// An `UnsafeCell` with loom's closure API, so that loom checks every access.
#[cfg(not(all(test, pagekeep_executor_loom)))]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(all(test, pagekeep_executor_loom)))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a pointer to the value; the caller's `unsafe` dereference must
    /// have exclusive access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(all(test, pagekeep_executor_loom))]
pub(crate) use loom::cell::UnsafeCell;
