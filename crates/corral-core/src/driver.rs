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

/// How a supervisor receives a live-migrated guest: its VMM waits at `socket` (in the runtime
/// directory) for a source presenting the token in `token_file`.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub socket: PathBuf,
    pub token_file: PathBuf,
    /// How long the start may take: the whole transfer happens before the VMM serves its
    /// control socket.
    pub wait: std::time::Duration,
}

/// The cgroup of an instance (a path from the hierarchy roots), the same for both kinds:
/// `/corral-instances/NAME.UUIDPREFIX.DIRHASH`, so instances of the same name under two corral
/// roots never share one, not even an instance live-migrated between two roots on one host
/// (the same name and UUID, its two VMMs running at once for a moment).
pub fn instance_cgroup(definition: &Definition, paths: &InstancePaths) -> PathBuf {
    let prefix: String = definition.uuid.chars().take(8).collect();
    Path::new("/corral-instances").join(format!(
        "{}.{prefix}.{:08x}",
        definition.name,
        dir_hash(&paths.dir)
    ))
}

/// A short stable tag of an instance directory (FNV-1a of its path, folded to 32 bits).
fn dir_hash(dir: &Path) -> u32 {
    use std::os::unix::ffi::OsStrExt;
    let hash = dir
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash ^ (hash >> 32)) as u32
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
    /// memory, a container's CRIU images) instead of booting it: the boot's command, prepared
    /// as for a boot (the definition names the disks or rootfs the snapshot put back), with
    /// `--restore SAVED`.
    fn restore_command(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
        saved: &Path,
    ) -> Result<Command, CoreError> {
        let mut command = self.supervisor_command(definition, paths)?;
        command.arg("--restore").arg(saved);
        Ok(command)
    }

    /// The supervisor command that waits for the guest a live migration's source sends (see
    /// [`Incoming`]) instead of booting it, prepared as [`Driver::supervisor_command`] prepares
    /// a boot but without opening the guest's disks (the source still runs on them). Only VMs
    /// can.
    fn incoming_command(
        &self,
        definition: &Definition,
        _paths: &InstancePaths,
        _incoming: &Incoming,
    ) -> Result<Command, CoreError> {
        Err(CoreError::Unsupported(format!(
            "instance {} cannot receive a live migration: only VMs can",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_instance_under_two_roots_gets_two_cgroups() {
        let definition = Definition::new(
            "web",
            crate::definition::Kind::Vm,
            "0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11",
        );
        let here = instance_cgroup(&definition, &InstancePaths::new("/a/instances/web"));
        let there = instance_cgroup(&definition, &InstancePaths::new("/b/instances/web"));
        assert!(here.starts_with("/corral-instances"));
        assert!(
            here.to_string_lossy()
                .starts_with("/corral-instances/web.0e5c8a52."),
            "{}",
            here.display()
        );
        assert_ne!(here, there);
        assert_eq!(
            here,
            instance_cgroup(&definition, &InstancePaths::new("/a/instances/web"))
        );
    }
}
