//! The edge programs: fixed programs that [`check`](crate::check) runs against every
//! subject before the random ones, so that what lives at an edge is tried every time,
//! not when chance draws it. For every edge size ([`edge_sizes_for`]): two blocks live
//! at once (one zeroed), one freed and two more allocated while the other lives (a block
//! handed out twice after a free overlaps), resizes to the neighbouring sizes, with
//! `grow_zeroed` and to another alignment where the subject has them; for every
//! alignment up to one above the promise, blocks of small sizes (zero included where
//! allowed) and alignment-changing resizes; on several threads, blocks freed by a thread
//! that did not allocate them while the allocating thread and others allocate the same
//! size; an impossible request; and [`reuse_rounds`] for the footprint check.

use crate::program::{Op, edge_sizes_for, largest_size, top_align_shift};
use crate::subject::Promises;
use pagekeep_slab::size_class::MAX_SMALL;

fn alloc(size: usize, align_shift: u8, zeroed: bool) -> Op {
    Op::Alloc {
        size,
        align_shift,
        zeroed,
    }
}

fn realloc(index: usize, new_size: usize, align_shift: Option<u8>, zeroed: bool) -> Op {
    Op::Realloc {
        index,
        new_size,
        align_shift,
        zeroed,
    }
}

/// Frees every block of a program that holds `live` blocks.
fn free_all(program: &mut Vec<Op>, live: usize) {
    program.extend((0..live).map(|_| Op::Dealloc { index: 0 }));
}

/// The program for one edge size.
fn size_program(size: usize) -> Vec<Op> {
    let mut program = vec![
        alloc(size, 0, false),
        alloc(size, 0, true),
        // Free one: two more of the same layout while the other lives.
        Op::Dealloc { index: 0 },
        alloc(size, 0, false),
        alloc(size, 0, true),
        realloc(0, size + 1, None, false),
        realloc(1, size.saturating_sub(1), None, false),
        realloc(2, (size * 2 + 1).min(largest_size()), None, true),
        realloc(1, size, Some(12), false),
        Op::ResizeInPlace {
            index: 0,
            new_size: size + 1,
        },
    ];
    free_all(&mut program, 3);
    program
}

/// The program for one alignment: small sizes only above 64 KiB (memory use stays sane),
/// and none above [`largest_size`].
fn align_program(align_shift: u8, zero_sized: bool) -> Vec<Op> {
    let align = 1usize << align_shift;
    let mut sizes = vec![1, 24];
    if zero_sized {
        sizes.push(0);
    }
    if align_shift <= 16 && align < largest_size() {
        sizes.extend([align, align + 1]);
    } else {
        sizes.push(4096.min(largest_size()));
    }
    let mut program = Vec::new();
    for &size in &sizes {
        program.extend([
            alloc(size, align_shift, false),
            alloc(size, align_shift, true),
        ]);
    }
    let live = sizes.len() * 2;
    // Resizes that keep the alignment, then ones that change it (where allowed): from
    // this alignment to 8 and back, and from 8 up to this one.
    program.extend([
        realloc(0, 100, None, false),
        realloc(1, 5000.min(align + 7), None, true),
        realloc(2, 64, Some(3), false),
        realloc(3, 64, Some(align_shift), true),
        alloc(40, 3, false),
        realloc(live, 48, Some(align_shift), false),
    ]);
    free_all(&mut program, live + 1);
    program
}

/// Blocks of `size` allocated on thread 0, freed on thread 1 while thread 0 and the
/// others allocate the same size and hold it; then freed and resized crosswise.
fn threads_program(size: usize) -> Vec<Op> {
    let on = |thread: u8| Op::Switch { thread };
    let mut program = vec![
        on(0),
        alloc(size, 3, false),
        alloc(size, 3, false),
        on(1),
        Op::Dealloc { index: 0 },
        on(0),
        alloc(size, 3, false),
        on(1),
        alloc(size, 3, false),
        on(2),
        alloc(size, 3, true),
        on(3),
        alloc(size, 3, false),
        realloc(0, size + 1, None, false),
        on(2),
        Op::Dealloc { index: 1 },
        on(1),
        Op::Dealloc { index: 2 },
        on(0),
        alloc(size, 3, false),
        on(3),
        alloc(size, 3, false),
    ];
    free_all(&mut program, 5);
    program
}

/// Every edge program for a subject with `promises`; `threaded` adds the programs on
/// several threads.
pub fn programs(promises: &Promises, threaded: bool) -> Vec<Vec<Op>> {
    let mut sizes = edge_sizes_for(promises);
    if cfg!(miri) {
        // Miri interprets every byte: a sample of the edges (up to 512 bytes there).
        sizes = sizes.into_iter().step_by(4).collect();
    }
    let mut programs: Vec<Vec<Op>> = sizes.iter().map(|&size| size_program(size)).collect();
    programs.extend(
        (0..=top_align_shift(promises)).map(|shift| align_program(shift, promises.zero_sized)),
    );
    if threaded {
        let small = sizes.iter().filter(|&&size| size <= MAX_SMALL + 1);
        programs.extend(small.map(|&size| threads_program(size)));
    }
    programs.push(vec![Op::Impossible, alloc(1, 0, false), Op::Impossible]);
    programs
}

/// The rounds of the footprint check: one round allocates a batch of blocks (small,
/// medium, at the size-class edges, and large) and the run frees them; the same round
/// again and again must not make the subject hold more. The batch, and its bytes.
pub fn reuse_rounds(promises: &Promises) -> (Vec<Op>, usize) {
    let largest = crate::program::largest_size();
    let mut sizes = vec![24, 100, 1000, 4096, 5000, 16385, 100_000, 200_000, 1 << 20];
    sizes.retain(|&size| size <= largest && promises.max_size.is_none_or(|max| size <= max));
    if sizes.is_empty() {
        sizes.push(promises.max_size.unwrap_or(1).max(1));
    }
    let mut round = Vec::new();
    let mut bytes = 0;
    for &size in &sizes {
        for zeroed in [false, true, false, false] {
            round.push(alloc(size, 3, zeroed));
            bytes += size;
        }
    }
    (round, bytes)
}
