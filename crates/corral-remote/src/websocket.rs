//! The API's websockets (an instance's exec and console) over the client's TLS: the same pinned
//! server and client certificate as its HTTP calls. After the handshake the socket does not
//! block, so one thread relays both ways: it takes what has arrived ([`WebSocket::receive`]),
//! sends ([`WebSocket::send`]), and waits in `poll` for the socket or its own input
//! ([`WebSocket::wait`]).

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde_json::Value;
use tungstenite::handshake::HandshakeError;
use tungstenite::Message;

use crate::{Client, RemoteError};

/// How long the TLS and websocket handshakes may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// What came from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    /// The server closed the websocket.
    Closed,
}

/// A websocket to the remote's API.
pub struct WebSocket {
    socket: tungstenite::WebSocket<Tls>,
    /// The request, for messages.
    what: String,
    /// Sent messages wait in the socket's buffer for the connection to take them.
    unsent: bool,
}

impl Client {
    /// Opens the websocket at `GET PATH`; a refusal (an instance that does not run, say) is the
    /// server's sentence.
    pub fn websocket(&self, path: &str) -> Result<WebSocket, RemoteError> {
        let what = format!("GET {path}");
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| RemoteError::WebSocket {
            what: what.clone(),
            address: self.address.clone(),
            source,
        };
        let name =
            server_name(&self.address).ok_or_else(|| RemoteError::Address(self.address.clone()))?;
        let tcp = connect(&self.address).map_err(|err| failed(err.into()))?;
        (tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT)))
            .and_then(|()| tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
            .map_err(|err| failed(err.into()))?;
        let connection =
            ClientConnection::new(Arc::clone(&self.tls), name).map_err(RemoteError::Tls)?;
        let url = format!("wss://{}{path}", self.address);
        let socket = match tungstenite::client(url, StreamOwned::new(connection, tcp)) {
            Ok((socket, _)) => socket,
            Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let answer: Value = (response.body().as_deref())
                    .and_then(|body| serde_json::from_slice(body).ok())
                    .unwrap_or_default();
                let message = match answer["error"].as_str() {
                    Some(message) => message.to_owned(),
                    None => format!("the remote refused {what} with status {status}"),
                };
                return Err(RemoteError::Refused { status, message });
            }
            Err(HandshakeError::Failure(err)) => return Err(failed(err.into())),
            Err(HandshakeError::Interrupted(_)) => {
                let timed_out = std::io::Error::from(ErrorKind::TimedOut);
                return Err(failed(timed_out.into()));
            }
        };
        socket
            .get_ref()
            .sock
            .set_nonblocking(true)
            .map_err(|err| failed(err.into()))?;
        Ok(WebSocket {
            socket,
            what,
            unsent: false,
        })
    }
}

/// A TCP connection to `address` (`HOST:PORT`), each of its addresses tried in turn.
fn connect(address: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(ErrorKind::NotFound, "the name has no address");
    for candidate in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&candidate, crate::client::CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// The host of `HOST:PORT` (or `[V6]:PORT`) as TLS names the server (a name or an address;
/// the pinned fingerprint, not the name, is what is checked).
fn server_name(address: &str) -> Option<ServerName<'static>> {
    let (host, _) = address.rsplit_once(':')?;
    let host = (host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))).unwrap_or(host);
    ServerName::try_from(host.to_owned()).ok()
}

/// True for the error a socket that does not block gives when it has nothing now.
fn would_block(err: &tungstenite::Error) -> bool {
    matches!(err, tungstenite::Error::Io(io) if io.kind() == ErrorKind::WouldBlock)
}

impl WebSocket {
    fn broke(&self, source: tungstenite::Error) -> RemoteError {
        RemoteError::Stream {
            what: self.what.clone(),
            source: Box::new(source),
        }
    }

    /// The next message that has arrived, `None` when none has (yet).
    pub fn receive(&mut self) -> Result<Option<Incoming>, RemoteError> {
        loop {
            return match self.socket.read() {
                Ok(Message::Text(text)) => Ok(Some(Incoming::Text(text.as_str().to_owned()))),
                Ok(Message::Binary(bytes)) => Ok(Some(Incoming::Binary(bytes.to_vec()))),
                // Pings are answered by the read itself.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => {
                    // The answering close goes out now if it can; the server is done anyway.
                    let _ = self.socket.flush();
                    Ok(Some(Incoming::Closed))
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    Ok(Some(Incoming::Closed))
                }
                Err(err) if would_block(&err) => Ok(None),
                Err(err) => Err(self.broke(err)),
            };
        }
    }

    /// Sends `message`, or leaves it to go out from [`WebSocket::wait`] when the connection
    /// takes no more now.
    fn send(&mut self, message: Message) -> Result<(), RemoteError> {
        match self.socket.send(message) {
            Ok(()) => self.unsent = false,
            Err(err) if would_block(&err) => self.unsent = true,
            Err(err) => return Err(self.broke(err)),
        }
        Ok(())
    }

    pub fn send_text(&mut self, text: String) -> Result<(), RemoteError> {
        self.send(Message::text(text))
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), RemoteError> {
        self.send(Message::binary(bytes))
    }

    /// Closes the websocket from this side, once what was sent before has gone out (waiting
    /// for the connection as long as a handshake may take): the last call on it.
    pub fn close(&mut self) -> Result<(), RemoteError> {
        let blocking = self.socket.get_ref().sock.set_nonblocking(false);
        blocking.map_err(|err| self.broke(err.into()))?;
        match self.socket.close(None) {
            Ok(()) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {}
            Err(err) => return Err(self.broke(err)),
        }
        self.unsent = false;
        Ok(())
    }

    /// Waits until the server may have sent something, or `input` can be read (only while
    /// nothing waits to be sent: a server that takes no more holds the input up rather than
    /// this process's memory), or `timeout` passes. Returns whether `input` can be read.
    /// Call it only once [`WebSocket::receive`] has returned `None`: what has already arrived
    /// does not wake it.
    pub fn wait(
        &mut self,
        input: Option<BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> Result<bool, RemoteError> {
        if self.unsent {
            match self.socket.flush() {
                Ok(()) => self.unsent = false,
                Err(err) if would_block(&err) => {}
                Err(err) => return Err(self.broke(err)),
            }
        }
        let stream = self.socket.get_ref();
        let mut interest = PollFlags::POLLIN;
        if self.unsent || stream.conn.wants_write() {
            interest |= PollFlags::POLLOUT;
        }
        let mut fds = vec![PollFd::new(stream.sock.as_fd(), interest)];
        if let Some(input) = input.filter(|_| !self.unsent) {
            fds.push(PollFd::new(input, PollFlags::POLLIN));
        }
        let timeout = match timeout {
            Some(timeout) => PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(err) => return Err(self.broke(std::io::Error::from(err).into())),
        }
        // Hang-ups and errors count as readable: the read then says what happened.
        Ok(fds.get(1).is_some_and(|fd| fd.any().unwrap_or(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_named_by_its_host_whatever_the_address_form() {
        let name = |address| server_name(address).map(|name| name.to_str().into_owned());
        assert_eq!(name("127.0.0.1:8443").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(
            name("srv.example.org:8443").as_deref(),
            Some("srv.example.org")
        );
        assert_eq!(name("no-port"), None);
        assert_eq!(name("bad name:1"), None);
    }
}
