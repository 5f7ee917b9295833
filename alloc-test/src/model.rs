//! The model that every program runs against: it knows which blocks are live, where,
//! how big and with which pattern, and checks each answer of the subject.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use std::collections::BTreeMap;

use crate::pattern;
use crate::program::Op;
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
}

/// What the model knows of a live block.
#[derive(Clone, Copy, Debug)]
struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    tag: u64,
    /// When it was allocated (or last resized), to know what a rewind takes away.
    sequence: usize,
}

/// The largest request of a program; impossible requests are far beyond it.
const IMPOSSIBLE_SIZE: usize = isize::MAX as usize / 2;

struct Model<'a, S: Subject + ?Sized> {
    subject: &'a mut S,
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
    let promises = subject.promises();
    let mut model = Model {
        subject,
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
            Op::Realloc { index, new_size } => self.realloc(op, index, new_size),
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
        }
    }

    fn alloc(
        &mut self,
        op: &Op,
        size: usize,
        align_shift: u8,
        zeroed: bool,
    ) -> Result<(), Violation> {
        let size = if size == 0 && !self.promises.zero_sized {
            1
        } else {
            size
        };
        let align = 1usize << align_shift;
        let Ok(layout) = Layout::from_size_align(size, align) else {
            return Ok(());
        };
        let zeroed = zeroed && self.promises.zeroed;
        let result = if zeroed {
            self.subject.alloc_zeroed(layout)
        } else {
            self.subject.alloc(layout)
        };
        let Ok(ptr) = result else {
            return self.refused(op, layout);
        };
        self.check_new_block(ptr, layout)?;
        if zeroed {
            // SAFETY: a fresh block of `size` bytes.
            let first = unsafe { pattern::first_difference_from_zero(ptr, size) };
            if let Some(offset) = first {
                return Err(Violation::NotZeroed {
                    step: self.step,
                    address: ptr.addr().get(),
                    offset,
                });
            }
        }
        self.track(ptr, layout);
        Ok(())
    }

    /// Alignment, containment, overlap and limit checks for a block about to be tracked.
    fn check_new_block(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Violation> {
        let address = ptr.addr().get();
        if !address.is_multiple_of(layout.align()) {
            return Err(Violation::Misaligned {
                step: self.step,
                address,
                align: layout.align(),
            });
        }
        if layout.size() == 0 {
            return Ok(());
        }
        if self.subject.owns(ptr, layout.size()) == Some(false) {
            return Err(Violation::OutsideOwned {
                step: self.step,
                address,
                size: layout.size(),
            });
        }
        let end = address + layout.size();
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

    /// Starts tracking a block: fills it with its pattern.
    fn track(&mut self, ptr: NonNull<u8>, layout: Layout) {
        let tag = pattern::tag(ptr.addr().get(), self.seed);
        // SAFETY: a live block of `layout.size()` bytes that the model owns.
        unsafe { pattern::fill(ptr, 0..layout.size(), tag) };
        if layout.size() > 0 {
            self.ranges
                .insert(ptr.addr().get(), ptr.addr().get() + layout.size());
        }
        self.live_bytes += layout.size();
        self.summary.peak_live_bytes = self.summary.peak_live_bytes.max(self.live_bytes);
        self.summary.allocations += 1;
        let sequence = self.next_sequence();
        self.live.push(Live {
            ptr,
            layout,
            tag,
            sequence,
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
        self.verify(&block, block.layout.size(), "dealloc")?;
        // SAFETY: a live block of the subject with its layout, freed once.
        unsafe { self.subject.dealloc(block.ptr, block.layout) };
        Ok(())
    }

    fn realloc(&mut self, op: &Op, index: usize, new_size: usize) -> Result<(), Violation> {
        if self.live.is_empty() {
            return Ok(());
        }
        let position = index % self.live.len();
        let block = self.live[position];
        self.verify(&block, block.layout.size(), "before realloc")?;
        let Ok(new_layout) = Layout::from_size_align(new_size, block.layout.align()) else {
            return Ok(());
        };
        // SAFETY: a live block of the subject with its layout.
        let result = unsafe { self.subject.realloc(block.ptr, block.layout, new_size) };
        let Ok(ptr) = result else {
            self.refused(op, new_layout)?;
            // The old block must be intact after a refusal.
            return self.verify(&block, block.layout.size(), "after refused realloc");
        };
        self.untrack(position);
        let kept = block.layout.size().min(new_size);
        let moved = Live { ptr, ..block };
        self.verify(&moved, kept, "realloc")?;
        self.check_new_block(ptr, new_layout)?;
        self.track(ptr, new_layout);
        Ok(())
    }

    fn resize_in_place(&mut self, index: usize, new_size: usize) -> Result<(), Violation> {
        if self.live.is_empty() {
            return Ok(());
        }
        let position = index % self.live.len();
        let block = self.live[position];
        let Ok(new_layout) = Layout::from_size_align(new_size, block.layout.align()) else {
            return Ok(());
        };
        // SAFETY: a live block of the subject with its layout.
        if !unsafe {
            self.subject
                .resize_in_place(block.ptr, block.layout, new_size)
        } {
            return self.verify(&block, block.layout.size(), "after refused resize");
        }
        self.untrack(position);
        self.verify(&block, block.layout.size().min(new_size), "resize in place")?;
        self.check_new_block(block.ptr, new_layout)?;
        self.track(block.ptr, new_layout);
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
            self.verify(&block, block.layout.size(), "after rewind")?;
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
        match self.subject.alloc(layout) {
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
            self.verify(&block, block.layout.size(), "end")?;
            // SAFETY: a live block of the subject with its layout, freed once.
            unsafe { self.subject.dealloc(block.ptr, block.layout) };
        }
        Ok(())
    }
}
