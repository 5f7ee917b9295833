//! [`ClassPages`]: the page source of an async heap's size classes, which tells the
//! heap's budget when the classes give memory back.

use core::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use pagekeep_mmap::{Contents, Decommit, PageSource, Result};

use super::budget::Budget;
use crate::cache::SpaceReturned;

/// The heap's source `S` and its budget: the slab heap of an [`AsyncHeap`](super::AsyncHeap)
/// takes its slabs from here, and tells the budget ([`ClassPages::space_returned`]) when
/// a class gives memory back other than by a free of the heap, so that starved requests
/// retry. It also counts what the classes hold of the source and the longest
/// reservation the source refused them ([`Reservations`]), for the verdict that a
/// request can never be supplied.
#[derive(Clone)]
pub(crate) struct ClassPages<S> {
    source: S,
    announcer: Arc<ExitAnnouncer>,
    reservations: Arc<Reservations>,
}

/// What the size classes of one heap reserved from its source, shared by the clones of
/// its [`ClassPages`]. Both counts are in whole pages' bytes, and read without a lock:
/// they are exact only while no other thread reserves or releases through the classes.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    /// The bytes of the live reservations the classes made (the heap's bookkeeping, its
    /// slabs): added by every successful reservation, taken off by every successful
    /// release (a refused release leaves its pages reserved, and counted).
    held_bytes: AtomicUsize,
    /// The longest reservation the source refused since
    /// [`take_longest_refused`](Reservations::take_longest_refused) last ran (0 if none).
    longest_refused: AtomicUsize,
}

impl Reservations {
    /// The bytes the classes hold of the source now.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// The longest reservation the source refused the classes since the last call, and
    /// starts a new count.
    pub(crate) fn take_longest_refused(&self) -> usize {
        self.longest_refused.swap(0, Ordering::Relaxed)
    }

    /// Counts the outcome of a reservation of `len` bytes (`page`-sized pages).
    fn count(&self, len: usize, page: usize, outcome: &Result<NonNull<u8>>) {
        let len = len.checked_next_multiple_of(page).unwrap_or(usize::MAX);
        match outcome {
            Ok(_) => {
                self.held_bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(_) => {
                self.longest_refused.fetch_max(len, Ordering::Relaxed);
            }
        }
    }
}

impl<S> ClassPages<S> {
    pub(crate) fn new(source: S, budget: Arc<Budget>, reservations: Arc<Reservations>) -> Self {
        let announcer = Arc::new(ExitAnnouncer {
            budget,
            queued: AtomicBool::new(false),
            next: AtomicPtr::new(ptr::null_mut()),
        });
        ClassPages {
            source,
            announcer,
            reservations,
        }
    }

    /// The slab heap's [`on_space_returned`](crate::SlabHeap::on_space_returned) hook:
    /// a source event, counted here. Nothing is woken here: the hook runs under a class's
    /// lock or the registry's, and a waker is user code, which could take either. An
    /// allocation announces the event after its attempt (outside every lock); a thread's
    /// exit, which may be the last thing that happens, queues the budget so that the
    /// registry announces it once its lock is released ([`announce_deferred`]).
    pub(crate) fn space_returned(&self, how: SpaceReturned) {
        self.announcer.budget.note_source_return();
        if how == SpaceReturned::ThreadExit {
            self.announcer.defer();
        }
    }
}

/// A heap's budget as a thread's exit queues it for [`announce_deferred`]: a node of the
/// lock-free stack [`DEFERRED`], holding a strong count of itself while queued.
pub(crate) struct ExitAnnouncer {
    budget: Arc<Budget>,
    /// On the stack (or being pushed): a second exit does not push it twice.
    queued: AtomicBool,
    /// The next node down the stack, written by the pusher before the node is published.
    next: AtomicPtr<ExitAnnouncer>,
}

/// The budgets whose source events a thread's exit noted under the registry's lock, to
/// be announced once it is released: a stack of `Arc::into_raw` pointers, pushed by
/// [`ExitAnnouncer::defer`] and taken whole by [`announce_deferred`].
static DEFERRED: AtomicPtr<ExitAnnouncer> = AtomicPtr::new(ptr::null_mut());

impl ExitAnnouncer {
    /// Queues the budget, unless it is queued already (its announcement, still to come,
    /// covers this event: announcing reads every event noted before it).
    fn defer(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let node = Arc::into_raw(Arc::clone(self)).cast_mut();
        let mut head = DEFERRED.load(Ordering::Relaxed);
        loop {
            self.next.store(head, Ordering::Relaxed);
            // `Release`: the taker sees `next` and the node's contents.
            match DEFERRED.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}

/// Announces every queued budget (waking the starved requests a thread's exit made
/// eligible): called by the registry after a thread's exit, and after a cache's removal,
/// once the registry's lock is released, with no lock of the heap held. A thread that
/// queued a budget calls this afterwards itself, so nothing queued waits for another
/// thread. A waker's panic is dropped (the exit hook must not unwind), after every other
/// waker was woken; a panic payload whose destructor panics is leaked rather than
/// dropped.
pub(crate) fn announce_deferred() {
    if DEFERRED.load(Ordering::Relaxed).is_null() {
        return;
    }
    // `Acquire` with the pushers' `Release`.
    let mut node = DEFERRED.swap(ptr::null_mut(), Ordering::Acquire);
    while !node.is_null() {
        // SAFETY: every node on the stack came from `Arc::into_raw` in `defer`, and taking
        // the stack whole makes this thread the only one to turn it back.
        let announcer = unsafe { Arc::from_raw(node) };
        node = announcer.next.load(Ordering::Relaxed);
        // After reading `next`: the node may be pushed again from here on. A swap, not a
        // store: an exit that found the node queued (and so left the announcement to this
        // one) noted its event before its own swap, and `AcqRel` here reads from that
        // swap's release, so the announcement below sees the event.
        announcer.queued.swap(false, Ordering::AcqRel);
        let announced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            announcer.budget.announce();
        }));
        if let Err(payload) = announced
            && let Err(second) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload)))
        {
            core::mem::forget(second);
        }
    }
}

// SAFETY: every call goes to `S`, which keeps the trait's promises.
unsafe impl<S: PageSource> PageSource for ClassPages<S> {
    #[inline]
    fn page_size(&self) -> usize {
        self.source.page_size()
    }
    #[inline]
    fn reserve(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        let outcome = self.source.reserve(len, align);
        self.reservations
            .count(len, self.source.page_size(), &outcome);
        outcome
    }
    #[inline]
    fn reserve_committed(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        let outcome = self.source.reserve_committed(len, align);
        self.reservations
            .count(len, self.source.page_size(), &outcome);
        outcome
    }
    #[inline]
    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.source.commit(ptr, len) }
    }
    #[inline]
    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
        // SAFETY: forwarded from the caller.
        unsafe { self.source.decommit(ptr, len, mode) }
    }
    #[inline]
    unsafe fn release(&self, ptr: NonNull<u8>, len: usize, align: usize) -> Result<()> {
        // SAFETY: forwarded from the caller.
        let outcome = unsafe { self.source.release(ptr, len, align) };
        if outcome.is_ok() {
            // A live reservation's length, counted when it was made.
            let len = len.next_multiple_of(self.source.page_size());
            self.reservations
                .held_bytes
                .fetch_sub(len, Ordering::Relaxed);
        }
        outcome
    }
    #[inline]
    fn max_reserved_bytes(&self) -> Option<usize> {
        self.source.max_reserved_bytes()
    }
}
