//! The error of every page operation.
//!
//! [`Error`] is `Copy` and never allocates, because it is created on the failure paths of
//! allocators (a global allocator that allocated while reporting "out of memory" would
//! recurse into itself). It converts into [`std::io::Error`] with its context kept, so
//! code that works in `io::Result` can use `?` on it.

use core::fmt;
use std::io;

/// The page operation that failed: one per function of [`crate::sys`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Reserving address space.
    Reserve,
    /// Making reserved pages readable and writable.
    Commit,
    /// Giving pages' physical memory back to the OS.
    Decommit,
    /// Returning address space to the OS.
    Release,
    /// Changing the access permissions of pages.
    Protect,
    /// Advising the OS about transparent huge pages.
    AdviseHugePages,
    /// Pre-faulting pages.
    Populate,
    /// Binding pages to a NUMA node.
    BindNuma,
    /// Excluding pages from core dumps.
    ExcludeFromCoreDump,
    /// Moving or resizing a mapping.
    Remap,
    /// Asking which pages are resident.
    Residency,
}

impl Operation {
    /// The system call (or the library function, under miri) behind the operation.
    #[cfg(not(all(windows, not(miri))))]
    pub fn call_name(self) -> &'static str {
        match self {
            Operation::Reserve => "mmap",
            Operation::Commit | Operation::Protect => "mprotect",
            Operation::Decommit
            | Operation::AdviseHugePages
            | Operation::Populate
            | Operation::ExcludeFromCoreDump => "madvise",
            Operation::Release => "munmap",
            Operation::BindNuma => "mbind",
            Operation::Remap => "mremap",
            Operation::Residency => "mincore",
        }
    }

    /// The Windows function behind the operation (none for those Windows cannot do).
    #[cfg(all(windows, not(miri)))]
    pub fn call_name(self) -> &'static str {
        match self {
            Operation::Reserve | Operation::Commit | Operation::Remap => "VirtualAlloc",
            Operation::Decommit | Operation::Release => "VirtualFree",
            Operation::Protect => "VirtualProtect",
            Operation::AdviseHugePages => "(large pages are chosen when reserving)",
            Operation::Populate => "(a write to each page)",
            Operation::BindNuma => "VirtualAllocExNuma",
            Operation::ExcludeFromCoreDump => "(no Windows equivalent)",
            Operation::Residency => "QueryWorkingSetEx",
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// The OS refused, with this `errno`.
    Os(i32),
    /// The arguments break a documented precondition (zero size, unaligned address,
    /// alignment not a power of two, a size that overflows when rounded to pages, a range
    /// outside its region). Nothing was asked of the OS.
    InvalidInput(&'static str),
    /// This platform (or miri) cannot do the operation.
    Unsupported(&'static str),
    /// A fault-injecting page source failed the request on purpose.
    Injected,
}

/// A failed page operation: what was asked, on which range, and why it failed.
///
/// # Examples
///
/// ```
/// use pagekeep_mmap::{sys, Cause};
///
/// // A zero-sized reservation is refused before any system call is made.
/// let error = sys::reserve(0).unwrap_err();
/// assert!(matches!(error.cause(), Cause::InvalidInput(_)));
/// let io: std::io::Error = error.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    operation: Operation,
    cause: Cause,
    address: usize,
    len: usize,
}

impl Error {
    /// An error of `operation` on `len` bytes at `address` (0 when there was none yet).
    pub const fn new(operation: Operation, cause: Cause, address: usize, len: usize) -> Self {
        Error {
            operation,
            cause,
            address,
            len,
        }
    }

    /// The error for the `errno` the last system call left behind.
    #[cfg_attr(
        miri,
        allow(dead_code, reason = "the miri stand-in makes no system calls")
    )]
    pub(crate) fn last_os_error(operation: Operation, address: usize, len: usize) -> Self {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Error::new(operation, Cause::Os(errno), address, len)
    }

    /// A precondition the caller broke.
    pub(crate) const fn invalid(
        operation: Operation,
        why: &'static str,
        address: usize,
        len: usize,
    ) -> Self {
        Error::new(operation, Cause::InvalidInput(why), address, len)
    }

    /// The operation that failed.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// Why it failed.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// The address of the range (0 when the operation had none, as for a reservation).
    pub fn address(&self) -> usize {
        self.address
    }

    /// The length in bytes of the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range was empty (a zero-size request).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The OS error number, when the OS refused.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self.cause {
            Cause::Os(errno) => Some(errno),
            _ => None,
        }
    }

    /// The [`io::ErrorKind`] this error maps to.
    pub fn kind(&self) -> io::ErrorKind {
        match self.cause {
            Cause::Os(errno) => io::Error::from_raw_os_error(errno).kind(),
            Cause::InvalidInput(_) => io::ErrorKind::InvalidInput,
            Cause::Unsupported(_) => io::ErrorKind::Unsupported,
            Cause::Injected => io::ErrorKind::OutOfMemory,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}) of {} bytes at {:#x} failed: ",
            self.operation.call_name(),
            self.operation,
            self.len,
            self.address
        )?;
        match self.cause {
            Cause::Os(errno) => write!(f, "{}", io::Error::from_raw_os_error(errno)),
            Cause::InvalidInput(why) => write!(f, "invalid input: {why}"),
            Cause::Unsupported(why) => write!(f, "unsupported: {why}"),
            Cause::Injected => f.write_str("failure injected by the page source"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    /// Keeps the kind (and so `ENOMEM` stays `OutOfMemory`) and the context as the message.
    fn from(error: Error) -> io::Error {
        io::Error::new(error.kind(), error)
    }
}

/// Shorthand for results of page operations.
pub type Result<T, E = Error> = core::result::Result<T, E>;
