//! A read-only view of a guest's filesystem, the one interface the operations plan against: a
//! container root directory (`rootfs.rs`) or an ext filesystem staged from a disk
//! (`disk/ext4.rs`). Every path is resolved inside the guest's root: an absolute link target
//! starts at the guest's `/` and `..` stops there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::Result;

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// A path found in the guest's filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    /// Where it really is: every link resolved inside the root (the last component too when
    /// the lookup followed it).
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The most entries corral lists from one guest directory (a hostile image could hold
/// millions).
pub(crate) const MAX_ENTRIES: usize = 1_000_000;

pub(crate) trait GuestView {
    /// The node at `path`, following a link in its last component only when `follow` is set;
    /// `None` when nothing is there (a missing component, a dangling link, a link loop).
    fn lookup(&self, path: &Path, follow: bool) -> Result<Option<Node>>;
    /// The names in the directory `dir` (a resolved path), without `.` and `..`.
    fn list(&self, dir: &Path) -> Result<Vec<OsString>>;
    /// The content of the regular file `path` (a resolved path), refused past `limit` bytes.
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>>;
    /// The filesystem's UUID, where the target has a filesystem of its own (a disk).
    fn fs_uuid(&self) -> Option<[u8; 16]>;
}
