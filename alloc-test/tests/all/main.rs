//! The suite run against every allocator of the workspace and the controls, and against
//! deliberately broken adapters to show it catches them.

mod async_heap_programs;
mod broken_adapters;
mod controls;
mod fault_injection;
mod stress_runs;
mod workspace_allocators;
