//! Task wakers that never allocate.
//!
//! A task's waker carries no pointer at all: its data word is the integer
//! `home << 54 | slot << 32 | generation`, where `home` is the worker-table index of
//! the runtime's worker 0 (any worker of the runtime would name the same shared task
//! table), stored with [`core::ptr::without_provenance`] (strict provenance: it is
//! never dereferenced and never turned back into a pointer; [`pointer::addr`] reads
//! it). Cloning copies the word; dropping does nothing; waking
//! (`scheduler::wake_task`) marks the task scheduled in its runtime's table and queues
//! its key: on the calling worker's own run queue when the caller is a worker of that
//! runtime (no table look-up), through the process-wide worker table and the runtime's
//! injector otherwise.
//!
//! Stale wakers are harmless: the slot's state word holds the generation, which is
//! bumped whenever a task finishes, and a wake only sets the scheduled flag of a slot
//! whose generation matches (one compare-and-swap), so a waker kept past its task's end
//! cannot wake a later task in the same slot. A waker kept past its whole runtime finds
//! either an empty table entry, a closed table, or a later runtime whose generations
//! start at a different base (see `TaskStore::new`); at worst that is a spurious
//! wake-up, which every future must tolerate.

use std::task::{RawWaker, RawWakerVTable, Waker};

use crate::task::store::{SLOT_BITS, TaskKey};

const GENERATION_BITS: u32 = 32;
/// Bits of the worker-table index.
pub(crate) const WORKER_BITS: u32 = 10;
/// Size of the process-wide worker table.
pub(crate) const MAX_WORKERS: usize = 1 << WORKER_BITS;

const _: () = assert!(
    GENERATION_BITS + SLOT_BITS + WORKER_BITS <= usize::BITS,
    "the waker encoding needs 64-bit pointers"
);

/// Packs a worker index and a task key into one word.
pub(crate) fn encode(worker: usize, key: TaskKey) -> usize {
    debug_assert!(worker < MAX_WORKERS && (key.slot as usize) < (1 << SLOT_BITS));
    (worker << (SLOT_BITS + GENERATION_BITS))
        | ((key.slot as usize) << GENERATION_BITS)
        | key.generation as usize
}

/// Inverse of [`encode`].
pub(crate) fn decode(word: usize) -> (usize, TaskKey) {
    let worker = word >> (SLOT_BITS + GENERATION_BITS);
    let slot = (word >> GENERATION_BITS) & ((1 << SLOT_BITS) - 1);
    let generation = word & ((1 << GENERATION_BITS) - 1);
    // Both fit: they were masked to 22 and 32 bits.
    (
        worker,
        TaskKey {
            slot: slot as u32,
            generation: generation as u32,
        },
    )
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    let (worker, key) = decode(data.addr());
    crate::scheduler::wake_task(worker, key);
}

fn drop(_data: *const ()) {}

/// Whether `waker` is a task waker made by [`task_waker`] (its data word is then an
/// [`encode`]d task name).
pub(crate) fn is_task_waker(waker: &Waker) -> bool {
    std::ptr::eq(waker.vtable(), &VTABLE)
}

/// The waker for task `key` of the runtime whose worker 0 has table index `worker`.
pub(crate) fn task_waker(worker: usize, key: TaskKey) -> Waker {
    let data = core::ptr::without_provenance::<()>(encode(worker, key));
    // SAFETY: the `RawWaker` contract: every vtable function accepts any data word made
    // here or by `clone`; `clone` returns a waker with the same data and vtable; `wake`
    // and `wake_by_ref` only read the integer and are sound from any thread (they go
    // through the synchronised worker table); `drop` has nothing to release. The data is
    // never dereferenced, so the missing provenance is fine.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_extremes() {
        for (worker, slot, generation) in [
            (0, 0, 0),
            (MAX_WORKERS - 1, (1 << SLOT_BITS) - 1, u32::MAX),
            (5, 77, 123_456),
        ] {
            let key = TaskKey { slot, generation };
            assert_eq!(decode(encode(worker, key)), (worker, key));
        }
    }

    #[test]
    fn clones_share_data_and_do_not_allocate_state() {
        let waker = task_waker(
            3,
            TaskKey {
                slot: 9,
                generation: 4,
            },
        );
        let copy = waker.clone();
        assert!(waker.will_wake(&copy));
        assert_eq!(
            copy.data().addr(),
            encode(
                3,
                TaskKey {
                    slot: 9,
                    generation: 4
                }
            )
        );
        // Waking a worker index nobody owns is a no-op.
        copy.wake();
    }
}
