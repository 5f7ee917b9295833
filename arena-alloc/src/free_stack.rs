//! [`FreeStack`]: a lock-free stack of slot indices (Treiber, "Systems Programming:
//! Coping with Parallelism", IBM RJ 5118, 1986), with a tag in the head against ABA.

use core::sync::atomic::Ordering;

use crate::sync::{AtomicU32, AtomicU64};

/// A lock-free LIFO of the indices `0..capacity`, each present at most once.
///
/// The head packs a tag (high 32 bits, bumped by every push and pop) and the top index
/// plus one (low 32 bits; zero means empty). A pop reads the top's successor and swings
/// the head with one compare-and-swap; the tag makes the swap fail if the top was popped
/// and pushed back meanwhile (ABA), since its successor may have changed.
pub(crate) struct FreeStack {
    head: AtomicU64,
    /// `next[i]`: the index below `i` plus one, or zero; meaningful while `i` is on the
    /// stack.
    next: Box<[AtomicU32]>,
}

const INDEX_MASK: u64 = u32::MAX as u64;

impl FreeStack {
    /// A stack holding every index of `0..capacity`, lowest on top.
    #[cfg(test)]
    pub(crate) fn full(capacity: u32) -> Self {
        Self::try_full(capacity).expect("a small table")
    }

    /// A stack holding every index of `0..capacity`, lowest on top; `None` when its table
    /// cannot be allocated (it takes four bytes an index).
    pub(crate) fn try_full(capacity: u32) -> Option<Self> {
        let mut next = Vec::new();
        next.try_reserve_exact(capacity as usize).ok()?;
        next.extend((0..capacity).map(|_| AtomicU32::new(0)));
        let stack = FreeStack {
            head: AtomicU64::new(0),
            next: next.into_boxed_slice(),
        };
        for index in (0..capacity).rev() {
            stack.push(index);
        }
        Some(stack)
    }

    /// Pushes `index`, which must not be on the stack.
    #[inline]
    pub(crate) fn push(&self, index: u32) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            self.next[index as usize].store((head & INDEX_MASK) as u32, Ordering::Relaxed);
            let new = (head & !INDEX_MASK).wrapping_add(1 << 32) | u64::from(index + 1);
            // SeqCst: pairs with a waiter that registers and then pops (no lost grant).
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Pops the top index, if any.
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let top = (head & INDEX_MASK) as u32;
            if top == 0 {
                return None;
            }
            let next = self.next[top as usize - 1].load(Ordering::Relaxed);
            let new = (head & !INDEX_MASK).wrapping_add(1 << 32) | u64::from(next);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::SeqCst, Ordering::Acquire)
            {
                Ok(_) => return Some(top - 1),
                Err(actual) => head = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FreeStack;

    #[test]
    fn pops_every_index_once_lowest_first() {
        let stack = FreeStack::full(3);
        assert_eq!(
            (stack.pop(), stack.pop(), stack.pop(), stack.pop()),
            (Some(0), Some(1), Some(2), None)
        );
        stack.push(1);
        assert_eq!(stack.pop(), Some(1));
    }

    #[test]
    fn concurrent_pops_and_pushes_never_duplicate_an_index() {
        let stack = FreeStack::full(4);
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let seen: Vec<std::sync::atomic::AtomicBool> = (0..4)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..rounds {
                        if let Some(index) = stack.pop() {
                            let was = seen[index as usize]
                                .swap(true, std::sync::atomic::Ordering::SeqCst);
                            assert!(!was, "index {index} handed out twice");
                            seen[index as usize].store(false, std::sync::atomic::Ordering::SeqCst);
                            stack.push(index);
                        }
                    }
                });
            }
        });
        let mut all: Vec<u32> = core::iter::from_fn(|| stack.pop()).collect();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3]);
    }
}
