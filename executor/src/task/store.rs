//! `TaskStore`: the worker-local slab that owns every task's future.
//!
//! Slots are reused; each carries a generation that is bumped when its task finishes,
//! so a [`TaskKey`] names one task for ever: a key for a finished task no longer matches
//! its slot, whatever task lives there now. This is the check that makes stale wakers
//! harmless (see `waker.rs`).
//!
//! The futures themselves live in the runtime's slab heap ([`TaskBox`]); the store
//! holds the slots that name them.

pub(crate) use crate::task::task_box::TaskBox;

/// A spawned task as the worker stores it: type-erased, in the task heap, `Send`.
pub(crate) type BoxFuture = TaskBox;

/// Number of bits of a slot index; a worker holds at most `1 << SLOT_BITS` tasks.
pub(crate) const SLOT_BITS: u32 = 22;
/// Most tasks one worker can hold at once.
pub(crate) const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// Names one task of one worker: its slot and the slot's generation when it was spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskKey {
    /// Index into the store; below [`MAX_SLOTS`].
    pub(crate) slot: u32,
    /// The slot's generation while this task occupies it.
    pub(crate) generation: u32,
}

#[derive(Debug)]
struct Slot {
    /// Bumped (wrapping) each time the slot is vacated.
    generation: u32,
    state: SlotState,
}

enum SlotState {
    Vacant {
        /// Next vacant slot, or `NONE`.
        next_free: u32,
    },
    Occupied {
        /// `None` while the worker is polling the future (it is moved out for the poll
        /// so that no borrow of the store is held while user code runs).
        future: Option<BoxFuture>,
        /// The key is in the run queue (or will be put there by whoever set this).
        scheduled: bool,
    },
}

impl std::fmt::Debug for SlotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vacant { next_free } => f
                .debug_struct("Vacant")
                .field("next_free", next_free)
                .finish(),
            Self::Occupied { future, scheduled } => f
                .debug_struct("Occupied")
                .field("polling", &future.is_none())
                .field("scheduled", scheduled)
                .finish(),
        }
    }
}

const NONE: u32 = u32::MAX;

/// The worker-local task slab. See the module docs.
#[derive(Debug)]
pub(crate) struct TaskStore {
    slots: Vec<Slot>,
    /// Head of the intrusive free list threaded through vacant slots, or `NONE`.
    free_head: u32,
    /// Occupied slots.
    len: usize,
    /// Added to every new slot's first generation, so that two workers (or a worker and
    /// its successor in the same worker-table entry) do not hand out the same keys.
    generation_base: u32,
}

impl TaskStore {
    /// An empty store whose fresh slots start at generation `generation_base`.
    pub(crate) fn new(generation_base: u32) -> Self {
        Self {
            slots: Vec::new(),
            free_head: NONE,
            len: 0,
            generation_base,
        }
    }

    /// Tasks currently stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores `future` as a scheduled task and returns its key; the caller queues it.
    ///
    /// # Panics
    /// When the worker already holds [`MAX_SLOTS`] tasks.
    pub(crate) fn insert(&mut self, future: BoxFuture) -> TaskKey {
        let state = SlotState::Occupied {
            future: Some(future),
            scheduled: true,
        };
        self.len += 1;
        if self.free_head != NONE {
            let slot_index = self.free_head;
            let slot = &mut self.slots[slot_index as usize];
            let SlotState::Vacant { next_free } = slot.state else {
                unreachable!("free list points at occupied slot {slot_index}")
            };
            self.free_head = next_free;
            slot.state = state;
            return TaskKey {
                slot: slot_index,
                generation: slot.generation,
            };
        }
        assert!(
            self.slots.len() < MAX_SLOTS,
            "a worker can hold at most {MAX_SLOTS} tasks"
        );
        let slot_index = u32::try_from(self.slots.len()).expect("MAX_SLOTS fits in u32");
        self.slots.push(Slot {
            generation: self.generation_base,
            state,
        });
        TaskKey {
            slot: slot_index,
            generation: self.generation_base,
        }
    }

    fn occupied(&mut self, key: TaskKey) -> Option<(&mut Option<BoxFuture>, &mut bool)> {
        let slot = self.slots.get_mut(key.slot as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        match &mut slot.state {
            SlotState::Occupied { future, scheduled } => Some((future, scheduled)),
            SlotState::Vacant { .. } => None,
        }
    }

    /// Marks the task `key` scheduled. Returns `true` when the caller must queue it:
    /// the key is live (its generation matches) and it was not already scheduled.
    /// A stale key returns `false` and changes nothing.
    pub(crate) fn schedule(&mut self, key: TaskKey) -> bool {
        match self.occupied(key) {
            Some((_, scheduled)) if !*scheduled => {
                *scheduled = true;
                true
            }
            _ => false,
        }
    }

    /// Moves the future of a live, scheduled task out for polling and clears its
    /// scheduled flag (so a wake during the poll queues it again).
    pub(crate) fn take_for_poll(&mut self, key: TaskKey) -> Option<BoxFuture> {
        let (future, scheduled) = self.occupied(key)?;
        *scheduled = false;
        future.take()
    }

    /// Puts back a future after a poll that returned `Pending`.
    pub(crate) fn put_back(&mut self, key: TaskKey, polled: BoxFuture) {
        let (future, _) = self
            .occupied(key)
            .expect("task slot vanished while being polled");
        debug_assert!(future.is_none(), "slot {} already holds a future", key.slot);
        *future = Some(polled);
    }

    /// Vacates the slot of a finished task (whose future the caller holds) and bumps the
    /// generation so that its key, and every waker made from it, goes stale.
    pub(crate) fn remove(&mut self, key: TaskKey) {
        let slot = &mut self.slots[key.slot as usize];
        debug_assert_eq!(slot.generation, key.generation, "removing a stale key");
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = SlotState::Vacant {
            next_free: self.free_head,
        };
        self.free_head = key.slot;
        self.len -= 1;
    }

    /// Removes every task and returns their futures, for the caller to drop outside any
    /// borrow of the store (dropping a future runs user code).
    pub(crate) fn drain(&mut self) -> Vec<BoxFuture> {
        let mut futures = Vec::with_capacity(self.len);
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if let SlotState::Occupied { future, .. } = &mut slot.state {
                if let Some(future) = future.take() {
                    futures.push(future);
                }
                slot.generation = slot.generation.wrapping_add(1);
                slot.state = SlotState::Vacant {
                    next_free: self.free_head,
                };
                self.free_head = u32::try_from(index).expect("MAX_SLOTS fits in u32");
                self.len -= 1;
            }
        }
        futures
    }

    /// Walks the free list and checks the occupancy count.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut free = 0;
        let mut cursor = self.free_head;
        while cursor != NONE {
            free += 1;
            assert!(free <= self.slots.len(), "free list has a cycle");
            match self.slots[cursor as usize].state {
                SlotState::Vacant { next_free } => cursor = next_free,
                SlotState::Occupied { .. } => panic!("occupied slot {cursor} on the free list"),
            }
        }
        assert_eq!(free + self.len, self.slots.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> BoxFuture {
        TaskBox::new(async {}).unwrap_or_else(|_| panic!("task heap exhausted"))
    }

    #[test]
    fn stale_key_cannot_schedule_or_take_a_later_task_in_the_same_slot() {
        let mut store = TaskStore::new(7);
        let first = store.insert(ready());
        let future = store.take_for_poll(first).unwrap();
        store.remove(first);
        drop(future);
        let second = store.insert(ready());
        assert_eq!(first.slot, second.slot, "the slot is reused");
        assert_ne!(first.generation, second.generation);
        assert!(store.take_for_poll(first).is_none());
        let future = store.take_for_poll(second).unwrap();
        assert!(!store.schedule(first), "stale key schedules nothing");
        assert!(store.schedule(second));
        assert!(!store.schedule(second), "already scheduled");
        store.put_back(second, future);
        store.check_invariants();
    }

    #[test]
    fn drain_empties_and_staleness_survives() {
        let mut store = TaskStore::new(0);
        let keys: Vec<_> = (0..10).map(|_| store.insert(ready())).collect();
        assert_eq!(store.drain().len(), 10);
        assert_eq!(store.len(), 0);
        store.check_invariants();
        for key in keys {
            assert!(!store.schedule(key));
        }
    }
}
