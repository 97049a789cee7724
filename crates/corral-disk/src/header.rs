//! The fixed part of a qcow2 header, parsed here (not only by imago) so that corral can detect the
//! format by magic, refuse features it does not support with a clear reason before any table is
//! touched, and report version and cluster size in `info`.

use std::path::Path;

use crate::error::{DiskError, Result};

/// `QFI\xfb`: the first four bytes of every qcow2 image.
pub(crate) const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
/// The version 2 header is 72 bytes; version 3 adds fields up to 104.
pub(crate) const V2_HEADER_LEN: usize = 72;
pub(crate) const V3_HEADER_LEN: usize = 104;
/// Smallest and largest cluster sizes qemu accepts (512 B and 2 MiB).
pub(crate) const MIN_CLUSTER_BITS: u32 = 9;
pub(crate) const MAX_CLUSTER_BITS: u32 = 21;
/// Largest virtual size corral accepts: 256 TiB. Larger is a corrupt or hostile header (and would
/// need an L1 table far beyond what any real image has).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 48;
/// qemu's limit on the length of a backing file name.
const MAX_BACKING_NAME_LEN: u32 = 1023;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;

/// The header fields corral looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Qcow2Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub virtual_size: u64,
    pub has_backing_file: bool,
    pub snapshot_count: u32,
    pub snapshots_offset: u64,
    pub l1_entries: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    /// log2 of the refcount width in bits (4 for v2 images).
    pub refcount_order: u32,
    /// Autoclear feature bits (v3; 0 for v2): bit 0 says persistent bitmaps are valid.
    pub autoclear_features: u64,
}

impl Qcow2Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}

/// True when `start` (the first bytes of a file) carries the qcow2 magic.
pub(crate) fn has_qcow2_magic(start: &[u8]) -> bool {
    start.starts_with(&QCOW2_MAGIC)
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

/// Parses and checks the header in `bytes` (the start of the file, at least [`V3_HEADER_LEN`]
/// bytes where the file is that long). Rejects what corral does not support, naming it.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Qcow2Header> {
    let invalid = |reason: String| DiskError::InvalidQcow2 {
        path: path.to_path_buf(),
        reason,
    };
    let unsupported = |feature: &str, fix: &'static str| DiskError::Unsupported {
        path: path.to_path_buf(),
        feature: feature.to_string(),
        fix,
    };
    if !has_qcow2_magic(bytes) {
        return Err(invalid("the qcow2 magic is missing".into()));
    }
    if bytes.len() < V2_HEADER_LEN {
        return Err(invalid(format!(
            "the header is truncated at {} bytes",
            bytes.len()
        )));
    }
    let version = be32(bytes, 4);
    if version != 2 && version != 3 {
        return Err(unsupported(
            &format!("qcow2 version {version}"),
            "convert it with `qemu-img convert -O qcow2`",
        ));
    }
    let backing_offset = be64(bytes, 8);
    let backing_len = be32(bytes, 16);
    let cluster_bits = be32(bytes, 20);
    let virtual_size = be64(bytes, 24);
    let crypt_method = be32(bytes, 32);
    let l1_entries = be32(bytes, 36);
    let l1_table_offset = be64(bytes, 40);
    let refcount_table_offset = be64(bytes, 48);
    let refcount_table_clusters = be32(bytes, 56);
    let snapshot_count = be32(bytes, 60);
    let snapshots_offset = be64(bytes, 64);
    let mut refcount_order = 4;
    let mut autoclear_features = 0;

    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(invalid(format!(
            "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
        )));
    }
    if virtual_size > MAX_VIRTUAL_SIZE {
        return Err(invalid(format!(
            "virtual size {virtual_size} exceeds corral's limit of {MAX_VIRTUAL_SIZE} bytes"
        )));
    }
    if crypt_method != 0 {
        return Err(unsupported(
            "encryption",
            "decrypt it with `qemu-img convert` first",
        ));
    }
    if backing_offset != 0 {
        let cluster_size = 1u64 << cluster_bits;
        let end = backing_offset.checked_add(u64::from(backing_len));
        if backing_len == 0
            || backing_len > MAX_BACKING_NAME_LEN
            || end.is_none_or(|end| end > cluster_size)
        {
            return Err(invalid(format!(
                "backing file name at offset {backing_offset} with length {backing_len} does not \
                 fit in the first cluster"
            )));
        }
    }

    if version == 3 {
        if bytes.len() < V3_HEADER_LEN {
            return Err(invalid(format!(
                "the v3 header is truncated at {} bytes",
                bytes.len()
            )));
        }
        let incompatible = be64(bytes, 72);
        autoclear_features = be64(bytes, 88);
        refcount_order = be32(bytes, 96);
        if refcount_order > 6 {
            return Err(invalid(format!(
                "refcount order {refcount_order} is above 6"
            )));
        }
        let header_len = be32(bytes, 100);
        if (header_len as usize) < V3_HEADER_LEN || !header_len.is_multiple_of(8) {
            return Err(invalid(format!("header length {header_len} is invalid")));
        }
        if incompatible & INCOMPAT_DIRTY != 0 {
            return Err(unsupported(
                "lazy refcounts and was not closed cleanly (dirty bit)",
                "repair it with `qemu-img check -r all`",
            ));
        }
        if incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(invalid(
                "qemu marked it corrupt; repair it with `qemu-img check -r all`".into(),
            ));
        }
        if incompatible & INCOMPAT_EXTERNAL_DATA != 0 {
            return Err(unsupported(
                "an external data file",
                "convert it to a self-contained image with `qemu-img convert -O qcow2`",
            ));
        }
        if incompatible & INCOMPAT_COMPRESSION_TYPE != 0 {
            return Err(unsupported(
                "a compression type other than zlib",
                "convert it with `qemu-img convert -O qcow2 -o compression_type=zlib`",
            ));
        }
        if incompatible & INCOMPAT_EXTENDED_L2 != 0 {
            return Err(unsupported(
                "extended L2 entries (subclusters)",
                "convert it with `qemu-img convert -O qcow2 -o extended_l2=off`",
            ));
        }
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_EXTERNAL_DATA
            | INCOMPAT_COMPRESSION_TYPE
            | INCOMPAT_EXTENDED_L2;
        let unknown = incompatible & !known;
        if unknown != 0 {
            return Err(unsupported(
                &format!("unknown incompatible features (bits {unknown:#x})"),
                "convert it with `qemu-img convert -O qcow2`",
            ));
        }
    }

    Ok(Qcow2Header {
        version,
        cluster_bits,
        virtual_size,
        has_backing_file: backing_offset != 0,
        snapshot_count,
        snapshots_offset,
        l1_entries,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        refcount_order,
        autoclear_features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid v3 header: 64 KiB clusters, 1 MiB virtual size.
    fn v3_header() -> Vec<u8> {
        let mut bytes = vec![0u8; V3_HEADER_LEN];
        bytes[..4].copy_from_slice(&QCOW2_MAGIC);
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&16u32.to_be_bytes());
        bytes[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        bytes[96..100].copy_from_slice(&4u32.to_be_bytes());
        bytes[100..104].copy_from_slice(&(V3_HEADER_LEN as u32).to_be_bytes());
        bytes
    }

    fn parse_err(bytes: &[u8]) -> String {
        match parse(Path::new("test.qcow2"), bytes) {
            Ok(header) => panic!("expected an error, got {header:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn valid_header_parses() {
        let header = parse(Path::new("x"), &v3_header()).expect("valid header");
        assert_eq!(header.version, 3);
        assert_eq!(header.cluster_size(), 65536);
        assert_eq!(header.virtual_size, 1 << 20);
        assert!(!header.has_backing_file);
    }

    #[test]
    fn truncated_header_is_rejected() {
        assert!(parse_err(&v3_header()[..40]).contains("truncated"));
        assert!(parse_err(&v3_header()[..80]).contains("truncated"));
    }

    #[test]
    fn encryption_is_refused_by_name() {
        let mut bytes = v3_header();
        bytes[32..36].copy_from_slice(&1u32.to_be_bytes());
        assert!(parse_err(&bytes).contains("encryption"));
    }

    #[test]
    fn external_data_file_and_unknown_features_are_refused() {
        let mut bytes = v3_header();
        bytes[72..80].copy_from_slice(&INCOMPAT_EXTERNAL_DATA.to_be_bytes());
        assert!(parse_err(&bytes).contains("external data file"));
        bytes[72..80].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(parse_err(&bytes).contains("unknown incompatible features"));
        bytes[72..80].copy_from_slice(&INCOMPAT_DIRTY.to_be_bytes());
        assert!(parse_err(&bytes).contains("dirty"));
    }

    #[test]
    fn absurd_sizes_are_rejected() {
        let mut bytes = v3_header();
        bytes[20..24].copy_from_slice(&40u32.to_be_bytes());
        assert!(parse_err(&bytes).contains("cluster_bits"));
        let mut bytes = v3_header();
        bytes[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(parse_err(&bytes).contains("virtual size"));
        let mut bytes = v3_header();
        bytes[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        bytes[16..20].copy_from_slice(&10u32.to_be_bytes());
        assert!(parse_err(&bytes).contains("backing file name"));
    }

    #[test]
    fn other_versions_are_refused() {
        let mut bytes = v3_header();
        bytes[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert!(parse_err(&bytes).contains("qcow2 version 1"));
    }
}
