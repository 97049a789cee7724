//! Incus (and LXD) images: a unified tarball (`metadata.yaml` + `rootfs/` or `rootfs.img`), or
//! split into a metadata tarball and a root filesystem file (squashfs for containers, qcow2 for
//! VMs). Fingerprints follow Incus's rule: the SHA-256 of the unified tarball, or of the
//! metadata tarball followed by the root filesystem file.

pub mod metadata;

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::archive::{self, ArchiveError, PackOptions, UnpackOptions};
use crate::import::{io_error, HashWriter, ImportError, ImportOptions};
use crate::metadata::{ImageMetadata, ImageType};
use crate::progress::{Progress, ProgressReader};
use crate::store::{Image, ImageStore, NewImage, Staging, DISK, INITRD, KERNEL, ROOTFS};

/// Where a VM image's own kernel and initrd travel in its metadata tarball (Incus ignores them).
const KERNEL_ENTRY: &str = "corral/kernel";
const INITRD_ENTRY: &str = "corral/initrd";
/// The magic of a squashfs filesystem (Incus's split container images).
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

fn mtime(metadata: &ImageMetadata) -> u64 {
    metadata
        .created
        .as_deref()
        .and_then(|c| humantime::parse_rfc3339_weak(c).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Writes a container image as Incus's unified tarball, canonically: `metadata.yaml`, then the
/// `rootfs/` tree. Its SHA-256 is the image's fingerprint.
pub fn write_unified<W: Write>(
    metadata: &ImageMetadata,
    rootfs: &Path,
    out: W,
) -> Result<W, ArchiveError> {
    let mut builder = tar::Builder::new(out);
    archive::append_file(
        &mut builder,
        Path::new("metadata.yaml"),
        &metadata::write(metadata),
        0o644,
        mtime(metadata),
    )?;
    archive::pack(
        &mut builder,
        rootfs,
        Path::new(ROOTFS),
        &PackOptions::default(),
    )?;
    builder.into_inner().map_err(pack_error(rootfs))
}

/// Writes a VM image's metadata tarball canonically: `metadata.yaml`, and the kernel and initrd
/// it carries (from `dir`). Followed by the disk, its SHA-256 is the image's fingerprint.
pub fn write_metadata_tarball<W: Write>(
    metadata: &ImageMetadata,
    dir: &Path,
    out: W,
) -> Result<W, ArchiveError> {
    let mut builder = tar::Builder::new(out);
    let time = mtime(metadata);
    archive::append_file(
        &mut builder,
        Path::new("metadata.yaml"),
        &metadata::write(metadata),
        0o644,
        time,
    )?;
    for (carried, name, entry) in [
        (metadata.vm.kernel, KERNEL, KERNEL_ENTRY),
        (metadata.vm.initrd, INITRD, INITRD_ENTRY),
    ] {
        if carried {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(pack_error(&path))?;
            archive::append_file(&mut builder, Path::new(entry), &bytes, 0o644, time)?;
        }
    }
    builder.into_inner().map_err(pack_error(dir))
}

fn pack_error(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Pack { path, source }
}

/// SHA-256 of the files in order, as one stream (Incus's rule for split images).
fn sha256_of(files: &[&Path], progress: &dyn Progress) -> Result<String, ImportError> {
    let mut hasher = HashWriter(<sha2::Sha256 as sha2::Digest>::new());
    for file in files {
        let mut reader = File::open(file).map_err(io_error("open", file))?;
        progress.begin(
            "computing the fingerprint",
            reader.metadata().map(|m| m.len()).ok(),
        );
        std::io::copy(&mut ProgressReader::new(&mut reader, progress), &mut hasher)
            .map_err(io_error("read", file))?;
    }
    Ok(hex::encode(sha2::Digest::finalize(hasher.0)))
}

fn invalid(path: &Path, message: impl Into<String>) -> ImportError {
    ImportError::Incus {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Imports an Incus image: `source` is a unified tarball, or the metadata tarball of a split
/// image whose root filesystem (squashfs or qcow2) is `options.rootfs_file`.
pub fn import(
    store: &ImageStore,
    staging: Staging,
    source: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<(Image, bool), ImportError> {
    let files: Vec<&Path> = std::iter::once(source)
        .chain(options.rootfs_file.as_deref())
        .collect();
    let fingerprint = sha256_of(&files, progress)?;
    let unpacked = staging.dir().join("incus");
    std::fs::create_dir(&unpacked).map_err(io_error("create", &unpacked))?;
    let file = File::open(source).map_err(io_error("open", source))?;
    progress.begin("unpacking", file.metadata().map(|m| m.len()).ok());
    let archive_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Archive { path, source }
    };
    let reader =
        archive::decompress(ProgressReader::new(file, progress)).map_err(archive_error(source))?;
    let unpack_options = UnpackOptions {
        limits: options.limits,
        layer: false,
    };
    archive::unpack(reader, &unpacked, &unpack_options).map_err(archive_error(source))?;
    let yaml_path = unpacked.join("metadata.yaml");
    let yaml = read_bounded(&yaml_path).map_err(|reason| invalid(source, reason))?;
    let disk_file = match &options.rootfs_file {
        Some(rootfs_file) => {
            let mut magic = [0u8; 4];
            File::open(rootfs_file)
                .and_then(|mut f| f.read_exact(&mut magic))
                .map_err(io_error("read", rootfs_file))?;
            if &magic == SQUASHFS_MAGIC {
                let rootfs = staging.dir().join(ROOTFS);
                std::fs::create_dir(&rootfs).map_err(io_error("create", &rootfs))?;
                unpack_squashfs(rootfs_file, &staging.dir().join(ROOTFS), &unpack_options)?;
                None
            } else {
                Some(rootfs_file.clone())
            }
        }
        None if unpacked.join(ROOTFS).is_dir() => {
            std::fs::rename(unpacked.join(ROOTFS), staging.dir().join(ROOTFS))
                .map_err(io_error("move", &unpacked.join(ROOTFS)))?;
            None
        }
        None if unpacked.join("rootfs.img").is_file() => Some(unpacked.join("rootfs.img")),
        None => {
            return Err(invalid(
                source,
                "it has neither rootfs/ nor rootfs.img; for a split image give its root \
                 filesystem file too",
            ))
        }
    };
    let image_type = if disk_file.is_some() {
        ImageType::Vm
    } else {
        ImageType::Container
    };
    let mut metadata = metadata::read(&yaml, image_type)?;
    if let Some(disk_file) = disk_file {
        crate::disk_image::import(&disk_file, None, &staging.dir().join(DISK), progress)?;
        for (carried, name, entry) in [
            (&mut metadata.vm.kernel, KERNEL, KERNEL_ENTRY),
            (&mut metadata.vm.initrd, INITRD, INITRD_ENTRY),
        ] {
            let from = unpacked.join(entry);
            *carried = std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_file());
            if *carried {
                std::fs::rename(&from, staging.dir().join(name))
                    .map_err(io_error("move", &from))?;
            }
        }
    }
    std::fs::remove_dir_all(&unpacked).map_err(io_error("remove", &unpacked))?;
    let metadata = match image_type {
        ImageType::Container => {
            crate::import::container_metadata(&staging.dir().join(ROOTFS), options, Some(metadata))
        }
        ImageType::Vm => crate::import::vm_metadata(staging.dir(), options, Some(metadata))?,
    };
    Ok(store.commit(
        staging,
        NewImage {
            fingerprint,
            metadata,
            source: format!("incus:{}", source.display()),
        },
    )?)
}

/// `metadata.yaml` if it is a regular file no bigger than the bound; else why not.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|_| "it has no metadata.yaml".to_string())?;
    if !meta.is_file() {
        return Err("its metadata.yaml is not a regular file".into());
    }
    if meta.len() > metadata::MAX_METADATA_BYTES {
        return Err(format!(
            "its metadata.yaml is {} bytes; Incus images carry a few KiB, corral reads at most {}",
            meta.len(),
            metadata::MAX_METADATA_BYTES
        ));
    }
    std::fs::read(path).map_err(|e| format!("its metadata.yaml cannot be read: {e}"))
}

/// Unpacks a squashfs root filesystem through `sqfs2tar` (squashfs-tools-ng) into the safe
/// unpacker: nothing of the squashfs is trusted to a tool writing files itself.
fn unpack_squashfs(
    squashfs: &Path,
    target: &Path,
    options: &UnpackOptions,
) -> Result<(), ImportError> {
    let mut child = std::process::Command::new("sqfs2tar")
        .arg("--no-skip")
        // Keeps the root directory's owner and mode (an entry `.`).
        .args(["--root-becomes", "."])
        .arg(squashfs)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|_| {
            invalid(
                squashfs,
                "reading squashfs needs sqfs2tar: apt-get install squashfs-tools-ng",
            )
        })?;
    let stdout = child.stdout.take();
    let unpacked = match stdout {
        Some(stdout) => archive::unpack(stdout, target, options),
        None => Ok(Default::default()),
    };
    let output = child
        .wait_with_output()
        .map_err(io_error("run sqfs2tar on", squashfs))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(invalid(
            squashfs,
            format!(
                "sqfs2tar failed: {}",
                stderr.lines().next().unwrap_or("no reason given")
            ),
        ));
    }
    unpacked.map_err(|source| ImportError::Archive {
        path: squashfs.to_path_buf(),
        source,
    })?;
    Ok(())
}
