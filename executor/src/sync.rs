//! [`lock`]: the one way the runtime takes its mutexes.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking it as it is if a panic poisoned it.
///
/// Every mutex of the runtime guards short updates (a push, a pop, a swap of an
/// `Option`) that a panic cannot leave half done, and a handler's panic is contained per
/// request: refusing a poisoned lock would turn one panic into a stuck server.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
