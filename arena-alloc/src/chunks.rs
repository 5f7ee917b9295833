//! [`Arena::iter_allocated_chunks`]: the used bytes of every chunk.

use core::fmt;
use core::iter::FusedIterator;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use pagekeep_mmap::PageSource;

use crate::arena::Arena;
use crate::chunk::Chunk;

impl<S: PageSource, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    /// The bytes the arena has handed out since the last reset, chunk by chunk: for each
    /// chunk that holds allocations, one slice from the start of its data to the end of
    /// its last allocation. Ordinary chunks come first, newest (the one being bumped
    /// through) first, then the dedicated chunks of oversize requests, newest first; a
    /// chunk retired empty gives an empty slice.
    ///
    /// Within a chunk the arena bumps upwards, so allocations appear in the order they
    /// were made, with the padding that aligned them between them. Bytes are
    /// `MaybeUninit<u8>`: padding, and room that was never written (a
    /// [`try_alloc_uninit`](Arena::try_alloc_uninit), a `Vec`'s spare capacity), are
    /// uninitialised, so they can be copied but not read as `u8` without knowing the
    /// layout.
    ///
    /// # Why this is sound
    ///
    /// Taking `&mut self` proves that no reference, box or collection into the arena is
    /// alive (each borrows the arena), so the shared slices alias no `&mut`; and while
    /// they are borrowed the arena can neither allocate nor free, so the bytes do not
    /// change under them. (Writing through a raw pointer from
    /// [`alloc_layout`](Arena::alloc_layout) while the slices are borrowed is undefined
    /// behaviour, as with any shared reference.) A pool lease only gives `&Arena`, so the
    /// arena of a lease, which routed allocations may still point into, cannot be walked.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let mut arena = Arena::new();
    /// arena.alloc_slice_copy(b"hello, ");
    /// arena.alloc_str("chunks");
    /// let mut bytes = Vec::new();
    /// for chunk in arena.iter_allocated_chunks() {
    ///     // SAFETY: only byte slices and strings were allocated: no padding, all written.
    ///     bytes.extend(chunk.iter().map(|byte| unsafe { byte.assume_init() }));
    /// }
    /// assert_eq!(bytes, b"hello, chunks");
    /// ```
    pub fn iter_allocated_chunks(&mut self) -> AllocatedChunks<'_> {
        let (current, bump, oversize) = self.chunk_lists();
        AllocatedChunks {
            ordinary: current,
            bump: current.map(|_| bump),
            oversize,
            _arena: PhantomData,
        }
    }
}

/// The iterator of [`Arena::iter_allocated_chunks`]: the used bytes of each chunk, while
/// the arena is borrowed mutably.
pub struct AllocatedChunks<'a> {
    /// The next ordinary chunk to yield.
    ordinary: Option<Chunk>,
    /// The arena's bump pointer, which ends the used part of the first ordinary chunk;
    /// `None` once that chunk was yielded (the others recorded their used end).
    bump: Option<NonNull<u8>>,
    /// The next oversize chunk to yield, once the ordinary ones are done.
    oversize: Option<Chunk>,
    /// The arena, borrowed mutably for as long as the slices.
    _arena: PhantomData<&'a mut ()>,
}

impl<'a> Iterator for AllocatedChunks<'a> {
    type Item = &'a [MaybeUninit<u8>];

    fn next(&mut self) -> Option<Self::Item> {
        let (chunk, used_end) = if let Some(chunk) = self.ordinary {
            self.ordinary = chunk.older();
            let used_end = match self.bump.take() {
                Some(bump) => bump.addr().get(),
                None => chunk.used_end(),
            };
            (chunk, used_end)
        } else {
            let chunk = self.oversize?;
            self.oversize = chunk.older();
            (chunk, chunk.used_end())
        };
        let data = chunk.data_start();
        let len = used_end - data.addr().get();
        // SAFETY: `data..used_end` is the committed part of a live chunk that holds the
        // arena's allocations (the bump pointer and the recorded used ends never pass the
        // committed end); the arena is borrowed mutably for `'a`, so no reference into it
        // is alive and none can be made, nor can the chunk be released (see
        // `Arena::iter_allocated_chunks`). `MaybeUninit<u8>` accepts any byte.
        Some(unsafe { core::slice::from_raw_parts(data.cast().as_ptr(), len) })
    }
}

impl FusedIterator for AllocatedChunks<'_> {}

impl fmt::Debug for AllocatedChunks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocatedChunks")
            .field("ordinary", &self.ordinary.map(|chunk| chunk.base()))
            .field("oversize", &self.oversize.map(|chunk| chunk.base()))
            .finish_non_exhaustive()
    }
}
