//! OCI images (image-spec 1.x): imported from an OCI layout directory or an `oci-archive` tar
//! (podman, skopeo, umoci, buildah), and exported to either. Every blob is checked against its
//! descriptor's sha256 digest and size while it is read, JSON blobs are bounded, layers are
//! applied in order through [`crate::archive::unpack`] with whiteouts.

mod export;
mod import;
mod layout;

use std::path::PathBuf;

use corral_error::PathIoError;

pub use export::export;
pub use import::import;

use crate::archive::ArchiveError;
use crate::metadata::ImageMetadata;

/// The largest JSON blob (index, manifest, config) read: they are small, and read into memory.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

/// What an import found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciImage {
    pub metadata: ImageMetadata,
    /// The digest of the manifest the image was made from (`sha256:...`).
    pub manifest_digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path} is neither an OCI layout directory (oci-layout, index.json, blobs/) nor an oci-archive tar")]
    NotAnImage { path: PathBuf },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("cannot unpack the oci-archive {path}")]
    Archive {
        path: PathBuf,
        #[source]
        source: ArchiveError,
    },
    #[error("{what} is not a valid OCI document")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is {size} bytes, over the {max} bytes corral reads")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error("the layout's image layout version is {version}; corral reads 1.0.0")]
    LayoutVersion { version: String },
    #[error("blob {digest} is missing from the layout")]
    MissingBlob { digest: String },
    #[error("blob {digest} does not match its digest (its content hashes to sha256:{actual})")]
    BadDigest { digest: String, actual: String },
    #[error("blob {digest} is {actual} bytes where its descriptor says {expected}")]
    BadSize {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("digest {digest} is not a sha256 digest corral can check")]
    UnsupportedDigest { digest: String },
    #[error("the {what} has media type {media_type}, which corral does not import")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("the layout has no image named {reference}; it has: {available}")]
    NoSuchReference {
        reference: String,
        available: String,
    },
    #[error("the layout holds {count} images ({available}); name one with a reference")]
    Ambiguous { count: usize, available: String },
    #[error("the layout holds no image")]
    NoImage,
    #[error("the image index has no linux/{architecture} image")]
    NoPlatform { architecture: String },
    #[error("image indexes are nested more than {max} deep")]
    TooDeep { max: usize },
    #[error("cannot apply layer {index} of {count} ({digest})")]
    Layer {
        index: usize,
        count: usize,
        digest: String,
        #[source]
        source: ArchiveError,
    },
    #[error("cannot pack the root filesystem")]
    Pack(#[source] ArchiveError),
    #[error("cannot describe the image")]
    Describe(#[source] oci_spec::OciSpecError),
    #[error("{path} already exists")]
    Exists { path: PathBuf },
}
