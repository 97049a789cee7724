//! Disk images people already have (raw, qcow2, vmdk, vdi, vhdx) imported as one standalone qcow2
//! file: the backing chain flattened, zero ranges left sparse. raw and qcow2 go through
//! corral-disk (its qcow2 header gate, backing files only beside the source); the others through
//! `qemu-img convert` when it is installed, after `qemu-img info` shows they reach no other file.

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_disk::{BackingPolicy, ConvertOptions, CopyProgress, DiskError, DiskFormat};
use corral_error::PathIoError;

use crate::progress::{DiskCopy, Progress};

/// The formats an import understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vdi,
    Vhdx,
}

impl SourceFormat {
    /// qemu-img's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Raw => "raw",
            SourceFormat::Qcow2 => "qcow2",
            SourceFormat::Vmdk => "vmdk",
            SourceFormat::Vdi => "vdi",
            SourceFormat::Vhdx => "vhdx",
        }
    }
}

impl std::fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SourceFormat {
    type Err = DiskImportError;

    fn from_str(name: &str) -> Result<Self, DiskImportError> {
        Ok(match name {
            "raw" => SourceFormat::Raw,
            "qcow2" => SourceFormat::Qcow2,
            "vmdk" => SourceFormat::Vmdk,
            "vdi" => SourceFormat::Vdi,
            "vhdx" => SourceFormat::Vhdx,
            other => return Err(DiskImportError::UnknownFormat(other.to_string())),
        })
    }
}

/// What an import made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportedDisk {
    pub virtual_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskImportError {
    #[error("unknown disk image format `{0}`; use raw, qcow2, vmdk, vdi or vhdx")]
    UnknownFormat(String),
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("cannot import disk image {path}")]
    Disk {
        path: PathBuf,
        #[source]
        source: DiskError,
    },
    #[error("importing a {format} image needs qemu-img; install qemu-utils (apt-get install qemu-utils)")]
    NoQemuImg { format: SourceFormat },
    #[error("{path} is not a {format} image qemu-img accepts: {detail}")]
    QemuImg {
        path: PathBuf,
        format: SourceFormat,
        detail: String,
    },
    #[error("cannot run qemu-img on {path}")]
    QemuImgRun {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the `qemu-img info` output for {path}")]
    QemuImgInfo {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} reaches the other file {other} (a backing file or extent); corral imports only \
         self-contained images: flatten it first (qemu-img convert -O qcow2)"
    )]
    ReachesOtherFile { path: PathBuf, other: String },
    #[error("{path} already exists; remove it or import elsewhere")]
    TargetExists { path: PathBuf },
}

/// The format of the image at `path`, by its magic; raw when it has none.
pub fn detect(path: &Path) -> Result<SourceFormat, DiskImportError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|source| {
        DiskImportError::Io(PathIoError::new("read", path.to_path_buf(), source))
    })?;
    let mut start = [0u8; 512];
    let mut filled = 0;
    while filled < start.len() {
        match file.read_at(&mut start[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(DiskImportError::Io(PathIoError::new(
                    "read",
                    path.to_path_buf(),
                    source,
                )))
            }
        }
    }
    Ok(detect_bytes(&start[..filled]))
}

fn detect_bytes(start: &[u8]) -> SourceFormat {
    if start.starts_with(b"QFI\xfb") {
        SourceFormat::Qcow2
    } else if start.starts_with(b"KDMV") || start.starts_with(b"# Disk DescriptorFile") {
        SourceFormat::Vmdk
    } else if start.starts_with(b"vhdxfile") {
        SourceFormat::Vhdx
    } else if start.get(0x40..0x44) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        SourceFormat::Vdi
    } else {
        SourceFormat::Raw
    }
}

/// Imports the image at `source` (in `format`, detected when `None`) as a new standalone qcow2
/// file at `target`, which must not exist. Nothing is left at `target` on error.
pub fn import(
    source: &Path,
    format: Option<SourceFormat>,
    target: &Path,
    progress: &dyn Progress,
) -> Result<ImportedDisk, DiskImportError> {
    let format = match format {
        Some(format) => format,
        None => detect(source)?,
    };
    if target.symlink_metadata().is_ok() {
        return Err(DiskImportError::TargetExists {
            path: target.to_path_buf(),
        });
    }
    match format {
        SourceFormat::Raw => convert(source, DiskFormat::Raw, target, progress),
        SourceFormat::Qcow2 => convert(source, DiskFormat::Qcow2, target, progress),
        SourceFormat::Vmdk | SourceFormat::Vdi | SourceFormat::Vhdx => {
            qemu_img_convert(source, format, target, progress)
        }
    }
}

fn convert(
    source: &Path,
    format: DiskFormat,
    target: &Path,
    progress: &dyn Progress,
) -> Result<ImportedDisk, DiskImportError> {
    // A qcow2 header is untrusted: its backing files may only be beside it, in its own directory.
    let beside = source
        .parent()
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }
        })
        .unwrap_or(Path::new("/"));
    let options = ConvertOptions {
        source_format: Some(format),
        source_backing: BackingPolicy::Within(vec![beside.to_path_buf()]),
        target_format: DiskFormat::Qcow2,
        cluster_size: None,
    };
    let mut copy = DiskCopy::new(progress, "converting the disk");
    let mut virtual_size = None;
    corral_disk::convert(source, target, options, &mut |step: CopyProgress| {
        virtual_size = Some(step.total);
        copy.step(step)
    })
    .map_err(|source_error| DiskImportError::Disk {
        path: source.to_path_buf(),
        source: source_error,
    })?;
    // The copy's last step names the whole disk, holes and all.
    Ok(ImportedDisk {
        virtual_size: virtual_size.unwrap_or_default(),
    })
}

/// What `qemu-img info` says about an image, the parts that matter here.
#[derive(serde::Deserialize)]
struct QemuInfo {
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
    #[serde(rename = "format-specific")]
    format_specific: Option<serde_json::Value>,
}

fn qemu_img(
    source: &Path,
    format: SourceFormat,
    args: &[&std::ffi::OsStr],
) -> Result<std::process::Output, DiskImportError> {
    let output = Command::new("qemu-img").args(args).output();
    match output {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(DiskImportError::NoQemuImg { format })
        }
        Err(error) => Err(DiskImportError::QemuImgRun {
            path: source.to_path_buf(),
            source: error,
        }),
        Ok(output) if !output.status.success() => Err(DiskImportError::QemuImg {
            path: source.to_path_buf(),
            format,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }),
        Ok(output) => Ok(output),
    }
}

fn qemu_img_convert(
    source: &Path,
    format: SourceFormat,
    target: &Path,
    progress: &dyn Progress,
) -> Result<ImportedDisk, DiskImportError> {
    let info = qemu_img(
        source,
        format,
        &[
            "info".as_ref(),
            "--output=json".as_ref(),
            "-f".as_ref(),
            format.name().as_ref(),
            source.as_os_str(),
        ],
    )?;
    let info: QemuInfo =
        serde_json::from_slice(&info.stdout).map_err(|error| DiskImportError::QemuImgInfo {
            path: source.to_path_buf(),
            source: error,
        })?;
    check_self_contained(source, &info)?;
    let temp = temp_beside(target);
    progress.begin("converting the disk", Some(info.virtual_size));
    let converted = qemu_img(
        source,
        format,
        &[
            "convert".as_ref(),
            "-f".as_ref(),
            format.name().as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            source.as_os_str(),
            temp.as_os_str(),
        ],
    )
    .and_then(|_| {
        progress.advance(info.virtual_size);
        // link(2) refuses an existing target, unlike rename(2).
        std::fs::hard_link(&temp, target).map_err(|source| {
            DiskImportError::Io(PathIoError::new("write", target.to_path_buf(), source))
        })
    });
    let _ = std::fs::remove_file(&temp);
    converted?;
    Ok(ImportedDisk {
        virtual_size: info.virtual_size,
    })
}

/// Refuses an image whose backing file or extents are other files: a vmdk descriptor can name
/// any host file (`/etc/shadow`) as an extent, and the import would copy it in.
fn check_self_contained(source: &Path, info: &QemuInfo) -> Result<(), DiskImportError> {
    if let Some(backing) = &info.backing_filename {
        return Err(DiskImportError::ReachesOtherFile {
            path: source.to_path_buf(),
            other: backing.clone(),
        });
    }
    let extents = info
        .format_specific
        .as_ref()
        .and_then(|specific| specific.pointer("/data/extents"))
        .and_then(|extents| extents.as_array());
    let own = std::fs::canonicalize(source).ok();
    for extent in extents.into_iter().flatten() {
        let Some(file) = extent.get("filename").and_then(|f| f.as_str()) else {
            continue;
        };
        if std::fs::canonicalize(file).ok() != own || own.is_none() {
            return Err(DiskImportError::ReachesOtherFile {
                path: source.to_path_buf(),
                other: file.to_string(),
            });
        }
    }
    Ok(())
}

/// A temporary name in `target`'s directory, unique to this process.
fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.import-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        assert_eq!(detect_bytes(b"QFI\xfb\0\0\0\x03"), SourceFormat::Qcow2);
        assert_eq!(detect_bytes(b"KDMV\x01"), SourceFormat::Vmdk);
        assert_eq!(detect_bytes(b"# Disk DescriptorFile\n"), SourceFormat::Vmdk);
        assert_eq!(detect_bytes(b"vhdxfile"), SourceFormat::Vhdx);
        let mut vdi = vec![0u8; 0x48];
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(detect_bytes(&vdi), SourceFormat::Vdi);
        assert_eq!(detect_bytes(b""), SourceFormat::Raw);
        assert_eq!(detect_bytes(&[0u8; 512]), SourceFormat::Raw);
    }
}
