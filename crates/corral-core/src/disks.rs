//! How an instance's disks reach the host, and the rules that keep a guest's disk from reaching
//! anything else:
//!
//! - **Formats are decided once** ([`pin_formats`]): when a disk is attached, a path disk's format
//!   is taken from the definition or detected from the file's magic, and recorded; a start never
//!   guesses again (a guest can write a qcow2 header naming `/etc/shadow` as its backing file into
//!   its raw disk: QEMU's CVE-2008-2004). A pool volume's format is its file suffix, never probed.
//! - **Backing files are confined** ([`backing_places`]): a qcow2 chain may only use files inside
//!   the storage pool, or those the disk's `allow_backing` lists.
//! - **One writer per image** ([`preflight`]): a start whose disk another process holds (another
//!   VM, `qemu-img`) is refused with the holder's name, before the supervisor starts; the VMM's own
//!   locks (corral-disk) close the race.

use std::path::{Path, PathBuf};

use corral_disk::{BackingPolicy, DiskError, OpenOptions, Qcow2CreateOptions};

use crate::definition::{Definition, DiskFormat};
use crate::driver::InstancePaths;
use crate::error::CoreError;
use crate::volume::Pool;

/// Where disk `index` of `definition` is on the host, and its format: a pool volume's from its
/// file name, a path disk's as the definition records it (`None` if it records none).
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
            match disk.format {
                Some(recorded) if recorded != format => Err(CoreError::Unsupported(format!(
                    "disks[{index}] says format {recorded:?} but volume {volume} is {format:?}; \
                     remove `format` from it with `corral config edit {}`",
                    definition.name
                ))),
                _ => Ok((path, Some(format))),
            }
        }
        (None, None) => Err(CoreError::Unsupported(format!(
            "disks[{index}] has no source"
        ))),
    }
}

/// Records the format of every path disk of a VM that has none, detected from the file's magic:
/// the one time corral looks at a disk's contents to decide how to open it.
pub fn pin_formats(definition: &mut Definition, paths: &InstancePaths) -> Result<(), CoreError> {
    for disk in &mut definition.disks {
        let Some(path) = &disk.path else {
            continue;
        };
        if disk.format.is_some() {
            continue;
        }
        let path = paths.resolve(path);
        if !path.exists() {
            return Err(CoreError::Missing { what: "disk", path });
        }
        disk.format = Some(corral_disk::detect_format(&path)?.into());
    }
    Ok(())
}

/// Where the backing files of disk `index` may be: the storage pool, and what its
/// `allow_backing` lists.
pub fn backing_places(
    pool: &Pool,
    paths: &InstancePaths,
    definition: &Definition,
    index: usize,
) -> Vec<PathBuf> {
    std::iter::once(pool.dir().to_path_buf())
        .chain(
            definition.disks[index]
                .allow_backing
                .iter()
                .map(|place| paths.resolve(place)),
        )
        .collect()
}

/// Checks, before a start, that each disk's backing chain stays in its allowed places and that no
/// other process holds it: the refusal names the instance (or process) using it and the fix.
pub fn preflight(
    pool: &Pool,
    paths: &InstancePaths,
    definition: &Definition,
) -> Result<(), CoreError> {
    for (index, disk) in definition.disks.iter().enumerate() {
        let (path, format) = disk_source(pool, paths, definition, index)?;
        let options = OpenOptions {
            format: format.and_then(DiskFormat::image_format),
            backing: BackingPolicy::Within(backing_places(pool, paths, definition, index)),
            ..OpenOptions::read_only()
        };
        let refused = |source| match source {
            DiskError::BackingNotAllowed { .. } => CoreError::BackingNotAllowed {
                instance: definition.name.clone(),
                index,
                source,
            },
            source => CoreError::DiskUnusable {
                instance: definition.name.clone(),
                index,
                source,
            },
        };
        corral_disk::info(&path, options).map_err(refused)?;
        match corral_disk::check_lock(&path, !disk.readonly) {
            Ok(()) => {}
            Err(DiskError::Locked { holders, .. }) => {
                return Err(CoreError::DiskInUse {
                    instance: definition.name.clone(),
                    path,
                    users: pool.describe_holders(&holders),
                })
            }
            Err(err) => return Err(refused(err)),
        }
    }
    Ok(())
}

/// Makes a qcow2 overlay at `path` on the read-only `base` of `format` (named by that path in
/// the header), of the base's virtual size; the base's own chain may only use `places`.
pub(crate) fn make_overlay(
    path: &Path,
    base: &Path,
    format: corral_disk::DiskFormat,
    places: Vec<PathBuf>,
) -> Result<(), CoreError> {
    corral_disk::create_qcow2(
        path,
        &Qcow2CreateOptions {
            size: None,
            cluster_size: None,
            backing_file: Some(base.to_path_buf()),
            backing_format: Some(format),
            backing_policy: BackingPolicy::Within(places),
        },
    )?;
    Ok(())
}
