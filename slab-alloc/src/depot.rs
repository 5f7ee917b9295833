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

use core::ptr::NonNull;

use crate::magazine::Magazine;

/// Full magazines a depot keeps at most.
#[cfg(not(miri))]
pub(crate) const DEPOT_MAGAZINES: usize = 2048;
/// Under miri a small depot: the depot is inside the cache core, and every borrow of the
/// core costs miri in proportion to its size (and the tests reach the bound sooner).
#[cfg(miri)]
pub(crate) const DEPOT_MAGAZINES: usize = 16;

/// The slots of one depot: [`DEPOT_MAGAZINES`] magazines, all-zero bytes (empty
/// magazines) when fresh. Kept outside the cache core, by whoever builds the core (see
/// [`Depot::init_zeroed`]).
pub(crate) type DepotSlots = [Magazine; DEPOT_MAGAZINES];

/// A bounded stack of full magazines.
///
/// Its slots (32 KiB) live outside the cache core, next to the other cores' slots: in the
/// core, they put every core on pages of its own, and building a heap's 50 classes wrote
/// 66 pages (264 KiB resident in every process, before its first allocation was served);
/// the cores alone take 12. A slot's page is touched when a magazine first goes there.
#[derive(Debug)]
pub(crate) struct Depot {
    /// The first of the depot's [`DEPOT_MAGAZINES`] slots; those below `len` hold full
    /// magazines.
    slots: NonNull<Magazine>,
    len: usize,
    /// Objects in all full magazines.
    objects: usize,
}

impl Depot {
    /// Initialises an empty depot over `slots` without writing them.
    ///
    /// # Safety
    /// - `place` is valid for writes of a `Depot`, and aligned.
    /// - `slots` is valid for reads and writes, all its bytes are zero (all-zero bytes
    ///   are empty magazines: null head, count 0), it stays so for as long as the depot
    ///   lives, and nothing else reads or writes it meanwhile.
    pub(crate) unsafe fn init_zeroed(place: *mut Depot, slots: NonNull<DepotSlots>) {
        // SAFETY: the caller's obligations; the slots stay the zero bytes they are.
        unsafe {
            place.write(Depot {
                slots: slots.cast::<Magazine>(),
                len: 0,
                objects: 0,
            });
        }
    }

    /// Takes a full magazine, if any.
    pub(crate) fn pop_full(&mut self) -> Option<Magazine> {
        self.len = self.len.checked_sub(1)?;
        // SAFETY: `len < DEPOT_MAGAZINES`: a slot of the depot's, which is ours through
        // `&mut self` (`init_zeroed`), and holds a magazine (zero bytes at worst).
        let magazine = unsafe { self.slots.add(self.len).replace(Magazine::EMPTY) };
        self.objects -= magazine.count as usize;
        Some(magazine)
    }

    /// Stores a magazine, or gives it back when the depot is at its bound.
    pub(crate) fn push_full(&mut self, magazine: Magazine) -> Result<(), Magazine> {
        if self.len == DEPOT_MAGAZINES || magazine.count == 0 {
            return Err(magazine);
        }
        // SAFETY: `len < DEPOT_MAGAZINES`: a slot of the depot's, ours as above.
        unsafe { self.slots.add(self.len).write(magazine) };
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
