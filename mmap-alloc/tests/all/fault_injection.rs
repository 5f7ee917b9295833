//! The fault-injecting source fails exactly what it is told to, and the default
//! `reserve_committed` gives a reservation back when its commit fails.

use core::cell::Cell;
use core::ptr::NonNull;
use std::io;

use pagekeep_mmap::{
    Cause, Contents, Decommit, DefaultPages, FailingSource, HeapPages, Operation, PageSource,
};

#[test]
fn the_nth_request_fails_once() {
    let source = FailingSource::new(DefaultPages::default());
    source.fail_nth(3);
    let mut kept = Vec::new();
    let mut failures = Vec::new();
    for request in 1..=5 {
        match source.reserve_committed(4096, 4096) {
            Ok(ptr) => kept.push(ptr),
            Err(error) => {
                assert_eq!(error.cause(), Cause::Injected);
                assert_eq!(error.kind(), io::ErrorKind::OutOfMemory);
                failures.push(request);
            }
        }
    }
    assert_eq!(failures, [3]);
    assert_eq!((source.requests(), source.injected_failures()), (5, 1));
    for ptr in kept {
        // SAFETY: each reservation made above, released once.
        unsafe { source.release(ptr, 4096, 4096).unwrap() };
    }
}

#[test]
fn failing_every_request_until_recovery() {
    let source = FailingSource::new(HeapPages);
    let ptr = source.reserve(8192, 4096).unwrap();
    source.set_failing(true);
    assert!(source.reserve(4096, 4096).is_err());
    // SAFETY: `ptr` is a live reservation of this source.
    let commit = unsafe { source.commit(ptr, 4096) };
    assert_eq!(commit.unwrap_err().operation(), Operation::Commit);
    // Giving memory back always works, so nothing leaks while failing.
    // SAFETY: as above; released once.
    unsafe {
        assert_eq!(
            source.decommit(ptr, 4096, Decommit::Zero).unwrap(),
            Contents::Zeroed
        );
        source.release(ptr, 8192, 4096).unwrap();
    }
    source.recover();
    let again = source.reserve_committed(4096, 4096).unwrap();
    // SAFETY: committed; released once.
    unsafe {
        again.write(1);
        source.release(again, 4096, 4096).unwrap();
    }
    assert_eq!(source.injected_failures(), 2);
    assert!(format!("{source:?}").contains("injected_failures: 2"));
}

/// A source whose commits always fail and that counts live reservations.
#[derive(Debug, Default)]
struct CommitAlwaysFails {
    live: Cell<isize>,
}

// SAFETY: reservations come from `HeapPages`, which keeps the promises; commit hands out
// nothing.
unsafe impl PageSource for CommitAlwaysFails {
    fn page_size(&self) -> usize {
        HeapPages.page_size()
    }
    fn reserve(&self, len: usize, align: usize) -> pagekeep_mmap::Result<NonNull<u8>> {
        let ptr = HeapPages.reserve(len, align)?;
        self.live.set(self.live.get() + 1);
        Ok(ptr)
    }
    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> pagekeep_mmap::Result<()> {
        Err(pagekeep_mmap::Error::new(
            Operation::Commit,
            Cause::Injected,
            ptr.addr().get(),
            len,
        ))
    }
    unsafe fn decommit(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        mode: Decommit,
    ) -> pagekeep_mmap::Result<Contents> {
        // SAFETY: forwarded from the caller.
        unsafe { HeapPages.decommit(ptr, len, mode) }
    }
    unsafe fn release(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        align: usize,
    ) -> pagekeep_mmap::Result<()> {
        self.live.set(self.live.get() - 1);
        // SAFETY: forwarded from the caller.
        unsafe { HeapPages.release(ptr, len, align) }
    }
}

#[test]
fn a_failed_commit_releases_the_reservation() {
    let source = CommitAlwaysFails::default();
    let error = source.reserve_committed(4096, 4096).unwrap_err();
    assert_eq!(error.operation(), Operation::Commit);
    assert_eq!(source.live.get(), 0, "the reservation was given back");
}
