//! Imports: from what people already have (a rootfs directory or tarball, an OCI image, an
//! Incus image, a disk image, a Vagrant box) to a stored image. Every import is built in a
//! staging directory of the store and committed whole, or not at all.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use sha2::{Digest, Sha256};

use crate::archive::{self, ArchiveError, Limits, PackOptions, UnpackOptions};
use crate::metadata::{ImageMetadata, ImageType};
use crate::progress::{Progress, ProgressReader};
use crate::store::{
    Image, ImageStore, NewImage, Staging, StoreError, DISK, INITRD, KERNEL, ROOTFS,
};

/// The formats `corral image import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A root filesystem: a directory, or a tar archive (gzip, xz, zstd or none).
    Rootfs,
    /// An OCI image layout directory, or an `oci-archive` tarball of one.
    Oci,
    /// An Incus/LXD image: a unified tarball, or a metadata tarball plus a root filesystem file.
    Incus,
    /// A disk image: raw, qcow2, or (through qemu-img) vmdk, vdi, vhdx.
    Disk,
    /// A Vagrant box for the libvirt provider.
    Vagrant,
}

/// Each format by the name users give it.
const FORMAT_NAMES: [(&str, Format); 5] = [
    ("rootfs", Format::Rootfs),
    ("oci", Format::Oci),
    ("incus", Format::Incus),
    ("disk", Format::Disk),
    ("vagrant", Format::Vagrant),
];

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = FORMAT_NAMES.iter().find(|(_, format)| format == self);
        f.write_str(named.map_or("", |(name, _)| name))
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        crate::named(&FORMAT_NAMES, text, "an import format")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot import {path}")]
    Archive {
        path: PathBuf,
        #[source]
        source: ArchiveError,
    },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("cannot tell what kind of image {0} is: give --format (rootfs, oci, incus, disk or vagrant)")]
    UnknownFormat(PathBuf),
    #[error(
        "{0} is an OVF package (a virtual machine from VirtualBox or VMware); import it as an \
         instance with `corral import`"
    )]
    OvfPackage(PathBuf),
    #[error("{path} is not a valid Incus image: {message}")]
    Incus { path: PathBuf, message: String },
    #[error(transparent)]
    IncusMetadata(#[from] crate::incus::metadata::MetadataError),
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error(transparent)]
    Disk(#[from] crate::disk_image::DiskImportError),
    #[error(transparent)]
    Vagrant(#[from] crate::vagrant::VagrantError),
    #[error("{0}")]
    Invalid(String),
    #[error("the imported disk cannot be opened")]
    DiskUnopenable(#[source] corral_disk::DiskError),
    #[error(
        "the imported disk cannot boot; fix that, or give the image its own kernel with --kernel \
         (and --initrd, --cmdline)"
    )]
    Unbootable(#[source] crate::bootdisk::BootError),
}

pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ImportError {
    let path = path.to_path_buf();
    move |source| ImportError::Io(PathIoError::new(action, path, source))
}

/// What the user says about an import beyond its source.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The format; detected when absent.
    pub format: Option<Format>,
    /// The root filesystem file of a split Incus image (the source is its metadata tarball).
    pub rootfs_file: Option<PathBuf>,
    /// Which image of an OCI layout (its `org.opencontainers.image.ref.name`).
    pub reference: Option<String>,
    /// Metadata the source does not carry, or that the user overrides.
    pub os: Option<String>,
    pub release: Option<String>,
    pub description: Option<String>,
    /// A VM image's own kernel, initrd and command line; without a kernel, the one inside the
    /// disk is booted.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// Bounds on what an archive may unpack to.
    pub limits: Limits,
}

/// Recognizes a source by its content: a directory's marker files, a file's magic, or the first
/// entries of a tarball.
pub fn detect(source: &Path) -> Result<Format, ImportError> {
    let meta = std::fs::metadata(source).map_err(io_error("read", source))?;
    if meta.is_dir() {
        return Ok(if source.join("oci-layout").is_file() {
            Format::Oci
        } else {
            Format::Rootfs
        });
    }
    if crate::disk_image::detect(source).is_ok_and(|f| f != crate::disk_image::SourceFormat::Raw) {
        return Ok(Format::Disk);
    }
    let file = File::open(source).map_err(io_error("open", source))?;
    let names = first_names(file, 16).ok_or_else(|| ImportError::UnknownFormat(source.into()))?;
    let has = |name: &str| names.iter().any(|n| n.trim_start_matches("./") == name);
    Ok(if has("oci-layout") || has("index.json") {
        Format::Oci
    } else if has("metadata.yaml") {
        Format::Incus
    } else if has("metadata.json") && (has("box.img") || has("Vagrantfile")) {
        Format::Vagrant
    } else if names.iter().any(|n| {
        let name = n.trim_start_matches("./");
        name.ends_with(".ovf") && !name.contains('/')
    }) {
        return Err(ImportError::OvfPackage(source.into()));
    } else {
        Format::Rootfs
    })
}

/// The names of the first `count` entries of a (compressed) tarball, or `None` when it is not
/// one.
fn first_names(file: File, count: usize) -> Option<Vec<String>> {
    let reader = archive::decompress(file).ok()?;
    let mut archive = tar::Archive::new(reader);
    let mut names = Vec::new();
    // A damaged archive still says what it is by its first names; the unpack reports the damage.
    for entry in archive.entries().ok()?.take(count) {
        let Ok(entry) = entry else { break };
        names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
    }
    Some(names).filter(|names| !names.is_empty())
}

/// Imports `source` into `store`; the image and whether it is new (the store had it already
/// when not).
pub fn import(
    store: &ImageStore,
    source: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<(Image, bool), ImportError> {
    let format = match options.format {
        Some(format) => format,
        None => detect(source)?,
    };
    let staging = store.staging()?;
    let described = format!("{format}:{}", source.display());
    match format {
        Format::Rootfs => {
            unpack_rootfs(source, staging.dir(), &options.limits, progress)?;
            let metadata = container_metadata(&staging.dir().join(ROOTFS), options, None);
            commit_container(store, staging, metadata, described)
        }
        Format::Oci => {
            let rootfs = staging.dir().join(ROOTFS);
            std::fs::create_dir(&rootfs).map_err(io_error("create", &rootfs))?;
            let image = crate::oci::import(
                source,
                options.reference.as_deref(),
                &staging.dir().join(ROOTFS),
                &options.limits,
                progress,
            )?;
            let metadata =
                container_metadata(&staging.dir().join(ROOTFS), options, Some(image.metadata));
            commit_container(store, staging, metadata, described)
        }
        Format::Incus => crate::incus::import(store, staging, source, options, progress),
        Format::Disk => {
            crate::disk_image::import(source, None, &staging.dir().join(DISK), progress)?;
            let metadata = vm_metadata(staging.dir(), options, None)?;
            commit_vm(store, staging, metadata, described)
        }
        Format::Vagrant => {
            let boxed = crate::vagrant::read_box(source, staging.dir(), progress)?;
            crate::disk_image::import(&boxed.disk, None, &staging.dir().join(DISK), progress)?;
            std::fs::remove_file(&boxed.disk).map_err(io_error("remove", &boxed.disk))?;
            let metadata = vm_metadata(staging.dir(), options, None)?;
            commit_vm(store, staging, metadata, described)
        }
    }
}

/// Fills `staging/rootfs` from a directory or a tarball, through the safe unpacker either way
/// (a directory is packed canonically on one thread and unpacked on this one), so device
/// nodes, links out and oversized content are refused alike.
pub fn unpack_rootfs(
    source: &Path,
    staging: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<(), ImportError> {
    let target = staging.join(ROOTFS);
    std::fs::create_dir(&target).map_err(io_error("create", &target))?;
    let archive_error = |source_path: &Path| {
        let path = source_path.to_path_buf();
        move |source| ImportError::Archive { path, source }
    };
    let unpack_options = UnpackOptions {
        limits: *limits,
        layer: false,
    };
    if source.is_dir() {
        progress.begin("copying the root filesystem", None);
        let (reader, writer) = std::io::pipe().map_err(io_error("copy", source))?;
        let root = source.to_path_buf();
        let packer = std::thread::spawn(move || -> Result<(), ArchiveError> {
            let mut builder = tar::Builder::new(writer);
            archive::pack(&mut builder, &root, Path::new(""), &PackOptions::default())?;
            let pack_error = |source| ArchiveError::Pack {
                path: root.clone(),
                source,
            };
            builder
                .into_inner()
                .map_err(pack_error)?
                .flush()
                .map_err(pack_error)
        });
        let unpacked = archive::unpack(
            ProgressReader::new(reader, progress),
            &target,
            &unpack_options,
        );
        // The packer's error says more than the unpacker's broken stream.
        match packer.join() {
            Ok(Err(err)) => return Err(archive_error(source)(err)),
            Err(_) => {
                return Err(ImportError::Invalid(format!(
                    "copying {} failed",
                    source.display()
                )))
            }
            Ok(Ok(())) => {}
        }
        unpacked.map_err(archive_error(source))?;
    } else {
        let file = File::open(source).map_err(io_error("open", source))?;
        let size = file.metadata().map(|m| m.len()).ok();
        progress.begin("unpacking the root filesystem", size);
        let reader = archive::decompress(ProgressReader::new(file, progress))
            .map_err(archive_error(source))?;
        archive::unpack(reader, &target, &unpack_options).map_err(archive_error(source))?;
    }
    Ok(())
}

/// A container image's metadata: what the source said (an OCI config, Incus's file), the
/// user's overrides, and the OS and release from the tree's `/etc/os-release`.
pub fn container_metadata(
    rootfs: &Path,
    options: &ImportOptions,
    from_source: Option<ImageMetadata>,
) -> ImageMetadata {
    let mut metadata = from_source.unwrap_or_else(|| ImageMetadata::new(ImageType::Container));
    let os_release = os_release(rootfs);
    let field = |key: &str| os_release.get(key).cloned();
    metadata.os = options.os.clone().or(metadata.os).or_else(|| field("ID"));
    metadata.release = options
        .release
        .clone()
        .or(metadata.release)
        .or_else(|| field("VERSION_ID"));
    metadata.description = options
        .description
        .clone()
        .or(metadata.description)
        .or_else(|| field("PRETTY_NAME"));
    metadata
}

/// A VM image's metadata: the kernel, initrd and command line the user gave (copied into
/// `staging`), else the disk's own.
pub fn vm_metadata(
    staging: &Path,
    options: &ImportOptions,
    from_source: Option<ImageMetadata>,
) -> Result<ImageMetadata, ImportError> {
    let mut metadata = from_source.unwrap_or_else(|| ImageMetadata::new(ImageType::Vm));
    for (given, name, flag) in [
        (&options.kernel, KERNEL, &mut metadata.vm.kernel),
        (&options.initrd, INITRD, &mut metadata.vm.initrd),
    ] {
        if let Some(file) = given {
            std::fs::copy(file, staging.join(name)).map_err(io_error("copy", file))?;
            *flag = true;
        }
    }
    if metadata.vm.initrd && !metadata.vm.kernel {
        return Err(ImportError::Invalid(
            "an initrd without a kernel: give --kernel too".into(),
        ));
    }
    if options.cmdline.is_some() {
        metadata.vm.cmdline.clone_from(&options.cmdline);
    }
    for (given, field) in [
        (&options.os, &mut metadata.os),
        (&options.release, &mut metadata.release),
        (&options.description, &mut metadata.description),
    ] {
        if given.is_some() {
            field.clone_from(given);
        }
    }
    if !metadata.vm.kernel {
        // Proves now that a start will find something to boot.
        let disk = corral_disk::open(
            &staging.join(DISK),
            corral_disk::OpenOptions {
                format: Some(corral_disk::DiskFormat::Qcow2),
                ..corral_disk::OpenOptions::read_only()
            },
        )
        .map_err(ImportError::DiskUnopenable)?;
        crate::bootdisk::find_boot(disk.as_ref()).map_err(ImportError::Unbootable)?;
    }
    Ok(metadata)
}

/// `KEY=value` lines of the tree's os-release (`/etc/os-release`, else `/usr/lib/os-release`),
/// resolved inside the tree; empty when there is none.
fn os_release(rootfs: &Path) -> std::collections::BTreeMap<String, String> {
    let root = corral_host::fsroot::FsRoot::new(rootfs);
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .filter_map(|path| root.resolve(path).ok())
        .find_map(|resolved| {
            let path = root.join(&resolved);
            let file = std::fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .and_then(|_| File::open(&path).ok())?;
            let mut text = String::new();
            file.take(64 << 10).read_to_string(&mut text).ok()?;
            Some(text)
        })
        .unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| {
            (
                key.trim().to_string(),
                value
                    .trim()
                    .trim_matches('"')
                    .trim_matches('\'')
                    .to_string(),
            )
        })
        .collect()
}

/// Commits `staging/rootfs` as a container image, fingerprinted canonically.
pub fn commit_container(
    store: &ImageStore,
    staging: Staging,
    metadata: ImageMetadata,
    source: String,
) -> Result<(Image, bool), ImportError> {
    let fingerprint = container_fingerprint(&metadata, &staging.dir().join(ROOTFS))?;
    Ok(store.commit(
        staging,
        NewImage {
            fingerprint,
            metadata,
            source,
        },
    )?)
}

/// Commits `staging/disk.qcow2` (with `kernel`/`initrd` beside it when the metadata says so) as
/// a VM image, fingerprinted canonically.
pub fn commit_vm(
    store: &ImageStore,
    staging: Staging,
    metadata: ImageMetadata,
    source: String,
) -> Result<(Image, bool), ImportError> {
    let fingerprint = vm_fingerprint(&metadata, staging.dir())?;
    Ok(store.commit(
        staging,
        NewImage {
            fingerprint,
            metadata,
            source,
        },
    )?)
}

/// A container image's fingerprint: the SHA-256 of its canonical Incus unified tarball, which
/// `corral image export --format incus` writes (so Incus's rule gives the same fingerprint).
pub fn container_fingerprint(
    metadata: &ImageMetadata,
    rootfs: &Path,
) -> Result<String, ImportError> {
    let mut hasher = HashWriter(Sha256::new());
    crate::incus::write_unified(metadata, rootfs, &mut hasher).map_err(|source| {
        ImportError::Archive {
            path: rootfs.to_path_buf(),
            source,
        }
    })?;
    Ok(hex::encode(hasher.0.finalize()))
}

/// A VM image's fingerprint: Incus's rule for a split image, the SHA-256 of its canonical
/// metadata tarball followed by its disk.
pub fn vm_fingerprint(metadata: &ImageMetadata, dir: &Path) -> Result<String, ImportError> {
    let mut hasher = HashWriter(Sha256::new());
    crate::incus::write_metadata_tarball(metadata, dir, &mut hasher).map_err(|source| {
        ImportError::Archive {
            path: dir.to_path_buf(),
            source,
        }
    })?;
    let disk = dir.join(DISK);
    let mut file = File::open(&disk).map_err(io_error("open", &disk))?;
    std::io::copy(&mut file, &mut hasher).map_err(io_error("read", &disk))?;
    Ok(hex::encode(hasher.0.finalize()))
}

/// A writer that only hashes.
pub struct HashWriter(pub Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
