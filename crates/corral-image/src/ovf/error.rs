//! What can go wrong reading an OVF package: every refusal names the package and what to do.

use std::path::PathBuf;

use corral_error::PathIoError;

use super::envelope::EnvelopeError;
use super::manifest::{Algorithm, ManifestError};

#[derive(Debug, thiserror::Error)]
pub enum OvfError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(
        "{path} is not an OVF package corral imports; give an .ova archive or an .ovf envelope"
    )]
    NotAPackage { path: PathBuf },
    #[error("the package {path} holds no .ovf envelope")]
    NoEnvelope { path: PathBuf },
    #[error("the envelope of {path} is refused")]
    Envelope {
        path: PathBuf,
        #[source]
        source: EnvelopeError,
    },
    #[error("the manifest of {path} is refused")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error(
        "the package {path} has a member `{member}` with a path or of a type an OVA may not \
         hold (only plain files at its top level)"
    )]
    UnsafeMember { path: PathBuf, member: String },
    #[error(
        "the envelope of {path} references the file `{href}`, which is not a plain file name \
         beside it"
    )]
    UnsafeReference { path: PathBuf, href: String },
    #[error("the package {path} holds `{member}` twice")]
    Duplicate { path: PathBuf, member: String },
    #[error("the package {path} lacks `{file}`, which its {by} names")]
    MissingFile {
        path: PathBuf,
        file: String,
        by: &'static str,
    },
    #[error("`{file}` in the package {path} is bigger than {limit} bytes")]
    TooLarge {
        path: PathBuf,
        file: String,
        limit: u64,
    },
    #[error(
        "`{file}` in the package {path} has {actual} bytes but the envelope says {declared}; \
         the package is damaged"
    )]
    SizeMismatch {
        path: PathBuf,
        file: String,
        declared: u64,
        actual: u64,
    },
    #[error(
        "the {algorithm} digest of `{file}` in the package {path} does not match its manifest: \
         the package is damaged or was altered; get it again"
    )]
    DigestMismatch {
        path: PathBuf,
        file: String,
        algorithm: Algorithm,
    },
    #[error(
        "`{file}` in the package {path} is not listed in its manifest, so it cannot be verified"
    )]
    NotInManifest { path: PathBuf, file: String },
    #[error("the envelope of {path} changed while it was read")]
    Changed { path: PathBuf },
    #[error("disk {disk} of the package {path} cannot be imported")]
    Disk {
        path: PathBuf,
        disk: String,
        #[source]
        source: Box<crate::disk_image::DiskImportError>,
    },
    #[error(
        "disk {disk} of the package {path} declares a capacity of {capacity} bytes but its image \
         holds {image} bytes; the envelope is wrong or the package is damaged"
    )]
    CapacityTooSmall {
        path: PathBuf,
        disk: String,
        capacity: u64,
        image: u64,
    },
    #[error("disk {disk} of the package {path} cannot be given its declared capacity of {capacity} bytes")]
    Capacity {
        path: PathBuf,
        disk: String,
        capacity: u64,
        #[source]
        source: Box<corral_disk::DiskError>,
    },
}
