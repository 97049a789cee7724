//! Image locks that QEMU understands: a writer excludes every other writer and reader, readers
//! share, whether they are corral or qemu (`qemu-img` then refuses to write an image a corral VM
//! runs on, and corral refuses one a qemu VM runs on).
//!
//! QEMU's scheme (`block/file-posix.c`): each block permission `i` (consistent read, write,
//! write-unchanged, resize) has two lock bytes in the image file, `100 + i` ("I hold it") and
//! `200 + i` ("nobody else may hold it"). An opener takes shared open-file-description (OFD) locks
//! on the bytes of the permissions it holds and of those it does not share, then tests, with
//! `F_OFD_GETLK`, that nobody else has locked the "not shared" byte of a permission it holds or
//! the "holds" byte of a permission it does not share. OFD locks belong to the open file, so they
//! last exactly as long as the image is open, in any process, and vanish with a killed one.
//!
//! OFD locks carry no owner (`l_pid` is -1), so the holders of a refused image are found in
//! `/proc`: the processes with an open file on the image whose `fdinfo` lists an OFD lock.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg};

use crate::error::{DiskError, Result};

/// QEMU's `RAW_LOCK_PERM_BASE` and `RAW_LOCK_SHARED_BASE`.
const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;
/// QEMU's block permissions, by bit index.
const CONSISTENT_READ: u32 = 1 << 0;
const WRITE: u32 = 1 << 1;
const WRITE_UNCHANGED: u32 = 1 << 2;
const RESIZE: u32 = 1 << 3;
const ALL: u32 = CONSISTENT_READ | WRITE | WRITE_UNCHANGED | RESIZE;

/// How an image is opened, for locking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read-only (a read-only disk, a backing file, a check): shares reading, excludes writers
    /// and resizes.
    Read,
    /// Read-write: excludes every other opener.
    Write,
}

impl Access {
    /// The permissions held and the permissions shared, as a qemu VM disk (writable) or a
    /// backing file (read-only) holds them.
    fn permissions(self) -> (u32, u32) {
        match self {
            Access::Read => (CONSISTENT_READ, CONSISTENT_READ | WRITE_UNCHANGED),
            Access::Write => (ALL, CONSISTENT_READ | WRITE_UNCHANGED),
        }
    }
}

/// A process holding locks on an image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LockHolder {
    /// Its process id.
    pub pid: u32,
    /// Its command line, space-separated.
    pub command: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

fn byte_lock(kind: libc::c_int, offset: i64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: offset,
        l_len: 1,
        l_pid: 0,
    }
}

/// True when another open file holds a lock on byte `offset` (an exclusive lock could not be
/// taken there); this file's own locks do not count.
fn locked_by_others(file: &File, offset: i64) -> io::Result<bool> {
    let mut probe = byte_lock(libc::F_WRLCK, offset);
    fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe))?;
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

/// Takes the locks for `access` on `file` (the image at `path`), or fails naming who holds the
/// image. The locks last as long as the file stays open.
pub(crate) fn lock(file: &File, path: &Path, access: Access) -> Result<()> {
    let (held, shared) = access.permissions();
    let io_err = |source: nix::Error| DiskError::io("lock", path, source.into());
    for bit in 0..4 {
        let mask = 1 << bit;
        if held & mask != 0 {
            let lock = byte_lock(libc::F_RDLCK, PERM_BASE + bit);
            fcntl(file, FcntlArg::F_OFD_SETLK(&lock)).map_err(io_err)?;
        }
        if shared & mask == 0 {
            let lock = byte_lock(libc::F_RDLCK, SHARED_BASE + bit);
            fcntl(file, FcntlArg::F_OFD_SETLK(&lock)).map_err(io_err)?;
        }
    }
    let io_err = |source| DiskError::io("lock", path, source);
    for bit in 0..4 {
        let mask = 1 << bit;
        let conflict = (held & mask != 0
            && locked_by_others(file, SHARED_BASE + bit).map_err(io_err)?)
            || (shared & mask == 0 && locked_by_others(file, PERM_BASE + bit).map_err(io_err)?);
        if conflict {
            // Our own locks go when the caller drops the file.
            return Err(DiskError::Locked {
                path: path.to_path_buf(),
                writing: access == Access::Write,
                holders: holders(file),
            });
        }
    }
    Ok(())
}

/// Whether an image could be opened (for writing, or for reading) now, without keeping any lock:
/// `Ok` when it could, the [`DiskError::Locked`] naming the holders when not.
pub fn check_lock(path: &Path, writable: bool) -> Result<()> {
    let access = if writable {
        Access::Write
    } else {
        Access::Read
    };
    lock_image(path, access).map(drop)
}

/// An image held exclusively, as a writer holds it, for as long as this lives: e.g. while it is
/// deleted, so that no VM opens it meanwhile.
#[derive(Debug)]
pub struct ImageLock {
    _file: File,
}

/// The locks of a writable image, apart from the open image (a second descriptor on the same
/// open file, so the same OFD locks): a live migration lets another process open the image while
/// this one keeps it open, paused, and takes it back if the migration fails (QEMU's inactivated
/// block nodes).
#[derive(Debug)]
pub struct LockHandle {
    file: File,
    path: std::path::PathBuf,
}

impl LockHandle {
    /// The handle on `file`'s locks, when `file` (the image at `path`) is locked for writing.
    pub(crate) fn of(file: &File, path: &Path, writable: bool) -> Result<Option<LockHandle>> {
        if !writable {
            // Readers share: nothing to hand over.
            return Ok(None);
        }
        let file = file
            .try_clone()
            .map_err(|source| DiskError::io("lock", path, source))?;
        Ok(Some(LockHandle {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// The image this handle locks.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the image's locks; the image stays open. Its user must not write it until
    /// [`LockHandle::retake`].
    pub fn release(&self) -> Result<()> {
        for offset in (PERM_BASE..PERM_BASE + 4).chain(SHARED_BASE..SHARED_BASE + 4) {
            let unlock = byte_lock(libc::F_UNLCK, offset);
            fcntl(&self.file, FcntlArg::F_OFD_SETLK(&unlock))
                .map_err(|source| DiskError::io("unlock", &self.path, source.into()))?;
        }
        Ok(())
    }

    /// Takes the image's locks again, or fails (holding none) if another process took them
    /// meanwhile.
    pub fn retake(&self) -> Result<()> {
        let taken = lock(&self.file, &self.path, Access::Write);
        if taken.is_err() {
            let _ = self.release();
        }
        taken
    }
}

/// Locks the image at `path` exclusively, or fails naming who uses it.
pub fn lock_exclusive(path: &Path) -> Result<ImageLock> {
    Ok(ImageLock {
        _file: lock_image(path, Access::Write)?,
    })
}

fn lock_image(path: &Path, access: Access) -> Result<File> {
    // The locks need no write access; a read-only descriptor also works on read-only files.
    let file = File::open(path).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    lock(&file, path, access)?;
    Ok(file)
}

/// The processes with an OFD lock on the file `file` is open on (other than `file` itself).
fn holders(file: &File) -> Vec<LockHolder> {
    let Ok(metadata) = file.metadata() else {
        return Vec::new();
    };
    let (device, inode) = (metadata.dev(), metadata.ino());
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // In this process, the file being locked holds locks of its own by now.
        let skip_fd = (pid == std::process::id()).then(|| file.as_raw_fd());
        if holds_lock_on(pid, skip_fd, device, inode) {
            let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| {
                    bytes
                        .split(|&b| b == 0)
                        .filter(|arg| !arg.is_empty())
                        .map(|arg| String::from_utf8_lossy(arg).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            found.push(LockHolder { pid, command });
        }
    }
    found
}

/// True when process `pid` has the file (device, inode) open with an OFD lock on it, through a
/// descriptor other than `skip_fd`.
fn holds_lock_on(pid: u32, skip_fd: Option<RawFd>, device: u64, inode: u64) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        let number = fd.file_name().to_string_lossy().parse::<RawFd>().ok();
        if number.is_none() || number == skip_fd {
            return false;
        }
        // stat() follows the magic link to the open file, whatever mount namespace it is in.
        let same_file = std::fs::metadata(fd.path())
            .is_ok_and(|target| target.dev() == device && target.ino() == inode);
        same_file
            && std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .is_ok_and(|info| {
                info.lines()
                    .any(|line| line.starts_with("lock:") && line.contains("OFDLCK"))
            })
    })
}
