//! Multi-threaded stress for any `GlobalAlloc + Sync`: cross-thread frees
//! (producer/consumer), many threads churning mixed sizes and trading blocks, and threads
//! that exit while holding blocks. Every block carries its pattern and is checked before
//! it is freed, by whichever thread frees it.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;

use crate::pattern;

/// A block in flight between threads.
#[derive(Debug)]
struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
    tag: u64,
}

// SAFETY: a block is owned by exactly one thread at a time (moved through channels or a
// mutex); the allocators under test allow freeing from any thread.
unsafe impl Send for Block {}

/// A small deterministic generator (xorshift64*), so each thread's sizes are reproducible.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A size from the mix programs use: mostly small, sometimes a few KiB (at most 256
    /// bytes under miri, which checks patterns one byte at a time).
    fn size(&mut self) -> usize {
        if cfg!(miri) {
            return (self.next() % 256) as usize + 1;
        }
        match self.next() % 16 {
            0 => (self.next() % 16384) as usize + 1,
            1..=3 => (self.next() % 2048) as usize + 1,
            _ => (self.next() % 256) as usize + 1,
        }
    }
}

fn allocate<A: GlobalAlloc>(allocator: &A, rng: &mut Rng) -> Result<Block, String> {
    let align = 1usize << (rng.next() % 7);
    let layout = Layout::from_size_align(rng.size(), align).map_err(|error| error.to_string())?;
    // SAFETY: the layout has a non-zero size.
    let ptr = NonNull::new(unsafe { allocator.alloc(layout) })
        .ok_or_else(|| format!("refused {layout:?}"))?;
    if ptr.addr().get() % align != 0 {
        return Err(format!("block {ptr:p} not aligned to {align}"));
    }
    let tag = pattern::tag(ptr.addr().get(), rng.next());
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe { pattern::fill(ptr, 0..layout.size(), tag) };
    Ok(Block { ptr, layout, tag })
}

fn free<A: GlobalAlloc>(allocator: &A, block: Block) -> Result<(), String> {
    // SAFETY: the block is live and owned by this thread.
    let difference =
        unsafe { pattern::first_difference(block.ptr, 0..block.layout.size(), block.tag) };
    if let Some((offset, found)) = difference {
        return Err(format!(
            "block {:p} ({} bytes) corrupted at offset {offset}: found {found:#04x}",
            block.ptr,
            block.layout.size()
        ));
    }
    // SAFETY: a live block of `allocator` with its layout, freed once.
    unsafe { allocator.dealloc(block.ptr.as_ptr(), block.layout) };
    Ok(())
}

/// One thread allocates `blocks` blocks and sends them to another, which checks and frees
/// them: every free is a cross-thread free.
///
/// # Errors
/// A refusal, a misaligned block or a corrupted one, described.
pub fn producer_consumer<A: GlobalAlloc + Sync>(
    allocator: &A,
    blocks: usize,
) -> Result<(), String> {
    producer_consumer_in(allocator, blocks, |produce| produce())
}

/// [`producer_consumer`] with the producer's loop run inside `scope` on the producing
/// thread, e.g. inside an arena it has entered, so that the consumer frees blocks of an
/// arena that another thread leased (and may already have released).
///
/// # Errors
/// As [`producer_consumer`].
pub fn producer_consumer_in<A: GlobalAlloc + Sync>(
    allocator: &A,
    blocks: usize,
    scope: impl FnOnce(&mut dyn FnMut()) + Send,
) -> Result<(), String> {
    let (sender, receiver) = mpsc::sync_channel::<Block>(256);
    thread::scope(|threads| {
        let consumer = threads.spawn(move || -> Result<(), String> {
            for block in receiver {
                free(allocator, block)?;
            }
            Ok(())
        });
        let producer = threads.spawn(move || -> Result<(), String> {
            let mut produced = Ok(());
            scope(&mut || {
                let mut rng = Rng(0x1234_5678_9abc_def1);
                for _ in 0..blocks {
                    match allocate(allocator, &mut rng) {
                        Ok(block) => {
                            if sender.send(block).is_err() {
                                break; // the consumer stopped on an error it will report
                            }
                        }
                        Err(error) => {
                            produced = Err(error);
                            break;
                        }
                    }
                }
            });
            drop(sender);
            produced
        });
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err("producer panicked".to_owned()));
        let consumed = consumer
            .join()
            .unwrap_or_else(|_| Err("consumer panicked".to_owned()));
        produced.and(consumed)
    })
}

/// `threads` threads each run `operations` steps of allocate / free / trade: a thread
/// keeps up to 64 live blocks, frees at random, and moves blocks through a shared pile
/// so that other threads free them.
///
/// # Errors
/// As [`producer_consumer`].
pub fn churn<A: GlobalAlloc + Sync>(
    allocator: &A,
    threads: usize,
    operations: usize,
) -> Result<(), String> {
    let pile = Mutex::new(Vec::<Block>::new());
    let result = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let pile = &pile;
                scope.spawn(move || -> Result<(), String> {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
                    let mut mine: Vec<Block> = Vec::with_capacity(64);
                    for _ in 0..operations {
                        match rng.next() % 8 {
                            0..=3 if mine.len() < 64 => mine.push(allocate(allocator, &mut rng)?),
                            4 | 5 if !mine.is_empty() => {
                                let victim = (rng.next() as usize) % mine.len();
                                free(allocator, mine.swap_remove(victim))?;
                            }
                            6 if !mine.is_empty() => {
                                let traded = mine.swap_remove((rng.next() as usize) % mine.len());
                                pile.lock().map_err(|_| "pile poisoned")?.push(traded);
                            }
                            _ => {
                                let taken = pile.lock().map_err(|_| "pile poisoned")?.pop();
                                if let Some(block) = taken {
                                    free(allocator, block)?;
                                }
                            }
                        }
                    }
                    mine.into_iter()
                        .try_for_each(|block| free(allocator, block))
                })
            })
            .collect();
        // The scope joins any workers left when the first error returns early.
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .unwrap_or_else(|_| Err("worker panicked".to_owned()))
        })
    });
    let leftover = std::mem::take(&mut *pile.lock().map_err(|_| "pile poisoned")?);
    leftover
        .into_iter()
        .try_for_each(|block| free(allocator, block))?;
    result
}

/// `rounds` short-lived threads each allocate `blocks` blocks and exit while holding them;
/// the main thread checks and frees them after the thread is gone (so the blocks outlive
/// any per-thread cache of their allocator).
///
/// # Errors
/// As [`producer_consumer`].
pub fn exiting_threads<A: GlobalAlloc + Sync>(
    allocator: &A,
    rounds: usize,
    blocks: usize,
) -> Result<(), String> {
    for round in 0..rounds {
        let held = thread::scope(|scope| {
            scope
                .spawn(move || -> Result<Vec<Block>, String> {
                    let mut rng = Rng(0x5151_5151 ^ (round as u64 + 1));
                    (0..blocks).map(|_| allocate(allocator, &mut rng)).collect()
                })
                .join()
                .unwrap_or_else(|_| Err("thread panicked".to_owned()))
        })?;
        held.into_iter()
            .try_for_each(|block| free(allocator, block))?;
    }
    Ok(())
}
