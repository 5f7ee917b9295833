//! bumpalo, the arena Rust programmers use today: a control for the arena checks.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use bumpalo::Bump;

use crate::subject::{Promises, Refused, Subject};

/// A [`bumpalo::Bump`] under test, with its reset.
pub struct BumpaloSubject {
    bump: Bump,
}

impl BumpaloSubject {
    /// A fresh, unlimited arena.
    pub fn new() -> Self {
        BumpaloSubject { bump: Bump::new() }
    }
}

impl Default for BumpaloSubject {
    fn default() -> Self {
        BumpaloSubject::new()
    }
}

impl fmt::Debug for BumpaloSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BumpaloSubject")
            .field("allocated_bytes", &self.bump.allocated_bytes())
            .finish()
    }
}

// SAFETY: every call is forwarded to bumpalo unchanged.
unsafe impl Subject for BumpaloSubject {
    fn name(&self) -> String {
        "bumpalo".to_owned()
    }

    fn promises(&self) -> Promises {
        Promises {
            reuses_freed_memory: false,
            zero_sized: true,
            max_align: 1 << 20,
            realign: true,
            grow_zeroed: true,
            ..Promises::default()
        }
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        (&self.bump).allocate(layout).map_err(|_| Refused)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        super::allocate_zeroed(&self.bump, layout)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { (&self.bump).deallocate(ptr, layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { super::grow_or_shrink(&self.bump, ptr, layout, new) }
    }

    unsafe fn grow_zeroed(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { super::grow_zeroed(&self.bump, ptr, layout, new) }
    }

    fn reset(&mut self) -> bool {
        self.bump.reset();
        true
    }
}
