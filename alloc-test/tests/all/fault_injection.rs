//! Allocators over a failing page source refuse instead of crashing, give every page
//! back, and work again once the source recovers.

use std::sync::atomic::{AtomicIsize, Ordering};

use core::ptr::NonNull;
use pagekeep_alloc_test::{
    ArenaSubject, GlobalSubject, Promises, SlabCacheSubject, Subject, check_cases, run,
};
use pagekeep_arena::ArenaConfig;
use pagekeep_mmap::{Contents, Decommit, DefaultPages, FailingSource, PageSource};
use pagekeep_slab::SlabHeap;

/// Counts the reservations a source has live, to show nothing leaks.
#[derive(Debug, Default)]
struct Counting<S> {
    inner: S,
    live: AtomicIsize,
}

// SAFETY: forwards to `S`, counting.
unsafe impl<S: PageSource> PageSource for Counting<S> {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn reserve(&self, len: usize, align: usize) -> pagekeep_mmap::Result<NonNull<u8>> {
        let ptr = self.inner.reserve(len, align)?;
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(ptr)
    }
    fn reserve_committed(&self, len: usize, align: usize) -> pagekeep_mmap::Result<NonNull<u8>> {
        let ptr = self.inner.reserve_committed(len, align)?;
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(ptr)
    }
    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> pagekeep_mmap::Result<()> {
        // SAFETY: forwarded.
        unsafe { self.inner.commit(ptr, len) }
    }
    unsafe fn decommit(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        mode: Decommit,
    ) -> pagekeep_mmap::Result<Contents> {
        // SAFETY: forwarded.
        unsafe { self.inner.decommit(ptr, len, mode) }
    }
    unsafe fn release(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        align: usize,
    ) -> pagekeep_mmap::Result<()> {
        self.live.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: forwarded.
        unsafe { self.inner.release(ptr, len, align) }
    }
}

type Source = FailingSource<Counting<DefaultPages>>;

fn leaked_source() -> &'static Source {
    Box::leak(Box::new(FailingSource::new(Counting::default())))
}

/// Runs programs while every 3rd request fails, then checks recovery and leaks.
fn fails_then_recovers<S: Subject>(source: &'static Source, make: impl Fn() -> S) {
    source.fail_nth(3);
    let failing = || {
        source.fail_nth(3);
        make()
    };
    check_cases(16, failing).unwrap();
    source.set_failing(true);
    check_cases(8, &make).unwrap();
    source.recover();
    let mut subject = make();
    let program = vec![
        pagekeep_alloc_test::Op::Alloc {
            size: 64,
            align_shift: 3,
            zeroed: false
        };
        32
    ];
    let summary = run(&mut subject, &program, 7).unwrap();
    assert_eq!(
        summary.refusals, 0,
        "allocates again once the source recovers"
    );
    drop(subject);
    assert!(source.injected_failures() > 0, "failures were injected");
}

#[test]
fn arena_over_a_failing_source() {
    let source = leaked_source();
    let config = ArenaConfig::new()
        .chunk_bytes(1 << 20)
        .oversize_bytes(64 << 10);
    fails_then_recovers(source, || ArenaSubject::with_source(source, config, true));
    assert_eq!(
        source.inner().live.load(Ordering::SeqCst),
        0,
        "every chunk was released"
    );
}

#[test]
fn slab_cache_over_a_failing_source() {
    let source = leaked_source();
    fails_then_recovers(source, || {
        SlabCacheSubject::with_source(128, 16, source, true)
    });
    assert_eq!(
        source.inner().live.load(Ordering::SeqCst),
        0,
        "every slab was released"
    );
}

#[test]
fn slab_heap_over_a_failing_source() {
    let source = leaked_source();
    let promises = Promises {
        max_align: 1 << 16,
        may_refuse: true,
        ..Promises::default()
    };
    fails_then_recovers(source, || {
        GlobalSubject::new("SlabHeap", SlabHeap::with_source(source), promises)
    });
}
