//! [`BodyBudget`]: one bound on the request body bytes a server (or several) holds, and
//! [`IncomingBody`], the request body that takes its data from it.
//!
//! hyper reads a body from the socket only as fast as the handler asks for it: it
//! reads a chunk into the connection's read buffer (at most
//! [`max_header_bytes`](crate::ServerBuilder::max_header_bytes) deep, about 16 KiB)
//! and hands it over when the body is polled. With a budget, [`IncomingBody`] copies
//! every data frame, in pieces of at most 16 KiB, into blocks of the budget's
//! [`AsyncHeap`] (16 KiB blocks filled in order, a piece per frame for the handler;
//! a piece of at most 1 KiB that starts a block gets its own size class) before the
//! handler sees it, and drops hyper's chunk, so hyper's buffer is reused at once. When the heap is full the copy waits for room, first come, first
//! served, and while it waits nothing polls hyper's body, so hyper stops reading that
//! connection's socket: the kernel's receive buffer fills and TCP's window pushes the
//! client back. A block goes back to the heap when the handler has dropped every chunk
//! (`Bytes`) of it and the body no longer fills it, on whatever thread.
//!
//! # What the budget bounds
//!
//! The body bytes handed to handlers and still alive: at most the capacity, whatever
//! the number of connections. Beside it each connection with a body in progress holds
//! hyper's read buffer and at most two of its chunks (one waiting in the body, one in
//! hyper's channel), so about 3 x `max_header_bytes` per uploading connection, outside
//! the budget; and the heap's slab pages keep some fragmentation (the measured figures
//! are in the README).
//!
//! # Deadlock
//!
//! A bounded heap can deadlock (see [`pagekeep_slab::async_heap`]): a handler that holds
//! its body's chunks while it waits for more can wait forever. The rules:
//! - A single body may never hold more than the capacity: a read that would take its
//!   live chunks past it fails at once with [`BodyOverBudget`] instead of waiting for
//!   room that can never come (a handler that collects a body larger than the budget).
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
//! only by the body that owns its [`Filling`], and only past `filled`: each
//! [`BlockPiece`] reads a range below `filled` that was written before the piece was
//! made and is never written again, so pieces on other threads never see a write.

use std::alloc::Layout;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pagekeep_slab::async_heap::{AsyncHeap, HeapBlock, MAX_CAPACITY};

/// The size of the blocks bodies fill (the largest piece): hyper's chunks are rarely
/// larger (its read buffer is `max_header_bytes` deep), and a larger frame is copied
/// in several pieces (several frames for the handler).
pub(crate) const PIECE_BYTES: usize = 16 * 1024;

/// A piece up to this size that starts a block gets a block of its own size class;
/// larger ones start a block of [`PIECE_BYTES`] that the next pieces fill.
pub(crate) const SMALL_PIECE_BYTES: usize = 1024;

/// The smallest [`BodyBudget`]: room for four pieces, so that one piece always fits.
pub(crate) const MIN_BODY_BUDGET_BYTES: usize = 4 * PIECE_BYTES;

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
    /// A budget of `bytes` (at least 64 KiB, room for four 16 KiB pieces; at most
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
/// the whole [`BodyBudget`]: the handler holds (collects) a body larger than the
/// budget, which waiting could never serve. Found by downcasting the body's error.
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
struct Filling {
    block: Arc<SharedBlock>,
    /// Bytes written from the block's start, all handed out as pieces.
    filled: usize,
}

impl Filling {
    /// Copies as much of `bytes` as fits after what is filled and hands it out as a
    /// piece of the block.
    fn piece(&mut self, bytes: &[u8]) -> BlockPiece {
        let len = bytes.len().min(self.layout_size() - self.filled);
        let start = self.filled;
        // SAFETY: `start + len` is within the block (`len` is at most the room left);
        // the range past `filled` is written by no one else and read by no piece yet
        // (module `# Safety`), and the fresh block does not overlap `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.block.ptr.as_ptr().wrapping_add(start),
                len,
            );
        }
        self.filled += len;
        BlockPiece {
            block: Arc::clone(&self.block),
            start,
            len,
        }
    }

    fn layout_size(&self) -> usize {
        self.block.layout.size()
    }

    fn is_full(&self) -> bool {
        self.filled == self.layout_size()
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
    /// The block being filled, if it has room left.
    filling: Option<Filling>,
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
            let filling = ready!(self.poll_block(cx))?;
            self.filling = Some(filling);
        }
        let filling = self.filling.as_mut().expect("a block to fill");
        let piece = filling.piece(&self.pending);
        self.pending.advance(piece.len);
        if filling.is_full() {
            self.filling = None;
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

    /// A new block for `pending`, once there is room: a 16 KiB one, filled by this and
    /// the next pieces, or, for a piece of at most 1 KiB, one of its own size.
    ///
    /// One block size for all but the smallest pieces: hyper's chunks come in every
    /// size, and blocks of many size classes each kept their own class's slabs resident
    /// (2.5 MiB more than the budget in the eight-upload test). Filling blocks in order
    /// charges a body about what it holds, not a block per chunk.
    fn poll_block(&mut self, cx: &mut Context<'_>) -> Poll<Result<Filling, BodyOverBudget>> {
        let block_bytes = if self.pending.len() <= SMALL_PIECE_BYTES {
            self.pending.len()
        } else {
            PIECE_BYTES
        };
        let layout = Layout::array::<u8>(block_bytes).expect("a piece is small");
        let share = self.share.get_or_insert_with(|| {
            pagekeep_arena::outside_arena(|| {
                Arc::new(BodyShare {
                    heap: Arc::clone(&self.heap),
                    held: AtomicUsize::new(0),
                })
            })
        });
        let heap = &share.heap;
        let charge = heap
            .charge(layout)
            .expect("a piece fits the smallest budget");
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
        // SAFETY: `ptr` and `layout` are a block of `share.heap` just taken with
        // `into_raw` (above, or in the wait), handed over here and not used again.
        let block = unsafe { SharedBlock::new(share, ptr, layout, charge) };
        let block = pagekeep_arena::outside_arena(|| Arc::new(block));
        Poll::Ready(Ok(Filling { block, filled: 0 }))
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
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => budget.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                None => return Poll::Ready(None),
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
            .map(|seed| body(&budget, PIECE_BYTES, seed))
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
                    assert!(data.len() <= PIECE_BYTES);
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
        let mut first = body(&budget, PIECE_BYTES, 1);
        let mut second = body(&budget, PIECE_BYTES, 2);
        assert!(poll(&mut first).is_pending());
        assert!(poll(&mut second).is_pending());
        // The first in line goes away (its client vanished, its handler was
        // cancelled): the second is served by the next free.
        drop(first);
        assert_eq!(budget.waiters(), 1);
        std::thread::spawn(move || drop(held)).join().unwrap();
        let data = chunk(&mut second);
        assert_eq!(data.len(), PIECE_BYTES);
        drop((data, second, holder));
        assert_eq!(budget.available_bytes(), MIN_BODY_BUDGET_BYTES);
    }

    #[test]
    fn pieces_of_several_frames_fill_one_block_in_order() {
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
        // Three frames fit the first block; the fourth ends it and starts another.
        let lengths: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(
            lengths,
            [5000, 5000, 5000, PIECE_BYTES - 15000, 20000 - PIECE_BYTES]
        );
        assert_eq!(
            budget.available_bytes(),
            MIN_BODY_BUDGET_BYTES - 2 * PIECE_BYTES
        );
        let whole: Vec<u8> = pieces
            .iter()
            .flat_map(|piece| piece.iter().copied())
            .collect();
        let expected: Vec<u8> = (0..4u8).flat_map(|seed| [seed; 5000]).collect();
        assert_eq!(whole, expected);
        // The first block goes back only with its last piece.
        let last = pieces.split_off(3);
        drop(body);
        drop(pieces);
        assert_eq!(
            budget.available_bytes(),
            MIN_BODY_BUDGET_BYTES - 2 * PIECE_BYTES
        );
        drop(last);
        assert_eq!(budget.available_bytes(), MIN_BODY_BUDGET_BYTES);
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
        let mut held = body(&huge, 3 * PIECE_BYTES, 6);
        let chunks: Vec<Bytes> = (0..3).map(|_| chunk(&mut held)).collect();
        assert_eq!(huge.available_bytes(), MAX_CAPACITY - 3 * PIECE_BYTES);
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
