//! The control protocol of corral's supervisors.
//!
//! Every running instance has a supervisor process (the VMM for a VM, a monitor for a container)
//! serving a unix stream socket. The protocol is newline-delimited JSON: the client writes one
//! [`Request`] object per line, the supervisor answers each with one [`Response`] line, in order,
//! on the same connection. `docs/control-protocol.md` describes it for other implementations.

pub mod console;
pub mod disk_spec;
pub mod exit;
pub mod journal;
pub mod log;
pub mod logging;
pub mod policy;
pub mod restart;
pub mod size;
pub mod start_gate;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::log::{Allowed, RateLimit};

/// The longest request line a server accepts; anything longer is a client bug or an attack.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long telling a refused client why may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Pause, save the VM into the directory `to` (new or empty: `state` and `memory`), then
    /// resume unless `leave_paused` (or it was paused before). Answered once the files are
    /// written. With `diff`, `memory` holds only the pages written since the last snapshot
    /// (the VM must track dirty pages).
    Snapshot {
        to: std::path::PathBuf,
        #[serde(default)]
        leave_paused: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        diff: bool,
    },
    /// Move the running VM live to a destination VMM waiting with `--incoming` at `to`
    /// (`unix:PATH` or `tcp:IP:PORT`), authenticated by `token`. Answered with `migrated` once
    /// the destination runs the VM (the supervisor then exits), or with an error while the VM
    /// still runs here.
    Migrate {
        to: String,
        token: String,
        /// The longest pause allowed for the last copy (300 when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        downtime_limit_ms: Option<u64>,
        /// Give up after this many passes over memory (30 when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_iterations: Option<u32>,
        /// Give up after this many seconds of copying (120 when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_seconds: Option<u64>,
    },
}

/// What a finished migration measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// Bytes of guest memory sent (pages only, without framing or state).
    pub bytes: u64,
    /// Passes over memory: the full one, then one per round of dirty pages, the last one paused.
    pub iterations: u32,
    /// From the request to the destination's confirmation.
    pub total_ms: f64,
    /// The guest's pause: from stopping its vCPUs to the destination's confirmation.
    pub downtime_ms: f64,
    /// The bandwidth measured on the last pass before the pause, bytes per second.
    pub bandwidth: u64,
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
    /// A live migration under way (VMs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationProgress>,
}

/// Where a live migration stands, after its last pass over memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationProgress {
    /// Passes over memory done (the first sends all of it).
    pub iterations: u32,
    /// Bytes of guest memory sent so far.
    pub bytes: u64,
    /// Bytes written by the guest since the last pass, still to send.
    pub dirty_bytes: u64,
    /// Bytes per second the link took the pages at.
    pub bandwidth: u64,
    /// How long the pause would be if it came now: `dirty_bytes / bandwidth`.
    pub estimated_downtime_ms: f64,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `status`, `pause`, `resume`, `shutdown` and `kill`: the state after the request.
    State { state: RunState },
    /// Answer to `info`.
    Info(Info),
    /// Answer to `migrate`: the VM runs on the destination.
    Migrated(MigrationReport),
    /// The request was understood but could not be carried out, or was not understood.
    Error { message: String },
}

/// Errors of the client and the server helpers.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot connect to control socket {path}; is the instance running?")]
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
    #[error("cannot bind control socket {path}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket i/o failed")]
    Io(#[from] std::io::Error),
    #[error("the supervisor closed the connection without answering")]
    Closed,
    #[error("malformed control message")]
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
        // A server that refuses the connection writes its reason and hangs up, maybe before
        // the request arrives: the reason is still there to read, and says more than EPIPE.
        let hung_up = match write_message(&mut self.writer, request) {
            Ok(()) => None,
            Err(ControlError::Io(err))
                if matches!(
                    err.kind(),
                    ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                ) =>
            {
                Some(err)
            }
            Err(err) => return Err(err),
        };
        let mut line = String::new();
        match (self.reader.read_line(&mut line), hung_up) {
            (Ok(0) | Err(_), Some(write_error)) => return Err(write_error.into()),
            (Ok(0), None) => return Err(ControlError::Closed),
            (Err(err), None) => return Err(err.into()),
            (Ok(_), _) => {}
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

/// The mode of the sockets supervisors bind.
pub const SOCKET_MODE: u32 = 0o600;

/// Binds a control socket at `path`, mode [`SOCKET_MODE`]. A stale socket left by a dead
/// supervisor is replaced; a socket a live supervisor still answers on, or a file that is not a
/// socket, is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    bind_with(path, |path| UnixListener::bind(path))
}

/// Binds a socket at `path` as [`bind`] does, but does not listen on it yet: until the owner
/// calls `listen(2)`, a connection is refused at once instead of waiting in a backlog nobody
/// serves (a virtio-vsock device whose guest has no driver).
pub fn bind_without_listening(path: &Path) -> Result<UnixListener, ControlError> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
    bind_with(path, |path| {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let address = UnixAddr::new(path)?;
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)?;
        Ok(UnixListener::from(fd))
    })
}

fn bind_with(
    path: &Path,
    bind: impl Fn(&Path) -> std::io::Result<UnixListener>,
) -> Result<UnixListener, ControlError> {
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
    let failed = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    // Bound under a temporary name and moved into place once it listens with its mode set: a
    // client that waits for the path to appear and then connects is never refused, and never
    // finds the socket open to others. A path too long for a temporary beside it is bound in
    // place.
    let staging = staging_path(path);
    let listener = match bind(&staging) {
        Ok(listener) => listener,
        Err(err) if err.kind() == ErrorKind::InvalidInput => {
            let listener = bind(path).map_err(failed)?;
            set_socket_mode(path).map_err(failed)?;
            return Ok(listener);
        }
        Err(err) => return Err(failed(err)),
    };
    let placed = set_socket_mode(&staging).and_then(|()| std::fs::rename(&staging, path));
    if let Err(err) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(failed(err));
    }
    Ok(listener)
}

/// Connecting needs write permission on the socket: only its owner may.
fn set_socket_mode(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
}

/// A short name beside `path`, unique on this host (process id) and in this process (a
/// counter).
fn staging_path(path: &Path) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{:x}-{n:x}", std::process::id()))
}

/// What a server does after answering a request.
pub enum After {
    /// Keep reading requests from this connection.
    Continue,
    /// Run this once the response has been written (e.g. stop the guest after answering `kill`,
    /// so the client gets its answer before the supervisor exits).
    Then(Box<dyn FnOnce() + Send>),
}

/// How many control connections a supervisor serves at once, and how long one may sit idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// A connection without a complete request for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 16,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves the control socket on a background thread: see [`run_server`].
pub fn serve(
    listener: UnixListener,
    limits: ServerLimits,
    handle: impl Fn(Request) -> (Response, After) + Send + Sync + 'static,
) {
    std::thread::spawn(move || run_server(listener, limits, handle));
}

/// Serves the control socket in the calling thread, for the life of the process: each
/// connection in a thread of its own (which inherits the caller's seccomp filter), answered by
/// `handle`. Connections past `limits.max_connections` get an `error` response saying so and are
/// closed; a connection that has not sent a complete request within `limits.idle_timeout` (or
/// does not take its answer as long) is closed.
pub fn run_server(
    listener: UnixListener,
    limits: ServerLimits,
    handle: impl Fn(Request) -> (Response, After) + Send + Sync + 'static,
) {
    let handle = Arc::new(handle);
    let open = Arc::new(AtomicUsize::new(0));
    let mut warnings = RateLimit::new(3, Duration::from_secs(60));
    for stream in listener.incoming().flatten() {
        if open.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
            open.fetch_sub(1, Ordering::SeqCst);
            refuse(stream, limits.max_connections, &mut warnings);
            continue;
        }
        let slot = OpenConnection(open.clone());
        let handle = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(err) =
                    serve_connection(stream, limits.idle_timeout, |request| handle(request))
                {
                    tracing::debug!("control connection ended: {err}");
                }
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot serve a control connection: {err}");
        }
    }
}

/// Counts as one open connection until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tells a client past the connection limit why it is not served, then hangs up.
fn refuse(mut stream: UnixStream, max_connections: usize, warnings: &mut RateLimit) {
    let message = format!(
        "the supervisor serves at most {max_connections} control connections at once; \
         close one and retry"
    );
    match warnings.check(Instant::now()) {
        Allowed::Yes { held: 0 } => tracing::warn!("control connection refused: {message}"),
        Allowed::Yes { held } => tracing::warn!(
            "control connection refused: {message} ({held} more refusals not logged)"
        ),
        Allowed::No => {}
    }
    // A client that does not take even this line is not waited for.
    let _ = stream.set_write_timeout(Some(REFUSAL_TIMEOUT));
    let _ = write_message(&mut stream, &Response::Error { message });
}

/// Reads from a stream with a deadline for the whole of the current request, however the client
/// spreads its bytes.
struct DeadlineReader {
    stream: UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Serves one connection: reads request lines until the client hangs up, answering each with
/// `handle`. Malformed or oversized lines get an `error` response; the connection stays usable.
/// The connection is closed when a request takes longer than `idle_timeout` to arrive, or its
/// answer as long to be taken.
pub fn serve_connection(
    stream: UnixStream,
    idle_timeout: Duration,
    mut handle: impl FnMut(Request) -> (Response, After),
) -> Result<(), ControlError> {
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(idle_timeout))?;
    let mut reader = BufReader::new(DeadlineReader {
        stream,
        deadline: Instant::now() + idle_timeout,
    });
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.get_mut().deadline = Instant::now() + idle_timeout;
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
    fn a_bound_socket_appears_listening_with_its_mode_and_nothing_beside_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let _listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, SOCKET_MODE);
        UnixStream::connect(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.sock"]);
    }

    #[test]
    fn a_path_with_no_room_for_a_temporary_name_is_bound_in_place() {
        let dir = tempfile::tempdir().unwrap();
        // 107 bytes, the longest socket address; the temporary name beside it would not fit.
        let room = 107 - dir.path().as_os_str().len() - 1;
        let path = dir.path().join("s".repeat(room));
        let _listener = bind(&path).unwrap();
        UnixStream::connect(&path).unwrap();
    }

    #[test]
    fn client_and_server_round_trip_and_survive_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            serve_connection(stream, Duration::from_secs(60), |request| {
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

    fn status_server(limits: ServerLimits) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        serve(bind(&path).unwrap(), limits, |_| {
            (
                Response::State {
                    state: RunState::Running,
                },
                After::Continue,
            )
        });
        (dir, path)
    }

    #[test]
    fn connections_past_the_limit_are_refused_with_a_sentence() {
        let limits = ServerLimits {
            max_connections: 2,
            ..ServerLimits::default()
        };
        let (_dir, path) = status_server(limits);
        let running = Response::State {
            state: RunState::Running,
        };
        let mut first = Client::connect(&path, Duration::from_secs(10)).unwrap();
        let mut second = Client::connect(&path, Duration::from_secs(10)).unwrap();
        assert_eq!(first.call(&Request::Status).unwrap(), running);
        assert_eq!(second.call(&Request::Status).unwrap(), running);
        let mut third = Client::connect(&path, Duration::from_secs(10)).unwrap();
        match third.call(&Request::Status) {
            Ok(Response::Error { message }) => {
                assert!(
                    message.contains("at most 2 control connections"),
                    "{message}"
                )
            }
            other => panic!("the third connection was served: {other:?}"),
        }
        // A closed connection makes room.
        drop(first);
        let mut answered = false;
        for _ in 0..200 {
            let mut again = Client::connect(&path, Duration::from_secs(10)).unwrap();
            if again.call(&Request::Status).is_ok_and(|r| r == running) {
                answered = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(answered, "no room after a connection closed");
    }

    #[test]
    fn a_refusal_sent_before_the_request_is_read_not_lost_to_a_broken_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            refuse(stream, 1, &mut RateLimit::new(1, Duration::from_secs(60)));
        });
        let mut client = Client::connect(&path, Duration::from_secs(10)).unwrap();
        // The server has answered and hung up before the client says anything.
        server.join().unwrap();
        match client.call(&Request::Status) {
            Ok(Response::Error { message }) => {
                assert!(
                    message.contains("at most 1 control connections"),
                    "{message}"
                )
            }
            other => panic!("the refusal was lost: {other:?}"),
        }
    }

    #[test]
    fn idle_connections_are_closed() {
        let limits = ServerLimits {
            idle_timeout: Duration::from_millis(200),
            ..ServerLimits::default()
        };
        let (_dir, path) = status_server(limits);
        let mut idle = UnixStream::connect(&path).unwrap();
        // Half a request, then nothing.
        idle.write_all(b"{\"request\":").unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let read = idle.read_to_end(&mut rest);
        assert!(read.is_ok(), "the idle connection stayed open: {read:?}");
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
