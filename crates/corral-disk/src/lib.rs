//! Disk images for corral: raw files, host block devices and qcow2 images (with backing chains of
//! any depth), behind one [`Disk`] trait that the virtio-blk device and the volume tooling share.
//!
//! - [`open`] opens an image in the format the caller says (or detects it by magic: a file with
//!   the qcow2 magic is never taken for raw unless the caller says so), takes QEMU-compatible
//!   image locks (`lock.rs`), and opens qcow2 backing chains read-only, refusing loops and backing
//!   files outside the places the caller allows ([`BackingPolicy`]).
//! - [`create_raw`], [`create_qcow2`], [`info`], [`resize`] and [`convert`] are the maintenance
//!   operations behind `corral volume` and image import.
//! - [`write_stream_optimized_vmdk`] writes a disk as a streamOptimized VMDK to any byte stream,
//!   for OVA export.
//! - [`partition`] lists a disk's MBR or GPT partitions, for the tools that look inside a guest's
//!   disk without the guest.
//!
//! qcow2 metadata handling (L1/L2 tables, refcounts, cluster allocation, copy-on-write from the
//! backing image, compressed-cluster reads, zero clusters, flush ordering) is done by the `imago`
//! crate, written by a maintainer of qemu's block layer. corral adds a header gate in front of it
//! (`header.rs`) that refuses encryption, external data files, unknown incompatible features and
//! absurd sizes with clear reasons, a consistency check (`check.rs`, `qemu-img check`'s) that
//! refuses corrupted images before a writable open and reports leaked clusters, and opens backing
//! files itself so it controls which files an image can reach.

mod check;
mod convert;
mod create;
mod error;
mod header;
mod info;
mod lock;
pub mod partition;
mod qcow2;
mod raw;
mod vmdk_stream;

use std::fmt::Debug;
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use check::{check, repair_leaks, CheckReport};
pub use convert::{convert, ConvertOptions, CopyProgress};
pub use create::{
    create_qcow2, create_raw, pending_image_owner, resize, Qcow2CreateOptions, ResizeOptions,
    DEFAULT_CLUSTER_SIZE,
};
pub use error::{DiskError, Result};
pub use header::MAX_VIRTUAL_SIZE;
pub use info::{info, ImageInfo};
pub use lock::{check_lock, lock_exclusive, ImageLock, LockHandle, LockHolder};
pub use qcow2::{BackingInfo, Qcow2Disk, MAX_BACKING_DEPTH};
pub use raw::{file_data_ranges, HostKind, RawDisk};
pub use vmdk_stream::write_stream_optimized_vmdk;

/// An open disk, as a virtio-blk device sees it: a virtual size and byte-addressed I/O.
///
/// Requests must lie inside `0..virtual_size()`; implementations check and return
/// [`DiskError::OutOfRange`] rather than trusting the caller (whose offsets come from a guest).
pub trait Disk: Debug + Send {
    /// The image format of the top layer.
    fn format(&self) -> DiskFormat;
    /// Size of the virtual disk in bytes.
    fn virtual_size(&self) -> u64;
    /// True when the disk was opened read-only; write-type requests then fail with
    /// [`DiskError::ReadOnly`].
    fn read_only(&self) -> bool;
    /// A stable identity of the top image file, the source of a virtio-blk serial.
    fn id(&self) -> DiskId;
    /// Fills `buf` from the virtual disk at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Writes `buf` to the virtual disk at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<()>;
    /// Releases the storage behind a range; it reads back as zeroes afterwards.
    fn discard(&mut self, offset: u64, length: u64) -> Result<()>;
    /// Makes a range read back as zeroes, releasing storage where the format allows.
    fn write_zeroes(&mut self, offset: u64, length: u64) -> Result<()>;
    /// The parts of `offset..offset + length` that may hold data: in order, apart and not
    /// empty; everything else reads as zeroes. Holes are a sparse file's holes and, in a qcow2
    /// chain, clusters no layer allocates and zero clusters, so a reader that skips them pays
    /// for a disk's data rather than its size. A range given may still read as zeroes (a block
    /// device is all data); a hole never holds data.
    fn data_ranges(&self, offset: u64, length: u64) -> Result<Vec<Range<u64>>>;
    /// The handle on the top image's write locks (`None` when it is read-only or not locked),
    /// taken before the disk moves to its I/O thread; see [`LockHandle`].
    fn take_lock_handle(&mut self) -> Option<LockHandle> {
        None
    }
}

/// The image formats corral reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Plain bytes: a (sparse) file or a host block device.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

impl DiskFormat {
    /// The name qemu-img and corral's configuration use.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that corral does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown disk format `{0}`; use `raw` or `qcow2`")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for DiskFormat {
    type Err = UnknownFormat;

    fn from_str(name: &str) -> std::result::Result<Self, UnknownFormat> {
        match name {
            "raw" => Ok(DiskFormat::Raw),
            "qcow2" => Ok(DiskFormat::Qcow2),
            other => Err(UnknownFormat(other.to_string())),
        }
    }
}

/// The identity of an image file: its device and inode, stable for the file's life (renames
/// included) and distinct between files on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiskId {
    /// `st_dev` of the file (or of the device node).
    pub device: u64,
    /// `st_ino` of the file (or `st_rdev` for a block device, which names the disk itself).
    pub inode: u64,
}

/// virtio-blk's GET_ID answer is at most 20 bytes.
pub const SERIAL_LEN: usize = 20;

impl DiskId {
    pub(crate) fn of(metadata: &std::fs::Metadata) -> Self {
        let inode = if metadata.file_type().is_block_device() {
            metadata.rdev()
        } else {
            metadata.ino()
        };
        DiskId {
            device: metadata.dev(),
            inode,
        }
    }

    /// A 20-character serial for virtio-blk GET_ID, derived from the identity.
    pub fn serial(&self) -> String {
        // 8 hex digits of the device and 12 of the inode: 20 bytes, unique in practice.
        format!(
            "{:08x}{:012x}",
            self.device & 0xffff_ffff,
            self.inode & 0xffff_ffff_ffff
        )
    }
}

/// Where the backing files of a qcow2 image may be. A header is untrusted input: a downloaded
/// image, or one a guest wrote into a disk that was then opened as qcow2, can name any host file
/// (`/etc/shadow`) as its backing file and read it through the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackingPolicy {
    /// Wherever the headers say (qemu's behaviour): for images whose whole chain the caller
    /// trusts.
    #[default]
    Any,
    /// Only files inside these directories, or these files themselves. Both sides are compared
    /// after resolving symbolic links (the backing file's path is read from its open descriptor),
    /// so a link inside an allowed directory does not lead out of it.
    Within(Vec<PathBuf>),
}

impl BackingPolicy {
    /// Checks the backing file `backing` (open as `file`) of `image`.
    pub(crate) fn check(&self, image: &Path, backing: &Path, file: &File) -> Result<()> {
        let BackingPolicy::Within(allowed) = self else {
            return Ok(());
        };
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| std::fs::canonicalize(backing))
            .map_err(|source| DiskError::Open {
                path: backing.to_path_buf(),
                source,
            })?;
        let inside = allowed.iter().any(|place| {
            let place = std::fs::canonicalize(place).unwrap_or_else(|_| place.clone());
            real.starts_with(&place)
        });
        if inside {
            return Ok(());
        }
        Err(DiskError::BackingNotAllowed {
            image: image.to_path_buf(),
            backing: backing.to_path_buf(),
            allowed: allowed.clone(),
        })
    }
}

/// Whether an open takes image locks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Locking {
    /// Take QEMU-compatible locks (a writer excludes all others, readers share) and refuse an
    /// image another process holds in a conflicting way.
    #[default]
    Lock,
    /// Neither take nor check locks (qemu's `force-share`): for looking at an image that may be
    /// in use (`info`). Only for read-only opens; what is read may be changing.
    ForceShare,
}

/// How to open an image.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// The format, or `None` to detect it by magic. Callers that open an image again and again
    /// (a VM's disk at every start) should record the format once and pass it: a guest can write
    /// a qcow2 header into its raw disk.
    pub format: Option<DiskFormat>,
    /// Open for writing (the backing chain of a qcow2 image is always read-only).
    pub writable: bool,
    /// Where backing files may be.
    pub backing: BackingPolicy,
    /// Whether to lock the image (and its backing files).
    pub locking: Locking,
}

impl OpenOptions {
    /// Read-only with format detection.
    pub fn read_only() -> Self {
        OpenOptions::default()
    }

    /// Writable with format detection.
    pub fn writable() -> Self {
        OpenOptions {
            writable: true,
            ..OpenOptions::default()
        }
    }

    /// The same options with an explicit format.
    pub fn format(self, format: DiskFormat) -> Self {
        OpenOptions {
            format: Some(format),
            ..self
        }
    }

    /// The same options with a backing file policy.
    pub fn backing(self, backing: BackingPolicy) -> Self {
        OpenOptions { backing, ..self }
    }

    /// The same options without locking (see [`Locking::ForceShare`]).
    pub fn force_share(self) -> Self {
        OpenOptions {
            locking: Locking::ForceShare,
            ..self
        }
    }

    /// Opens `path` for these options, locking it unless told not to.
    pub(crate) fn open_file(&self, path: &Path) -> Result<File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(self.writable)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        self.lock_file(&file, path)?;
        Ok(file)
    }

    /// The handle on `file`'s write locks, when these options lock it for writing.
    pub(crate) fn lock_handle(&self, file: &File, path: &Path) -> Result<Option<LockHandle>> {
        match self.locking {
            Locking::Lock => LockHandle::of(file, path, self.writable),
            Locking::ForceShare => Ok(None),
        }
    }

    /// Locks `file` (the image at `path`) for these options, unless told not to.
    pub(crate) fn lock_file(&self, file: &File, path: &Path) -> Result<()> {
        match (self.locking, self.writable) {
            (Locking::Lock, false) => lock::lock(file, path, lock::Access::Read),
            (Locking::Lock, true) => lock::lock(file, path, lock::Access::Write),
            (Locking::ForceShare, false) => Ok(()),
            (Locking::ForceShare, true) => Err(DiskError::InvalidOption {
                path: path.to_path_buf(),
                reason: "an image opened for writing must be locked".into(),
            }),
        }
    }

    /// The options for the read-only backing files of an image opened with these.
    pub(crate) fn for_backing(&self, format: DiskFormat) -> Self {
        OpenOptions {
            format: Some(format),
            writable: false,
            ..self.clone()
        }
    }
}

/// Opens the image at `path`.
pub fn open(path: &Path, options: OpenOptions) -> Result<Box<dyn Disk>> {
    let format = match options.format {
        Some(format) => format,
        None => detect_format(path)?,
    };
    Ok(match format {
        DiskFormat::Raw => Box::new(RawDisk::open(path, &options)?),
        DiskFormat::Qcow2 => Box::new(Qcow2Disk::open(path, &options)?),
    })
}

/// Detects the format of the image at `path` by its magic: qcow2 if it carries the qcow2 magic,
/// raw otherwise.
pub fn detect_format(path: &Path) -> Result<DiskFormat> {
    let file = File::open(path).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    detect_format_of(path, &file)
}

/// [`detect_format`] of `path`, already open as `file`.
pub(crate) fn detect_format_of(path: &Path, file: &File) -> Result<DiskFormat> {
    let start = read_start(path, file, header::QCOW2_MAGIC.len())?;
    Ok(if header::has_qcow2_magic(&start) {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    })
}

/// Reads up to `len` bytes from the start of `file` (fewer if the file is shorter).
pub(crate) fn read_start(path: &Path, file: &File, len: usize) -> Result<Vec<u8>> {
    let mut start = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut start[filled..], filled as u64) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(DiskError::io("read", path, source)),
        }
    }
    start.truncate(filled);
    Ok(start)
}

/// Appends `range` to the ordered, apart `ranges`, joining it to the last one where they touch.
pub(crate) fn push_range(ranges: &mut Vec<Range<u64>>, range: Range<u64>) {
    if range.is_empty() {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// Checks that `length` bytes at `offset` lie inside a disk of `size` bytes.
pub(crate) fn check_range(path: &Path, size: u64, offset: u64, length: u64) -> Result<()> {
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfRange {
            path: path.to_path_buf(),
            offset,
            length,
            size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip_and_unknown_names_are_refused() {
        for format in [DiskFormat::Raw, DiskFormat::Qcow2] {
            assert_eq!(format.to_string().parse::<DiskFormat>().ok(), Some(format));
        }
        let err = "vmdk".parse::<DiskFormat>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown disk format `vmdk`; use `raw` or `qcow2`")
        );
    }

    #[test]
    fn range_checks_catch_overflow_and_the_end() {
        let path = Path::new("disk");
        assert!(check_range(path, 4096, 0, 4096).is_ok());
        assert!(check_range(path, 4096, 4096, 0).is_ok());
        assert!(check_range(path, 4096, 4095, 2).is_err());
        assert!(check_range(path, 4096, u64::MAX, 2).is_err());
    }

    #[test]
    fn touching_ranges_are_joined_and_empty_ones_dropped() {
        let mut ranges = Vec::new();
        for range in [0..4, 4..6, 6..6, 8..9, 9..12] {
            push_range(&mut ranges, range);
        }
        assert_eq!(ranges, [0..6, 8..12]);
    }

    #[test]
    fn serials_are_twenty_bytes() {
        let id = DiskId {
            device: u64::MAX,
            inode: u64::MAX,
        };
        assert_eq!(id.serial().len(), SERIAL_LEN);
        assert_eq!(
            DiskId {
                device: 1,
                inode: 2
            }
            .serial(),
            "00000001000000000002"
        );
    }
}
