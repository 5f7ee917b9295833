//! Per-thread counts of the system calls this crate makes (feature `syscall-counters`),
//! so that tests can assert what each operation costs: an aligned reservation is one
//! `mmap` and at most two `munmap`s, a `realloc` is one `mremap`.
//!
//! On Windows the counters count the matching calls (`VirtualAlloc` reserving as `mmap`,
//! `VirtualFree` releasing as `munmap`, committing and `VirtualProtect` as `mprotect`,
//! decommitting as `madvise`), not the `VirtualQuery` look-ups that `sys/windows.rs`
//! makes to find the state of a range; an aligned reservation above 64 KiB is two
//! reservations and one release there (a probe, then the exact range), and as many
//! again each time another thread takes the address between the two.
//!
//! Counts are per thread so that tests running in parallel do not see each other's calls.
//! Without the feature, counting compiles to nothing and `snapshot` is absent.
//!
//! # Examples
//!
//! ```
//! # #[cfg(feature = "syscall-counters")] {
//! use pagekeep_mmap::{Region, syscall_counters};
//!
//! let before = syscall_counters::snapshot();
//! let region = Region::reserve_aligned(1 << 20, 1 << 20)?;
//! let cost = syscall_counters::snapshot().since(&before);
//! # #[cfg(windows)]
//! # assert_eq!(cost.mmap, 2 * cost.munmap);
//! # #[cfg(not(windows))]
//! assert_eq!(cost.mmap, 1);
//! assert!(cost.munmap <= 2);
//! # drop(region);
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```

/// A system call this crate makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "each platform makes a different subset of the calls"
)]
pub(crate) enum Syscall {
    Mmap,
    Munmap,
    Mprotect,
    Madvise,
    Mremap,
    Mbind,
    Mincore,
}

#[cfg(feature = "syscall-counters")]
mod enabled {
    use core::cell::Cell;

    use super::Syscall;

    const CALLS: usize = 7;

    std::thread_local! {
        static COUNTS: [Cell<u64>; CALLS] = const { [const { Cell::new(0) }; CALLS] };
    }

    #[inline]
    pub(crate) fn count(call: Syscall) {
        // `try_with`: a count during thread teardown is dropped rather than panicking.
        let _ = COUNTS.try_with(|counts| {
            let counter = &counts[call as usize];
            counter.set(counter.get() + 1);
        });
    }

    /// How many system calls of each kind the current thread has made through this crate.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SyscallCounts {
        /// `mmap` calls (reservations; on macOS also zeroing decommits).
        pub mmap: u64,
        /// `munmap` calls.
        pub munmap: u64,
        /// `mprotect` calls (commits and protection changes).
        pub mprotect: u64,
        /// `madvise` calls (decommits, huge-page advice, populate, core-dump exclusion).
        pub madvise: u64,
        /// `mremap` calls.
        pub mremap: u64,
        /// `mbind` calls.
        pub mbind: u64,
        /// `mincore` calls.
        pub mincore: u64,
    }

    impl SyscallCounts {
        /// The calls made between `earlier` and `self`.
        pub fn since(&self, earlier: &SyscallCounts) -> SyscallCounts {
            SyscallCounts {
                mmap: self.mmap - earlier.mmap,
                munmap: self.munmap - earlier.munmap,
                mprotect: self.mprotect - earlier.mprotect,
                madvise: self.madvise - earlier.madvise,
                mremap: self.mremap - earlier.mremap,
                mbind: self.mbind - earlier.mbind,
                mincore: self.mincore - earlier.mincore,
            }
        }

        /// All calls together.
        pub fn total(&self) -> u64 {
            self.mmap
                + self.munmap
                + self.mprotect
                + self.madvise
                + self.mremap
                + self.mbind
                + self.mincore
        }
    }

    /// The current thread's counts so far.
    pub fn snapshot() -> SyscallCounts {
        COUNTS
            .try_with(|counts| {
                let get = |call: Syscall| counts[call as usize].get();
                SyscallCounts {
                    mmap: get(Syscall::Mmap),
                    munmap: get(Syscall::Munmap),
                    mprotect: get(Syscall::Mprotect),
                    madvise: get(Syscall::Madvise),
                    mremap: get(Syscall::Mremap),
                    mbind: get(Syscall::Mbind),
                    mincore: get(Syscall::Mincore),
                }
            })
            .unwrap_or_default()
    }
}

#[cfg(feature = "syscall-counters")]
pub(crate) use enabled::count;
#[cfg(feature = "syscall-counters")]
pub use enabled::{SyscallCounts, snapshot};

#[cfg(not(feature = "syscall-counters"))]
#[inline(always)]
pub(crate) fn count(_call: Syscall) {}
