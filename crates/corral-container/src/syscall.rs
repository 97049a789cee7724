//! The seam between the container setup logic and the kernel.
//!
//! Mount, device and pivot logic in [`crate::rootfs`] and the init's identity and namespace steps
//! in [`crate::init`] call the kernel only through [`Syscall`], so unit tests can run them without
//! root against [`RecordingSyscall`], which records every call and answers file-type queries from
//! a table. [`LinuxSyscall`] is the real implementation.
//!
//! Everything created or mounted inside the rootfs before `pivot_root` acts on a [`Handle`] (an
//! `O_PATH` descriptor) reached one component at a time without following symlinks, and mounts
//! target `/proc/self/fd/N` of that handle: a path component swapped for a symlink while the
//! container starts (CVE-2021-30465) makes the setup fail instead of acting on the host.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, SFlag};

use crate::error::{Error, Result};

/// What kind of file, if any, a path names (symlinks are not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Symlink,
    /// A regular file, device node, socket or fifo: anything a bind mount treats as a file.
    Other,
}

/// A file or directory held open without being opened for I/O (`O_PATH`), so that what is then
/// created in it or mounted on it is exactly what was resolved, whatever happens to its path; or
/// a namespace file opened read-only for setns(2), which refuses `O_PATH` descriptors.
/// `path` is where it was found: for messages, and the whole identity of a fake handle.
#[derive(Debug)]
pub struct Handle {
    fd: Option<OwnedFd>,
    path: PathBuf,
}

impl Handle {
    /// The path the handle was reached by (it may have changed since).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the same file.
    pub fn try_clone(&self) -> Result<Handle> {
        let fd = match &self.fd {
            Some(fd) => Some(
                fd.try_clone()
                    .map_err(|e| Error::io("duplicate the handle of", &self.path, e))?,
            ),
            None => None,
        };
        Ok(Handle {
            fd,
            path: self.path.clone(),
        })
    }

    /// A path naming exactly the handle's file for calls that only take paths (mount(2)):
    /// `/proc/self/fd/N`, or the recorded path of a fake handle.
    fn proc_path(&self) -> PathBuf {
        match &self.fd {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            None => self.path.clone(),
        }
    }

    /// The descriptor of a real handle.
    fn fd(&self) -> Result<&OwnedFd> {
        self.fd
            .as_ref()
            .ok_or_else(|| Error::Setup(format!("{} is not an open handle", self.path.display())))
    }
}

/// The kernel operations the rootfs logic and the init need.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()>;
    fn chdir(&self, path: &Path) -> Result<()>;
    /// Creates an empty regular file (a mount point for a file bind mount) if nothing is there.
    fn touch(&self, path: &Path) -> Result<()>;
    fn write_file(&self, path: &Path, contents: &str) -> Result<()>;
    fn sethostname(&self, name: &str) -> Result<()>;
    fn setdomainname(&self, name: &str) -> Result<()>;
    /// The kind of file at `path`, or `None` when nothing is there.
    fn file_kind(&self, path: &Path) -> Option<FileKind>;
    /// The kind of file at the relative `path` below directory `dir` (a symlink at its end is not
    /// followed), or `None` when nothing is there.
    fn kind_in(&self, dir: &Handle, path: &Path) -> Option<FileKind>;
    /// The target of the symlink at the relative `path` below directory `dir`.
    fn read_link_in(&self, dir: &Handle, path: &Path) -> Result<PathBuf>;
    /// Makes the directory `dir` the working directory.
    fn chdir_to(&self, dir: &Handle) -> Result<()>;

    /// Opens `path`, following symlinks as mount(2) would: a bind source on the host that the
    /// spec names, or the rootfs directory itself.
    fn open_path(&self, path: &Path) -> Result<Handle>;
    /// Opens entry `name` of directory `dir` without following it if it is a symlink (but into
    /// whatever is mounted on it); `None` when there is no such entry.
    fn open_at(&self, dir: &Handle, name: &OsStr) -> Result<Option<Handle>>;
    /// What the handle is.
    fn kind_of(&self, handle: &Handle) -> Result<FileKind>;
    /// Creates directory `name` in `dir`; an existing entry is left for the caller to check.
    fn mkdir_at(&self, dir: &Handle, name: &OsStr) -> Result<()>;
    /// Creates an empty regular file `name` in `dir`; an existing entry is left alone.
    fn create_file_at(&self, dir: &Handle, name: &OsStr) -> Result<()>;
    fn mknod_at(&self, dir: &Handle, name: &OsStr, kind: SFlag, perm: Mode, dev: u64)
        -> Result<()>;
    /// Removes the entry `name` of `dir`, which is not a directory.
    fn remove_at(&self, dir: &Handle, name: &OsStr) -> Result<()>;
    /// Changes the owner of entry `name` of `dir` (a symlink itself, never its target).
    fn chown_at(&self, dir: &Handle, name: &OsStr, uid: u32, gid: u32) -> Result<()>;
    fn symlink_at(&self, target: &Path, dir: &Handle, name: &OsStr) -> Result<()>;
    /// mount(2) onto exactly the handle's file or directory.
    fn mount_on(
        &self,
        source: Option<&Path>,
        target: &Handle,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    /// Bind-mounts `source` onto `target`, with its submounts when `recursive` (rbind).
    fn bind_on(&self, source: &Handle, target: &Handle, recursive: bool) -> Result<()>;
    /// Bind-mounts directory `dir` onto itself with its submounts, and returns the root of the
    /// new mount (reopening `dir` by path would need the right to traverse its parents).
    fn bind_onto_itself(&self, dir: &Handle) -> Result<Handle>;
    /// The flags of the mount `handle` is on that a bind remount must repeat (`MS_RDONLY`,
    /// `MS_NOSUID`, `MS_NODEV`, `MS_NOEXEC`): the kernel refuses to clear them when a more
    /// privileged mount namespace set them, and drops them otherwise.
    fn mount_flags_of(&self, handle: &Handle) -> Result<MsFlags>;

    // The init's identity and namespace steps return the kernel's error: the caller names the
    // step it was taking.

    /// Sets the real, effective and saved group ids to `gid`.
    fn setresgid(&self, gid: u32) -> nix::Result<()>;
    /// Sets the real, effective and saved user ids to `uid`.
    fn setresuid(&self, uid: u32) -> nix::Result<()>;
    /// Moves the process into new namespaces of the kinds in `flags`.
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// Opens the namespace file at `path` for [`Syscall::setns`].
    fn open_namespace(&self, path: &Path) -> nix::Result<Handle>;
    /// Joins the namespace `ns`, which must be of kind `kind`.
    fn setns(&self, ns: &Handle, kind: CloneFlags) -> nix::Result<()>;
    /// Starts a new session (and process group) led by the process.
    fn setsid(&self) -> nix::Result<()>;
    /// The signal the kernel sends the process when its parent dies; `None` for none.
    fn set_pdeathsig(&self, signal: Option<Signal>) -> nix::Result<()>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

/// Flags of every handle: no I/O, not inherited by the container's program.
const HANDLE_FLAGS: OFlag = OFlag::O_PATH.union(OFlag::O_CLOEXEC);

fn kind_from_mode(mode: u32) -> FileKind {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => FileKind::Directory,
        SFlag::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn bind_flags(recursive: bool) -> MsFlags {
    if recursive {
        MsFlags::MS_BIND | MsFlags::MS_REC
    } else {
        MsFlags::MS_BIND
    }
}

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(|e| {
            Error::sys(
                format!("mount {} on {}", describe(source), target.display()),
                e,
            )
        })
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(target, flags)
            .map_err(|e| Error::sys(format!("unmount {}", target.display()), e))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
            .map_err(|e| Error::sys(format!("pivot_root into {}", new_root.display()), e))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        nix::unistd::chdir(path).map_err(|e| Error::sys(format!("chdir to {}", path.display()), e))
    }

    fn touch(&self, path: &Path) -> Result<()> {
        // O_EXCL: an existing file (perhaps a device node the image ships) is never opened.
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match nix::fcntl::open(path, flags, Mode::from_bits_truncate(0o644)) {
            Ok(_) | Err(nix::Error::EEXIST) => Ok(()),
            Err(e) => Err(Error::sys(
                format!("create mount point {}", path.display()),
                e,
            )),
        }
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        std::fs::write(path, contents).map_err(|e| Error::io("write", path, e))
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).map_err(|e| Error::sys(format!("set hostname {name:?}"), e))
    }

    fn setdomainname(&self, name: &str) -> Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::sys(
                format!("set domain name {name:?}"),
                nix::Error::last(),
            ))
        }
    }

    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        let kind = meta.file_type();
        Some(if kind.is_dir() {
            FileKind::Directory
        } else if kind.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }

    fn kind_in(&self, dir: &Handle, path: &Path) -> Option<FileKind> {
        let stat =
            nix::sys::stat::fstatat(dir.fd().ok()?, path, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        Some(kind_from_mode(stat.st_mode))
    }

    fn read_link_in(&self, dir: &Handle, path: &Path) -> Result<PathBuf> {
        let full = dir.path.join(path);
        nix::fcntl::readlinkat(dir.fd()?, path)
            .map(PathBuf::from)
            .map_err(|e| Error::sys(format!("read symlink {}", full.display()), e))
    }

    fn chdir_to(&self, dir: &Handle) -> Result<()> {
        nix::unistd::fchdir(dir.fd()?)
            .map_err(|e| Error::sys(format!("chdir to {}", dir.path.display()), e))
    }

    fn open_path(&self, path: &Path) -> Result<Handle> {
        let fd = nix::fcntl::open(path, HANDLE_FLAGS, Mode::empty())
            .map_err(|e| Error::sys(format!("open {}", path.display()), e))?;
        Ok(Handle {
            fd: Some(fd),
            path: path.to_path_buf(),
        })
    }

    fn open_at(&self, dir: &Handle, name: &OsStr) -> Result<Option<Handle>> {
        let path = dir.path.join(name);
        match nix::fcntl::openat(
            dir.fd()?,
            name,
            HANDLE_FLAGS | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Handle { fd: Some(fd), path })),
            Err(nix::Error::ENOENT) => Ok(None),
            Err(e) => Err(Error::sys(format!("open {}", path.display()), e)),
        }
    }

    fn kind_of(&self, handle: &Handle) -> Result<FileKind> {
        let stat = nix::sys::stat::fstat(handle.fd()?)
            .map_err(|e| Error::sys(format!("stat {}", handle.path.display()), e))?;
        Ok(kind_from_mode(stat.st_mode))
    }

    fn mkdir_at(&self, dir: &Handle, name: &OsStr) -> Result<()> {
        match nix::sys::stat::mkdirat(dir.fd()?, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
            Err(e) => Err(Error::sys(
                format!("create directory {}", dir.path.join(name).display()),
                e,
            )),
        }
    }

    fn create_file_at(&self, dir: &Handle, name: &OsStr) -> Result<()> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match nix::fcntl::openat(dir.fd()?, name, flags, Mode::from_bits_truncate(0o644)) {
            Ok(_) | Err(nix::Error::EEXIST) => Ok(()),
            Err(e) => Err(Error::sys(
                format!("create mount point {}", dir.path.join(name).display()),
                e,
            )),
        }
    }

    fn mknod_at(
        &self,
        dir: &Handle,
        name: &OsStr,
        kind: SFlag,
        perm: Mode,
        dev: u64,
    ) -> Result<()> {
        nix::sys::stat::mknodat(dir.fd()?, name, kind, perm, dev).map_err(|e| {
            Error::sys(
                format!("create device node {}", dir.path.join(name).display()),
                e,
            )
        })
    }

    fn remove_at(&self, dir: &Handle, name: &OsStr) -> Result<()> {
        nix::unistd::unlinkat(dir.fd()?, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| Error::sys(format!("remove {}", dir.path.join(name).display()), e))
    }

    fn chown_at(&self, dir: &Handle, name: &OsStr, uid: u32, gid: u32) -> Result<()> {
        nix::unistd::fchownat(
            dir.fd()?,
            name,
            Some(uid.into()),
            Some(gid.into()),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::sys(format!("chown {}", dir.path.join(name).display()), e))
    }

    fn symlink_at(&self, target: &Path, dir: &Handle, name: &OsStr) -> Result<()> {
        nix::unistd::symlinkat(target, dir.fd()?, name).map_err(|e| {
            Error::sys(
                format!("create symlink {}", dir.path.join(name).display()),
                e,
            )
        })
    }

    fn mount_on(
        &self,
        source: Option<&Path>,
        target: &Handle,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, &target.proc_path(), fstype, flags, data).map_err(|e| {
            Error::sys(
                format!("mount {} on {}", describe(source), target.path.display()),
                e,
            )
        })
    }

    fn bind_on(&self, source: &Handle, target: &Handle, recursive: bool) -> Result<()> {
        let flags = bind_flags(recursive);
        nix::mount::mount(
            Some(&source.proc_path()),
            &target.proc_path(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|e| {
            Error::sys(
                format!(
                    "mount {} on {}",
                    source.path.display(),
                    target.path.display()
                ),
                e,
            )
        })
    }

    fn bind_onto_itself(&self, dir: &Handle) -> Result<Handle> {
        use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
        let failed = |e: rustix::io::Errno| {
            Error::sys(
                format!("mount {0} on {0}", dir.path.display()),
                nix::Error::from_raw(e.raw_os_error()),
            )
        };
        // A detached copy of the tree, attached onto the directory: the copy's descriptor is
        // then the new mount, however the directory's path may be reached (or not).
        let tree = open_tree(
            dir.fd()?,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE
                | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .map_err(failed)?;
        move_mount(
            &tree,
            "",
            dir.fd()?,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(failed)?;
        Ok(Handle {
            fd: Some(tree),
            path: dir.path.clone(),
        })
    }

    fn mount_flags_of(&self, handle: &Handle) -> Result<MsFlags> {
        use nix::sys::statvfs::{fstatvfs, FsFlags};
        let stat = fstatvfs(handle.fd()?).map_err(|e| {
            Error::sys(
                format!("read the mount flags of {}", handle.path.display()),
                e,
            )
        })?;
        let flags = stat.flags();
        Ok([
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ]
        .into_iter()
        .filter(|(st, _)| flags.contains(*st))
        .fold(MsFlags::empty(), |all, (_, ms)| all | ms))
    }

    fn setresgid(&self, gid: u32) -> nix::Result<()> {
        let gid = nix::unistd::Gid::from_raw(gid);
        nix::unistd::setresgid(gid, gid, gid)
    }

    fn setresuid(&self, uid: u32) -> nix::Result<()> {
        let uid = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresuid(uid, uid, uid)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn open_namespace(&self, path: &Path) -> nix::Result<Handle> {
        let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Handle {
            fd: Some(fd),
            path: path.to_path_buf(),
        })
    }

    fn setns(&self, ns: &Handle, kind: CloneFlags) -> nix::Result<()> {
        nix::sched::setns(ns.fd.as_ref().ok_or(nix::Error::EBADF)?, kind)
    }

    fn setsid(&self) -> nix::Result<()> {
        nix::unistd::setsid().map(drop)
    }

    fn set_pdeathsig(&self, signal: Option<Signal>) -> nix::Result<()> {
        nix::sys::prctl::set_pdeathsig(signal)
    }
}

fn describe(source: Option<&Path>) -> String {
    source.map_or_else(|| "(none)".to_owned(), |s| s.display().to_string())
}

/// One recorded call of [`RecordingSyscall`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount(PathBuf),
    PivotRoot(PathBuf),
    Chdir(PathBuf),
    Mkdir(PathBuf),
    Touch(PathBuf),
    Mknod {
        path: PathBuf,
        kind: SFlag,
        dev: u64,
    },
    Remove(PathBuf),
    Chown(PathBuf, u32, u32),
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    WriteFile(PathBuf, String),
    Hostname(String),
    Domainname(String),
    Setresgid(u32),
    Setresuid(u32),
    Unshare(CloneFlags),
    OpenNamespace(PathBuf),
    Setns(PathBuf, CloneFlags),
    Setsid,
    Pdeathsig(Option<Signal>),
}

/// A fake kernel for unit tests: records calls; files "exist" once created or declared, and
/// handles are just the paths they were reached by.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
    files: RefCell<BTreeMap<PathBuf, FileKind>>,
    links: RefCell<BTreeMap<PathBuf, PathBuf>>,
    failing_mounts: BTreeSet<PathBuf>,
    failing_calls: Vec<Call>,
    swapped: BTreeSet<PathBuf>,
    mount_flags: Option<MsFlags>,
}

impl RecordingSyscall {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares that `path` exists with the given kind.
    pub fn with_file(self, path: impl Into<PathBuf>, kind: FileKind) -> Self {
        self.files.borrow_mut().insert(path.into(), kind);
        self
    }

    /// Declares a symlink at `path` pointing to `target`.
    pub fn with_symlink(self, path: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.files
            .borrow_mut()
            .insert(path.clone(), FileKind::Symlink);
        self.links.borrow_mut().insert(path, target.into());
        self
    }

    /// A directory at `path` that is swapped for a symlink between being resolved by path and
    /// being opened: path queries see a directory, handles a symlink.
    pub fn with_swapped_directory(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.files
            .borrow_mut()
            .insert(path.clone(), FileKind::Directory);
        self.swapped.insert(path);
        self
    }

    /// Gives every mount these flags (as a host mount with `nosuid` would have).
    pub fn with_mount_flags(mut self, flags: MsFlags) -> Self {
        self.mount_flags = Some(flags);
        self
    }

    /// Makes every mount onto `target` fail with EPERM.
    pub fn with_failing_mount(mut self, target: impl Into<PathBuf>) -> Self {
        self.failing_mounts.insert(target.into());
        self
    }

    /// Makes this exact call of the init's identity and namespace steps fail with EPERM.
    pub fn with_failing_call(mut self, call: Call) -> Self {
        self.failing_calls.push(call);
        self
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Only the mount calls, as (target, fstype, flags).
    pub fn mounts(&self) -> Vec<(PathBuf, Option<String>, MsFlags)> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Mount {
                    target,
                    fstype,
                    flags,
                    ..
                } => Some((target.clone(), fstype.clone(), *flags)),
                _ => None,
            })
            .collect()
    }

    fn record(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }

    /// Records `call`, or fails it without recording when it was declared failing.
    fn attempt(&self, call: Call) -> nix::Result<()> {
        if self.failing_calls.contains(&call) {
            return Err(nix::Error::EPERM);
        }
        self.record(call);
        Ok(())
    }

    fn create(&self, path: &Path, kind: FileKind) {
        self.files
            .borrow_mut()
            .entry(path.to_path_buf())
            .or_insert(kind);
    }

    fn fake(path: PathBuf) -> Handle {
        Handle { fd: None, path }
    }

    fn record_mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        if self.failing_mounts.contains(target) {
            return Err(Error::sys(
                format!("mount on {}", target.display()),
                nix::Error::EPERM,
            ));
        }
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_owned),
            flags,
            data: data.map(str::to_owned),
        });
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        self.record_mount(source, target, fstype, flags, data)
    }

    fn umount(&self, target: &Path, _flags: MntFlags) -> Result<()> {
        self.record(Call::Umount(target.to_path_buf()));
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, _put_old: &Path) -> Result<()> {
        self.record(Call::PivotRoot(new_root.to_path_buf()));
        Ok(())
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        self.record(Call::Chdir(path.to_path_buf()));
        Ok(())
    }

    fn touch(&self, path: &Path) -> Result<()> {
        self.create(path, FileKind::Other);
        self.record(Call::Touch(path.to_path_buf()));
        Ok(())
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        self.record(Call::WriteFile(path.to_path_buf(), contents.to_owned()));
        Ok(())
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        self.record(Call::Hostname(name.to_owned()));
        Ok(())
    }

    fn setdomainname(&self, name: &str) -> Result<()> {
        self.record(Call::Domainname(name.to_owned()));
        Ok(())
    }

    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        self.files.borrow().get(path).copied()
    }

    fn kind_in(&self, dir: &Handle, path: &Path) -> Option<FileKind> {
        self.file_kind(&dir.path.join(path))
    }

    fn read_link_in(&self, dir: &Handle, path: &Path) -> Result<PathBuf> {
        let full = dir.path.join(path);
        self.links.borrow().get(&full).cloned().ok_or_else(|| {
            Error::io(
                "read symlink",
                full,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }

    fn chdir_to(&self, dir: &Handle) -> Result<()> {
        self.chdir(&dir.path)
    }

    fn open_path(&self, path: &Path) -> Result<Handle> {
        Ok(Self::fake(path.to_path_buf()))
    }

    fn open_at(&self, dir: &Handle, name: &OsStr) -> Result<Option<Handle>> {
        let path = dir.path.join(name);
        let exists = self.files.borrow().contains_key(&path);
        Ok(exists.then(|| Self::fake(path)))
    }

    /// Undeclared paths (host bind sources, the rootfs) are directories.
    fn kind_of(&self, handle: &Handle) -> Result<FileKind> {
        if self.swapped.contains(&handle.path) {
            return Ok(FileKind::Symlink);
        }
        Ok(self.file_kind(&handle.path).unwrap_or(FileKind::Directory))
    }

    fn mkdir_at(&self, dir: &Handle, name: &OsStr) -> Result<()> {
        let path = dir.path.join(name);
        self.create(&path, FileKind::Directory);
        self.record(Call::Mkdir(path));
        Ok(())
    }

    fn create_file_at(&self, dir: &Handle, name: &OsStr) -> Result<()> {
        self.touch(&dir.path.join(name))
    }

    fn mknod_at(
        &self,
        dir: &Handle,
        name: &OsStr,
        kind: SFlag,
        _perm: Mode,
        dev: u64,
    ) -> Result<()> {
        let path = dir.path.join(name);
        self.create(&path, FileKind::Other);
        self.record(Call::Mknod { path, kind, dev });
        Ok(())
    }

    fn remove_at(&self, dir: &Handle, name: &OsStr) -> Result<()> {
        let path = dir.path.join(name);
        self.files.borrow_mut().remove(&path);
        self.record(Call::Remove(path));
        Ok(())
    }

    fn chown_at(&self, dir: &Handle, name: &OsStr, uid: u32, gid: u32) -> Result<()> {
        self.record(Call::Chown(dir.path.join(name), uid, gid));
        Ok(())
    }

    fn symlink_at(&self, target: &Path, dir: &Handle, name: &OsStr) -> Result<()> {
        let link = dir.path.join(name);
        self.create(&link, FileKind::Symlink);
        self.links
            .borrow_mut()
            .insert(link.clone(), target.to_path_buf());
        self.record(Call::Symlink {
            target: target.to_path_buf(),
            link,
        });
        Ok(())
    }

    fn mount_on(
        &self,
        source: Option<&Path>,
        target: &Handle,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        self.record_mount(source, &target.path, fstype, flags, data)
    }

    fn bind_on(&self, source: &Handle, target: &Handle, recursive: bool) -> Result<()> {
        self.record_mount(
            Some(&source.path),
            &target.path,
            None,
            bind_flags(recursive),
            None,
        )
    }

    fn bind_onto_itself(&self, dir: &Handle) -> Result<Handle> {
        self.bind_on(dir, dir, true)?;
        Ok(Self::fake(dir.path.clone()))
    }

    /// Mounts of the fake kernel carry no flags but those of [`Self::with_mount_flags`].
    fn mount_flags_of(&self, _handle: &Handle) -> Result<MsFlags> {
        Ok(self.mount_flags.unwrap_or(MsFlags::empty()))
    }

    fn setresgid(&self, gid: u32) -> nix::Result<()> {
        self.attempt(Call::Setresgid(gid))
    }

    fn setresuid(&self, uid: u32) -> nix::Result<()> {
        self.attempt(Call::Setresuid(uid))
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.attempt(Call::Unshare(flags))
    }

    fn open_namespace(&self, path: &Path) -> nix::Result<Handle> {
        self.attempt(Call::OpenNamespace(path.to_path_buf()))?;
        Ok(Self::fake(path.to_path_buf()))
    }

    fn setns(&self, ns: &Handle, kind: CloneFlags) -> nix::Result<()> {
        self.attempt(Call::Setns(ns.path.clone(), kind))
    }

    fn setsid(&self) -> nix::Result<()> {
        self.attempt(Call::Setsid)
    }

    fn set_pdeathsig(&self, signal: Option<Signal>) -> nix::Result<()> {
        self.attempt(Call::Pdeathsig(signal))
    }
}
