//! Identity reset ("sysprep") of a guest's filesystem, offline: what makes a copy of a machine a
//! new machine (machine-id, SSH host keys, hostname, leases, MAC pins, logs, histories, random
//! seeds, cloud-init state, optionally the filesystem UUID), as named operations after
//! virt-sysprep's (`Operation`). Used by clone, template and `corral sysprep`.
//!
//! Two kinds of target, and neither is ever mounted on the host (a guest-controlled filesystem
//! could attack the host kernel):
//! - [`sysprep_rootfs`]: a container's root directory, every path resolved inside it by the
//!   kernel (`openat2(RESOLVE_IN_ROOT)`, `rootfs.rs`);
//! - [`sysprep_disk`]: a VM disk (raw or qcow2, MBR/GPT or no partition table) whose root is an
//!   ext2/3/4 filesystem, edited in userspace with e2fsprogs on a staged copy of the filesystem
//!   and written back only where it changed (`disk/`). Other filesystems are refused: the guest
//!   then resets itself at first boot.
//!
//! Every run plans first (`ops/` against a read-only view, `plan.rs`) and changes second, so a
//! dry run reports exactly what a real run does, and a disk is left unchanged when anything
//! fails before its write-back.

mod command;
mod disk;
mod error;
mod keygen;
mod operation;
mod ops;
mod plan;
mod report;
mod rootfs;
mod view;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use corral_disk::Disk;
use view::GuestView;

pub use error::{Result, SysprepError};
pub use operation::{Operation, UnknownOperation};
pub use report::{Action, Change, Report};

/// What the `machine-id` operation leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MachineIdMode {
    /// Empty files: systemd writes a new id at first boot, D-Bus follows.
    #[default]
    Reset,
    /// A new random id written now (the clone's id is known before it boots).
    New,
}

/// What the `ssh-hostkeys` operation leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostKeyMode {
    /// No host keys: sshd (or cloud-init) makes them at first boot.
    #[default]
    Remove,
    /// New keys made on the host with `ssh-keygen` (the clone's fingerprints are known before
    /// it boots).
    New,
}

/// What to reset, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The operations to run; [`Operation::defaults`] unless the caller says otherwise.
    pub operations: BTreeSet<Operation>,
    /// The clone's hostname, for the `hostname` operation (skipped when `None`).
    pub hostname: Option<String>,
    pub machine_id: MachineIdMode,
    pub host_keys: HostKeyMode,
    /// Report what would change, change nothing.
    pub dry_run: bool,
    /// Where a disk's filesystem is staged while it is edited (the system's temporary
    /// directory when `None`); it needs room for the filesystem's allocated data.
    pub scratch_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            operations: Operation::defaults(),
            hostname: None,
            machine_id: MachineIdMode::default(),
            host_keys: HostKeyMode::default(),
            dry_run: false,
            scratch_dir: None,
        }
    }
}

/// Resets the identity of the container root filesystem at `dir`. Edits are applied in the
/// report's order; an error stops at the failing one, so the edits before it are done.
pub fn sysprep_rootfs(dir: &Path, options: &Options) -> Result<Report> {
    if options.operations.contains(&Operation::FsUuids) {
        return Err(SysprepError::FsUuidsOnDirectory);
    }
    let root = rootfs::RootDir::open(dir)?;
    let etc = root.lookup(Path::new("/etc"), true)?;
    if !etc.is_some_and(|node| node.kind == view::Kind::Dir) {
        return Err(SysprepError::NotARoot {
            dir: dir.to_path_buf(),
        });
    }
    let plan = ops::plan(&root, options)?;
    if !options.dry_run {
        rootfs::apply(&root, &plan)?;
    }
    Ok(plan.report(options.dry_run))
}

/// Resets the identity of the VM disk `disk`: its root filesystem is the first ext2/3/4
/// filesystem with `/etc` (in partition order, or the whole disk without a partition table).
/// Nothing is written unless every edit was made and verified on the staged copy; only the
/// blocks that changed are written back, then the disk is flushed.
pub fn sysprep_disk(disk: &mut dyn Disk, options: &Options) -> Result<Report> {
    disk::sysprep(disk, options)
}
