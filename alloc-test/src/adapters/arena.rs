//! pagekeep-arena: a bare `Arena` (with reset and checkpoints), a pooled arena, and the
//! `ArenaRouter` serving a thread that has entered a pooled arena.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr::NonNull;
use std::alloc::System;
use std::sync::OnceLock;

use pagekeep_arena::{
    Arena, ArenaConfig, ArenaPool, ArenaRouter, Checkpoint, PoolConfig, PooledArena,
};
use pagekeep_mmap::{DefaultPages, PageSource};

use crate::subject::{Mark, Promises, Refused, Subject};

/// An [`Arena`] under test: bump allocation, growth of the latest block in place, reset and
/// checkpoints.
pub struct ArenaSubject<S: PageSource = DefaultPages> {
    arena: Arena<S>,
    checkpoints: Vec<Checkpoint>,
    promises: Promises,
}

impl ArenaSubject<DefaultPages> {
    /// An arena with `config` from the default page source.
    pub fn new(config: ArenaConfig) -> Self {
        ArenaSubject::with_source(DefaultPages::default(), config, false)
    }
}

impl<S: PageSource> ArenaSubject<S> {
    /// An arena over `source`; `may_refuse` when the source fails on purpose.
    pub fn with_source(source: S, config: ArenaConfig, may_refuse: bool) -> Self {
        let limit = (config.limit() != usize::MAX).then_some(config.limit());
        let promises = Promises {
            reuses_freed_memory: false,
            zero_sized: true,
            max_align: 1 << 16,
            limit,
            may_refuse,
            realign: true,
            grow_zeroed: true,
            ..Promises::default()
        };
        ArenaSubject {
            arena: Arena::with_source(source, config),
            checkpoints: Vec::new(),
            promises,
        }
    }

    /// The arena, for statistics and invariant checks.
    pub fn arena(&self) -> &Arena<S> {
        &self.arena
    }
}

impl<S: PageSource> fmt::Debug for ArenaSubject<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaSubject")
            .field("stats", &self.arena.stats())
            .finish_non_exhaustive()
    }
}

// SAFETY: every call is forwarded to the arena unchanged.
unsafe impl<S: PageSource> Subject for ArenaSubject<S> {
    fn name(&self) -> String {
        "Arena".to_owned()
    }

    fn promises(&self) -> Promises {
        self.promises
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        self.arena
            .try_alloc_layout(layout)
            .map(|ptr| NonNull::slice_from_raw_parts(ptr, layout.size()))
            .map_err(|_| Refused)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        super::allocate_zeroed(&self.arena, layout)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { self.arena.dealloc(ptr, layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { arena_realloc(&self.arena, ptr, layout, new) }
    }

    unsafe fn grow_zeroed(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { super::grow_zeroed(&self.arena, ptr, layout, new) }
    }

    fn reset(&mut self) -> bool {
        self.arena.reset();
        self.checkpoints.clear();
        true
    }

    fn checkpoint(&mut self) -> Option<Mark> {
        self.checkpoints.push(self.arena.checkpoint());
        Some(Mark(self.checkpoints.len() - 1))
    }

    unsafe fn rewind(&mut self, mark: Mark) {
        if let Some(&checkpoint) = self.checkpoints.get(mark.0) {
            self.checkpoints.truncate(mark.0);
            // A refused rewind leaves the arena as it was, which the model then checks.
            let _ = self.arena.rewind(checkpoint);
        }
    }
}

/// An arena's own `try_realloc` (in place when it can), as a subject's `realloc`.
///
/// # Safety
/// `ptr` is a live block of `layout` from `arena`.
unsafe fn arena_realloc<S: PageSource>(
    arena: &Arena<S>,
    ptr: NonNull<u8>,
    layout: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, Refused> {
    // SAFETY: forwarded from the caller.
    unsafe { arena.try_realloc(ptr, layout, new) }
        .map(|ptr| NonNull::slice_from_raw_parts(ptr, new.size()))
        .map_err(|_| Refused)
}

/// The pool every pooled subject of this process leases from: the router keeps a
/// registry of a few pools, so tests share one.
fn shared_pool() -> &'static ArenaPool {
    static POOL: OnceLock<&'static ArenaPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let arena_bytes = if cfg!(miri) { 2 << 20 } else { 64 << 20 };
        ArenaPool::new(PoolConfig::new(16, arena_bytes))
            .and_then(ArenaPool::into_static)
            .expect("a pool of 16 arenas")
    })
}

/// A router over `System`, called directly (not installed as the global allocator).
static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

/// A subject that holds one lease from the shared pool, taken when it is made (waiting
/// for an arena if all are leased): the type, `new`, `Default` and `Debug`.
macro_rules! leased_subject {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            lease: PooledArena<'static>,
        }

        impl $name {
            /// Leases an arena from the shared pool, waiting for one if all are leased.
            pub fn new() -> Self {
                $name {
                    lease: shared_pool().acquire(),
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::new()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

leased_subject!(
    /// An arena leased from an [`ArenaPool`], through `&PooledArena` as an `Allocator`.
    PooledArenaSubject
);

// SAFETY: every call is forwarded to the leased arena unchanged.
unsafe impl Subject for PooledArenaSubject {
    fn name(&self) -> String {
        "pooled Arena".to_owned()
    }

    fn promises(&self) -> Promises {
        // A pooled arena has a fixed capacity: it refuses beyond it.
        Promises {
            reuses_freed_memory: false,
            zero_sized: true,
            max_align: 1 << 16,
            may_refuse: true,
            realign: true,
            grow_zeroed: true,
            ..Promises::default()
        }
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        self.lease
            .try_alloc_layout(layout)
            .map(|ptr| NonNull::slice_from_raw_parts(ptr, layout.size()))
            .map_err(|_| Refused)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        let arena: &Arena<_> = &self.lease;
        super::allocate_zeroed(arena, layout)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { self.lease.dealloc(ptr, layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { arena_realloc(&self.lease, ptr, layout, new) }
    }

    unsafe fn grow_zeroed(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        let arena: &Arena<_> = &self.lease;
        // SAFETY: forwarded from the caller.
        unsafe { super::grow_zeroed(arena, ptr, layout, new) }
    }
}

leased_subject!(
    /// The [`ArenaRouter`] as a thread sees it after entering a pooled arena: allocations
    /// come from the arena (spilling to `System` beyond it, up to the hard cap), frees are
    /// routed by address.
    RouterSubject
);

// SAFETY: every call is forwarded to the router unchanged, inside the leased arena.
unsafe impl Subject for RouterSubject {
    fn name(&self) -> String {
        "ArenaRouter".to_owned()
    }

    fn promises(&self) -> Promises {
        // Beyond the arena it spills, and beyond the hard cap it refuses. Blocks routed
        // to the arena are reclaimed only when the lease ends.
        Promises {
            max_align: 1 << 16,
            may_refuse: true,
            reuses_freed_memory: false,
            ..Promises::default()
        }
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: the model never asks for zero bytes through `GlobalAlloc`.
        let ptr = self.lease.run(|| unsafe { ROUTER.alloc(layout) });
        routed(ptr, layout.size())
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: as for `alloc`.
        let ptr = self.lease.run(|| unsafe { ROUTER.alloc_zeroed(layout) });
        routed(ptr, layout.size())
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller; frees are routed by address.
        unsafe { ROUTER.dealloc(ptr.as_ptr(), layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller (the alignment is kept: `realign` is not
        // promised).
        let moved = self
            .lease
            .run(|| unsafe { ROUTER.realloc(ptr.as_ptr(), layout, new.size()) });
        routed(moved, new.size())
    }

    fn threaded(&mut self) -> Option<&mut (dyn Subject + Send)> {
        // The lease moves between threads: each call enters the arena on the thread
        // that makes it, and frees are routed by address from any thread.
        Some(self)
    }
}

/// The router's answer as a block of `size` bytes, or a refusal for null.
fn routed(ptr: *mut u8, size: usize) -> Result<NonNull<[u8]>, Refused> {
    NonNull::new(ptr)
        .map(|ptr| NonNull::slice_from_raw_parts(ptr, size))
        .ok_or(Refused)
}
