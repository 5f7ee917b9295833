//! Helpers shared by the test modules.

use core::ptr::NonNull;

/// Runs `operation` and, where the crate counts system calls (feature
/// `syscall-counters`), asserts that it made none.
pub fn without_syscalls<T>(operation: impl FnOnce() -> T) -> T {
    #[cfg(feature = "syscall-counters")]
    {
        let before = pagekeep_mmap::syscall_counters::snapshot();
        let result = operation();
        let cost = pagekeep_mmap::syscall_counters::snapshot().since(&before);
        assert_eq!(cost.total(), 0, "{cost:?}");
        result
    }
    #[cfg(not(feature = "syscall-counters"))]
    operation()
}

/// The permission string (`rw-p`, `---p`, ...) of the mapping that holds `ptr`, read from
/// `/proc/self/maps`.
#[cfg(all(target_os = "linux", not(miri)))]
pub fn permissions_at(ptr: NonNull<u8>) -> String {
    let address = ptr.addr().get();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let range = fields.next().expect("address range");
        let perms = fields.next().expect("permissions");
        let (start, end) = range.split_once('-').expect("start-end");
        let start = usize::from_str_radix(start, 16).expect("hex start");
        let end = usize::from_str_radix(end, 16).expect("hex end");
        if (start..end).contains(&address) {
            return perms.to_owned();
        }
    }
    panic!("{address:#x} is not mapped");
}

/// Writes a pattern derived from `seed` over `len` bytes.
///
/// # Safety
/// `ptr..ptr + len` is writable.
pub unsafe fn fill(ptr: NonNull<u8>, len: usize, seed: u8) {
    for offset in 0..len {
        // SAFETY: inside the writable range (caller).
        unsafe { ptr.add(offset).write(pattern(offset, seed)) };
    }
}

/// Checks the pattern written by [`fill`]; returns the first offset that differs.
///
/// # Safety
/// `ptr..ptr + len` is readable.
pub unsafe fn first_mismatch(ptr: NonNull<u8>, len: usize, seed: u8) -> Option<usize> {
    // SAFETY: inside the readable range (caller).
    (0..len).find(|&offset| unsafe { ptr.add(offset).read() } != pattern(offset, seed))
}

fn pattern(offset: usize, seed: u8) -> u8 {
    (offset as u8).wrapping_mul(31).wrapping_add(seed) ^ (offset >> 12) as u8
}

/// Runs `child` in a forked process and returns how it ended: `Ok(exit code)` or
/// `Err(signal)`. The child must not allocate (the parent may have other threads).
#[cfg(all(target_os = "linux", not(miri)))]
pub fn in_child(child: impl FnOnce() -> i32) -> Result<i32, i32> {
    // SAFETY: the child runs only `child`, which the caller keeps to async-signal-safe
    // work, then leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = child();
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFSIGNALED(status) {
        Err(libc::WTERMSIG(status))
    } else {
        Ok(libc::WEXITSTATUS(status))
    }
}

/// `(state, protection of committed pages or 0, reservation base)` of the page at `ptr`,
/// read back with `VirtualQuery`.
#[cfg(all(windows, not(miri)))]
pub fn page_state(ptr: NonNull<u8>) -> (u32, u32, usize) {
    use windows_sys::Win32::System::Memory::{MEM_COMMIT, MEMORY_BASIC_INFORMATION, VirtualQuery};
    // SAFETY: plain data; all zeros is a valid value.
    let mut info: MEMORY_BASIC_INFORMATION = unsafe { core::mem::zeroed() };
    // SAFETY: the query only reads the address space; `info` is valid for writes.
    let written = unsafe {
        VirtualQuery(
            ptr.as_ptr().cast(),
            &mut info,
            size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    assert_ne!(written, 0, "VirtualQuery of {ptr:p}");
    let protect = if info.State == MEM_COMMIT {
        info.Protect
    } else {
        0
    };
    (info.State, protect, info.AllocationBase.addr())
}
