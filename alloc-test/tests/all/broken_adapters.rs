//! The suite catches allocators that break their promises, and shrinks the program that
//! shows it to a few steps.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::alloc::System;

use alloc_test::{Failure, GlobalSubject, Promises, Refused, Subject, check_cases};

/// Wraps the system allocator; each broken adapter below changes one thing.
fn system() -> GlobalSubject<System> {
    GlobalSubject::new("System", System, Promises::default())
}

/// Runs the suite and expects it to fail with `expected` in the reason.
fn expect_caught<S: Subject>(make: impl Fn() -> S, expected: &str) -> Failure {
    let failure = check_cases(64, make).expect_err("the suite must catch the broken adapter");
    assert!(
        failure.reason.contains(expected),
        "expected {expected}, got: {failure}"
    );
    failure
}

/// Hands out the previous block again when the new request fits in it.
struct Overlapping {
    inner: GlobalSubject<System>,
    last: Option<(NonNull<u8>, Layout)>,
}

// SAFETY: test-only, deliberately broken; it never frees a block twice because the model
// stops at the overlap it reports.
unsafe impl Subject for Overlapping {
    fn name(&self) -> String {
        "overlapping".to_owned()
    }
    fn promises(&self) -> Promises {
        self.inner.promises()
    }
    fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        if let Some((ptr, last)) = self.last
            && last.size() >= layout.size()
            && last.align() >= layout.align()
        {
            return Ok(ptr);
        }
        let ptr = self.inner.alloc(layout)?;
        self.last = Some((ptr, layout));
        Ok(ptr)
    }
    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        self.inner.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        if self.last.is_some_and(|(last, _)| last == ptr) {
            self.last = None;
        }
        // SAFETY: forwarded.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, Refused> {
        if self.last.is_some_and(|(last, _)| last == ptr) {
            self.last = None;
        }
        // SAFETY: forwarded.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// Loses the last kept byte when a block is resized.
struct LosesByteOnRealloc(GlobalSubject<System>);

// SAFETY: test-only, deliberately broken in the one way described.
unsafe impl Subject for LosesByteOnRealloc {
    fn name(&self) -> String {
        "loses a byte on realloc".to_owned()
    }
    fn promises(&self) -> Promises {
        self.0.promises()
    }
    fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        self.0.alloc(layout)
    }
    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        self.0.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, Refused> {
        // SAFETY: forwarded.
        let moved = unsafe { self.0.realloc(ptr, layout, new_size) }?;
        let last_kept = layout.size().min(new_size) - 1;
        // SAFETY: inside the new block.
        unsafe { moved.add(last_kept).write(!moved.add(last_kept).read()) };
        Ok(moved)
    }
}

/// Returns blocks one byte past an aligned address.
struct Misaligned(GlobalSubject<System>);

// SAFETY: test-only, deliberately broken; blocks it shifts are leaked, never freed shifted.
unsafe impl Subject for Misaligned {
    fn name(&self) -> String {
        "misaligned".to_owned()
    }
    fn promises(&self) -> Promises {
        self.0.promises()
    }
    fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        if layout.align() == 1 {
            return self.0.alloc(layout);
        }
        let padded =
            Layout::from_size_align(layout.size() + 1, layout.align()).map_err(|_| Refused)?;
        // SAFETY: one byte into a block one byte longer than asked.
        Ok(unsafe { self.0.alloc(padded)?.add(1) })
    }
    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        self.0.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: only aligned (unshifted) blocks reach here: the model stops at the
        // first misaligned one.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, Refused> {
        // SAFETY: forwarded.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Either an `alloc_zeroed` that forgets to zero one byte, or a limit it does not enforce.
struct Careless {
    inner: GlobalSubject<System>,
    forgets_a_zero: bool,
    limit: Option<usize>,
}

// SAFETY: test-only, deliberately broken as described.
unsafe impl Subject for Careless {
    fn name(&self) -> String {
        "careless".to_owned()
    }
    fn promises(&self) -> Promises {
        Promises {
            limit: self.limit,
            ..self.inner.promises()
        }
    }
    fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        self.inner.alloc(layout)
    }
    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        if !self.forgets_a_zero {
            return self.inner.alloc_zeroed(layout);
        }
        let ptr = self.inner.alloc(layout)?;
        // SAFETY: a fresh block of `layout.size()` bytes; the last is left as 0xEE.
        unsafe {
            ptr.write_bytes(0, layout.size());
            ptr.add(layout.size() - 1).write(0xEE);
        }
        Ok(ptr)
    }
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, Refused> {
        // SAFETY: forwarded.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

#[test]
fn overlapping_blocks_are_caught_and_shrunk() {
    let failure = expect_caught(
        || Overlapping {
            inner: system(),
            last: None,
        },
        "Overlap",
    );
    assert!(failure.program.len() <= 3, "{failure}");
}

#[test]
fn a_byte_lost_on_realloc_is_caught_and_shrunk() {
    let failure = expect_caught(|| LosesByteOnRealloc(system()), "Corrupted");
    assert!(failure.program.len() <= 2, "{failure}");
}

#[test]
fn misaligned_blocks_are_caught() {
    let failure = expect_caught(|| Misaligned(system()), "Misaligned");
    assert_eq!(failure.program.len(), 1, "{failure}");
}

#[test]
fn unzeroed_memory_is_caught() {
    let failure = expect_caught(
        || Careless {
            inner: system(),
            forgets_a_zero: true,
            limit: None,
        },
        "NotZeroed",
    );
    assert_eq!(failure.program.len(), 1, "{failure}");
}

#[test]
fn an_unenforced_limit_is_caught() {
    let careless = || Careless {
        inner: system(),
        forgets_a_zero: false,
        limit: Some(4096),
    };
    expect_caught(careless, "LimitExceeded");
}
