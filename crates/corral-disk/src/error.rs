//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with a disk image, each naming the image and, where there is one,
/// the fix.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image file could not be opened or created.
    #[error("cannot open disk image {path}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An I/O operation on an open image failed.
    #[error("cannot {operation} disk image {path}")]
    Io {
        /// What was attempted: "read", "write", "flush", ...
        operation: &'static str,
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A write-type request reached an image opened read-only.
    #[error("disk image {path} is open read-only; open it writable to change it")]
    ReadOnly {
        /// The image.
        path: PathBuf,
    },
    /// A request reaches past the end of the virtual disk.
    #[error(
        "request of {length} bytes at offset {offset} is outside disk image {path} \
         ({size} bytes)"
    )]
    OutOfRange {
        /// The image.
        path: PathBuf,
        /// First byte of the request.
        offset: u64,
        /// Length of the request.
        length: u64,
        /// Virtual size of the disk.
        size: u64,
    },
    /// The file claims to be qcow2 but its metadata is inconsistent or absurd.
    #[error("disk image {path} is not a valid qcow2 image: {reason}")]
    InvalidQcow2 {
        /// The image.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The image uses a feature corral deliberately does not implement.
    #[error("disk image {path} uses {feature}, which corral does not support; {fix}")]
    Unsupported {
        /// The image.
        path: PathBuf,
        /// The feature, in words.
        feature: String,
        /// What the user can do about it.
        fix: &'static str,
    },
    /// The host file or device cannot perform an operation (e.g. discard on a device without it).
    #[error("disk image {path} does not support {operation}")]
    OperationUnsupported {
        /// The image.
        path: PathBuf,
        /// The operation.
        operation: &'static str,
    },
    /// A backing chain refers back to an image already in it.
    #[error("backing chain of {path} loops: {repeated} appears twice")]
    BackingLoop {
        /// The top image.
        path: PathBuf,
        /// The image that appears twice.
        repeated: PathBuf,
    },
    /// A backing chain is longer than any sane chain.
    #[error(
        "backing chain of {path} is deeper than {limit} images; flatten it with `qemu-img convert`"
    )]
    BackingTooDeep {
        /// The top image.
        path: PathBuf,
        /// The depth limit.
        limit: usize,
    },
    /// Creation refuses to replace an existing file.
    #[error("{path} already exists; delete it first or choose another path")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A size given for creation or resize is unusable.
    #[error("invalid size {size} bytes for disk image {path}: {reason}")]
    InvalidSize {
        /// The image.
        path: PathBuf,
        /// The size asked for.
        size: u64,
        /// Why it is unusable.
        reason: &'static str,
    },
    /// Another creation option is unusable.
    #[error("invalid option for disk image {path}: {reason}")]
    InvalidOption {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Shrinking was asked for where it would lose data without an explicit force.
    #[error(
        "refusing to shrink disk image {path} from {current} to {requested} bytes: the data past \
         the new end would be lost{hint}"
    )]
    ShrinkRefused {
        /// The image.
        path: PathBuf,
        /// Its virtual size now.
        current: u64,
        /// The size asked for.
        requested: u64,
        /// How to do it anyway, where corral allows it.
        hint: &'static str,
    },
    /// Another process has the image open in a way that excludes this open (a writer excludes
    /// everyone; readers exclude writers), corral or qemu alike.
    #[error(
        "disk image {path} is in use by {}; stop it first",
        describe_holders(holders)
    )]
    Locked {
        /// The image.
        path: PathBuf,
        /// True when this open wanted to write.
        writing: bool,
        /// The processes holding locks on it, where `/proc` shows them.
        holders: Vec<crate::LockHolder>,
    },
    /// A qcow2 image names a backing file outside the places its opener allows.
    #[error(
        "disk image {image} names {backing} as its backing file, which is outside {}",
        describe_allowed(allowed)
    )]
    BackingNotAllowed {
        /// The image naming the backing file.
        image: PathBuf,
        /// The backing file, as the header names it (resolved against the image's directory).
        backing: PathBuf,
        /// Where backing files may be.
        allowed: Vec<PathBuf>,
    },
    /// A copy was cancelled by its progress callback.
    #[error("copy from {source_path} to {destination} was cancelled")]
    Cancelled {
        /// The image being copied.
        source_path: PathBuf,
        /// The partial destination (removed).
        destination: PathBuf,
    },
    /// The destination of a streamOptimized VMDK (an OVA being written) refused a write.
    #[error("cannot write the streamOptimized VMDK")]
    VmdkWrite {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The compressor failed on a grain of a streamOptimized VMDK.
    #[error("cannot compress a grain of the streamOptimized VMDK")]
    VmdkCompress {
        /// Why.
        #[source]
        source: flate2::CompressError,
    },
    /// A streamOptimized VMDK would grow past the 2 TiB its 32-bit sector offsets reach.
    #[error(
        "the disk's data does not fit a streamOptimized VMDK, whose tables reach only its first \
         2 TiB; export it as qcow2 instead"
    )]
    VmdkTooLarge,
    /// Writing a streamOptimized VMDK was cancelled by its progress callback.
    #[error("writing the streamOptimized VMDK was cancelled")]
    VmdkCancelled,
}

/// The crate's result type.
pub type Result<T, E = DiskError> = std::result::Result<T, E>;

impl DiskError {
    /// Wraps an I/O error from the OS.
    pub(crate) fn io(operation: &'static str, path: &std::path::Path, source: io::Error) -> Self {
        DiskError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps an error from imago, which reports malformed qcow2 metadata as `InvalidData`: that is
    /// the image's fault rather than the host's, so it gets its own variant.
    pub(crate) fn imago(
        operation: &'static str,
        path: &std::path::Path,
        source: io::Error,
    ) -> Self {
        if source.kind() == io::ErrorKind::InvalidData {
            return DiskError::InvalidQcow2 {
                path: path.to_path_buf(),
                reason: lower_first(&source.to_string()),
            };
        }
        DiskError::io(operation, path, source)
    }
}

fn describe_holders(holders: &[crate::LockHolder]) -> String {
    if holders.is_empty() {
        return "another process".to_string();
    }
    holders
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_allowed(allowed: &[PathBuf]) -> String {
    if allowed.is_empty() {
        return "every allowed place (none is allowed)".to_string();
    }
    allowed
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// imago's messages start upper-case; ours are lower-case sentences fragments.
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
