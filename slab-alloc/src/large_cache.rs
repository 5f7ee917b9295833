//! The large blocks a heap keeps after they are freed, for its next large allocations.
//!
//! A block above [`MAX_SMALL`](crate::size_class::MAX_SMALL) is a mapping of its own
//! (from [`MmapAlloc`]). Mapping one costs a system call and then a page fault, with the
//! kernel clearing the page, for every page the program touches; unmapping it costs
//! another call and a TLB shootdown. A program that allocates and fills such blocks over
//! and over (mimalloc-bench's `malloc-large`: 5 to 25 MiB, 20 live) paid all of that at
//! every allocation, while allocators with a heap top (glibc) reuse the pages.
//!
//! So a freed large block is kept, mapped and resident, and the next large request takes
//! a kept mapping: the best fit among them, split when it is longer (a mapping can be
//! unmapped in pieces, so the tail stays kept as a mapping of its own), or, when every
//! kept one is shorter, the longest grown with `mremap` and the pages of the next
//! longest moved into its new part (`mremap` to a fixed address moves page tables: no
//! copy, no fault), so that only what no kept page covers faults in fresh. Requests aligned to more than a page, and zeroed ones, skip the cache: a
//! fresh mapping reads as zeros for free, where a kept one would have to be cleared, which
//! costs the most for the large, sparsely used tables that programs `calloc`.
//!
//! Bounds: at most [`ENTRIES`] mappings and [`MAX_BYTES`] in all (a larger block is never
//! kept), the oldest going first to make room; a mapping kept longer than [`MAX_AGE`]
//! goes back to the system at the heap's next large operation or decay pass (the decay
//! thread's too), and every one at once on `trim` and when the system refuses one of
//! the heap's allocations (which the heap then tries once more). So a freed peak of large blocks leaves
//! within a second, as the slabs do. The system calls that release mappings are made after
//! the lock is dropped.
//!
//! The lock is taken by the registry's `fork` handlers with the heap's class locks (the
//! first class's header names it), so a child never finds it held by a thread it does not
//! have.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use std::time::{Duration, Instant};

use pagekeep_mmap::Cause;
use pagekeep_mmap::sys::{self, Placement};

use crate::sync::RawSpinLock;

/// The most mappings kept at once.
pub(crate) const ENTRIES: usize = 16;

/// The most bytes kept in all; a larger block is unmapped when freed.
///
/// On `malloc-large` (5 to 25 MiB blocks, 20 live, AMD EPYC), kept pages moved into
/// longer requests and 64 MiB left 332 000 page faults in 2 000 allocations; 128 MiB,
/// 211 000 (tcmalloc's page heap: 185 000), for 0.5% more peak memory: the pages kept
/// are those the next blocks use.
pub(crate) const MAX_BYTES: usize = 128 << 20;

/// How long a mapping is kept unused before it goes back to the system.
pub(crate) const MAX_AGE: Duration = Duration::from_millis(500);

/// A kept mapping: `len` bytes (whole pages) from `block`, unused since `since`.
#[derive(Clone, Copy, Debug)]
struct Kept {
    /// With the provenance of the whole mapping.
    block: NonNull<u8>,
    len: usize,
    since: Instant,
}

/// The kept mappings of one heap (module docs).
#[derive(Debug)]
pub(crate) struct LargeCache {
    lock: RawSpinLock,
    kept: UnsafeCell<[Option<Kept>; ENTRIES]>,
}

// SAFETY: the kept mappings are owned by the cache and touched only under its lock.
unsafe impl Sync for LargeCache {}
// SAFETY: as above; the mappings belong to the process, not to a thread.
unsafe impl Send for LargeCache {}

/// Mappings taken out of the cache under its lock, unmapped when this is dropped, after
/// the lock (declare it before the guard).
struct ToRelease {
    blocks: [Option<(NonNull<u8>, usize)>; ENTRIES],
}

impl ToRelease {
    fn new() -> Self {
        ToRelease {
            blocks: [None; ENTRIES],
        }
    }

    fn push(&mut self, kept: Kept) {
        // Each kept mapping leaves the cache once per call, and it holds at most
        // `ENTRIES`, so there is always a free place.
        if let Some(place) = self.blocks.iter_mut().find(|place| place.is_none()) {
            *place = Some((kept.block, kept.len));
        }
    }
}

impl Drop for ToRelease {
    fn drop(&mut self) {
        for (block, len) in self.blocks.iter().flatten() {
            // SAFETY: a kept mapping, taken out of the cache: nobody else owns or uses it.
            // Unmapping a piece of a mapping fails at the mapping-count limit: its pages
            // are then decommitted, so their memory goes back all the same.
            let _ = unsafe { sys::release_or_decommit(*block, *len) };
        }
    }
}

/// Moves the mappings kept longer than [`MAX_AGE`] at `now` into `released`.
fn expire(kept: &mut [Option<Kept>; ENTRIES], now: Instant, released: &mut ToRelease) {
    for slot in kept.iter_mut() {
        if slot.is_some_and(|old| now.saturating_duration_since(old.since) >= MAX_AGE) {
            released.push(slot.take().expect("checked above"));
        }
    }
}

/// The alignment `MmapAlloc` gives a block of `len` bytes: 2 MiB from 2 MiB on, so that
/// the kernel can back it with huge pages and move its page tables whole.
fn large_mapping_align(len: usize) -> usize {
    const HUGE_FRAME: usize = 2 << 20;
    if len >= HUGE_FRAME {
        HUGE_FRAME
    } else {
        sys::page_size()
    }
}

/// Takes at most `len` bytes from the front of a kept mapping: all of it when it is no
/// longer, else its head, the tail staying kept (a mapping can be unmapped and moved in
/// pieces).
fn split_off(slot: &mut Option<Kept>, len: usize) -> Kept {
    let kept = slot.take().expect("a kept mapping");
    if kept.len <= len {
        return kept;
    }
    *slot = Some(Kept {
        // SAFETY: `len < kept.len`: inside the kept mapping.
        block: unsafe { kept.block.add(len) },
        len: kept.len - len,
        since: kept.since,
    });
    Kept { len, ..kept }
}

/// The pieces one `take` moves into its block: the first it took, and at most one per
/// kept mapping.
struct Pieces {
    pieces: [Option<Kept>; ENTRIES + 1],
}

impl Pieces {
    fn new() -> Self {
        Pieces {
            pieces: [None; ENTRIES + 1],
        }
    }

    fn is_full(&self) -> bool {
        self.pieces.iter().all(Option::is_some)
    }

    /// Adds a piece; the caller checks first that there is room.
    fn push(&mut self, piece: Kept) {
        let place = self.pieces.iter_mut().find(|place| place.is_none());
        *place.expect("room checked by the caller") = Some(piece);
    }

    fn iter(&self) -> impl Iterator<Item = Kept> + '_ {
        self.pieces.iter().flatten().copied()
    }
}

impl LargeCache {
    /// An empty cache.
    pub(crate) const fn new() -> Self {
        LargeCache {
            lock: RawSpinLock::new(),
            kept: UnsafeCell::new([None; ENTRIES]),
        }
    }

    /// The lock, for the registry's `fork` handlers.
    pub(crate) fn lock(&self) -> &RawSpinLock {
        &self.lock
    }

    /// Runs `f` on the kept mappings under the lock, after moving those older than
    /// [`MAX_AGE`] into `released`.
    fn locked<R>(
        &self,
        now: Instant,
        released: &mut ToRelease,
        f: impl FnOnce(&mut [Option<Kept>; ENTRIES], &mut ToRelease) -> R,
    ) -> R {
        self.locked_as_is(|kept| {
            expire(kept, now, released);
            f(kept, released)
        })
    }

    /// Runs `f` on the kept mappings under the lock, expiring none.
    fn locked_as_is<R>(&self, f: impl FnOnce(&mut [Option<Kept>; ENTRIES]) -> R) -> R {
        let _guard = self.lock.guard();
        // SAFETY: the lock is held until the end of the function and the array is only
        // accessed under it, so this is the only reference.
        f(unsafe { &mut *self.kept.get() })
    }

    /// A mapping of exactly `len` bytes (a block length of [`MmapAlloc`]: whole pages)
    /// made of kept pages, or `None` when none is kept (or growing one failed).
    ///
    /// The shortest kept mapping that is long enough is split; when every one is
    /// shorter, the longest is grown (`mremap`) and the pages of the next longest are
    /// moved into the grown part (`mremap` to a fixed address: page tables only, no
    /// copy and no fault), until the request is covered or nothing is left. Only the
    /// part no kept page covers is fresh. Growing the longest alone left, on
    /// mimalloc-bench's `malloc-large`, a seventh of the bytes written to fault in
    /// fresh (a kept block is the shorter one half the time).
    ///
    /// [`MmapAlloc`]: pagekeep_mmap::MmapAlloc
    pub(crate) fn take(&self, len: usize) -> Option<NonNull<u8>> {
        if len > MAX_BYTES {
            return None;
        }
        let mut released = ToRelease::new();
        let first = self.locked(Instant::now(), &mut released, |kept, _| {
            // The shortest that is long enough, else the longest.
            let lengths = kept
                .iter()
                .enumerate()
                .filter_map(|(index, slot)| slot.map(|kept| (index, kept.len)));
            let (index, _) = lengths
                .clone()
                .filter(|&(_, kept_len)| kept_len >= len)
                .min_by_key(|&(_, kept_len)| kept_len)
                .or_else(|| lengths.max_by_key(|&(_, kept_len)| kept_len))?;
            Some(split_off(&mut kept[index], len))
        })?;
        if first.len == len {
            return Some(first.block);
        }
        // Shorter: grow it, keeping its pages (in place, or by moving page tables).
        // SAFETY: a kept mapping (or a whole piece of one) of `first.len` bytes, taken
        // out of the cache: ours.
        let grown = unsafe { sys::remap(first.block, first.len, len, Placement::MayMove) };
        let (block, mut filled, mut to_move) = match grown {
            Ok(grown) => (grown, first.len, Pieces::new()),
            Err(error) if matches!(error.cause(), Cause::Unsupported(_)) => {
                // No `mremap` (miri, macOS): no pages can move either. Give it back to
                // the system and let the caller map a fresh block.
                released.push(first);
                return None;
            }
            // A block made by an earlier `take` spans several of the kernel's mappings,
            // which `mremap` cannot resize: move its pages, with the others, into a
            // fresh mapping (as `MmapAlloc` maps one of `len` bytes).
            Err(_) => match sys::map_committed(len, large_mapping_align(len)) {
                Ok(fresh) => (fresh, 0, Pieces::new()),
                Err(_) => {
                    // No room: the block stays kept and the caller maps one (or, on
                    // failure, releases the kept ones and tries again).
                    self.put_back([first].into_iter());
                    return None;
                }
            },
        };
        if filled == 0 {
            to_move.push(first);
        }
        // The next longest kept mappings, until the request is covered.
        self.locked_as_is(|kept| {
            let mut need = len - first.len;
            while need > 0 && !to_move.is_full() {
                let Some(index) = (0..ENTRIES)
                    .filter(|&index| kept[index].is_some())
                    .max_by_key(|&index| kept[index].map(|kept| kept.len))
                else {
                    break;
                };
                let piece = split_off(&mut kept[index], need);
                need -= piece.len;
                to_move.push(piece);
            }
        });
        let mut failed = Pieces::new();
        for piece in to_move.iter() {
            // SAFETY: `filled + piece.len <= len`: the target is the part of `block` that
            // no kept page fills yet, fresh pages that we own and give up; the piece is a
            // kept mapping (or a whole piece of one) taken out of the cache, ours.
            let moved = unsafe {
                sys::remap(
                    piece.block,
                    piece.len,
                    piece.len,
                    Placement::At(block.add(filled)),
                )
            };
            match moved {
                Ok(_) => filled += piece.len,
                // A piece that spans two of the kernel's mappings cannot move on older
                // kernels: it stays kept, and its part of the block is fresh pages.
                Err(_) => failed.push(piece),
            }
        }
        self.put_back(failed.iter());
        Some(block)
    }

    /// Returns pieces taken by `take` and not used to the cache, as they were (their
    /// age kept), releasing any that no longer fits.
    fn put_back(&self, pieces: impl Iterator<Item = Kept>) {
        let mut released = ToRelease::new();
        self.locked_as_is(|kept| {
            for piece in pieces {
                match kept.iter_mut().find(|slot| slot.is_none()) {
                    Some(slot) => *slot = Some(piece),
                    None => released.push(piece),
                }
            }
        });
    }

    /// Keeps `block`, a freed mapping of `len` bytes (whole pages) that the caller owns
    /// and gives up, making room by releasing the oldest kept ones; returns `false`,
    /// keeping nothing, if it is longer than [`MAX_BYTES`]. A block that overlaps one
    /// already kept (a large block freed twice) is reported and the process aborted:
    /// kept twice, it would be handed out twice.
    ///
    /// # Safety
    /// - `block` is a whole mapping (or a whole piece of one) of `len` bytes made by
    ///   `pagekeep_mmap`, owned by the caller, with the provenance of the whole mapping, and
    ///   not used after this call.
    pub(crate) unsafe fn give(&self, block: NonNull<u8>, len: usize) -> bool {
        if len > MAX_BYTES {
            return false;
        }
        let now = Instant::now();
        let mut released = ToRelease::new();
        self.locked_as_is(|kept| {
            // Against every kept mapping, old ones included, before any is released: a
            // block freed twice after its first copy aged would otherwise be kept again
            // as its pages are unmapped.
            let end = block.addr().get() + len;
            if let Some(overlap) = kept.iter().flatten().find(|kept| {
                kept.block.addr().get() < end
                    && block.addr().get() < kept.block.addr().get() + kept.len
            }) {
                // Kept twice, it would be handed out twice: stop here instead.
                crate::sync::fatal(
                    "double free of a large block, already freed and kept for reuse \
                     (pointer, kept block)",
                    block.addr().get(),
                    overlap.block.addr().get(),
                );
            }
            expire(kept, now, &mut released);
            let mut total: usize = kept.iter().flatten().map(|kept| kept.len).sum();
            loop {
                let free = kept.iter().position(Option::is_none);
                if let Some(free) = free
                    && total + len <= MAX_BYTES
                {
                    kept[free] = Some(Kept {
                        block,
                        len,
                        since: now,
                    });
                    return;
                }
                // `len <= MAX_BYTES`, so some mapping is kept here: release the oldest.
                let Some(oldest) = (0..ENTRIES)
                    .filter(|&index| kept[index].is_some())
                    .min_by_key(|&index| kept[index].map(|kept| kept.since))
                else {
                    return;
                };
                let gone = kept[oldest].take().expect("found above");
                total -= gone.len;
                released.push(gone);
            }
        });
        true
    }

    /// A decay pass: releases the mappings kept longer than [`MAX_AGE`].
    pub(crate) fn decay(&self, now: Instant) {
        let mut released = ToRelease::new();
        self.locked(now, &mut released, |_, _| ());
    }

    /// Releases every kept mapping; `true` if there was one.
    pub(crate) fn release_all(&self) -> bool {
        let mut released = ToRelease::new();
        self.locked(Instant::now(), &mut released, |kept, released| {
            let mut any = false;
            for slot in kept.iter_mut() {
                if let Some(gone) = slot.take() {
                    released.push(gone);
                    any = true;
                }
            }
            any
        })
    }

    /// The bytes kept (those due to go back included: reading releases nothing).
    pub(crate) fn kept_bytes(&self) -> usize {
        self.locked_as_is(|kept| kept.iter().flatten().map(|kept| kept.len).sum())
    }
}

impl Drop for LargeCache {
    fn drop(&mut self) {
        let mut released = ToRelease::new();
        for slot in self.kept.get_mut().iter_mut() {
            if let Some(gone) = slot.take() {
                released.push(gone);
            }
        }
    }
}
