//! Drivers: the one place that knows how a VM or a container is run.
//!
//! Both kinds run under a supervisor process that outlives the CLI, serves the control protocol
//! on `run/control.sock`, the console on `run/console.sock` (logged to `run/console.log`), logs
//! to `run/supervisor.log` (the journal under systemd) and writes `run/exit.json` before it
//! ends. A driver only prepares the supervisor's input and names its command line; everything
//! else (start, stop, pause, console, reconcile) is the same for both.
//!
//! Everything a supervisor creates lives in the instance's runtime directory `run/`: a jailed
//! VMM sees that directory and nothing else of the host (see `corral_vmm::jail`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::definition::Definition;
use crate::error::CoreError;

/// The name of an instance's runtime directory (see [`InstancePaths::runtime_dir`]).
pub const RUNTIME_DIR: &str = "run";

/// The files of one instance directory that supervisors and the manager share.
#[derive(Clone, Debug)]
pub struct InstancePaths {
    pub dir: PathBuf,
}

impl InstancePaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The supervisor's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir().join("control.sock")
    }

    /// The console clients attach to.
    pub fn console_socket(&self) -> PathBuf {
        self.runtime_dir().join("console.sock")
    }

    /// Everything the console printed (rotated to `console.log.1`).
    pub fn console_log(&self) -> PathBuf {
        self.runtime_dir().join("console.log")
    }

    /// Why the supervisor ended.
    pub fn exit_record(&self) -> PathBuf {
        self.runtime_dir().join("exit.json")
    }

    /// The supervisor's own stdout and stderr (its log, rotated to `supervisor.log.1`).
    pub fn supervisor_log(&self) -> PathBuf {
        self.runtime_dir().join("supervisor.log")
    }

    /// Files of the supervisor's runs: its input (VM config, OCI bundle), its sockets, its log,
    /// the console log and the exit record. A jailed VMM's only view of the host.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join(RUNTIME_DIR)
    }

    /// `path` from a definition, anchored at the instance directory when relative.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        Definition::resolve(&self.dir, path)
    }
}

/// The cgroup of an instance (a path from the hierarchy roots), the same for both kinds:
/// `/corral-instances/NAME.UUIDPREFIX`, so instances of the same name under two corral roots
/// never share one.
pub fn instance_cgroup(definition: &Definition) -> PathBuf {
    let prefix: String = definition.uuid.chars().take(8).collect();
    Path::new("/corral-instances").join(format!("{}.{prefix}", definition.name))
}

/// How one kind of instance is run. `Send + Sync` so the manager can stop instances in
/// parallel ([`crate::Manager::stop_all`]).
pub trait Driver: Send + Sync {
    /// Writes what the supervisor needs into the instance's runtime directory and returns the
    /// command that runs the supervisor (in the foreground; the manager detaches it).
    fn supervisor_command(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<Command, CoreError>;

    /// The supervisor command that runs the guest saved in `saved` (a VM's snapshot state and
    /// memory) instead of booting it, prepared as [`Driver::supervisor_command`] prepares a
    /// boot. Only VMs can.
    fn restore_command(
        &self,
        definition: &Definition,
        _paths: &InstancePaths,
        _saved: &Path,
    ) -> Result<Command, CoreError> {
        Err(CoreError::Unsupported(format!(
            "instance {} cannot be started from a saved state",
            definition.name
        )))
    }

    /// Completes a definition about to be saved (a new instance, an edit) with what must be
    /// decided once and recorded, e.g. the formats of a VM's disks.
    fn settle_definition(
        &self,
        _definition: &mut Definition,
        _paths: &InstancePaths,
    ) -> Result<(), CoreError> {
        Ok(())
    }

    /// Checks, before anything starts, that what the definition points at exists.
    fn check_resources(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<(), CoreError>;

    /// Whether the supervisor learns where its log is (to rotate it) from `CORRAL_SUPERVISOR_LOG`
    /// in its environment; otherwise its command line says (a jailed VMM's environment is
    /// empty).
    fn log_path_in_environment(&self) -> bool {
        true
    }

    /// Cleans up after a supervisor that died without cleaning up itself (e.g. `kill -9`):
    /// whatever it ran must not keep running unsupervised.
    fn clean_up_lost_run(&self, name: &str, paths: &InstancePaths);
}
