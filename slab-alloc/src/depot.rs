//! The depot: a cache's shared store of full magazines (Bonwick & Adams 2001, section 3).
//!
//! Threads exchange whole magazines with the depot: a thread whose two magazines are
//! empty takes a full one, a thread whose two magazines are full leaves one. Because
//! magazines are intrusive chains (see [`crate::magazine`]) an empty magazine is just
//! `(null, 0)`, so the paper's list of empty magazines needs no storage: the depot can
//! always hand out an empty one.
//!
//! The depot is bounded ([`DEPOT_MAGAZINES`]); a full magazine that does not fit goes
//! back to the slab layer object by object. That bound is the depot's working set.
//!
//! # Safety
//! The depot lives inside a cache core and is only touched with the cache lock held.

use crate::magazine::Magazine;

/// Full magazines a depot keeps at most.
#[cfg(not(miri))]
pub(crate) const DEPOT_MAGAZINES: usize = 2048;
/// Under miri a small depot: the depot is inside the cache core, and every borrow of the
/// core costs miri in proportion to its size (and the tests reach the bound sooner).
#[cfg(miri)]
pub(crate) const DEPOT_MAGAZINES: usize = 16;

/// A bounded stack of full magazines.
#[derive(Debug)]
pub(crate) struct Depot {
    full: [Magazine; DEPOT_MAGAZINES],
    len: usize,
    /// Objects in all full magazines.
    objects: usize,
}

impl Depot {
    /// Initialises a depot in zeroed memory without writing its magazine array.
    ///
    /// # Safety
    /// - `place` is valid for writes of a `Depot`, aligned, and all its bytes are zero
    ///   (all-zero bytes are empty magazines: null head, count 0).
    pub(crate) unsafe fn init_zeroed(place: *mut Depot) {
        // SAFETY: the caller's obligations; the array stays as the zero bytes it is.
        unsafe {
            (&raw mut (*place).len).write(0);
            (&raw mut (*place).objects).write(0);
        }
    }

    /// Takes a full magazine, if any.
    pub(crate) fn pop_full(&mut self) -> Option<Magazine> {
        self.len = self.len.checked_sub(1)?;
        let magazine = core::mem::replace(&mut self.full[self.len], Magazine::EMPTY);
        self.objects -= magazine.count as usize;
        Some(magazine)
    }

    /// Stores a magazine, or gives it back when the depot is at its bound.
    pub(crate) fn push_full(&mut self, magazine: Magazine) -> Result<(), Magazine> {
        if self.len == DEPOT_MAGAZINES || magazine.count == 0 {
            return Err(magazine);
        }
        self.full[self.len] = magazine;
        self.len += 1;
        self.objects += magazine.count as usize;
        Ok(())
    }

    /// Full magazines held.
    pub(crate) fn magazines(&self) -> usize {
        self.len
    }

    /// Objects held.
    pub(crate) fn objects(&self) -> usize {
        self.objects
    }
}
