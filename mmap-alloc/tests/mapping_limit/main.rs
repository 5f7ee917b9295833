//! At the process's mapping-count limit (`vm.max_map_count`) Linux refuses to unmap the
//! middle of a mapping (the split would need one mapping more). What the crate must do
//! there: note such a range and release it once it no longer lies inside a mapping
//! (`deferred`), never take back the room a free made while a range waits (`room`), and
//! shrink a block in place all the same (`shrink`).
//!
//! Its own binary, without the test harness: it fills the process's mappings to the
//! limit, which would make any test running beside it fail to allocate. The parts run
//! one after the other, each leaving the process below the limit and nothing noted.
//!
//! Linux's default limit is 65,530; some distributions raise it to about a million
//! (for games and databases). Above [`MOST_MAPPINGS_FILLED`] the test is skipped, with a
//! line that says so: holding a million mappings at once takes hundreds of megabytes
//! of kernel records and minutes, and shows nothing a lower limit does not.

#[cfg(all(target_os = "linux", not(miri)))]
mod at_the_limit;
#[cfg(all(target_os = "linux", not(miri)))]
mod deferred;
#[cfg(all(target_os = "linux", not(miri)))]
mod room;
#[cfg(all(target_os = "linux", not(miri)))]
mod shrink;

/// The highest `vm.max_map_count` the test fills the process to (four times Linux's
/// default).
#[cfg(all(target_os = "linux", not(miri)))]
const MOST_MAPPINGS_FILLED: usize = 262_144;

fn main() {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        let limit = at_the_limit::limit();
        if limit > MOST_MAPPINGS_FILLED {
            println!(
                "mapping_limit: skipped: vm.max_map_count is {limit}, above the \
                 {MOST_MAPPINGS_FILLED} mappings this test fills the process to"
            );
            return;
        }
        deferred::refused_releases_wait_for_a_neighbour_and_go_after_it();
        room::a_free_keeps_its_room_while_a_range_waits();
        shrink::a_shrink_in_place_at_the_limit_returns_the_block();
        println!("mapping_limit: 3 parts passed");
    }
}
