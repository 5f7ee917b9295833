#![doc = include_str!("../README.md")]
#![cfg_attr(feature = "nightly", feature(allocator_api))]

mod allocator;
mod arena;
mod boxed;
mod capacity;
mod checkpoint;
mod chunk;
mod chunks;
mod config;
mod fill;
mod free_stack;
mod limit;
mod pin_scope;
mod pinned;
mod pool;
mod router;
mod spill;
mod stats;
mod string;
mod sync;
mod try_with;

pub use allocator_api2::alloc::AllocError;
pub use arena::Arena;
pub use boxed::ArenaBox;
pub use checkpoint::{Checkpoint, CheckpointError};
pub use chunks::AllocatedChunks;
pub use config::ArenaConfig;
pub use pin_scope::{PinScope, PinnedBox};
pub use pool::{
    AcquireFuture, ArenaGuard, ArenaPool, MAX_POOLS, PoolConfig, PoolError, PooledArena, SlotPages,
    in_arena, outside_arena,
};
pub use router::ArenaRouter;
pub use stats::{ArenaStats, PoolStats};
pub use string::ArenaString;
pub use try_with::AllocOrInitError;

/// The byte that feature `debug-poison` writes over freed and reset memory.
pub const POISON_BYTE: u8 = 0xDD;
