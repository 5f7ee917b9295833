//! Integration tests of mmap-alloc, one module per scenario they try to break.

mod allocator_contract;
mod bad_input;
mod fault_injection;
mod guard_page;
mod huge_reservation;
mod os_refusal;
mod page_source_programs;
mod region_alignment;
mod region_permissions;
mod region_residency;
mod remap_contents;
mod syscall_costs;
mod util;
