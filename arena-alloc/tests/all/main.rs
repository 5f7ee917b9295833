//! Integration tests of arena-alloc, one module per topic.

mod acquire_async;
mod arena_basics;
mod debug_aids;
mod escapes;
mod fault_injection;
mod grow_in_place;
mod limits;
mod model;
mod pool_leases;
mod reset_and_checkpoints;
mod router_routing;
