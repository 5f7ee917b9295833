//! Integration tests of pagekeep-arena, one module per topic.

#![cfg_attr(feature = "nightly", feature(allocator_api))]

mod acquire_async;
mod alloc_try_with;
mod arena_basics;
mod arena_string;
mod box_from_owned_value;
mod checkpoints_out_of_order;
mod chunk_iteration;
mod commit_step_of_usize_max;
mod debug_aids;
mod escapes;
mod fault_injection;
mod forgotten_guard_moved_lease;
mod grow_in_place;
mod limit_at_run_time;
mod limit_overrun_by_alignment_padding;
mod limits;
mod many_wakers_owed_by_routed_frees;
mod model;
#[cfg(feature = "nightly")]
mod nightly_allocator;
mod pinned_boxes;
mod pool_leases;
mod reset_and_checkpoints;
mod router_fast_free_attacks;
mod router_routing;
mod settings_at_their_extremes;
mod slice_fills;
mod spill_cap_counts_live_bytes;
mod stale_checkpoint_after_rewind;
mod user_code_allocating_in_the_same_arena;
mod waiters_and_routed_frees;
mod waiters_of_every_kind_in_one_queue;
mod wakers_dropped_under_the_pool_lock;
mod with_capacity;
mod zero_sized_requests_need_no_memory;
