//! Paths beneath a directory handle, opened one component at a time with `O_NOFOLLOW`. Every
//! entry of an archive is created, replaced or removed through these handles, so neither a
//! symlink in the archive nor one already in the target can lead a write outside the target
//! (the caller has refused `..` components beforehand).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Why a directory beneath the root could not be reached.
#[derive(Debug)]
pub(super) enum WalkError {
    /// This prefix of the path is a symbolic link.
    Symlink(PathBuf),
    /// This prefix of the path is neither a directory nor a link.
    NotDirectory(PathBuf),
    Io(std::io::Error),
}

/// The flags every directory handle is opened with: never through a symlink.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// A root directory and the last directory looked up beneath it (archives list entries
/// directory by directory, so most lookups hit it).
pub(super) struct Beneath {
    root: OwnedFd,
    cached: Option<(PathBuf, OwnedFd)>,
}

impl Beneath {
    pub(super) fn open(root: &Path) -> std::io::Result<Self> {
        let root = nix::fcntl::open(root, DIR_FLAGS, Mode::empty())?;
        Ok(Self { root, cached: None })
    }

    pub(super) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Forgets the cached handle: to be called whenever something is removed or replaced, so
    /// a handle of a directory no longer in the tree is never written into.
    pub(super) fn forget(&mut self) {
        self.cached = None;
    }

    /// The directory `dir` (relative, `Normal` components only), created with mode 0755 where
    /// missing when `create`; `None` when it is missing and not `create`.
    pub(super) fn dir(
        &mut self,
        dir: &Path,
        create: bool,
    ) -> Result<Option<BorrowedFd<'_>>, WalkError> {
        if dir.as_os_str().is_empty() {
            return Ok(Some(self.root.as_fd()));
        }
        let hit = self.cached.as_ref().is_some_and(|(path, _)| path == dir);
        if !hit {
            let Some(fd) = self.walk(dir, create)? else {
                return Ok(None);
            };
            self.cached = Some((dir.to_path_buf(), fd));
        }
        Ok(self.cached.as_ref().map(|(_, fd)| fd.as_fd()))
    }

    fn walk(&self, dir: &Path, create: bool) -> Result<Option<OwnedFd>, WalkError> {
        let mut current = self.root.try_clone().map_err(WalkError::Io)?;
        let mut prefix = PathBuf::new();
        for component in dir.components() {
            let Component::Normal(name) = component else {
                // The caller cleaned the path; anything else would be a bug, refused anyway.
                return Err(WalkError::NotDirectory(prefix));
            };
            prefix.push(name);
            let next = match openat(&current, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    mkdirat(&current, name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| WalkError::Io(e.into()))?;
                    openat(&current, name, DIR_FLAGS, Mode::empty())
                        .map_err(|e| WalkError::Io(e.into()))?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(match stat(&current, name) {
                        Ok(Some(st)) if kind(&st) == SFlag::S_IFLNK => WalkError::Symlink(prefix),
                        Ok(_) => WalkError::NotDirectory(prefix),
                        Err(e) => WalkError::Io(e),
                    })
                }
                Err(e) => return Err(WalkError::Io(e.into())),
            };
            current = next;
        }
        Ok(Some(current))
    }
}

/// `lstat` of `name` in `dir`; `None` when there is nothing by that name.
pub(super) fn stat(dir: impl AsFd, name: &OsStr) -> std::io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Opens the directory `name` in `dir`, never through a link.
pub(super) fn open_dir(dir: impl AsFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(dir, name, DIR_FLAGS, Mode::empty())
}

/// Removes `name` from `dir`, a whole tree if it is a directory, without following links.
pub(super) fn remove_tree(dir: impl AsFd, name: &OsStr) -> std::io::Result<()> {
    let dir = dir.as_fd();
    let Some(st) = stat(dir, name)? else {
        return Ok(());
    };
    if kind(&st) == SFlag::S_IFDIR {
        let child = open_dir(dir, name)?;
        for entry in children(&child)? {
            remove_tree(&child, &entry)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// The names in the directory `dir` (without `.` and `..`).
pub(super) fn children(dir: &OwnedFd) -> std::io::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut listing = Dir::from_fd(open_dir(dir, OsStr::new("."))?)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}
