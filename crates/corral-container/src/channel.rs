//! The message channel between the runtime and a process it is setting up (a datagram socket
//! pair, so each message arrives whole and a closed peer reads as end-of-file).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::error::{Error, Result};

/// The longest message; error texts are cut to fit.
const MAX_MESSAGE: usize = 4096;

/// Messages of the setup protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Runtime → child: continue (ids mapped and cgroup joined, or hooks done).
    Go,
    /// Child → runtime: mounts are ready; run the prestart and createRuntime hooks now.
    RunHooks,
    /// Child → runtime: setup is complete; the child now waits for `start`.
    Ready,
    /// Intermediate process → runtime: the host pid of the process being set up.
    Pid(i32),
    /// Child → runtime: setup failed.
    Failed(String),
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Go => b"go".to_vec(),
            Message::RunHooks => b"hooks".to_vec(),
            Message::Ready => b"ready".to_vec(),
            Message::Pid(pid) => format!("pid:{pid}").into_bytes(),
            Message::Failed(text) => {
                let mut bytes = format!("failed:{text}").into_bytes();
                bytes.truncate(MAX_MESSAGE);
                bytes
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Message> {
        let text = String::from_utf8_lossy(bytes);
        Ok(match text.as_ref() {
            "go" => Message::Go,
            "hooks" => Message::RunHooks,
            "ready" => Message::Ready,
            other => {
                if let Some(pid) = other.strip_prefix("pid:") {
                    Message::Pid(
                        pid.parse()
                            .map_err(|_| Error::Setup(format!("bad pid message {other:?}")))?,
                    )
                } else if let Some(reason) = other.strip_prefix("failed:") {
                    Message::Failed(reason.to_owned())
                } else {
                    return Err(Error::Setup(format!("unexpected setup message {other:?}")));
                }
            }
        })
    }
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair; both ends close on exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::sys("create a socket pair", e))?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn send(&self, message: &Message) -> Result<()> {
        nix::sys::socket::send(
            self.0.as_raw_fd(),
            &message.encode(),
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .map(drop)
        .map_err(|e| Error::sys("send a setup message", e))
    }

    /// The next message, or `None` once every holder of the other end has closed it.
    pub fn recv(&self) -> Result<Option<Message>> {
        let mut buffer = vec![0u8; MAX_MESSAGE];
        loop {
            match nix::sys::socket::recv(
                self.0.as_raw_fd(),
                &mut buffer,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(0) => return Ok(None),
                Ok(n) => return Message::decode(&buffer[..n]).map(Some),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::sys("receive a setup message", e)),
            }
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_a_closed_peer_reads_as_none() {
        let (a, b) = Channel::pair().unwrap();
        for message in [
            Message::Go,
            Message::RunHooks,
            Message::Ready,
            Message::Pid(77),
            Message::Failed("no: such".into()),
        ] {
            a.send(&message).unwrap();
            assert_eq!(b.recv().unwrap(), Some(message));
        }
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Message::decode(b"pid:abc").is_err());
        assert!(Message::decode(b"\xff\xfe").is_err());
    }
}
