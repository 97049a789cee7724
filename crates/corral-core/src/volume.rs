//! Storage pools and volumes (the seeds' "virtual block devices").
//!
//! The default pool is the directory `storage/default/` under the corral root. A volume is a
//! sparse raw file (`NAME.raw`: only written blocks use space), a qcow2 image (`NAME.qcow2`,
//! optionally a copy-on-write overlay of a backing image in the pool: a linked clone), or a
//! directory (`NAME/`, bind-mounted into containers). Dedicated host block devices and logical
//! volumes are not pool volumes: instances attach them by path.
//!
//! A volume's format is its file suffix; nothing here looks at a file's contents to decide it.
//! Backing chains stay inside the pool (images from elsewhere come in with [`Pool::import`]), and
//! every operation that writes a volume or removes it holds the image lock, so a volume in use
//! (by a VM, by `qemu-img`) is refused with the holder's name.

use std::path::{Path, PathBuf};

use corral_disk::{
    BackingPolicy, CheckReport, ConvertOptions, DiskError, LockHolder, OpenOptions,
    Qcow2CreateOptions, ResizeOptions,
};
use corral_error::PathIoError;
use corral_host::error_chain;
use serde::Serialize;

use crate::definition::{validate_name, DefinitionError, DiskFormat};
use crate::state::process_alive;
use crate::store::Store;

/// The pool every instance can use.
pub const DEFAULT_POOL: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0} does not exist; `corral volume list` shows the pool's volumes")]
    NotFound(String),
    #[error("volume {0} already exists; choose another name or delete it first")]
    Exists(String),
    #[error("volume {name} is in use by {users}; detach it first")]
    InUse { name: String, users: String },
    #[error("volume {name} is open in {users}; stop that first")]
    Open { name: String, users: String },
    #[error(
        "volume {name} has a backing file outside the storage pool; an instance can use it only \
         if its disk lists that file in `allow_backing`"
    )]
    BackingOutside {
        name: String,
        #[source]
        source: DiskError,
    },
    #[error(
        "the backing image {0} is not in the storage pool; bring it in first with `corral volume \
         import NAME {0}` and name that volume as the backing image"
    )]
    BackingNotInPool(PathBuf),
    #[error("volume {0} is not a qcow2 image; only qcow2 volumes have metadata to check")]
    NotQcow2(String),
    #[error("a directory volume has no size; leave out the size or choose --format raw or qcow2")]
    DirectoryHasNoSize,
    #[error("{0} needs a size, e.g. 10G")]
    SizeNeeded(&'static str),
    #[error("only qcow2 volumes can have a backing image; make it a qcow2 volume")]
    BackingNeedsQcow2,
    #[error("volume {0} is a directory; directories cannot be resized")]
    DirectoryResize(String),
    #[error(transparent)]
    Disk(#[from] corral_disk::DiskError),
    #[error(transparent)]
    Name(#[from] DefinitionError),
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// What to create.
#[derive(Clone, Debug)]
pub enum NewVolume {
    Raw {
        size: u64,
    },
    Qcow2 {
        size: Option<u64>,
        backing: Option<PathBuf>,
    },
    Dir,
}

/// What `corral volume list/info` shows (and, read back, what `corral --remote` shows).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub format: DiskFormat,
    pub path: PathBuf,
    /// The guest-visible size (none for directories).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
    /// Bytes used on the host.
    pub actual_size: u64,
    /// Backing images, nearest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backing_chain: Vec<PathBuf>,
    /// Why the image cannot be described (only in a list, which goes on past it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A directory of volumes.
#[derive(Clone, Debug)]
pub struct Pool {
    dir: PathBuf,
    /// The corral root, whose instances may hold the pool's volumes.
    root: PathBuf,
}

impl Pool {
    /// The default pool under the corral root `root`.
    pub fn default_in(root: &Path) -> Self {
        Self {
            dir: root.join("storage").join(DEFAULT_POOL),
            root: root.to_path_buf(),
        }
    }

    /// How the pool's image files are opened: in the format their suffix names, with backing
    /// files only inside the pool.
    fn open_options(&self, format: DiskFormat) -> OpenOptions {
        OpenOptions {
            format: format.image_format(),
            backing: self.backing_policy(),
            ..OpenOptions::read_only()
        }
    }

    fn backing_policy(&self) -> BackingPolicy {
        BackingPolicy::Within(vec![self.dir.clone()])
    }

    /// The processes holding an image, by the instance they run where they are a supervisor:
    /// "instance web (pid 1234)", else "pid 1234 (COMMAND)".
    pub fn describe_holders(&self, holders: &[LockHolder]) -> String {
        if holders.is_empty() {
            return "another process".to_string();
        }
        let instances: Vec<(String, u32)> = Store::open(&self.root)
            .and_then(|store| {
                let mut found = Vec::new();
                for name in store.names()? {
                    if let Some(pid) = store.state(&name).ok().and_then(|state| state.pid) {
                        found.push((name, pid));
                    }
                }
                Ok(found)
            })
            .unwrap_or_default();
        holders
            .iter()
            .map(
                |holder| match instances.iter().find(|(_, pid)| *pid == holder.pid) {
                    Some((name, pid)) => format!("instance {name} (pid {pid})"),
                    None => holder.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Words a disk error about volume `name` for the pool: who holds it, which backing file is outside.
    fn volume_error(&self, name: &str, err: DiskError) -> VolumeError {
        match err {
            DiskError::Locked { holders, .. } => VolumeError::Open {
                name: name.to_string(),
                users: self.describe_holders(&holders),
            },
            DiskError::BackingNotAllowed { .. } => VolumeError::BackingOutside {
                name: name.to_string(),
                source: err,
            },
            other => VolumeError::Disk(other),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ensure_dir(&self) -> Result<(), VolumeError> {
        corral_host::atomic::create_private_dir_all(&self.dir).map_err(|source| {
            VolumeError::Io(PathIoError::new(
                "create the pool directory",
                self.dir.clone(),
                source,
            ))
        })?;
        self.sweep_litter();
        Ok(())
    }

    /// Removes what interrupted commands left in the pool, once their process is gone: images
    /// still under their temporary name (create, import) and directory volumes renamed aside
    /// for deletion.
    fn sweep_litter(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(pid) = corral_disk::pending_image_owner(&name) {
                if !process_alive(pid, None) {
                    // Best effort: a sweep that fails now is retried by the next command.
                    let _ = std::fs::remove_file(entry.path());
                }
            } else if let Some(pid) = deleting_owner(&name) {
                if !process_alive(pid, None) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    fn candidates(&self, name: &str) -> [(PathBuf, DiskFormat); 3] {
        [
            (self.dir.join(format!("{name}.raw")), DiskFormat::Raw),
            (self.dir.join(format!("{name}.qcow2")), DiskFormat::Qcow2),
            (self.dir.join(name), DiskFormat::Dir),
        ]
    }

    /// Where volume `name` is, and its format.
    pub fn find(&self, name: &str) -> Result<(PathBuf, DiskFormat), VolumeError> {
        validate_name(name)?;
        self.candidates(name)
            .into_iter()
            .find(|(path, format)| match format {
                DiskFormat::Dir => path.is_dir(),
                _ => path.is_file(),
            })
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// Creates volume `name`.
    pub fn create(&self, name: &str, volume: &NewVolume) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        if self.find(name).is_ok() {
            return Err(VolumeError::Exists(name.to_string()));
        }
        self.ensure_dir()?;
        match volume {
            NewVolume::Raw { size } => {
                corral_disk::create_raw(&self.dir.join(format!("{name}.raw")), *size)?
            }
            NewVolume::Qcow2 { size, backing } => {
                let backing_file = backing.as_ref().map(|b| self.backing_reference(b));
                let created = corral_disk::create_qcow2(
                    &self.dir.join(format!("{name}.qcow2")),
                    &Qcow2CreateOptions {
                        size: *size,
                        backing_file,
                        backing_policy: self.backing_policy(),
                        ..Default::default()
                    },
                );
                match created {
                    Err(DiskError::BackingNotAllowed { backing, .. }) => {
                        return Err(VolumeError::BackingNotInPool(backing))
                    }
                    other => other?,
                }
            }
            NewVolume::Dir => {
                let path = self.dir.join(name);
                std::fs::create_dir(&path)
                    .map_err(|source| VolumeError::Io(PathIoError::new("create", path, source)))?
            }
        }
        self.info(name)
    }

    /// Copies the image at `source` (any format corral reads; its backing chain flattened) into
    /// the pool as a new volume `name` in `format`. The source's backing files must lie in its
    /// own directory or in `allow_backing`.
    pub fn import(
        &self,
        name: &str,
        source: &Path,
        format: DiskFormat,
        allow_backing: &[PathBuf],
        progress: &mut dyn FnMut(corral_disk::CopyProgress) -> std::ops::ControlFlow<()>,
    ) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        let Some(target_format) = format.image_format() else {
            return Err(VolumeError::DirectoryHasNoSize);
        };
        if self.find(name).is_ok() {
            return Err(VolumeError::Exists(name.to_string()));
        }
        self.ensure_dir()?;
        let source_dir = source.parent().unwrap_or(Path::new("/")).to_path_buf();
        let places = std::iter::once(source_dir)
            .chain(allow_backing.iter().cloned())
            .collect();
        corral_disk::convert(
            source,
            &self.dir.join(format!("{name}.{}", target_format.name())),
            ConvertOptions {
                source_format: None,
                source_backing: BackingPolicy::Within(places),
                target_format,
                cluster_size: None,
            },
            progress,
        )?;
        self.info(name)
    }

    /// A backing image inside the pool is recorded by its file name (relative to the overlay,
    /// qemu's rule), so the pool can move; anything else by its absolute path.
    fn backing_reference(&self, backing: &Path) -> PathBuf {
        match backing.strip_prefix(&self.dir) {
            Ok(relative) if relative.components().count() == 1 => relative.to_path_buf(),
            _ => backing.to_path_buf(),
        }
    }

    /// Resolves `--backing` text: a pool volume's name, or a path to an image.
    pub fn resolve_backing(&self, text: &str) -> Result<PathBuf, VolumeError> {
        if validate_name(text).is_ok() {
            if let Ok((path, format)) = self.find(text) {
                if format != DiskFormat::Dir {
                    return Ok(path);
                }
            }
        }
        let path = PathBuf::from(text);
        if path.is_file() {
            return Ok(std::path::absolute(&path).unwrap_or(path));
        }
        Err(VolumeError::NotFound(text.to_string()))
    }

    /// Facts about volume `name` (read without locks: a volume in use is described too).
    pub fn info(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let (path, format) = self.find(name)?;
        if format == DiskFormat::Dir {
            return Ok(VolumeInfo {
                name: name.to_string(),
                format,
                actual_size: directory_usage(&path),
                path,
                virtual_size: None,
                backing_chain: Vec::new(),
                problem: None,
            });
        }
        let image = corral_disk::info(&path, self.open_options(format))
            .map_err(|err| self.volume_error(name, err))?;
        Ok(VolumeInfo {
            name: name.to_string(),
            format: image.format.into(),
            path,
            virtual_size: Some(image.virtual_size),
            actual_size: image.actual_size,
            backing_chain: image.backing_chain.into_iter().map(|b| b.path).collect(),
            problem: None,
        })
    }

    /// Checks qcow2 volume `name` like `qemu-img check`; with `repair`, gives leaked clusters
    /// back. Refused while the volume is open for writing.
    pub fn check(&self, name: &str, repair: bool) -> Result<CheckReport, VolumeError> {
        let (path, format) = self.find(name)?;
        if format != DiskFormat::Qcow2 {
            return Err(VolumeError::NotQcow2(name.to_string()));
        }
        let checked = if repair {
            corral_disk::repair_leaks(&path)
        } else {
            corral_disk::check(&path)
        };
        checked.map_err(|err| self.volume_error(name, err))
    }

    /// All volumes, by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        self.sweep_litter();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .map(|n| {
                n.strip_suffix(".raw")
                    .or_else(|| n.strip_suffix(".qcow2"))
                    .unwrap_or(&n)
                    .to_string()
            })
            .filter(|n| validate_name(n).is_ok())
            .collect();
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|name| match self.info(name) {
                Ok(info) => Ok(info),
                // One image that cannot be described does not hide the others.
                Err(err @ (VolumeError::Disk(_) | VolumeError::BackingOutside { .. })) => {
                    let (path, format) = self.find(name)?;
                    Ok(VolumeInfo {
                        name: name.clone(),
                        format,
                        actual_size: std::fs::metadata(&path)
                            .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(&m) * 512),
                        path,
                        virtual_size: None,
                        backing_chain: Vec::new(),
                        problem: Some(error_chain(&err)),
                    })
                }
                Err(err) => Err(err),
            })
            .collect()
    }

    /// Changes the virtual size of a raw or qcow2 volume.
    pub fn resize(
        &self,
        name: &str,
        size: u64,
        force_shrink: bool,
    ) -> Result<VolumeInfo, VolumeError> {
        let (path, format) = self.find(name)?;
        if format == DiskFormat::Dir {
            return Err(VolumeError::DirectoryResize(name.to_string()));
        }
        let options = ResizeOptions {
            force_shrink,
            open: self.open_options(format),
        };
        corral_disk::resize(&path, size, options).map_err(|err| self.volume_error(name, err))?;
        self.info(name)
    }

    /// Deletes volume `name` unless something uses it (`users` names those that do).
    pub fn delete(&self, name: &str, users: &[String]) -> Result<(), VolumeError> {
        let (path, format) = self.find(name)?;
        let mut users = users.to_vec();
        users.extend(
            self.overlays_of(&path)?
                .into_iter()
                .map(|v| format!("volume {v}")),
        );
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                users: users.join(", "),
            });
        }
        let removed = if format == DiskFormat::Dir {
            // Renamed aside first: a delete killed half way leaves no half directory under the
            // volume's name, only hidden litter the next pool command sweeps.
            let aside = self
                .dir
                .join(format!("{DELETING_PREFIX}{name}-{}", std::process::id()));
            std::fs::rename(&path, &aside).and_then(|()| {
                fail::fail_point!("volume.delete-renamed-aside");
                std::fs::remove_dir_all(&aside)
            })
        } else {
            // Held until the file is gone, so nothing opens it in between.
            let _lock =
                corral_disk::lock_exclusive(&path).map_err(|err| self.volume_error(name, err))?;
            std::fs::remove_file(&path)
        };
        removed.map_err(|source| VolumeError::Io(PathIoError::new("delete", path, source)))
    }

    /// Volumes whose backing chain includes `path` (chains followed wherever they lead, without
    /// reading any guest data: only headers).
    fn overlays_of(&self, path: &Path) -> Result<Vec<String>, VolumeError> {
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut overlays = Vec::new();
        for volume in self.list()? {
            if volume.format != DiskFormat::Qcow2 {
                continue;
            }
            let options = OpenOptions {
                backing: BackingPolicy::Any,
                ..self.open_options(volume.format)
            };
            let Ok(image) = corral_disk::info(&volume.path, options) else {
                continue;
            };
            let uses = image
                .backing_chain
                .iter()
                .any(|b| std::fs::canonicalize(&b.path).is_ok_and(|b| b == target));
            if uses {
                overlays.push(volume.name);
            }
        }
        Ok(overlays)
    }
}

/// What a directory volume being deleted is renamed to (with the deleting process's pid).
const DELETING_PREFIX: &str = ".deleting-";

/// The pid of the process deleting directory volume `file_name`, if it is one being deleted.
fn deleting_owner(file_name: &std::ffi::OsStr) -> Option<u32> {
    let rest = file_name.to_str()?.strip_prefix(DELETING_PREFIX)?;
    rest.rsplit_once('-')?.1.parse().ok()
}

fn directory_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => m.blocks() * 512 + directory_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::default_in(dir.path());
        (dir, pool)
    }

    #[test]
    fn ten_gib_raw_volume_stays_sparse() {
        let (_dir, pool) = pool();
        let info = pool
            .create("big", &NewVolume::Raw { size: 10 << 30 })
            .unwrap();
        assert_eq!(info.virtual_size, Some(10 << 30));
        assert!(
            info.actual_size < 1 << 20,
            "{} bytes used",
            info.actual_size
        );
        assert_eq!(info.format, DiskFormat::Raw);
    }

    #[test]
    fn qcow2_overlay_of_a_pool_volume_records_a_relative_backing_name() {
        let (_dir, pool) = pool();
        pool.create("base", &NewVolume::Raw { size: 1 << 20 })
            .unwrap();
        let backing = pool.resolve_backing("base").unwrap();
        let overlay = pool
            .create(
                "clone",
                &NewVolume::Qcow2 {
                    size: None,
                    backing: Some(backing.clone()),
                },
            )
            .unwrap();
        assert_eq!(
            overlay.virtual_size,
            Some(1 << 20),
            "size taken from the backing"
        );
        assert_eq!(overlay.backing_chain.len(), 1);
        assert_eq!(
            std::fs::canonicalize(&overlay.backing_chain[0]).unwrap(),
            std::fs::canonicalize(&backing).unwrap()
        );
        let err = pool.delete("base", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume base is in use by volume clone; detach it first"
        );
        pool.delete("clone", &[]).unwrap();
        pool.delete("base", &[]).unwrap();
        assert!(pool.list().unwrap().is_empty());
    }

    #[test]
    fn names_are_unique_across_formats() {
        let (_dir, pool) = pool();
        pool.create("data", &NewVolume::Dir).unwrap();
        let err = pool
            .create("data", &NewVolume::Raw { size: 4096 })
            .unwrap_err();
        assert!(matches!(err, VolumeError::Exists(_)));
        let list = pool.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].format, DiskFormat::Dir);
    }

    #[test]
    fn resize_grows_and_refuses_directories() {
        let (_dir, pool) = pool();
        pool.create(
            "disk",
            &NewVolume::Qcow2 {
                size: Some(1 << 20),
                backing: None,
            },
        )
        .unwrap();
        let info = pool.resize("disk", 2 << 20, false).unwrap();
        assert_eq!(info.virtual_size, Some(2 << 20));
        pool.create("dir", &NewVolume::Dir).unwrap();
        assert!(matches!(
            pool.resize("dir", 1, false),
            Err(VolumeError::DirectoryResize(_))
        ));
    }

    #[test]
    fn users_block_deletion() {
        let (_dir, pool) = pool();
        pool.create("data", &NewVolume::Dir).unwrap();
        let err = pool
            .delete("data", &["instance web".to_string()])
            .unwrap_err();
        assert!(err.to_string().contains("in use by instance web"));
        assert!(pool.find("data").is_ok());
    }

    #[test]
    fn unknown_volume() {
        let (_dir, pool) = pool();
        assert_eq!(
            pool.info("nope").unwrap_err().to_string(),
            "volume nope does not exist; `corral volume list` shows the pool's volumes"
        );
    }
}
