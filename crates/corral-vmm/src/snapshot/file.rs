//! The `state` file's framing: a header that names the format and guards the payload, so a
//! file of another kind, another version or with a changed byte is refused before it is parsed.
//!
//! Layout (little endian): magic `CORRALVM` (8 bytes), format version (u32), payload length
//! (u64), CRC32 of the payload (u32), then the payload (JSON of [`super::Snapshot`]).

use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 8] = *b"CORRALVM";
/// Bumped whenever the payload changes incompatibly; other versions are refused.
pub const FORMAT_VERSION: u32 = 3;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Far above a real state (a few hundred KiB for 254 vCPUs); bounds what a corrupt length makes
/// the reader allocate.
pub const MAX_PAYLOAD: u64 = 64 << 20;
/// The largest state file read.
pub const MAX_FILE: u64 = HEADER_LEN as u64 + MAX_PAYLOAD;

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path} is not a corral VM state file (wrong magic)")]
    Magic { path: PathBuf },
    #[error(
        "{path} is in snapshot format version {found}; this corral reads version \
         {FORMAT_VERSION} only"
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{path} is damaged: its header says {declared} bytes of state, the file holds {actual}"
    )]
    Length {
        path: PathBuf,
        declared: u64,
        actual: u64,
    },
    #[error("{path} is damaged: its checksum does not match its content")]
    Checksum { path: PathBuf },
}

/// The framed bytes of `payload`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The payload of a framed file's bytes, once magic, version, length and checksum are right.
pub fn decode<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], StateFileError> {
    let path = || path.to_path_buf();
    let (header, payload) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or_else(|| StateFileError::Magic { path: path() })?;
    let field = |range: std::ops::Range<usize>| &header[range];
    if field(0..8) != MAGIC {
        return Err(StateFileError::Magic { path: path() });
    }
    let version = u32::from_le_bytes(field(8..12).try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(StateFileError::Version {
            path: path(),
            found: version,
        });
    }
    let declared = u64::from_le_bytes(field(12..20).try_into().unwrap_or_default());
    if declared != payload.len() as u64 {
        return Err(StateFileError::Length {
            path: path(),
            declared,
            actual: payload.len() as u64,
        });
    }
    let checksum = u32::from_le_bytes(field(20..24).try_into().unwrap_or_default());
    if crc32fast::hash(payload) != checksum {
        return Err(StateFileError::Checksum { path: path() });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(bytes: &[u8]) -> StateFileError {
        decode(Path::new("state"), bytes).unwrap_err()
    }

    #[test]
    fn a_framed_payload_reads_back() {
        let framed = encode(b"{\"x\":1}");
        assert_eq!(decode(Path::new("state"), &framed).unwrap(), b"{\"x\":1}");
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let framed = encode(b"{\"vcpus\":[1,2,3]}");
        for at in 0..framed.len() {
            let mut damaged = framed.clone();
            damaged[at] ^= 0x10;
            assert!(
                decode(Path::new("state"), &damaged).is_err(),
                "byte {at} flipped was accepted"
            );
        }
        let mut damaged = framed.clone();
        damaged[HEADER_LEN + 3] ^= 1;
        assert!(matches!(refused(&damaged), StateFileError::Checksum { .. }));
    }

    #[test]
    fn wrong_magic_other_version_and_truncation_get_their_own_errors() {
        let framed = encode(b"{}");
        let mut magic = framed.clone();
        magic[0] = b'X';
        assert!(matches!(refused(&magic), StateFileError::Magic { .. }));
        assert!(matches!(refused(b"CORR"), StateFileError::Magic { .. }));
        let mut version = framed.clone();
        // Version 1, the format before virtio devices were saved.
        version[8..12].copy_from_slice(&1u32.to_le_bytes());
        let err = refused(&version);
        assert!(matches!(err, StateFileError::Version { found: 1, .. }));
        assert!(err.to_string().contains("format version 1;"), "{err}");
        let truncated = &framed[..framed.len() - 1];
        assert!(matches!(refused(truncated), StateFileError::Length { .. }));
    }
}
