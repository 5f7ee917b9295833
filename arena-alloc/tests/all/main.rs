//! Integration tests of arena-alloc, one module per topic.

mod arena_basics;
mod fault_injection;
mod grow_in_place;
mod limits;
mod model;
mod reset_and_checkpoints;
