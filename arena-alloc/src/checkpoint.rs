//! [`Checkpoint`]: a mark of an arena's allocation state to rewind to.

use core::fmt;

/// A mark taken by [`Arena::checkpoint`](crate::Arena::checkpoint): rewinding to it
/// frees everything allocated after it. Checkpoints are plain data; rewinding checks
/// that one belongs to the arena and is still reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub(crate) arena_id: u64,
    pub(crate) epoch: u64,
    pub(crate) chunks: usize,
    /// The serial of the current ordinary chunk (0: none yet).
    pub(crate) chunk_serial: u64,
    /// The serial of the newest oversize chunk (0: none).
    pub(crate) oversize_serial: u64,
    pub(crate) address: usize,
    pub(crate) oversize_chunks: usize,
    pub(crate) retired_bytes: usize,
}

/// Why a rewind was refused; the arena is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint was taken on another arena.
    OtherArena,
    /// The arena was reset after the checkpoint was taken.
    Stale,
    /// The arena was rewound to an earlier point since (the checkpoint's state is gone,
    /// even if the arena has grown back to the same size): the mark is not on the path
    /// from the arena's start to its current state.
    Ahead,
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointError::OtherArena => "checkpoint belongs to another arena",
            CheckpointError::Stale => "arena was reset after the checkpoint",
            CheckpointError::Ahead => "arena was rewound past the checkpoint",
        })
    }
}

impl std::error::Error for CheckpointError {}
