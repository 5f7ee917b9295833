//! [`AsyncHeap`]: a heap of bounded capacity whose allocations wait for room instead of
//! failing, with [`HeapBox`], [`HeapArc`] and [`HeapVec`] handles, and [`RegionPages`],
//! a page source over a caller-supplied region so that the heap runs in a fixed budget.
//!
//! # How waiting works
//!
//! The heap counts the bytes its live blocks take (their usable size: the size class of
//! a small block, whole pages of a large one) against a capacity fixed at construction.
//! A request that fits is served at once; one that does not fit joins a queue and its
//! future returns `Pending` until frees make room.
//!
//! - **Uncontended, no shared atomic.** Each thread keeps a credit of bytes taken from
//!   the heap's shared count in batches (a 64th of the capacity, at most 64 KiB): a
//!   request is served from it, and a free adds to it, with plain loads and stores of
//!   the thread's own cache line. The credit goes back to the shared count beyond two
//!   batches, and all of it as soon as anyone waits: a waiter takes back the credits
//!   of threads that are not using them (a Dekker handshake with an asymmetric fence,
//!   see `credit.rs`) and the others give theirs when their current call ends. The
//!   capacity bound stays exact (credits are taken from it); [`AsyncHeap::available`]
//!   counts the credits too. Where the asymmetric fence is not available (Linux's
//!   `membarrier`), there are no credits and every call uses the shared count.
//!
//! - **FIFO, and fair to big requests.** The queue is strictly first come, first
//!   served: while anyone waits, every new request queues behind it, even one that
//!   would fit in the bytes available now (and [`try_alloc`](AsyncHeap::try_alloc)
//!   fails). So a large request at the head is never overtaken by a stream of small
//!   ones: frees accumulate until it fits. The price is head-of-line blocking: small
//!   requests behind a large one wait for it. (Zero-sized requests charge nothing and
//!   never queue.)
//! - **Cancellation-safe.** Dropping a waiting future removes it from the queue; if it
//!   had been granted its bytes but not yet polled, the bytes go back and the next
//!   waiters are served. A value passed to [`alloc`](AsyncHeap::alloc) is dropped with
//!   the future.
//! - **No lost wake-up**, in particular none when a free lands between a waiter's look
//!   at the available bytes and its registration: the look and the registration are one
//!   atomic step on the word that frees add to (see `budget.rs` for the protocol and
//!   its loom models).
//! - **A free never blocks, and never wakes under the lock.** A free gives its block
//!   back to the slab heap (the thread's magazine: a cross-thread free is the normal
//!   path there) and adds its bytes to one atomic word. If requests wait, it sets a
//!   "pump" bit in that word and serves the queue only if the queue's lock is free;
//!   otherwise the lock's holder sees the bit when it unlocks and serves the queue
//!   itself. That bit is the lock-free hand-off: the blocks need no queue of their own
//!   because the magazines already take frees from any thread without the heap's queue
//!   lock, so only the byte count is handed over, and one atomic word carries it.
//!   Wakers are collected under the lock and woken after it is released.
//!
//! # When the region runs short
//!
//! The capacity bounds the bytes of live blocks, not the memory the page source must
//! hold for them (see "Sizing" below). When a request's bytes are granted but the
//! source cannot supply its block (a [`RegionPages`] region full of partly used slabs,
//! or of the caches' blocks), the request does not fail and does not abort:
//!
//! - it gives its bytes back and waits as a **starved** request. While any request is
//!   starved, every return of memory is a *source event*, which wakes the starved
//!   requests:
//!   - every free of the heap: it bypasses the magazines (the block, and the freeing
//!     thread's magazines of its class, go back to their slabs, and a slab left empty
//!     goes back to the source inside the free);
//!   - a thread's exit, whose magazines of the heap go back to its classes (the
//!     retries' trims then release the emptied slabs);
//!   - every release of empty slabs to the source, or of free blocks to their slabs,
//!     by a class of the heap: another request's trim, a decay or working-set pass;
//! - after an event, a starved request takes its bytes again (ahead of the ordinary
//!   queue: it was granted first), gives the heap's caches back to the source
//!   ([`SlabHeap::trim`]: the calling thread's magazines, every depot, every empty slab)
//!   and tries once more. One attempt per starved request per event, no busy loop; every
//!   starved request retries on each event (each costs a trim, 50 class locks, plus the
//!   allocation). An eligible request whose bytes are short is the head of the queue
//!   until frees give them back;
//! - the order that holds: starved requests are granted their retries in the order
//!   they first starved (oldest first), each event makes every one of them retry, and a
//!   retry (or a new request's own attempt) that gives memory back is itself an event.
//!   The retries then run as their tasks are polled, so the memory one event returns
//!   goes to whichever attempt comes first, possibly a newer request's; an older one
//!   that lost retries at the next event, and every later return, a free or another
//!   request's trim included, is one. No older request is left asleep while newer ones
//!   are served from memory that came back, but the region is not handed out in strict
//!   age order (its memory is not interchangeable: size classes, alignment, contiguous
//!   runs);
//! - a starved request that has seen no event since its last attempt holds up nobody:
//!   ordinary requests are served past it. Counted in [`AsyncHeap::waiters`], it makes
//!   [`try_alloc`](AsyncHeap::try_alloc) and its kin fail (someone waits);
//! - dropped, it leaves the list (its bytes are already back);
//! - the `try_` calls never wait: when the source fails they trim and try once more,
//!   then return `Err`.
//!
//! What it does not promise: blocks another thread freed *before* the shortage and that
//! still sit in that thread's two magazines of a class stay out of reach until that
//! thread frees on this heap again (its next free empties its magazines of that class),
//! exits (an event), or, with the `reclaim-idle-threads` feature, until the next
//! attempt's trim takes them. Their bytes are counted back already, so a request can wait while
//! [`available`](AsyncHeap::available) is large.
//!
//! A request the source cannot supply even with everything back never waits; the
//! waiting call panics (the `try_` calls return `Err`):
//! - a large block whose pages are longer than the most the source can ever supply
//!   ([`PageSource::max_reserved_bytes`]: a [`RegionPages`] region's length) fails
//!   before it queues, whatever is live;
//! - otherwise, when a starved request's attempt fails while the heap holds nothing of
//!   the source but its bookkeeping (no live block, no other request holding bytes, no
//!   slab in any class) and no event came during the attempt: for a source with such a
//!   bound, if what the heap holds of it plus the reservation it refused (the
//!   bookkeeping, a slab, a large block's pages) is longer than the bound; for a source
//!   without one, always (the heap takes itself for the source's only user, which then
//!   had everything back). That is the case of a region smaller than the heap's
//!   bookkeeping plus the slab the request needs (see the minimum below). A request
//!   refused only for the padding its alignment costs in a region otherwise long
//!   enough waits instead.
//!
//! A region serves one heap. Two heaps over clones of one [`RegionPages`] are sound,
//! but one heap's frees are no events of the other's: a request of one that starves
//! while the other holds the region waits until its own heap frees something, possibly
//! for ever.
//!
//! ## Sizing the page source
//!
//! No bound from the capacity alone is worth stating: a slab goes back only when all its
//! blocks are free, so a size class holds as much memory as its own peak needed until
//! that peak is freed nearly slab by slab. A class holds at most about **1.07 × its peak
//! live bytes + 2 slabs + 2 magazines per thread** (a slab is 256 KiB, up to 2 MiB for
//! the classes above 16 KiB; a magazine holds up to about 64 KiB of blocks and at
//! least 4, growing under contention to about 256 KiB: so up to **256 KiB or 4 blocks
//! of the class, whichever is more**, which is 512 KiB for the 128 KiB class, whose
//! magazines hold 4 blocks from the start). With the heap's own 2 MiB of bookkeeping, a
//! region of 2 MiB + that sum over the classes used is always enough for small blocks.
//! The minimum: the bookkeeping (the classes' headers and depots, about 1.6 MiB, taken
//! from the source at the first small allocation) and one slab of the class asked for,
//! aligned to 256 KiB: about 2 MiB for the classes up to 16 KiB, up to about 4 MiB
//! above (their slabs are up to 2 MiB). A smaller
//! region serves no block of that class, and a request for one fails at once (above).
//! Each class's peak is at most the capacity, so a program that fills the capacity in
//! K classes one after another needs up to **K × capacity** (up to 50 × for all the
//! classes). Large blocks need contiguous pages on top: give them headroom (at least
//! the largest block plus its alignment), or a heap and region of their own. Below the
//! rule the heap still works: requests wait as starved ones until frees give region
//! back, as above.
//!
//! # A free can panic
//!
//! A free (dropping a [`HeapBox`], the last [`HeapArc`], a [`HeapVec`] or a
//! [`HeapBlock`], or [`AsyncHeap::dealloc`]) that gives bytes back while requests wait
//! may serve the queue and wake the waiters it lets in, after releasing the lock. A
//! waker is user code, and `Waker::wake` may panic. When one does, the operation that
//! ran the wakes still wakes every other waiter it served and runs the grant passes
//! asked for meanwhile, then re-raises the first waker's panic
//! ([`resume_unwind`](std::panic::resume_unwind)) to its caller; a thread that is
//! already unwinding (a handle dropped during a panic) drops the payload instead, so a
//! second panic never aborts the process. By then the block is freed and its bytes are
//! counted back: the heap stays whole and usable. The panic comes out of whichever
//! operation served the queue: usually the free, but also a poll of an allocation
//! future (whose first poll may serve the queue), [`try_alloc`](AsyncHeap::try_alloc)
//! and its kin when they take back other threads' credits, an allocation (waiting or
//! `try_`) whose trim or cache pass gave memory back while requests were starved (it
//! wakes them; the block it got is freed if the wake panics), the drop of a waiting
//! future (which gives its place, and any bytes granted to it, back), or any operation
//! that held the queue's lock when a free asked for a pass. A free that stays in the
//! thread's credit wakes no one and never panics. Wakers that never panic (those of
//! the usual executors) make every free panic-free.
//!
//! # Leaked allocations
//!
//! A handle given up without a free (`mem::forget` of a [`HeapBox`], [`HeapArc`],
//! [`HeapVec`] or [`HeapBlock`], a [`HeapBox::leak`], a [`HeapArc`] cycle, a
//! [`HeapBlock::into_raw`] never given to [`AsyncHeap::dealloc`]) leaks its block: its
//! charge stays taken from the capacity for the heap's life, so the heap has that much
//! less room for good (forgetting allocations in a loop ends with every request
//! waiting). The heap stays sound: a leaked block is never reused, and the handles
//! borrow the heap, so none outlives it.
//!
//! A waiting future leaked the same way (`mem::forget` of a boxed, pinned future, or a
//! task an executor leaks) keeps its place at the head of the queue: the requests
//! behind it wait, and once frees make room it is granted its bytes, which nobody
//! takes, so they too are lost for good (as a leaked waiter of a semaphore keeps the
//! permits it is given). Drop a future you no longer want; never leak one.
//!
//! # Threads beyond 64
//!
//! A heap has 64 credit slots. A thread gets a number the first time it uses any async
//! heap (never reused) and may own the slot of that number modulo 64: it claims it at
//! its first request or free on the heap and keeps it for the heap's life, even after
//! it exits (its credit, at most two batches, stays there, counted as available, until
//! a waiting request takes it back). A thread whose slot another thread owns (every
//! thread past the 64th to use the heap, and some earlier ones whose numbers share a
//! remainder) has no credit: its requests and frees use the shared atomic word, one
//! locked read-modify-write each, as every thread does where credits are off. That is
//! correct, only slower under contention.
//!
//! # Deadlock
//!
//! A bounded heap can deadlock: if every task holds memory and waits for more that only
//! another waiting task could free, none is ever served. The heap cannot tell this from
//! a slow free, so it waits forever. A request needs two things, and either can be the
//! one every task waits for:
//!
//! - **bytes of the capacity**: two tasks holding 600 bytes of 1,000 and each asking for
//!   500 more;
//! - **memory of the page source** (a [`RegionPages`] region): the blocks the tasks hold
//!   keep their slabs, and the caches keep more, so a region below the sizing rule can
//!   be full while bytes are available; tasks that each hold a few blocks and wait for a
//!   block of another size class then wait for region only their own frees give back,
//!   although the bytes they hold are well below the capacity.
//!
//! Avoid it by keeping both in hand:
//! - size the region by the rule ("Sizing the page source" above) for the size classes
//!   your tasks use, their peaks and the threads that use the heap: then the region
//!   has the memory whenever the capacity has the bytes, and only the capacity counts;
//!   below the rule, budget in region as well as in bytes (or give each kind of task a
//!   heap and region of its own);
//! - keep the sum of what the tasks that may wait at the same time hold below the
//!   capacity minus the largest request;
//! - ask for everything a task needs in one request (one [`alloc_layout`] or one
//!   [`HeapVec::with_capacity`](HeapVec::with_capacity)) rather than holding some while
//!   waiting for more;
//! - use [`try_alloc`](AsyncHeap::try_alloc) (or a timeout around the future) when
//!   already holding memory;
//! - remember that [`HeapVec`] growth holds the old buffer while it waits for the new
//!   one.
//! - never wait for memory of a heap inside a waker's `wake`: a free or an allocation
//!   of the heap runs the wakes of the waiters it serves, and a waker that blocks on
//!   the same heap there (waits for memory inside `wake`) deadlocks the free or
//!   allocation that runs it.
//!
//! For example, a capacity of 4 MiB shared by 8 threads whose tasks use blocks of 64
//! bytes, 1 KiB and 8 KiB, each task holding at most 256 KiB while it waits for at most
//! 64 KiB more (8 × 256 KiB + 64 KiB is below the capacity), needs a region of 2 MiB +
//! 3 × (1.07 × 4 MiB + 2 slabs of 256 KiB + 2 magazines of up to 256 KiB × 8 threads),
//! about 29 MiB: every class may reach the capacity in turn. With that region, no
//! request waits for the region once its bytes are there (`tests/all/async_heap_deadlock.rs`
//! runs this example).
//!
//! [`AsyncHeap::waiters`] and [`AsyncHeap::available`] help a watchdog spot the state.
//! `tests/all/async_heap_deadlock.rs` shows the detection with a poll budget.
//!
//! [`alloc_layout`]: AsyncHeap::alloc_layout

mod alloc_value;
mod arc;
mod boxed;
mod budget;
mod class_pages;
mod credit;
mod region;
#[cfg(test)]
mod tests;
mod vec;

use core::alloc::Layout;
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::ptr::NonNull;

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::{DefaultPages, PageSource};

use crate::SlabHeap;
use crate::size_class::{CLASS_SIZES, MAX_SMALL, class_for};
use alloc_value::AllocValue;
use budget::Budget;
pub(crate) use class_pages::announce_deferred;
use class_pages::{ClassPages, Reservations};
use std::sync::Arc;

pub use arc::HeapArc;
pub use boxed::HeapBox;
pub use region::RegionPages;
pub use vec::HeapVec;

/// The largest capacity, in bytes, an [`AsyncHeap`] can have (2^61 - 1).
pub const MAX_CAPACITY: usize = budget::MAX_CAPACITY;

/// A heap with a capacity in bytes whose allocations wait for room instead of failing.
///
/// Small blocks (up to [`MAX_SMALL`]) come from a
/// [`SlabHeap`] over the page source `S`, large ones straight from `S` (whole pages), so
/// with a [`RegionPages`] source every byte lives in the caller's region. Each live
/// block counts its usable size against the capacity; see the [module
/// docs](crate::async_heap) for the waiting rules and the deadlock a bound makes
/// possible.
///
/// # Examples
///
/// ```
/// use pagekeep_slab::async_heap::AsyncHeap;
/// # fn block_on<F: core::future::Future>(future: F) -> F::Output {
/// #     let mut future = core::pin::pin!(future);
/// #     let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
/// #     loop {
/// #         if let core::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
/// #             return output;
/// #         }
/// #     }
/// # }
///
/// let heap = AsyncHeap::new(4096);
/// block_on(async {
///     let answer = heap.alloc(42u64).await;
///     assert_eq!(*answer, 42);
///     assert!(heap.available() < 4096);
///     drop(answer);
///     assert_eq!(heap.available(), 4096);
/// });
/// ```
pub struct AsyncHeap<S: PageSource + Clone = DefaultPages> {
    /// The small blocks; its classes tell `budget` when they give memory back.
    slabs: SlabHeap<ClassPages<S>>,
    source: S,
    /// Shared with the classes' source.
    budget: Arc<Budget>,
    /// What the classes hold of `source` and the reservations it refused them (shared
    /// with the classes' source).
    reservations: Arc<Reservations>,
}

impl AsyncHeap<DefaultPages> {
    /// A heap of `capacity` bytes on OS pages (heap pages under miri).
    ///
    /// # Panics
    /// If `capacity` is above [`MAX_CAPACITY`].
    pub fn new(capacity: usize) -> Self {
        Self::with_source(DefaultPages {}, capacity)
    }
}

impl<S: PageSource + Clone> AsyncHeap<S> {
    /// A heap of `capacity` bytes whose memory comes from `source`.
    ///
    /// # Panics
    /// If `capacity` is above [`MAX_CAPACITY`].
    pub fn with_source(source: S, capacity: usize) -> Self {
        let budget = Arc::new(Budget::new(capacity));
        let reservations = Arc::new(Reservations::default());
        AsyncHeap {
            slabs: SlabHeap::with_source(ClassPages::new(
                source.clone(),
                budget.clone(),
                reservations.clone(),
            ))
            .on_space_returned(ClassPages::space_returned),
            source,
            budget,
            reservations,
        }
    }

    /// The capacity in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.budget.capacity()
    }

    /// The bytes not taken by live blocks (or granted to waiters that have not yet
    /// run). Starved requests' bytes count as available while they wait.
    pub fn available(&self) -> usize {
        self.budget.available()
    }

    /// How many requests wait: for room, or, starved, for the page source to have their
    /// block ("When the region runs short" in the [module docs](crate::async_heap)).
    pub fn waiters(&self) -> usize {
        self.budget.waiters()
    }

    /// The page source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The bytes a block of `layout` counts against the capacity: its usable size (the
    /// size class of a small block, whole pages of a large one, plus, for a large block
    /// aligned beyond a page, the padding its alignment may cost in the source), 0 for a
    /// zero size. `None` if that is beyond the capacity (such a request could never be
    /// served).
    #[inline(always)]
    pub fn charge(&self, layout: Layout) -> Option<usize> {
        let bytes = if layout.size() == 0 {
            0
        } else if let Some(class) = class_for(layout.size(), layout.align()) {
            CLASS_SIZES[class]
        } else {
            self.large_charge(layout)?
        };
        (bytes <= self.capacity()).then_some(bytes)
    }

    /// The charge of a block beyond the size classes, before the capacity check.
    #[inline(never)]
    fn large_charge(&self, layout: Layout) -> Option<usize> {
        let page = self.source.page_size();
        // A source finds such a block in `size + align - page` bytes at worst
        // (a region's free extents), which the capacity must bound.
        let padding = layout.align().saturating_sub(page);
        layout
            .size()
            .checked_next_multiple_of(page)?
            .checked_add(padding)
    }

    /// The charge of `layout`, or a panic naming the capacity.
    #[track_caller]
    fn charge_or_panic(&self, layout: Layout) -> usize {
        match self.charge(layout) {
            Some(bytes) => bytes,
            None => beyond_capacity(layout, self.capacity()),
        }
    }

    /// Allocates a block of `layout`, waiting for room.
    ///
    /// # Panics
    /// If the block's [charge](Self::charge) is beyond the capacity, or if the page
    /// source cannot supply it even with nothing live in the heap (a large block longer
    /// than [`PageSource::max_reserved_bytes`] fails so whatever is live; it could never
    /// be served: "When the region runs short" in the [module docs](crate::async_heap)). A poll (or the drop of the waiting future) that serves the queue
    /// re-raises a waiter's waker panic, as a free does ("A free can panic" in the
    /// [module docs](crate::async_heap)). Never aborts or fails when the page source
    /// cannot supply a block the capacity allows: the request waits for frees to give
    /// memory back to the source ("When the region runs short" in the module docs).
    ///
    /// # Examples
    ///
    /// ```
    /// use core::alloc::Layout;
    /// use pagekeep_slab::async_heap::AsyncHeap;
    /// # fn block_on<F: core::future::Future>(future: F) -> F::Output {
    /// #     let mut future = core::pin::pin!(future);
    /// #     let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    /// #     loop {
    /// #         if let core::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
    /// #             return output;
    /// #         }
    /// #     }
    /// # }
    ///
    /// let heap = AsyncHeap::new(1 << 20);
    /// let block = block_on(heap.alloc_layout(Layout::from_size_align(1000, 64)?));
    /// assert_eq!(block.as_ptr().addr().get() % 64, 0);
    /// assert_eq!(heap.available(), (1 << 20) - 1024);
    /// # Ok::<(), core::alloc::LayoutError>(())
    /// ```
    pub async fn alloc_layout(&self, layout: Layout) -> HeapBlock<'_, S> {
        let bytes = self.charge_or_panic(layout);
        if bytes > MAX_SMALL && self.beyond_source(layout) {
            never_supplied(layout);
        }
        // The fast path first, without building the waiting future.
        if bytes != 0 && !self.budget.try_acquire(bytes) {
            self.budget.acquire(bytes).await;
        }
        let ptr = match self.allocate_raw(layout) {
            Ok(ptr) => ptr,
            // A zero-sized block never fails, so `bytes` is not 0 here.
            Err(AllocError) => {
                self.budget
                    .supply(bytes, || self.allocate_starved(layout, bytes))
                    .await
            }
        };
        let block = HeapBlock {
            heap: self,
            ptr,
            layout,
            _not_send: PhantomData,
        };
        // The allocation (its trim, or a pass it ran) may have given memory back while
        // requests are starved: they retry. (A waker's panic frees the block.)
        self.budget.announce();
        block
    }

    /// Allocates a block of `layout` if there is room now and nobody waits; never waits
    /// for room. (When the room is only in other threads' credits, it takes the queue's
    /// lock for a moment to take back those of threads that are not using them: room a
    /// thread's credit holds while that thread is inside an allocation or a free does
    /// not count.) If the page source cannot supply the block, the heap's caches are
    /// given back to it ([`SlabHeap::trim`]) and the block is tried once more.
    ///
    /// # Errors
    /// No room, someone waiting (see the FIFO rule in the [module
    /// docs](crate::async_heap)), a charge beyond the capacity, or the page source
    /// failing twice.
    #[inline(always)]
    pub fn try_alloc_layout(&self, layout: Layout) -> Result<HeapBlock<'_, S>, AllocError> {
        let bytes = self.charge(layout).ok_or(AllocError)?;
        if bytes > MAX_SMALL && self.beyond_source(layout) {
            return Err(AllocError);
        }
        if bytes != 0 && !self.budget.try_acquire(bytes) {
            return Err(AllocError);
        }
        let ptr = match self.allocate_raw(layout) {
            Ok(ptr) => ptr,
            Err(AllocError) => match self.allocate_reclaiming(layout) {
                Some(ptr) => ptr,
                None => {
                    // `bytes` is not 0: a zero-sized block never fails.
                    self.budget.release(bytes);
                    self.budget.announce();
                    return Err(AllocError);
                }
            },
        };
        let block = HeapBlock {
            heap: self,
            ptr,
            layout,
            _not_send: PhantomData,
        };
        // As in `alloc_layout`.
        self.budget.announce();
        Ok(block)
    }

    /// Moves `value` into the heap, waiting for room.
    ///
    /// The future tries the fast path ([`try_alloc`](Self::try_alloc)) at its first poll
    /// and moves the value once, from the future into its block; it waits as
    /// [`alloc_layout`](Self::alloc_layout) does only when there is no room at once.
    /// Dropped before it returns its box, it drops the value.
    ///
    /// # Panics
    /// As [`alloc_layout`](Self::alloc_layout); also if polled again after it returned
    /// its box.
    #[inline(always)]
    pub fn alloc<T>(&self, value: T) -> impl Future<Output = HeapBox<'_, T, S>> {
        AllocValue::new(self, value, Self::alloc_layout)
    }

    /// Moves `value` into the heap if there is room now and nobody waits; gives the value
    /// back otherwise. Never waits.
    ///
    /// # Errors
    /// As [`try_alloc_layout`](Self::try_alloc_layout), with the value.
    #[inline(always)]
    pub fn try_alloc<T>(&self, value: T) -> Result<HeapBox<'_, T, S>, T> {
        match self.try_alloc_layout(Layout::new::<T>()) {
            Ok(block) => Ok(HeapBox::write(block, value)),
            Err(AllocError) => Err(value),
        }
    }

    /// Waits for room for a `T`, then builds it with `make` straight into the block. If
    /// `make` panics, the block goes back.
    ///
    /// # Panics
    /// As [`alloc_layout`](Self::alloc_layout), and if `make` panics.
    pub async fn alloc_with<T>(&self, make: impl FnOnce() -> T) -> HeapBox<'_, T, S> {
        let block = self.alloc_layout(Layout::new::<T>()).await;
        // The block frees itself if `make` unwinds.
        let value = make();
        HeapBox::write(block, value)
    }

    /// Copies `slice` into the heap, waiting for room.
    ///
    /// # Panics
    /// As [`alloc_layout`](Self::alloc_layout).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_slab::async_heap::AsyncHeap;
    /// # fn block_on<F: core::future::Future>(future: F) -> F::Output {
    /// #     let mut future = core::pin::pin!(future);
    /// #     let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    /// #     loop {
    /// #         if let core::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
    /// #             return output;
    /// #         }
    /// #     }
    /// # }
    ///
    /// let heap = AsyncHeap::new(4096);
    /// let copy = block_on(heap.alloc_slice_copy(b"hello"));
    /// assert_eq!(&*copy, b"hello");
    /// ```
    pub async fn alloc_slice_copy<T: Copy>(&self, slice: &[T]) -> HeapBox<'_, [T], S> {
        let layout = Layout::for_value(slice);
        let block = self.alloc_layout(layout).await;
        HeapBox::copy_slice(block, slice)
    }

    /// The attempt of a starved request holding `bytes` for `layout`:
    /// [`allocate_reclaiming`](Self::allocate_reclaiming), and a panic if the source
    /// failed although it had everything back (see [`never_supplied`]).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn allocate_starved(&self, layout: Layout, bytes: usize) -> Option<NonNull<u8>> {
        let events = self.budget.source_events();
        self.reservations.take_longest_refused();
        let ptr = self.allocate_reclaiming(layout);
        if ptr.is_none()
            && self.holds_nothing_but(bytes)
            && self.budget.source_events() == events
            && self.refusal_is_final(layout)
        {
            never_supplied(layout);
        }
        ptr
    }

    /// Whether a block of `layout` beyond the size classes can never be reserved: its
    /// pages are longer than the most the source can ever supply
    /// ([`PageSource::max_reserved_bytes`]), whatever is freed first.
    #[cold]
    #[inline(never)]
    fn beyond_source(&self, layout: Layout) -> bool {
        if class_for(layout.size(), layout.align()).is_some() {
            return false;
        }
        let page = self.source.page_size();
        match (
            self.source.max_reserved_bytes(),
            layout.size().checked_next_multiple_of(page),
        ) {
            (Some(max), Some(len)) => len > max,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// For a starved request whose attempt just failed while the heap held nothing of
    /// its source but its bookkeeping, and no source event came: whether that failure
    /// is for good.
    ///
    /// For a source with a bound ([`PageSource::max_reserved_bytes`], as
    /// [`RegionPages`] has), only if what the heap holds of it plus the longest
    /// reservation it refused during the attempt (the block's pages, for a large one)
    /// exceeds the bound: that holds however the source is shared, as the bookkeeping
    /// stays while the heap lives. (A reservation refused only for the padding its
    /// alignment costs, in a region long enough without it, is not for good by this
    /// measure: such a request waits.) For a source without a bound, always: the heap
    /// then takes itself for the source's only user, which had everything back.
    #[cold]
    fn refusal_is_final(&self, layout: Layout) -> bool {
        let refused = self.reservations.take_longest_refused();
        let Some(max) = self.source.max_reserved_bytes() else {
            return true;
        };
        let refused = if class_for(layout.size(), layout.align()).is_some() {
            refused
        } else {
            // The large path reserves from the source directly, not through the classes.
            let page = self.source.page_size();
            layout
                .size()
                .checked_next_multiple_of(page)
                .unwrap_or(usize::MAX)
                .max(refused)
        };
        self.reservations.held_bytes().saturating_add(refused) > max
    }

    /// Whether the heap holds nothing of its source but its bookkeeping, apart from the
    /// `bytes` the caller holds: no live block and no other request holding bytes (all
    /// of the capacity is available but `bytes`), and no slab in any class. For a starved
    /// request whose attempt failed: if no source event came since the attempt began
    /// either (every return of memory while a request is starved is one), the source had
    /// all it will ever have back during that attempt, so waiting would be for ever.
    #[cold]
    fn holds_nothing_but(&self, bytes: usize) -> bool {
        if self.budget.available() + bytes != self.capacity() {
            return false;
        }
        let small = self.slabs.stats().small;
        small.slabs_partial + small.slabs_full + small.slabs_empty == 0
    }

    /// Gives the heap's caches back to the page source (the calling thread's magazines,
    /// every depot, every empty slab and kept large block: [`SlabHeap::trim`]), then
    /// tries the block again.
    #[cold]
    #[inline(never)]
    fn allocate_reclaiming(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.slabs.trim();
        self.allocate_raw(layout).ok()
    }

    /// Memory for a block of `layout` (its charge already taken).
    #[inline(always)]
    fn allocate_raw(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        if layout.size() == 0 {
            // Aligned, non-null and never dereferenced for a zero size.
            return Ok(NonNull::<u8>::dangling().with_addr(
                core::num::NonZeroUsize::new(layout.align()).expect("an alignment is non-zero"),
            ));
        }
        if class_for(layout.size(), layout.align()).is_some() {
            return self.slabs.alloc_nonzero(layout).ok_or(AllocError);
        }
        self.allocate_large(layout)
    }

    /// Memory for a block of `layout` beyond the size classes: whole pages of the source.
    #[inline(never)]
    fn allocate_large(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        let page = self.source.page_size();
        let len = layout
            .size()
            .checked_next_multiple_of(page)
            .ok_or(AllocError)?;
        self.source
            .reserve_committed(len, layout.align().max(page))
            .map_err(|_| AllocError)
    }

    /// Frees a block and gives its charge back (waking waiters it lets in, after any
    /// lock is released).
    ///
    /// # Panics
    /// If a waiter's waker panics when this free wakes it: the block is freed, its
    /// bytes are back and every other waiter served is woken first; then the first
    /// waker's panic is re-raised (not while the thread is already unwinding). See
    /// "A free can panic" in the [module docs](crate::async_heap).
    ///
    /// # Safety
    /// - `ptr` is a live block of this heap allocated with `layout` (through
    ///   [`HeapBlock::into_raw`] or a handle), freed once, unused afterwards.
    #[inline(always)]
    pub unsafe fn dealloc(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        if let Some(class) = class_for(layout.size(), layout.align()) {
            // While a request is starved the block goes past the magazines, so that its
            // slab, once empty, is back in the source before the request is told.
            self.budget
                .free_then_release(CLASS_SIZES[class], |starved| {
                    if starved {
                        // SAFETY: a block of `slabs` with this layout (non-zero size, of a
                        // size class), freed once (caller).
                        unsafe { self.slabs.free_to_slab(ptr, layout) }
                    } else {
                        // SAFETY: as above.
                        unsafe { self.slabs.free(ptr, layout) }
                    }
                });
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { self.dealloc_large(ptr, layout) };
        }
    }

    /// [`dealloc`](Self::dealloc) of a block beyond the size classes.
    ///
    /// # Safety
    /// - As [`dealloc`](Self::dealloc), for a block of non-zero size beyond the classes.
    #[inline(never)]
    unsafe fn dealloc_large(&self, ptr: NonNull<u8>, layout: Layout) {
        let bytes = self.charge(layout).expect("a live block's charge fits");
        let page = self.source.page_size();
        // The reservation's length: whole pages (the charge adds alignment padding,
        // which is the source's, not the block's).
        let len = layout.size().next_multiple_of(page);
        self.budget.free_then_release(bytes, |_| {
            // SAFETY: the reservation `allocate_raw` made for this layout, with the same
            // length and alignment, released once and unused afterwards (caller).
            // A refused release leaks the pages; the budget still gets its bytes back,
            // as the block is gone for the program.
            let _ = unsafe { self.source.release(ptr, len, layout.align().max(page)) };
        });
    }
}

impl<S: PageSource + Clone> fmt::Debug for AsyncHeap<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncHeap")
            .field("capacity", &self.capacity())
            .field("available", &self.available())
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The panic of a request that could never be served.
#[cold]
#[inline(never)]
#[track_caller]
fn beyond_capacity(layout: Layout, capacity: usize) -> ! {
    panic!(
        "a block of {} bytes (alignment {}) counts for more than the heap's capacity of {} bytes",
        layout.size(),
        layout.align(),
        capacity
    )
}

/// The panic of a request the page source cannot supply even with everything back.
#[cold]
#[inline(never)]
#[track_caller]
fn never_supplied(layout: Layout) -> ! {
    panic!(
        "the page source cannot supply a block of {} bytes (alignment {}) even with nothing \
         live in the heap (a region too small for it, or a source that refuses it: see \
         \"Sizing the page source\" in the async heap's docs)",
        layout.size(),
        layout.align()
    )
}

/// A raw block of an [`AsyncHeap`]: freed (and its bytes given back) when dropped.
#[must_use = "the block is freed at once if dropped"]
pub struct HeapBlock<'h, S: PageSource + Clone = DefaultPages> {
    heap: &'h AsyncHeap<S>,
    ptr: NonNull<u8>,
    layout: Layout,
    /// Like the raw pointer it is: `Send`/`Sync` only as written below.
    _not_send: PhantomData<*mut u8>,
}

// SAFETY: the block is owned memory (bytes, no value), so moving it to another thread
// is fine if the heap may be used from there (`AsyncHeap: Sync`).
unsafe impl<S: PageSource + Clone> Send for HeapBlock<'_, S> where AsyncHeap<S>: Sync {}
// SAFETY: `&HeapBlock` gives only the pointer and layout.
unsafe impl<S: PageSource + Clone> Sync for HeapBlock<'_, S> where AsyncHeap<S>: Sync {}

impl<'h, S: PageSource + Clone> HeapBlock<'h, S> {
    /// The start of the block (valid for reads and writes of
    /// [`layout`](Self::layout)`.size()` bytes while the block lives).
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The layout the block was allocated with.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The heap the block belongs to.
    #[inline]
    pub fn heap(&self) -> &'h AsyncHeap<S> {
        self.heap
    }

    /// Gives up the block without freeing it; free it with [`AsyncHeap::dealloc`]
    /// (or leak it, keeping its bytes taken from the capacity for the heap's life, as
    /// `mem::forget` of the block does).
    #[inline]
    pub fn into_raw(self) -> (NonNull<u8>, Layout) {
        let block = core::mem::ManuallyDrop::new(self);
        (block.ptr, block.layout)
    }
}

impl<S: PageSource + Clone> Drop for HeapBlock<'_, S> {
    fn drop(&mut self) {
        // SAFETY: the block is live, of this heap, with this layout, and owned by this
        // handle, which is going away.
        unsafe { self.heap.dealloc(self.ptr, self.layout) };
    }
}

impl<S: PageSource + Clone> fmt::Debug for HeapBlock<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapBlock")
            .field("ptr", &self.ptr)
            .field("layout", &self.layout)
            .finish()
    }
}
