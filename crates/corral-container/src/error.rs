//! The engine's error type: every failure names the thing involved and, where there is one, the fix.

use std::path::PathBuf;

use corral_error::PathIoError;

/// Errors from the container engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle's `config.json` could not be read or parsed.
    #[error("cannot load the container config {path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// The spec is well-formed JSON but asks for something invalid or unsupported.
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),

    /// A container id is empty or holds characters that cannot name a directory.
    #[error("invalid container id {0:?}: use letters, digits, '-', '_', '.' and no leading '.'")]
    InvalidId(String),

    /// The id is already used by a container under the same root.
    #[error("container {0} already exists; delete it first or pick another id")]
    AlreadyExists(String),

    /// No container with this id exists under the root. podman matches "does not exist".
    #[error("container {0} does not exist")]
    NotFound(String),

    /// The container is in a state that does not allow the operation.
    #[error("container {id} is {status}: {operation} needs it to be {needed}")]
    WrongState {
        id: String,
        status: String,
        operation: &'static str,
        needed: &'static str,
    },

    /// The signal name or number is not a signal this host knows.
    #[error("invalid signal {0:?}: use a name such as TERM, SIGKILL or RTMIN+3, or a number from 1 to 64")]
    InvalidSignal(String),

    /// A system call failed while acting on `what`.
    #[error("cannot {what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },

    /// A file operation failed on `path`.
    #[error(transparent)]
    Io(#[from] PathIoError),

    /// The cgroup filesystem layout is not one the engine understands, or a controller is missing.
    #[error("cgroup error: {0}")]
    Cgroup(String),

    /// A path inside the rootfs is not what the setup needs, or stopped being it (a component
    /// swapped for a symlink while the container started).
    #[error("{} in the rootfs is not a {expected} (or was replaced while the container was being set up)", path.display())]
    RootfsEntry {
        path: PathBuf,
        expected: &'static str,
    },

    /// Setting up a container or process failed; the message says where.
    #[error("{0}")]
    Setup(String),

    /// The container's init (or an exec'd process) reported a failure before running the program.
    #[error("container init failed: {0}")]
    Init(String),

    /// An OCI hook failed; the spec says the container is then stopped and deleted.
    #[error("{kind} hook {path} failed: {reason}")]
    Hook {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// The seccomp profile could not be compiled or loaded.
    #[error("seccomp filter: {0}")]
    Seccomp(String),

    /// The console socket could not be used to hand over the terminal.
    #[error("console socket {path}: {reason}")]
    Console { path: PathBuf, reason: String },

    /// The recorded state of a container is unreadable.
    #[error("state of container {id} is unreadable ({reason}); `delete --force` removes it")]
    CorruptState { id: String, reason: String },

    /// Creating or entering a container needs the runtime to run from a sealed copy of itself.
    #[error("the runtime must re-execute itself from a sealed copy of its binary before it creates or enters a container (corral_container::sealed_exe::ensure), or the container could overwrite it through /proc/self/exe")]
    UnsealedExe,

    /// Forking a container requires a single-threaded caller (the child runs code after a raw
    /// clone, where locks held by other threads would never be released).
    #[error("creating a container needs a single-threaded process, but this one has {0} threads; create containers before starting threads")]
    Threaded(usize),
}

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a nix error with a description of what was attempted.
    pub(crate) fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    /// Wraps an I/O error with the path involved.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io(PathIoError::new(what, path.into(), source))
    }
}
