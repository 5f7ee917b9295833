//! Chunks: the reservations from a [`PageSource`] that an [`Arena`](crate::Arena) bumps
//! through.
//!
//! A chunk is one reservation, `base..base + reserved`. Its first [`HEADER_BYTES`] hold a
//! [`ChunkHeader`]; allocations start after it. Pages are committed from the start, the
//! committed part growing by doubling, so the most recent allocation of a chunk can grow
//! up to the end of the reservation without moving.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use pagekeep_mmap::{Decommit, PageSource};

/// Bytes at the start of every chunk kept for its header; allocations start after them.
/// A multiple of 64, so the first allocation of a chunk is 64-byte aligned.
pub(crate) const HEADER_BYTES: usize = 64;

/// Bookkeeping in the first bytes of every chunk.
#[repr(C)]
pub(crate) struct ChunkHeader {
    /// The next older chunk of the same list, if any.
    older: Option<Chunk>,
    /// Bytes reserved from the source: a multiple of the page size.
    reserved: usize,
    /// Bytes from the base that are committed read-write: a multiple of the page size,
    /// at least [`HEADER_BYTES`], at most `reserved`.
    committed: usize,
    /// Unique among all chunks ever made in the process (never 0): a chunk made at the
    /// address of a released one is still told apart from it (checkpoints rely on it).
    serial: u64,
    /// The address one past the chunk's last allocation, written when the chunk stops
    /// being the one the arena bumps through (an ordinary chunk retired by a newer one, an
    /// oversize chunk at creation); the arena's bump pointer says it for the current
    /// chunk. Read by [`Arena::iter_allocated_chunks`](crate::Arena::iter_allocated_chunks).
    used_end: usize,
}

/// Source of chunk serials.
static NEXT_CHUNK_SERIAL: AtomicU64 = AtomicU64::new(1);

const _: () = assert!(size_of::<ChunkHeader>() <= HEADER_BYTES);

/// A handle to a live chunk: a pointer to its header, which is at its base.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Chunk(NonNull<ChunkHeader>);

/// Rounds `bytes` up to a multiple of `page` (a power of two), or `None` on overflow.
#[inline]
pub(crate) fn round_up(bytes: usize, page: usize) -> Option<usize> {
    bytes
        .checked_add(page - 1)
        .map(|padded| padded & !(page - 1))
}

impl Chunk {
    /// Reserves a chunk of at least `reserve` bytes and commits at least its first `commit`
    /// bytes (both rounded up to pages), then writes its header.
    pub(crate) fn create<S: PageSource>(
        source: &S,
        reserve: usize,
        commit: usize,
        older: Option<Chunk>,
    ) -> Option<Chunk> {
        let page = source.page_size();
        let reserved = round_up(reserve.max(HEADER_BYTES), page)?;
        // Clamped before rounding: a step past the last page (`usize::MAX`: "commit
        // whole chunks") commits the whole reservation instead of overflowing.
        let committed = round_up(commit.max(HEADER_BYTES).min(reserved), page)?;
        let base = if committed == reserved {
            source.reserve_committed(reserved, page).ok()?
        } else {
            let base = source.reserve(reserved, page).ok()?;
            // SAFETY: `base..base + committed` is inside the reservation just made, which
            // is ours; `base` is page-aligned.
            if unsafe { source.commit(base, committed) }.is_err() {
                // SAFETY: the reservation just made, released once and never used.
                let _ = unsafe { source.release(base, reserved, page) };
                return None;
            }
            base
        };
        let header = base.cast::<ChunkHeader>();
        // SAFETY: the first page is committed and writable, page-aligned (so aligned for
        // the header) and holds at least `HEADER_BYTES`.
        unsafe {
            header.write(ChunkHeader {
                older,
                reserved,
                committed,
                serial: NEXT_CHUNK_SERIAL.fetch_add(1, Ordering::Relaxed),
                used_end: base.addr().get() + HEADER_BYTES,
            })
        };
        Some(Chunk(header))
    }

    /// The start of the chunk, with the provenance of the whole reservation.
    #[inline]
    pub(crate) fn base(self) -> NonNull<u8> {
        self.0.cast()
    }

    /// Where allocations start.
    #[inline]
    pub(crate) fn data_start(self) -> NonNull<u8> {
        // SAFETY: every chunk is at least one page, longer than the header.
        unsafe { self.base().add(HEADER_BYTES) }
    }

    #[inline]
    fn header(&self) -> &ChunkHeader {
        // SAFETY: the header was written at creation and lives until `release`, which
        // consumes the last handle the arena uses; nothing mutates it through `&`.
        unsafe { self.0.as_ref() }
    }

    /// The next older chunk of the list.
    pub(crate) fn older(self) -> Option<Chunk> {
        self.header().older
    }

    /// Replaces the link to the next older chunk.
    ///
    /// # Safety
    /// - The caller owns the list this chunk is in (no other handle walks it meanwhile).
    pub(crate) unsafe fn set_older(self, older: Option<Chunk>) {
        // SAFETY: the header is live; the caller owns the list.
        unsafe { (*self.0.as_ptr()).older = older };
    }

    /// The chunk's serial: unique among all chunks ever made in the process.
    #[inline]
    pub(crate) fn serial(self) -> u64 {
        self.header().serial
    }

    /// The address one past the last allocation, as last recorded by
    /// [`set_used_end`](Chunk::set_used_end).
    pub(crate) fn used_end(self) -> usize {
        self.header().used_end
    }

    /// Records the address one past the chunk's last allocation.
    ///
    /// # Safety
    /// - The caller owns the list this chunk is in (no other handle reads or writes the
    ///   header meanwhile).
    pub(crate) unsafe fn set_used_end(self, address: usize) {
        debug_assert!(
            (self.data_start().addr().get()..=self.committed_end()).contains(&address),
            "used end {address:#x} outside the chunk {:#x}..{:#x}",
            self.data_start().addr(),
            self.committed_end()
        );
        // SAFETY: the header is live; the caller owns the list.
        unsafe { (*self.0.as_ptr()).used_end = address };
    }

    /// Bytes reserved.
    #[inline]
    pub(crate) fn reserved(self) -> usize {
        self.header().reserved
    }

    /// Bytes committed from the base.
    #[inline]
    pub(crate) fn committed(self) -> usize {
        self.header().committed
    }

    /// The address one past the committed part.
    #[inline]
    pub(crate) fn committed_end(self) -> usize {
        self.base().addr().get() + self.committed()
    }

    /// The address one past the reservation.
    #[inline]
    pub(crate) fn reserved_end(self) -> usize {
        self.base().addr().get() + self.reserved()
    }

    /// Commits the chunk up to at least offset `needed` from the base, doubling what is
    /// committed when that is more, capped at the reservation.
    pub(crate) fn commit_to<S: PageSource>(self, source: &S, needed: usize) -> Option<()> {
        let committed = self.committed();
        if needed <= committed {
            return Some(());
        }
        if needed > self.reserved() {
            return None;
        }
        let page = source.page_size();
        let target = round_up(needed.max(committed.saturating_mul(2)), page)?.min(self.reserved());
        // SAFETY: `committed` is page-aligned and `committed..target` lies inside this
        // chunk's reservation, which the arena owns.
        let start = unsafe { self.base().add(committed) };
        // SAFETY: as above.
        unsafe { source.commit(start, target - committed) }.ok()?;
        // SAFETY: the header is live and only the owning arena writes it, through `&self`
        // of an arena that is not `Sync`.
        unsafe { (*self.0.as_ptr()).committed = target };
        Some(())
    }

    /// Gives back the memory of the pages from offset `from` to offset `to` (both rounded
    /// up to pages), keeping them committed.
    ///
    /// # Safety
    /// - Nothing relies on the contents of the chunk from `from` on.
    pub(crate) unsafe fn decommit_range<S: PageSource>(
        self,
        source: &S,
        from: usize,
        to: usize,
        mode: Decommit,
    ) {
        let page = source.page_size();
        let (Some(from), Some(to)) = (round_up(from, page), round_up(to, page)) else {
            return;
        };
        let to = to.min(self.committed());
        if from >= to {
            return;
        }
        // SAFETY: `from` is page-aligned and inside the committed part of this chunk.
        let start = unsafe { self.base().add(from) };
        // SAFETY: the range is committed, inside our reservation, and the caller promises
        // nothing relies on its contents. A failure leaves the pages as they were, which
        // is harmless.
        let _ = unsafe { source.decommit(start, to - from, mode) };
    }

    /// Releases the chunk to its source.
    ///
    /// # Safety
    /// - Nothing accesses the chunk (header or allocations) afterwards.
    pub(crate) unsafe fn release<S: PageSource>(self, source: &S) {
        let reserved = self.reserved();
        // SAFETY: the chunk is one whole reservation of `source` made with page
        // alignment; the caller promises nothing uses it any more. A failure leaks the
        // reservation, which is all that can be done on this path.
        let _ = unsafe { source.release(self.base(), reserved, source.page_size()) };
    }
}
