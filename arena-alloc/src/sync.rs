//! The synchronisation primitives of the pool's state machine, behind one name so that
//! the loom models (`--cfg loom`, see `pool::loom_models`) check the same code: std and
//! core by default, loom's with `cfg(loom)`.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicIsize, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, fence,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::{Builder, Thread, current, park, park_timeout};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicIsize, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, fence,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::{Builder, Thread, current, park};

/// Loom does not model time: a timed park is a park (a model never times out).
#[cfg(loom)]
pub(crate) fn park_timeout(_timeout: std::time::Duration) {
    park();
}
