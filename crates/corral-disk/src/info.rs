//! What `corral volume info` shows about an image, in the spirit of `qemu-img info`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{DiskError, Result};
use crate::qcow2::{BackingInfo, Qcow2Disk};
use crate::raw::{HostKind, RawDisk};
use crate::{detect_format, Disk, DiskFormat, OpenOptions};

/// Facts about an image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    /// The image.
    pub path: PathBuf,
    /// Its format (as the caller said, or detected by magic).
    pub format: DiskFormat,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Bytes the image occupies on the host (allocated blocks; a block device counts whole).
    pub actual_size: u64,
    /// True for a host block device ("dedicated VBD").
    pub block_device: bool,
    /// qcow2 version (2 or 3); `None` for raw.
    pub qcow2_version: Option<u32>,
    /// qcow2 cluster size in bytes; `None` for raw.
    pub cluster_size: Option<u64>,
    /// The backing images, nearest first; empty when the image stands alone.
    pub backing_chain: Vec<BackingInfo>,
}

/// Describes the image at `path`, opened read-only with `options` (format and backing policy),
/// without locks: like `qemu-img info -U`, it works on images in use.
pub fn info(path: &Path, options: OpenOptions) -> Result<ImageInfo> {
    let options = OpenOptions {
        writable: false,
        ..options.force_share()
    };
    let metadata = std::fs::metadata(path).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let allocated = metadata.blocks() * 512;
    let format = match options.format {
        Some(format) => format,
        None => detect_format(path)?,
    };
    Ok(match format {
        DiskFormat::Raw => {
            let disk = RawDisk::open(path, &options)?;
            let block_device = disk.host_kind() == HostKind::BlockDevice;
            ImageInfo {
                path: path.to_path_buf(),
                format: DiskFormat::Raw,
                virtual_size: disk.virtual_size(),
                actual_size: if block_device {
                    disk.virtual_size()
                } else {
                    allocated
                },
                block_device,
                qcow2_version: None,
                cluster_size: None,
                backing_chain: Vec::new(),
            }
        }
        DiskFormat::Qcow2 => {
            let disk = Qcow2Disk::open(path, &options)?;
            ImageInfo {
                path: path.to_path_buf(),
                format: DiskFormat::Qcow2,
                virtual_size: disk.virtual_size(),
                actual_size: allocated,
                block_device: false,
                qcow2_version: Some(disk.version()),
                cluster_size: Some(disk.cluster_size()),
                backing_chain: disk.backing_chain().to_vec(),
            }
        }
    })
}
