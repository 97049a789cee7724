//! Vagrant boxes for the libvirt provider: a tar archive (usually gzip-compressed) holding
//! `metadata.json` (`{"provider": "libvirt", "format": "qcow2", "virtual_size": GB}`), the disk
//! `box.img` (or `box_0.img`) and a `Vagrantfile`. Only those few files are read, each streamed
//! to the staging directory through a size bound; an entry with a path (`..`, `/`, a
//! subdirectory) or of another type refuses the whole box.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use corral_error::PathIoError;

use crate::member::{self, MemberError};
use crate::progress::{Progress, ProgressReader};

/// `metadata.json` and `Vagrantfile` bigger than this are refused.
const MAX_SMALL_FILE: u64 = 1 << 20;
/// A box's disk image file bigger than this is refused (qcow2 files are sparse-free but
/// compact; this is corral-disk's largest virtual size, 1 TiB, plus metadata).
const MAX_DISK_FILE: u64 = (1 << 40) + (1 << 30);

/// What `metadata.json` says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct VagrantMetadata {
    pub provider: String,
    #[serde(default)]
    pub format: Option<String>,
    /// In GB, as vagrant-libvirt writes it.
    #[serde(default)]
    pub virtual_size: Option<u64>,
}

/// A box read into a staging directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VagrantBox {
    /// The disk image, in the staging directory.
    pub disk: PathBuf,
    pub metadata: VagrantMetadata,
}

#[derive(Debug, thiserror::Error)]
pub enum VagrantError {
    #[error("cannot read the box {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the box {path} has an entry `{entry}` with a path or of a type corral does not take from a box; a box holds metadata.json, box.img and Vagrantfile only")]
    UnexpectedEntry { path: PathBuf, entry: String },
    #[error("the box {path} holds {entry} twice")]
    Duplicate { path: PathBuf, entry: String },
    #[error("{entry} in the box {path} is bigger than {limit} bytes")]
    TooLarge {
        path: PathBuf,
        entry: String,
        limit: u64,
    },
    #[error("the box {path} has no {what}; is it a Vagrant box?")]
    Missing { path: PathBuf, what: &'static str },
    #[error("metadata.json in the box {path} is invalid")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the box {path} is for the {provider} provider; corral imports libvirt boxes (`vagrant box \
         add --provider libvirt`, or convert it with vagrant-mutate)"
    )]
    Provider { path: PathBuf, provider: String },
    #[error(
        "the box {path} holds a {format} disk; corral imports the qcow2 disks of libvirt boxes"
    )]
    Format { path: PathBuf, format: String },
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// Reads the box at `path`, writing its disk into `staging` (an existing, private directory);
/// nothing is left there on error.
pub fn read_box(
    path: &Path,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<VagrantBox, VagrantError> {
    let mut written = Vec::new();
    let result = read_into(path, staging, progress, &mut written);
    if result.is_err() {
        for file in written {
            let _ = std::fs::remove_file(file);
        }
    }
    result
}

fn read_into(
    path: &Path,
    staging: &Path,
    progress: &dyn Progress,
    written: &mut Vec<PathBuf>,
) -> Result<VagrantBox, VagrantError> {
    let read_error = |source| VagrantError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    progress.begin("reading the box", Some(size));
    let mut input = BufReader::new(ProgressReader::new(file, progress));
    let gzip = input
        .fill_buf()
        .map_err(read_error)?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(stream);
    let mut metadata_text = None;
    let mut disk = None;
    let mut vagrantfile = false;
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw_name.trim_start_matches("./");
        let kind = entry.header().entry_type();
        if kind.is_dir() && (name.is_empty() || name == ".") {
            continue;
        }
        let unexpected = || VagrantError::UnexpectedEntry {
            path: path.to_path_buf(),
            entry: raw_name.clone(),
        };
        if name.contains('/') || name.is_empty() || name == ".." {
            return Err(unexpected());
        }
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if !kind.is_file() {
            return Err(unexpected());
        }
        let duplicate = || VagrantError::Duplicate {
            path: path.to_path_buf(),
            entry: name.to_string(),
        };
        match name {
            "metadata.json" => {
                if metadata_text.is_some() {
                    return Err(duplicate());
                }
                metadata_text = Some(read_small(path, name, &mut entry)?);
            }
            "Vagrantfile" => {
                if vagrantfile {
                    return Err(duplicate());
                }
                // Only checked for size: corral does not run it.
                read_small(path, name, &mut entry)?;
                vagrantfile = true;
            }
            "box.img" | "box_0.img" => {
                if disk.is_some() {
                    return Err(duplicate());
                }
                let target = staging.join("box.img");
                written.push(target.clone());
                let expected = entry.size();
                copy_bounded(path, name, &mut entry, expected, &target)?;
                disk = Some(target);
            }
            // Other providers' files (box.ovf, *.vmdk, info.json) are not read.
            _ => {}
        }
    }
    let missing = |what| VagrantError::Missing {
        path: path.to_path_buf(),
        what,
    };
    let text = metadata_text.ok_or_else(|| missing("metadata.json"))?;
    let metadata: VagrantMetadata =
        serde_json::from_slice(&text).map_err(|source| VagrantError::Metadata {
            path: path.to_path_buf(),
            source,
        })?;
    if metadata.provider != "libvirt" {
        return Err(VagrantError::Provider {
            path: path.to_path_buf(),
            provider: metadata.provider,
        });
    }
    if let Some(format) = metadata.format.as_deref().filter(|f| *f != "qcow2") {
        return Err(VagrantError::Format {
            path: path.to_path_buf(),
            format: format.to_string(),
        });
    }
    let disk = disk.ok_or_else(|| missing("box.img"))?;
    Ok(VagrantBox { disk, metadata })
}

fn read_small(path: &Path, name: &str, entry: &mut dyn Read) -> Result<Vec<u8>, VagrantError> {
    member::read_small(entry, MAX_SMALL_FILE).map_err(|e| member_error(path, name, None, e))
}

/// Copies the entry `name` (`expected` bytes, as its header says) to a new file at `target`.
fn copy_bounded(
    path: &Path,
    name: &str,
    entry: &mut dyn Read,
    expected: u64,
    target: &Path,
) -> Result<(), VagrantError> {
    member::copy_to_new_file(entry, expected, MAX_DISK_FILE, target, |_| {})
        .map_err(|e| member_error(path, name, Some(target), e))
}

/// `error` of member `name` of the box at `path` (copied to `target`).
fn member_error(
    path: &Path,
    name: &str,
    target: Option<&Path>,
    error: MemberError,
) -> VagrantError {
    match error {
        MemberError::Read(source) => VagrantError::Read {
            path: path.to_path_buf(),
            source,
        },
        MemberError::Write(source) => VagrantError::Io(PathIoError::new(
            "write",
            target.unwrap_or(path).to_path_buf(),
            source,
        )),
        MemberError::TooLarge { limit } => VagrantError::TooLarge {
            path: path.to_path_buf(),
            entry: name.to_string(),
            limit,
        },
    }
}
