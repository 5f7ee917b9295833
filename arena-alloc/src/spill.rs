//! The live-spill table: which blocks of the fallback allocator are spills of a leased
//! arena, so that freeing or reallocating one credits the arena's spill cap.
//!
//! A spilled block is memory of the router's fallback allocator, so its address says
//! nothing about the arena it was charged to. Blocks of at least [`TRACKED_MIN_BYTES`]
//! are therefore recorded here, by address, with their spill account, the lease they were charged
//! to and their size; a free of a fallback block that large looks it up (only while the
//! table holds anything) and credits the lease if it is still the slot's current one.
//! Smaller spills are not recorded: they stay charged until the lease ends, which bounds
//! their total by the cap all the same. When the table is full a large spill is charged
//! the same way.
//!
//! # Safety
//!
//! An entry is claimed by the thread that spills (`claimed`: false to true), filled, and
//! published by a `Release` store of its address; a free takes it back with a
//! compare-and-swap of the address to 0, reads the fields (written before the publish it
//! acquired) and releases the claim. A block is freed once, so at most one thread takes
//! an entry back. The table holds only integers and spill accounts of slots of
//! `'static` pools, which live for the rest of the process.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::pool::SpillAccount;

/// Spills of at least this many bytes are recorded, and credited when freed.
pub(crate) const TRACKED_MIN_BYTES: usize = 4096;

/// Entries in the table: live large spills across the process.
const ENTRIES: usize = 256;

struct Entry {
    claimed: AtomicBool,
    /// The block's address, or 0 while the entry is free or being filled.
    address: AtomicUsize,
    /// The spill account charged, as [`SpillAccount::into_raw`] keeps it.
    account: AtomicPtr<()>,
    lease: AtomicU64,
    bytes: AtomicUsize,
}

static TABLE: [Entry; ENTRIES] = [const {
    Entry {
        claimed: AtomicBool::new(false),
        address: AtomicUsize::new(0),
        account: AtomicPtr::new(ptr::null_mut()),
        lease: AtomicU64::new(0),
        bytes: AtomicUsize::new(0),
    }
}; ENTRIES];

/// Entries published: frees look at the table only while this is non-zero.
static PUBLISHED: AtomicUsize = AtomicUsize::new(0);

/// A recorded spill taken back from the table.
pub(crate) struct Spill {
    pub(crate) account: SpillAccount,
    pub(crate) lease: u64,
    pub(crate) bytes: usize,
}

/// Records the live spill `address` of `bytes` charged to `account`'s lease `lease`.
/// Returns `false` when the table is full (the spill then stays charged until the lease
/// ends).
pub(crate) fn record(address: usize, bytes: usize, account: SpillAccount, lease: u64) -> bool {
    for entry in &TABLE {
        if entry.claimed.load(Ordering::Relaxed)
            || entry
                .claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        entry.account.store(account.into_raw(), Ordering::Relaxed);
        entry.lease.store(lease, Ordering::Relaxed);
        entry.bytes.store(bytes, Ordering::Relaxed);
        PUBLISHED.fetch_add(1, Ordering::Release);
        entry.address.store(address, Ordering::Release);
        return true;
    }
    false
}

/// Takes the spill at `address` out of the table, if it is recorded there. `bytes` is
/// the size the caller frees it with: only blocks of at least [`TRACKED_MIN_BYTES`] are
/// ever recorded.
#[inline]
pub(crate) fn take(address: usize, bytes: usize) -> Option<Spill> {
    if bytes < TRACKED_MIN_BYTES || PUBLISHED.load(Ordering::Acquire) == 0 {
        return None;
    }
    take_slow(address)
}

#[cold]
#[inline(never)]
fn take_slow(address: usize) -> Option<Spill> {
    for entry in &TABLE {
        if entry.address.load(Ordering::Relaxed) != address
            || entry
                .address
                .compare_exchange(address, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        let account = entry.account.load(Ordering::Relaxed);
        let spill = Spill {
            // SAFETY: recorded by `SpillAccount::into_raw`, published before the address
            // this thread acquired.
            account: unsafe { SpillAccount::from_raw(account) },
            lease: entry.lease.load(Ordering::Relaxed),
            bytes: entry.bytes.load(Ordering::Relaxed),
        };
        PUBLISHED.fetch_sub(1, Ordering::Release);
        entry.claimed.store(false, Ordering::Release);
        return Some(spill);
    }
    None
}
