//! Reading blobs out of an OCI layout: only sha256 digests (whose hex also names the file, so it
//! is checked before it becomes a path), opened without following links, size and digest checked.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use oci_spec::image::Descriptor;
use sha2::{Digest as _, Sha256};

use super::{OciError, MAX_JSON_BYTES};

pub(super) struct Layout {
    pub(super) root: PathBuf,
}

impl Layout {
    /// The path of the blob a descriptor names, once its digest is known to be sha256 hex.
    pub(super) fn blob_path(&self, digest: &str) -> Result<PathBuf, OciError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|hex| {
                hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            })
            .ok_or_else(|| OciError::UnsupportedDigest {
                digest: digest.to_string(),
            })?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// Opens a blob, checking its size against the descriptor's.
    pub(super) fn open(&self, descriptor: &Descriptor) -> Result<(File, String), OciError> {
        let digest = descriptor.digest().to_string();
        let path = self.blob_path(&digest)?;
        let file = open_file(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => OciError::MissingBlob {
                digest: digest.clone(),
            },
            _ => OciError::Io(PathIoError::new("read", path.clone(), source)),
        })?;
        let actual = file
            .metadata()
            .map_err(|source| OciError::Io(PathIoError::new("read", path.clone(), source)))?
            .len();
        if actual != descriptor.size() {
            return Err(OciError::BadSize {
                digest,
                expected: descriptor.size(),
                actual,
            });
        }
        Ok((file, digest))
    }

    /// A JSON blob, bounded, its digest checked, parsed.
    pub(super) fn json<T: serde::de::DeserializeOwned>(
        &self,
        descriptor: &Descriptor,
        what: &str,
    ) -> Result<T, OciError> {
        if descriptor.size() > MAX_JSON_BYTES {
            return Err(OciError::TooLarge {
                what: format!("the {what} {}", descriptor.digest()),
                size: descriptor.size(),
                max: MAX_JSON_BYTES,
            });
        }
        let (file, digest) = self.open(descriptor)?;
        let mut checked = Checked::new(file);
        let mut bytes = Vec::new();
        (&mut checked)
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|source| {
                OciError::Io(PathIoError::new(
                    "read",
                    self.blob_path(&digest).unwrap_or_default(),
                    source,
                ))
            })?;
        checked.verify(&digest, descriptor.size())?;
        parse(&bytes, &format!("the {what} {digest}"))
    }
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: what.to_string(),
        source,
    })
}

/// A small file of the layout itself (`oci-layout`, `index.json`), bounded.
pub(super) fn read_small(path: &Path) -> Result<Vec<u8>, OciError> {
    let read_error = |source| OciError::Io(PathIoError::new("read", path.to_path_buf(), source));
    let file = open_file(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(OciError::TooLarge {
            what: path.display().to_string(),
            size: bytes.len() as u64,
            max: MAX_JSON_BYTES,
        });
    }
    Ok(bytes)
}

/// Opens a regular file of the layout, never through a link at its last component.
fn open_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// A reader that hashes and counts what passes through it.
pub(super) struct Checked<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Checked<R> {
    pub(super) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads what is left, then compares size and digest with the descriptor's.
    pub(super) fn verify(mut self, digest: &str, size: u64) -> Result<(), OciError> {
        std::io::copy(&mut self, &mut std::io::sink()).map_err(|source| {
            OciError::Io(PathIoError::new("read", PathBuf::from(digest), source))
        })?;
        if self.count != size {
            return Err(OciError::BadSize {
                digest: digest.to_string(),
                expected: size,
                actual: self.count,
            });
        }
        let actual = hex::encode(self.hasher.finalize());
        if digest.strip_prefix("sha256:") != Some(actual.as_str()) {
            return Err(OciError::BadDigest {
                digest: digest.to_string(),
                actual,
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
