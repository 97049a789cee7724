//! `corral snapshot create/list/restore/delete`: points an instance can be brought back to.
//!
//! A stopped VM's snapshot freezes each writable disk (the external-overlay design): the
//! disk file gets a second name in the snapshot's directory and becomes its read-only base, and
//! the instance continues on a new qcow2 overlay on that base (same virtual size), which its
//! definition then names (format qcow2, `allow_backing` listing `snapshots`). Restoring makes a
//! new empty overlay on the snapshot's bases, so a snapshot can be restored again and again; the
//! overlay the instance had is discarded. Read-only disks and directory volumes are left as they
//! are; a writable disk outside the instance's directory (a pool volume, a block device) is
//! refused. A stopped container's snapshot is a copy of its root filesystem (reflinked where the
//! filesystem can); restoring swaps a copy of it in.
//!
//! Every step is ordered so a process killed anywhere leaves the old state or the new one usable,
//! with [`collect`] (run under the lock by every snapshot command) finishing or undoing the rest:
//! the bases are linked and the overlays made, the record written, and then the definition saved
//! (the moment the instance switches); only then are the disks' old names removed.
//!
//! A running VM's snapshot is stateful. Its VMM is jailed and cannot reopen disks by path, so the
//! disks are not switched under it: the VMM saves the paused guest (memory and device state,
//! left paused) into its runtime directory and is ended, the disks are switched as for a stopped
//! VM (the state moving into the snapshot as `vm/`), and a new VMM restores the guest from that
//! state with the disks now on their overlays (same virtual sizes, which the VMM checks). The
//! guest is paused from the save until the new VMM runs it. Restoring a stateful snapshot starts
//! the instance from its state. A running container's snapshot is stateful too, where CRIU
//! works (`container`): its processes are checkpointed, it goes on running, and restoring the
//! snapshot restores them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_control::{Request, Response};

use serde::Serialize;

mod collect;
mod container;
pub mod error;
pub mod record;

pub use collect::collect;
pub use container::CRIU_STATE_DIR;
pub(crate) use container::{CRIU_RESTORE_WORK_DIR, INSTANCE_CRIU_FLAGS};
pub use error::SnapshotError;
pub use record::SNAPSHOTS_DIR;

use crate::definition::{validate_name, Definition, DiskFormat, Kind};
use crate::driver::InstancePaths;
use crate::error::CoreError;
use crate::lifecycle::{Manager, STOP_GRACE};
use crate::state::Status;
use record::{FrozenDisk, Record};

/// The start of the name of the directory a running VM's VMM saves its guest into, in the
/// instance's runtime directory (moved into the snapshot once complete).
const SAVING_PREFIX: &str = ".snapshot-";

/// A stateful snapshot's VM state (`state` and `memory`), in its directory.
pub const VM_STATE_DIR: &str = "vm";

/// A snapshot just taken, and how long its guest was paused for it (a running VM's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub info: SnapshotInfo,
    pub paused: Option<Duration>,
    /// What a stateful snapshot saved besides the files ("its memory and device state", "its
    /// processes"); empty for a stateless one.
    pub saved: &'static str,
}

/// What a stateful snapshot of a `kind` instance saves besides its files.
pub fn stateful_saves(kind: Kind) -> &'static str {
    match kind {
        Kind::Vm => "its memory and device state",
        Kind::Container => "its processes",
    }
}

/// One snapshot, as `corral snapshot list` shows it (and, read back, `corral --remote`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub stateful: bool,
    /// Bytes its files take on the host (bases and copies; blocks shared by reflinks count).
    pub size: u64,
}

/// A disk a snapshot freezes: its file (relative to the instance's directory) and format.
struct Freeze {
    index: usize,
    disk: PathBuf,
    format: corral_disk::DiskFormat,
}

impl Manager {
    /// Takes snapshot `snapshot` (by default the first free `snapN`) of instance `name`: a
    /// stopped instance's disks or root filesystem; a running VM's also with its memory and
    /// device state (the VM goes on running, under a new supervisor).
    pub fn create_snapshot(
        &self,
        name: &str,
        snapshot: Option<&str>,
    ) -> Result<Created, CoreError> {
        let _lock = self.lock(name)?;
        let status = self.reconciled(name)?.status;
        let mut definition = self.store().definition(name)?;
        let running = status == Status::Running;
        if status.is_active() && !running {
            return Err(SnapshotError::NotRunningNorStopped {
                name: name.to_string(),
                status: status.to_string(),
            }
            .into());
        }
        if running && definition.kind == Kind::Container {
            if let Some(reason) = container::criu_unavailable() {
                return Err(SnapshotError::Criu {
                    name: name.to_string(),
                    reason,
                }
                .into());
            }
        }
        let paths = self.paths(name)?;
        let pool = crate::volume::Pool::default_in(self.store().root());
        collect(&pool, &paths, &definition);
        let records = self.records(name)?;
        let taken: Vec<&str> = records.iter().map(|(_, r)| r.name.as_str()).collect();
        let snapshot = match snapshot {
            Some(snapshot) => {
                validate_name(snapshot).map_err(|_| SnapshotError::Name(snapshot.to_string()))?;
                if taken.contains(&snapshot) {
                    return Err(SnapshotError::Exists {
                        instance: name.to_string(),
                        snapshot: snapshot.to_string(),
                    }
                    .into());
                }
                snapshot.to_string()
            }
            None => record::default_name(&taken),
        };
        crate::disks::pin_formats(&mut definition, &paths)?;
        let record = Record {
            name: snapshot,
            created: crate::state::now_secs(),
            stateful: running,
            definition,
            disks: Vec::new(),
            rootfs: None,
        };
        let (dir, paused) = match record.definition.kind {
            Kind::Vm if running => {
                let (dir, paused) = self.snapshot_running(&pool, &paths, record)?;
                (dir, Some(paused))
            }
            Kind::Vm => (self.snapshot_disks(&pool, &paths, record, None)?, None),
            Kind::Container if running => {
                let (dir, paused) = self.snapshot_running_container(&paths, record)?;
                (dir, Some(paused))
            }
            Kind::Container => (snapshot_rootfs(&paths, record, |_| Ok(()))?, None),
        };
        let definition = self.store().definition(name)?;
        collect(&pool, &paths, &definition);
        let saved = match paused {
            None => "",
            Some(_) => stateful_saves(definition.kind),
        };
        Ok(Created {
            info: info(&dir)?,
            paused,
            saved,
        })
    }

    /// Saves the running VM's guest state (left paused), ends its VMM, switches its disks onto
    /// overlays and runs the guest on from the saved state in a new VMM; returns the snapshot's
    /// directory and how long the guest was paused. If the switch fails, the guest goes on from
    /// the saved state on its old disks.
    fn snapshot_running(
        &self,
        pool: &crate::volume::Pool,
        paths: &InstancePaths,
        record: Record,
    ) -> Result<(PathBuf, Duration), CoreError> {
        let name = record.definition.name.clone();
        // Refusals before the guest is touched.
        plan_freezes(&record.definition, paths)?;
        // In the VMM's jail (its runtime directory, which it sees at the same path).
        let saved = paths
            .runtime_dir()
            .join(format!("{SAVING_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&saved);
        let started = Instant::now();
        let request = Request::Snapshot {
            to: saved.clone(),
            leave_paused: true,
            diff: false,
        };
        let refused = |message: String| CoreError::Refused {
            name: name.clone(),
            request: "snapshot".to_string(),
            message,
        };
        match self.call(paths, &request)? {
            Response::State { .. } => {}
            Response::Error { message } => return Err(refused(message)),
            Response::Info(_) | Response::Migrated(_) => {
                return Err(refused("unexpected answer".to_string()))
            }
        }
        self.end_run_locked(&name, Request::Kill, STOP_GRACE, None)?;
        fail::fail_point!("snapshot.vm-saved");
        let dir = match self.snapshot_disks(pool, paths, record, Some(&saved)) {
            Ok(dir) => dir,
            Err(err) => {
                if let Err(again) = self.start_locked(&name, Some(&saved)) {
                    tracing::warn!("instance {name} could not go on from its saved state: {again}");
                }
                let _ = std::fs::remove_dir_all(&saved);
                return Err(err);
            }
        };
        self.start_locked(&name, Some(&dir.join(VM_STATE_DIR)))?;
        Ok((dir, started.elapsed()))
    }

    /// The snapshots of instance `name`, oldest first (after what an interrupted snapshot
    /// command left is settled, under the lock).
    pub fn list_snapshots(&self, name: &str) -> Result<Vec<SnapshotInfo>, CoreError> {
        let _lock = self.lock(name)?;
        let pool = crate::volume::Pool::default_in(self.store().root());
        collect(&pool, &self.paths(name)?, &self.store().definition(name)?);
        self.records(name)?
            .iter()
            .map(|(dir, _)| info(dir))
            .collect()
    }

    /// Brings the stopped instance `name` back to snapshot `snapshot`: its definition as it was
    /// then, each snapshotted disk a new empty overlay on the snapshot's base (what the disks
    /// held since is discarded), a container's root filesystem a copy of the snapshot's; a
    /// stateful snapshot's VM is started from its saved state (running again where it was).
    /// Returns whether the instance was started.
    pub fn restore_snapshot(&self, name: &str, snapshot: &str) -> Result<bool, CoreError> {
        let _lock = self.lock(name)?;
        if self.reconciled(name)?.status.is_active() {
            return Err(SnapshotError::RestoreRunning(name.to_string()).into());
        }
        let paths = self.paths(name)?;
        let pool = crate::volume::Pool::default_in(self.store().root());
        collect(&pool, &paths, &self.store().definition(name)?);
        let (dir, record) = self.find(name, snapshot)?;
        if record.stateful && record.definition.kind == Kind::Container {
            if let Some(reason) = container::criu_unavailable() {
                return Err(SnapshotError::CriuRestore {
                    name: name.to_string(),
                    snapshot: snapshot.to_string(),
                    reason,
                }
                .into());
            }
        }
        match record.definition.kind {
            Kind::Vm => self.restore_disks(&pool, &paths, &dir, &record)?,
            Kind::Container => self.restore_rootfs(&paths, &dir, &record)?,
        }
        collect(&pool, &paths, &self.store().definition(name)?);
        if let Some(saved) = container::saved_state(&dir, &record) {
            self.start_locked(name, Some(&saved))?;
        }
        Ok(record.stateful)
    }

    /// Deletes snapshot `snapshot` of instance `name` (running or not): its record goes at once,
    /// its bases once no disk's chain and no later snapshot uses them.
    pub fn delete_snapshot(&self, name: &str, snapshot: &str) -> Result<(), CoreError> {
        let _lock = self.lock(name)?;
        let (dir, _) = self.find(name, snapshot)?;
        let path = dir.join(record::RECORD_FILE);
        std::fs::remove_file(&path).map_err(CoreError::io("remove", &path))?;
        let paths = self.paths(name)?;
        let pool = crate::volume::Pool::default_in(self.store().root());
        collect(&pool, &paths, &self.store().definition(name)?);
        Ok(())
    }

    /// The snapshots of instance `name` that have a record, with their directories.
    fn records(&self, name: &str) -> Result<Vec<(PathBuf, Record)>, CoreError> {
        let entries = record::entries(&self.store().instance_dir(name))?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| Some((entry.dir, entry.record?)))
            .collect())
    }

    fn find(&self, name: &str, snapshot: &str) -> Result<(PathBuf, Record), CoreError> {
        self.store().require(name)?;
        self.records(name)?
            .into_iter()
            .find(|(_, record)| record.name == snapshot)
            .ok_or_else(|| {
                SnapshotError::NotFound {
                    instance: name.to_string(),
                    snapshot: snapshot.to_string(),
                }
                .into()
            })
    }

    /// Freezes the writable disks of the stopped VM `record.definition` into a new snapshot
    /// directory (with the guest state in `saved` moved in, for a stateful one) and moves the
    /// instance onto overlays of them; returns the directory. On failure `saved` is where it was.
    fn snapshot_disks(
        &self,
        pool: &crate::volume::Pool,
        paths: &InstancePaths,
        mut record: Record,
        saved: Option<&Path>,
    ) -> Result<PathBuf, CoreError> {
        let freezes = plan_freezes(&record.definition, paths)?;
        let dir = paths.dir.join(SNAPSHOTS_DIR).join(record::new_id()?);
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        corral_host::atomic::create_private_dir_all(&dir).map_err(CoreError::io("create", &dir))?;
        let mut switched = record.definition.clone();
        let mut overlays = Vec::new();
        let made = (|| {
            for freeze in &freezes {
                let base = PathBuf::from(format!("disk{}.{}", freeze.index, freeze.format.name()));
                std::fs::hard_link(paths.resolve(&freeze.disk), dir.join(&base))
                    .map_err(CoreError::io("link", dir.join(&base)))?;
                record.disks.push(FrozenDisk {
                    index: freeze.index,
                    base,
                    format: freeze.format.into(),
                });
            }
            fail::fail_point!("snapshot.bases-linked");
            for (freeze, frozen) in freezes.iter().zip(&record.disks) {
                let overlay = overlay_name(&freeze.disk)?;
                let base = dir.join(&frozen.base);
                let mut places = crate::disks::backing_places(pool, paths, &switched, freeze.index);
                places.push(base.clone());
                crate::disks::make_overlay(&paths.resolve(&overlay), &base, freeze.format, places)?;
                overlays.push(paths.resolve(&overlay));
                on_overlay(&mut switched, freeze.index, overlay);
            }
            if let Some(saved) = saved {
                let to = dir.join(VM_STATE_DIR);
                std::fs::rename(saved, &to).map_err(CoreError::io("move", &to))?;
            }
            record::write(&dir, &record)?;
            fail::fail_point!("snapshot.recorded");
            self.save_definition(&switched)
        })();
        if let Err(err) = made {
            if let Some(saved) = saved {
                // Back where the caller goes on from it (absent if it never moved).
                let _ = std::fs::rename(dir.join(VM_STATE_DIR), saved);
            }
            // Ours, and named by no definition.
            let _ = std::fs::remove_dir_all(&dir);
            for overlay in overlays {
                let _ = std::fs::remove_file(overlay);
            }
            return Err(err);
        }
        fail::fail_point!("snapshot.switched");
        for (freeze, frozen) in freezes.iter().zip(&record.disks) {
            let base = dir.join(&frozen.base);
            // Best effort: the base's content is what matters; a name left is collected.
            let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o400));
            let _ = std::fs::remove_file(paths.resolve(&freeze.disk));
        }
        Ok(dir)
    }

    /// Puts the VM `record.definition` back onto new overlays of the bases in `dir` and saves it.
    fn restore_disks(
        &self,
        pool: &crate::volume::Pool,
        paths: &InstancePaths,
        dir: &Path,
        record: &Record,
    ) -> Result<(), CoreError> {
        let mut definition = record.definition.clone();
        let mut overlays = Vec::new();
        let made = (|| {
            for frozen in &record.disks {
                let disk = definition
                    .disks
                    .get(frozen.index)
                    .and_then(|disk| crate::clone::inside(disk.path.as_deref()?))
                    .ok_or_else(|| SnapshotError::DiskOutside {
                        snapshot: record.name.clone(),
                        index: frozen.index,
                    })?;
                let overlay = overlay_name(&disk)?;
                let format = frozen
                    .format
                    .image_format()
                    .unwrap_or(corral_disk::DiskFormat::Raw);
                let base = dir.join(&frozen.base);
                let mut places =
                    crate::disks::backing_places(pool, paths, &definition, frozen.index);
                places.push(base.clone());
                crate::disks::make_overlay(&paths.resolve(&overlay), &base, format, places)?;
                overlays.push(paths.resolve(&overlay));
                on_overlay(&mut definition, frozen.index, overlay);
            }
            self.save_definition(&definition)
        })();
        if let Err(err) = made {
            for overlay in overlays {
                let _ = std::fs::remove_file(overlay);
            }
            return Err(err);
        }
        Ok(())
    }

    /// Swaps a copy of the snapshot's root filesystem (in `dir`) in for the container's.
    fn restore_rootfs(
        &self,
        paths: &InstancePaths,
        dir: &Path,
        record: &Record,
    ) -> Result<(), CoreError> {
        let (Some(copy), Some(rootfs)) = (&record.rootfs, rootfs_of(&record.definition, paths)?)
        else {
            return Ok(());
        };
        let staging = paths
            .dir
            .join(SNAPSHOTS_DIR)
            .join(format!(".restore-{}", std::process::id()));
        crate::copy::copy_tree(
            &dir.join(copy),
            &staging,
            &corral_image::progress::NoProgress,
        )?;
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &staging,
            nix::fcntl::AT_FDCWD,
            &rootfs,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|errno| CoreError::io("replace", &rootfs)(errno.into()))?;
        fail::fail_point!("snapshot.rootfs-swapped");
        // The old root filesystem; left, the next collection removes it.
        let _ = std::fs::remove_dir_all(&staging);
        self.save_definition(&record.definition)?;
        Ok(())
    }
}

/// The writable image disks of VM `definition` a snapshot freezes; a writable disk it cannot
/// keep is refused.
fn plan_freezes(definition: &Definition, paths: &InstancePaths) -> Result<Vec<Freeze>, CoreError> {
    let name = &definition.name;
    let mut freezes = Vec::new();
    for (index, disk) in definition.disks.iter().enumerate() {
        let Some(format) = disk.format.and_then(DiskFormat::image_format) else {
            continue;
        };
        if disk.readonly {
            continue;
        }
        let Some(relative) = disk.path.as_deref().and_then(crate::clone::inside) else {
            let described = match (&disk.volume, &disk.path) {
                (Some(volume), _) => format!("volume {volume}"),
                (None, Some(path)) => path.display().to_string(),
                (None, None) => String::new(),
            };
            return Err(SnapshotError::SharedDisk {
                instance: name.clone(),
                index,
                disk: described,
            }
            .into());
        };
        let path = paths.resolve(&relative);
        let meta = std::fs::symlink_metadata(&path).map_err(CoreError::io("inspect", &path))?;
        if !meta.is_file() {
            return Err(SnapshotError::NotAFile {
                instance: name.clone(),
                index,
                path,
            }
            .into());
        }
        freezes.push(Freeze {
            index,
            disk: relative,
            format,
        });
    }
    Ok(freezes)
}

/// Points disk `index` of `definition` at the qcow2 `overlay`, whose chain may use the
/// snapshots.
fn on_overlay(definition: &mut Definition, index: usize, overlay: PathBuf) {
    let disk = &mut definition.disks[index];
    disk.path = Some(overlay);
    disk.format = Some(DiskFormat::Qcow2);
    if !disk
        .allow_backing
        .iter()
        .any(|p| p == Path::new(SNAPSHOTS_DIR))
    {
        disk.allow_backing.push(PathBuf::from(SNAPSHOTS_DIR));
    }
}

/// A new overlay's name beside `disk`: its stem (without an earlier overlay's id) and a new id,
/// `root.qcow2` → `root-1a2b3c4d.qcow2`.
fn overlay_name(disk: &Path) -> Result<PathBuf, CoreError> {
    let stem = disk
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".to_string());
    let stem = match stem.rsplit_once('-') {
        Some((head, id)) if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head.to_string()
        }
        _ => stem,
    };
    let id = record::new_id()?;
    Ok(disk.with_file_name(format!("{stem}-{}.qcow2", &id[..8])))
}

/// A container's root filesystem, when it is inside its directory.
fn rootfs_of(definition: &Definition, paths: &InstancePaths) -> Result<Option<PathBuf>, CoreError> {
    let Some(spec) = &definition.container else {
        return Ok(None);
    };
    match crate::clone::inside(&spec.rootfs) {
        Some(relative) => Ok(Some(paths.resolve(&relative))),
        None => Err(SnapshotError::RootfsOutside {
            instance: definition.name.clone(),
            rootfs: spec.rootfs.clone(),
        }
        .into()),
    }
}

/// Copies the container's root filesystem into a new snapshot directory (made hidden, renamed
/// into place whole), after `checkpoint` has put what it saves into it (a running container's
/// processes); returns the directory.
fn snapshot_rootfs(
    paths: &InstancePaths,
    mut record: Record,
    checkpoint: impl FnOnce(&Path) -> Result<(), CoreError>,
) -> Result<PathBuf, CoreError> {
    let snapshots = paths.dir.join(SNAPSHOTS_DIR);
    let dir = snapshots.join(record::new_id()?);
    let staging = snapshots.join(format!(".new-{}", std::process::id()));
    corral_host::atomic::create_private_dir_all(&staging)
        .map_err(CoreError::io("create", &staging))?;
    let made = (|| {
        let rootfs = rootfs_of(&record.definition, paths)?;
        checkpoint(&staging)?;
        if let Some(rootfs) = rootfs {
            crate::copy::copy_tree(
                &rootfs,
                &staging.join("rootfs"),
                &corral_image::progress::NoProgress,
            )?;
            record.rootfs = Some(PathBuf::from("rootfs"));
        }
        record::write(&staging, &record)?;
        corral_host::atomic::rename_noreplace(&staging, &dir).map_err(CoreError::io("create", &dir))
    })();
    if let Err(err) = made {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }
    Ok(dir)
}

/// The listing of the snapshot in `dir`.
fn info(dir: &Path) -> Result<SnapshotInfo, CoreError> {
    let path = dir.join(record::RECORD_FILE);
    let bytes = std::fs::read(&path).map_err(CoreError::io("read", &path))?;
    let record: Record =
        serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Record { path, source })?;
    let mut size = 0;
    corral_host::tree::walk::<CoreError>(dir, |_, meta| {
        size += meta.blocks() * 512;
        Ok(())
    })?;
    Ok(SnapshotInfo {
        name: record.name,
        created: record.created,
        stateful: record.stateful,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_are_named_after_the_disk_without_an_earlier_id() {
        let first = overlay_name(Path::new("root.qcow2")).unwrap();
        let name = first.to_string_lossy().into_owned();
        assert!(
            name.starts_with("root-") && name.ends_with(".qcow2"),
            "{name}"
        );
        assert_eq!(name.len(), "root-12345678.qcow2".len());
        let second = overlay_name(&first).unwrap();
        assert_eq!(second.to_string_lossy().len(), name.len());
        assert_ne!(first, second);
        let nested = overlay_name(Path::new("d/data.raw")).unwrap();
        assert!(nested.starts_with("d") && nested.to_string_lossy().contains("data-"));
    }
}
