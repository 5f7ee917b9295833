//! The model that every program runs against: it knows which blocks are live, where,
//! how big and with which pattern, and checks each answer of the subject.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use std::collections::BTreeMap;

use core::cell::Cell;

use crate::pattern;
use crate::program::{Op, THREADS};
use crate::subject::{Mark, Promises, Subject};

/// A broken promise, with what the model knew when it saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A block is not aligned as requested.
    Misaligned {
        /// Step of the program (0-based).
        step: usize,
        /// The block's address.
        address: usize,
        /// The alignment asked for.
        align: usize,
    },
    /// A new block overlaps a live one.
    Overlap {
        /// Step of the program.
        step: usize,
        /// The new block's range.
        new: (usize, usize),
        /// The live block's range.
        live: (usize, usize),
    },
    /// A block lies outside the memory the allocator says it owns.
    OutsideOwned {
        /// Step of the program.
        step: usize,
        /// The block's address.
        address: usize,
        /// Its size.
        size: usize,
    },
    /// A live block's contents changed.
    Corrupted {
        /// Step of the program.
        step: usize,
        /// What was checked: "dealloc", "realloc", "end", ...
        when: &'static str,
        /// The block's address.
        address: usize,
        /// Offset of the first wrong byte.
        offset: usize,
        /// The byte the pattern wants.
        expected: u8,
        /// The byte found.
        found: u8,
    },
    /// `alloc_zeroed` returned a block with a non-zero byte.
    NotZeroed {
        /// Step of the program.
        step: usize,
        /// The block's address.
        address: usize,
        /// Offset of the first non-zero byte.
        offset: usize,
    },
    /// More bytes are live than the allocator's limit allows.
    LimitExceeded {
        /// Step of the program.
        step: usize,
        /// Live bytes after the allocation.
        live: usize,
        /// The limit.
        limit: usize,
    },
    /// An ordinary request was refused by an allocator that promises not to refuse.
    UnexpectedRefusal {
        /// Step of the program.
        step: usize,
        /// The operation.
        op: Op,
    },
    /// An impossible request was served.
    ImpossibleServed {
        /// Step of the program.
        step: usize,
    },
    /// A block's reported length is shorter than the size asked for.
    ShortBlock {
        /// Step of the program.
        step: usize,
        /// The block's address.
        address: usize,
        /// The size asked for.
        size: usize,
        /// The length reported.
        len: usize,
    },
    /// What the subject holds from its source kept growing while the same blocks were
    /// allocated and freed over and over: freed memory is not reused.
    Leak {
        /// Step (the number of rounds run).
        step: usize,
        /// Bytes held after the second round.
        held_after_second: usize,
        /// Bytes held after the last round.
        held_after_last: usize,
        /// Bytes one round allocates (and frees).
        round_bytes: usize,
    },
}

impl Violation {
    /// The step of the program at which the promise was broken (the program's length
    /// when it was found in the final check).
    pub fn step(&self) -> usize {
        match *self {
            Violation::Misaligned { step, .. }
            | Violation::Overlap { step, .. }
            | Violation::OutsideOwned { step, .. }
            | Violation::Corrupted { step, .. }
            | Violation::NotZeroed { step, .. }
            | Violation::LimitExceeded { step, .. }
            | Violation::UnexpectedRefusal { step, .. }
            | Violation::ShortBlock { step, .. }
            | Violation::Leak { step, .. }
            | Violation::ImpossibleServed { step } => step,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Violation {}

/// What a run did, for reports and for tests that want to see that work happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Blocks handed out.
    pub allocations: usize,
    /// Requests refused (allowed ones: limits, failing sources, impossible requests).
    pub refusals: usize,
    /// Bytes checked against their pattern.
    pub bytes_checked: usize,
    /// The largest number of bytes live at once.
    pub peak_live_bytes: usize,
    /// Blocks freed or resized by a thread other than the one that allocated them.
    pub remote_frees: usize,
}

/// What the model knows of a live block.
#[derive(Clone, Copy, Debug)]
struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    /// The length the subject reported (at least `layout.size()`): every byte of it is
    /// filled and checked.
    len: usize,
    tag: u64,
    /// When it was allocated (or last resized), to know what a rewind takes away.
    sequence: usize,
    /// The thread that owns it: the one that allocated or last resized it.
    owner: usize,
}

/// The largest request of a program; impossible requests are far beyond it.
const IMPOSSIBLE_SIZE: usize = isize::MAX as usize / 2;

struct Model<'a, S: Subject + ?Sized> {
    subject: &'a mut S,
    /// The thread that makes the next call, for subjects called from several threads.
    thread: Option<&'a Cell<usize>>,
    promises: Promises,
    seed: u64,
    live: Vec<Live>,
    /// Live ranges by start, for overlap checks (zero-sized blocks are left out).
    ranges: BTreeMap<usize, usize>,
    live_bytes: usize,
    sequence: usize,
    checkpoints: Vec<(Mark, usize)>,
    summary: Summary,
    step: usize,
}

/// Runs `program` against `subject`, checking every answer; frees what is still live at
/// the end. `seed` varies the fill patterns between runs.
///
/// # Errors
/// The first [`Violation`] found. The subject may then hold leaked blocks.
pub fn run<S: Subject + ?Sized>(
    subject: &mut S,
    program: &[Op],
    seed: u64,
) -> Result<Summary, Violation> {
    let switches = program
        .iter()
        .any(|op| matches!(*op, Op::Switch { thread } if usize::from(thread) % THREADS != 0));
    if switches && let Some(threaded) = subject.threaded() {
        return crate::threads::run(threaded, program, seed);
    }
    run_on(subject, None, program, seed)
}

/// [`run`] with the calls made on the thread `thread` names, where it is given.
pub(crate) fn run_on<S: Subject + ?Sized>(
    subject: &mut S,
    thread: Option<&Cell<usize>>,
    program: &[Op],
    seed: u64,
) -> Result<Summary, Violation> {
    let promises = subject.promises();
    let mut model = Model {
        subject,
        thread,
        promises,
        seed,
        live: Vec::new(),
        ranges: BTreeMap::new(),
        live_bytes: 0,
        sequence: 0,
        checkpoints: Vec::new(),
        summary: Summary::default(),
        step: 0,
    };
    for (step, op) in program.iter().enumerate() {
        model.step = step;
        model.apply(op)?;
    }
    model.step = program.len();
    model.finish()?;
    Ok(model.summary)
}

impl<S: Subject + ?Sized> Model<'_, S> {
    fn apply(&mut self, op: &Op) -> Result<(), Violation> {
        match *op {
            Op::Alloc {
                size,
                align_shift,
                zeroed,
            } => self.alloc(op, size, align_shift, zeroed),
            Op::Dealloc { index } => self.dealloc(index),
            Op::Realloc {
                index,
                new_size,
                align_shift,
                zeroed,
            } => self.realloc(op, index, new_size, align_shift, zeroed),
            Op::ResizeInPlace { index, new_size } => self.resize_in_place(index, new_size),
            Op::Reset => {
                if self.subject.reset() {
                    self.forget_all();
                }
                Ok(())
            }
            Op::Checkpoint => {
                if let Some(mark) = self.subject.checkpoint() {
                    self.checkpoints.push((mark, self.sequence));
                }
                Ok(())
            }
            Op::Rewind => self.rewind(),
            Op::Impossible => self.impossible(),
            Op::Switch { thread } => {
                if let Some(current) = self.thread {
                    current.set(usize::from(thread) % THREADS);
                }
                Ok(())
            }
        }
    }

    /// The thread making the calls now.
    fn current_thread(&self) -> usize {
        self.thread.map_or(0, Cell::get)
    }

    /// `size`, or 1 where zero-sized blocks are not allowed.
    fn size(&self, size: usize) -> usize {
        if size == 0 && !self.promises.zero_sized {
            1
        } else {
            size
        }
    }

    fn alloc(
        &mut self,
        op: &Op,
        size: usize,
        align_shift: u8,
        zeroed: bool,
    ) -> Result<(), Violation> {
        let size = self.size(size);
        let Some(align) = 1usize.checked_shl(u32::from(align_shift)) else {
            return Ok(());
        };
        let Ok(layout) = Layout::from_size_align(size, align) else {
            return Ok(());
        };
        let zeroed = zeroed && self.promises.zeroed;
        let result = if zeroed {
            self.subject.alloc_zeroed(layout)
        } else {
            self.subject.alloc(layout)
        };
        let Ok(block) = result else {
            return self.refused(op, layout);
        };
        let (ptr, len) = (block.cast::<u8>(), block.len());
        self.check_new_block(ptr, layout, len)?;
        if zeroed {
            self.check_zeroed(ptr, 0..len)?;
        }
        self.track(ptr, layout, len);
        Ok(())
    }

    /// Checks that `range` of a fresh block is zero.
    fn check_zeroed(
        &mut self,
        ptr: NonNull<u8>,
        range: core::ops::Range<usize>,
    ) -> Result<(), Violation> {
        // SAFETY: inside a fresh block of at least `range.end` bytes.
        let first = unsafe {
            pattern::first_difference_from_zero(ptr.add(range.start), range.end - range.start)
        };
        match first {
            Some(offset) => Err(Violation::NotZeroed {
                step: self.step,
                address: ptr.addr().get(),
                offset: range.start + offset,
            }),
            None => Ok(()),
        }
    }

    /// Length, alignment, containment, overlap and limit checks for a block about to be
    /// tracked; overlap and containment cover its whole reported length.
    fn check_new_block(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        len: usize,
    ) -> Result<(), Violation> {
        let address = ptr.addr().get();
        if len < layout.size() {
            return Err(Violation::ShortBlock {
                step: self.step,
                address,
                size: layout.size(),
                len,
            });
        }
        if !address.is_multiple_of(layout.align()) {
            return Err(Violation::Misaligned {
                step: self.step,
                address,
                align: layout.align(),
            });
        }
        if len == 0 {
            return Ok(());
        }
        if self.subject.owns(ptr, len) == Some(false) {
            return Err(Violation::OutsideOwned {
                step: self.step,
                address,
                size: len,
            });
        }
        let end = address + len;
        if let Some((&start, &live_end)) = self.ranges.range(..end).next_back()
            && live_end > address
        {
            return Err(Violation::Overlap {
                step: self.step,
                new: (address, end),
                live: (start, live_end),
            });
        }
        if let Some(limit) = self.promises.limit
            && self.live_bytes + layout.size() > limit
        {
            return Err(Violation::LimitExceeded {
                step: self.step,
                live: self.live_bytes + layout.size(),
                limit,
            });
        }
        Ok(())
    }

    /// Starts tracking a block: fills its whole reported length with its pattern.
    fn track(&mut self, ptr: NonNull<u8>, layout: Layout, len: usize) {
        let tag = pattern::tag(ptr.addr().get(), self.seed);
        // SAFETY: a live block of `len` usable bytes that the model owns.
        unsafe { pattern::fill(ptr, 0..len, tag) };
        if len > 0 {
            self.ranges.insert(ptr.addr().get(), ptr.addr().get() + len);
        }
        self.live_bytes += layout.size();
        self.summary.peak_live_bytes = self.summary.peak_live_bytes.max(self.live_bytes);
        self.summary.allocations += 1;
        let sequence = self.next_sequence();
        let owner = self.current_thread();
        self.live.push(Live {
            ptr,
            layout,
            len,
            tag,
            sequence,
            owner,
        });
    }

    fn next_sequence(&mut self) -> usize {
        self.sequence += 1;
        self.sequence
    }

    /// Stops tracking the block at `position` (without freeing it).
    fn untrack(&mut self, position: usize) -> Live {
        let block = self.live.swap_remove(position);
        self.ranges.remove(&block.ptr.addr().get());
        self.live_bytes -= block.layout.size();
        block
    }

    fn forget_all(&mut self) {
        self.live.clear();
        self.ranges.clear();
        self.live_bytes = 0;
        self.checkpoints.clear();
    }

    /// Checks that `len` bytes of a block still hold its pattern.
    fn verify(&mut self, block: &Live, len: usize, when: &'static str) -> Result<(), Violation> {
        self.summary.bytes_checked += len;
        // SAFETY: a live block of at least `len` bytes.
        match unsafe { pattern::first_difference(block.ptr, 0..len, block.tag) } {
            None => Ok(()),
            Some((offset, found)) => Err(Violation::Corrupted {
                step: self.step,
                when,
                address: block.ptr.addr().get(),
                offset,
                expected: pattern::byte(block.tag, offset),
                found,
            }),
        }
    }

    fn refused(&mut self, op: &Op, layout: Layout) -> Result<(), Violation> {
        self.summary.refusals += 1;
        let allowed = self.promises.may_refuse
            || self.promises.limit.is_some()
            || layout.align() > self.promises.max_align
            || self
                .promises
                .max_size
                .is_some_and(|max| layout.size() > max);
        if allowed {
            Ok(())
        } else {
            Err(Violation::UnexpectedRefusal {
                step: self.step,
                op: op.clone(),
            })
        }
    }

    fn dealloc(&mut self, index: usize) -> Result<(), Violation> {
        if self.live.is_empty() {
            return Ok(());
        }
        let block = self.untrack(index % self.live.len());
        self.verify(&block, block.len, "dealloc")?;
        if block.owner != self.current_thread() {
            self.summary.remote_frees += 1;
        }
        // SAFETY: a live block of the subject with its layout, freed once.
        unsafe { self.subject.dealloc(block.ptr, block.layout) };
        Ok(())
    }

    fn realloc(
        &mut self,
        op: &Op,
        index: usize,
        new_size: usize,
        align_shift: Option<u8>,
        zeroed: bool,
    ) -> Result<(), Violation> {
        if self.live.is_empty() {
            return Ok(());
        }
        let position = index % self.live.len();
        let block = self.live[position];
        self.verify(&block, block.len, "before realloc")?;
        let new_size = self.size(new_size);
        let align = match align_shift {
            Some(shift) if self.promises.realign => 1usize.checked_shl(u32::from(shift)),
            _ => Some(block.layout.align()),
        };
        let Some(Ok(new_layout)) = align.map(|align| Layout::from_size_align(new_size, align))
        else {
            return Ok(());
        };
        let grow_zeroed = zeroed && self.promises.grow_zeroed && new_size >= block.layout.size();
        // SAFETY: a live block of the subject with its layout; the new layout keeps the
        // alignment unless the subject may change it, and is non-zero unless zero-sized
        // blocks are allowed; `grow_zeroed` only grows.
        let result = unsafe {
            if grow_zeroed {
                self.subject
                    .grow_zeroed(block.ptr, block.layout, new_layout)
            } else {
                self.subject.realloc(block.ptr, block.layout, new_layout)
            }
        };
        let Ok(moved) = result else {
            self.refused(op, new_layout)?;
            // The old block must be intact after a refusal.
            return self.verify(&block, block.len, "after refused realloc");
        };
        let (ptr, len) = (moved.cast::<u8>(), moved.len());
        self.untrack(position);
        if block.owner != self.current_thread() {
            self.summary.remote_frees += 1;
        }
        let kept = block.layout.size().min(new_size);
        let moved = Live { ptr, ..block };
        self.verify(&moved, kept.min(len), "realloc")?;
        self.check_new_block(ptr, new_layout, len)?;
        if grow_zeroed && len > block.len {
            // `Allocator::grow_zeroed`: zero from the old block's length to the new one's.
            self.check_zeroed(ptr, block.len..len)?;
        }
        self.track(ptr, new_layout, len);
        Ok(())
    }

    fn resize_in_place(&mut self, index: usize, new_size: usize) -> Result<(), Violation> {
        if self.live.is_empty() {
            return Ok(());
        }
        let position = index % self.live.len();
        let block = self.live[position];
        let new_size = self.size(new_size);
        let Ok(new_layout) = Layout::from_size_align(new_size, block.layout.align()) else {
            return Ok(());
        };
        // SAFETY: a live block of the subject with its layout.
        if !unsafe {
            self.subject
                .resize_in_place(block.ptr, block.layout, new_size)
        } {
            return self.verify(&block, block.len, "after refused resize");
        }
        self.untrack(position);
        self.verify(&block, block.layout.size().min(new_size), "resize in place")?;
        self.check_new_block(block.ptr, new_layout, new_size)?;
        self.track(block.ptr, new_layout, new_size);
        Ok(())
    }

    fn rewind(&mut self) -> Result<(), Violation> {
        let Some((mark, sequence)) = self.checkpoints.pop() else {
            return Ok(());
        };
        // SAFETY: the most recent checkpoint of this subject; nothing rewound past it.
        unsafe { self.subject.rewind(mark) };
        // Blocks from after the checkpoint are gone; those from before must be intact.
        let mut position = 0;
        while position < self.live.len() {
            if self.live[position].sequence > sequence {
                self.untrack(position);
            } else {
                position += 1;
            }
        }
        for block in self.live.clone() {
            self.verify(&block, block.len, "after rewind")?;
        }
        Ok(())
    }

    fn impossible(&mut self) -> Result<(), Violation> {
        // Miri stops the whole program on an allocation larger than its host can make,
        // instead of returning null: the step is skipped there.
        if cfg!(miri) {
            return Ok(());
        }
        let layout = Layout::from_size_align(IMPOSSIBLE_SIZE, 8).expect("a valid layout");
        // The answer goes through `black_box`: an optimiser that sees a block dropped
        // unused may assume the allocation succeeded and remove the call (LLVM does so
        // with `malloc` in release builds), which would report a refusal as served.
        match core::hint::black_box(self.subject.alloc(layout)) {
            Ok(_) => Err(Violation::ImpossibleServed { step: self.step }),
            Err(_) => {
                self.summary.refusals += 1;
                Ok(())
            }
        }
    }

    /// Checks and frees everything still live.
    fn finish(&mut self) -> Result<(), Violation> {
        while let Some(block) = self.live.last().copied() {
            self.untrack(self.live.len() - 1);
            self.verify(&block, block.len, "end")?;
            // SAFETY: a live block of the subject with its layout, freed once.
            unsafe { self.subject.dealloc(block.ptr, block.layout) };
        }
        Ok(())
    }
}
