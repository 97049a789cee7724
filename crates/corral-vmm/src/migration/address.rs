//! Where a migration goes: `unix:PATH` or `tcp:IP:PORT`, and the connection to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a migration address; give unix:PATH or tcp:IP:PORT (e.g. tcp:127.0.0.1:7000)"
)]
pub struct BadAddress(String);

impl std::str::FromStr for Address {
    type Err = BadAddress;

    fn from_str(text: &str) -> Result<Address, BadAddress> {
        let bad = || BadAddress(text.to_owned());
        match text.split_once(':') {
            Some(("unix", path)) if !path.is_empty() => Ok(Address::Unix(PathBuf::from(path))),
            Some(("tcp", address)) => address.parse().map(Address::Tcp).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

/// A migration connection, either kind.
#[derive(Debug)]
pub enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Connection {
    pub fn connect(address: &Address) -> std::io::Result<Connection> {
        Ok(match address {
            Address::Unix(path) => Connection::Unix(UnixStream::connect(path)?),
            Address::Tcp(address) => {
                let stream = TcpStream::connect(address)?;
                // Page batches are large; the small control messages must not wait.
                stream.set_nodelay(true)?;
                Connection::Tcp(stream)
            }
        })
    }

    /// Listens at `address` and takes the first connection.
    pub fn accept_one(address: &Address) -> std::io::Result<Connection> {
        Ok(match address {
            Address::Unix(path) => {
                let listener = UnixListener::bind(path)?;
                // Only its owner may connect (the token is the other guard).
                std::fs::set_permissions(
                    path,
                    std::fs::Permissions::from_mode(corral_control::SOCKET_MODE),
                )?;
                let accepted = listener.accept();
                let _ = std::fs::remove_file(path);
                Connection::Unix(accepted?.0)
            }
            Address::Tcp(address) => {
                let (stream, _) = TcpListener::bind(address)?.accept()?;
                stream.set_nodelay(true)?;
                Connection::Tcp(stream)
            }
        })
    }

    /// A second handle on the same connection (e.g. to read in one thread and write in
    /// another).
    pub fn try_clone(&self) -> std::io::Result<Connection> {
        Ok(match self {
            Connection::Unix(stream) => Connection::Unix(stream.try_clone()?),
            Connection::Tcp(stream) => Connection::Tcp(stream.try_clone()?),
        })
    }

    /// Tells the peer nothing more comes from this end; it can still send.
    pub fn shutdown_write(&self) -> std::io::Result<()> {
        match self {
            Connection::Unix(stream) => stream.shutdown(std::net::Shutdown::Write),
            Connection::Tcp(stream) => stream.shutdown(std::net::Shutdown::Write),
        }
    }

    /// Read and write calls fail after `timeout` without progress.
    pub fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Connection::Unix(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))
            }
            Connection::Tcp(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))
            }
        }
    }
}

impl std::os::fd::AsRawFd for Connection {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Connection::Unix(stream) => stream.as_raw_fd(),
            Connection::Tcp(stream) => stream.as_raw_fd(),
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Unix(stream) => stream.read(buf),
            Connection::Tcp(stream) => stream.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Unix(stream) => stream.write(buf),
            Connection::Tcp(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for text in ["unix:/run/m.sock", "tcp:127.0.0.1:7000", "tcp:[::1]:7000"] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
        }
        for bad in [
            "m.sock",
            "unix:",
            "tcp:localhost:7000",
            "tcp:127.0.0.1",
            "udp:1:2",
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            assert!(
                err.to_string().contains("unix:PATH or tcp:IP:PORT"),
                "{err}"
            );
        }
    }
}
