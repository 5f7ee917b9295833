//! Platform calls the portable code cannot express through `std` or `mio`.
//!
//! One documented function per operation; each states its preconditions and what the
//! OS guaranteed on success.

#[cfg(unix)]
mod unix;
#[cfg(target_os = "linux")]
pub(crate) use unix::take_ready_events;
#[cfg(unix)]
pub(crate) use unix::{MAX_TRANSFER_BYTES, MAX_WRITE_SLICES, has_default_action, read_into_uninit};

#[cfg(windows)]
mod ctrl_c;
#[cfg(windows)]
pub(crate) use ctrl_c::{CtrlCWatch, watch as watch_ctrl_c};
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{MAX_TRANSFER_BYTES, MAX_WRITE_SLICES, read_into_uninit};
