//! The protocol's messages: what the host asks ([`Request`]) and what the agent answers
//! ([`Reply`]). Both are closed sets: an unknown type or field is a malformed message.
//!
//! A connection starts with [`Request::Hello`] and the agent's [`Reply::Hello`] (or an error and
//! the end of the connection when the versions differ); then requests follow one at a time.

use std::net::IpAddr;

pub use corral_host::terminal::WindowSize;
use serde::{Deserialize, Serialize};

/// The protocol version; both ends must speak the same one.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The first message of a connection.
    Hello { version: u32 },
    /// Answered with [`Reply::Pong`].
    Ping,
    /// Answered with [`Reply::Info`].
    Info,
    /// Run a program: the agent answers [`Reply::Ready`] once it runs (or an error), reads its
    /// stdin from data frames until [`Request::Eof`], sends its stdout and stderr as data
    /// frames and ends with [`Reply::Exited`].
    Exec {
        argv: Vec<String>,
        /// `NAME=value` entries added to the agent's environment.
        #[serde(default)]
        env: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        /// A terminal: the program runs on a new pty (its controlling terminal, in a session
        /// of its own) of this size, 0 by 0 when the host does not know one. Its output, both
        /// streams, comes as stdout data; [`Request::Resize`] may come between the stdin data.
        /// Agents before it refuse such an exec as an unknown request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tty: Option<WindowSize>,
    },
    /// The host's terminal changed size during an exec with a terminal.
    Resize { rows: u16, cols: u16 },
    /// Write a file: [`Reply::Ready`] (or an error), then data frames and [`Request::Eof`] from
    /// the host, then [`Reply::Written`]. The file appears whole (temp file + rename) or not.
    Push {
        path: String,
        mode: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gid: Option<u32>,
    },
    /// Read a file: [`Reply::File`] (or an error), its data frames, then [`Reply::Eof`].
    Pull { path: String },
    /// The end of a data stream the host sends (a pushed file, a command's stdin).
    Eof,
    /// Power the guest off (or reboot it) through its own init; answered with [`Reply::Done`]
    /// before the agent acts.
    Shutdown { reboot: bool },
    /// Freeze the guest's writable filesystems for a snapshot; answered with
    /// [`Reply::Frozen`]. The agent thaws them itself when no [`Request::Thaw`] comes in time.
    Fsfreeze,
    /// Thaw what `fsfreeze` froze; answered with [`Reply::Thawed`].
    Thaw,
    /// Reset the guest's identity (corral-sysprep's operations on its root filesystem);
    /// answered with [`Reply::Sysprep`].
    Sysprep {
        /// The operation list, in `corral sysprep --operations` grammar; the defaults when
        /// `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operations: Option<String>,
        #[serde(default)]
        dry_run: bool,
    },
}

/// How an agent's error reply to a request it cannot parse starts: an older agent's answer to a
/// newer request.
pub const UNKNOWN_REQUEST: &str = "unknown request";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Hello {
        version: u32,
        /// The agent's program version.
        agent: String,
    },
    Pong,
    Info(GuestInfo),
    Ready,
    Written {
        bytes: u64,
    },
    File {
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// The end of a pulled file's data.
    Eof,
    Exited {
        /// The exit status, when the program exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        /// The signal that ended it, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    Done,
    /// The mountpoints frozen, in the order they were.
    Frozen {
        mountpoints: Vec<String>,
    },
    /// The mountpoints thawed (none when nothing was frozen).
    Thawed {
        mountpoints: Vec<String>,
    },
    /// What a sysprep changed (or would change), one line per change.
    Sysprep {
        dry_run: bool,
        changes: Vec<String>,
    },
    Error {
        message: String,
    },
}

/// What `info` reports about the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestInfo {
    pub hostname: String,
    /// `PRETTY_NAME` of os-release, when the guest has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    pub uptime_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    pub interfaces: Vec<Interface>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// Addresses with their prefix length.
    pub addresses: Vec<Address>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_stable_wire_form() {
        assert_eq!(
            serde_json::to_string(&Request::Hello { version: 1 }).unwrap(),
            r#"{"type":"hello","version":1}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::Exited {
                code: Some(3),
                signal: None
            })
            .unwrap(),
            r#"{"type":"exited","code":3}"#
        );
    }

    #[test]
    fn an_exec_with_a_terminal_names_its_size_and_one_without_says_nothing() {
        let exec = |tty| Request::Exec {
            argv: vec!["tty".into()],
            env: Vec::new(),
            cwd: None,
            tty,
        };
        assert_eq!(
            serde_json::to_string(&exec(None)).unwrap(),
            r#"{"type":"exec","argv":["tty"],"env":[]}"#
        );
        let sized = exec(Some(WindowSize { rows: 24, cols: 80 }));
        let text = serde_json::to_string(&sized).unwrap();
        assert_eq!(
            text,
            r#"{"type":"exec","argv":["tty"],"env":[],"tty":{"rows":24,"cols":80}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), sized);
        assert!(serde_json::from_str::<Request>(
            r#"{"type":"exec","argv":[],"tty":{"rows":1,"cols":2,"x":3}}"#
        )
        .is_err());
    }

    #[test]
    fn unknown_fields_and_bad_addresses_are_refused() {
        assert!(
            serde_json::from_str::<Request>(r#"{"type":"pull","path":"/x","mode":1}"#).is_err()
        );
        assert!(serde_json::from_str::<Address>(r#"{"ip":"10.0.0.300","prefix":24}"#).is_err());
    }
}
