//! Drivers: the one place that knows how a VM or a container is run.
//!
//! Both kinds run under a supervisor process that outlives the CLI, serves the control protocol
//! on `control.sock`, the console on `console.sock` (logged to `console.log`) and writes
//! `exit.json` before it ends. A driver only prepares the supervisor's input and names its
//! command line; everything else (start, stop, pause, console, reconcile) is the same for both.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::definition::{Definition, DiskFormat};
use crate::error::CoreError;
use crate::volume::Pool;

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
        self.dir.join("control.sock")
    }

    /// The console clients attach to.
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// Everything the console printed (rotated to `console.log.1`).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Why the supervisor ended.
    pub fn exit_record(&self) -> PathBuf {
        self.dir.join("exit.json")
    }

    /// The supervisor's own stderr (its log).
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    /// Files generated for one run (VM config, OCI bundle).
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// `path` from a definition, anchored at the instance directory when relative.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        Definition::resolve(&self.dir, path)
    }
}

/// Where disk `index` of `definition` is on the host, and its format when the definition or the
/// pool knows it (a pool volume's format is in its file name).
pub fn disk_source(
    pool: &Pool,
    paths: &InstancePaths,
    definition: &Definition,
    index: usize,
) -> Result<(PathBuf, Option<DiskFormat>), CoreError> {
    let disk = &definition.disks[index];
    match (&disk.path, &disk.volume) {
        (Some(path), _) => Ok((paths.resolve(path), disk.format)),
        (None, Some(volume)) => {
            let (path, format) = pool.find(volume)?;
            Ok((path, disk.format.or(Some(format))))
        }
        (None, None) => Err(CoreError::Unsupported(format!(
            "disks[{index}] has no source"
        ))),
    }
}

/// How one kind of instance is run.
pub trait Driver {
    /// Writes what the supervisor needs into the instance's runtime directory and returns the
    /// command that runs the supervisor (in the foreground; the manager detaches it).
    fn supervisor_command(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<Command, CoreError>;

    /// Checks, before anything starts, that what the definition points at exists.
    fn check_resources(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<(), CoreError>;

    /// Cleans up after a supervisor that died without cleaning up itself (e.g. `kill -9`):
    /// whatever it ran must not keep running unsupervised.
    fn clean_up_lost_run(&self, name: &str, paths: &InstancePaths);
}
