//! Addresses for [`TcpStream::connect`](crate::net::TcpStream::connect): socket
//! addresses as they are, host names resolved on the blocking pool so that a slow
//! resolver (`getaddrinfo` may wait seconds on DNS) never stalls a worker.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// What [`TcpStream::connect`](crate::net::TcpStream::connect) accepts: a
/// [`SocketAddr`] (or an IP address and port), a slice of them, or a host name with a
/// port: `"localhost:8080"`, `("example.com", 80)`, `"[::1]:80"`. Literal addresses are
/// parsed on the spot; a name is resolved with the system's resolver on the runtime's
/// blocking pool, off the worker.
///
/// The trait is sealed: its implementations are the ones listed here.
pub trait ToSocketAddrs: sealed::Sealed {}

/// A target either known already or still to be resolved.
#[derive(Debug)]
pub enum Target {
    /// Addresses to try, in order.
    Resolved(Vec<SocketAddr>),
    /// A host name (not an IP literal) and a port, for the resolver.
    Name(String, u16),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resolved(addresses) if addresses.len() == 1 => write!(f, "{}", addresses[0]),
            Self::Resolved(addresses) => write!(f, "{addresses:?}"),
            Self::Name(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

mod sealed {
    use std::io;

    /// Turns the value into a [`Target`](super::Target).
    pub trait Sealed {
        /// # Errors
        /// A string that is neither `host:port` nor a socket address, or a port that
        /// is not a number from 0 to 65535: [`io::ErrorKind::InvalidInput`].
        fn to_target(&self) -> io::Result<super::Target>;
    }
}

fn one(address: SocketAddr) -> io::Result<Target> {
    Ok(Target::Resolved(vec![address]))
}

fn host_and_port(host: &str, port: u16) -> Target {
    // An IP literal needs no resolver (nor a trip to the blocking pool).
    let bare = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Target::Resolved(vec![SocketAddr::new(ip, port)]),
        Err(_) => Target::Name(host.to_owned(), port),
    }
}

impl ToSocketAddrs for SocketAddr {}
impl sealed::Sealed for SocketAddr {
    fn to_target(&self) -> io::Result<Target> {
        one(*self)
    }
}

impl ToSocketAddrs for SocketAddrV4 {}
impl sealed::Sealed for SocketAddrV4 {
    fn to_target(&self) -> io::Result<Target> {
        one(SocketAddr::V4(*self))
    }
}

impl ToSocketAddrs for SocketAddrV6 {}
impl sealed::Sealed for SocketAddrV6 {
    fn to_target(&self) -> io::Result<Target> {
        one(SocketAddr::V6(*self))
    }
}

impl ToSocketAddrs for (IpAddr, u16) {}
impl sealed::Sealed for (IpAddr, u16) {
    fn to_target(&self) -> io::Result<Target> {
        one(SocketAddr::new(self.0, self.1))
    }
}

impl ToSocketAddrs for (Ipv4Addr, u16) {}
impl sealed::Sealed for (Ipv4Addr, u16) {
    fn to_target(&self) -> io::Result<Target> {
        one(SocketAddr::new(IpAddr::V4(self.0), self.1))
    }
}

impl ToSocketAddrs for (Ipv6Addr, u16) {}
impl sealed::Sealed for (Ipv6Addr, u16) {
    fn to_target(&self) -> io::Result<Target> {
        one(SocketAddr::new(IpAddr::V6(self.0), self.1))
    }
}

impl ToSocketAddrs for &[SocketAddr] {}
impl sealed::Sealed for &[SocketAddr] {
    fn to_target(&self) -> io::Result<Target> {
        Ok(Target::Resolved(self.to_vec()))
    }
}

impl ToSocketAddrs for (&str, u16) {}
impl sealed::Sealed for (&str, u16) {
    fn to_target(&self) -> io::Result<Target> {
        Ok(host_and_port(self.0, self.1))
    }
}

impl ToSocketAddrs for (String, u16) {}
impl sealed::Sealed for (String, u16) {
    fn to_target(&self) -> io::Result<Target> {
        Ok(host_and_port(&self.0, self.1))
    }
}

impl ToSocketAddrs for str {}
impl sealed::Sealed for str {
    fn to_target(&self) -> io::Result<Target> {
        if let Ok(address) = self.parse::<SocketAddr>() {
            return one(address);
        }
        let invalid = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self:?} is not host:port (a port from 0 to 65535)"),
            )
        };
        let (host, port) = self.rsplit_once(':').ok_or_else(invalid)?;
        let port = port.parse::<u16>().map_err(|_| invalid())?;
        if host.is_empty() {
            return Err(invalid());
        }
        Ok(host_and_port(host, port))
    }
}

impl ToSocketAddrs for &str {}
impl sealed::Sealed for &str {
    fn to_target(&self) -> io::Result<Target> {
        (**self).to_target()
    }
}

impl ToSocketAddrs for String {}
impl sealed::Sealed for String {
    fn to_target(&self) -> io::Result<Target> {
        self.as_str().to_target()
    }
}

impl ToSocketAddrs for &String {}
impl sealed::Sealed for &String {
    fn to_target(&self) -> io::Result<Target> {
        self.as_str().to_target()
    }
}

/// The target `address` names, without resolving anything yet.
///
/// # Errors
/// An unparsable address: [`io::ErrorKind::InvalidInput`].
pub(crate) fn target<A: ToSocketAddrs + ?Sized>(address: &A) -> io::Result<Target> {
    sealed::Sealed::to_target(address)
}

/// The addresses `target` stands for, resolving a name on the blocking pool.
///
/// # Errors
/// A name the resolver does
/// not know, or that has no address: an error naming the host. Outside a runtime, a
/// name cannot be resolved (no blocking pool): [`io::ErrorKind::Other`].
pub(crate) async fn resolve(target: Target) -> io::Result<(Target, Vec<SocketAddr>)> {
    let (host, port) = match &target {
        Target::Resolved(addresses) => {
            let addresses = addresses.clone();
            return Ok((target, addresses));
        }
        Target::Name(host, port) => (host.clone(), *port),
    };
    let handle = crate::Handle::try_current()
        .map_err(|error| io::Error::other(format!("cannot resolve {target}: {error}")))?;
    let looked_up = handle
        .spawn_blocking(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .map(Iterator::collect::<Vec<_>>)
        })
        .await
        .map_err(|error| io::Error::other(format!("cannot resolve {target}: {error}")))?;
    match looked_up {
        Ok(addresses) if addresses.is_empty() => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{target} resolved to no address"),
        )),
        Ok(addresses) => Ok((target, addresses)),
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!("cannot resolve {target}: {error}"),
        )),
    }
}
