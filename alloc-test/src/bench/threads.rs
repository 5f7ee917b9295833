//! Joining the scoped threads of a workload or a load.

use std::thread::ScopedJoinHandle;

/// Joins `threads` in order, each result in its place; a thread that panicked gives
/// `on_panic()` instead, so that a measurement reports the failure rather than unwinding.
///
/// # Examples
///
/// ```
/// use pagekeep_alloc_test::bench::threads::join_all;
///
/// let results = std::thread::scope(|scope| {
///     let threads = vec![scope.spawn(|| Ok(1)), scope.spawn(|| panic!("lost"))];
///     join_all(threads, || Err("a thread panicked"))
/// });
/// assert_eq!(results, [Ok(1), Err("a thread panicked")]);
/// ```
pub fn join_all<T>(threads: Vec<ScopedJoinHandle<'_, T>>, on_panic: impl Fn() -> T) -> Vec<T> {
    threads
        .into_iter()
        .map(|thread| thread.join().unwrap_or_else(|_| on_panic()))
        .collect()
}
