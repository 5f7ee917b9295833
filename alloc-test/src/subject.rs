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
        }
    }
}

/// A position to rewind a subject to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark(pub usize);

/// An allocator under test, seen through an adapter.
///
/// Methods take `&mut self` (the model runs programs on one thread); the multi-threaded
/// stress runs on [`core::alloc::GlobalAlloc`] directly.
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
    fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused>;

    /// Allocates a zeroed block for `layout` (where [`Promises::zeroed`] holds).
    ///
    /// # Errors
    /// [`Refused`] as for [`Subject::alloc`].
    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused>;

    /// Frees a block.
    ///
    /// # Safety
    /// - `ptr` is a live block of this subject allocated with `layout`.
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout);

    /// Resizes a block to `new_size` bytes with the same alignment, keeping the first
    /// `min(old, new)` bytes. On [`Refused`], the old block stays live and unchanged.
    ///
    /// # Safety
    /// - `ptr` is a live block of this subject allocated with `layout`.
    ///
    /// # Errors
    /// [`Refused`] when the allocator cannot serve the new size.
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, Refused>;

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
}
