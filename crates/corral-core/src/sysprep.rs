//! Identity reset of instances and of their copies: `corral sysprep` on a stopped instance, and
//! the step clone and `publish --seal` run on the copy they make (never on their source).
//! The operations themselves are corral-sysprep's.

use std::path::Path;

use corral_disk::{BackingPolicy, OpenOptions};
use corral_sysprep::{HostKeyMode, MachineIdMode, Options, Report, SysprepError};

use crate::definition::{Definition, DiskFormat, Kind};
use crate::driver::InstancePaths;
use crate::error::CoreError;
use crate::lifecycle::Manager;
use crate::volume::Pool;

/// What a template keeps of its source's identity: nothing. Its machine-id is empty (the
/// instances made from it get one at first boot), its SSH host keys are gone (so no two of them
/// share one), and the leases, logs, histories and cloud-init state go with them.
pub fn seal_options() -> Options {
    Options {
        machine_id: MachineIdMode::Reset,
        host_keys: HostKeyMode::Remove,
        hostname: None,
        ..Options::default()
    }
}

/// What a clone gets: a template's reset, its own hostname, and its SSH host keys as `host_keys`
/// says (new ones made now by default: Debian-family guests make them only when
/// openssh-server is installed, so sshd would not start without them). The machine-id stays
/// empty: systemd writes a new one at first boot.
pub fn clone_options(hostname: &str, host_keys: HostKeyMode) -> Options {
    Options {
        host_keys,
        hostname: Some(hostname.to_string()),
        ..seal_options()
    }
}

impl Manager {
    /// Resets the identity of stopped instance `name` in place: its container root filesystem,
    /// or its VM's first disk (the root disk).
    pub fn sysprep(&self, name: &str, options: &Options) -> Result<Report, CoreError> {
        let _lock = self.lock(name)?;
        if self.reconciled(name)?.status.is_active() {
            return Err(CoreError::Unsupported(format!(
                "instance {name} is running; stop it first (`corral stop {name}`): its files \
                 are edited offline, or run `corral guest sysprep` inside it"
            )));
        }
        let definition = self.store().definition(name)?;
        let paths = self.paths(name)?;
        let pool = Pool::default_in(self.store().root());
        reset_instance(&pool, &paths, &definition, options)
    }
}

/// Resets the identity held by an instance's files: its root filesystem, or its first disk.
pub(crate) fn reset_instance(
    pool: &Pool,
    paths: &InstancePaths,
    definition: &Definition,
    options: &Options,
) -> Result<Report, CoreError> {
    let name = &definition.name;
    let failed = |source| CoreError::Sysprep {
        what: format!("instance {name}"),
        source: Box::new(source),
    };
    match definition.kind {
        Kind::Container => {
            let spec = definition.container.as_ref().ok_or_else(|| {
                CoreError::Unsupported(format!("instance {name} has no [container]"))
            })?;
            corral_sysprep::sysprep_rootfs(&paths.resolve(&spec.rootfs), options).map_err(failed)
        }
        Kind::Vm => {
            if definition.disks.is_empty() {
                return Err(CoreError::Unsupported(format!(
                    "instance {name} has no disk whose identity could be reset"
                )));
            }
            let (path, format) = crate::disks::disk_source(pool, paths, definition, 0)?;
            let places = crate::disks::backing_places(pool, paths, definition, 0);
            reset_disk(&path, format, BackingPolicy::Within(places), options).map_err(failed)
        }
    }
}

/// Resets the identity on a disk image the user names (`corral sysprep --disk`): a qcow2 file's
/// backing files must be in its own directory, as nothing else vouches for them.
pub fn reset_named_disk(
    path: &Path,
    format: Option<DiskFormat>,
    options: &Options,
) -> Result<Report, SysprepError> {
    let absolute = std::path::absolute(path).map_err(|source| SysprepError::Disk {
        action: "open",
        source: corral_disk::DiskError::Open {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let places = absolute
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    reset_disk(path, format, BackingPolicy::Within(places), options)
}

/// Resets the identity on the disk image at `path` (its root ext filesystem), opened writable
/// unless only a dry run is asked for. `format` as recorded; detected from the magic when `None`
/// (a disk the user names on the command line, as `corral create --disk` does).
pub fn reset_disk(
    path: &Path,
    format: Option<DiskFormat>,
    backing: BackingPolicy,
    options: &Options,
) -> Result<Report, SysprepError> {
    let mut disk = corral_disk::open(
        path,
        OpenOptions {
            format: format.and_then(DiskFormat::image_format),
            writable: !options.dry_run,
            backing,
            ..OpenOptions::read_only()
        },
    )
    .map_err(|source| SysprepError::Disk {
        action: "open",
        source,
    })?;
    corral_sysprep::sysprep_disk(disk.as_mut(), options)
}
