//! Creating and resizing images. A new image is built under a temporary name beside its final path
//! and renamed into place only when complete (never over an existing file), so an interrupted
//! creation leaves no half image under the real name.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};
use rustix::fs::{renameat_with, RenameFlags, CWD};

use crate::error::{DiskError, Result};
use crate::header::MAX_VIRTUAL_SIZE;
use crate::qcow2::{resolve_backing_path, Qcow2Disk};
use crate::raw::{HostKind, RawDisk};
use crate::{detect_format, open, BackingPolicy, Disk, DiskFormat, OpenOptions};

/// qemu-img's default cluster size, 64 KiB.
pub const DEFAULT_CLUSTER_SIZE: u64 = 64 * 1024;
/// Virtual sizes are whole 512-byte sectors, as virtio-blk counts them.
const SECTOR_SIZE: u64 = 512;

/// Options for [`create_qcow2`].
#[derive(Clone, Debug, Default)]
pub struct Qcow2CreateOptions {
    /// Virtual size in bytes; `None` takes the backing image's size.
    pub size: Option<u64>,
    /// Cluster size in bytes (a power of two from 512 B to 2 MiB); `None` for 64 KiB.
    pub cluster_size: Option<u64>,
    /// The backing image, as it is to be written into the header: a relative path is relative to
    /// the new image's directory (qemu's rule).
    pub backing_file: Option<PathBuf>,
    /// The backing image's format; `None` detects it by magic (and records what it found).
    pub backing_format: Option<DiskFormat>,
    /// Where the backing image, and every image below it, may be.
    pub backing_policy: BackingPolicy,
}

/// What sits between a pending image's target name and its creator's pid.
const PENDING_MARK: &str = ".corral-tmp-";

/// The pid of the process creating image `file_name` under its temporary name, if it is one: a
/// pending image whose process is gone is litter of an interrupted create, for the caller to
/// sweep.
pub fn pending_image_owner(file_name: &std::ffi::OsStr) -> Option<u32> {
    let name = file_name.to_str()?.strip_prefix('.')?;
    let (_, pid) = name.rsplit_once(PENDING_MARK)?;
    pid.parse().ok()
}

/// A file being created under a temporary name; removed on drop unless published.
pub(crate) struct PendingImage {
    temp: PathBuf,
    target: PathBuf,
    published: bool,
}

impl PendingImage {
    /// Reserves a temporary name beside `target`, refusing early when `target` exists.
    pub(crate) fn new(target: &Path) -> Result<Self> {
        if target.symlink_metadata().is_ok() {
            return Err(DiskError::AlreadyExists {
                path: target.to_path_buf(),
            });
        }
        let name = target
            .file_name()
            .ok_or_else(|| DiskError::InvalidOption {
                path: target.to_path_buf(),
                reason: "the path has no file name".into(),
            })?
            .to_string_lossy();
        let temp = target.with_file_name(format!(".{name}{PENDING_MARK}{}", std::process::id()));
        Ok(PendingImage {
            temp,
            target: target.to_path_buf(),
            published: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.temp
    }

    /// Creates the temporary file, empty.
    pub(crate) fn create_file(&self) -> Result<fs::File> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            // Disk images hold guest data: the owner's alone.
            .mode(0o600)
            .open(&self.temp)
            .map_err(|source| DiskError::Open {
                path: self.target.clone(),
                source,
            })
    }

    /// Makes the finished image durable and moves it to its real name, failing (and removing the
    /// temporary file) if something appeared there meanwhile.
    pub(crate) fn publish(mut self) -> Result<()> {
        let sync = |path: &Path| fs::File::open(path).and_then(|file| file.sync_all());
        sync(&self.temp).map_err(|source| DiskError::io("flush", &self.target, source))?;
        fail::fail_point!("image.temp-written");
        match renameat_with(CWD, &self.temp, CWD, &self.target, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                return Err(DiskError::AlreadyExists {
                    path: self.target.clone(),
                })
            }
            Err(err) => return Err(DiskError::io("create", &self.target, err.into())),
        }
        self.published = true;
        // The rename is durable once the directory is; an error here loses nothing already done.
        if let Some(dir) = self
            .target
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
        {
            sync(dir).map_err(|source| DiskError::io("flush", &self.target, source))?;
        }
        Ok(())
    }
}

impl Drop for PendingImage {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: the file may not have been created yet.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

pub(crate) fn check_size(path: &Path, size: u64) -> Result<()> {
    let invalid = |reason| DiskError::InvalidSize {
        path: path.to_path_buf(),
        size,
        reason,
    };
    if size == 0 {
        return Err(invalid("a disk needs at least one sector"));
    }
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(invalid("it must be a multiple of 512 bytes"));
    }
    if size > MAX_VIRTUAL_SIZE {
        return Err(invalid("it exceeds corral's limit of 256 TiB"));
    }
    Ok(())
}

/// Creates a sparse raw image of `size` bytes at `path`: it takes no space until written.
pub fn create_raw(path: &Path, size: u64) -> Result<()> {
    check_size(path, size)?;
    let pending = PendingImage::new(path)?;
    write_raw(&pending, size)?;
    pending.publish()
}

pub(crate) fn write_raw(pending: &PendingImage, size: u64) -> Result<()> {
    pending
        .create_file()?
        .set_len(size)
        .map_err(|source| DiskError::io("create", pending.path(), source))
}

/// Creates a qcow2 (v3) image at `path`, optionally over a backing image.
pub fn create_qcow2(path: &Path, options: &Qcow2CreateOptions) -> Result<()> {
    let cluster_size = options.cluster_size.unwrap_or(DEFAULT_CLUSTER_SIZE);
    if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
        return Err(DiskError::InvalidOption {
            path: path.to_path_buf(),
            reason: format!(
                "cluster size {cluster_size} must be a power of two from 512 bytes to 2 MiB"
            ),
        });
    }
    let backing = match &options.backing_file {
        None => None,
        Some(name) => Some(check_backing(
            path,
            name,
            options.backing_format,
            &options.backing_policy,
        )?),
    };
    let size = match (options.size, &backing) {
        (Some(size), _) => size,
        (None, Some((_, _, backing_size))) => *backing_size,
        (None, None) => {
            return Err(DiskError::InvalidOption {
                path: path.to_path_buf(),
                reason: "give a size, or a backing image to take the size from".into(),
            })
        }
    };
    check_size(path, size)?;
    let pending = PendingImage::new(path)?;
    write_qcow2(
        &pending,
        size,
        cluster_size,
        backing.map(|(name, format, _)| (name, format)),
    )?;
    pending.publish()
}

/// Opens the backing image (and its chain) to prove it usable; returns the name to record, its
/// format and its virtual size.
fn check_backing(
    image: &Path,
    name: &Path,
    format: Option<DiskFormat>,
    policy: &BackingPolicy,
) -> Result<(String, DiskFormat, u64)> {
    let name_text = name.to_str().ok_or_else(|| DiskError::InvalidOption {
        path: image.to_path_buf(),
        reason: format!("backing file name {} is not UTF-8", name.display()),
    })?;
    let resolved = resolve_backing_path(image, name_text);
    let file = std::fs::File::open(&resolved).map_err(|source| DiskError::Open {
        path: resolved.clone(),
        source,
    })?;
    policy.check(image, &resolved, &file)?;
    let format = match format {
        Some(format) => format,
        None => detect_format(&resolved)?,
    };
    let options = OpenOptions::read_only()
        .format(format)
        .backing(policy.clone());
    let backing = open(&resolved, options)?;
    Ok((name_text.to_string(), format, backing.virtual_size()))
}

pub(crate) fn write_qcow2(
    pending: &PendingImage,
    size: u64,
    cluster_size: u64,
    backing: Option<(String, DiskFormat)>,
) -> Result<()> {
    let file = pending.create_file()?;
    let err = |source| DiskError::imago("create", pending.path(), source);
    let options = StorageOpenOptions::new()
        .filename(pending.path())
        .write(true);
    let storage = ImagoFile::from_open_file(file, options).map_err(err)?;
    let mut builder = Qcow2::<ImagoFile>::create_builder(storage)
        .size(size)
        .cluster_size(cluster_size as usize);
    if let Some((name, format)) = backing {
        builder = builder.backing(name, format.name().to_string());
    }
    builder.create().map_err(err)
}

/// Options for [`resize`].
#[derive(Clone, Debug, Default)]
pub struct ResizeOptions {
    /// How to open the image (its format and backing policy; it is opened writable and locked).
    pub open: OpenOptions,
    /// Allow shrinking a raw image (losing the data past the new end). qcow2 images are never
    /// shrunk.
    pub force_shrink: bool,
}

/// Changes the virtual size of the image at `path`. Growing is always allowed; shrinking only for
/// raw files and only when forced.
pub fn resize(path: &Path, new_size: u64, options: ResizeOptions) -> Result<()> {
    check_size(path, new_size)?;
    let open = OpenOptions {
        writable: true,
        ..options.open
    };
    let format = match open.format {
        Some(format) => format,
        None => detect_format(path)?,
    };
    match format {
        DiskFormat::Raw => {
            let disk = RawDisk::open(path, &open)?;
            if disk.host_kind() == HostKind::BlockDevice {
                return Err(DiskError::InvalidOption {
                    path: path.to_path_buf(),
                    reason: "a block device's size is the device's; resize the logical volume \
                             (e.g. `lvresize`) instead"
                        .into(),
                });
            }
            let current = disk.virtual_size();
            if new_size < current && !options.force_shrink {
                return Err(DiskError::ShrinkRefused {
                    path: path.to_path_buf(),
                    current,
                    requested: new_size,
                    hint: "; force it if that is really wanted",
                });
            }
            disk.set_len(new_size)
        }
        DiskFormat::Qcow2 => {
            let mut disk = Qcow2Disk::open(path, &open)?;
            let current = disk.virtual_size();
            if new_size < current {
                return Err(DiskError::ShrinkRefused {
                    path: path.to_path_buf(),
                    current,
                    requested: new_size,
                    hint: "; corral never shrinks qcow2 images",
                });
            }
            disk.grow(new_size)?;
            fail::fail_point!("image.grown");
            disk.flush()
        }
    }
}
