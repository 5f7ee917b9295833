//! Integration tests of pagekeep-mmap, one module per scenario they try to break.
//!
//! In the workspace, the crate's dev-dependency on itself turns on `fault-injection` and
//! `syscall-counters`. A packaged copy (crates.io) has no such dev-dependency, as cargo
//! drops a path dependency without a version: the tests that need those features are
//! left out there (`cargo test --all-features` runs them).

mod allocator_contract;
mod bad_input;
mod decommit_keeps_protection;
#[cfg(feature = "fault-injection")]
mod fault_injection;
mod grow_to_stricter_alignment;
mod guard_page;
mod heap_reservation_too_large;
mod huge_pages_or_fallback;
mod huge_reservation;
mod numa_highest_node;
mod os_refusal;
mod page_source_programs;
mod partial_page_decommit;
mod populate_without_write_access;
mod realloc_in_place_provenance;
mod region_alignment;
mod region_permissions;
mod region_residency;
mod release_like_munmap;
mod remap_contents;
#[cfg(feature = "syscall-counters")]
mod syscall_costs;
mod util;
mod windows_contract_edges;
mod windows_pages;
