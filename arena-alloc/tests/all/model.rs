//! Operation programs against a model: alignment, no overlap, contents preserved (fill
//! patterns), limits honoured, reset and checkpoint semantics.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use pagekeep_arena::{Arena, ArenaConfig, Checkpoint};
use pagekeep_mmap::{HeapPages, PageSource};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: usize, align_shift: u32 },
    Dealloc { index: usize },
    Grow { index: usize, extra: usize },
    Shrink { index: usize, less: usize },
    Reset,
    Checkpoint,
    Rewind,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..600, 0u32..8).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        1 => (12_000usize..40_000, 0u32..13).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        2 => any::<usize>().prop_map(|index| Op::Dealloc { index }),
        3 => (any::<usize>(), 0usize..3000).prop_map(|(index, extra)| Op::Grow { index, extra }),
        1 => (any::<usize>(), 0usize..600).prop_map(|(index, less)| Op::Shrink { index, less }),
        1 => Just(Op::Reset),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Rewind),
    ]
}

struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Allocation order: blocks newer than a checkpoint disappear when it is rewound to.
    seq: u64,
    fill: u8,
}

struct Model {
    blocks: Vec<Block>,
    marks: Vec<(Checkpoint, u64)>,
    seq: u64,
}

fn fill(block: &Block) {
    // SAFETY: the block is live and `layout.size()` bytes long.
    unsafe { block.ptr.write_bytes(block.fill, block.layout.size()) };
}

fn check(block: &Block) {
    // SAFETY: the block is live and initialised by `fill`.
    let bytes = unsafe { core::slice::from_raw_parts(block.ptr.as_ptr(), block.layout.size()) };
    // Every block is re-checked after every operation: read small blocks whole and
    // sample large ones (and everything under miri), or the model costs more than the
    // allocator. Overlap is checked exactly, on the address ranges.
    let stride = if cfg!(miri) || block.layout.size() > 1024 {
        61
    } else {
        1
    };
    assert!(
        bytes.iter().step_by(stride).all(|&b| b == block.fill),
        "block {:p} ({:?}) lost its contents",
        block.ptr,
        block.layout
    );
}

fn run<S: PageSource, const M: usize>(mut arena: Arena<S, M>, ops: &[Op]) {
    let limit = arena.config().limit();
    let mut model = Model {
        blocks: Vec::new(),
        marks: Vec::new(),
        seq: 0,
    };
    for op in ops {
        match *op {
            Op::Alloc { size, align_shift } => {
                let layout = Layout::from_size_align(size, 1 << align_shift).unwrap();
                let before = arena.stats().allocated_bytes;
                match (&arena).allocate(layout) {
                    Ok(ptr) => {
                        model.seq += 1;
                        let block = Block {
                            ptr: ptr.cast(),
                            layout,
                            seq: model.seq,
                            fill: model.seq as u8,
                        };
                        fill(&block);
                        model.blocks.push(block);
                    }
                    Err(_) => assert!(
                        before + size + layout.align() + 64 > limit,
                        "allocation of {layout:?} failed with {before} of {limit} bytes used"
                    ),
                }
            }
            Op::Dealloc { index } if !model.blocks.is_empty() => {
                let block = model.blocks.swap_remove(index % model.blocks.len());
                // SAFETY: a live block of this arena with its layout.
                unsafe { (&arena).deallocate(block.ptr, block.layout) };
            }
            Op::Grow { index, extra } if !model.blocks.is_empty() => {
                let index = index % model.blocks.len();
                let block = &mut model.blocks[index];
                let new =
                    Layout::from_size_align(block.layout.size() + extra, block.layout.align())
                        .unwrap();
                // SAFETY: a live block of this arena with its layout.
                if let Ok(ptr) = unsafe { (&arena).grow(block.ptr, block.layout, new) } {
                    let old_size = block.layout.size();
                    model.seq += 1;
                    block.ptr = ptr.cast();
                    block.layout = new;
                    block.seq = model.seq;
                    // SAFETY: the grown block starts with the old block's bytes.
                    let kept = unsafe { core::slice::from_raw_parts(block.ptr.as_ptr(), old_size) };
                    assert!(
                        kept.iter()
                            .step_by(if cfg!(miri) { 61 } else { 1 })
                            .all(|&b| b == block.fill),
                        "grow lost contents"
                    );
                    block.fill = model.seq as u8;
                    fill(block);
                }
            }
            Op::Shrink { index, less } if !model.blocks.is_empty() => {
                let index = index % model.blocks.len();
                let block = &mut model.blocks[index];
                let new = Layout::from_size_align(
                    block.layout.size().saturating_sub(less),
                    block.layout.align(),
                )
                .unwrap();
                // SAFETY: a live block of this arena with its layout; `new` is not larger.
                let ptr = unsafe { (&arena).shrink(block.ptr, block.layout, new) }.unwrap();
                model.seq += 1;
                block.ptr = ptr.cast();
                block.layout = new;
                block.seq = model.seq;
                check(block);
            }
            Op::Reset => {
                model.blocks.clear();
                model.marks.clear();
                arena.reset();
                assert_eq!(arena.stats().allocated_bytes, 0);
            }
            Op::Checkpoint => model.marks.push((arena.checkpoint(), model.seq)),
            Op::Rewind => {
                if let Some((mark, seq)) = model.marks.pop() {
                    arena.rewind(mark).unwrap();
                    model.blocks.retain(|block| block.seq <= seq);
                }
            }
            _ => {}
        }
        verify(&arena, &model, limit);
    }
}

fn verify<S: PageSource, const M: usize>(arena: &Arena<S, M>, model: &Model, limit: usize) {
    arena.check_invariants();
    let stats = arena.stats();
    assert!(stats.allocated_bytes <= limit);
    let mut spans: Vec<(usize, usize)> = model
        .blocks
        .iter()
        .map(|block| {
            assert_eq!(
                block.ptr.addr().get() % block.layout.align().max(M),
                0,
                "misaligned {:?}",
                block.layout
            );
            check(block);
            (block.ptr.addr().get(), block.layout.size())
        })
        .filter(|span| span.1 > 0)
        .collect();
    let live: usize = spans.iter().map(|span| span.1).sum();
    assert!(
        live <= stats.allocated_bytes,
        "{live} live bytes but {} allocated",
        stats.allocated_bytes
    );
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(
            pair[0].0 + pair[0].1 <= pair[1].0,
            "blocks overlap: {pair:?}"
        );
    }
}

fn config(limit: Option<usize>) -> ArenaConfig {
    ArenaConfig::new()
        .chunk_bytes(64 << 10)
        .oversize_bytes(16 << 10)
        .commit_step_bytes(4096)
        .warm_bytes(8 << 10)
        .limit_bytes(limit.unwrap_or(usize::MAX))
}

fn cases() -> u32 {
    if cfg!(miri) { 3 } else { 96 }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..if cfg!(miri) { 20 } else { 120 })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn programs_keep_blocks_disjoint_aligned_and_intact(ops in ops(), limit in proptest::option::of(20_000usize..200_000)) {
        run(Arena::<HeapPages>::with_source(HeapPages, config(limit)), &ops);
    }

    #[test]
    fn programs_with_min_align_16_keep_blocks_disjoint_aligned_and_intact(ops in ops()) {
        let arena: Arena<HeapPages, 16> = Arena::with_source(HeapPages, config(None));
        run(arena, &ops);
    }
}
