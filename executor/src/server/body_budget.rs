//! [`BodyBudget`]: one bound on the request body bytes a server (or several) holds, and
//! [`IncomingBody`], the request body that takes its data from it.
//!
//! hyper reads a body from the socket only as fast as the handler asks for it: it
//! reads a chunk into the connection's read buffer (at most
//! [`max_header_bytes`](crate::ServerBuilder::max_header_bytes) deep, about 16 KiB)
//! and hands it over when the body is polled. With a budget, [`IncomingBody`] copies
//! every data frame into blocks of the budget's [`AsyncHeap`] before the handler sees
//! it (a piece per frame for the handler, a `Bytes` sharing the block), and drops
//! hyper's chunk, so hyper's buffer is reused at once. When the heap is full the copy
//! waits for room, first come, first served, and while it waits nothing polls hyper's
//! body, so hyper stops reading that connection's socket: the kernel's receive buffer
//! fills and TCP's window pushes the client back. A block goes back to the heap when
//! the handler has dropped every chunk of it and the body no longer fills it, on
//! whatever thread.
//!
//! # Blocks sized by what arrives
//!
//! A body fills a block in order, piece after piece, but holds it only while frames
//! keep coming: whenever it waits for its client (hyper's body is `Pending`) it keeps
//! only a weak reference, so the block goes back with its last piece; if the handler
//! still holds a piece of it when the next frame comes (the block is charged anyway),
//! the body takes it back and fills its room. At the end of the body it lets go for
//! good. A new block is sized by the frame that starts it (the frame and its
//! bookkeeping, rounded up to its size class up to 1 KiB, to a power of two above, at
//! most 16 KiB), and is at least twice the block before it while that one is alive
//! (full, its pieces held or frames still coming). So:
//! - a body waiting for its client, or ended, holds nothing of the budget: a slow
//!   client costs the budget only the blocks of the chunks its handler holds; a
//!   streaming handler holds none, and one that holds what a slow client sent is
//!   charged those bytes, their bookkeeping, and the rounding of their blocks: each
//!   block is at least twice the one before it while that one lives, so a block
//!   filled after a wait can be mostly empty (a client that sends 1,500 bytes after
//!   each wait, its handler keeping every chunk: blocks of 2, 4 and 8 KiB, 14,336
//!   bytes charged for 6,000 held), at most 16 KiB per block;
//! - a handler that collects a body gets its pieces packed in blocks that grow to
//!   16 KiB (16,272 bytes of data each), whatever the frames' sizes and timing.
//!
//! # What the budget bounds
//!
//! The body bytes handed to handlers and still alive, and the bookkeeping they need
//! outside the heap: each piece counts 48 bytes and each block 64 bytes against its
//! block's room ([`PIECE_BOOKKEEPING_BYTES`], [`BLOCK_BOOKKEEPING_BYTES`]), which cover
//! the piece's owner box in `Bytes` (32 bytes) and the block's `Arc` (56 bytes) with
//! the global allocator's rounding. So chunks alive anywhere take at most the capacity
//! in the heap and at most as much again in bookkeeping (a body of one-byte frames held
//! by its handler: about 49 bytes of budget a frame, packed in shared blocks), whatever
//! the number of connections and however small the frames. (The `Bytes` handles themselves, 32 bytes each, live
//! where the handler keeps them.) Beside it each connection with a body in progress
//! holds hyper's read buffer and at most two of its chunks (one waiting in the body,
//! one in hyper's channel), so about 3 x `max_header_bytes` per uploading connection,
//! outside the budget; and the heap's slab pages keep some fragmentation (the measured
//! figures are in the README).
//!
//! # Deadlock
//!
//! A bounded heap can deadlock (see [`pagekeep_slab::async_heap`]): a handler that holds
//! its body's chunks while it waits for more can wait forever. The rules:
//! - A single body may never hold more than the capacity: a read that would take its
//!   live chunks past it fails at once with [`BodyOverBudget`] instead of waiting for
//!   room that can never come (a handler that collects a body whose blocks would take
//!   more than the budget: a little less than the budget in bytes, see
//!   [`BodyOverBudget`]).
//! - Handlers that hold several bodies' chunks at once can still wait on each other
//!   (eight handlers each collecting half the budget). A handler should stream: drop
//!   (or hand to something that drops on its own schedule) each chunk. The handler
//!   timeout bounds the rest: a handler cancelled with 503 drops its body and gives
//!   its bytes back.
//!
//! # Safety
//! A [`SharedBlock`] owns one block of its heap (taken with [`HeapBlock::into_raw`]),
//! frees it once, in its destructor (when the last piece and the body have let go of
//! it), and keeps the heap alive until then (an `Arc`). The block is written in order,
//! only by the body that owns its [`Filling`], and only past `written`: each
//! [`BlockPiece`] reads a range below `written` that was written before the piece was
//! made and is never written again, so pieces on other threads never see a write. A
//! parked block (the body keeps only a [`Weak`] and where it is filled to) is written
//! again only through a strong reference the body got by upgrading it, so only while
//! the block is alive, and still only past `written`; a block that has gone back cannot
//! be upgraded.

use std::alloc::Layout;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pagekeep_slab::async_heap::{AsyncHeap, HeapBlock, MAX_CAPACITY};

/// The largest block a body fills (and so the largest piece, less bookkeeping): hyper's
/// chunks are rarely larger (its read buffer is `max_header_bytes` deep), and a larger
/// frame is copied in several pieces (several frames for the handler).
pub(crate) const BLOCK_BYTES: usize = 16 * 1024;

/// Blocks up to this size take the size class that fits them; larger ones are powers of
/// two (2, 4, 8 and 16 KiB), so that bodies use few size classes: each class keeps its
/// own slabs resident (blocks of many classes were 2.5 MiB above the budget in the
/// eight-upload test).
pub(crate) const CLASS_BLOCK_BYTES: usize = 1024;

/// What each piece counts against its block (so against the budget) beside its bytes:
/// the piece's share of the bookkeeping outside the heap, the owner box `Bytes` keeps
/// for it (bytes' `Owned<BlockPiece>`, 32 bytes) with the global allocator's rounding.
pub(crate) const PIECE_BOOKKEEPING_BYTES: usize = 48;

/// What each block counts against itself for its bookkeeping outside the heap: the
/// `Arc<SharedBlock>` (56 bytes) with the global allocator's rounding.
pub(crate) const BLOCK_BOOKKEEPING_BYTES: usize = 64;

// The figures above cover what they stand for.
const _: () = assert!(
    size_of::<AtomicUsize>() + size_of::<BlockPiece>() <= PIECE_BOOKKEEPING_BYTES
        && 2 * size_of::<usize>() + size_of::<SharedBlock>() <= BLOCK_BOOKKEEPING_BYTES
);

/// The smallest block: one piece of at least one byte with its bookkeeping.
const MIN_BLOCK_BYTES: usize = 128;

/// The smallest [`BodyBudget`]: room for four of the largest blocks, so that one
/// always fits.
pub(crate) const MIN_BODY_BUDGET_BYTES: usize = 4 * BLOCK_BYTES;

/// A bound on the request body bytes handlers hold, shared by every connection of the
/// servers given it ([`ServerBuilder::body_budget`](crate::ServerBuilder::body_budget)).
/// Cheap to clone (clones share the bound). See the crate docs' "Request bodies under one
/// budget" for what it bounds and the rules that keep it from deadlocking.
///
/// # Examples
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use pagekeep_executor::{BodyBudget, RequestBody, Server};
///
/// // At most 8 MiB of request bodies in the process's hands, however many uploads.
/// let budget = BodyBudget::new(8 << 20);
/// let server = Server::builder()
///     .max_body_bytes(1 << 30)
///     .body_budget(budget.clone())
///     .bind("127.0.0.1:8080".parse().unwrap())?;
/// server.serve(|request: http::Request<RequestBody>| async move {
///     let mut body = request.into_body();
///     let mut length = 0;
///     // Streaming: each chunk goes back to the budget as soon as it is dropped.
///     while let Some(Ok(frame)) = body.frame().await {
///         length += frame.data_ref().map_or(0, Bytes::len);
///     }
///     http::Response::new(Full::new(Bytes::from(format!("{length}\n"))))
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct BodyBudget {
    heap: Arc<AsyncHeap>,
}

impl BodyBudget {
    /// A budget of `bytes` (at least 64 KiB, room for four 16 KiB blocks; at most
    /// 2^61 - 1).
    /// Memory is taken from the OS as bodies come, not reserved up front.
    pub fn new(bytes: usize) -> Self {
        let capacity = bytes.clamp(MIN_BODY_BUDGET_BYTES, MAX_CAPACITY);
        Self {
            heap: Arc::new(AsyncHeap::new(capacity)),
        }
    }

    /// The bound, in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.heap.capacity()
    }

    /// The bytes not held by live chunks (nor granted to a read about to copy).
    pub fn available_bytes(&self) -> usize {
        self.heap.available()
    }

    /// How many body reads wait for room.
    pub fn waiters(&self) -> usize {
        self.heap.waiters()
    }
}

impl fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyBudget")
            .field("capacity_bytes", &self.capacity_bytes())
            .field("available_bytes", &self.available_bytes())
            .field("waiters", &self.waiters())
            .finish()
    }
}

/// A body read failed because the body's own live chunks would have taken it past
/// the whole [`BodyBudget`]: the handler holds (collects) a body whose blocks, with
/// their bookkeeping, would take more than the budget, which waiting could never serve.
/// Blocks are rounded up and each piece and block counts its bookkeeping, so the bytes
/// a collected body can reach are below the budget: about 87% of the smallest budget
/// (64 KiB: 56,000 bytes pass in one upload, 57,000 get this error), about 99% of an
/// 8 MiB one. Found by downcasting the body's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyOverBudget {
    /// The budget's capacity.
    pub capacity_bytes: usize,
}

impl fmt::Display for BodyOverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body held by the handler would exceed the server's body budget of \
             {} bytes; stream it instead of collecting it",
            self.capacity_bytes
        )
    }
}

impl Error for BodyOverBudget {}

/// What a body shares with the chunks it made: the heap, and the bytes they hold.
#[derive(Debug)]
struct BodyShare {
    heap: Arc<AsyncHeap>,
    /// Bytes (charges) of this body's live chunks.
    held: AtomicUsize,
}

/// A block of the budget's heap that a body fills in order, piece after piece; each
/// piece is a [`BlockPiece`] sharing it, and the last one dropped frees it.
struct SharedBlock {
    share: Arc<BodyShare>,
    /// The block (module `# Safety`).
    ptr: NonNull<u8>,
    layout: Layout,
    /// What the block counts against the heap (and `share.held`).
    charge: usize,
}

// SAFETY: the block is plain bytes owned by this handle (module `# Safety`): its
// pieces only read their own written, never again written ranges, and only the body
// that fills it writes, past every piece; it is freed through the heap (`Send + Sync`)
// by whichever thread drops the last reference.
unsafe impl Send for SharedBlock {}
// SAFETY: as for `Send`: `&SharedBlock` gives access to nothing but the pointer.
unsafe impl Sync for SharedBlock {}

impl SharedBlock {
    /// Takes over the block at `ptr` and counts it against the body.
    ///
    /// # Safety
    /// - `ptr` is a live block of `share.heap` allocated with `layout`, taken with
    ///   [`HeapBlock::into_raw`]; the caller hands it over and never uses it again.
    unsafe fn new(share: &Arc<BodyShare>, ptr: NonNull<u8>, layout: Layout, charge: usize) -> Self {
        share.held.fetch_add(charge, Ordering::Relaxed);
        Self {
            share: Arc::clone(share),
            ptr,
            layout,
            charge,
        }
    }
}

impl Drop for SharedBlock {
    fn drop(&mut self) {
        self.share.held.fetch_sub(self.charge, Ordering::Relaxed);
        let heap = &self.share.heap;
        // Outside any arena: a free may serve the heap's queue and wake waiters, which
        // must not allocate in the arena of whichever request drops the chunk.
        pagekeep_arena::outside_arena(|| {
            // SAFETY: the block of this heap with this layout, taken with `into_raw`
            // and handed to `new`, freed only here, once (module `# Safety`).
            unsafe { heap.dealloc(self.ptr, self.layout) };
        });
    }
}

/// The block a body is filling, and how far.
///
/// The bytes of the pieces are written one after the other from the block's start;
/// the bookkeeping each piece and the block count for ([`PIECE_BOOKKEEPING_BYTES`],
/// [`BLOCK_BOOKKEEPING_BYTES`]) is taken from the block's room and left unused at its
/// end, so that the block's charge covers its pieces' bookkeeping outside the heap.
struct Filling {
    block: Arc<SharedBlock>,
    /// Bytes written from the block's start, all handed out as pieces.
    written: usize,
    /// The room left for pieces: the block's size less what is written and the
    /// bookkeeping of the block and of its pieces so far.
    room: usize,
}

impl Filling {
    fn new(block: Arc<SharedBlock>) -> Self {
        let room = block.layout.size().saturating_sub(BLOCK_BOOKKEEPING_BYTES);
        Self {
            block,
            written: 0,
            room,
        }
    }

    /// Lets go of the block, keeping where it is filled to.
    fn park(self) -> Parked {
        Parked {
            block: Arc::downgrade(&self.block),
            written: self.written,
            room: self.room,
        }
    }

    /// Whether a piece of at least one byte still fits.
    fn has_room(&self) -> bool {
        self.room > PIECE_BOOKKEEPING_BYTES
    }

    /// Copies as much of `bytes` as fits after what is written and hands it out as a
    /// piece of the block. Call only if [`has_room`](Self::has_room).
    fn piece(&mut self, bytes: &[u8]) -> BlockPiece {
        debug_assert!(self.has_room());
        let len = bytes.len().min(self.room - PIECE_BOOKKEEPING_BYTES);
        let start = self.written;
        debug_assert!(
            start + len <= self.block.layout.size(),
            "a piece past its block {:p}: {start} + {len}",
            self.block.ptr
        );
        // SAFETY: `start + len` is within the block (`room` never exceeds the size less
        // what is written); the range past `written` is written by no one else and read
        // by no piece yet (module `# Safety`), and the heap's block does not overlap
        // `bytes` (hyper's buffer).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.block.ptr.as_ptr().wrapping_add(start),
                len,
            );
        }
        self.written += len;
        self.room -= len + PIECE_BOOKKEEPING_BYTES;
        BlockPiece {
            block: Arc::clone(&self.block),
            start,
            len,
        }
    }
}

/// A [`Filling`] the body does not hold: its block goes back with its last piece.
struct Parked {
    block: Weak<SharedBlock>,
    written: usize,
    room: usize,
}

impl Parked {
    /// The filling again, if a piece still holds the block.
    fn take_back(self) -> Option<Filling> {
        Some(Filling {
            block: self.block.upgrade()?,
            written: self.written,
            room: self.room,
        })
    }
}

/// A written range of a [`SharedBlock`]: the owner of a `Bytes` handed to the handler.
struct BlockPiece {
    block: Arc<SharedBlock>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for BlockPiece {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the block lives as long as this piece's reference to it; the range
        // was written before the piece was made and is never written again (module
        // `# Safety`).
        unsafe {
            std::slice::from_raw_parts(self.block.ptr.as_ptr().wrapping_add(self.start), self.len)
        }
    }
}

/// A read waiting for room: owns the heap's `Arc`, so it is `'static`; yields the
/// granted block's raw parts. Only ever used through `&mut` (polled, dropped).
struct WaitForRoom(Pin<Box<dyn Future<Output = GrantedBlock> + Send>>);

// SAFETY: nothing of the future is reachable through `&WaitForRoom` (the field is
// private and only used through `&mut self`), so sharing references between threads
// shares nothing (as `sync_wrapper::SyncWrapper` argues); this keeps `RequestBody`
// `Sync`, as hyper's `Incoming` is.
unsafe impl Sync for WaitForRoom {}

/// A granted block's raw parts, between the wait and the chunk.
struct GrantedBlock(NonNull<u8>, Layout);

// SAFETY: the block is owned memory (bytes only), moving to the task that made the wait.
unsafe impl Send for GrantedBlock {}

/// The body a handler reads: hyper's incoming body whose data, when the server has a
/// [`BodyBudget`], is copied into the budget piece by piece, each read waiting for
/// room (see [`BodyBudget`]). Without a budget it is hyper's body as is.
///
/// Its errors are hyper's, or [`BodyOverBudget`].
pub struct IncomingBody<B = Incoming> {
    inner: B,
    budget: Option<Budgeted>,
}

/// An [`IncomingBody`]'s state under a budget.
struct Budgeted {
    heap: Arc<AsyncHeap>,
    /// Made at the first data frame (a body-less request costs no allocation).
    share: Option<Arc<BodyShare>>,
    /// The part of hyper's last data frame not copied yet.
    pending: Bytes,
    /// The read waiting for room for the next piece of `pending`.
    waiting: Option<WaitForRoom>,
    /// The block being filled, if it has room left, only while frames keep coming:
    /// parked whenever the body waits for its client or fills it, and let go of at the
    /// end of the body (then its unused room goes back with its last piece).
    filling: Option<Filling>,
    /// The last block filled, without holding it: taken back for the next frame only
    /// if the handler still holds a piece of it (it is charged anyway).
    parked: Option<Parked>,
    /// The size of the last block started: while it lives (frames kept coming, or the
    /// handler holds its pieces), the next block is at least twice as large (up to
    /// [`BLOCK_BYTES`]); 0 once it has gone back.
    last_block_bytes: usize,
}

impl<B> IncomingBody<B> {
    pub(crate) fn new(inner: B, budget: Option<&BodyBudget>) -> Self {
        Self {
            inner,
            budget: budget.map(|budget| Budgeted {
                heap: Arc::clone(&budget.heap),
                share: None,
                pending: Bytes::new(),
                waiting: None,
                filling: None,
                parked: None,
                last_block_bytes: 0,
            }),
        }
    }
}

impl Drop for Budgeted {
    fn drop(&mut self) {
        // Leaving the line (a cancelled handler, a vanished client) may give granted
        // bytes back and wake the next reads: outside any arena, as a free is.
        if let Some(waiting) = self.waiting.take() {
            pagekeep_arena::outside_arena(|| drop(waiting));
        }
    }
}

impl Budgeted {
    /// The next piece of `pending` as a chunk of the budget, once there is room.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, BodyOverBudget>> {
        if self.filling.is_none() {
            self.take_back_parked();
        }
        if self.filling.is_none() {
            let filling = ready!(self.poll_block(cx))?;
            self.filling = Some(filling);
        }
        let filling = self.filling.as_mut().expect("a block to fill");
        let piece = filling.piece(&self.pending);
        self.pending.advance(piece.len);
        if !filling.has_room() {
            self.park();
        }
        if self.pending.is_empty() {
            // An empty slice still shares hyper's read buffer, which hyper could then
            // not reuse for its next read: let go of it before hyper is asked for more.
            self.pending = Bytes::new();
        }
        // The owner's box outside any arena: the chunk may outlive the request.
        Poll::Ready(Ok(pagekeep_arena::outside_arena(|| {
            Bytes::from_owner(piece)
        })))
    }

    /// The body waits for its client, or has filled its block: it keeps only a weak
    /// reference to the block, which goes back with its last piece.
    fn park(&mut self) {
        if let Some(filling) = self.filling.take() {
            self.parked = Some(filling.park());
        }
    }

    /// Takes back the parked block, if the handler still holds a piece of it and it has
    /// room; if it has gone back, the next block is sized afresh.
    fn take_back_parked(&mut self) {
        let Some(parked) = self.parked.take() else {
            return;
        };
        match parked.take_back() {
            Some(filling) if filling.has_room() => self.filling = Some(filling),
            // Full, and alive: the next block grows.
            Some(filling) => self.parked = Some(filling.park()),
            None => self.last_block_bytes = 0,
        }
    }

    /// The body has ended: it lets go of its blocks for good.
    fn let_go(&mut self) {
        self.filling = None;
        self.parked = None;
        self.last_block_bytes = 0;
    }

    /// The size of the next block for `pending`: what the frame needs with its
    /// bookkeeping (its size class up to [`CLASS_BLOCK_BYTES`], a power of two above,
    /// at most [`BLOCK_BYTES`]), and at least twice the block before it if that one is
    /// still alive (full, and frames kept coming or the handler holds its pieces):
    /// blocks grow while a body's pieces accumulate and start small when they have gone
    /// back, so that a block is sized by what arrives.
    fn block_bytes(&self, heap: &AsyncHeap) -> usize {
        let needed = self
            .pending
            .len()
            .saturating_add(BLOCK_BOOKKEEPING_BYTES + PIECE_BOOKKEEPING_BYTES)
            .max(MIN_BLOCK_BYTES);
        let fitting = if needed <= CLASS_BLOCK_BYTES {
            let layout = Layout::array::<u8>(needed).expect("a small block");
            heap.charge(layout)
                .expect("a block fits the smallest budget")
        } else {
            needed.next_power_of_two().min(BLOCK_BYTES)
        };
        fitting.max(self.last_block_bytes.saturating_mul(2).min(BLOCK_BYTES))
    }

    /// A new block for `pending`, of [`block_bytes`](Self::block_bytes), once there is
    /// room.
    fn poll_block(&mut self, cx: &mut Context<'_>) -> Poll<Result<Filling, BodyOverBudget>> {
        // Used only if the body does not wait for room already.
        let block_bytes = self.block_bytes(&self.heap);
        let share = self.share.get_or_insert_with(|| {
            pagekeep_arena::outside_arena(|| {
                Arc::new(BodyShare {
                    heap: Arc::clone(&self.heap),
                    held: AtomicUsize::new(0),
                })
            })
        });
        let (ptr, layout) = match &mut self.waiting {
            Some(waiting) => {
                let GrantedBlock(ptr, layout) = ready!(pagekeep_arena::outside_arena(|| waiting
                    .0
                    .as_mut()
                    .poll(cx)));
                self.waiting = None;
                (ptr, layout)
            }
            None => {
                let heap = &share.heap;
                let layout = Layout::array::<u8>(block_bytes).expect("a block is small");
                let charge = heap
                    .charge(layout)
                    .expect("a block fits the smallest budget");
                // Never more than the budget in one body's hands: such a wait could
                // never end (module docs).
                if share.held.load(Ordering::Relaxed) + charge > heap.capacity() {
                    self.pending = Bytes::new();
                    return Poll::Ready(Err(BodyOverBudget {
                        capacity_bytes: heap.capacity(),
                    }));
                }
                let granted = pagekeep_arena::outside_arena(|| {
                    heap.try_alloc_layout(layout).map(HeapBlock::into_raw)
                });
                match granted {
                    Ok(parts) => parts,
                    Err(_) => {
                        let heap = Arc::clone(heap);
                        let mut waiting = pagekeep_arena::outside_arena(|| {
                            WaitForRoom(Box::pin(async move {
                                let (ptr, layout) = heap.alloc_layout(layout).await.into_raw();
                                GrantedBlock(ptr, layout)
                            }))
                        });
                        // Queued (first come, first served) at this first poll.
                        match pagekeep_arena::outside_arena(|| waiting.0.as_mut().poll(cx)) {
                            Poll::Ready(GrantedBlock(ptr, layout)) => (ptr, layout),
                            Poll::Pending => {
                                self.waiting = Some(waiting);
                                return Poll::Pending;
                            }
                        }
                    }
                }
            }
        };
        let charge = share
            .heap
            .charge(layout)
            .expect("a granted block's charge fits");
        self.last_block_bytes = layout.size();
        // SAFETY: `ptr` and `layout` are a block of `share.heap` just taken with
        // `into_raw` (above, or in the wait), handed over here and not used again.
        let block = unsafe { SharedBlock::new(share, ptr, layout, charge) };
        let block = pagekeep_arena::outside_arena(|| Arc::new(block));
        Poll::Ready(Ok(Filling::new(block)))
    }
}

impl<B> Body for IncomingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(budget) = &mut this.budget else {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        };
        loop {
            if !budget.pending.is_empty() {
                return budget
                    .poll_piece(cx)
                    .map(|piece| Some(piece.map(Frame::data).map_err(Into::into)));
            }
            // Only now, with the last frame copied, is hyper asked for more (and reads
            // the socket).
            let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) else {
                // Waiting for the client, which may take its time: the body keeps
                // nothing of the budget meanwhile (a slow client costs only the chunks
                // its handler holds).
                budget.park();
                return Poll::Pending;
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => budget.pending = data,
                    Err(frame) => {
                        budget.let_go();
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                Some(Err(error)) => {
                    budget.let_go();
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => {
                    budget.let_go();
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.budget
            .as_ref()
            .is_none_or(|budget| budget.pending.is_empty())
            && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let pending = self
            .budget
            .as_ref()
            .map_or(0, |budget| budget.pending.len() as u64);
        if pending > 0 {
            // The upper bound first: a lower one above it would panic.
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + pending);
            }
            hint.set_lower(hint.lower() + pending);
        }
        hint
    }
}

impl<B> fmt::Debug for IncomingBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("IncomingBody");
        if let Some(budget) = &self.budget {
            debug
                .field("pending_bytes", &budget.pending.len())
                .field("waiting", &budget.waiting.is_some())
                .field(
                    "held_bytes",
                    &budget
                        .share
                        .as_ref()
                        .map_or(0, |share| share.held.load(Ordering::Relaxed)),
                );
        }
        debug.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use http_body_util::Full;

    use super::*;

    type TestBody = IncomingBody<Full<Bytes>>;

    /// The largest piece: a largest block less its and the piece's bookkeeping.
    const LARGEST_PIECE_BYTES: usize =
        BLOCK_BYTES - BLOCK_BOOKKEEPING_BYTES - PIECE_BOOKKEEPING_BYTES;

    /// A body of `len` bytes, byte `i` being `i as u8 ^ seed`, under `budget`.
    fn body(budget: &BodyBudget, len: usize, seed: u8) -> TestBody {
        let data: Vec<u8> = (0..len).map(|index| index as u8 ^ seed).collect();
        IncomingBody::new(Full::new(Bytes::from(data)), Some(budget))
    }

    fn poll(body: &mut TestBody) -> Poll<Option<Result<Bytes, Box<dyn Error + Send + Sync>>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body)
            .poll_frame(&mut cx)
            .map(|frame| frame.map(|frame| frame.map(|frame| frame.into_data().unwrap())))
    }

    fn chunk(body: &mut TestBody) -> Bytes {
        match poll(body) {
            Poll::Ready(Some(Ok(data))) => data,
            other => panic!("expected a chunk, got {other:?}"),
        }
    }

    #[test]
    fn room_is_granted_in_the_order_bodies_asked_for_it() {
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        let mut holder = body(&budget, MIN_BODY_BUDGET_BYTES, 0);
        let mut held: Vec<Bytes> = (0..4).map(|_| chunk(&mut holder)).collect();
        assert_eq!(budget.available_bytes(), 0);
        let mut waiting: Vec<TestBody> = (1..=3)
            .map(|seed| body(&budget, BLOCK_BYTES, seed))
            .collect();
        for body in &mut waiting {
            assert!(poll(body).is_pending());
        }
        assert_eq!(budget.waiters(), 3);
        // Kept: dropping one would make room too.
        let mut served_chunks = Vec::new();
        for served in 0..3 {
            // One piece of room: exactly the first waiter in line gets it, whatever
            // order the bodies are polled in.
            drop(held.pop());
            for later in (served + 1..3).rev() {
                assert!(
                    poll(&mut waiting[later]).is_pending(),
                    "body {later} overtook body {served}"
                );
            }
            let data = chunk(&mut waiting[served]);
            let seed = served as u8 + 1;
            assert!(
                data.iter()
                    .enumerate()
                    .all(|(index, &byte)| byte == index as u8 ^ seed)
            );
            served_chunks.push(data);
        }
        assert_eq!(budget.waiters(), 0);
    }

    #[test]
    fn one_body_holding_more_than_the_budget_fails_instead_of_waiting() {
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        let mut collecting = body(&budget, MIN_BODY_BUDGET_BYTES + 1, 7);
        let held: Vec<Bytes> = (0..4).map(|_| chunk(&mut collecting)).collect();
        let error = match poll(&mut collecting) {
            Poll::Ready(Some(Err(error))) => error,
            other => panic!("expected the over-budget error, got {other:?}"),
        };
        let over = error
            .downcast_ref::<BodyOverBudget>()
            .expect("a BodyOverBudget");
        assert_eq!(over.capacity_bytes, MIN_BODY_BUDGET_BYTES);
        assert_eq!(budget.waiters(), 0, "it never queued");
        drop(held);
        assert_eq!(budget.available_bytes(), MIN_BODY_BUDGET_BYTES);
    }

    #[test]
    fn a_streamed_body_larger_than_the_budget_passes_whole() {
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        // Past the budget several times over (less under miri, for time).
        let len = if cfg!(miri) {
            3 * MIN_BODY_BUDGET_BYTES
        } else {
            1 << 20
        };
        let mut streamed = body(&budget, len, 3);
        let mut seen = 0;
        loop {
            match poll(&mut streamed) {
                Poll::Ready(Some(Ok(data))) => {
                    assert!(data.len() <= BLOCK_BYTES);
                    assert!(
                        data.iter()
                            .enumerate()
                            .all(|(index, &byte)| byte == (seen + index) as u8 ^ 3)
                    );
                    seen += data.len();
                    assert!(budget.available_bytes() < MIN_BODY_BUDGET_BYTES);
                }
                Poll::Ready(None) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, len);
        assert!(streamed.is_end_stream());
        assert_eq!(budget.available_bytes(), MIN_BODY_BUDGET_BYTES);
    }

    #[test]
    fn a_dropped_body_leaves_the_line_and_its_chunks_come_back_from_any_thread() {
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        let mut holder = body(&budget, MIN_BODY_BUDGET_BYTES, 0);
        let held: Vec<Bytes> = (0..4).map(|_| chunk(&mut holder)).collect();
        let mut first = body(&budget, BLOCK_BYTES, 1);
        let mut second = body(&budget, BLOCK_BYTES, 2);
        assert!(poll(&mut first).is_pending());
        assert!(poll(&mut second).is_pending());
        // The first in line goes away (its client vanished, its handler was
        // cancelled): the second is served by the next free.
        drop(first);
        assert_eq!(budget.waiters(), 1);
        std::thread::spawn(move || drop(held)).join().unwrap();
        let data = chunk(&mut second);
        assert_eq!(data.len(), LARGEST_PIECE_BYTES);
        drop((data, second, holder));
        assert_eq!(budget.available_bytes(), MIN_BODY_BUDGET_BYTES);
    }

    #[test]
    fn pieces_of_several_frames_fill_blocks_in_order() {
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..4u8)
            .map(|seed| Ok(Frame::data(Bytes::from(vec![seed; 5000]))))
            .collect();
        let inner = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let mut body = IncomingBody::new(inner, Some(&budget));
        let mut cx = Context::from_waker(Waker::noop());
        let mut pieces = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            pieces.push(frame.unwrap().into_data().unwrap());
        }
        // The first frame gets an 8 KiB block (5000 bytes and bookkeeping, rounded to a
        // power of two); the second fills it, and its rest starts a block twice as
        // large (the first is alive), which the next frames share.
        let second = 8192 - BLOCK_BOOKKEEPING_BYTES - 2 * PIECE_BOOKKEEPING_BYTES - 5000;
        let lengths: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(lengths, [5000, second, 5000 - second, 5000, 5000]);
        assert_eq!(
            budget.available_bytes(),
            MIN_BODY_BUDGET_BYTES - 8192 - BLOCK_BYTES
        );
        let whole: Vec<u8> = pieces
            .iter()
            .flat_map(|piece| piece.iter().copied())
            .collect();
        let expected: Vec<u8> = (0..4u8).flat_map(|seed| [seed; 5000]).collect();
        assert_eq!(whole, expected);
        // A block goes back with its last piece; the ended body holds none.
        let later = pieces.split_off(2);
        drop(pieces);
        assert_eq!(
            budget.available_bytes(),
            MIN_BODY_BUDGET_BYTES - BLOCK_BYTES
        );
        drop(later);
        assert_eq!(budget.available_bytes(), MIN_BODY_BUDGET_BYTES);
        drop(body);
    }

    /// A client's frames one at a time, each after a `Pending` (a slow client: the
    /// body waits for it before every frame); then the end, or `Pending` for good.
    struct Trickle {
        frames: std::collections::VecDeque<Bytes>,
        ready: bool,
        ends: bool,
    }

    impl Trickle {
        fn new(frames: impl IntoIterator<Item = Bytes>, ends: bool) -> Self {
            Self {
                frames: frames.into_iter().collect(),
                ready: false,
                ends,
            }
        }
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if !std::mem::replace(&mut self.ready, false) {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.frames.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None if self.ends => Poll::Ready(None),
                None => {
                    self.ready = true;
                    Poll::Pending
                }
            }
        }
    }

    /// Polls `body` until it gives a frame (the trickle's `Pending`s are not waits for
    /// room: nothing else holds the budget in these tests).
    fn next_frame<B>(body: &mut IncomingBody<B>) -> Option<Result<Bytes, BodyOverBudget>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn Error + Send + Sync>>,
    {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..4 {
            if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(&mut cx) {
                return frame.map(|frame| match frame {
                    Ok(frame) => Ok(frame.into_data().unwrap()),
                    Err(error) => Err(*error.downcast::<BodyOverBudget>().unwrap()),
                });
            }
        }
        panic!("the body gave nothing in four polls")
    }

    /// Found by a review: a body waiting for its client's next bytes (and a finished
    /// one) kept the partly filled 16 KiB block it was filling, so a slow client that
    /// had sent a kilobyte and a half took 16 KiB of the budget for as long as it liked.
    #[test]
    fn a_body_waiting_for_its_client_or_ended_holds_nothing_of_the_budget() {
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        for ends in [false, true] {
            let mut slow = IncomingBody::new(
                Trickle::new([Bytes::from(vec![7u8; 1500])], ends),
                Some(&budget),
            );
            let data = next_frame(&mut slow).unwrap().unwrap();
            assert_eq!(data, vec![7u8; 1500]);
            // The chunk's block: its bytes and bookkeeping, rounded up to a power of
            // two (at most twice that).
            let charged = budget.capacity_bytes() - budget.available_bytes();
            assert_eq!(charged, 2048);
            assert!(charged <= 2 * (1500 + BLOCK_BOOKKEEPING_BYTES + PIECE_BOOKKEEPING_BYTES));
            // The handler drops the chunk and asks for more: the body waits for its
            // client, or has ended, and holds nothing.
            drop(data);
            if ends {
                assert!(next_frame(&mut slow).is_none());
            } else {
                let mut cx = Context::from_waker(Waker::noop());
                for _ in 0..2 {
                    assert!(Pin::new(&mut slow).poll_frame(&mut cx).is_pending());
                }
            }
            assert_eq!(
                budget.available_bytes(),
                budget.capacity_bytes(),
                "ends: {ends}"
            );
            drop(slow);
        }
    }

    /// A waiting body keeps no hold on its block: the next frame fills the same block
    /// only if the handler still holds a piece of it, and a block that has gone back
    /// is never written again (a fresh one is taken).
    #[test]
    fn a_parked_block_is_filled_again_only_while_a_piece_holds_it() {
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        let charged = || budget.capacity_bytes() - budget.available_bytes();
        let frames = (1..=4u8).map(|seed| Bytes::from(vec![seed; 100]));
        let mut body = IncomingBody::new(Trickle::new(frames, false), Some(&budget));
        // 100 bytes and 112 of bookkeeping: the 224-byte class, full after it.
        let first = next_frame(&mut body).unwrap().unwrap();
        assert_eq!(charged(), 224);
        // The first block is alive (held): the next is twice as large.
        let second = next_frame(&mut body).unwrap().unwrap();
        assert_eq!(charged(), 224 + 448);
        // Held by the handler across the wait: the third frame packs after the second.
        let third = next_frame(&mut body).unwrap().unwrap();
        assert_eq!(third.as_ptr(), second.as_ptr().wrapping_add(100));
        assert_eq!(charged(), 224 + 448, "no new block");
        // Dropped: the waiting body holds nothing, and the blocks go back.
        drop((first, second, third));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert_eq!(charged(), 0);
        // A fresh block, sized for the frame alone.
        let fourth = next_frame(&mut body).unwrap().unwrap();
        assert_eq!(fourth, vec![4u8; 100]);
        assert_eq!(charged(), 224);
        drop((fourth, body));
        assert_eq!(charged(), 0);
    }

    /// Slow clients (each has sent 1,500 bytes and waits) cost the budget only the
    /// chunks their handlers hold: a handful of them no longer take a small budget
    /// from a normal upload.
    #[test]
    fn slow_clients_leave_the_budget_to_a_normal_upload() {
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        let mut slow_bodies = Vec::new();
        let mut held = Vec::new();
        for index in 0..16u8 {
            let mut slow = IncomingBody::new(
                Trickle::new([Bytes::from(vec![index; 1500])], false),
                Some(&budget),
            );
            let data = next_frame(&mut slow).unwrap().unwrap();
            // Half the handlers hold what they read (2 KiB each), half stream it.
            if index % 2 == 0 {
                held.push(data);
            }
            let mut cx = Context::from_waker(Waker::noop());
            assert!(Pin::new(&mut slow).poll_frame(&mut cx).is_pending());
            assert!(Pin::new(&mut slow).poll_frame(&mut cx).is_pending());
            slow_bodies.push(slow);
        }
        assert_eq!(
            budget.capacity_bytes() - budget.available_bytes(),
            8 * 2048,
            "2 KiB for each slow client whose handler holds its 1,500 bytes, none for the others"
        );
        // A normal upload gets three largest blocks at once, with no wait.
        let mut normal = body(&budget, 3 * LARGEST_PIECE_BYTES, 9);
        let chunks: Vec<Bytes> = (0..3).map(|_| chunk(&mut normal)).collect();
        assert!(
            chunks
                .iter()
                .all(|chunk| chunk.len() == LARGEST_PIECE_BYTES)
        );
        assert_eq!(budget.waiters(), 0);
        drop((chunks, normal, held, slow_bodies));
        assert_eq!(budget.available_bytes(), budget.capacity_bytes());
    }

    /// Found by a review: one-byte frames were charged 8 bytes each while about 80
    /// bytes of bookkeeping each (the block's `Arc`, the chunk's owner box) sat outside
    /// the budget, so a body of one-byte frames held ten times the budget in memory. Now
    /// each piece and block counts its bookkeeping: what a collecting handler holds,
    /// bytes and bookkeeping, stays within what the budget charges, whether the frames
    /// come one at a time (a block each) or back to back (sharing growing blocks).
    #[test]
    fn one_byte_frames_keep_their_bookkeeping_within_the_budget() {
        let frames = || (0..MIN_BODY_BUDGET_BYTES).map(|index| Bytes::from(vec![index as u8]));
        let budget = BodyBudget::new(MIN_BODY_BUDGET_BYTES);
        let streamed = futures::stream::iter(
            frames().map(|data| Ok::<_, std::convert::Infallible>(Frame::data(data))),
        );
        let mut bodies: [Box<
            dyn Body<Data = Bytes, Error = std::convert::Infallible> + Unpin + Send,
        >; 2] = [
            Box::new(Trickle::new(frames(), true)),
            Box::new(http_body_util::StreamBody::new(streamed)),
        ];
        for (mode, inner) in ["one at a time", "back to back"]
            .into_iter()
            .zip(&mut bodies)
        {
            let mut collecting = IncomingBody::new(inner, Some(&budget));
            let mut held: Vec<Bytes> = Vec::new();
            let over = loop {
                match next_frame(&mut collecting) {
                    Some(Ok(data)) => held.push(data),
                    Some(Err(over)) => break over,
                    None => panic!("{mode}: the body ended within the budget"),
                }
            };
            assert_eq!(over.capacity_bytes, MIN_BODY_BUDGET_BYTES);
            let data: usize = held.iter().map(Bytes::len).sum();
            for (index, piece) in held.iter().enumerate() {
                assert_eq!(piece[..], [index as u8]);
            }
            // A piece that does not start where the one before it ended starts a block.
            let blocks = 1 + held
                .windows(2)
                .filter(|pair| pair[0].as_ptr().wrapping_add(pair[0].len()) != pair[1].as_ptr())
                .count();
            // Beside the heap: an owner box per piece (bytes' `Owned`: a count and the
            // piece), an `Arc<SharedBlock>` per block (two counts and the block).
            let bookkeeping = held.len() * (size_of::<AtomicUsize>() + size_of::<BlockPiece>())
                + blocks * (2 * size_of::<usize>() + size_of::<SharedBlock>());
            let charged = budget.capacity_bytes() - budget.available_bytes();
            eprintln!(
                "{mode}: {} pieces of {data} bytes in {blocks} blocks: {charged} bytes charged, \
                 {bookkeeping} bytes of bookkeeping outside the heap",
                held.len()
            );
            assert!(
                data + bookkeeping <= charged,
                "{mode}: {data} bytes and {bookkeeping} of bookkeeping past the {charged} charged"
            );
            drop((held, collecting));
            assert_eq!(budget.available_bytes(), budget.capacity_bytes());
        }
    }

    #[test]
    fn a_budget_of_zero_or_usize_max_is_clamped_to_one_that_works() {
        let tiny = BodyBudget::new(0);
        assert_eq!(tiny.capacity_bytes(), MIN_BODY_BUDGET_BYTES);
        let mut streamed = body(&tiny, 2 * MIN_BODY_BUDGET_BYTES, 5);
        let mut seen = 0;
        while let Poll::Ready(Some(Ok(data))) = poll(&mut streamed) {
            seen += data.len();
        }
        assert_eq!(seen, 2 * MIN_BODY_BUDGET_BYTES);
        let huge = BodyBudget::new(usize::MAX);
        assert_eq!(huge.capacity_bytes(), MAX_CAPACITY);
        let mut held = body(&huge, 3 * BLOCK_BYTES, 6);
        let chunks: Vec<Bytes> = (0..3).map(|_| chunk(&mut held)).collect();
        assert_eq!(huge.available_bytes(), MAX_CAPACITY - 3 * BLOCK_BYTES);
        drop(chunks);
        assert_eq!(huge.available_bytes(), MAX_CAPACITY);
    }

    #[test]
    fn the_body_is_send_and_sync_as_hyper_s_is() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<hyper::body::Incoming>();
        send_sync::<IncomingBody>();
        send_sync::<crate::RequestBody>();
        send_sync::<BodyBudget>();
    }

    #[test]
    fn without_a_budget_the_body_is_passed_through() {
        let mut plain: IncomingBody<Full<Bytes>> =
            IncomingBody::new(Full::new(Bytes::from_static(b"as is")), None);
        let mut cx = Context::from_waker(Waker::noop());
        let frame = Pin::new(&mut plain).poll_frame(&mut cx);
        let Poll::Ready(Some(Ok(frame))) = frame else {
            panic!("a frame")
        };
        assert_eq!(frame.into_data().unwrap(), "as is");
    }
}
