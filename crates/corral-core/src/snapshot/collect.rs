//! Keeping an instance's snapshot files consistent: what an interrupted snapshot command left is
//! rolled back or forward, and the bases of deleted snapshots go once no disk chain reaches them.
//!
//! This mirrors [`crate::bases::Bases::remove_unused`] for bases that belong to one instance
//! (there: a base is used while a definition's `allow_backing` names it; here every overlay of
//! the instance allows the whole `snapshots/` directory, so use is decided by the backing
//! chains themselves). It runs under the instance's lock, at the start and end of every snapshot
//! command; each step is best effort and the next command retries.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use corral_disk::{BackingPolicy, OpenOptions};

use super::record::{self, Entry, SNAPSHOTS_DIR};
use crate::definition::Definition;
use crate::driver::InstancePaths;
use crate::volume::Pool;

/// Brings the snapshot files of the instance (`definition`, in `paths`) back to a consistent
/// state:
///
/// 1. hidden directories under `snapshots/` (a snapshot or restore being made) and a running
///    VM's guest state saved into its runtime directory but not moved into a snapshot are
///    removed (the caller holds the lock, so their maker is gone);
/// 2. a snapshot whose base is still a disk the definition names was interrupted before the
///    instance moved onto its overlay: it is removed (the disk keeps its content);
/// 3. a file beside the definition's disks that no disk names and that is a base under its old
///    name, or a qcow2 overlay on a snapshot's base (one made for a switch that did not happen,
///    or the overlay a restore replaced), is removed;
/// 4. a directory without a record (a deleted snapshot) goes once none of its files is in the
///    backing chain of a disk or of a snapshot's base.
pub fn collect(pool: &Pool, paths: &InstancePaths, definition: &Definition) {
    let snapshots = paths.dir.join(SNAPSHOTS_DIR);
    remove_hidden(&snapshots, ".");
    remove_hidden(&paths.runtime_dir(), super::SAVING_PREFIX);
    if !snapshots.is_dir() {
        return;
    }
    let Ok(mut entries) = record::entries(&paths.dir) else {
        return;
    };
    let named = named_disks(paths, definition);
    let named_inodes: HashSet<(u64, u64)> = named.iter().filter_map(|p| inode(p)).collect();
    let interrupted: Vec<PathBuf> = entries
        .iter()
        .filter(|entry| {
            entry.record.as_ref().is_some_and(|record| {
                record.disks.iter().any(|disk| {
                    inode(&entry.dir.join(&disk.base)).is_some_and(|i| named_inodes.contains(&i))
                })
            })
        })
        .map(|entry| entry.dir.clone())
        .collect();
    let snapshots = std::fs::canonicalize(&snapshots).unwrap_or(snapshots);
    let places = places(pool, paths, definition, &entries, &snapshots);
    // While the interrupted snapshots' bases are there, the overlays made on them are known.
    remove_strays(paths, definition, &entries, &named, (&snapshots, &places));
    for dir in &interrupted {
        tracing::info!(
            "removing {}, left by an interrupted snapshot",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(dir);
    }
    entries.retain(|entry| !interrupted.contains(&entry.dir));
    let mut roots: Vec<(PathBuf, corral_disk::DiskFormat)> = definition
        .disks
        .iter()
        .zip(&named_or_none(paths, definition))
        .filter_map(|(disk, path)| Some((path.clone()?, disk.format?.image_format()?)))
        .collect();
    for entry in &entries {
        if let Some(record) = &entry.record {
            roots.extend(record.disks.iter().filter_map(|disk| {
                Some((entry.dir.join(&disk.base), disk.format.image_format()?))
            }));
        }
    }
    let mut used = HashSet::new();
    for (path, format) in roots {
        let options = OpenOptions {
            format: Some(format),
            backing: BackingPolicy::Within(places.clone()),
            ..OpenOptions::read_only()
        };
        let Ok(info) = corral_disk::info(&path, options) else {
            // A chain that cannot be read might reach any base: keep them all.
            return;
        };
        used.insert(canonical(&path));
        used.extend(info.backing_chain.iter().map(|b| canonical(&b.path)));
    }
    for entry in entries.iter().filter(|entry| entry.record.is_none()) {
        let Ok(files) = std::fs::read_dir(&entry.dir) else {
            continue;
        };
        let in_use = files
            .flatten()
            .any(|file| used.contains(&canonical(&file.path())));
        if !in_use {
            let _ = std::fs::remove_dir_all(&entry.dir);
        }
    }
}

/// Removes the directories in `dir` whose names start with `prefix` (their makers are gone:
/// the caller holds the lock). Best effort: retried by the next collection.
fn remove_hidden(dir: &Path, prefix: &str) {
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in list.flatten() {
        let ours = entry.file_name().to_string_lossy().starts_with(prefix);
        if ours && entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes the files beside the definition's disks that no disk names and that are a snapshot's
/// base under another name or a qcow2 overlay on a file under `snapshots` (their chains read
/// within `places`).
fn remove_strays(
    paths: &InstancePaths,
    definition: &Definition,
    entries: &[Entry],
    named: &HashSet<PathBuf>,
    (snapshots, places): (&Path, &[PathBuf]),
) {
    let mut bases = HashSet::new();
    let mut dirs = HashSet::new();
    for entry in entries {
        let Ok(files) = std::fs::read_dir(&entry.dir) else {
            continue;
        };
        bases.extend(files.flatten().filter_map(|file| inode(&file.path())));
        // Where the disks were when the snapshot was taken: a restore's old overlay is there.
        if let Some(record) = &entry.record {
            dirs.extend(disk_dirs(paths, &record.definition));
        }
    }
    dirs.extend(disk_dirs(paths, definition));
    for dir in dirs {
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let Ok(meta) = file.metadata() else {
                continue;
            };
            if !meta.is_file() || named.contains(&path) {
                continue;
            }
            if bases.contains(&(meta.dev(), meta.ino())) || overlay_on(&path, snapshots, places) {
                tracing::info!("removing {}, no longer used by a disk", path.display());
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Whether `path` is a qcow2 image whose backing file is under `snapshots` (its chain read
/// within `places`).
fn overlay_on(path: &Path, snapshots: &Path, places: &[PathBuf]) -> bool {
    if !matches!(
        corral_disk::detect_format(path),
        Ok(corral_disk::DiskFormat::Qcow2)
    ) {
        return false;
    }
    let options = OpenOptions {
        format: Some(corral_disk::DiskFormat::Qcow2),
        backing: BackingPolicy::Within(places.to_vec()),
        ..OpenOptions::read_only()
    };
    corral_disk::info(path, options).is_ok_and(|info| {
        info.backing_chain
            .first()
            .is_some_and(|backing| canonical(&backing.path).starts_with(snapshots))
    })
}

/// The directories (inside the instance's) that hold the disks of `definition`.
fn disk_dirs(paths: &InstancePaths, definition: &Definition) -> Vec<PathBuf> {
    named_or_none(paths, definition)
        .into_iter()
        .flatten()
        .filter_map(|path| path.parent().map(Path::to_path_buf))
        .collect()
}

/// The files of the definition's disks that are inside the instance's directory.
fn named_disks(paths: &InstancePaths, definition: &Definition) -> HashSet<PathBuf> {
    named_or_none(paths, definition)
        .into_iter()
        .flatten()
        .collect()
}

/// For each disk of `definition`, its file when it is inside the instance's directory.
fn named_or_none(paths: &InstancePaths, definition: &Definition) -> Vec<Option<PathBuf>> {
    definition
        .disks
        .iter()
        .map(|disk| {
            let relative = crate::clone::inside(disk.path.as_deref()?)?;
            Some(paths.resolve(&relative))
        })
        .collect()
}

/// Where the chains of the instance's disks and snapshot bases may lead: the pool, every
/// `allow_backing` of the definition and of the snapshots' definitions, and `snapshots`.
fn places(
    pool: &Pool,
    paths: &InstancePaths,
    definition: &Definition,
    entries: &[Entry],
    snapshots: &Path,
) -> Vec<PathBuf> {
    let definitions = std::iter::once(definition).chain(
        entries
            .iter()
            .filter_map(|e| e.record.as_ref().map(|r| &r.definition)),
    );
    let mut places = vec![pool.dir().to_path_buf(), snapshots.to_path_buf()];
    for definition in definitions {
        for index in 0..definition.disks.len() {
            places.extend(crate::disks::backing_places(pool, paths, definition, index));
        }
    }
    places
}

fn inode(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(disk: &str) -> Definition {
        let text = format!(
            "name = \"web\"\ntype = \"vm\"\nuuid = \"f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b\"\n\
             [boot]\nkernel = \"vmlinux\"\n[[disks]]\npath = \"{disk}\"\nformat = \"qcow2\"\n\
             allow_backing = [\"snapshots\"]\n"
        );
        toml::from_str(&text).unwrap()
    }

    fn overlay(path: &Path, base: &Path, format: corral_disk::DiskFormat) {
        let snapshots = base.parent().and_then(Path::parent).unwrap().to_path_buf();
        crate::disks::make_overlay(path, base, format, vec![snapshots]).unwrap();
    }

    #[test]
    fn deleted_snapshots_stay_while_a_chain_needs_them_and_strays_go() {
        let root = tempfile::tempdir().unwrap();
        let pool = Pool::default_in(root.path());
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let snapshots = paths.dir.join(SNAPSHOTS_DIR);
        for id in ["a", "b", "c"] {
            std::fs::create_dir_all(snapshots.join(id)).unwrap();
        }
        // a ← b ← the disk: two deleted snapshots (no records) the disk's chain runs through.
        let a = snapshots.join("a/disk0.raw");
        std::fs::write(&a, vec![1; 1 << 16]).unwrap();
        let b = snapshots.join("b/disk0.qcow2");
        overlay(&b, &a, corral_disk::DiskFormat::Raw);
        overlay(
            &paths.dir.join("root-11111111.qcow2"),
            &b,
            corral_disk::DiskFormat::Qcow2,
        );
        // c: a deleted snapshot nothing builds on; the disk's old name (a second name of a's
        // base), an overlay no disk names, and a hidden directory of a killed command.
        std::fs::write(snapshots.join("c/disk0.raw"), b"c").unwrap();
        std::fs::hard_link(&a, paths.dir.join("root.raw")).unwrap();
        overlay(
            &paths.dir.join("root-22222222.qcow2"),
            &b,
            corral_disk::DiskFormat::Qcow2,
        );
        std::fs::create_dir_all(snapshots.join(".new-1")).unwrap();

        collect(&pool, &paths, &definition("root-11111111.qcow2"));
        let left = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != SNAPSHOTS_DIR)
                .collect();
            names.sort();
            names
        };
        assert_eq!(left(&snapshots), ["a", "b"]);
        assert_eq!(left(&paths.dir), ["root-11111111.qcow2"]);

        // The disk back on a's base (a restore): b is used by nothing, the old overlay is a
        // stray.
        overlay(
            &paths.dir.join("root-33333333.qcow2"),
            &a,
            corral_disk::DiskFormat::Raw,
        );
        collect(&pool, &paths, &definition("root-33333333.qcow2"));
        assert_eq!(left(&snapshots), ["a"]);
        assert_eq!(left(&paths.dir), ["root-33333333.qcow2"]);
    }
}
