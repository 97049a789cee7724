//! Tar archives, both ways. Unpacking reads untrusted tarballs and OCI layers: every entry is
//! created through directory handles that never follow a symlink (`beneath`), sizes and entry
//! counts are bounded (`Limits`), and device nodes outside `/dev` are refused. Packing writes a
//! tree canonically, so the same tree always gives the same bytes (the fingerprint of an image).

mod beneath;
mod decompress;
mod error;
mod pack;
mod unpack;

pub use decompress::decompress;
pub use error::ArchiveError;
pub use pack::{append_file, append_reader, pack, PackOptions, PackStats};
pub use unpack::{unpack, UnpackOptions, Unpacked};

/// Bounds on what one unpack may create: they stop decompression and tar bombs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The total apparent size of the regular files unpacked (sparse files count in full).
    pub max_bytes: u64,
    /// The number of entries in the archive (files, directories, links, whiteouts...).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
        }
    }
}

/// The PAX record prefix GNU tar (`--xattrs`), bsdtar and Go's archive/tar use for extended
/// attributes.
const PAX_XATTR: &str = "SCHILY.xattr.";

/// The extended attribute namespaces an image may carry: `user.*` and `security.*` (file
/// capabilities). `trusted.*` (overlayfs' own bookkeeping) and `system.*` are host business.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name.starts_with(b"security.")
}
