#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod allocator;
mod error;
#[cfg(feature = "fault-injection")]
mod fault;
mod region;
mod source;
pub mod sys;
pub mod syscall_counters;

pub use allocator::MmapAlloc;
pub use error::{Cause, Error, Operation, Result};
#[cfg(feature = "fault-injection")]
pub use fault::FailingSource;
pub use region::Region;
pub use source::{DefaultPages, HeapPages, OsPages, PageSource};
pub use sys::{Contents, Decommit, HugeMapping, HugePages, PageBacking, Placement, Protection};
