//! The jail: the VMM process confined the way Firecracker's jailer confines firecracker.
//!
//! A jailed VMM starts as root, opens everything it needs on the host (kernel, initrd, KVM,
//! disk images with their backing files, taps, its sockets and console log), then, before any
//! of its threads exists:
//! - enters new mount, network, IPC and UTS namespaces; its root becomes an empty read-only
//!   tmpfs holding only the jail directory, bind-mounted at its own path (so every configured
//!   path still names the same file), the one place it can still create files: its sockets,
//!   the console log and its rotation, the exit record, vsock's `<socket>_<port>` listeners;
//! - runs as the unprivileged `corral` system user (no capabilities, no supplementary groups),
//!   not dumpable, with `no_new_privs`;
//! - has an empty environment and no descriptors but its own (inherited ones are closed at
//!   start);
//! - sits in the cgroup it was given (the instance driver creates one with the instance's
//!   limits).
//!
//! Nothing is reopened by path after that: a guest restart reuses the open kernel, initrd,
//! disks and taps, so the jail needs none of them inside. Opening them as root first means no
//! image or device changes owner for the jail, at the price of parsing kernel and qcow2 headers
//! before the jail (the same code, with the same checks, as without one).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use corral_host::account::{self, AccountError, Ids};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chown, pivot_root, setgroups, setresgid, setresuid, Gid, Uid};

use crate::config::{SerialTarget, VmConfig};

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("the jail needs root (it builds namespaces and drops to the {user} user); run as root or without --jail", user = account::JAIL_USER)]
    NotRoot,
    #[error("jail directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("jail directory {0} is not a directory other than /")]
    NotADir(PathBuf),
    #[error(
        "{what} {path} is outside the jail directory {dir}; a jailed VMM can only write there"
    )]
    Outside {
        what: &'static str,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("cannot join cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {step} while entering the jail")]
    Enter {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Where and how to jail the VMM.
#[derive(Clone, Debug)]
pub struct JailConfig {
    /// The only host directory the jailed VMM sees (canonical).
    pub dir: PathBuf,
    /// A cgroup (path from the hierarchy roots) to move into; it must exist.
    pub cgroup: Option<PathBuf>,
}

impl JailConfig {
    pub fn new(dir: &Path, cgroup: Option<PathBuf>) -> Result<JailConfig, JailError> {
        let dir = std::fs::canonicalize(dir).map_err(|source| JailError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        if !dir.is_dir() || dir == Path::new("/") {
            return Err(JailError::NotADir(dir));
        }
        Ok(JailConfig { dir, cgroup })
    }

    /// `path` (a file the VMM creates or replaces while jailed), absolute with its directory
    /// canonical, or an error when that directory is outside the jail directory.
    pub fn place(&self, what: &'static str, path: &Path) -> Result<PathBuf, JailError> {
        let outside = || JailError::Outside {
            what,
            path: path.to_owned(),
            dir: self.dir.clone(),
        };
        let name = path.file_name().ok_or_else(outside)?;
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let parent = std::fs::canonicalize(parent).map_err(|_| outside())?;
        if !parent.starts_with(&self.dir) {
            return Err(outside());
        }
        Ok(parent.join(name))
    }

    /// Places every path of `config` the VMM writes after it is jailed (see
    /// [`JailConfig::place`]).
    pub fn place_config(&self, config: &mut VmConfig) -> Result<(), JailError> {
        if let Some(path) = &mut config.control_socket {
            *path = self.place("control socket", path)?;
        }
        if let Some(path) = &mut config.console_log {
            *path = self.place("console log", path)?;
        }
        if let SerialTarget::Socket(path) = &mut config.serial {
            *path = self.place("console socket", path)?;
        }
        if let Some(vsock) = &mut config.vsock {
            vsock.socket = self.place("vsock socket", &vsock.socket)?;
        }
        Ok(())
    }
}

/// Closes every descriptor above stderr but those in `keep`.
fn close_inherited(keep: &[RawFd]) -> Result<(), JailError> {
    let mut kept: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    kept.sort_unstable();
    let mut first = 3;
    for last in kept.into_iter().map(Some).chain([None]) {
        let (from, to) = match last {
            Some(fd) => (first, (fd - 1) as libc::c_uint),
            None => (first, libc::c_uint::MAX),
        };
        if let Some(fd) = last {
            first = fd as libc::c_uint + 1;
        }
        if from > to {
            continue;
        }
        // SAFETY: close_range(2) (the raw call: musl has no wrapper) on descriptors this process
        // does not use: everything above stderr but the kept ones, which the caller holds
        // (nothing else of ours is open yet).
        let closed = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) };
        if closed != 0 {
            return Err(JailError::Enter {
                step: "close inherited descriptors",
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// A jail being set up: what [`prepare`] settled.
pub struct Jail {
    config: JailConfig,
    ids: Ids,
}

fn enter_error(step: &'static str) -> impl Fn(nix::errno::Errno) -> JailError {
    move |errno| JailError::Enter {
        step,
        source: errno.into(),
    }
}

/// The first step, before the VMM opens anything: closes inherited descriptors (all but
/// `keep`: what the VMM received before, e.g. a migration's connection and memory), empties the
/// environment, finds (or creates) the jail user and gives it the jail directory, and joins
/// the cgroup. The process must still be single-threaded.
pub fn prepare(config: &JailConfig, keep: &[RawFd]) -> Result<Jail, JailError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(JailError::NotRoot);
    }
    close_inherited(keep)?;
    for (name, _) in std::env::vars_os() {
        std::env::remove_var(name);
    }
    let ids = account::ensure_system_user(account::JAIL_USER)?;
    let dir_error = |source| JailError::Dir {
        path: config.dir.clone(),
        source,
    };
    chown(
        &config.dir,
        Some(Uid::from_raw(ids.uid)),
        Some(Gid::from_raw(ids.gid)),
    )
    .map_err(|errno| dir_error(errno.into()))?;
    std::fs::set_permissions(&config.dir, std::fs::Permissions::from_mode(0o700))
        .map_err(dir_error)?;
    if let Some(cgroup) = &config.cgroup {
        join_cgroup(cgroup)?;
    }
    Ok(Jail {
        config: config.clone(),
        ids,
    })
}

/// Moves this process into cgroup `path` in every hierarchy where it exists.
fn join_cgroup(path: &Path) -> Result<(), JailError> {
    let failed = |source| JailError::Cgroup {
        path: path.to_owned(),
        source,
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(failed)?;
    let layout = corral_host::cgroups::CgroupLayout::parse_mountinfo(&mountinfo);
    let mounts = layout
        .v1
        .iter()
        .map(|h| (h.mount_point.clone(), h.root.clone()))
        .chain(
            layout
                .v2
                .iter()
                .map(|m| (m.mount_point.clone(), m.root.clone())),
        );
    let pid = std::process::id().to_string();
    let mut joined = false;
    for (mount_point, root) in mounts {
        let relative = path.strip_prefix(&root).unwrap_or(path);
        let dir = mount_point.join(relative.strip_prefix("/").unwrap_or(relative));
        if dir.is_dir() && dir != mount_point {
            std::fs::write(dir.join("cgroup.procs"), &pid).map_err(failed)?;
            joined = true;
        }
    }
    if !joined {
        return Err(failed(std::io::Error::other(
            "it exists in no cgroup hierarchy; create it first",
        )));
    }
    Ok(())
}

impl Jail {
    /// The last step, once everything on the host is open and before any thread starts:
    /// namespaces, the new root, the jail user.
    pub fn enter(self) -> Result<(), JailError> {
        let dir = &self.config.dir;
        unshare(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS,
        )
        .map_err(enter_error("create namespaces"))?;
        let none: Option<&str> = None;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
            .map_err(enter_error("make mounts private"))?;
        // Opened in the new namespace and kept, to bind the directory once the tmpfs root has
        // covered its path.
        let dir_file = File::open(dir).map_err(|source| JailError::Dir {
            path: dir.clone(),
            source,
        })?;
        // The new root: an empty tmpfs on the jail directory's own path (this namespace only).
        let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            locked,
            Some("mode=0755,size=1m"),
        )
        .map_err(enter_error("mount the jail's root"))?;
        let inside = dir.join(relative(dir));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&inside)
            .map_err(|source| JailError::Enter {
                step: "create the jail directory's mount point",
                source,
            })?;
        let source = format!("/proc/self/fd/{}", dir_file.as_raw_fd());
        mount(Some(source.as_str()), &inside, none, MsFlags::MS_BIND, none)
            .map_err(enter_error("bind the jail directory"))?;
        mount(
            none,
            &inside,
            none,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | locked,
            none,
        )
        .map_err(enter_error("lock the jail directory's mount"))?;
        drop(dir_file);
        let old_root = dir.join(".old-root");
        std::fs::create_dir(&old_root).map_err(|source| JailError::Enter {
            step: "create the old root's mount point",
            source,
        })?;
        pivot_root(dir, &old_root).map_err(enter_error("switch to the jail's root"))?;
        std::env::set_current_dir("/").map_err(|source| JailError::Enter {
            step: "enter the jail's root",
            source,
        })?;
        umount2("/.old-root", MntFlags::MNT_DETACH).map_err(enter_error("drop the old root"))?;
        std::fs::remove_dir("/.old-root").map_err(|source| JailError::Enter {
            step: "remove the old root's mount point",
            source,
        })?;
        mount(
            none,
            "/",
            none,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | locked,
            none,
        )
        .map_err(enter_error("make the jail's root read-only"))?;
        self.drop_privileges()
    }

    fn drop_privileges(&self) -> Result<(), JailError> {
        let uid = Uid::from_raw(self.ids.uid);
        let gid = Gid::from_raw(self.ids.gid);
        setgroups(&[]).map_err(enter_error("drop supplementary groups"))?;
        setresgid(gid, gid, gid).map_err(enter_error("switch group"))?;
        // Leaving uid 0 clears every capability (no keep-caps).
        setresuid(uid, uid, uid).map_err(enter_error("switch user"))?;
        // Threads started from here on inherit both.
        nix::sys::prctl::set_no_new_privs().map_err(enter_error("set no_new_privs"))?;
        nix::sys::prctl::set_dumpable(false).map_err(enter_error("make the process undumpable"))
    }
}

/// `path` without its root, to join under another directory.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}
