//! `corral clone`: a new instance with the content of a stopped (or, with `force`, paused) one
//! and an identity of its own.
//!
//! The clone's definition is the source's but for the identity: the name, a new UUID, a new
//! random locally administered MAC for each network interface that pins one (the others derive
//! theirs from the new UUID; no other instance of the root uses any of them), and a container's
//! `hostname` when the source sets one or the caller asks for one. Its content is copied into the
//! store's staging directory, so the clone appears whole or not at all:
//!
//! - everything in the source's directory but the store's files (definition, state, lock) and
//!   the supervisor's (`run/`): a container's root filesystem (reflinked where the filesystem
//!   can, which `[image].storage` then records), a VM's kernel and initrd, the user namespace
//!   record;
//! - a VM's disks in that directory, per [`CloneMode`]: `Full` copies each file (reflinked, or its
//!   data ranges only); `Linked` freezes a disk that stands alone into a read-only base
//!   ([`crate::bases`]) on which the source and the clone each get a qcow2 overlay. Either way a
//!   disk that is already an overlay (on an image, a base or a pool volume) is copied and goes on
//!   reading the same backing file, which the store keeps while an instance uses it;
//! - disks outside that directory are shared where that is safe (read-only disks, a container's
//!   directories) and refused otherwise: nothing is made outside the clone's directory.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use corral_disk::{BackingPolicy, DiskError};
use corral_image::progress::{NoProgress, Progress};
use corral_sysprep::{HostKeyMode, Report};
use corral_vmm::config::MacAddress;

use crate::nic::{fresh_mac, Nic};

use crate::bases::Bases;
use crate::definition::{new_uuid, Definition, DiskFormat, ImageStorage, Kind};
use crate::driver::InstancePaths;
use crate::error::CoreError;
use crate::images::CloneMode;
use crate::lifecycle::Manager;
use crate::state::Status;
use crate::store::StoreError;

pub(crate) mod error;

pub use error::CloneError;

/// What `corral clone` is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneOptions {
    /// The new instance's name.
    pub name: String,
    /// How a VM's disks are copied.
    pub mode: CloneMode,
    /// The clone's hostname; its name when `None`.
    pub hostname: Option<String>,
    /// Allow a paused source: its content is copied as it is at that instant (crash-consistent).
    pub force: bool,
    /// Leave the identity inside the copied content (machine-id, host keys) as the source's.
    pub keep_identity: bool,
    /// What the reset does with the SSH host keys: new ones made now (the default), or none,
    /// left for the guest's sshd or cloud-init to make at first boot (a faster clone).
    pub host_keys: HostKeyMode,
    /// Network interfaces replacing the source's (required when one of those is a fixed tap).
    pub nics: Option<Vec<Nic>>,
}

impl CloneOptions {
    /// A full copy named `name`, what a user of `virt-clone` or `incus copy` expects.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            mode: CloneMode::Full,
            hostname: None,
            force: false,
            keep_identity: false,
            host_keys: HostKeyMode::New,
            nics: None,
        }
    }

    /// The clone's hostname: the one asked for, else its name.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }
}

/// A new clone: its saved definition, how its disk files were made, and what its identity reset
/// changed (`None` when the identity was kept, or a VM has no disk to hold one).
#[derive(Debug)]
pub struct Cloned {
    pub definition: Definition,
    pub disks: Vec<ClonedDisk>,
    pub identity: Option<Report>,
}

/// How one disk file of the source reached the clone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClonedDisk {
    /// The clone's file, relative to its directory.
    pub path: PathBuf,
    /// [`ImageStorage::Reflink`]: the blocks are shared (FICLONE) until either side writes
    /// them; [`ImageStorage::Copy`]: the filesystem cannot share blocks, so the data ranges were
    /// copied; [`ImageStorage::Linked`]: a qcow2 overlay on a read-only base.
    pub storage: ImageStorage,
}

/// How one disk of the source reaches the clone.
enum DiskPlan {
    /// Shared as it is (outside the instance directory), or copied with the rest of the
    /// directory (a container's).
    Untouched,
    /// The file at this path (relative to the instance directory) is copied.
    Copy(PathBuf),
    /// The file `disk` becomes the read-only `base`; the source and the clone each get an
    /// overlay on it at `overlay`.
    Freeze {
        disk: PathBuf,
        overlay: PathBuf,
        base: PathBuf,
        format: corral_disk::DiskFormat,
    },
}

/// What a clone does, decided (or refused) before anything is made.
struct Plan {
    clone: Definition,
    /// The source's definition once a linked clone froze its disks: `None` if it stays.
    switched_source: Option<Definition>,
    disks: Vec<DiskPlan>,
    /// A container's root filesystem (relative) and how it is copied.
    rootfs: Option<(PathBuf, ImageStorage)>,
}

impl Plan {
    /// The paths (relative to the instance directory) copied on their own, not with the rest.
    fn copied_apart(&self) -> Vec<PathBuf> {
        let disks = self.disks.iter().filter_map(|disk| match disk {
            DiskPlan::Untouched => None,
            DiskPlan::Copy(path) | DiskPlan::Freeze { disk: path, .. } => Some(path.clone()),
        });
        disks
            .chain(self.rootfs.iter().map(|(path, _)| path.clone()))
            .collect()
    }

    fn freezes(&self) -> impl Iterator<Item = (&Path, &Path, &Path, corral_disk::DiskFormat)> {
        self.disks.iter().filter_map(|disk| match disk {
            DiskPlan::Freeze {
                disk,
                overlay,
                base,
                format,
            } => Some((disk.as_path(), overlay.as_path(), base.as_path(), *format)),
            _ => None,
        })
    }
}

impl Manager {
    /// Makes instance `options.name` a clone of the stopped (or, with `options.force`, paused)
    /// instance `source`, reporting long copies to `progress`; returns the clone's saved
    /// definition. A linked clone of a VM whose disk stands alone also moves the source onto an
    /// overlay of the frozen disk (its content unchanged). Refusals come before anything is
    /// made; a failure (or a kill) on the way leaves no trace of the clone.
    pub fn clone_instance(
        &self,
        source: &str,
        options: &CloneOptions,
        progress: &dyn Progress,
    ) -> Result<Cloned, CoreError> {
        match self.store().require(&options.name) {
            Ok(_) => return Err(StoreError::Exists(options.name.clone()).into()),
            Err(StoreError::NotFound(_)) => {}
            Err(err) => return Err(err.into()),
        }
        let bases = Bases::in_root(self.store().root());
        let cloned = self.clone_locked(source, options, progress, &bases);
        // A failed or killed clone's bases are unused now; one its source moved onto is not.
        bases.remove_unused(self.store());
        cloned
    }

    fn clone_locked(
        &self,
        source: &str,
        options: &CloneOptions,
        progress: &dyn Progress,
        bases: &Bases,
    ) -> Result<Cloned, CoreError> {
        let _lock = self.lock(source)?;
        let status = self.reconciled(source)?.status;
        match status {
            Status::Stopped | Status::Crashed => {}
            Status::Paused if options.force => {}
            Status::Paused => return Err(CloneError::Paused(source.to_string()).into()),
            _ => return Err(CloneError::Running(source.to_string()).into()),
        }
        let definition = self.store().definition(source)?;
        let paths = self.paths(source)?;
        let plan = self.plan(&definition, &paths, options, bases)?;
        if status == Status::Paused && plan.freezes().next().is_some() {
            return Err(CloneError::PausedLinked(source.to_string()).into());
        }
        let _bases_lock = match plan.freezes().next() {
            Some(_) => Some(bases.lock_shared()?),
            None => None,
        };
        let mut identity = None;
        let mut disks = Vec::new();
        self.create(&plan.clone, |staging| {
            disks = self.copy_content(&plan, &paths.dir, staging, bases, progress)?;
            // The copy is complete and the source untouched: a reset that fails leaves both as
            // they were.
            if !options.keep_identity {
                identity = self.reset_copy(&plan.clone, staging, options, progress)?;
            }
            self.switch_source(&plan, &paths.dir)
        })?;
        Ok(Cloned {
            definition: self.store().definition(&options.name)?,
            disks,
            identity,
        })
    }

    /// Resets the identity inside the clone's copied content (in `staging`): its root
    /// filesystem, or its VM's root disk; `None` for a VM without disks, which has none.
    fn reset_copy(
        &self,
        clone: &Definition,
        staging: &Path,
        options: &CloneOptions,
        progress: &dyn Progress,
    ) -> Result<Option<Report>, CoreError> {
        if clone.kind == Kind::Vm {
            match clone.disks.first() {
                None => return Ok(None),
                Some(disk) if disk.readonly => {
                    return Err(CloneError::SharedRootDisk(clone.name.clone()).into())
                }
                Some(_) => {}
            }
        }
        progress.begin("resetting the identity", None);
        let pool = crate::volume::Pool::default_in(self.store().root());
        let reset = crate::sysprep::clone_options(options.hostname(), options.host_keys);
        crate::sysprep::reset_instance(&pool, &InstancePaths::new(staging), clone, &reset).map(Some)
    }

    /// Decides the clone's definition and how each part of the source is copied.
    fn plan(
        &self,
        source: &Definition,
        paths: &InstancePaths,
        options: &CloneOptions,
        bases: &Bases,
    ) -> Result<Plan, CoreError> {
        let name = &source.name;
        let dir = std::path::absolute(&paths.dir).unwrap_or(paths.dir.clone());
        if let Some(path) = named_paths(source).find(|p| p.is_absolute() && p.starts_with(&dir)) {
            return Err(CloneError::AbsolutePath {
                name: name.clone(),
                path: path.to_path_buf(),
            }
            .into());
        }
        // Formats decided now where an edited definition left them open, as a create would.
        let mut pinned = source.clone();
        crate::disks::pin_formats(&mut pinned, paths)?;
        let source = &pinned;
        let mut clone = source.clone();
        clone.name.clone_from(&options.name);
        let mut used = self.store().macs_in_use();
        match &options.nics {
            Some(nics) => clone.nics.clone_from(nics),
            None => {
                if let Some((index, tap)) = source
                    .nics
                    .iter()
                    .enumerate()
                    .find_map(|(i, nic)| Some((i, nic.tap.clone()?)))
                {
                    return Err(CloneError::FixedTap {
                        name: name.clone(),
                        index,
                        tap,
                    }
                    .into());
                }
                for nic in clone.nics.iter_mut().filter(|nic| nic.mac.is_some()) {
                    nic.mac = Some(fresh_mac(&mut used));
                }
                // A fixed address is the source's own: two instances cannot hold it.
                for nic in &mut clone.nics {
                    nic.ip = None;
                }
            }
        }
        clone.uuid = new_identity(&clone.nics, &used)?;
        // The seed's hostname is the clone's, as a container's is (its instance-id follows the
        // new UUID by itself).
        if let Some(table) = clone.cloud_init.as_mut() {
            let key = corral_cloudinit::config::LOCAL_HOSTNAME;
            if table.meta_data.0.contains_key(key) || options.hostname.is_some() {
                table.meta_data.0.insert(
                    key.to_string(),
                    toml::Value::String(options.hostname().to_string()),
                );
            }
        }

        let mut rootfs = None;
        if let Some(spec) = clone.container.as_mut() {
            if spec.hostname.is_some() || options.hostname.is_some() {
                spec.hostname = Some(options.hostname().to_string());
            }
            let Some(relative) = inside(&spec.rootfs) else {
                return Err(CloneError::RootfsOutside {
                    name: name.clone(),
                    rootfs: spec.rootfs.clone(),
                }
                .into());
            };
            let instances = dir.parent().unwrap_or(&dir);
            let storage = if crate::copy::reflink_works(&paths.resolve(&relative), instances) {
                ImageStorage::Reflink
            } else {
                ImageStorage::Copy
            };
            if let Some(image) = clone.image.as_mut() {
                image.storage = storage;
            }
            rootfs = Some((relative, storage));
        }

        let pool = crate::volume::Pool::default_in(self.store().root());
        let mut switched = source.clone();
        let mut disks = Vec::new();
        for index in 0..source.disks.len() {
            let plan = plan_disk(source, paths, &pool, index, options.mode, bases)?;
            if let DiskPlan::Freeze { overlay, base, .. } = &plan {
                for definition in [&mut clone, &mut switched] {
                    let disk = &mut definition.disks[index];
                    disk.path = Some(overlay.clone());
                    disk.format = Some(DiskFormat::Qcow2);
                    disk.allow_backing.push(base.clone());
                }
            }
            disks.push(plan);
        }
        Ok(Plan {
            clone,
            switched_source: (switched != *source).then_some(switched),
            disks,
            rootfs,
        })
    }

    /// Copies the source's content into `staging` as `plan` says; returns how each disk file
    /// was made.
    fn copy_content(
        &self,
        plan: &Plan,
        source: &Path,
        staging: &Path,
        bases: &Bases,
        progress: &dyn Progress,
    ) -> Result<Vec<ClonedDisk>, CoreError> {
        copy_entries(source, staging, Path::new(""), &plan.copied_apart())?;
        if let Some((rootfs, storage)) = &plan.rootfs {
            progress.begin("copying the root filesystem", None);
            crate::copy::copy_tree_as(
                &source.join(rootfs),
                &staging.join(rootfs),
                *storage,
                progress,
            )?;
        }
        let mut disks = Vec::new();
        for disk in &plan.disks {
            match disk {
                DiskPlan::Untouched => {}
                DiskPlan::Copy(path) => disks.push(ClonedDisk {
                    path: path.clone(),
                    storage: crate::copy::copy_file(
                        &source.join(path),
                        &staging.join(path),
                        &format!("copying {}", path.display()),
                        progress,
                    )?,
                }),
                DiskPlan::Freeze {
                    disk,
                    overlay,
                    base,
                    format,
                } => {
                    bases.freeze(&source.join(disk), base)?;
                    crate::disks::make_overlay(
                        &staging.join(overlay),
                        base,
                        *format,
                        vec![base.clone()],
                    )?;
                    disks.push(ClonedDisk {
                        path: overlay.clone(),
                        storage: ImageStorage::Linked,
                    });
                }
            }
        }
        Ok(disks)
    }

    /// Moves the source onto overlays of the disks a linked clone froze: the overlays are made,
    /// the definition naming them saved (the moment the source switches), then the disks' old
    /// names removed. A kill in between leaves files no definition names, which the next
    /// collection of bases removes.
    fn switch_source(&self, plan: &Plan, source: &Path) -> Result<(), CoreError> {
        let Some(switched) = &plan.switched_source else {
            return Ok(());
        };
        let mut made = Vec::new();
        let saved = plan
            .freezes()
            .try_for_each(|(_, overlay, base, format)| {
                let path = source.join(overlay);
                crate::disks::make_overlay(&path, base, format, vec![base.to_path_buf()])?;
                made.push(path);
                Ok(())
            })
            .and_then(|()| self.save_definition(switched));
        if let Err(err) = saved {
            for path in made {
                // Ours, named by no definition; best effort (the collection finds it otherwise).
                let _ = std::fs::remove_file(path);
            }
            return Err(err);
        }
        fail::fail_point!("clone.source-switched");
        for (disk, ..) in plan.freezes() {
            let old = source.join(disk);
            // The base holds its content; a name left here is removed by the next collection.
            if let Err(err) = std::fs::remove_file(&old) {
                tracing::warn!("cannot remove {}: {err}", old.display());
            }
        }
        Ok(())
    }
}

/// Decides how disk `index` of `source` reaches the clone.
fn plan_disk(
    source: &Definition,
    paths: &InstancePaths,
    pool: &crate::volume::Pool,
    index: usize,
    mode: CloneMode,
    bases: &Bases,
) -> Result<DiskPlan, CoreError> {
    let disk = &source.disks[index];
    let name = &source.name;
    let Some(relative) = disk.path.as_deref().and_then(inside) else {
        // Outside the instance directory: a container's directory is shared like an Incus
        // custom volume, a read-only disk by any number of readers; a writable one is refused.
        if source.kind == Kind::Container || disk.readonly {
            return Ok(DiskPlan::Untouched);
        }
        let described = match (&disk.volume, &disk.path) {
            (Some(volume), _) => format!("volume {volume}"),
            (None, Some(path)) if is_block_device(path) => {
                format!("block device {}", path.display())
            }
            (None, Some(path)) => format!("file {}", path.display()),
            (None, None) => String::new(),
        };
        return Err(CloneError::SharedDisk {
            name: name.clone(),
            index,
            disk: described,
        }
        .into());
    };
    if source.kind == Kind::Container {
        return Ok(DiskPlan::Untouched);
    }
    let path = paths.resolve(&relative);
    let meta = std::fs::symlink_metadata(&path).map_err(CoreError::io("inspect", &path))?;
    // The format is recorded (see `plan`); only a directory has none.
    let format = disk.format.and_then(DiskFormat::image_format);
    let (Some(format), true) = (format, meta.is_file()) else {
        return Err(CloneError::NotAFile {
            name: name.clone(),
            index,
            path,
        }
        .into());
    };
    let options = corral_disk::OpenOptions {
        format: Some(format),
        backing: BackingPolicy::Within(crate::disks::backing_places(pool, paths, source, index)),
        ..corral_disk::OpenOptions::read_only()
    };
    let info = corral_disk::info(&path, options).map_err(|source| match source {
        DiskError::BackingNotAllowed { .. } => CoreError::BackingNotAllowed {
            instance: name.clone(),
            index,
            source,
        },
        source => CoreError::DiskUnusable {
            instance: name.clone(),
            index,
            source,
        },
    })?;
    if let Some(backing) = info.backing_chain.first() {
        let dir = std::fs::canonicalize(&paths.dir).unwrap_or(paths.dir.clone());
        let backing_file = std::fs::canonicalize(&backing.path).unwrap_or(backing.path.clone());
        if backing_file.starts_with(&dir) {
            return Err(CloneError::BackingInside {
                name: name.clone(),
                index,
                backing: backing.path.clone(),
            }
            .into());
        }
        return Ok(DiskPlan::Copy(relative));
    }
    match mode {
        CloneMode::Full => Ok(DiskPlan::Copy(relative)),
        CloneMode::Linked => {
            let id = new_uuid().map_err(StoreError::from)?;
            let stem = relative
                .file_stem()
                .unwrap_or(OsStr::new("disk"))
                .to_string_lossy();
            Ok(DiskPlan::Freeze {
                overlay: relative.with_file_name(format!("{stem}-{}.qcow2", &id[..8])),
                base: bases.path(&id, format),
                disk: relative,
                format,
            })
        }
    }
}

/// The paths a definition names: disks and their allowed backing files, a VM's kernel and
/// initrd, a container's root filesystem and seccomp profile.
fn named_paths(definition: &Definition) -> impl Iterator<Item = &Path> {
    let disks = definition.disks.iter().flat_map(|disk| {
        disk.path
            .iter()
            .chain(&disk.allow_backing)
            .map(PathBuf::as_path)
    });
    let boot = definition
        .boot
        .iter()
        .flat_map(|boot| std::iter::once(boot.kernel.as_path()).chain(boot.initrd.as_deref()));
    let container = definition.container.iter().flat_map(|spec| {
        std::iter::once(spec.rootfs.as_path()).chain(spec.seccomp.as_deref().map(Path::new))
    });
    disks.chain(boot).chain(container)
}

/// `path` without `.` components when it is relative and stays inside the instance directory.
pub(crate) fn inside(path: &Path) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!relative.as_os_str().is_empty()).then_some(relative)
}

fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.file_type().is_block_device())
}

/// A new UUID whose derived MAC addresses (for the interfaces of `nics` that give none) are not
/// among `used`.
fn new_identity(nics: &[Nic], used: &HashSet<MacAddress>) -> Result<String, CoreError> {
    loop {
        let uuid = new_uuid().map_err(StoreError::from)?;
        let clash = nics.iter().enumerate().any(|(index, nic)| {
            nic.mac.is_none() && used.contains(&crate::nic::stable_mac(&uuid, index))
        });
        if !clash {
            return Ok(uuid);
        }
    }
}

/// Whether `name`, directly in an instance directory, is the store's or the supervisor's rather
/// than the instance's content: the definition, state and lock, `run/`, `snapshots/` (the
/// source's own history, which a clone does not take along), and the temporary files of
/// interrupted writes.
fn is_bookkeeping(name: &OsStr) -> bool {
    [
        crate::store::DEFINITION_FILE,
        crate::store::STATE_FILE,
        crate::store::LOCK_FILE,
        crate::driver::RUNTIME_DIR,
        crate::snapshot::SNAPSHOTS_DIR,
    ]
    .iter()
    .any(|own| name == OsStr::new(own))
        || corral_host::atomic::temp_file_owner(name).is_some()
        || corral_disk::pending_image_owner(name).is_some()
}

/// Copies what is in `source/within` into `target/within` (which exists), but the store's files
/// and `apart` (paths relative to `source`, copied on their own): directories by `cp -a`, files
/// with [`crate::copy::copy_file`], links as links.
fn copy_entries(
    source: &Path,
    target: &Path,
    within: &Path,
    apart: &[PathBuf],
) -> Result<(), CoreError> {
    let dir = source.join(within);
    for entry in std::fs::read_dir(&dir).map_err(CoreError::io("list", &dir))? {
        let entry = entry.map_err(CoreError::io("list", &dir))?;
        let relative = within.join(entry.file_name());
        let top = within.as_os_str().is_empty();
        if (top && is_bookkeeping(&entry.file_name())) || apart.contains(&relative) {
            continue;
        }
        let (from, to) = (source.join(&relative), target.join(&relative));
        let kind = entry.file_type().map_err(CoreError::io("inspect", &from))?;
        if kind.is_dir() && apart.iter().any(|path| path.starts_with(&relative)) {
            let mode = entry
                .metadata()
                .map_err(CoreError::io("inspect", &from))?
                .permissions();
            std::fs::create_dir(&to).map_err(CoreError::io("create", &to))?;
            std::fs::set_permissions(&to, mode).map_err(CoreError::io("set the mode of", &to))?;
            copy_entries(source, target, &relative, apart)?;
        } else if kind.is_dir() {
            crate::copy::copy_tree(&from, &to, &NoProgress)?;
        } else if kind.is_file() {
            crate::copy::copy_file(&from, &to, "copying", &NoProgress)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(&from).map_err(CoreError::io("read", &from))?;
            std::os::unix::fs::symlink(&link, &to).map_err(CoreError::io("create", &to))?;
        } else {
            tracing::warn!(
                "not copying {}: neither a file, a directory nor a link",
                from.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_paths_that_stay_inside_are_inside() {
        assert_eq!(inside(Path::new("root.qcow2")), Some("root.qcow2".into()));
        assert_eq!(inside(Path::new("./d/x.raw")), Some("d/x.raw".into()));
        for outside in ["/srv/x.raw", "../other/x.raw", "d/../../x", ".", ""] {
            assert_eq!(inside(Path::new(outside)), None, "{outside}");
        }
    }

    #[test]
    fn bookkeeping_files_are_not_content() {
        for own in ["instance.toml", "state.json", "lock", "run", "snapshots"] {
            assert!(is_bookkeeping(OsStr::new(own)), "{own}");
        }
        assert!(is_bookkeeping(OsStr::new(".state.json.tmp-4242")));
        assert!(is_bookkeeping(OsStr::new(".root.qcow2.corral-tmp-4242")));
        for content in ["rootfs", "root.qcow2", "kernel", "rootfs.userns"] {
            assert!(!is_bookkeeping(OsStr::new(content)), "{content}");
        }
    }

    #[test]
    fn new_addresses_avoid_those_in_use() {
        let mut used = HashSet::new();
        let first = fresh_mac(&mut used);
        let second = fresh_mac(&mut used);
        assert_ne!(first, second);
        assert!(!first.is_unusable() && first.0[0] & 2 == 2, "{first}");
        let nics = vec![Nic {
            bridge: Some("br0".into()),
            ..Nic::default()
        }];
        let uuid = new_identity(&nics, &used).unwrap();
        assert!(!used.contains(&crate::nic::stable_mac(&uuid, 0)));
    }
}
