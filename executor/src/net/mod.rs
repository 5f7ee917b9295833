//! Non-blocking TCP on the worker reactors.

mod listener;
mod stream;

pub use listener::TcpListener;
pub use stream::TcpStream;
