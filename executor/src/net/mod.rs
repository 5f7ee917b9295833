//! Non-blocking TCP (and, on Unix, Unix domain sockets) on the worker reactors.

mod io_traits;
mod listener;
mod resolve;
mod split;
mod stream;

pub use listener::TcpListener;
pub use resolve::ToSocketAddrs;
pub use split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, WriteHalf};
pub use stream::TcpStream;
