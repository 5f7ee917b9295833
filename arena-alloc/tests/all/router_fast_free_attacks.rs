//! Attacks on the router's free of a block of the entered arena (one range compare, a
//! bump back if it is the latest block, a plain count) and on the release that resets
//! the arena in place when nothing is outstanding: frees from nested `run`s and from
//! other arenas, from other threads racing the release, after a panic, at thread exit;
//! `realloc` of the latest block; over-aligned blocks; blocks of the lease's own API
//! between routed ones. Every block carries a fill pattern that is checked before it is
//! freed, so memory reused while a block is alive shows up as a wrong byte.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::thread;

use pagekeep_arena::{ArenaGuard, ArenaPool, ArenaRouter, PoolConfig, PooledArena};

static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

/// The pools of this module's tests: one of one arena, one of two. The router's
/// registry holds 32 pools for the whole test binary, so the tests share these.
fn pools() -> [&'static ArenaPool; 2] {
    static POOLS: OnceLock<[&'static ArenaPool; 2]> = OnceLock::new();
    *POOLS.get_or_init(|| {
        [1, 2].map(|arenas| {
            ArenaPool::new(PoolConfig::new(arenas, 64 << 10).warm_bytes(16 << 10))
                .unwrap()
                .into_static()
                .unwrap()
        })
    })
}

/// The pool of `arenas` arenas (1 or 2), and a lock that runs the tests one at a time:
/// they count the pools' free arenas.
fn static_pool(arenas: usize) -> (&'static ArenaPool, MutexGuard<'static, ()>) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    for pool in pools() {
        assert_eq!(
            pool.stats().free,
            pool.stats().arenas,
            "an earlier test left an arena behind"
        );
    }
    (pools()[arenas - 1], serial)
}

/// A block allocated through the router and filled with `byte`.
#[derive(Debug)]
struct Block {
    ptr: *mut u8,
    layout: Layout,
    byte: u8,
}

// SAFETY: the block is plain bytes, owned by whoever holds the `Block`.
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size` bytes aligned to `align` through the router and fills them.
    fn new(size: usize, align: usize, byte: u8) -> Block {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero layout; the block is freed once, by `free`.
        let ptr = unsafe { ROUTER.alloc(layout) };
        assert!(!ptr.is_null(), "allocation of {layout:?} failed");
        assert_eq!(ptr.addr() % align, 0, "{ptr:p} is not aligned to {align}");
        // SAFETY: a fresh block of `size` bytes.
        unsafe { ptr.write_bytes(byte, size) };
        Block { ptr, layout, byte }
    }

    /// Panics unless every byte of the block still holds its pattern.
    fn check(&self) {
        // SAFETY: the block is live and `layout.size()` bytes long.
        let bytes = unsafe { core::slice::from_raw_parts(self.ptr, self.layout.size()) };
        if let Some(offset) = bytes.iter().position(|&byte| byte != self.byte) {
            panic!(
                "block {:p} ({:?}) holds {:#x} at offset {offset}, not its pattern {:#x}",
                self.ptr, self.layout, bytes[offset], self.byte
            );
        }
    }

    fn range(&self) -> core::ops::Range<usize> {
        self.ptr.addr()..self.ptr.addr() + self.layout.size()
    }

    /// Checks the pattern, then frees the block through the router.
    fn free(self) {
        self.check();
        // SAFETY: allocated by the router with this layout, freed once.
        unsafe { ROUTER.dealloc(self.ptr, self.layout) };
    }

    /// Reallocates the block through the router to `new_size` bytes, checks that the
    /// kept prefix survived, and fills the whole new block with `byte`.
    fn realloc(self, new_size: usize, byte: u8) -> Block {
        // SAFETY: allocated by the router with this layout; `new_size` is non-zero and
        // small. The old block is not used again if this succeeds.
        let ptr = unsafe { ROUTER.realloc(self.ptr, self.layout, new_size) };
        assert!(!ptr.is_null());
        let kept = Block {
            ptr,
            layout: Layout::from_size_align(self.layout.size().min(new_size), self.layout.align())
                .unwrap(),
            byte: self.byte,
        };
        kept.check();
        // SAFETY: the new block is `new_size` bytes long.
        unsafe { ptr.write_bytes(byte, new_size) };
        Block {
            ptr,
            layout: Layout::from_size_align(new_size, self.layout.align()).unwrap(),
            byte,
        }
    }
}

fn assert_disjoint(a: &Block, b: &Block) {
    let (a, b) = (a.range(), b.range());
    assert!(
        a.end <= b.start || b.end <= a.start,
        "blocks {a:#x?} and {b:#x?} overlap"
    );
}

#[test]
fn nested_runs_free_each_others_blocks() {
    let (pool, _serial) = static_pool(2);
    let outer = pool.try_acquire().unwrap();
    let inner = pool.try_acquire().unwrap();
    outer.run(|| {
        let kept = Block::new(40, 8, 0xa1);
        let latest = Block::new(24, 8, 0xa2);
        let outer_bytes = outer.stats().allocated_bytes;
        let escaped = inner.run(|| {
            let first = Block::new(32, 16, 0xb1);
            let inner_bytes = inner.stats().allocated_bytes;
            // The outer arena's latest block, freed while the inner one is entered: a
            // free from outside the routed arena is one atomic count (no bump back), and
            // the inner arena must not take it for its own latest block.
            latest.free();
            assert_eq!(inner.stats().allocated_bytes, inner_bytes);
            assert_eq!(outer.stats().allocated_bytes, outer_bytes);
            let second = Block::new(32, 16, 0xb2);
            assert_disjoint(&first, &second);
            second.free();
            assert_eq!(inner.stats().allocated_bytes, inner_bytes);
            first
        });
        // Back in the outer arena: the inner one's block is freed from outside it.
        let inner_bytes = inner.stats().allocated_bytes;
        escaped.free();
        assert_eq!(inner.stats().allocated_bytes, inner_bytes);
        assert_eq!(inner.live_routed_allocations(), 0);
        let next = Block::new(64, 8, 0xa3);
        assert_disjoint(&kept, &next);
        kept.check();
        next.free();
        kept.free();
    });
    assert_eq!(outer.live_routed_allocations(), 0);
    drop((outer, inner));
    assert_eq!(pool.stats().free, 2);
}

#[test]
fn a_block_of_the_lease_reentered_after_another_arena_frees_on_the_fast_path() {
    let (pool, _serial) = static_pool(2);
    let first = pool.try_acquire().unwrap();
    let second = pool.try_acquire().unwrap();
    let carried = first.run(|| Block::new(100, 8, 0x11));
    let from_second = second.run(|| Block::new(100, 8, 0x22));
    // Entering the first again: its block is its latest, and freeing it bumps back.
    first.run(|| {
        let before = first.stats().allocated_bytes;
        carried.free();
        assert_eq!(first.stats().allocated_bytes, before - 100);
        // The second arena's block, freed here: counted against the second arena.
        from_second.free();
    });
    assert_eq!(first.live_routed_allocations(), 0);
    assert_eq!(second.live_routed_allocations(), 0);
    drop((first, second));
    assert_eq!(pool.stats().free, 2);
}

#[test]
fn a_quarantined_slot_keeps_its_blocks_while_another_is_entered_and_recycles_on_the_last_free() {
    let (pool, _serial) = static_pool(2);
    let quarantined = pool.try_acquire().unwrap();
    let slot = quarantined.index();
    let (escaped, other_thread) = quarantined.run(|| {
        // The first block of the lease: the next lease of the slot starts here again.
        let escaped = Block::new(200, 8, 0x33);
        let other_thread = Block::new(300, 64, 0x44);
        Block::new(50, 8, 0x55).free();
        (escaped, other_thread)
    });
    drop(quarantined);
    assert_eq!(pool.stats().quarantined, 1);
    let guard = pool.try_acquire().unwrap().enter();
    assert_ne!(guard.index(), slot);
    assert!(
        pool.try_acquire().is_none(),
        "the quarantined slot is not leased again"
    );
    // Fill the entered arena: nothing may land on the quarantined blocks.
    let filler: Vec<Block> = (0..16).map(|i| Block::new(512, 8, i)).collect();
    for block in &filler {
        assert_disjoint(block, &escaped);
        assert_disjoint(block, &other_thread);
    }
    thread::scope(|scope| {
        scope.spawn(|| other_thread.free());
    });
    assert_eq!(pool.stats().quarantined, 1);
    escaped.check();
    let first_address = escaped.ptr;
    // The last block, freed while another arena is entered, settles the debt.
    escaped.free();
    assert_eq!(pool.stats().quarantined, 0);
    // Leased again and entered inside the outer route: fresh, from the start.
    let again = pool.try_acquire().unwrap();
    assert_eq!(again.index(), slot);
    let reused = again.run(|| {
        let block = Block::new(200, 8, 0x66);
        assert_eq!(block.ptr, first_address, "the arena was reset to its start");
        assert_eq!(again.stats().allocated_bytes, 200);
        assert_eq!(again.live_routed_allocations(), 1);
        block
    });
    for block in filler {
        block.free();
    }
    assert_eq!(guard.live_routed_allocations(), 0);
    reused.free();
    assert_eq!(again.live_routed_allocations(), 0);
    drop((guard, again));
    assert_eq!(pool.stats().free, 2);
}

#[test]
fn frees_racing_the_release_never_let_the_slot_be_reused_under_a_live_block() {
    // One arena: each round's lease must wait until every block of the previous one is
    // freed. A worker frees half of each round's blocks while the round goes on and
    // releases (the fast path's plain count against the atomic one), checking their
    // pattern first, and keeps one for a while: if the slot were reused early, the next
    // round's pattern would overwrite it.
    let (pool, _serial) = static_pool(1);
    let rounds: u8 = if cfg!(miri) { 4 } else { 200 };
    let (send, receive) = mpsc::channel::<Vec<Block>>();
    // The worker frees them while entered in an arena of its own, whose latest block
    // must stay where it is.
    let worker_pool = pools()[1];
    let worker = thread::spawn(move || {
        let guard = worker_pool.try_acquire().unwrap().enter();
        for blocks in receive {
            let own = Block::new(16, 8, 0xee);
            let bytes = guard.stats().allocated_bytes;
            let mut blocks = blocks.into_iter();
            let last = blocks.next_back().unwrap();
            for block in blocks {
                block.free();
            }
            thread::yield_now();
            last.free();
            assert_eq!(guard.stats().allocated_bytes, bytes);
            own.free();
            assert_eq!(guard.live_routed_allocations(), 0);
        }
        drop(guard);
        assert_eq!(worker_pool.stats().free, 2);
    });
    for round in 0..rounds {
        let lease = pool.acquire();
        let tag = round.wrapping_mul(16);
        lease.run(|| {
            let mut mine = Vec::new();
            let mut theirs = Vec::new();
            for i in 0..8u8 {
                let block = Block::new(24 + 8 * usize::from(i), 8, tag | i);
                if i % 2 == 1 {
                    mine.push(block)
                } else {
                    theirs.push(block)
                }
            }
            // Sent first, so the worker's frees race this thread's and the release.
            send.send(theirs).unwrap();
            // The latest block (bumped back over), then older ones (not the latest).
            while let Some(block) = mine.pop() {
                block.free();
            }
        });
        // The fast-path frees were counted: whatever is left is the worker's, at most
        // the four blocks sent.
        assert!(lease.live_routed_allocations() <= 4);
        drop(lease);
    }
    drop(send);
    worker.join().unwrap();
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn realloc_of_the_latest_block_then_free_gives_back_exactly_its_bytes() {
    let (pool, _serial) = static_pool(1);
    let lease = pool.try_acquire().unwrap();
    lease.run(|| {
        let older = Block::new(40, 8, 0x01);
        let start = lease.stats().allocated_bytes;
        let latest = Block::new(64, 8, 0x02);
        let at = latest.ptr;
        // Grown and shrunk in place: it stays the latest block, at the same address.
        let latest = latest.realloc(1000, 0x03);
        assert_eq!(latest.ptr, at);
        assert_eq!(lease.stats().allocated_bytes, start + 1000);
        let latest = latest.realloc(16, 0x04);
        assert_eq!(latest.ptr, at);
        assert_eq!(lease.stats().allocated_bytes, start + 16);
        latest.free();
        assert_eq!(lease.stats().allocated_bytes, start);
        // The bytes come back to the next block, and the older block keeps its own.
        let next = Block::new(8, 8, 0x05);
        assert_eq!(next.ptr, at);
        older.check();
        // An older block shrunk keeps its address; grown, it moves past `next`, and
        // `next` (now not the latest) keeps its bytes when the old copy is abandoned.
        let older = older.realloc(8, 0x06);
        let older = older.realloc(400, 0x07);
        assert_disjoint(&older, &next);
        next.check();
        // `next` is not the latest: freeing it gives nothing back, so `older` (the
        // latest) keeps its bytes when another block comes.
        let bytes = lease.stats().allocated_bytes;
        next.free();
        assert_eq!(lease.stats().allocated_bytes, bytes);
        let after = Block::new(24, 8, 0x08);
        assert_disjoint(&after, &older);
        older.check();
        after.free();
        older.free();
    });
    assert_eq!(lease.live_routed_allocations(), 0);
    drop(lease);
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn over_aligned_blocks_free_on_the_fast_path_and_spills_go_to_the_fallback() {
    let (pool, _serial) = static_pool(1);
    let lease = pool.try_acquire().unwrap();
    lease.run(|| {
        let small = Block::new(3, 1, 0x10);
        let page = Block::new(100, 4096, 0x11);
        let wide = Block::new(4096, 8192, 0x12);
        for block in [&small, &page, &wide] {
            assert_eq!(pool.arena_index_of(block.ptr.addr()), Some(0));
        }
        assert_disjoint(&small, &page);
        assert_disjoint(&page, &wide);
        // Larger than the arena and aligned beyond it: spilled to the fallback, and freed
        // there while the arena is entered.
        let spilled = Block::new(80 << 10, 128 << 10, 0x13);
        assert_eq!(pool.arena_index_of(spilled.ptr.addr()), None);
        assert!(lease.is_over_budget());
        assert_eq!(lease.spilled_bytes(), 80 << 10);
        assert_eq!(lease.live_routed_allocations(), 3);
        spilled.free();
        assert_eq!(lease.spilled_bytes(), 0);
        assert_eq!(lease.live_routed_allocations(), 3);
        // The latest, then the one before it: never below the block before that.
        // `wide` is bumped back to its own start: its alignment padding stays.
        let bytes = lease.stats().allocated_bytes;
        wide.free();
        assert_eq!(lease.stats().allocated_bytes, bytes - 4096);
        let bytes = lease.stats().allocated_bytes;
        page.free();
        // Padding lies between `page` and the bump pointer: not the latest, nothing back.
        assert_eq!(lease.stats().allocated_bytes, bytes);
        let next = Block::new(64, 8, 0x14);
        assert_disjoint(&next, &small);
        small.check();
        next.free();
        small.free();
    });
    assert_eq!(lease.live_routed_allocations(), 0);
    drop(lease);
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn the_leases_own_blocks_between_routed_ones_are_never_bumped_over() {
    let (pool, _serial) = static_pool(1);
    let lease = pool.try_acquire().unwrap();
    lease.run(|| {
        let first = Block::new(32, 8, 0x21);
        let own = lease.alloc_slice_fill_copy(48, 0x5au8);
        // `first` is not the latest: freeing it gives nothing back.
        first.free();
        let routed = Block::new(16, 8, 0x22);
        // The latest again: bumped back to the end of the lease's own block, not below.
        routed.free();
        let next = Block::new(64, 8, 0x23);
        let own_range = own.as_ptr().addr()..own.as_ptr().addr() + own.len();
        assert!(
            next.range().start >= own_range.end,
            "{own_range:#x?} reused"
        );
        assert!(own.iter().all(|&byte| byte == 0x5a));
        next.free();
    });
    assert_eq!(lease.live_routed_allocations(), 0);
    drop(lease);
    assert_eq!(pool.stats().free, 1);
}

/// Frees its block when dropped, and allocates one more block while doing so,
/// recording the arena index of that block.
struct FreeOnDrop<'a> {
    block: Option<Block>,
    pool: &'static ArenaPool,
    during: &'a Cell<Option<Option<usize>>>,
}

impl Drop for FreeOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            block.free();
        }
        let during = Block::new(32, 8, 0x31);
        self.during
            .set(Some(self.pool.arena_index_of(during.ptr.addr())));
        during.free();
    }
}

#[test]
fn a_panic_inside_run_frees_on_the_way_out_and_leaves_the_counts_right() {
    let (pool, _serial) = static_pool(1);
    let lease = pool.try_acquire().unwrap();
    let kept = RefCell::new(None);
    let during = Cell::new(None);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        lease.run(|| {
            *kept.borrow_mut() = Some(Block::new(48, 8, 0x32));
            // Dropped while unwinding inside `run`: its block is freed on the fast path.
            let _dropped = FreeOnDrop {
                block: Some(Block::new(64, 8, 0x33)),
                pool,
                during: &during,
            };
            assert_eq!(lease.live_routed_allocations(), 2);
            panic!("the handler fails");
        })
    }));
    assert!(unwound.is_err());
    // While the thread panics, allocations go to the fallback even inside `run`.
    assert_eq!(during.get(), Some(None));
    assert_eq!(lease.live_routed_allocations(), 1);
    // Freed after the route is gone.
    kept.into_inner().unwrap().free();
    assert_eq!(lease.live_routed_allocations(), 0);
    drop(lease);
    assert_eq!(pool.stats().free, 1);
}

thread_local! {
    static GUARD: RefCell<Option<ArenaGuard>> = const { RefCell::new(None) };
    static KEPT: RefCell<Option<Owned>> = const { RefCell::new(None) };
}

/// A block freed when dropped.
struct Owned(Option<Block>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(block) = self.0.take() {
            block.free();
        }
    }
}

#[test]
fn a_thread_that_exits_with_its_arena_entered_frees_its_thread_locals_blocks() {
    // Thread-local destructors run in an unspecified order: the block is freed either
    // while the guard still routes to the arena (the fast path) or after the guard has
    // released the lease (which then waits in quarantine for that free). Either way the
    // arena comes back.
    let (pool, _serial) = static_pool(1);
    for keep_first in [false, true] {
        // `join` waits for the thread's thread-local destructors (a scope's implicit
        // join does not).
        thread::spawn(move || {
            let lease: PooledArena<'static> = pool.try_acquire().unwrap();
            if keep_first {
                // KEPT is touched first, so its destructor is registered first.
                KEPT.with(|_| {});
            }
            GUARD.with(|guard| *guard.borrow_mut() = Some(lease.enter()));
            let block = Block::new(80, 8, 0x41);
            assert_eq!(pool.arena_index_of(block.ptr.addr()), Some(0));
            KEPT.with(|kept| *kept.borrow_mut() = Some(Owned(Some(block))));
        })
        .join()
        .unwrap();
        assert_eq!(
            pool.stats().free,
            1,
            "the arena is back after the thread exited"
        );
    }
}
