//! [`Subject`]: the one trait an allocator implements (through an adapter) to be checked
//! by the whole suite.

use core::alloc::Layout;
use core::ptr::NonNull;

/// A refusal from a subject: out of memory, over its limit, or an impossible request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// What a subject promises; the model holds it to exactly these promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promises {
    /// `alloc_zeroed` returns zeroed memory (every subject that has it).
    pub zeroed: bool,
    /// The largest alignment it serves; larger requests must be refused, not crash.
    pub max_align: usize,
    /// Total bytes it may hand out at once (live blocks' sizes added up), if limited.
    /// Requests that would pass it must be refused.
    pub limit: Option<usize>,
    /// `dealloc` makes memory reusable. Bump arenas reclaim only on reset.
    pub reuses_freed_memory: bool,
    /// Zero-sized allocations are allowed (the `Allocator` contract); `GlobalAlloc`
    /// forbids them.
    pub zero_sized: bool,
    /// The largest block it serves (a fixed-size cache); larger requests must be refused.
    pub max_size: Option<usize>,
    /// Ordinary requests may be refused: the allocator draws on a source that fails (fault
    /// injection) or has a limit the model cannot compute exactly.
    pub may_refuse: bool,
    /// `realloc` may change a block's alignment (the `Allocator` interface's `grow` and
    /// `shrink`); `GlobalAlloc::realloc` keeps it.
    pub realign: bool,
    /// [`Subject::grow_zeroed`] is served (the `Allocator` interface).
    pub grow_zeroed: bool,
}

impl Default for Promises {
    fn default() -> Self {
        Promises {
            zeroed: true,
            max_align: 4096,
            limit: None,
            reuses_freed_memory: true,
            zero_sized: false,
            max_size: None,
            may_refuse: false,
            realign: false,
            grow_zeroed: false,
        }
    }
}

/// A position to rewind a subject to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark(pub usize);

/// An allocator under test, seen through an adapter.
///
/// Methods take `&mut self`: the model makes one call at a time. A subject that may be
/// moved between threads offers itself through [`Subject::threaded`]; the model then makes
/// its calls from up to four threads in turn (one call at a time, each on the thread the
/// program names), so blocks are freed and resized by threads other than the one that
/// allocated them. The multi-threaded stress ([`crate::stress`]) runs threads at once, on
/// [`core::alloc::GlobalAlloc`] directly.
///
/// Blocks are returned as slices: the length is the usable size the allocator reports
/// (at least the requested size; the `Allocator` interface may report more). The model
/// fills and checks every reported byte.
///
/// # Safety
/// The adapter forwards to the allocator faithfully: it adds no checks that would hide
/// the allocator's faults and no allocation of its own inside the returned blocks. (The
/// suite relies on this to blame the allocator for what it finds.)
pub unsafe trait Subject {
    /// A short name for reports.
    fn name(&self) -> String;

    /// What the allocator promises.
    fn promises(&self) -> Promises;

    /// Allocates a block for `layout`.
    ///
    /// # Errors
    /// [`Refused`] when the allocator cannot or may not serve the request.
    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused>;

    /// Allocates a zeroed block for `layout` (where [`Promises::zeroed`] holds): every
    /// byte of the returned slice is zero.
    ///
    /// # Errors
    /// [`Refused`] as for [`Subject::alloc`].
    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused>;

    /// Frees a block.
    ///
    /// # Safety
    /// - `ptr` is a live block of this subject allocated with `layout`.
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout);

    /// Resizes a block to `new`, keeping the first `min(old, new)` bytes. On [`Refused`],
    /// the old block stays live and unchanged.
    ///
    /// # Safety
    /// - `ptr` is a live block of this subject allocated with `layout`.
    /// - `new.align() == layout.align()` unless [`Promises::realign`] holds; `new.size()`
    ///   is non-zero unless [`Promises::zero_sized`] holds.
    ///
    /// # Errors
    /// [`Refused`] when the allocator cannot serve the new layout.
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused>;

    /// Grows a block to `new`, keeping its bytes and zeroing the rest: from the old
    /// block's reported length to the new one (the `Allocator::grow_zeroed` contract).
    /// Refused by subjects without [`Promises::grow_zeroed`].
    ///
    /// # Safety
    /// - As [`Subject::realloc`], and `new.size() >= layout.size()`.
    ///
    /// # Errors
    /// [`Refused`] as for [`Subject::realloc`].
    unsafe fn grow_zeroed(
        &mut self,
        _ptr: NonNull<u8>,
        _layout: Layout,
        _new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        Err(Refused)
    }

    /// Resizes a block without moving it, if the allocator can; `false` when it cannot
    /// (the block is then unchanged).
    ///
    /// # Safety
    /// - `ptr` is a live block of this subject allocated with `layout`.
    unsafe fn resize_in_place(
        &mut self,
        _ptr: NonNull<u8>,
        _layout: Layout,
        _new_size: usize,
    ) -> bool {
        false
    }

    /// Frees everything at once, if the allocator has a reset; `false` otherwise.
    fn reset(&mut self) -> bool {
        false
    }

    /// Records a position to rewind to, if the allocator has checkpoints.
    fn checkpoint(&mut self) -> Option<Mark> {
        None
    }

    /// Frees everything allocated since `mark`, keeping what was allocated before it.
    ///
    /// # Safety
    /// - `mark` came from this subject's [`Subject::checkpoint`] and no rewind or reset
    ///   to an earlier position happened since.
    unsafe fn rewind(&mut self, _mark: Mark) {}

    /// Whether `ptr..ptr + len` lies inside memory the allocator owns; `None` when the
    /// allocator cannot tell.
    fn owns(&self, _ptr: NonNull<u8>, _len: usize) -> Option<bool> {
        None
    }

    /// The bytes the allocator holds from its source (pages reserved, blocks of an
    /// underlying allocator) right now; `None` when it cannot tell. With
    /// [`Promises::reuses_freed_memory`], the suite checks that this stops growing when
    /// a program frees what it allocated and allocates the same again: leaks fail.
    fn footprint(&self) -> Option<usize> {
        None
    }

    /// The subject as one that may be called from other threads (one call at a time),
    /// when it can be moved between threads; `None` otherwise. Subjects that return it
    /// run the multi-threaded programs.
    fn threaded(&mut self) -> Option<&mut (dyn Subject + Send)> {
        None
    }
}
