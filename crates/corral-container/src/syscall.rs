//! The seam between the container setup logic and the kernel.
//!
//! Mount, device and pivot logic in [`crate::rootfs`] calls the kernel only through [`Syscall`], so
//! unit tests can run it without root against [`RecordingSyscall`], which records every call and
//! answers file-type queries from a table. [`LinuxSyscall`] is the real implementation.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
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

/// The kernel operations the rootfs logic needs.
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
    fn mkdir_all(&self, path: &Path) -> Result<()>;
    /// Creates an empty regular file (a mount point for a file bind mount) if none exists.
    fn touch(&self, path: &Path) -> Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    fn write_file(&self, path: &Path, contents: &str) -> Result<()>;
    fn sethostname(&self, name: &str) -> Result<()>;
    fn setdomainname(&self, name: &str) -> Result<()>;
    /// The kind of file at `path`, or `None` when nothing is there.
    fn file_kind(&self, path: &Path) -> Option<FileKind>;
    /// The target of the symlink at `path`.
    fn read_link(&self, path: &Path) -> Result<PathBuf>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

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

    fn mkdir_all(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))
    }

    fn touch(&self, path: &Path) -> Result<()> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| Error::io("create mount point", path, e))
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()> {
        nix::sys::stat::mknod(path, kind, perm, dev)
            .map_err(|e| Error::sys(format!("create device node {}", path.display()), e))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
            .map_err(|e| Error::sys(format!("chown {}", path.display()), e))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        std::os::unix::fs::symlink(target, link).map_err(|e| Error::io("create symlink", link, e))
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

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        std::fs::read_link(path).map_err(|e| Error::io("read symlink", path, e))
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
    MkdirAll(PathBuf),
    Touch(PathBuf),
    Mknod {
        path: PathBuf,
        kind: SFlag,
        dev: u64,
    },
    Chown(PathBuf, u32, u32),
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    WriteFile(PathBuf, String),
    Hostname(String),
    Domainname(String),
}

/// A fake kernel for unit tests: records calls; files "exist" once created or declared.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
    files: RefCell<BTreeMap<PathBuf, FileKind>>,
    links: RefCell<BTreeMap<PathBuf, PathBuf>>,
    failing_mounts: BTreeSet<PathBuf>,
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

    /// Makes every mount onto `target` fail with EPERM.
    pub fn with_failing_mount(mut self, target: impl Into<PathBuf>) -> Self {
        self.failing_mounts.insert(target.into());
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

    fn create(&self, path: &Path, kind: FileKind) {
        self.files.borrow_mut().insert(path.to_path_buf(), kind);
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

    fn mkdir_all(&self, path: &Path) -> Result<()> {
        self.create(path, FileKind::Directory);
        self.record(Call::MkdirAll(path.to_path_buf()));
        Ok(())
    }

    fn touch(&self, path: &Path) -> Result<()> {
        self.create(path, FileKind::Other);
        self.record(Call::Touch(path.to_path_buf()));
        Ok(())
    }

    fn mknod(&self, path: &Path, kind: SFlag, _perm: Mode, dev: u64) -> Result<()> {
        self.create(path, FileKind::Other);
        self.record(Call::Mknod {
            path: path.to_path_buf(),
            kind,
            dev,
        });
        Ok(())
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        self.record(Call::Chown(path.to_path_buf(), uid, gid));
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.create(link, FileKind::Symlink);
        self.links
            .borrow_mut()
            .insert(link.to_path_buf(), target.to_path_buf());
        self.record(Call::Symlink {
            target: target.to_path_buf(),
            link: link.to_path_buf(),
        });
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

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        self.links.borrow().get(path).cloned().ok_or_else(|| {
            Error::io(
                "read symlink",
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }
}
