//! The agent: `corral guest agent`, serving the host's requests inside a guest.
//!
//! One thread per connection (at most [`MAX_CONNECTIONS`] at once); each connection starts with
//! the version handshake, then serves requests one at a time. An `exec` ends its connection.
//! A request the agent cannot parse (a newer host's) is answered with an error starting with
//! [`UNKNOWN_REQUEST`], and the connection goes on.

mod exec;
mod files;
pub mod freeze;
mod info;
mod power;
mod sysprep;
mod terminal;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};

use crate::frame::{self, FrameError};
use crate::message::{Reply, Request, PROTOCOL_VERSION, UNKNOWN_REQUEST};
use freeze::{Freezer, Freezes};

/// How many connections the agent serves at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection on which the host sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on the unix socket {path}")]
    Unix {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on vsock port {port} (does this machine have a virtio-vsock device?)")]
    Vsock {
        port: u32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot accept a connection")]
    Accept(#[source] std::io::Error),
}

/// What the agent acts on: this machine's kernel and root filesystem, or (in tests) a fake
/// freezer and a root directory of the test's.
pub struct Agent {
    freezes: Arc<Freezes>,
    /// The root filesystem `sysprep` resets.
    root: PathBuf,
}

impl Agent {
    /// The agent of this machine.
    pub fn new() -> Arc<Self> {
        Self::with(
            Box::new(freeze::Kernel),
            freeze::AUTO_THAW,
            PathBuf::from("/"),
        )
    }

    pub fn with(freezer: Box<dyn Freezer>, auto_thaw: Duration, root: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            freezes: Freezes::new(freezer, auto_thaw),
            root,
        })
    }

    /// Thaws what a freeze left frozen: for the agent's exit.
    pub fn thaw(&self) {
        match self.freezes.thaw() {
            Ok(thawed) if !thawed.is_empty() => {
                tracing::warn!("thawed {} filesystems on exit", thawed.len())
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("{err}"),
        }
    }
}

/// Where the agent listens.
pub enum Listener {
    Unix(UnixListener),
    /// A vsock stream socket.
    Vsock(OwnedFd),
}

impl Listener {
    /// Listens on `path`, replacing a stale socket file left there.
    pub fn unix(path: &Path) -> Result<Self, ServeError> {
        let error = |source| ServeError::Unix {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(error(e)),
        }
        UnixListener::bind(path).map(Self::Unix).map_err(error)
    }

    /// Listens on vsock `port` of this machine (any CID).
    pub fn vsock(port: u32) -> Result<Self, ServeError> {
        let error = |source| ServeError::Vsock { port, source };
        let fd = socket::socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(error)?;
        let address = VsockAddr::new(libc::VMADDR_CID_ANY, port);
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address).map_err(error)?;
        socket::listen(&fd, Backlog::MAXCONN).map_err(error)?;
        Ok(Self::Vsock(fd))
    }

    fn accept(&self) -> Result<UnixStream, ServeError> {
        match self {
            Self::Unix(listener) => listener
                .accept()
                .map(|(stream, _)| stream)
                .map_err(ServeError::Accept),
            Self::Vsock(fd) => {
                let raw =
                    socket::accept4(std::os::fd::AsRawFd::as_raw_fd(fd), SockFlag::SOCK_CLOEXEC)
                        .map_err(|e| ServeError::Accept(e.into()))?;
                // SAFETY: accept4 returned a new descriptor that nothing else owns. A vsock
                // stream is read and written like a unix one (read/write/shutdown and the
                // SO_*TIMEO options are the socket layer's), so std's UnixStream carries it.
                Ok(unsafe { UnixStream::from(OwnedFd::from_raw_fd(raw)) })
            }
        }
    }
}

/// Serves connections until accepting fails; then thaws what is frozen.
pub fn serve(listener: &Listener, agent: &Arc<Agent>) -> Result<(), ServeError> {
    let result = accept_loop(listener, agent);
    agent.thaw();
    result
}

fn accept_loop(listener: &Listener, agent: &Arc<Agent>) -> Result<(), ServeError> {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok(stream) => stream,
            // A connection that went away before it was accepted.
            Err(ServeError::Accept(e)) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
                continue
            }
            Err(err) => return Err(err),
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("refusing a connection: {MAX_CONNECTIONS} are being served");
            continue;
        }
        let active = Arc::clone(&active);
        let agent = Arc::clone(agent);
        std::thread::spawn(move || {
            if let Err(err) = handle(stream, &agent) {
                tracing::info!("connection ended: {err}");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn handle(mut stream: UnixStream, agent: &Agent) -> Result<(), FrameError> {
    stream
        .set_read_timeout(Some(IDLE_TIMEOUT))
        .map_err(FrameError::Io)?;
    match frame::read_message(&mut stream)? {
        Request::Hello {
            version: PROTOCOL_VERSION,
        } => frame::write_message(
            &mut stream,
            &Reply::Hello {
                version: PROTOCOL_VERSION,
                agent: env!("CARGO_PKG_VERSION").to_string(),
            },
        )?,
        Request::Hello { version } => {
            return frame::write_message(
                &mut stream,
                &error(format!(
                    "this agent speaks protocol version {PROTOCOL_VERSION}, not {version}"
                )),
            )
        }
        _ => {
            return frame::write_message(
                &mut stream,
                &error("a connection must start with hello".to_string()),
            )
        }
    }
    loop {
        let request = match frame::read_message(&mut stream) {
            Ok(request) => request,
            Err(FrameError::Closed) => return Ok(()),
            // A well-framed message this agent does not know: the host may go on without it.
            Err(FrameError::Json(err)) => {
                frame::write_message(&mut stream, &error(format!("{UNKNOWN_REQUEST}: {err}")))?;
                continue;
            }
            Err(err) => return Err(err),
        };
        match request {
            Request::Ping => frame::write_message(&mut stream, &Reply::Pong)?,
            Request::Info => frame::write_message(&mut stream, &Reply::Info(info::gather()))?,
            Request::Exec {
                argv,
                env,
                cwd,
                tty,
            } => return exec::run(stream, &argv, &env, cwd, tty),
            Request::Push {
                path,
                mode,
                uid,
                gid,
            } => files::push(&mut stream, &path, mode, uid, gid)?,
            Request::Pull { path } => files::pull(&mut stream, &path)?,
            Request::Shutdown { reboot } => {
                frame::write_message(&mut stream, &Reply::Done)?;
                drop(stream);
                power::shut_down(reboot);
                return Ok(());
            }
            Request::Fsfreeze => {
                let reply = match agent.freezes.freeze() {
                    Ok(frozen) => Reply::Frozen {
                        mountpoints: displayed(&frozen),
                    },
                    Err(err) => error_reply(&err),
                };
                frame::write_message(&mut stream, &reply)?
            }
            Request::Thaw => {
                let reply = match agent.freezes.thaw() {
                    Ok(thawed) => Reply::Thawed {
                        mountpoints: displayed(&thawed),
                    },
                    Err(err) => error_reply(&err),
                };
                frame::write_message(&mut stream, &reply)?
            }
            Request::Sysprep {
                operations,
                dry_run,
            } => frame::write_message(
                &mut stream,
                &sysprep::run(&agent.root, operations.as_deref(), dry_run),
            )?,
            Request::Hello { .. } | Request::Eof | Request::Resize { .. } => frame::write_message(
                &mut stream,
                &error(format!("unexpected {request:?} request")),
            )?,
        }
    }
}

/// An error reply.
fn error(message: String) -> Reply {
    Reply::Error { message }
}

/// An error reply with the error's causes.
fn error_reply(err: &dyn std::error::Error) -> Reply {
    error(corral_host::error_chain(err))
}

fn displayed(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect()
}
