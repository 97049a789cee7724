//! A snapshot on disk: `snapshots/ID/` in the instance's directory, with its record
//! `snapshot.json` (written last: a directory without one is no snapshot) beside what it keeps.
//!
//! The directory is named by a random id, not by the snapshot's name: a VM's disk bases are named
//! by absolute path in the headers of the overlays on them, so a directory never moves, and a
//! deleted snapshot whose bases later ones still use stays (without its record) under an id no
//! new name can clash with.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::SnapshotError;
use crate::definition::{Definition, DiskFormat};
use crate::error::CoreError;

/// The directory of an instance's snapshots, relative to the instance's directory (and the
/// place its VM disks' `allow_backing` names).
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// A snapshot's record, in its directory.
pub const RECORD_FILE: &str = "snapshot.json";

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub name: String,
    /// When it was taken, in seconds since the epoch.
    pub created: u64,
    /// Whether it holds the guest's memory and device state (a running VM's), not only disks.
    pub stateful: bool,
    /// The instance's definition when it was taken, as a restore brings it back.
    pub definition: Definition,
    /// The read-only base of each snapshotted disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<FrozenDisk>,
    /// A container's root filesystem copy, relative to the snapshot's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
}

/// Disk `index` of the definition as it was when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenDisk {
    pub index: usize,
    /// The base's file name in the snapshot's directory.
    pub base: PathBuf,
    pub format: DiskFormat,
}

/// One directory under `snapshots/`: its record, or `None` for a deleted snapshot whose bases
/// are still kept (or one whose making was interrupted).
#[derive(Debug)]
pub struct Entry {
    pub dir: PathBuf,
    pub record: Option<Record>,
}

/// The snapshots of the instance in `instance_dir`, in the order they were taken. Hidden
/// directories (being made or restored from) are left out.
pub fn entries(instance_dir: &Path) -> Result<Vec<Entry>, CoreError> {
    let dir = instance_dir.join(SNAPSHOTS_DIR);
    let list = match std::fs::read_dir(&dir) {
        Ok(list) => list,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(CoreError::io("list", &dir)(err)),
    };
    let mut entries = Vec::new();
    for entry in list {
        let entry = entry.map_err(CoreError::io("list", &dir))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden || !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let record = read(&dir)?;
        entries.push(Entry { dir, record });
    }
    entries.sort_by_key(|entry| entry.record.as_ref().map(|r| (r.created, r.name.clone())));
    Ok(entries)
}

/// The record in snapshot directory `dir`, `None` when it has none.
fn read(dir: &Path) -> Result<Option<Record>, CoreError> {
    let path = dir.join(RECORD_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| SnapshotError::Record { path, source }.into()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(CoreError::io("read", &path)(err)),
    }
}

/// Writes `record` into snapshot directory `dir`, atomically: the moment the snapshot exists.
pub fn write(dir: &Path, record: &Record) -> Result<(), CoreError> {
    let path = dir.join(RECORD_FILE);
    let json = serde_json::to_vec_pretty(record).map_err(|source| SnapshotError::Record {
        path: path.clone(),
        source,
    })?;
    corral_host::atomic::write_file(&path, &json, corral_host::atomic::PRIVATE_FILE_MODE)?;
    Ok(())
}

/// The first of `snap0`, `snap1`, ... no snapshot of `taken` is called.
pub fn default_name(taken: &[&str]) -> String {
    (0..)
        .map(|n| format!("snap{n}"))
        .find(|name| !taken.contains(&name.as_str()))
        .unwrap_or_default()
}

/// A new random directory id (16 hex digits).
pub fn new_id() -> Result<String, CoreError> {
    let uuid = crate::definition::new_uuid().map_err(crate::store::StoreError::from)?;
    Ok(uuid.replace('-', "")[..16].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_count_up_past_those_taken() {
        assert_eq!(default_name(&[]), "snap0");
        assert_eq!(default_name(&["snap0", "snap2"]), "snap1");
        assert_eq!(default_name(&["snap0", "snap1", "x"]), "snap2");
    }
}
