//! Read-only bases of linked clones: `bases/ID.FORMAT` under the corral root.
//!
//! A linked clone of a VM whose disk stands alone (no backing file) freezes that disk: the file
//! gets a second name here (a hard link: nothing is copied, whatever its size) and becomes
//! read-only, and the source and the clone each go on with a new qcow2 overlay on it. A base
//! belongs to no instance. It is used by every instance one of whose disks lists it in
//! `allow_backing` (which a qcow2 chain needs to reach it anyway, so the reference cannot be
//! forgotten), and removed by [`Bases::remove_unused`] once none does: after a delete and after a
//! clone. A clone holds the bases' shared lock from the moment it links a base until the
//! instances naming it are saved; the removal takes it exclusively, without waiting, so it never
//! takes a base from under a clone being made.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::definition::Definition;
use crate::error::CoreError;
use crate::store::Store;

/// The directory of bases under the corral root.
pub const BASES_DIR: &str = "bases";

/// The bases of one corral root.
#[derive(Clone, Debug)]
pub struct Bases {
    dir: PathBuf,
}

/// The bases' lock (an `flock` on their directory), released on drop.
#[derive(Debug)]
pub struct BasesLock {
    _lock: Flock<File>,
}

impl Bases {
    /// The bases of the corral root `root` (made absolute: instances name bases by path).
    pub fn in_root(root: &Path) -> Self {
        let dir = root.join(BASES_DIR);
        Self {
            dir: std::path::absolute(&dir).unwrap_or(dir),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shared lock, held while a clone links bases and saves the instances naming them.
    pub fn lock_shared(&self) -> Result<BasesLock, CoreError> {
        corral_host::atomic::create_private_dir_all(&self.dir)
            .map_err(CoreError::io("create", &self.dir))?;
        self.flock(FlockArg::LockShared)
    }

    fn flock(&self, operation: FlockArg) -> Result<BasesLock, CoreError> {
        let dir = File::open(&self.dir).map_err(CoreError::io("open", &self.dir))?;
        Flock::lock(dir, operation)
            .map(|lock| BasesLock { _lock: lock })
            .map_err(|(_, errno)| CoreError::io("lock", &self.dir)(errno.into()))
    }

    /// Where the base `id` of `format` is.
    pub fn path(&self, id: &str, format: corral_disk::DiskFormat) -> PathBuf {
        self.dir.join(format!("{id}.{}", format.name()))
    }

    /// Makes `disk` the read-only base `base` (a path from [`Bases::path`]): a second name for
    /// the same file, so it costs nothing. The caller holds the shared lock, has the disk's
    /// instance locked and stopped, and stops writing the disk under its old name before any
    /// overlay on the base is used.
    pub fn freeze(&self, disk: &Path, base: &Path) -> Result<(), CoreError> {
        std::fs::hard_link(disk, base).map_err(CoreError::io("link", base))?;
        fail::fail_point!("clone.base-linked");
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o400))
            .map_err(CoreError::io("make read-only", base))
    }

    /// Removes the bases no instance uses any more, and what a linked clone killed half-way left
    /// in its source's directory: a file no disk of the definition names that is a second name
    /// of a base (the disk's old name) or a qcow2 overlay on one (an overlay made for the source
    /// before its definition was saved). Best effort, and skipped while a clone holds the lock
    /// or a definition cannot be read (it might name a base): the next delete or clone retries.
    pub fn remove_unused(&self, store: &Store) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let Ok(_lock) = self.flock(FlockArg::LockExclusiveNonblock) else {
            return;
        };
        let bases: Vec<(PathBuf, std::fs::Metadata)> = entries
            .flatten()
            .filter_map(|entry| Some((entry.path(), entry.metadata().ok()?)))
            .filter(|(_, meta)| meta.is_file())
            .collect();
        if bases.is_empty() {
            return;
        }
        let inodes: HashSet<(u64, u64)> = bases
            .iter()
            .map(|(_, meta)| (meta.dev(), meta.ino()))
            .collect();
        let canonical = |path: &Path| std::fs::canonicalize(path).unwrap_or(path.to_path_buf());
        let base_paths: HashSet<PathBuf> = bases.iter().map(|(path, _)| canonical(path)).collect();
        let Ok(names) = store.names() else {
            return;
        };
        let mut places = Vec::new();
        for name in names {
            let dir = store.instance_dir(&name);
            let Ok(definition) = store.definition(&name) else {
                return;
            };
            for disk in &definition.disks {
                places.extend(
                    disk.allow_backing
                        .iter()
                        .map(|place| canonical(&Definition::resolve(&dir, place))),
                );
            }
            remove_strays(&dir, &definition, &inodes, &base_paths, &self.dir);
        }
        for (base, _) in &bases {
            let base = canonical(base);
            if !places.iter().any(|place| base.starts_with(place)) {
                // Best effort: a base left now is removed by the next collection.
                let _ = std::fs::remove_file(&base);
            }
        }
    }
}

/// Removes the files directly in instance directory `dir` that no disk of `definition` names and
/// that are a base under another name (`inodes`) or a qcow2 overlay on one of `bases` (in
/// `bases_dir`).
fn remove_strays(
    dir: &Path,
    definition: &Definition,
    inodes: &HashSet<(u64, u64)>,
    bases: &HashSet<PathBuf>,
    bases_dir: &Path,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let disks: HashSet<PathBuf> = definition
        .disks
        .iter()
        .filter_map(|disk| disk.path.as_ref())
        .map(|path| Definition::resolve(dir, path))
        .collect();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_file() || disks.contains(&path) {
            continue;
        }
        let stray =
            inodes.contains(&(meta.dev(), meta.ino())) || overlay_on_base(&path, bases, bases_dir);
        if stray {
            tracing::info!("removing {}, left by an interrupted clone", path.display());
            // Best effort: retried by the next collection.
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Whether `path` is a qcow2 image whose backing file is one of `bases` (nothing outside
/// `bases_dir` is opened).
fn overlay_on_base(path: &Path, bases: &HashSet<PathBuf>, bases_dir: &Path) -> bool {
    if !matches!(
        corral_disk::detect_format(path),
        Ok(corral_disk::DiskFormat::Qcow2)
    ) {
        return false;
    }
    let options = corral_disk::OpenOptions {
        format: Some(corral_disk::DiskFormat::Qcow2),
        backing: corral_disk::BackingPolicy::Within(vec![bases_dir.to_path_buf()]),
        ..corral_disk::OpenOptions::read_only()
    };
    corral_disk::info(path, options).is_ok_and(|info| {
        info.backing_chain.first().is_some_and(|backing| {
            bases.contains(&std::fs::canonicalize(&backing.path).unwrap_or(backing.path.clone()))
        })
    })
}
