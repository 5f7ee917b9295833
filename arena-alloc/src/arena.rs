//! [`Arena`]: a bump allocator over chunks from a [`PageSource`].
//!
//! The arena bumps upwards through its current chunk: an allocation rounds the bump
//! pointer up to the alignment and adds the size, so the most recent allocation ends at
//! the bump pointer and can grow or shrink in place by moving it. The fast path compares
//! against `end`, which is the smaller of the committed end of the current chunk and the
//! point where the allocation limit is reached; everything else (committing more,
//! a new chunk, a dedicated chunk for an oversize request, the limit) is the cold path.

use core::alloc::Layout;
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::num::NonZeroUsize;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::{DefaultPages, PageSource};

use crate::boxed::ArenaBox;
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::chunk::{Chunk, HEADER_BYTES, round_up};
use crate::config::ArenaConfig;
use crate::stats::ArenaStats;

/// Source of arena identities, so a checkpoint is never applied to another arena.
static NEXT_ARENA_ID: AtomicU64 = AtomicU64::new(1);

/// A bump allocator: allocation is a pointer bump, everything is freed at once by
/// [`reset`](Arena::reset), by [`rewind`](Arena::rewind) to a [`Checkpoint`], or on drop.
///
/// `MIN_ALIGN` (a power of two, default 1) is a minimum alignment of every allocation
/// known at compile time: with `MIN_ALIGN >= align_of::<T>()` the fast path does no
/// rounding at all. Values placed in the arena are not dropped (use [`ArenaBox`] for
/// that).
///
/// # Examples
///
/// ```
/// use pagekeep_arena::Arena;
/// use allocator_api2::vec::Vec;
///
/// let mut arena = Arena::new();
/// let answer = arena.alloc(42u64);
/// *answer += 1;
/// let name = arena.alloc_str("arena");
/// let mut numbers = Vec::new_in(&arena);
/// for n in 0..1000u32 {
///     numbers.push(n); // grows in place: it is the arena's latest allocation
/// }
/// assert_eq!((*answer, &*name, numbers.len()), (43, "arena", 1000));
/// drop(numbers);
/// arena.reset();
/// assert_eq!(arena.stats().allocated_bytes, 0);
/// ```
pub struct Arena<S: PageSource = DefaultPages, const MIN_ALIGN: usize = 1> {
    /// The bump pointer: the first free byte of the current chunk, with the chunk's
    /// provenance (dangling before the first chunk). Always `MIN_ALIGN`-aligned once a
    /// chunk exists; `data_start <= ptr <= end`.
    ptr: Cell<NonNull<u8>>,
    /// The address where the fast path stops: the smaller of the committed end of the
    /// current chunk and the address where the allocation limit is reached.
    end: Cell<usize>,
    /// The newest ordinary chunk, whose list links the older ones.
    current: Cell<Option<Chunk>>,
    /// The committed end of `current` (a copy of its header's, so that `reset` and the
    /// limit bookkeeping touch only this struct, not a chunk page that may be cold).
    committed_end: Cell<usize>,
    /// Ordinary chunks in the list of `current`.
    chunks: Cell<usize>,
    /// The newest dedicated chunk of an oversize request.
    oversize: Cell<Option<Chunk>>,
    /// Chunks in the list of `oversize`.
    oversize_chunks: Cell<usize>,
    /// Bytes handed out from chunks other than the current one.
    retired_bytes: Cell<usize>,
    /// The highest address the bump pointer reached in the current chunk since its
    /// pages were last decommitted: pages below it may hold data.
    high_water: Cell<usize>,
    /// The highest address the bump pointer reached in the current chunk since the last
    /// reset.
    cycle_high: Cell<usize>,
    /// Bytes from the current chunk's base that the previous reset cycle used: `reset`
    /// keeps them committed (with the warm watermark), so that steady usage is never
    /// decommitted and faulted in again every cycle; only a drop in usage is given back.
    previous_cycle_bytes: Cell<usize>,
    /// The most bytes allocated at once, as of the last fold (see `fold_marks`).
    peak_bytes: Cell<usize>,
    /// The highest address the bump pointer reached in the current chunk since the last
    /// fold: the only bookkeeping a free of the latest allocation does.
    lowered_from: Cell<usize>,
    /// Bumped by every reset: checkpoints from before a reset are stale.
    epoch: Cell<u64>,
    /// What was allocated when the limit was last lowered below it (0 otherwise): the
    /// total stays at most the larger of the limit and this (see `set_limit_bytes`).
    limit_floor_bytes: usize,
    id: u64,
    config: ArenaConfig,
    source: S,
    /// `Cell`s already make the arena `!Sync`; this documents it.
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: the arena owns its chunks as a `Box` owns its block; nothing else points into
// them except borrows of the arena, which cannot cross threads with it.
unsafe impl<S: PageSource + Send, const MIN_ALIGN: usize> Send for Arena<S, MIN_ALIGN> {}

impl Arena {
    /// An empty arena over the default page source with the default configuration. No
    /// memory is reserved until the first allocation.
    pub fn new() -> Self {
        Arena::with_source(DefaultPages::default(), ArenaConfig::new())
    }

    /// An empty arena over the default page source.
    pub fn with_config(config: ArenaConfig) -> Self {
        Arena::with_source(DefaultPages::default(), config)
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

/// The panic of the infallible methods.
#[cold]
#[inline(never)]
#[track_caller]
fn allocation_failed(layout: Layout) -> ! {
    panic!(
        "arena allocation of {} bytes (alignment {}) failed: limit reached or page source exhausted",
        layout.size(),
        layout.align()
    )
}

impl<S: PageSource, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    const MIN_ALIGN_OK: () = assert!(
        MIN_ALIGN.is_power_of_two() && MIN_ALIGN <= 4096,
        "MIN_ALIGN must be a power of two of at most 4096"
    );

    /// Where the bump pointer of an empty chunk starts: its data, aligned to `MIN_ALIGN`.
    #[inline]
    fn chunk_start(chunk: Chunk) -> NonNull<u8> {
        let data = chunk.data_start();
        let pad = data.addr().get().wrapping_neg() & (MIN_ALIGN - 1);
        // SAFETY: `pad < MIN_ALIGN <= 4096`, within the chunk's first committed page
        // beyond the header (chunks commit at least one page and the header is 64 bytes:
        // for `MIN_ALIGN == 4096` the pad ends the first page exactly).
        unsafe { data.add(pad) }
    }

    /// An empty arena over `source`. No memory is reserved until the first allocation.
    pub fn with_source(source: S, config: ArenaConfig) -> Self {
        let () = Self::MIN_ALIGN_OK;
        // Aligned to `MIN_ALIGN`, as the bump pointer always is.
        let dangling = dangling_aligned(MIN_ALIGN);
        Arena {
            ptr: Cell::new(dangling),
            end: Cell::new(dangling.addr().get()),
            current: Cell::new(None),
            committed_end: Cell::new(0),
            chunks: Cell::new(0),
            oversize: Cell::new(None),
            oversize_chunks: Cell::new(0),
            retired_bytes: Cell::new(0),
            high_water: Cell::new(0),
            cycle_high: Cell::new(0),
            previous_cycle_bytes: Cell::new(0),
            peak_bytes: Cell::new(0),
            lowered_from: Cell::new(0),
            epoch: Cell::new(0),
            limit_floor_bytes: 0,
            id: NEXT_ARENA_ID.fetch_add(1, Ordering::Relaxed),
            config,
            source,
            _not_sync: PhantomData,
        }
    }

    /// The page source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The configuration.
    pub fn config(&self) -> &ArenaConfig {
        &self.config
    }

    /// `size` rounded up to `MIN_ALIGN`. Cannot overflow: a `Layout`'s size is at most
    /// `isize::MAX` rounded down to its alignment.
    #[inline(always)]
    const fn padded_size(size: usize) -> usize {
        if MIN_ALIGN > 1 {
            (size + MIN_ALIGN - 1) & !(MIN_ALIGN - 1)
        } else {
            size
        }
    }

    /// The fast path: bumps within `ptr..end`, or returns `None`.
    #[inline(always)]
    fn try_bump(&self, layout: Layout) -> Option<NonNull<u8>> {
        let ptr = self.ptr.get();
        let address = ptr.addr().get();
        let pad = if layout.align() <= MIN_ALIGN {
            0
        } else {
            address.wrapping_neg() & (layout.align() - 1)
        };
        let size = Self::padded_size(layout.size());
        // `end >= address` always; `pad < align` and `size <= isize::MAX`, so no overflow.
        if pad + size <= self.end.get() - address {
            // SAFETY: `ptr + pad + size <= end`, inside the committed part of the current
            // chunk (or `pad + size == 0` before the first chunk).
            let start = unsafe { ptr.add(pad) };
            // SAFETY: as above.
            let end = unsafe { start.add(size) };
            // A zero-sized request takes no memory, not even its padding: the bump
            // pointer stays (a conditional move, not a branch, on the fast path).
            let next = if size == 0 { ptr } else { end };
            self.ptr.set(next);
            Some(start)
        } else {
            None
        }
    }

    /// Allocates memory for `layout`; its contents are unspecified. A zero-sized
    /// layout takes no memory and always succeeds, whatever its alignment and the limit.
    ///
    /// # Errors
    /// The allocation limit would be exceeded, or the page source is exhausted.
    #[inline(always)]
    pub fn try_alloc_layout(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        match self.try_bump(layout) {
            Some(ptr) => Ok(ptr),
            None => self.alloc_slow(layout),
        }
    }

    /// Allocates memory for `layout`; its contents are unspecified.
    ///
    /// # Panics
    /// When [`try_alloc_layout`](Arena::try_alloc_layout) would fail.
    #[inline(always)]
    pub fn alloc_layout(&self, layout: Layout) -> NonNull<u8> {
        match self.try_alloc_layout(layout) {
            Ok(ptr) => ptr,
            Err(AllocError) => allocation_failed(layout),
        }
    }

    /// Bytes allocated since the last reset, padding included.
    #[inline]
    pub fn allocated_bytes(&self) -> usize {
        let used = match self.current.get() {
            Some(chunk) => self.ptr.get().addr().get() - chunk.data_start().addr().get(),
            None => 0,
        };
        self.retired_bytes.get() + used
    }

    /// Bytes that may still be allocated before the limit is reached.
    fn remaining_bytes(&self) -> usize {
        self.config
            .limit_bytes
            .saturating_sub(self.allocated_bytes())
    }

    /// Recomputes `end` for the current chunk.
    fn update_end(&self) {
        if self.current.get().is_some() {
            let address = self.ptr.get().addr().get();
            let limit_end = address.saturating_add(self.remaining_bytes());
            self.end.set(self.committed_end.get().min(limit_end));
        }
    }

    /// Records that the bump pointer is about to move down (a free or shrink of the
    /// latest allocation): one compare, folded into the statistics later.
    #[inline(always)]
    fn note_lowering(&self) {
        let address = self.ptr.get().addr().get();
        if address > self.lowered_from.get() {
            self.lowered_from.set(address);
        }
    }

    /// Folds the highest address reached since the last fold into the peak and the
    /// high-water marks. Runs before the allocated total changes other than by bumping
    /// (a new chunk, an oversize chunk, a reset or a rewind), so the peak is exact.
    fn fold_marks(&self) {
        let Some(chunk) = self.current.get() else {
            return;
        };
        let top = self.lowered_from.get().max(self.ptr.get().addr().get());
        let data = chunk.data_start().addr().get();
        self.peak_bytes.set(
            self.peak_bytes
                .get()
                .max(self.retired_bytes.get() + top - data),
        );
        self.high_water.set(self.high_water.get().max(top));
        self.cycle_high.set(self.cycle_high.get().max(top));
        self.lowered_from.set(0);
    }

    /// The cold path: commit more of the current chunk, start a new chunk, or give the
    /// request a dedicated chunk.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        if layout.size() == 0 {
            // No memory is needed, so nothing is charged, padded, reserved or committed:
            // any non-null address with the alignment will do. (The fast path serves a
            // zero-sized request that fits the current chunk without moving the bump
            // pointer.) Freeing or resizing it is sound: it is the latest allocation only
            // if its address is the bump pointer's, and then growing it bumps from there.
            return Ok(dangling_aligned(layout.align().max(MIN_ALIGN)));
        }
        let align = layout.align().max(MIN_ALIGN);
        let size = Self::padded_size(layout.size());
        let result = self.alloc_slow_inner(align, size);
        self.maybe_check_invariants();
        result
    }

    fn alloc_slow_inner(&self, align: usize, size: usize) -> Result<NonNull<u8>, AllocError> {
        // 1. The current chunk, after committing more of it (oversize requests skip it).
        if let Some(chunk) = self
            .current
            .get()
            .filter(|_| size <= self.config.oversize_bytes)
        {
            let ptr = self.ptr.get();
            let address = ptr.addr().get();
            let pad = address.wrapping_neg() & (align - 1);
            let need = pad.checked_add(size).ok_or(AllocError)?;
            if need > self.remaining_bytes() {
                return Err(AllocError);
            }
            if need <= chunk.reserved_end() - address {
                let offset = address - chunk.base().addr().get() + need;
                if chunk.commit_to(&self.source, offset).is_some() {
                    self.committed_end.set(chunk.committed_end());
                    // SAFETY: `ptr + need` is now inside the committed part of the chunk.
                    let start = unsafe { ptr.add(pad) };
                    // SAFETY: as above.
                    self.ptr.set(unsafe { start.add(size) });
                    self.update_end();
                    return Ok(start);
                }
                // Committing failed: a new chunk would fail the same way or succeed from
                // a fresh reservation; try it below.
            }
        }
        // The padding at the start of a fresh chunk counts against the limit too: its
        // base is page-aligned, so for alignments up to a page the padding after the
        // header is known in advance; beyond a page, assume the worst.
        let fresh_pad = if align <= self.source.page_size() {
            HEADER_BYTES.wrapping_neg() & (align - 1)
        } else {
            align - 1
        };
        let charged = if size > self.config.oversize_bytes {
            // Oversize chunks are charged their request only (see below).
            size
        } else {
            fresh_pad.checked_add(size).ok_or(AllocError)?
        };
        if charged > self.remaining_bytes() {
            return Err(AllocError);
        }
        // Worst case of a fresh chunk: header, padding to `align`, the request.
        let span = HEADER_BYTES
            .checked_add(align - 1)
            .and_then(|bytes| bytes.checked_add(size))
            .ok_or(AllocError)?;
        self.fold_marks();
        // 2. A dedicated chunk for an oversize request.
        if size > self.config.oversize_bytes {
            let chunk =
                Chunk::create(&self.source, span, span, self.oversize.get()).ok_or(AllocError)?;
            let data = chunk.data_start();
            let pad = data.addr().get().wrapping_neg() & (align - 1);
            // SAFETY: the arena owns its chunk lists.
            unsafe { chunk.set_used_end(data.addr().get() + pad + size) };
            self.oversize.set(Some(chunk));
            self.oversize_chunks.set(self.oversize_chunks.get() + 1);
            self.retired_bytes.set(self.retired_bytes.get() + size);
            self.update_end();
            // SAFETY: `pad + size <= span - HEADER_BYTES`, inside the committed chunk.
            return Ok(unsafe { data.add(pad) });
        }
        // 3. A new ordinary chunk, which becomes the current one.
        let reserve = span.max(self.config.chunk_bytes);
        let commit = span.max(self.config.commit_step_bytes);
        let chunk =
            Chunk::create(&self.source, reserve, commit, self.current.get()).ok_or(AllocError)?;
        let retiring = self.allocated_bytes();
        if let Some(retired) = self.current.get() {
            // SAFETY: the arena owns its chunk lists.
            unsafe { retired.set_used_end(self.ptr.get().addr().get()) };
        }
        self.retired_bytes.set(retiring);
        self.current.set(Some(chunk));
        self.committed_end.set(chunk.committed_end());
        self.chunks.set(self.chunks.get() + 1);
        let data = chunk.data_start();
        let pad = data.addr().get().wrapping_neg() & (align - 1);
        // SAFETY: `pad + size <= span - HEADER_BYTES`, inside the committed part.
        let start = unsafe { data.add(pad) };
        self.high_water.set(data.addr().get());
        self.cycle_high.set(data.addr().get());
        self.previous_cycle_bytes.set(0);
        // SAFETY: as above.
        self.ptr.set(unsafe { start.add(size) });
        self.update_end();
        Ok(start)
    }

    /// Whether `ptr..ptr + size` is the most recent allocation of the current chunk.
    #[inline(always)]
    fn is_last(&self, ptr: NonNull<u8>, size: usize) -> bool {
        ptr.addr().get().wrapping_add(Self::padded_size(size)) == self.ptr.get().addr().get()
    }

    /// Tries to make the most recent allocation, at `ptr`, `new_size` bytes long in
    /// place; returns it with the chunk's provenance.
    #[inline]
    fn resize_last_in_place(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let bump = self.ptr.get();
        let start = ptr.addr().get();
        let new_end = start.checked_add(Self::padded_size(new_size))?;
        if new_end <= self.end.get() {
            if new_end < bump.addr().get() {
                self.note_lowering();
            }
            self.ptr.set(bump.with_addr(chunk_address(new_end)));
            return Some(bump.with_addr(ptr.addr()));
        }
        self.extend_last_slow(ptr, new_end)
    }

    /// The cold part of growing the last allocation: commit more of the chunk.
    #[cold]
    #[inline(never)]
    fn extend_last_slow(&self, ptr: NonNull<u8>, new_end: usize) -> Option<NonNull<u8>> {
        let chunk = self.current.get()?;
        let bump = self.ptr.get();
        let growth = new_end - bump.addr().get();
        if growth > self.remaining_bytes() || new_end > chunk.reserved_end() {
            return None;
        }
        chunk.commit_to(&self.source, new_end - chunk.base().addr().get())?;
        self.committed_end.set(chunk.committed_end());
        self.ptr.set(bump.with_addr(chunk_address(new_end)));
        self.update_end();
        Some(bump.with_addr(ptr.addr()))
    }

    /// Frees `ptr` if it is the most recent allocation; otherwise does nothing (its
    /// memory comes back at the next reset).
    ///
    /// # Safety
    /// - `ptr` was allocated by this arena with `layout` and is not used afterwards.
    #[inline]
    pub unsafe fn dealloc(&self, ptr: NonNull<u8>, layout: Layout) {
        if self.is_last(ptr, layout.size()) {
            self.note_lowering();
            self.ptr.set(self.ptr.get().with_addr(ptr.addr()));
        }
    }

    /// Resizes an allocation: in place when it is the most recent one and there is room
    /// (growth) or always (shrinking), else by copying to a new allocation.
    ///
    /// # Safety
    /// - `ptr` was allocated by this arena with `old` and is not used afterwards unless the
    ///   result is `Err`.
    ///
    /// # Errors
    /// No memory for a moved allocation (the old one is then untouched).
    #[inline]
    pub unsafe fn try_realloc(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<u8>, AllocError> {
        if self.is_last(ptr, old.size()) && ptr.addr().get() & (new.align() - 1) == 0 {
            if let Some(resized) = self.resize_last_in_place(ptr, new.size()) {
                return Ok(resized);
            }
        } else if new.size() <= old.size() && ptr.addr().get() & (new.align() - 1) == 0 {
            return Ok(ptr);
        }
        let moved = self.try_alloc_layout(new)?;
        // SAFETY: `ptr` is readable for `old.size()` bytes, `moved` writable for
        // `new.size()`, and they do not overlap: `moved` is fresh.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr(), old.size().min(new.size()))
        };
        Ok(moved)
    }

    /// Allocates `value` and returns a reference to it.
    ///
    /// # Panics
    /// When the allocation fails (see [`try_alloc`](Arena::try_alloc)).
    #[inline(always)]
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc<T>(&self, value: T) -> &mut T {
        self.alloc_with(|| value)
    }

    /// Allocates `value` and returns a reference to it.
    ///
    /// # Errors
    /// The allocation limit would be exceeded or the page source is exhausted; `value`
    /// is dropped.
    #[inline(always)]
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc<T>(&self, value: T) -> Result<&mut T, AllocError> {
        self.try_alloc_with(|| value)
    }

    /// Allocates room for a `T` and writes `make()` straight into it, which lets the
    /// compiler build large values in place.
    ///
    /// # Panics
    /// When the allocation fails, or if `make` panics.
    #[inline(always)]
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_with<T>(&self, make: impl FnOnce() -> T) -> &mut T {
        let ptr = self.alloc_layout(Layout::new::<T>()).cast::<T>();
        // SAFETY: fresh memory, aligned and large enough for a `T`, owned by the borrow.
        unsafe {
            ptr.write(make());
            &mut *ptr.as_ptr()
        }
    }

    /// Allocates room for a `T` and writes `make()` into it.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc); `make` is then not called.
    #[inline(always)]
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_with<T>(&self, make: impl FnOnce() -> T) -> Result<&mut T, AllocError> {
        let ptr = self.try_alloc_layout(Layout::new::<T>())?.cast::<T>();
        // SAFETY: fresh memory, aligned and large enough for a `T`, owned by the borrow.
        unsafe {
            ptr.write(make());
            Ok(&mut *ptr.as_ptr())
        }
    }

    /// Allocates `value` in an [`ArenaBox`], which drops it when the box is dropped.
    ///
    /// # Panics
    /// When the allocation fails.
    #[inline]
    pub fn alloc_box<T>(&self, value: T) -> ArenaBox<'_, T> {
        let place = self
            .alloc_layout(Layout::new::<T>())
            .cast::<MaybeUninit<T>>();
        // SAFETY: fresh memory, aligned and large enough for a `T`, owned by the borrow.
        ArenaBox::new_in(unsafe { &mut *place.as_ptr() }, value)
    }

    /// Allocates `value` in an [`ArenaBox`].
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc).
    #[inline]
    pub fn try_alloc_box<T>(&self, value: T) -> Result<ArenaBox<'_, T>, AllocError> {
        let place = self.try_alloc_uninit::<T>()?;
        Ok(ArenaBox::new_in(place, value))
    }

    /// Uninitialised room for `len` values of `T`.
    #[inline]
    fn try_alloc_uninit_slice<T>(&self, len: usize) -> Result<NonNull<T>, AllocError> {
        let layout = Layout::array::<T>(len).map_err(|_| AllocError)?;
        Ok(self.try_alloc_layout(layout)?.cast::<T>())
    }

    /// Copies `values` into the arena.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc).
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_slice_copy<T: Copy>(&self, values: &[T]) -> Result<&mut [T], AllocError> {
        let ptr = self.try_alloc_uninit_slice::<T>(values.len())?;
        // SAFETY: fresh room for `values.len()` elements, not overlapping `values`.
        unsafe {
            ptr::copy_nonoverlapping(values.as_ptr(), ptr.as_ptr(), values.len());
            Ok(core::slice::from_raw_parts_mut(ptr.as_ptr(), values.len()))
        }
    }

    /// Copies `values` into the arena.
    ///
    /// # Panics
    /// When the allocation fails.
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_slice_copy<T: Copy>(&self, values: &[T]) -> &mut [T] {
        self.try_alloc_slice_copy(values)
            .unwrap_or_else(|AllocError| allocation_failed(Layout::for_value(values)))
    }

    /// Clones `values` into the arena.
    ///
    /// # Panics
    /// When the allocation fails, or if a `clone` panics (the clones made so far are
    /// leaked).
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_slice_clone<T: Clone>(&self, values: &[T]) -> &mut [T] {
        self.alloc_slice_fill_with(values.len(), |index| values[index].clone())
    }

    /// Clones `values` into the arena.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc).
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_slice_clone<T: Clone>(&self, values: &[T]) -> Result<&mut [T], AllocError> {
        self.try_alloc_slice_fill_with(values.len(), |index| values[index].clone())
    }

    /// Allocates `len` values made by `make(index)`.
    ///
    /// # Panics
    /// When the allocation fails, or if `make` panics (the values made so far are leaked).
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_slice_fill_with<T>(&self, len: usize, make: impl FnMut(usize) -> T) -> &mut [T] {
        match self.try_alloc_slice_fill_with(len, make) {
            Ok(slice) => slice,
            Err(AllocError) => {
                allocation_failed(Layout::array::<T>(len).unwrap_or(Layout::new::<T>()))
            }
        }
    }

    /// Allocates `len` values made by `make(index)`.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc); `make` is then not called.
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_slice_fill_with<T>(
        &self,
        len: usize,
        mut make: impl FnMut(usize) -> T,
    ) -> Result<&mut [T], AllocError> {
        let ptr = self.try_alloc_uninit_slice::<T>(len)?;
        for index in 0..len {
            // SAFETY: `index < len`, inside the fresh room for `len` elements.
            unsafe { ptr.add(index).write(make(index)) };
        }
        // SAFETY: all `len` elements were just initialised.
        Ok(unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) })
    }

    /// Collects an iterator into a slice in the arena. The slice grows in place while
    /// nothing else is allocated from the arena (by the iterator itself) meanwhile.
    ///
    /// # Panics
    /// When the allocation fails, or if the iterator panics.
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_slice_from_iter<T>(&self, values: impl IntoIterator<Item = T>) -> &mut [T] {
        let mut vec = allocator_api2::vec::Vec::new_in(self);
        vec.extend(values);
        vec.leak()
    }

    /// Collects an iterator into a slice in the arena.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc); the values collected so far are dropped.
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_slice_from_iter<T>(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> Result<&mut [T], AllocError> {
        let values = values.into_iter();
        let mut vec = allocator_api2::vec::Vec::new_in(self);
        vec.try_reserve(values.size_hint().0)
            .map_err(|_| AllocError)?;
        for value in values {
            vec.try_reserve(1).map_err(|_| AllocError)?;
            vec.push(value);
        }
        Ok(vec.leak())
    }

    /// Copies `text` into the arena.
    ///
    /// # Panics
    /// When the allocation fails.
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn alloc_str(&self, text: &str) -> &mut str {
        let bytes = self.alloc_slice_copy(text.as_bytes());
        // SAFETY: a byte-for-byte copy of a `str` is UTF-8.
        unsafe { core::str::from_utf8_unchecked_mut(bytes) }
    }

    /// Copies `text` into the arena.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc).
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_str(&self, text: &str) -> Result<&mut str, AllocError> {
        let bytes = self.try_alloc_slice_copy(text.as_bytes())?;
        // SAFETY: a byte-for-byte copy of a `str` is UTF-8.
        Ok(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
    }

    /// Room for a `T`, uninitialised.
    ///
    /// # Errors
    /// As [`try_alloc`](Arena::try_alloc).
    #[allow(clippy::mut_from_ref, reason = "each call hands out fresh memory")]
    pub fn try_alloc_uninit<T>(&self) -> Result<&mut MaybeUninit<T>, AllocError> {
        let ptr = self
            .try_alloc_layout(Layout::new::<T>())?
            .cast::<MaybeUninit<T>>();
        // SAFETY: fresh, aligned room for a `T`; `MaybeUninit` needs no initialisation.
        Ok(unsafe { &mut *ptr.as_ptr() })
    }

    /// A mark of the current allocation state, to [`rewind`](Arena::rewind) to later.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            arena_id: self.id,
            epoch: self.epoch.get(),
            chunks: self.chunks.get(),
            chunk_serial: self.current.get().map_or(0, Chunk::serial),
            oversize_serial: self.oversize.get().map_or(0, Chunk::serial),
            address: self.ptr.get().addr().get(),
            oversize_chunks: self.oversize_chunks.get(),
            retired_bytes: self.retired_bytes.get(),
        }
    }

    /// Frees everything allocated since `checkpoint` was taken, keeping what was
    /// allocated before it. Values are not dropped.
    ///
    /// Taking `&mut self` proves that no allocation is borrowed any more, so this is safe.
    ///
    /// # Errors
    /// The checkpoint is from another arena, from before a [`reset`](Arena::reset), or
    /// ahead of the current state (from before a rewind to an earlier checkpoint). The
    /// arena is then unchanged.
    pub fn rewind(&mut self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        // SAFETY: `&mut self`: no allocation of the arena is borrowed.
        unsafe { self.rewind_unchecked(checkpoint) }
    }

    /// [`rewind`](Arena::rewind) through a shared reference.
    ///
    /// # Safety
    /// - Nothing allocated from the arena after `checkpoint` was taken is used afterwards
    ///   (no reference, box, collection or pointer into it remains in use).
    /// - No pinned value that was not dropped (from
    ///   [`alloc_box_pinned`](Arena::alloc_box_pinned) or [`pin_scope`](Arena::pin_scope))
    ///   was allocated after `checkpoint` was taken.
    ///
    /// # Errors
    /// As [`rewind`](Arena::rewind).
    pub unsafe fn rewind_unchecked(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        if checkpoint.arena_id != self.id {
            return Err(CheckpointError::OtherArena);
        }
        if checkpoint.epoch != self.epoch.get() {
            return Err(CheckpointError::Stale);
        }
        if checkpoint.oversize_chunks > self.oversize_chunks.get()
            || checkpoint.chunks > self.chunks.get()
        {
            return Err(CheckpointError::Ahead);
        }
        // The mark must be on the path to the current state: the newest oversize chunk
        // at the mark is still in its list, at the same depth. (Chunk lists only grow
        // and shrink at the head and serials are never reused, so that chunk being there
        // means the whole list below it is as it was.) Counts alone do not tell: a rewind
        // past the mark and a new chunk bring them back.
        if checkpoint.oversize_chunks > 0 {
            let mut chunk = self.oversize.get();
            for _ in checkpoint.oversize_chunks..self.oversize_chunks.get() {
                chunk = chunk.and_then(Chunk::older);
            }
            if chunk.map(Chunk::serial) != Some(checkpoint.oversize_serial) {
                return Err(CheckpointError::Ahead);
            }
        }
        // Likewise the chunk that was current at the checkpoint, and the mark must lie
        // inside what it has committed.
        if checkpoint.chunks > 0 {
            let mut chunk = self.current.get();
            for _ in checkpoint.chunks..self.chunks.get() {
                chunk = chunk.and_then(Chunk::older);
            }
            let Some(chunk) = chunk else {
                return Err(CheckpointError::Ahead);
            };
            let address = checkpoint.address;
            if chunk.serial() != checkpoint.chunk_serial
                || address < Self::chunk_start(chunk).addr().get()
                || address > chunk.committed_end()
                || !address.is_multiple_of(MIN_ALIGN)
            {
                return Err(CheckpointError::Ahead);
            }
        }
        self.fold_marks();
        for _ in checkpoint.oversize_chunks..self.oversize_chunks.get() {
            let chunk = self.oversize.get().expect("counted oversize chunk");
            self.oversize.set(chunk.older());
            // SAFETY: the caller promises nothing allocated after the checkpoint, which
            // covers every allocation in this chunk, is used again.
            unsafe { chunk.release(&self.source) };
        }
        self.oversize_chunks.set(checkpoint.oversize_chunks);
        // Pop newer ordinary chunks, but always keep one to reuse.
        let before_chunks = self.chunks.get();
        let keep = checkpoint.chunks.max(1).min(self.chunks.get());
        for _ in keep..self.chunks.get() {
            let chunk = self.current.get().expect("counted chunk");
            self.current.set(chunk.older());
            // SAFETY: as above: the chunk is newer than the checkpoint.
            unsafe { chunk.release(&self.source) };
        }
        self.chunks.set(keep);
        let popped = keep < before_chunks;
        if let Some(chunk) = self.current.get() {
            let address = if checkpoint.chunks == 0 {
                Self::chunk_start(chunk).addr().get()
            } else if popped {
                checkpoint.address
            } else {
                // Never move forward: what was freed since (by a rewind to an earlier
                // mark, or by freeing the latest allocation) stays free.
                checkpoint.address.min(self.ptr.get().addr().get())
            };
            self.committed_end.set(chunk.committed_end());
            if popped {
                // The kept chunk was retired earlier: assume all its committed pages are used.
                self.high_water.set(chunk.committed_end());
                self.cycle_high.set(chunk.committed_end());
            }
            self.ptr.set(chunk.base().with_addr(chunk_address(address)));
        }
        self.retired_bytes.set(checkpoint.retired_bytes);
        self.poison_free_tail();
        self.update_end();
        self.maybe_check_invariants();
        Ok(())
    }

    /// Runs `body` with the arena, then frees everything `body` allocated. The
    /// higher-ranked lifetime keeps every allocation made in `body` inside it.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let mut arena = Arena::new();
    /// let kept = arena.alloc(1u32) as *const u32;
    /// let before = arena.stats().allocated_bytes;
    /// let sum = arena.scope(|arena| {
    ///     let scratch = arena.alloc_slice_fill_with(1000, |i| i as u64);
    ///     scratch.iter().sum::<u64>()
    /// });
    /// assert_eq!(sum, 499_500);
    /// assert_eq!(arena.stats().allocated_bytes, before);
    /// # let _ = kept;
    /// ```
    pub fn scope<R>(&mut self, body: impl for<'scope> FnOnce(&'scope Self) -> R) -> R {
        struct Rewind<'a, S: PageSource, const M: usize>(&'a Arena<S, M>, Checkpoint);
        impl<S: PageSource, const M: usize> Drop for Rewind<'_, S, M> {
            fn drop(&mut self) {
                // SAFETY: `body` has returned or unwound; its allocations could not leave
                // it (the lifetime is higher-ranked and the arena was borrowed mutably,
                // so no outer reference could allocate meanwhile).
                let rewound = unsafe { self.0.rewind_unchecked(self.1) };
                debug_assert!(rewound.is_ok(), "scope checkpoint rejected: {rewound:?}");
            }
        }
        let guard = Rewind(&*self, self.checkpoint());
        body(guard.0)
    }

    /// Frees everything: keeps the current chunk and releases every other chunk. Of the
    /// kept chunk, the first [`warm_bytes`](ArenaConfig::warm_bytes), and as much as the
    /// previous cycle used, stay committed and untouched; the used pages above that are
    /// decommitted in one call ([`Decommit::Lazy`](pagekeep_mmap::Decommit::Lazy),
    /// `MADV_FREE`, by default). So a steady workload never pays for decommitting and
    /// faulting in the same pages every cycle; a spike is given back at the first reset
    /// after it, a lasting drop in usage one cycle later. Values are not dropped. O(1) in
    /// the number of allocations.
    pub fn reset(&mut self) {
        // SAFETY: `&mut self`: nothing borrows the arena's allocations.
        unsafe { self.reset_unchecked() }
    }

    /// [`reset`](Arena::reset) through a shared reference.
    ///
    /// # Safety
    /// - No allocation of the arena is used afterwards.
    /// - The arena holds no pinned value that was not dropped (from
    ///   [`alloc_box_pinned`](Arena::alloc_box_pinned) or [`pin_scope`](Arena::pin_scope)).
    #[inline]
    pub unsafe fn reset_unchecked(&self) {
        // SAFETY: forwarded from the caller.
        if unsafe { self.try_reset_warm() } {
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.reset_releasing() }
    }

    /// The common reset, in place: when the arena has one ordinary chunk and no
    /// oversize ones, and its used pages do not reach above what stays committed (the
    /// warm watermark, or what the previous cycle used), `reset_unchecked` releases and
    /// decommits nothing, and this does what it would do (the peak folded, the bump
    /// pointer back at the chunk's start, the end and the marks of the next cycle),
    /// writing only the arena struct and calling nothing. Returns whether it reset the
    /// arena; `false` leaves it unchanged.
    ///
    /// # Safety
    /// - As for [`reset_unchecked`](Arena::reset_unchecked).
    #[inline(always)]
    pub(crate) unsafe fn try_reset_warm(&self) -> bool {
        let Some(current) = self.current.get() else {
            return false;
        };
        if self.oversize_chunks.get() != 0 || self.chunks.get() > 1 {
            return false;
        }
        let data = current.data_start().addr().get();
        let top = self.lowered_from.get().max(self.ptr.get().addr().get());
        let base = data - HEADER_BYTES;
        let dirty = self.high_water.get().max(top);
        let keep = HEADER_BYTES
            .saturating_add(self.config.warm_bytes)
            .max(self.previous_cycle_bytes.get());
        if dirty - base > keep {
            return false;
        }
        self.peak_bytes.set(
            self.peak_bytes
                .get()
                .max(self.retired_bytes.get() + top - data),
        );
        self.retired_bytes.set(0);
        self.lowered_from.set(0);
        self.epoch.set(self.epoch.get().wrapping_add(1));
        let start = Self::chunk_start(current);
        self.ptr.set(start);
        // As in `reset_releasing`: the limit ends `limit_bytes` after the data start,
        // and never before the bump pointer.
        let limit_end = data
            .saturating_add(self.config.limit_bytes)
            .max(start.addr().get());
        self.end.set(self.committed_end.get().min(limit_end));
        self.high_water.set(dirty);
        self.poison_free_tail();
        self.previous_cycle_bytes
            .set(self.cycle_high.get().max(top) - base);
        self.cycle_high.set(data);
        self.maybe_check_invariants();
        true
    }

    /// [`reset_unchecked`](Arena::reset_unchecked) when chunks are released or pages
    /// decommitted (or there is no chunk yet).
    ///
    /// # Safety
    /// - As for [`reset_unchecked`](Arena::reset_unchecked).
    #[cold]
    #[inline(never)]
    unsafe fn reset_releasing(&self) {
        let Some(current) = self.current.get() else {
            // No ordinary chunk yet: at most oversize chunks to release.
            // SAFETY: forwarded from the caller.
            unsafe { self.release_all_but_current() };
            self.retired_bytes.set(0);
            self.epoch.set(self.epoch.get().wrapping_add(1));
            return;
        };
        // `fold_marks`, inlined: the highest address reached since the last fold.
        let data = current.data_start().addr().get();
        let top = self.lowered_from.get().max(self.ptr.get().addr().get());
        self.peak_bytes.set(
            self.peak_bytes
                .get()
                .max(self.retired_bytes.get() + top - data),
        );
        if self.oversize_chunks.get() != 0 || self.chunks.get() > 1 {
            // SAFETY: forwarded from the caller.
            unsafe { self.release_all_but_current() };
        }
        self.retired_bytes.set(0);
        self.lowered_from.set(0);
        self.epoch.set(self.epoch.get().wrapping_add(1));
        let start = Self::chunk_start(current);
        self.ptr.set(start);
        // Nothing is allocated now but the padding to `MIN_ALIGN` at the chunk's start
        // (counted by `allocated_bytes`): the limit ends `limit_bytes` after the data
        // start, and never before the bump pointer.
        let limit_end = data
            .saturating_add(self.config.limit_bytes)
            .max(start.addr().get());
        self.end.set(self.committed_end.get().min(limit_end));
        let base = data - HEADER_BYTES;
        let dirty = self.high_water.get().max(top);
        self.high_water.set(dirty);
        self.poison_free_tail();
        let dirty = dirty - base;
        let used = self.cycle_high.get().max(top) - base;
        let keep = HEADER_BYTES
            .saturating_add(self.config.warm_bytes)
            .max(self.previous_cycle_bytes.get());
        self.previous_cycle_bytes.set(used);
        self.cycle_high.set(data);
        if dirty > keep {
            // SAFETY: the caller promises nothing relies on the arena's contents.
            unsafe { self.decommit_above(current, keep, dirty) };
        }
        self.maybe_check_invariants();
    }

    /// [`reset_unchecked`](Arena::reset_unchecked), then gives back the warm pages as
    /// well, down to the chunk header: for an arena whose last use was out of the
    /// ordinary (a pool arena that went over its budget), so that it leaves nothing
    /// resident behind and its next use starts as a fresh one.
    ///
    /// # Safety
    /// - No allocation of the arena is used afterwards.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn reset_cold(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.reset_unchecked() };
        let Some(current) = self.current.get() else {
            return;
        };
        let base = current.base().addr().get();
        let dirty = self.high_water.get().saturating_sub(base);
        self.previous_cycle_bytes.set(0);
        if dirty > HEADER_BYTES {
            // SAFETY: forwarded from the caller; the header stays committed.
            unsafe { self.decommit_above(current, HEADER_BYTES, dirty) };
        }
        self.maybe_check_invariants();
    }

    /// The cold part of a reset: releases oversize chunks and every ordinary chunk but
    /// the current one.
    ///
    /// # Safety
    /// - No allocation of the arena is used afterwards.
    #[cold]
    #[inline(never)]
    unsafe fn release_all_but_current(&self) {
        while let Some(chunk) = self.oversize.get() {
            self.oversize.set(chunk.older());
            // SAFETY: the caller promises no allocation is used again.
            unsafe { chunk.release(&self.source) };
        }
        self.oversize_chunks.set(0);
        if let Some(current) = self.current.get() {
            let mut older = current.older();
            while let Some(chunk) = older {
                older = chunk.older();
                // SAFETY: as above.
                unsafe { chunk.release(&self.source) };
            }
            // The kept chunk forgets its older ones.
            // SAFETY: the header is live; only this arena writes it.
            unsafe { current.set_older(None) };
            self.chunks.set(1);
        }
    }

    /// The cold part of a reset: decommits the used pages of `current` from offset
    /// `keep` to offset `dirty`.
    ///
    /// # Safety
    /// - Nothing relies on the contents of the chunk from `keep` on.
    #[cold]
    #[inline(never)]
    unsafe fn decommit_above(&self, current: Chunk, keep: usize, dirty: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { current.decommit_range(&self.source, keep, dirty, self.config.decommit) };
        let page = self.source.page_size();
        let base = current.base().addr().get();
        self.high_water
            .set(base + round_up(keep, page).unwrap_or(keep).min(dirty));
    }

    /// With feature `debug-poison`, fills the free part of the current chunk below the
    /// high-water mark with `0xDD`.
    #[inline]
    fn poison_free_tail(&self) {
        #[cfg(feature = "debug-poison")]
        {
            let ptr = self.ptr.get();
            let high = self
                .high_water
                .get()
                .min(self.current.get().map_or(0, |chunk| chunk.committed_end()));
            let from = ptr.addr().get();
            if high > from {
                // SAFETY: `from..high` is committed memory of the current chunk that no
                // live allocation covers (everything above the bump pointer is free).
                unsafe { ptr.write_bytes(crate::POISON_BYTE, high - from) };
            }
        }
    }

    /// The peak since the last fold, without folding.
    fn unfolded_peak(&self) -> usize {
        self.current.get().map_or(0, |chunk| {
            let data = chunk.data_start().addr().get();
            self.retired_bytes.get() + self.lowered_from.get().saturating_sub(data)
        })
    }

    /// Statistics: bytes allocated, peak, chunks, reserved and committed bytes.
    pub fn stats(&self) -> ArenaStats {
        let allocated = self.allocated_bytes();
        let mut reserved = 0;
        let mut committed = 0;
        for list in [self.current.get(), self.oversize.get()] {
            let mut chunk = list;
            while let Some(next) = chunk {
                reserved += next.reserved();
                committed += next.committed();
                chunk = next.older();
            }
        }
        ArenaStats {
            allocated_bytes: allocated,
            peak_bytes: self
                .peak_bytes
                .get()
                .max(allocated)
                .max(self.unfolded_peak()),
            chunks: self.chunks.get(),
            oversize_chunks: self.oversize_chunks.get(),
            reserved_bytes: reserved,
            committed_bytes: committed,
            limit_bytes: self.config.limit_bytes,
        }
    }

    /// Sets the allocation limit (see [`set_allocation_limit`](Arena::set_allocation_limit)):
    /// when it is below what is allocated, the total may not grow past what it is now.
    pub(crate) fn set_limit_bytes(&mut self, bytes: usize) {
        let allocated = self.allocated_bytes();
        self.config.limit_bytes = bytes;
        self.limit_floor_bytes = if allocated > bytes { allocated } else { 0 };
        self.update_end();
        self.maybe_check_invariants();
    }

    /// Starts the arena's first ordinary chunk with room for `bytes` of allocations
    /// committed (see [`try_with_capacity`](Arena::try_with_capacity)).
    ///
    /// # Errors
    /// The size overflows or the page source refuses the chunk; the arena is unchanged.
    pub(crate) fn try_start_chunk(&self, bytes: usize) -> Result<(), AllocError> {
        if self.current.get().is_some() {
            return Ok(());
        }
        // The chunk's data may need up to `MIN_ALIGN - 1` bytes of padding first; a span
        // beyond `isize::MAX` could never be a valid allocation, so it is refused before
        // the source is asked.
        let span = HEADER_BYTES
            .checked_add(MIN_ALIGN - 1)
            .and_then(|span| span.checked_add(bytes))
            .filter(|&span| span <= isize::MAX as usize)
            .ok_or(AllocError)?;
        let reserve = span.max(self.config.chunk_bytes);
        let chunk = Chunk::create(&self.source, reserve, span, None).ok_or(AllocError)?;
        let data = chunk.data_start().addr().get();
        self.current.set(Some(chunk));
        self.committed_end.set(chunk.committed_end());
        self.chunks.set(1);
        self.high_water.set(data);
        self.cycle_high.set(data);
        self.ptr.set(Self::chunk_start(chunk));
        self.update_end();
        self.maybe_check_invariants();
        Ok(())
    }

    /// The chunk lists and the bump pointer, for
    /// [`iter_allocated_chunks`](Arena::iter_allocated_chunks): the current ordinary
    /// chunk (whose used part ends at the bump pointer) and the newest oversize chunk.
    pub(crate) fn chunk_lists(&self) -> (Option<Chunk>, NonNull<u8>, Option<Chunk>) {
        (self.current.get(), self.ptr.get(), self.oversize.get())
    }

    /// Checks the arena's invariants, panicking with the pointers involved when one is
    /// broken. For tests, and after every slow-path operation with feature
    /// `invariant-checks`.
    ///
    /// # Panics
    /// When an invariant is broken (a bug in this crate).
    pub fn check_invariants(&self) {
        let ptr = self.ptr.get().addr().get();
        let end = self.end.get();
        assert!(ptr <= end, "bump pointer {ptr:#x} is past the end {end:#x}");
        let mut count = 0;
        let mut chunk = self.current.get();
        while let Some(next) = chunk {
            assert!(
                next.committed() <= next.reserved(),
                "chunk {:#x} over-committed",
                next.base().addr()
            );
            count += 1;
            chunk = next.older();
        }
        assert_eq!(count, self.chunks.get(), "ordinary chunk count");
        let mut oversize = 0;
        let mut chunk = self.oversize.get();
        while let Some(next) = chunk {
            oversize += 1;
            chunk = next.older();
        }
        assert_eq!(oversize, self.oversize_chunks.get(), "oversize chunk count");
        if let Some(current) = self.current.get() {
            let data = current.data_start().addr().get();
            assert_eq!(
                self.committed_end.get(),
                current.committed_end(),
                "cached committed end"
            );
            assert!(
                data <= ptr && end <= current.committed_end(),
                "bump pointer {ptr:#x} / end {end:#x} outside the chunk {data:#x}..{:#x}",
                current.committed_end()
            );
            assert_eq!(ptr % MIN_ALIGN, 0, "bump pointer {ptr:#x} below MIN_ALIGN");
            assert!(
                self.allocated_bytes() <= self.config.limit_bytes.max(self.limit_floor_bytes),
                "limit exceeded"
            );
        }
    }

    #[inline]
    fn maybe_check_invariants(&self) {
        #[cfg(feature = "invariant-checks")]
        self.check_invariants();
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> Drop for Arena<S, MIN_ALIGN> {
    fn drop(&mut self) {
        for list in [self.current.get(), self.oversize.get()] {
            let mut chunk = list;
            while let Some(next) = chunk {
                chunk = next.older();
                // SAFETY: the arena is going away, and with it every borrow of its memory.
                unsafe { next.release(&self.source) };
            }
        }
    }
}

impl<S: PageSource + fmt::Debug, const MIN_ALIGN: usize> fmt::Debug for Arena<S, MIN_ALIGN> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("min_align", &MIN_ALIGN)
            .field("source", &self.source)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A non-null pointer without provenance at the address `align`, a power of two: a valid
/// zero-sized block of that alignment.
#[inline]
fn dangling_aligned(align: usize) -> NonNull<u8> {
    NonNull::dangling().with_addr(NonZeroUsize::new(align).unwrap_or(NonZeroUsize::MIN))
}

/// An address inside or one past a chunk as a `NonZeroUsize`.
#[inline(always)]
fn chunk_address(address: usize) -> NonZeroUsize {
    debug_assert!(address != 0, "address inside a chunk is zero");
    // SAFETY: callers pass addresses inside or one past a chunk, which starts at a
    // non-null pointer and does not wrap the address space, so they are non-zero.
    unsafe { NonZeroUsize::new_unchecked(address) }
}

#[cfg(test)]
mod tests {
    use core::alloc::Layout;

    use pagekeep_mmap::HeapPages;

    use super::Arena;
    use crate::config::ArenaConfig;

    /// Everything a reset writes, addresses as offsets from the current chunk's base.
    fn reset_state(arena: &Arena<HeapPages>) -> [usize; 12] {
        let base = arena
            .current
            .get()
            .map_or(0, |chunk| chunk.base().addr().get());
        let offset = |address: usize| address.saturating_sub(base);
        [
            offset(arena.ptr.get().addr().get()),
            offset(arena.end.get()),
            offset(arena.committed_end.get()),
            offset(arena.high_water.get()),
            offset(arena.cycle_high.get()),
            offset(arena.lowered_from.get()),
            arena.chunks.get(),
            arena.oversize_chunks.get(),
            arena.retired_bytes.get(),
            arena.previous_cycle_bytes.get(),
            arena.peak_bytes.get(),
            arena.epoch.get() as usize,
        ]
    }

    #[test]
    fn warm_reset_writes_what_the_releasing_reset_writes() {
        let config = ArenaConfig::new()
            .chunk_bytes(256 << 10)
            .commit_step_bytes(64 << 10)
            .warm_bytes(16 << 10)
            .limit_bytes(100_000);
        let warm = Arena::with_source(HeapPages, config);
        let releasing = Arena::with_source(HeapPages, config);
        // Cycles of blocks (size, whether freed at once while the latest), and whether
        // the reset that ends them is the in-place one: small ones, one whose latest
        // block is freed (the lowered mark), one past the warm watermark (decommitted
        // above it: both arenas take the releasing reset) and one back under what that
        // cycle used (kept committed, so in place again).
        let cycles: [(&[(usize, bool)], bool); 4] = [
            (&[(100, false), (200, false), (50, false)], true),
            (&[(300, false), (4000, true), (10, false)], true),
            (&[(30_000, false), (8, false)], false),
            (&[(20_000, false), (24, true)], true),
        ];
        for (blocks, in_place) in cycles {
            for arena in [&warm, &releasing] {
                for &(size, freed) in blocks {
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    let block = arena.alloc_layout(layout);
                    if freed {
                        // SAFETY: the latest block of this arena, never used.
                        unsafe { arena.dealloc(block, layout) };
                    }
                }
            }
            // SAFETY: no block is used again.
            assert_eq!(unsafe { warm.try_reset_warm() }, in_place);
            if !in_place {
                // SAFETY: as above.
                unsafe { warm.reset_releasing() };
            }
            // SAFETY: as above.
            unsafe { releasing.reset_releasing() };
            assert_eq!(reset_state(&warm), reset_state(&releasing));
            warm.check_invariants();
        }
    }
}
