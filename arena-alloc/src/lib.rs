#![doc = include_str!("../README.md")]
#![cfg_attr(feature = "nightly", feature(allocator_api))]

mod allocator;
mod arena;
mod boxed;
mod checkpoint;
mod chunk;
mod config;
mod free_stack;
mod pool;
mod router;
mod spill;
mod stats;
mod sync;

pub use allocator_api2::alloc::AllocError;
pub use arena::Arena;
pub use boxed::ArenaBox;
pub use checkpoint::{Checkpoint, CheckpointError};
pub use config::ArenaConfig;
pub use pool::{AcquireFuture, ArenaPool, PoolConfig, PoolError, PooledArena, SlotPages};
pub use router::{ArenaGuard, ArenaRouter, MAX_POOLS, in_arena, outside_arena};
pub use stats::{ArenaStats, PoolStats};

/// The byte that feature `debug-poison` writes over freed and reset memory.
pub const POISON_BYTE: u8 = 0xDD;
