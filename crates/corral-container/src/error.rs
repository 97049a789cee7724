//! The engine's error type: every failure names the thing involved and, where there is one, the fix.

use std::path::PathBuf;

use corral_error::PathIoError;

/// Errors from the container engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle's `config.json` could not be read or parsed.
    #[error("cannot load the container config {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },

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

    /// A cgroup file refused a value (a limit the kernel rejects, or a controller not enabled).
    #[error("cannot write {value:?} to {path}")]
    CgroupWrite {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },

    /// The kernel refused the cgroup v2 device filter; `detail` is the verifier's last word.
    #[error("the kernel refused the device filter program{}; cgroup v2 device control needs CONFIG_CGROUP_BPF and CAP_SYS_ADMIN", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    DeviceFilter {
        detail: String,
        #[source]
        source: nix::Error,
    },

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

    /// The process's capability sets could not be changed.
    #[error("cannot {what}")]
    Capabilities {
        what: String,
        #[source]
        source: caps::errors::CapsError,
    },

    /// The process's working directory did not exist and could not be created.
    #[error("cannot create the working directory {path}")]
    WorkingDir {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },

    /// The caller's terminal could not be put in raw mode to relay a container's terminal.
    #[error("cannot put this terminal in raw mode")]
    RawTerminal(#[source] corral_control::ControlError),

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

    /// An OCI hook could not be started or waited for.
    #[error("{kind} hook {path} could not be run")]
    HookRun {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The seccomp profile asks for something the engine does not provide.
    #[error("seccomp filter: {0}")]
    Seccomp(String),

    /// libseccomp refused a step of compiling or loading the profile.
    #[error("seccomp filter: cannot {what}")]
    SeccompFilter {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },

    /// The console socket could not be used to hand over the terminal.
    #[error("cannot connect to the console socket {path}")]
    Console {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The recorded state of a container is unreadable.
    #[error("state of container {id} is unreadable; `delete --force` removes it")]
    CorruptState {
        id: String,
        #[source]
        source: serde_json::Error,
    },

    /// The container's state could not be written as JSON (for its record or a hook's stdin).
    #[error("cannot encode the state of container {id} as JSON")]
    EncodeState {
        id: String,
        #[source]
        source: serde_json::Error,
    },

    /// Creating or entering a container needs the runtime to run from a sealed copy of itself.
    #[error("the runtime must re-execute itself from a sealed copy of its binary before it creates or enters a container (corral_container::sealed_exe::ensure), or the container could overwrite it through /proc/self/exe")]
    UnsealedExe,

    /// `criu check` fails on this host (or criu is missing): nothing was changed.
    #[error("cannot {action} container {id}: CRIU does not work on this host: {reason} (checkpoint and restore need a host where `criu check` passes)")]
    CriuUnavailable {
        id: String,
        action: &'static str,
        reason: String,
    },

    /// CRIU ran and failed; `reason` is its last error, the rest is in its log.
    #[error("criu {action} of container {id} failed: {reason}; CRIU's log is {}", log.display())]
    CriuFailed {
        id: String,
        action: &'static str,
        reason: String,
        log: PathBuf,
    },

    /// The criu program could not be started.
    #[error("cannot run criu {action}")]
    CriuRun {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// An iterative checkpoint was asked for.
    #[error("cannot pre-dump container {0}: corral does not take iterative checkpoints (they need CRIU's memory tracking through the kernel's soft-dirty bits); checkpoint without --pre-dump")]
    PreDump(String),

    /// A container with a terminal cannot be checkpointed or restored (see `criu::refuse_terminal`).
    #[error("cannot {action} container {id}: it has a terminal (process.terminal), which corral cannot checkpoint or restore yet; run it without a terminal")]
    CriuTerminal { id: String, action: &'static str },

    /// The image directory holds no complete checkpoint.
    #[error("{} holds no checkpoint (no inventory.img); pass the --image-path a checkpoint was written to", .0.display())]
    NoCheckpoint(PathBuf),

    /// Forking a container requires a single-threaded caller (the child runs code after a raw
    /// clone, where locks held by other threads would never be released).
    #[error("creating a container needs a single-threaded process, but this one has {0} threads; create containers before starting threads")]
    Threaded(usize),
}

/// Why a bundle's `config.json` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The bundle directory is missing or cannot be resolved.
    #[error("the bundle directory is not usable")]
    Bundle(#[source] std::io::Error),

    /// `config.json` cannot be read.
    #[error(transparent)]
    Read(std::io::Error),

    /// `config.json` is not JSON at all.
    #[error("not valid JSON")]
    Json(#[source] serde_json::Error),

    /// A namespace type the runtime spec does not define (serde's own message would only say
    /// "unknown variant").
    #[error("unknown namespace type {kind:?}; the spec knows {known}")]
    UnknownNamespace { kind: String, known: String },

    /// The JSON does not have the shape of a runtime spec.
    #[error("not an OCI runtime spec")]
    Schema(#[source] serde_json::Error),
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
