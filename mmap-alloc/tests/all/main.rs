//! Integration tests of pagekeep-mmap, one module per scenario they try to break.

mod allocator_contract;
mod bad_input;
mod decommit_keeps_protection;
mod fault_injection;
mod grow_to_stricter_alignment;
mod guard_page;
mod heap_reservation_too_large;
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
mod syscall_costs;
mod util;
