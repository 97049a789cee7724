//! corral's container engine: OS-level virtualization from an OCI runtime spec.
//!
//! A container is created in one clone into all its new namespaces (crun's design); the init
//! joins its cgroup before it runs anything of the user's, builds the root filesystem, reports
//! ready and waits on an exec fifo until `start`. State lives under a state root
//! (`/run/corral/<id>/state.json`), so the short-lived CLI (`corral oci`, runc-compatible) and
//! long-lived supervisors share one view.
//!
//! ```no_run
//! use corral_container::{Container, CreateOptions};
//! # fn main() -> corral_container::Result<()> {
//! let mut container = Container::create(CreateOptions {
//!     root: "/run/corral".into(),
//!     id: "web".into(),
//!     bundle: "/srv/bundles/web".into(),
//!     console: None,
//!     preserve_fds: 0,
//!     seccomp_cache: Some("/run/corral/.seccomp-cache".into()),
//! })?;
//! container.start()?;
//! let exit_code = container.wait()?; // we are the init's parent
//! container.delete(false)?;
//! # let _ = exit_code; Ok(()) }
//! ```

pub mod cgroups;
mod channel;
pub mod console;
mod container;
pub mod criu;
mod error;
pub mod foreground;
pub mod hooks;
mod init;
mod process;
pub mod rootfs;
pub mod sealed_exe;
pub mod seccomp;
mod security;
pub mod signal;
pub mod spec;
pub mod state;
pub mod syscall;
pub mod user;

pub use cgroups::Stats;
pub use container::{
    exit_code, CheckpointOptions, Container, CreateOptions, ExecCommand, ExecOptions, ExecOutcome,
    RestoreOptions,
};
pub use error::{ConfigError, Error, Result};
pub use state::{OciState, Status, DEFAULT_STATE_ROOT, SECCOMP_CACHE_DIR};
