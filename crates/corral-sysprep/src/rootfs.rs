//! A container's root directory as a guest filesystem. Every guest path is opened with
//! `openat2(RESOLVE_IN_ROOT)` from a descriptor of the root, so the kernel resolves links as if
//! the directory were `/`: `/etc/hostname -> /../../host/file` or `/var/log -> /` can never
//! lead to a host file. Magic links (`/proc/self/root`) and other mounts are refused outright.
//! A file is first opened as `O_PATH` and checked to be a regular file before it is reopened
//! for I/O (through its own descriptor, never by path again), so a device node in the image is
//! never opened.
//!
//! Files are written and truncated in place rather than replaced: owner, mode, extended
//! attributes (SELinux labels) and hard links stay as they were. The target is a stopped
//! guest's tree, so no reader sees a half-written file.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::{Result, SysprepError};
use crate::plan::{Edit, Plan};
use crate::view::{GuestView, Kind, Node, MAX_ENTRIES};

/// Directory trees deeper than this are refused when removed (each level holds a descriptor).
const MAX_DEPTH: usize = 256;

/// A root directory, held open.
pub(crate) struct RootDir {
    root: OwnedFd,
    /// The host path of the root, as the kernel names it (for turning descriptors back into
    /// guest paths).
    real: PathBuf,
}

impl RootDir {
    pub fn open(dir: &Path) -> Result<Self> {
        let open_error = |source: nix::Error| SysprepError::OpenRoot {
            dir: dir.to_path_buf(),
            source: source.into(),
        };
        let root = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(open_error)?;
        let real = fd_path(&root).map_err(open_error)?;
        Ok(RootDir { root, real })
    }

    /// Opens the guest path `path` with `flags`, resolved inside the root.
    fn open_in(&self, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let resolve = ResolveFlag::RESOLVE_IN_ROOT
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV;
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve);
        openat2(&self.root, path, how)
    }

    /// The guest path a descriptor from [`Self::open_in`] names.
    fn guest_path(&self, fd: &OwnedFd, asked: &Path) -> Result<PathBuf> {
        let host = fd_path(fd).map_err(|e| SysprepError::guest("resolve", asked)(e.into()))?;
        let inside = host
            .strip_prefix(&self.real)
            .map_err(|_| SysprepError::Guest {
                action: "resolve",
                path: asked.to_path_buf(),
                source: std::io::Error::other("it resolved outside the root"),
            })?;
        Ok(Path::new("/").join(inside))
    }

    /// The parent directory of `path` (resolved, links followed) and the last component.
    fn parent<'p>(&self, path: &'p Path) -> Result<(OwnedFd, &'p OsStr)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(SysprepError::Guest {
                action: "find the directory of",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        };
        let dir = self
            .open_in(parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| SysprepError::guest("open", parent)(e.into()))?;
        Ok((dir, name))
    }

    /// Opens the regular file at the resolved `path` (no link followed) for `flags`.
    fn open_file(&self, path: &Path, flags: OFlag, action: &'static str) -> Result<File> {
        let error = |e: nix::Error| SysprepError::guest(action, path)(e.into());
        let fd = self
            .open_in(path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .map_err(error)?;
        let stat = fstat(&fd).map_err(error)?;
        if kind(&stat) != Kind::File {
            return Err(SysprepError::Guest {
                action,
                path: path.to_path_buf(),
                source: std::io::Error::other("it is no longer a regular file"),
            });
        }
        reopen(&fd, flags).map_err(error)
    }

    fn apply(&self, path: &Path, edit: &Edit) -> Result<()> {
        match edit {
            Edit::Truncate => self
                .open_file(path, OFlag::O_WRONLY, "truncate")?
                .set_len(0)
                .map_err(SysprepError::guest("truncate", path)),
            Edit::Write { content } => {
                let mut file = self.open_file(path, OFlag::O_WRONLY | OFlag::O_TRUNC, "write")?;
                file.write_all(content)
                    .and_then(|()| file.sync_all())
                    .map_err(SysprepError::guest("write", path))
            }
            Edit::Create {
                content,
                mode,
                uid,
                gid,
            } => self.create(path, content, *mode, *uid, *gid),
            Edit::Remove => {
                let (dir, name) = self.parent(path)?;
                unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| SysprepError::guest("remove", path)(e.into()))
            }
            Edit::RemoveTree => {
                let (dir, name) = self.parent(path)?;
                remove_tree(&dir, name, path)
            }
            Edit::SetFsUuid { .. } => Err(SysprepError::FsUuidsOnDirectory),
        }
    }

    fn create(&self, path: &Path, content: &[u8], mode: u32, uid: u32, gid: u32) -> Result<()> {
        let error = |e: nix::Error| SysprepError::guest("create", path)(e.into());
        let (dir, name) = self.parent(path)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let fd = openat(
            &dir,
            name,
            flags | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(error)?;
        // The umask may have narrowed the mode; the owner is the directory's (the guest's root,
        // which a user-namespaced container maps to a host uid).
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(error)?;
        let stat = fstat(&fd).map_err(error)?;
        if (stat.st_uid, stat.st_gid) != (uid, gid) {
            nix::unistd::fchown(&fd, Some(uid.into()), Some(gid.into())).map_err(error)?;
        }
        let mut file = File::from(fd);
        file.write_all(content)
            .and_then(|()| file.sync_all())
            .map_err(SysprepError::guest("write", path))
    }
}

impl GuestView for RootDir {
    fn lookup(&self, path: &Path, follow: bool) -> Result<Option<Node>> {
        let mut flags = OFlag::O_PATH;
        if !follow {
            flags |= OFlag::O_NOFOLLOW;
        }
        let fd = match self.open_in(path, flags) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT | nix::Error::ENOTDIR | nix::Error::ELOOP) => return Ok(None),
            Err(e) => return Err(SysprepError::guest("look up", path)(e.into())),
        };
        let stat = fstat(&fd).map_err(|e| SysprepError::guest("inspect", path)(e.into()))?;
        Ok(Some(Node {
            path: self.guest_path(&fd, path)?,
            kind: kind(&stat),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
        }))
    }

    fn list(&self, dir: &Path) -> Result<Vec<OsString>> {
        let fd = self
            .open_in(
                dir,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            )
            .map_err(|e| SysprepError::guest("list", dir)(e.into()))?;
        names(fd, dir)
    }

    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>> {
        let file = self.open_file(path, OFlag::O_RDONLY, "read")?;
        let mut content = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut content)
            .map_err(SysprepError::guest("read", path))?;
        if content.len() as u64 > limit {
            return Err(SysprepError::TooLarge {
                path: path.to_path_buf(),
                size: content.len() as u64,
                limit,
            });
        }
        Ok(content)
    }

    fn fs_uuid(&self) -> Option<[u8; 16]> {
        None
    }
}

/// Applies `plan` to the root, edit by edit, in order.
pub(crate) fn apply(root: &RootDir, plan: &Plan) -> Result<()> {
    plan.edits()
        .try_for_each(|(step, edit)| root.apply(&step.path, edit))
}

fn kind(stat: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// The host path of an open descriptor, as `/proc/self/fd` names it.
fn fd_path(fd: &impl AsRawFd) -> nix::Result<PathBuf> {
    nix::fcntl::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str()).map(PathBuf::from)
}

/// Opens the file behind an `O_PATH` descriptor for I/O. `/proc/self/fd/N` is a magic link to
/// exactly that inode, so nothing is resolved by name again.
fn reopen(fd: &OwnedFd, flags: OFlag) -> nix::Result<File> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::fcntl::open(
        path.as_str(),
        flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map(File::from)
}

/// The names in the open directory `fd`, without `.` and `..`.
fn names(fd: OwnedFd, dir: &Path) -> Result<Vec<OsString>> {
    let error = |e: nix::Error| SysprepError::guest("list", dir)(e.into());
    let mut listing = nix::dir::Dir::from_fd(fd).map_err(error)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(error)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if names.len() == MAX_ENTRIES {
            return Err(SysprepError::TooManyEntries {
                path: dir.to_path_buf(),
                limit: MAX_ENTRIES,
            });
        }
        names.push(OsStr::from_bytes(name).to_os_string());
    }
    Ok(names)
}

/// One directory being emptied: its descriptor, its entries, and how far through them.
struct Level {
    dir: OwnedFd,
    path: PathBuf,
    names: Vec<OsString>,
    next: usize,
}

/// Removes the directory `name` in `parent` and everything below it. Every step is relative to
/// an open directory and follows no link (`O_NOFOLLOW`, `unlinkat`), so nothing outside the
/// tree is reached; the walk keeps its own stack.
fn remove_tree(parent: &OwnedFd, name: &OsStr, path: &Path) -> Result<()> {
    let open_level = |dir: &OwnedFd, name: &OsStr, path: PathBuf| -> Result<Level> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let error = |e: nix::Error| SysprepError::guest("open", &path)(e.into());
        let fd = openat(dir, name, flags, Mode::empty()).map_err(error)?;
        let listing = fd.try_clone().map_err(SysprepError::guest("open", &path))?;
        Ok(Level {
            names: names(listing, &path)?,
            dir: fd,
            path,
            next: 0,
        })
    };
    let mut stack = vec![open_level(parent, name, path.to_path_buf())?];
    loop {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else { break };
        let Some(entry) = level.names.get(level.next).cloned() else {
            let Some(done) = stack.pop() else { break };
            let above = stack.last().map_or(parent.as_fd(), |l| l.dir.as_fd());
            let name = done.path.file_name().unwrap_or(name);
            unlinkat(above, name, UnlinkatFlags::RemoveDir)
                .map_err(|e| SysprepError::guest("remove", &done.path)(e.into()))?;
            continue;
        };
        level.next += 1;
        let entry_path = level.path.join(&entry);
        match unlinkat(&level.dir, entry.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {}
            Err(nix::Error::EISDIR) if depth >= MAX_DEPTH => {
                return Err(SysprepError::TooDeep {
                    path: entry_path,
                    limit: MAX_DEPTH,
                });
            }
            Err(nix::Error::EISDIR) => {
                let below = open_level(&level.dir, &entry, entry_path)?;
                stack.push(below);
            }
            Err(e) => return Err(SysprepError::guest("remove", &entry_path)(e.into())),
        }
    }
    Ok(())
}
