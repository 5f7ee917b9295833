//! Adapters that put allocators behind [`Subject`](crate::Subject): one per allocator
//! interface (`GlobalAlloc`, `allocator_api2::Allocator`) and one per allocator with
//! extra abilities (reset, checkpoints).

mod allocator;
mod bump;
mod global;

pub use allocator::AllocatorSubject;
pub use bump::BumpaloSubject;
pub use global::GlobalSubject;
