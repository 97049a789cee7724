//! How the host reaches an agent: a unix socket (a system container's, bind-mounted out of it), or
//! a VM's vsock port through the VMM's unix socket (Firecracker's scheme: `CONNECT <port>\n`,
//! answered `OK <host port>\n` once the guest accepted).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::time::TimeVal;

use super::timed::TimedReader;
use super::ClientError;

/// The longest answer to `CONNECT` accepted.
const MAX_CONNECT_ANSWER: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The agent's own unix socket.
    Unix(PathBuf),
    /// A VM's vsock `port`, through the VMM's host-side unix `socket`.
    Vsock { socket: PathBuf, port: u32 },
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "{}", path.display()),
            Self::Vsock { socket, port } => write!(f, "vsock port {port} via {}", socket.display()),
        }
    }
}

impl Transport {
    /// A connected stream to the agent; everything within `timeout`.
    pub fn connect(&self, timeout: Duration) -> Result<UnixStream, ClientError> {
        let deadline = Instant::now() + timeout;
        let failed = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ClientError::TimedOut(timeout)
            }
            _ => ClientError::Connect {
                target: self.to_string(),
                source,
            },
        };
        match self {
            Self::Unix(path) => connect_unix(path, timeout).map_err(failed),
            Self::Vsock { socket, port } => {
                let mut stream = connect_unix(socket, timeout).map_err(failed)?;
                stream
                    .write_all(format!("CONNECT {port}\n").as_bytes())
                    .map_err(failed)?;
                let answer = read_line(&mut stream, deadline).map_err(failed)?;
                if !is_ok_answer(&answer) {
                    return Err(ClientError::VsockRefused {
                        port: *port,
                        answer: String::from_utf8_lossy(&answer).into_owned(),
                    });
                }
                Ok(stream)
            }
        }
    }
}

/// `connect(2)` on a unix socket, bounded by `timeout` (a listener whose backlog is full would
/// otherwise block it), with the stream's reads and writes bounded the same way.
fn connect_unix(path: &std::path::Path, timeout: Duration) -> std::io::Result<UnixStream> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let limit = TimeVal::new(timeout.as_secs() as i64, i64::from(timeout.subsec_micros()));
    socket::setsockopt(&fd, sockopt::SendTimeout, &limit)?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &limit)?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(fd))
}

/// One line (without its newline), at most [`MAX_CONNECT_ANSWER`] bytes, by `deadline`.
fn read_line(stream: &mut UnixStream, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut reader = TimedReader::until(stream, deadline);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_CONNECT_ANSWER {
        reader.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            return Ok(line);
        }
        line.push(byte[0]);
    }
    Ok(line)
}

/// `OK <decimal port>`.
fn is_ok_answer(line: &[u8]) -> bool {
    line.strip_prefix(b"OK ")
        .is_some_and(|port| !port.is_empty() && port.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ok_and_a_port_accepts_a_vsock_connection() {
        assert!(is_ok_answer(b"OK 1073741824"));
        assert!(!is_ok_answer(b"OK "));
        assert!(!is_ok_answer(b"OK 12x"));
        assert!(!is_ok_answer(b"ERR"));
    }
}
