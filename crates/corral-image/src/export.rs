//! Exports: a stored image written out in the formats other tools read. What is written appears
//! whole under its name or not at all (built under a temporary name, published without
//! replacing anything).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use corral_error::PathIoError;

use crate::archive::{self, ArchiveError, PackOptions};
use crate::metadata::ImageType;
use crate::progress::{DiskCopy, Progress};
use crate::store::{Image, StoreError};

/// What `corral image export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A container's root filesystem as a tarball (canonical, uncompressed).
    Rootfs,
    /// Incus: a unified tarball for a container; a directory with `metadata.tar` and
    /// `rootfs.img` (a split image) for a VM. Importing it back gives the same fingerprint.
    Incus,
    /// An OCI image layout directory (containers).
    Oci,
    /// An `oci-archive` tarball (containers).
    OciArchive,
    /// A VM's disk as a standalone qcow2.
    Qcow2,
    /// A VM's disk as a raw (sparse) file.
    Raw,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{target} exists; give a new name or remove it first")]
    Exists { target: PathBuf },
    #[error("a {image_type} image cannot be exported as {format}; use {hint}")]
    WrongType {
        image_type: ImageType,
        format: &'static str,
        hint: &'static str,
    },
    #[error("cannot write {path}")]
    Archive {
        path: PathBuf,
        #[source]
        source: ArchiveError,
    },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error(transparent)]
    Disk(#[from] corral_disk::DiskError),
}

impl ExportFormat {
    /// The format an image is exported in unless told: Incus for a container (its fingerprint
    /// survives the round trip), qcow2 for a VM.
    pub fn default_for(image_type: ImageType) -> Self {
        match image_type {
            ImageType::Container => ExportFormat::Incus,
            ImageType::Vm => ExportFormat::Qcow2,
        }
    }

    fn name(self) -> &'static str {
        let named = EXPORT_FORMAT_NAMES
            .iter()
            .find(|(_, format)| *format == self);
        named.map_or("", |(name, _)| name)
    }

    /// True when the export is one file (the others are directories: an OCI layout, a VM's
    /// split Incus image).
    pub fn is_one_file(self, image_type: ImageType) -> bool {
        match self {
            ExportFormat::Oci => false,
            ExportFormat::Incus => image_type == ImageType::Container,
            _ => true,
        }
    }
}

impl std::fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Each format by the name users give it.
const EXPORT_FORMAT_NAMES: [(&str, ExportFormat); 6] = [
    ("rootfs", ExportFormat::Rootfs),
    ("incus", ExportFormat::Incus),
    ("oci", ExportFormat::Oci),
    ("oci-archive", ExportFormat::OciArchive),
    ("qcow2", ExportFormat::Qcow2),
    ("raw", ExportFormat::Raw),
];

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<ExportFormat, String> {
        crate::named(&EXPORT_FORMAT_NAMES, text, "an export format")
    }
}

/// Writes `image` to `target` (which must not exist) in `format`.
pub fn export(
    image: &Image,
    target: &Path,
    format: ExportFormat,
    progress: &dyn Progress,
) -> Result<(), ExportError> {
    let image_type = image.metadata().image_type;
    let fits = match format {
        ExportFormat::Rootfs | ExportFormat::Oci | ExportFormat::OciArchive => {
            image_type == ImageType::Container
        }
        ExportFormat::Qcow2 | ExportFormat::Raw => image_type == ImageType::Vm,
        ExportFormat::Incus => true,
    };
    if !fits {
        return Err(ExportError::WrongType {
            image_type,
            format: format.name(),
            hint: match image_type {
                ImageType::Container => "rootfs, incus, oci or oci-archive",
                ImageType::Vm => "qcow2, raw or incus",
            },
        });
    }
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(ExportError::Exists {
            target: target.to_path_buf(),
        });
    }
    sweep_killed_exports(target);
    let temp = temp_name(target);
    let result = write(image, &temp, format, progress);
    let result = result.and_then(|()| {
        fail::fail_point!("images.export-temp-written");
        corral_host::atomic::rename_noreplace(&temp, target).map_err(|source| {
            if source.raw_os_error() == Some(libc::EEXIST) {
                ExportError::Exists {
                    target: target.to_path_buf(),
                }
            } else {
                ExportError::Io(PathIoError::new("publish", target.to_path_buf(), source))
            }
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp).or_else(|_| std::fs::remove_file(&temp));
    }
    result
}

/// What sits between an export's target name and the writer's pid in its temporary name.
const TEMP_MARK: &str = ".corral-tmp-";

/// `.NAME.corral-tmp-` for target `NAME`: the start of its exports' temporary names.
fn temp_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map_or("export".into(), |n| n.to_string_lossy());
    format!(".{name}{TEMP_MARK}")
}

/// `.NAME.corral-tmp-PID`: where an export to `target` is built before its rename.
pub(crate) fn temp_name(target: &Path) -> PathBuf {
    target.with_file_name(format!("{}{}", temp_prefix(target), std::process::id()))
}

/// `.NAME.corral-tmp-PID.SUFFIX`: another temporary of the export to `target` (an OVA's
/// converted disks), swept like [`temp_name`].
pub(crate) fn temp_name_with(target: &Path, suffix: &str) -> PathBuf {
    let mut name = temp_name(target).into_os_string();
    name.push(format!(".{suffix}"));
    PathBuf::from(name)
}

/// Removes what exports to `target` killed before their rename left: temporaries of processes
/// that are gone. Nothing else sweeps them (they are beside the target, outside the store).
pub(crate) fn sweep_killed_exports(target: &Path) {
    let prefix = temp_prefix(target);
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split('.').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if corral_host::process::process_alive(pid, None) {
            continue;
        }
        // Best effort, and never following a link: what stays is retried by the next export.
        let path = entry.path();
        let _ = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
    }
}

fn write(
    image: &Image,
    temp: &Path,
    format: ExportFormat,
    progress: &dyn Progress,
) -> Result<(), ExportError> {
    let metadata = image.metadata();
    let archive_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Archive { path, source }
    };
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io(PathIoError::new(action, path, source))
    };
    match (format, metadata.image_type) {
        (ExportFormat::Rootfs, _) => {
            let file = create(temp)?;
            progress.begin("writing the root filesystem", Some(image.record.size));
            let mut builder = tar::Builder::new(BufWriter::new(file));
            archive::pack(
                &mut builder,
                &image.rootfs()?,
                Path::new(""),
                &PackOptions::default(),
            )
            .map_err(archive_error(temp))?;
            finish(builder, temp)?;
        }
        (ExportFormat::Incus, ImageType::Container) => {
            let file = create(temp)?;
            progress.begin("writing the Incus image", Some(image.record.size));
            let out = crate::incus::write_unified(metadata, &image.rootfs()?, BufWriter::new(file))
                .map_err(archive_error(temp))?;
            sync(out, temp)?;
        }
        (ExportFormat::Incus, ImageType::Vm) => {
            std::fs::create_dir(temp).map_err(io("create", temp))?;
            let meta_path = temp.join("metadata.tar");
            let out = crate::incus::write_metadata_tarball(
                metadata,
                image.dir(),
                BufWriter::new(create(&meta_path)?),
            )
            .map_err(archive_error(&meta_path))?;
            sync(out, &meta_path)?;
            let disk = image.disk()?;
            let rootfs = temp.join("rootfs.img");
            progress.begin(
                "copying the disk",
                std::fs::metadata(&disk).map(|m| m.len()).ok(),
            );
            std::fs::copy(&disk, &rootfs).map_err(io("copy", &disk))?;
        }
        (ExportFormat::Oci | ExportFormat::OciArchive, _) => {
            progress.begin("writing the OCI image", Some(image.record.size));
            let name = image.aliases.first().map(String::as_str);
            crate::oci::export(
                &image.rootfs()?,
                metadata,
                temp,
                format == ExportFormat::OciArchive,
                name,
            )?;
        }
        (ExportFormat::Qcow2 | ExportFormat::Raw, _) => {
            let disk = image.disk()?;
            let mut copy = DiskCopy::new(progress, "copying the disk");
            corral_disk::convert(
                &disk,
                temp,
                corral_disk::ConvertOptions {
                    source_format: Some(corral_disk::DiskFormat::Qcow2),
                    source_backing: corral_disk::BackingPolicy::Within(vec![image
                        .dir()
                        .to_path_buf()]),
                    target_format: if format == ExportFormat::Raw {
                        corral_disk::DiskFormat::Raw
                    } else {
                        corral_disk::DiskFormat::Qcow2
                    },
                    cluster_size: None,
                },
                &mut |step| copy.step(step),
            )?;
        }
    }
    Ok(())
}

fn create(path: &Path) -> Result<File, ExportError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| ExportError::Io(PathIoError::new("create", path.to_path_buf(), source)))
}

fn finish(builder: tar::Builder<BufWriter<File>>, path: &Path) -> Result<(), ExportError> {
    let out = builder
        .into_inner()
        .map_err(|source| ExportError::Io(PathIoError::new("write", path.to_path_buf(), source)))?;
    sync(out, path)
}

fn sync(out: BufWriter<File>, path: &Path) -> Result<(), ExportError> {
    let io = |source| ExportError::Io(PathIoError::new("write", path.to_path_buf(), source));
    let mut out = out;
    out.flush().map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}
