//! A running container's stateful snapshot: its processes checkpointed with CRIU beside a copy
//! of its root filesystem, both taken while the container is paused so they agree. The
//! container goes on running afterwards, as incus's stateful snapshots leave it (CRIU's
//! `--leave-running`); restoring starts the instance's monitor with `--restore`, which restores
//! the processes instead of creating the container. Where `criu check` fails the snapshot is
//! refused with CRIU's reason before anything is made.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_container::criu::CriuFlags;
use corral_container::{CheckpointOptions, Container};
use corral_control::{Request, Response};

use super::record::Record;
use crate::container::ContainerDriver;
use crate::driver::InstancePaths;
use crate::error::CoreError;
use crate::lifecycle::Manager;

/// A stateful container snapshot's CRIU images, in its directory.
pub const CRIU_STATE_DIR: &str = "criu";

/// Where CRIU works and logs while it dumps or restores an instance container, in the
/// instance's runtime directory (so a snapshot holds only its images).
pub(crate) const CRIU_DUMP_WORK_DIR: &str = "criu-dump";
pub(crate) const CRIU_RESTORE_WORK_DIR: &str = "criu-restore";

/// What instance containers are checkpointed with: established TCP connections (their nics
/// stay the same across a restore on this host) and file locks, as LXC (incus) asks of CRIU.
pub(crate) const INSTANCE_CRIU_FLAGS: CriuFlags = CriuFlags {
    tcp_established: true,
    ext_unix_sk: false,
    shell_job: false,
    file_locks: true,
};

/// Why CRIU cannot be used on this host, if it cannot (`criu check`, asked once).
pub(super) fn criu_unavailable() -> Option<String> {
    corral_container::criu::check::check()
        .err()
        .map(|unavailable| unavailable.reason)
}

impl Manager {
    /// Pauses the running container, checkpoints its processes (left running) and copies its
    /// root filesystem into a new snapshot, then resumes it; returns the snapshot's directory
    /// and how long the container was paused. It is resumed whatever happened.
    pub(super) fn snapshot_running_container(
        &self,
        paths: &InstancePaths,
        record: Record,
    ) -> Result<(PathBuf, Duration), CoreError> {
        let name = record.definition.name.clone();
        let started = Instant::now();
        self.ask(paths, &name, Request::Pause)?;
        let work = paths.runtime_dir().join(CRIU_DUMP_WORK_DIR);
        let made = super::snapshot_rootfs(paths, record, |staging| {
            let container = Container::load(&ContainerDriver::engine_root(paths), &name)?;
            container.checkpoint(&CheckpointOptions {
                image_path: staging.join(CRIU_STATE_DIR),
                work_path: Some(work.clone()),
                leave_running: true,
                pre_dump: false,
                flags: INSTANCE_CRIU_FLAGS,
            })?;
            Ok(())
        });
        let paused = started.elapsed();
        let resumed = self.ask(paths, &name, Request::Resume);
        let dir = made?;
        if let Err(err) = resumed {
            tracing::warn!("snapshot taken, but instance {name} stays paused: {err}");
        }
        Ok((dir, paused))
    }

    /// Sends `request` to the instance's supervisor; a refusal becomes an error naming it.
    fn ask(&self, paths: &InstancePaths, name: &str, request: Request) -> Result<(), CoreError> {
        let word = match request {
            Request::Pause => "pause",
            Request::Resume => "resume",
            _ => "request",
        };
        match self.call(paths, &request)? {
            Response::Error { message } => Err(CoreError::Refused {
                name: name.to_string(),
                request: word.to_string(),
                message,
            }),
            _ => Ok(()),
        }
    }
}

/// Where a snapshot in `dir` keeps the saved state the instance restarts from, if stateful.
pub(super) fn saved_state(dir: &Path, record: &Record) -> Option<PathBuf> {
    record.stateful.then(|| match record.definition.kind {
        crate::definition::Kind::Vm => dir.join(super::VM_STATE_DIR),
        crate::definition::Kind::Container => dir.join(CRIU_STATE_DIR),
    })
}
