//! Mutation testing: deliberately broken adapters, one defect each, that the suite must
//! catch at the default number of programs (a surviving mutant fails the build), and
//! shrink to a few steps.

use core::alloc::{GlobalAlloc, Layout};
use core::ops::RangeInclusive;
use core::ptr::NonNull;
use std::alloc::System;
use std::collections::HashMap;
use std::thread::{self, ThreadId};

use allocator_api2::alloc::{AllocError, Allocator, Global};
use pagekeep_alloc_test::{
    AllocatorSubject, Failure, GlobalSubject, MeteredPages, Promises, Refused, Subject, cases,
    check_cases,
};
use pagekeep_slab::SlabHeap;

/// One defect, put on top of a correct allocator.
#[derive(Clone, Debug)]
enum Defect {
    /// Hands out the previous block again when the new request fits in it.
    HandsOutLastBlockAgain,
    /// Hands out a live block again when both requests' sizes are in the range.
    OverlapsIn(RangeInclusive<usize>),
    /// Loses the last kept byte when a block is resized.
    LosesByteOnRealloc,
    /// Returns aligned requests one byte past an aligned address.
    OneByteOff,
    /// `alloc_zeroed` leaves the last byte non-zero.
    ForgetsLastZero,
    /// Promises a limit of 4 KiB and does not enforce it.
    IgnoresLimit,
    /// Serves alignments above 4096 from memory aligned to 4096 only.
    IgnoresAlignAbove4096,
    /// Never frees.
    Leaks,
    /// A zero-sized request gets the address 1 whatever its alignment.
    DanglingZeroSize,
    /// A block freed by a thread that did not allocate it goes to the free lists of both
    /// threads.
    RemoteFreeToTwoThreads,
    /// A freed block is pushed on the free list twice.
    DoubleFreeListPush,
    /// Each block ends one byte before the next one starts... minus one: the next block
    /// starts on the last byte of the previous (a bump allocator's off-by-one).
    OffByOneTail,
    /// `alloc_zeroed` zeroes whole 8-byte words only, leaving the tail of recycled memory.
    ZeroesWholeWordsOnly,
    /// `grow_zeroed` zeroes from the old size rounded up to 8 bytes.
    GrowZeroedFromRoundedOldSize,
}

/// A correct allocator with one [`Defect`].
struct Broken {
    defect: Defect,
    inner: Box<dyn Subject + Send>,
    /// Blocks handed out and still live, for the overlapping defects.
    handed: Vec<(NonNull<u8>, Layout)>,
    /// Freed blocks kept for reuse, with the thread whose free list holds them.
    free_list: Vec<(ThreadId, NonNull<u8>, Layout)>,
    /// The thread that allocated each live block.
    owners: HashMap<usize, ThreadId>,
    /// The region the off-by-one bump allocator carves, and its cursor.
    region: Option<(NonNull<u8>, usize)>,
}

// SAFETY: the inner subject is `Send`; the rest are addresses of its blocks (or of the
// region this adapter owns), usable from any thread.
unsafe impl Send for Broken {}

const REGION: Layout = match Layout::from_size_align(256 << 20, 4096) {
    Ok(layout) => layout,
    Err(_) => panic!("a valid layout"),
};

/// Fills every block it hands out with junk (as jemalloc's `opt.junk` does), so that
/// memory that should be zeroed and is not shows it.
#[derive(Clone, Copy, Debug)]
struct Junk;

// SAFETY: forwards to `Global`, writing junk into fresh blocks only.
unsafe impl Allocator for Junk {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = Global.allocate(layout)?;
        // SAFETY: a fresh block of `block.len()` bytes.
        unsafe { block.cast::<u8>().write_bytes(0xa5, block.len()) };
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

fn large_alignments() -> Promises {
    Promises {
        max_align: 1 << 20,
        ..Promises::default()
    }
}

impl Broken {
    fn new(defect: Defect) -> Self {
        let inner: Box<dyn Subject + Send> = match defect {
            Defect::Leaks => Box::new(
                GlobalSubject::new(
                    "SlabHeap",
                    SlabHeap::with_source(MeteredPages::default()),
                    Promises {
                        max_align: 1 << 16,
                        ..Promises::default()
                    },
                )
                .with_footprint(|heap| {
                    heap.source().held_bytes()
                        + heap.stats().large_bytes
                        + heap.stats().large_bytes_kept
                }),
            ),
            Defect::DanglingZeroSize => {
                Box::new(AllocatorSubject::new("Global", Global, large_alignments()))
            }
            Defect::ZeroesWholeWordsOnly | Defect::GrowZeroedFromRoundedOldSize => {
                Box::new(AllocatorSubject::new("Junk", Junk, large_alignments()))
            }
            _ => Box::new(GlobalSubject::new("System", System, large_alignments())),
        };
        let region = matches!(defect, Defect::OffByOneTail).then(|| {
            // SAFETY: a non-zero layout; freed in `drop`.
            let base = NonNull::new(unsafe { System.alloc(REGION) }).expect("a region");
            (base, 0)
        });
        Broken {
            defect,
            inner,
            handed: Vec::new(),
            free_list: Vec::new(),
            owners: HashMap::new(),
            region,
        }
    }

    /// The off-by-one bump allocator.
    fn carve(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        let (base, cursor) = self.region.as_mut().ok_or(Refused)?;
        let start = (*cursor).next_multiple_of(layout.align());
        if start + layout.size() > REGION.size() {
            return Err(Refused);
        }
        // The defect: the next block starts on this one's last byte.
        *cursor = start + layout.size().saturating_sub(1);
        // SAFETY: inside the region.
        let ptr = unsafe { base.add(start) };
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    fn reused(&mut self, layout: Layout) -> Option<NonNull<[u8]>> {
        let me = thread::current().id();
        let position = self
            .free_list
            .iter()
            .position(|&(thread, _, free)| thread == me && free == layout)?;
        let (_, ptr, _) = self.free_list.remove(position);
        Some(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    fn overlapping(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let fits = |&&(_, held): &&(NonNull<u8>, Layout)| {
            held.size() >= layout.size() && held.align() >= layout.align()
        };
        let candidate = match &self.defect {
            Defect::HandsOutLastBlockAgain => self.handed.last().filter(fits),
            Defect::OverlapsIn(range) if range.contains(&layout.size()) => {
                self.handed.iter().find(fits)
            }
            _ => None,
        };
        candidate.map(|&(ptr, _)| NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    fn forget(&mut self, ptr: NonNull<u8>) {
        self.handed.retain(|&(held, _)| held != ptr);
    }
}

impl Drop for Broken {
    fn drop(&mut self) {
        if let Some((base, _)) = self.region {
            // SAFETY: allocated in `new` with this layout.
            unsafe { System.dealloc(base.as_ptr(), REGION) };
        }
    }
}

// SAFETY: test-only, deliberately broken in the one way its defect says; blocks it
// cannot free safely (shifted, handed out twice) are leaked, since the model stops at the
// first violation.
unsafe impl Subject for Broken {
    fn name(&self) -> String {
        format!("{:?}", self.defect)
    }

    fn promises(&self) -> Promises {
        let inner = self.inner.promises();
        match self.defect {
            Defect::IgnoresLimit => Promises {
                limit: Some(4096),
                ..inner
            },
            Defect::OffByOneTail => Promises {
                max_align: 4096,
                reuses_freed_memory: false,
                may_refuse: true,
                ..inner
            },
            _ => inner,
        }
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        if let Some(block) = self.overlapping(layout) {
            return Ok(block);
        }
        let block = match self.defect {
            Defect::OneByteOff if layout.align() > 1 => {
                let padded = Layout::from_size_align(layout.size() + 1, layout.align())
                    .map_err(|_| Refused)?;
                let block = self.inner.alloc(padded)?;
                // SAFETY: one byte into a block one byte longer than asked.
                let ptr = unsafe { block.cast::<u8>().add(1) };
                NonNull::slice_from_raw_parts(ptr, layout.size())
            }
            Defect::IgnoresAlignAbove4096 if layout.align() > 4096 => {
                let capped = Layout::from_size_align(layout.size(), 4096).map_err(|_| Refused)?;
                self.inner.alloc(capped)?
            }
            Defect::DanglingZeroSize if layout.size() == 0 => {
                NonNull::slice_from_raw_parts(NonNull::dangling(), 0)
            }
            Defect::RemoteFreeToTwoThreads | Defect::DoubleFreeListPush => {
                let block = match self.reused(layout) {
                    Some(block) => block,
                    None => self.inner.alloc(layout)?,
                };
                self.owners
                    .insert(block.cast::<u8>().addr().get(), thread::current().id());
                block
            }
            Defect::OffByOneTail => self.carve(layout)?,
            _ => self.inner.alloc(layout)?,
        };
        if matches!(
            self.defect,
            Defect::HandsOutLastBlockAgain | Defect::OverlapsIn(_)
        ) {
            self.handed.push((block.cast(), layout));
        }
        Ok(block)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        let zeroed_bytes = match self.defect {
            Defect::ForgetsLastZero => layout.size().saturating_sub(1),
            Defect::ZeroesWholeWordsOnly => layout.size() & !7,
            Defect::OffByOneTail
            | Defect::RemoteFreeToTwoThreads
            | Defect::DoubleFreeListPush
            | Defect::HandsOutLastBlockAgain
            | Defect::OverlapsIn(_)
            | Defect::DanglingZeroSize => layout.size(),
            _ => return self.inner.alloc_zeroed(layout),
        };
        let block = self.alloc(layout)?;
        // SAFETY: a block of at least `layout.size()` bytes.
        unsafe {
            block.cast::<u8>().write_bytes(0, zeroed_bytes);
            if zeroed_bytes < layout.size() && matches!(self.defect, Defect::ForgetsLastZero) {
                block.cast::<u8>().add(zeroed_bytes).write(0xee);
            }
        }
        Ok(block)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        self.forget(ptr);
        let me = thread::current().id();
        match self.defect {
            Defect::Leaks | Defect::OffByOneTail => {}
            Defect::DanglingZeroSize if layout.size() == 0 => {}
            Defect::RemoteFreeToTwoThreads => {
                let owner = self.owners.remove(&ptr.addr().get()).unwrap_or(me);
                if owner == me {
                    self.free_list.push((me, ptr, layout));
                } else {
                    self.free_list.push((owner, ptr, layout));
                    self.free_list.push((me, ptr, layout));
                }
            }
            Defect::DoubleFreeListPush => {
                self.owners.remove(&ptr.addr().get());
                self.free_list.push((me, ptr, layout));
                self.free_list.push((me, ptr, layout));
            }
            // SAFETY: forwarded.
            _ => unsafe { self.inner.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        match self.defect {
            Defect::DanglingZeroSize if layout.size() == 0 => return self.alloc(new),
            Defect::OffByOneTail
            | Defect::RemoteFreeToTwoThreads
            | Defect::DoubleFreeListPush
            | Defect::Leaks => {
                // By hand: a new block, the kept bytes copied, the old one freed.
                let moved = self.alloc(new)?;
                // SAFETY: live blocks (the same one when the defect hands it out twice:
                // hence `copy_to`), both at least this long; the old one is freed once.
                unsafe {
                    ptr.copy_to(moved.cast(), layout.size().min(new.size()));
                    self.dealloc(ptr, layout);
                }
                return Ok(moved);
            }
            _ => {}
        }
        self.forget(ptr);
        // SAFETY: forwarded.
        let moved = unsafe { self.inner.realloc(ptr, layout, new) }?;
        if matches!(self.defect, Defect::LosesByteOnRealloc) {
            let last_kept = layout.size().min(new.size()).saturating_sub(1);
            let moved = moved.cast::<u8>();
            // SAFETY: inside the new block.
            unsafe { moved.add(last_kept).write(!moved.add(last_kept).read()) };
        }
        Ok(moved)
    }

    unsafe fn grow_zeroed(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        if !matches!(self.defect, Defect::GrowZeroedFromRoundedOldSize) {
            // SAFETY: forwarded.
            return unsafe { self.inner.grow_zeroed(ptr, layout, new) };
        }
        // SAFETY: forwarded.
        let moved = unsafe { self.inner.realloc(ptr, layout, new) }?;
        let from = layout.size().next_multiple_of(8).min(moved.len());
        // SAFETY: inside the new block.
        unsafe {
            moved
                .cast::<u8>()
                .add(from)
                .write_bytes(0, moved.len() - from)
        };
        Ok(moved)
    }

    fn footprint(&self) -> Option<usize> {
        self.inner.footprint()
    }

    fn threaded(&mut self) -> Option<&mut (dyn Subject + Send)> {
        Some(self)
    }
}

/// Runs the suite at the default number of programs and expects it to fail with
/// `expected` in the reason.
fn expect_caught(defect: Defect, expected: &str) -> Failure {
    let failure = check_cases(cases(), || Broken::new(defect.clone()))
        .expect_err("the suite must catch the broken adapter");
    assert!(
        failure.reason.contains(expected),
        "expected {expected}, got: {failure}"
    );
    failure
}

#[test]
fn overlapping_blocks_are_caught_and_shrunk() {
    let failure = expect_caught(Defect::HandsOutLastBlockAgain, "Overlap");
    assert!(failure.program.len() <= 3, "{failure}");
}

#[test]
fn overlap_between_1025_and_2048_bytes_is_caught() {
    let failure = expect_caught(Defect::OverlapsIn(1025..=2048), "Overlap");
    assert!(failure.program.len() <= 3, "{failure}");
}

#[test]
fn overlap_between_8193_and_16384_bytes_is_caught() {
    let failure = expect_caught(Defect::OverlapsIn(8193..=16384), "Overlap");
    assert!(failure.program.len() <= 3, "{failure}");
}

#[test]
fn overlap_at_exactly_4096_bytes_is_caught() {
    let failure = expect_caught(Defect::OverlapsIn(4096..=4096), "Overlap");
    assert!(failure.program.len() <= 3, "{failure}");
}

#[test]
fn a_byte_lost_on_realloc_is_caught_and_shrunk() {
    let failure = expect_caught(Defect::LosesByteOnRealloc, "Corrupted");
    assert!(failure.program.len() <= 2, "{failure}");
}

#[test]
fn misaligned_blocks_are_caught() {
    let failure = expect_caught(Defect::OneByteOff, "Misaligned");
    assert_eq!(failure.program.len(), 1, "{failure}");
}

#[test]
fn alignment_above_4096_ignored_is_caught() {
    let failure = expect_caught(Defect::IgnoresAlignAbove4096, "Misaligned");
    assert!(failure.program.len() <= 3, "{failure}");
}

#[test]
fn unzeroed_memory_is_caught() {
    let failure = expect_caught(Defect::ForgetsLastZero, "NotZeroed");
    assert_eq!(failure.program.len(), 1, "{failure}");
}

#[test]
fn zeroing_whole_words_only_is_caught() {
    let failure = expect_caught(Defect::ZeroesWholeWordsOnly, "NotZeroed");
    assert_eq!(failure.program.len(), 1, "{failure}");
}

#[test]
fn grow_zeroed_leaving_bytes_is_caught() {
    let failure = expect_caught(Defect::GrowZeroedFromRoundedOldSize, "NotZeroed");
    assert!(failure.program.len() <= 2, "{failure}");
}

#[test]
fn an_unenforced_limit_is_caught() {
    expect_caught(Defect::IgnoresLimit, "LimitExceeded");
}

#[test]
fn a_leak_of_every_block_is_caught() {
    expect_caught(Defect::Leaks, "Leak");
}

#[test]
fn an_unaligned_zero_sized_block_is_caught() {
    let failure = expect_caught(Defect::DanglingZeroSize, "Misaligned");
    assert_eq!(failure.program.len(), 1, "{failure}");
}

#[test]
fn a_remote_freed_block_handed_to_two_threads_is_caught() {
    let failure = expect_caught(Defect::RemoteFreeToTwoThreads, "Overlap");
    assert!(failure.program.len() <= 8, "{failure}");
}

#[test]
fn a_block_handed_out_twice_after_a_free_is_caught() {
    let failure = expect_caught(Defect::DoubleFreeListPush, "Overlap");
    assert!(failure.program.len() <= 4, "{failure}");
}

#[test]
fn a_block_one_byte_short_is_caught() {
    let failure = expect_caught(Defect::OffByOneTail, "Overlap");
    assert!(failure.program.len() <= 2, "{failure}");
}
