//! Non-blocking TCP (and, on Unix, Unix domain sockets) on the worker reactors.

mod io_traits;
mod listener;
mod resolve;
mod socket;
mod split;
mod stream;
#[cfg(unix)]
pub(crate) mod unix;

pub use listener::TcpListener;
pub use resolve::ToSocketAddrs;
pub use socket::Socket;
pub use split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, WriteHalf};
pub use stream::TcpStream;
#[cfg(unix)]
pub use unix::{UnixListener, UnixStream};
