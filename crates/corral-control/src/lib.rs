//! The control protocol of corral's supervisors.
//!
//! Every running instance has a supervisor process (the VMM for a VM, a monitor for a container)
//! serving a unix stream socket. The protocol is newline-delimited JSON: the client writes one
//! [`Request`] object per line, the supervisor answers each with one [`Response`] line, in order,
//! on the same connection. `docs/control-protocol.md` describes it for other implementations.

pub mod console;
pub mod exit;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest request line a server accepts; anything longer is a client bug or an attack.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The supervisor's run state.
    Status,
    /// Run state plus resources and counters.
    Info,
    /// Stop all guest execution (vCPUs or container processes) until `resume`.
    Pause,
    /// Continue after `pause`.
    Resume,
    /// Ask the guest to shut down (Ctrl-Alt-Del for a VM, SIGTERM for a container) and force it
    /// off after `timeout_secs` (the supervisor's default when absent).
    Shutdown {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
    },
    /// Stop the guest at once.
    Kill,
}

/// Whether the guest is executing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Paused,
    /// A shutdown or kill was requested and the supervisor is about to exit.
    Stopping,
}

/// What `info` reports. Fields that only one kind of supervisor has are optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// `vm` or `container`.
    pub kind: String,
    pub state: RunState,
    /// Process id of the supervisor.
    pub pid: u32,
    /// Seconds since the guest was (re)started.
    pub uptime_secs: f64,
    /// How many times the guest was restarted in this process (`on_reboot = "restart"` etc.).
    pub restarts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Named event counters, e.g. VM exits by kind.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `status`, `pause`, `resume`, `shutdown` and `kill`: the state after the request.
    State { state: RunState },
    /// Answer to `info`.
    Info(Info),
    /// The request was understood but could not be carried out, or was not understood.
    Error { message: String },
}

/// Errors of the client and the server helpers.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot connect to control socket {path}: {source}; is the instance running?")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "control socket {path} is in use by a running supervisor; stop it or choose another path"
    )]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; remove it or choose another control socket path")]
    NotASocket { path: PathBuf },
    #[error("cannot bind control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the supervisor closed the connection without answering")]
    Closed,
    #[error("malformed control message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// A connection to a supervisor's control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`; calls time out after `timeout` without an answer.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ControlError> {
        let stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends `request` and waits for its response.
    pub fn call(&mut self, request: &Request) -> Result<Response, ControlError> {
        write_message(&mut self.writer, request)?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ControlError::Closed);
        }
        Ok(serde_json::from_str(&line)?)
    }
}

fn write_message<T: Serialize>(stream: &mut UnixStream, message: &T) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(())
}

/// Binds a control socket at `path`. A stale socket left by a dead supervisor is replaced; a socket
/// a live supervisor still answers on, or a file that is not a socket, is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            });
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(|source| ControlError::Bind {
            path: path.to_owned(),
            source,
        })?;
    }
    UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })
}

/// What a server does after answering a request.
pub enum After {
    /// Keep reading requests from this connection.
    Continue,
    /// Run this once the response has been written (e.g. stop the guest after answering `kill`,
    /// so the client gets its answer before the supervisor exits).
    Then(Box<dyn FnOnce() + Send>),
}

/// Serves one connection: reads request lines until the client hangs up, answering each with
/// `handle`. Malformed or oversized lines get an `error` response; the connection stays usable.
pub fn serve_connection(
    stream: UnixStream,
    mut handle: impl FnMut(Request) -> (Response, After),
) -> Result<(), ControlError> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE_BYTES {
            let message = format!("request longer than {MAX_LINE_BYTES} bytes");
            write_message(&mut writer, &Response::Error { message })?;
            return Ok(());
        }
        let (response, after) = match serde_json::from_slice::<Request>(&line) {
            Ok(request) => handle(request),
            Err(err) => (
                Response::Error {
                    message: format!("malformed request: {err}"),
                },
                After::Continue,
            ),
        };
        write_message(&mut writer, &response)?;
        if let After::Then(action) = after {
            action();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let json = serde_json::to_string(&Request::Shutdown {
            timeout_secs: Some(5),
        })
        .unwrap();
        assert_eq!(json, r#"{"request":"shutdown","timeout_secs":5}"#);
        let parsed: Request = serde_json::from_str(r#"{"request":"pause"}"#).unwrap();
        assert_eq!(parsed, Request::Pause);
        assert!(serde_json::from_str::<Request>(r#"{"request":"reboot"}"#).is_err());
    }

    #[test]
    fn client_and_server_round_trip_and_survive_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            serve_connection(stream, |request| {
                let state = match request {
                    Request::Pause => RunState::Paused,
                    _ => RunState::Running,
                };
                (Response::State { state }, After::Continue)
            })
            .unwrap();
        });
        let mut client = Client::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(
            client.call(&Request::Pause).unwrap(),
            Response::State {
                state: RunState::Paused
            }
        );
        // A malformed line gets an error answer and the connection keeps working.
        client.writer.write_all(b"{not json\n").unwrap();
        let mut line = String::new();
        client.reader.read_line(&mut line).unwrap();
        assert!(line.contains(r#""response":"error""#), "{line}");
        assert_eq!(
            client.call(&Request::Status).unwrap(),
            Response::State {
                state: RunState::Running
            }
        );
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let live = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(ControlError::InUse { .. })));
        drop(live);
        // The socket file is left behind by the dropped listener: stale, so it is replaced.
        assert!(path.exists());
        bind(&path).unwrap();

        let file = dir.path().join("plain");
        std::fs::write(&file, b"data").unwrap();
        assert!(matches!(bind(&file), Err(ControlError::NotASocket { .. })));
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
    }
}
