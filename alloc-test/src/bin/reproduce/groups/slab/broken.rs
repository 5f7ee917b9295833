//! A deliberately broken allocator for the workloads' tests: it proves that a workload's
//! checks fail a heap that hands a block out while it is still live.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use std::sync::Mutex;
use std::thread::ThreadId;

/// The largest block a workload asks for (64 KiB), rounded up to the alignment.
const REGION: usize = 64 << 10;
/// Threads one `SameBlock` can serve.
const REGIONS: usize = 64;

/// Hands every allocation made by one thread the same block: that thread's region of an
/// arena, never given to another thread. Frees do nothing and `realloc` keeps the block.
/// Wrong as an allocator (a live block is handed out again), but free of data races:
/// a thread's region is read by other threads only after that thread was joined, which
/// is how the workloads tested with it hand blocks over.
#[derive(Debug)]
pub struct SameBlock {
    arena: NonNull<u8>,
    threads: Mutex<Vec<ThreadId>>,
}

// SAFETY: the arena is only reached through the pointers handed out; the thread table
// is behind a mutex.
unsafe impl Sync for SameBlock {}

fn arena_layout() -> Layout {
    Layout::from_size_align(REGION * REGIONS, 64).expect("a valid arena layout")
}

impl SameBlock {
    /// A fresh arena.
    pub fn new() -> SameBlock {
        // SAFETY: a non-zero layout.
        let arena = NonNull::new(unsafe { std::alloc::alloc(arena_layout()) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(arena_layout()));
        SameBlock {
            arena,
            threads: Mutex::new(Vec::new()),
        }
    }
}

impl Drop for SameBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the blocks handed out are no
        // longer used once the allocator is dropped (they borrowed it).
        unsafe { std::alloc::dealloc(self.arena.as_ptr(), arena_layout()) };
    }
}

// SAFETY: deliberately not a correct allocator (see the type); every pointer returned
// lies inside the arena with at least `REGION` bytes after it, 64-aligned, and null is
// returned for anything larger.
unsafe impl GlobalAlloc for SameBlock {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REGION || layout.align() > 64 {
            return ptr::null_mut();
        }
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let me = std::thread::current().id();
        let index = threads.iter().position(|&id| id == me).unwrap_or_else(|| {
            threads.push(me);
            threads.len() - 1
        });
        if index >= REGIONS {
            return ptr::null_mut();
        }
        self.arena.as_ptr().wrapping_add(index * REGION)
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, _layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > REGION {
            ptr::null_mut()
        } else {
            ptr
        }
    }
}
