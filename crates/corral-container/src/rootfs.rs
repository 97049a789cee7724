//! The container's filesystem view: the spec's mounts in order, device nodes, `/dev` links,
//! pivot_root, masked and read-only paths. Everything goes through [`Syscall`] so the logic is
//! unit-tested without root.
//!
//! Before pivot_root every path inside the rootfs is resolved as if the rootfs were `/`
//! ([`secure_join`]) and then reached from the rootfs's handle one component at a time without
//! following symlinks; mounts go onto that handle. The image (or another container sharing a
//! volume) can race symlinks into those paths, but the worst it gets is a failed create.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use crate::error::{Error, Result};
use crate::syscall::{FileKind, Handle, Syscall};

/// Symlinks are followed at most this many times while resolving one path, like the kernel's limit.
const MAX_SYMLINK_FOLLOWS: usize = 40;

/// A mount's option list split into what mount(2) needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount call itself (MS_BIND, MS_RDONLY, MS_NOSUID, ...).
    pub flags: MsFlags,
    /// Propagation to set with a second call (MS_PRIVATE, MS_SLAVE | MS_REC, ...).
    pub propagation: MsFlags,
    /// Filesystem-specific options, comma separated (`mode=755`, `size=64k`, ...).
    pub data: String,
}

impl MountOptions {
    fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags a bind mount needs applied with a remount (bind ignores them on the first call).
    fn remount_flags(&self) -> MsFlags {
        self.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }
}

/// Splits an OCI mount option list into mount flags, propagation and data, like runc does.
pub fn parse_mount_options(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: String::new(),
    };
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                parsed.propagation |= propagation_flags(option).unwrap_or(MsFlags::empty());
                continue;
            }
            // crun's copy-up of image content into tmpfs is a podman nicety we do not need.
            "tmpcopyup" | "notmpcopyup" => continue,
            other => {
                data.push(other.to_owned());
                continue;
            }
        };
        parsed.flags = (parsed.flags | set) - clear;
    }
    parsed.data = data.join(",");
    parsed
}

/// Maps a propagation name (`rslave`, `private`, ...) to mount flags.
pub fn propagation_flags(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Joins `path` onto the rootfs, resolving symlinks as if the rootfs were `/`, so a hostile
/// rootfs cannot point a mount destination outside itself (`/proc -> /` ends up at `root/`).
/// Lookups start from the rootfs's handle: the host path leading to it is never walked again.
pub fn secure_join(sys: &dyn Syscall, rootfs: &Rootfs, path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: VecDeque<OsString> = normal_parts(path).collect();
    let mut follows = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        if sys.kind_in(&rootfs.handle, &candidate) != Some(FileKind::Symlink) {
            resolved = candidate;
            continue;
        }
        follows += 1;
        if follows > MAX_SYMLINK_FOLLOWS {
            return Err(Error::InvalidSpec(format!(
                "too many symlinks while resolving {} in the rootfs",
                path.display()
            )));
        }
        let target = sys.read_link_in(&rootfs.handle, &candidate)?;
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        for (index, target_part) in normal_parts(&target).enumerate() {
            pending.insert(index, target_part);
        }
    }
    Ok(rootfs.path.join(resolved))
}

/// The non-root components of a path as strings, keeping `..` (resolved by the caller).
fn normal_parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// One cgroup filesystem to show inside the container at `/sys/fs/cgroup/<subdir>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// Directory under the cgroup mount point (`memory`, `systemd`, or empty for cgroup v2).
    pub subdir: String,
    /// `cgroup` or `cgroup2`.
    pub fstype: &'static str,
    /// Mount data naming the hierarchy (`memory`, `name=systemd`, or empty).
    pub data: String,
    /// The container's own cgroup directory on the host, bind-mounted when there is no cgroup
    /// namespace so the container sees only itself.
    pub host_path: PathBuf,
    /// Mounted read-write even when the `cgroup` mount is read-only: the delegated hierarchy of
    /// a system container's init.
    pub writable: bool,
}

/// What the rootfs setup needs to know beyond the spec's mounts.
#[derive(Clone, Debug, Default)]
pub struct RootfsContext {
    /// The bundle directory: relative bind sources are relative to it.
    pub bundle: PathBuf,
    /// The container gets its own user namespace: device nodes are bind-mounted, not created.
    pub in_user_namespace: bool,
    /// The container gets its own cgroup namespace.
    pub in_cgroup_namespace: bool,
    /// The cgroup filesystems to show at a `cgroup` mount.
    pub cgroup_mounts: Vec<CgroupMount>,
}

/// Makes the mount tree private to the container before anything is mounted, so nothing the
/// setup mounts propagates back to the host.
pub fn isolate_mount_tree(sys: &dyn Syscall, rootfs_propagation: Option<&str>) -> Result<()> {
    let wanted = match rootfs_propagation {
        None => None,
        Some(name) => Some(propagation_flags(name).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "unknown rootfsPropagation {name:?}: use private, slave, shared or unbindable (optionally with r)"
            ))
        })?),
    };
    // Private stays private; everything else starts as a slave (shared would leak mounts to the
    // host, unbindable would stop the rootfs bind) and gets its final form after pivot_root.
    let flags = match wanted {
        Some(flags) if flags.contains(MsFlags::MS_PRIVATE) => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    sys.mount(None, Path::new("/"), None, flags, None)
}

/// The rootfs, bind-mounted onto itself and opened: everything created or mounted inside it
/// before pivot_root starts from this handle.
#[derive(Debug)]
pub struct Rootfs {
    path: PathBuf,
    handle: Handle,
    host: HostFiles,
}

impl Rootfs {
    /// Opens the rootfs directory at `path` (where a bind mount is, its top mount).
    pub fn open(sys: &dyn Syscall, path: &Path) -> Result<Rootfs> {
        Ok(Rootfs {
            path: path.to_path_buf(),
            handle: sys.open_path(path)?,
            host: HostFiles::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Host files the setup reaches (the rootfs, bind mount sources), opened ahead of time by a
/// caller about to lose the right to walk their paths: the init of a new user namespace opens
/// them before it becomes that namespace's root, a host uid that may not traverse the private
/// directories above them. It then reaches them only through these handles (runc opens bind
/// sources the same way). A path not opened ahead is opened when it is needed.
#[derive(Debug, Default)]
pub struct HostFiles {
    opened: BTreeMap<PathBuf, Handle>,
}

impl HostFiles {
    /// Opens the rootfs at `rootfs` and the source of every bind mount in `mounts`.
    pub fn open_ahead(
        sys: &dyn Syscall,
        rootfs: &Path,
        mounts: &[Mount],
        bundle: &Path,
    ) -> Result<HostFiles> {
        let mut opened = BTreeMap::new();
        opened.insert(rootfs.to_path_buf(), sys.open_path(rootfs)?);
        for mount in mounts.iter().filter(|m| is_bind_mount(m)) {
            let source = bind_source(mount, bundle)?;
            if let std::collections::btree_map::Entry::Vacant(slot) = opened.entry(source) {
                let handle = sys.open_path(slot.key())?;
                slot.insert(handle);
            }
        }
        Ok(HostFiles { opened })
    }

    /// The handle opened ahead for `path`, or `path` opened now.
    fn open(&self, sys: &dyn Syscall, path: &Path) -> Result<Handle> {
        match self.opened.get(path) {
            Some(handle) => handle.try_clone(),
            None => sys.open_path(path),
        }
    }
}

/// Bind-mounts the rootfs at `path` onto itself so it is a mount point pivot_root can use, and
/// opens the new mount; `extra` flags (`MS_NODEV`) are added to that mount.
pub fn bind_rootfs(
    sys: &dyn Syscall,
    host: HostFiles,
    path: &Path,
    extra: MsFlags,
) -> Result<Rootfs> {
    let handle = sys.bind_onto_itself(&host.open(sys, path)?)?;
    if !extra.is_empty() {
        add_mount_flags(sys, &handle, extra)?;
    }
    Ok(Rootfs {
        path: path.to_path_buf(),
        handle,
        host,
    })
}

/// Remounts the bind mount `target` with `flags` added to those it has (see
/// [`Syscall::mount_flags_of`]).
fn add_mount_flags(sys: &dyn Syscall, target: &Handle, flags: MsFlags) -> Result<()> {
    let kept = sys.mount_flags_of(target)?;
    sys.mount_on(
        None,
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | kept | flags,
        None,
    )
}

/// A path inside the rootfs: the directory that holds it (opened, created where missing) and
/// its name there. Reopening by name reaches whatever has been mounted on it since.
struct Entry {
    dir: Handle,
    name: OsString,
}

impl Entry {
    /// Resolves `path` as if the rootfs were `/` (symlinks followed inside it by
    /// [`secure_join`]), then walks to its directory one component at a time without following
    /// symlinks, creating missing directories. A component swapped for a symlink since it was
    /// resolved fails the walk; it can never lead outside the rootfs.
    fn locate(sys: &dyn Syscall, rootfs: &Rootfs, path: &Path) -> Result<Entry> {
        let resolved = secure_join(sys, rootfs, path)?;
        let mut parts: Vec<OsString> = resolved
            .strip_prefix(&rootfs.path)
            .unwrap_or(Path::new(""))
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        let name = parts.pop().ok_or_else(|| {
            Error::InvalidSpec(format!(
                "{} is the rootfs itself; mount or create things inside it",
                path.display()
            ))
        })?;
        Ok(Entry {
            dir: open_dirs(sys, rootfs, &parts)?,
            name,
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    /// The entry now, without following a symlink; `None` when there is none.
    fn open(&self, sys: &dyn Syscall) -> Result<Option<Handle>> {
        sys.open_at(&self.dir, &self.name)
    }

    /// The entry, which must exist and be `expected` (a symlink never is).
    fn open_existing(&self, sys: &dyn Syscall, expected: FileKind) -> Result<Handle> {
        let handle = self.open(sys)?.ok_or_else(|| Error::RootfsEntry {
            path: self.path(),
            expected: kind_name(expected),
        })?;
        check_kind(sys, &handle, expected)?;
        Ok(handle)
    }

    /// Creates the entry as a directory or an empty file unless something is there, and opens
    /// it as a mount point of that kind.
    fn mount_point(&self, sys: &dyn Syscall, kind: FileKind) -> Result<Handle> {
        if self.open(sys)?.is_none() {
            match kind {
                FileKind::Directory => sys.mkdir_at(&self.dir, &self.name)?,
                _ => sys.create_file_at(&self.dir, &self.name)?,
            }
        }
        self.open_existing(sys, kind)
    }
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Other => "file",
    }
}

/// Fails unless `handle` is `expected`; any non-directory counts as a file.
fn check_kind(sys: &dyn Syscall, handle: &Handle, expected: FileKind) -> Result<()> {
    let actual = sys.kind_of(handle)?;
    let matches = match expected {
        FileKind::Directory => actual == FileKind::Directory,
        _ => actual == FileKind::Other,
    };
    if matches {
        Ok(())
    } else {
        Err(Error::RootfsEntry {
            path: handle.path().to_path_buf(),
            expected: kind_name(expected),
        })
    }
}

/// Opens (creating what is missing) the directory `parts` below the rootfs, one component at a
/// time, never following a symlink.
fn open_dirs(sys: &dyn Syscall, rootfs: &Rootfs, parts: &[OsString]) -> Result<Handle> {
    let mut dir = rootfs.handle.try_clone()?;
    for name in parts {
        dir = Entry {
            dir,
            name: name.clone(),
        }
        .mount_point(sys, FileKind::Directory)?;
    }
    Ok(dir)
}

/// Creates the directory `path` inside the rootfs (and its parents) as [`Entry::locate`]
/// resolves it, and opens it.
pub fn create_dirs(sys: &dyn Syscall, rootfs: &Rootfs, path: &Path) -> Result<Handle> {
    Entry::locate(sys, rootfs, path)?.mount_point(sys, FileKind::Directory)
}

/// Mounts every spec mount in order under the rootfs.
pub fn mount_all(
    sys: &dyn Syscall,
    rootfs: &Rootfs,
    mounts: &[Mount],
    ctx: &RootfsContext,
) -> Result<()> {
    for mount in mounts {
        mount_one(sys, rootfs, mount, ctx)?;
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, rootfs: &Rootfs, mount: &Mount, ctx: &RootfsContext) -> Result<()> {
    let options = parse_mount_options(mount.options().as_deref().unwrap_or_default());
    let fstype = mount.typ().as_deref().unwrap_or("none");
    let entry = Entry::locate(sys, rootfs, mount.destination())?;
    let data = (!options.data.is_empty()).then_some(options.data.as_str());

    if is_bind_mount(mount) {
        let source = rootfs.host.open(sys, &bind_source(mount, &ctx.bundle)?)?;
        let kind = match sys.kind_of(&source)? {
            FileKind::Directory => FileKind::Directory,
            _ => FileKind::Other,
        };
        let target = entry.mount_point(sys, kind)?;
        sys.bind_on(&source, &target, options.flags.contains(MsFlags::MS_REC))?;
        let remount = options.remount_flags();
        if !remount.is_empty() {
            let mounted = entry.open_existing(sys, kind)?;
            let flags = remount | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
            sys.mount_on(None, &mounted, None, flags, None)?;
        }
    } else if fstype == "cgroup" || fstype == "cgroup2" {
        mount_cgroups(sys, &entry, options.flags, ctx)?;
    } else {
        let target = entry.mount_point(sys, FileKind::Directory)?;
        let source = mount
            .source()
            .clone()
            .unwrap_or_else(|| PathBuf::from(fstype));
        let mounted = sys.mount_on(Some(&source), &target, Some(fstype), options.flags, data);
        match mounted {
            // Without its own network namespace a container may not mount sysfs; like runc, show
            // the host's read-only instead.
            Err(_) if fstype == "sysfs" => {
                sys.bind_on(&sys.open_path(Path::new("/sys"))?, &target, true)?;
                let mounted = entry.open_existing(sys, FileKind::Directory)?;
                let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                sys.mount_on(None, &mounted, None, ro | options.flags, None)?;
            }
            other => other?,
        }
    }
    if !options.propagation.is_empty() {
        let mounted = entry.open(sys)?.ok_or_else(|| Error::RootfsEntry {
            path: entry.path(),
            expected: "mount point",
        })?;
        sys.mount_on(None, &mounted, None, options.propagation, None)?;
    }
    Ok(())
}

pub(crate) fn is_bind_mount(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || parse_mount_options(mount.options().as_deref().unwrap_or_default()).is_bind()
}

pub(crate) fn bind_source(mount: &Mount, bundle: &Path) -> Result<PathBuf> {
    let source = mount.source().as_ref().ok_or_else(|| {
        Error::InvalidSpec(format!(
            "bind mount on {} has no source",
            mount.destination().display()
        ))
    })?;
    Ok(if source.is_absolute() {
        source.clone()
    } else {
        bundle.join(source)
    })
}

/// `/sys/fs/cgroup`: a fresh view inside a cgroup namespace, else the container's own cgroup
/// directories bind-mounted, so the container never sees its siblings.
fn mount_cgroups(
    sys: &dyn Syscall,
    entry: &Entry,
    flags: MsFlags,
    ctx: &RootfsContext,
) -> Result<()> {
    let dest = entry.mount_point(sys, FileKind::Directory)?;
    let common = flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let readonly = flags.contains(MsFlags::MS_RDONLY);
    let is_v2 = ctx.cgroup_mounts.iter().any(|m| m.subdir.is_empty());
    // v2 goes on the destination itself; v1 gets a tmpfs there with a directory per hierarchy.
    let base = if is_v2 {
        dest
    } else {
        sys.mount_on(
            Some(Path::new("tmpfs")),
            &dest,
            Some("tmpfs"),
            common,
            Some("mode=755"),
        )?;
        entry.open_existing(sys, FileKind::Directory)?
    };
    for cgroup in &ctx.cgroup_mounts {
        let place = if cgroup.subdir.is_empty() {
            None
        } else {
            Some(Entry {
                dir: base.try_clone()?,
                name: OsString::from(&cgroup.subdir),
            })
        };
        let target = match &place {
            Some(place) => place.mount_point(sys, FileKind::Directory)?,
            None => base.try_clone()?,
        };
        let readonly = readonly && !cgroup.writable;
        if ctx.in_cgroup_namespace {
            let data = (!cgroup.data.is_empty()).then_some(cgroup.data.as_str());
            let fsflags = common
                | if readonly {
                    MsFlags::MS_RDONLY
                } else {
                    MsFlags::empty()
                };
            sys.mount_on(
                Some(Path::new(cgroup.fstype)),
                &target,
                Some(cgroup.fstype),
                fsflags,
                data,
            )?;
        } else {
            sys.bind_on(&sys.open_path(&cgroup.host_path)?, &target, false)?;
            let mounted = place.as_ref().unwrap_or(entry);
            let mut remount = common | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
            if readonly {
                remount |= MsFlags::MS_RDONLY;
            }
            let mounted = mounted.open_existing(sys, FileKind::Directory)?;
            sys.mount_on(None, &mounted, None, remount, None)?;
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) && !is_v2 {
        let remount = common | MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT;
        sys.mount_on(None, &base, None, remount, Some("mode=755"))?;
    }
    Ok(())
}

/// The device nodes every container gets (the runtime spec's default devices).
pub fn default_devices() -> Vec<LinuxDevice> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| {
        let mut device = LinuxDevice::default();
        device.set_path(PathBuf::from(path));
        device.set_typ(LinuxDeviceType::C);
        device.set_major(major);
        device.set_minor(minor);
        device.set_file_mode(Some(0o666));
        device.set_uid(Some(0));
        device.set_gid(Some(0));
        device
    })
    .collect()
}

/// Creates the device nodes in the rootfs. In a user namespace mknod is not allowed, so the
/// host's node is bind-mounted onto an empty file instead (as runc does).
pub fn create_devices(
    sys: &dyn Syscall,
    rootfs: &Rootfs,
    devices: &[LinuxDevice],
    in_user_namespace: bool,
) -> Result<()> {
    for device in devices {
        let entry = Entry::locate(sys, rootfs, device.path())?;
        if in_user_namespace {
            let target = entry.mount_point(sys, FileKind::Other)?;
            sys.bind_on(&sys.open_path(device.path())?, &target, false)?;
            continue;
        }
        let kind = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::InvalidSpec(format!(
                    "device {} has type \"a\", which only device cgroup rules may use",
                    device.path().display()
                )))
            }
        };
        let (major, minor) = (
            device_number(device.major())?,
            device_number(device.minor())?,
        );
        let mode = Mode::from_bits_truncate(device.file_mode().unwrap_or(0o666));
        if let Some(existing) = entry.open(sys)? {
            // A file the image left there would make mknod fail; the spec's device wins.
            check_kind(sys, &existing, FileKind::Other)?;
            sys.remove_at(&entry.dir, &entry.name)?;
        }
        sys.mknod_at(
            &entry.dir,
            &entry.name,
            kind,
            mode,
            nix::sys::stat::makedev(major, minor),
        )?;
        sys.chown_at(
            &entry.dir,
            &entry.name,
            device.uid().unwrap_or(0),
            device.gid().unwrap_or(0),
        )?;
    }
    Ok(())
}

fn device_number(value: i64) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| Error::InvalidSpec(format!("device number {value} is negative")))
}

/// `/dev/fd`, `/dev/stdin`, ... and `/dev/ptmx` pointing into the container's devpts.
pub fn create_dev_symlinks(sys: &dyn Syscall, rootfs: &Rootfs) -> Result<()> {
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    let dev = create_dirs(sys, rootfs, Path::new("/dev"))?;
    for (target, name) in links {
        let name = OsStr::new(name);
        let Some(existing) = sys.open_at(&dev, name)? else {
            sys.symlink_at(Path::new(target), &dev, name)?;
            continue;
        };
        // An image's own /dev/ptmx node would bypass the container's devpts instance.
        if name == "ptmx" && sys.kind_of(&existing)? == FileKind::Other {
            let pts = Entry {
                dir: dev.try_clone()?,
                name: OsString::from("pts"),
            }
            .open_existing(sys, FileKind::Directory)?;
            let ptmx = Entry {
                dir: pts,
                name: OsString::from("ptmx"),
            }
            .open_existing(sys, FileKind::Other)?;
            sys.bind_on(&ptmx, &existing, false)?;
        }
    }
    Ok(())
}

/// Moves the container's root to `rootfs` and detaches the host's tree from the container.
pub fn pivot(sys: &dyn Syscall, rootfs: &Rootfs) -> Result<()> {
    sys.chdir_to(&rootfs.handle)?;
    // pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then drops
    // it, without needing a directory inside the rootfs to park it in.
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))
}

/// Applies the spec's rootfs propagation to the new root, once pivot_root is done.
pub fn finish_root_propagation(sys: &dyn Syscall, rootfs_propagation: Option<&str>) -> Result<()> {
    match rootfs_propagation.and_then(propagation_flags) {
        Some(flags) => sys.mount(None, Path::new("/"), None, flags, None),
        None => Ok(()),
    }
}

/// Hides each existing path: directories under an empty read-only tmpfs, files under /dev/null.
pub fn mask_paths(sys: &dyn Syscall, paths: &[String]) -> Result<()> {
    for path in paths {
        let path = Path::new(path);
        match sys.file_kind(path) {
            None => {}
            Some(FileKind::Directory) => sys.mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?,
            Some(_) => sys.mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
        }
    }
    Ok(())
}

/// Makes each existing path read-only with a bind mount onto itself.
pub fn readonly_paths(sys: &dyn Syscall, paths: &[String]) -> Result<()> {
    for path in paths {
        let path = Path::new(path);
        if sys.file_kind(path).is_none() {
            continue;
        }
        remount_readonly(sys, path, MsFlags::MS_REC)?;
    }
    Ok(())
}

/// Makes `path` a read-only bind of itself (`extra` adds flags such as MS_REC).
pub fn remount_readonly(sys: &dyn Syscall, path: &Path, extra: MsFlags) -> Result<()> {
    sys.mount(Some(path), path, None, MsFlags::MS_BIND | extra, None)?;
    sys.mount(
        None,
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra,
        None,
    )
}

/// Writes each sysctl under `/proc/sys` (keys use dots: `net.ipv4.ip_forward`).
pub fn apply_sysctls<'a>(
    sys: &dyn Syscall,
    sysctls: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<()> {
    for (key, value) in sysctls {
        if key.contains("..") || key.contains('/') {
            return Err(Error::InvalidSpec(format!("invalid sysctl name {key:?}")));
        }
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        sys.write_file(&path, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::{Call, RecordingSyscall};
    use oci_spec::runtime::MountBuilder;

    /// The rootfs `/r` of the fake kernel.
    fn root(sys: &RecordingSyscall) -> Rootfs {
        Rootfs::open(sys, Path::new("/r")).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(strings(options))
            .build()
            .unwrap()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let parsed = parse_mount_options(&strings(&[
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rprivate",
            "ro",
            "rw",
        ]));
        assert_eq!(parsed.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(parsed.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(parsed.data, "mode=755,size=65536k");
    }

    #[test]
    fn rbind_sets_bind_and_recursive() {
        let parsed = parse_mount_options(&strings(&["rbind", "ro"]));
        assert!(parsed.is_bind());
        assert_eq!(parsed.remount_flags(), MsFlags::MS_RDONLY);
    }

    #[test]
    fn secure_join_keeps_symlinks_inside_the_root() {
        let sys = RecordingSyscall::new()
            .with_symlink("/r/evil", "/")
            .with_symlink("/r/up", "../../../etc")
            .with_symlink("/r/lib", "usr/lib");
        let root = root(&sys);
        assert_eq!(
            secure_join(&sys, &root, Path::new("/evil/proc")).unwrap(),
            PathBuf::from("/r/proc")
        );
        assert_eq!(
            secure_join(&sys, &root, Path::new("/up/passwd")).unwrap(),
            PathBuf::from("/r/etc/passwd")
        );
        assert_eq!(
            secure_join(&sys, &root, Path::new("/lib/x")).unwrap(),
            PathBuf::from("/r/usr/lib/x")
        );
        assert_eq!(
            secure_join(&sys, &root, Path::new("../../x")).unwrap(),
            PathBuf::from("/r/x")
        );
    }

    #[test]
    fn secure_join_stops_symlink_loops() {
        let sys = RecordingSyscall::new()
            .with_symlink("/r/a", "/b")
            .with_symlink("/r/b", "/a");
        let err = secure_join(&sys, &root(&sys), Path::new("/a/x")).unwrap_err();
        assert!(err.to_string().contains("too many symlinks"), "{err}");
    }

    #[test]
    fn mounts_are_made_in_spec_order_with_flags_and_data() {
        let sys = RecordingSyscall::new();
        let mounts = [
            mount("/proc", "proc", "proc", &[]),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755"],
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &["newinstance", "ptmxmode=0666"],
            ),
        ];
        mount_all(&sys, &root(&sys), &mounts, &RootfsContext::default()).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&Call::Mkdir("/r/dev".into())));
        assert!(calls.contains(&Call::Mkdir("/r/dev/pts".into())));
        let made = sys.mounts();
        let targets: Vec<_> = made.iter().map(|m| m.0.clone()).collect();
        assert_eq!(
            targets,
            [
                PathBuf::from("/r/proc"),
                "/r/dev".into(),
                "/r/dev/pts".into()
            ]
        );
        assert_eq!(made[1].2, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert!(calls.iter().any(|c| matches!(c,
            Call::Mount { target, data: Some(d), .. } if target == Path::new("/r/dev/pts") && d == "newinstance,ptmxmode=0666")));
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_fails_the_mount_and_creates_nothing() {
        // Resolved as a directory, opened as a symlink: the CVE-2021-30465 race, lost by the
        // racer at the worst moment for us.
        let sys = RecordingSyscall::new().with_swapped_directory("/r/racy");
        let mounts = [mount("/racy/m0", "tmpfs", "tmpfs", &[])];
        let err = mount_all(&sys, &root(&sys), &mounts, &RootfsContext::default()).unwrap_err();
        assert!(
            matches!(&err, Error::RootfsEntry { path, .. } if path == Path::new("/r/racy")),
            "{err}"
        );
        assert!(sys.mounts().is_empty());
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Mkdir(_))));
    }

    #[test]
    fn mount_points_behind_symlinks_are_made_inside_the_root() {
        let sys = RecordingSyscall::new()
            .with_symlink("/r/evil", "/")
            .with_symlink("/r/up", "../../../var");
        let mounts = [
            mount("/evil/data", "tmpfs", "tmpfs", &[]),
            mount("/up/lib", "tmpfs", "tmpfs", &[]),
        ];
        mount_all(&sys, &root(&sys), &mounts, &RootfsContext::default()).unwrap();
        let targets: Vec<_> = sys.mounts().into_iter().map(|m| m.0).collect();
        assert_eq!(targets, [PathBuf::from("/r/data"), "/r/var/lib".into()]);
        assert_eq!(
            sys.calls()
                .into_iter()
                .filter(|c| matches!(c, Call::Mkdir(_)))
                .collect::<Vec<_>>(),
            [
                Call::Mkdir("/r/data".into()),
                Call::Mkdir("/r/var".into()),
                Call::Mkdir("/r/var/lib".into())
            ]
        );
    }

    #[test]
    fn the_rootfs_bind_gets_nodev_added_to_the_flags_it_has() {
        let sys = RecordingSyscall::new().with_mount_flags(MsFlags::MS_NOSUID);
        let rootfs = bind_rootfs(
            &sys,
            HostFiles::default(),
            Path::new("/r"),
            MsFlags::MS_NODEV,
        )
        .unwrap();
        assert_eq!(rootfs.path(), Path::new("/r"));
        assert_eq!(
            sys.mounts(),
            [
                ("/r".into(), None, MsFlags::MS_BIND | MsFlags::MS_REC),
                (
                    "/r".into(),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
                ),
            ]
        );
        let sys = RecordingSyscall::new();
        bind_rootfs(
            &sys,
            HostFiles::default(),
            Path::new("/r"),
            MsFlags::empty(),
        )
        .unwrap();
        assert_eq!(sys.mounts().len(), 1, "no remount without extra flags");
    }

    #[test]
    fn a_mount_on_the_rootfs_itself_is_refused() {
        let sys = RecordingSyscall::new();
        let mounts = [mount("/", "tmpfs", "tmpfs", &[])];
        let err = mount_all(&sys, &root(&sys), &mounts, &RootfsContext::default()).unwrap_err();
        assert!(err.to_string().contains("rootfs itself"), "{err}");
    }

    #[test]
    fn a_file_where_a_device_goes_is_replaced_and_a_directory_refused() {
        let sys = RecordingSyscall::new()
            .with_file("/r/dev", FileKind::Directory)
            .with_file("/r/dev/null", FileKind::Other);
        create_devices(&sys, &root(&sys), &default_devices()[..1], false).unwrap();
        assert_eq!(
            sys.calls()[..2],
            [
                Call::Remove("/r/dev/null".into()),
                Call::Mknod {
                    path: "/r/dev/null".into(),
                    kind: SFlag::S_IFCHR,
                    dev: nix::sys::stat::makedev(1, 3)
                }
            ]
        );
        let sys = RecordingSyscall::new().with_file("/r/dev/null", FileKind::Directory);
        let err = create_devices(&sys, &root(&sys), &default_devices()[..1], false).unwrap_err();
        assert!(matches!(err, Error::RootfsEntry { .. }), "{err}");
    }

    #[test]
    fn readonly_bind_mount_is_remounted_and_file_sources_get_file_mount_points() {
        let sys = RecordingSyscall::new().with_file("/host/resolv.conf", FileKind::Other);
        let mounts = [mount(
            "/etc/resolv.conf",
            "bind",
            "/host/resolv.conf",
            &["rbind", "ro", "rprivate"],
        )];
        mount_all(&sys, &root(&sys), &mounts, &RootfsContext::default()).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&Call::Touch("/r/etc/resolv.conf".into())));
        let made = sys.mounts();
        assert_eq!(made.len(), 3);
        assert_eq!(made[0].2, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(
            made[1].2,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
        );
        assert_eq!(made[2].2, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    }

    #[test]
    fn relative_bind_sources_are_relative_to_the_bundle() {
        let sys = RecordingSyscall::new().with_file("/bundle/data", FileKind::Directory);
        let ctx = RootfsContext {
            bundle: "/bundle".into(),
            ..Default::default()
        };
        mount_all(
            &sys,
            &root(&sys),
            &[mount("/data", "none", "data", &["bind"])],
            &ctx,
        )
        .unwrap();
        assert!(sys.calls().iter().any(|c| matches!(c,
            Call::Mount { source: Some(s), target, .. } if s == Path::new("/bundle/data") && target == Path::new("/r/data"))));
    }

    #[test]
    fn a_failing_mount_stops_the_setup_with_the_target_named() {
        let sys = RecordingSyscall::new().with_failing_mount("/r/proc");
        let mounts = [
            mount("/proc", "proc", "proc", &[]),
            mount("/dev", "tmpfs", "tmpfs", &[]),
        ];
        let err = mount_all(&sys, &root(&sys), &mounts, &RootfsContext::default()).unwrap_err();
        assert!(err.to_string().contains("/r/proc"), "{err}");
        assert_eq!(sys.mounts().len(), 0, "later mounts must not run");
    }

    #[test]
    fn v1_cgroup_mount_in_a_cgroup_namespace_mounts_each_hierarchy() {
        let sys = RecordingSyscall::new();
        let ctx = RootfsContext {
            in_cgroup_namespace: true,
            cgroup_mounts: vec![
                CgroupMount {
                    subdir: "memory".into(),
                    fstype: "cgroup",
                    data: "memory".into(),
                    host_path: "/sys/fs/cgroup/memory/c".into(),
                    writable: false,
                },
                CgroupMount {
                    subdir: "systemd".into(),
                    fstype: "cgroup",
                    data: "name=systemd".into(),
                    host_path: "/sys/fs/cgroup/systemd/c".into(),
                    writable: true,
                },
            ],
            ..Default::default()
        };
        let mounts = [mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "ro"],
        )];
        mount_all(&sys, &root(&sys), &mounts, &ctx).unwrap();
        let made = sys.mounts();
        assert_eq!(
            made[0],
            (
                "/r/sys/fs/cgroup".into(),
                Some("tmpfs".into()),
                MsFlags::MS_NOSUID
            )
        );
        assert_eq!(
            made[1],
            (
                "/r/sys/fs/cgroup/memory".into(),
                Some("cgroup".into()),
                MsFlags::MS_NOSUID | MsFlags::MS_RDONLY
            )
        );
        assert_eq!(
            made[2],
            (
                "/r/sys/fs/cgroup/systemd".into(),
                Some("cgroup".into()),
                MsFlags::MS_NOSUID
            ),
            "the delegated hierarchy is writable in a read-only cgroup mount"
        );
        assert!(
            made[3].2.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY),
            "tmpfs made read-only last"
        );
    }

    #[test]
    fn cgroup_mount_without_namespace_binds_the_containers_own_cgroup() {
        let sys = RecordingSyscall::new();
        let ctx = RootfsContext {
            cgroup_mounts: vec![CgroupMount {
                subdir: String::new(),
                fstype: "cgroup2",
                data: String::new(),
                host_path: "/sys/fs/cgroup/corral/c".into(),
                writable: false,
            }],
            ..Default::default()
        };
        mount_all(
            &sys,
            &root(&sys),
            &[mount("/sys/fs/cgroup", "cgroup", "cgroup", &[])],
            &ctx,
        )
        .unwrap();
        assert!(sys.calls().iter().any(|c| matches!(c,
            Call::Mount { source: Some(s), target, flags, .. } if s == Path::new("/sys/fs/cgroup/corral/c") && target == Path::new("/r/sys/fs/cgroup") && *flags == MsFlags::MS_BIND)));
    }

    #[test]
    fn devices_are_created_with_mknod_or_bind_mounted_in_a_user_namespace() {
        let sys = RecordingSyscall::new();
        create_devices(&sys, &root(&sys), &default_devices(), false).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&Call::Mknod {
            path: "/r/dev/null".into(),
            kind: SFlag::S_IFCHR,
            dev: nix::sys::stat::makedev(1, 3)
        }));
        assert!(calls.contains(&Call::Chown("/r/dev/tty".into(), 0, 0)));

        let sys = RecordingSyscall::new();
        create_devices(&sys, &root(&sys), &default_devices(), true).unwrap();
        assert!(sys.calls().iter().all(|c| !matches!(c, Call::Mknod { .. })));
        assert!(sys.calls().iter().any(|c| matches!(c,
            Call::Mount { source: Some(s), target, .. } if s == Path::new("/dev/zero") && target == Path::new("/r/dev/zero"))));
    }

    #[test]
    fn dev_symlinks_point_into_proc_and_devpts() {
        let sys = RecordingSyscall::new().with_file("/r/dev", FileKind::Directory);
        create_dev_symlinks(&sys, &root(&sys)).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&Call::Symlink {
            target: "/proc/self/fd".into(),
            link: "/r/dev/fd".into()
        }));
        assert!(calls.contains(&Call::Symlink {
            target: "pts/ptmx".into(),
            link: "/r/dev/ptmx".into()
        }));
    }

    #[test]
    fn masked_paths_hide_files_and_directories_and_skip_missing_ones() {
        let sys = RecordingSyscall::new()
            .with_file("/proc/kcore", FileKind::Other)
            .with_file("/proc/acpi", FileKind::Directory);
        mask_paths(
            &sys,
            &strings(&["/proc/kcore", "/proc/acpi", "/proc/missing"]),
        )
        .unwrap();
        let made = sys.mounts();
        assert_eq!(made.len(), 2);
        assert_eq!(made[0], ("/proc/kcore".into(), None, MsFlags::MS_BIND));
        assert_eq!(
            made[1],
            (
                "/proc/acpi".into(),
                Some("tmpfs".into()),
                MsFlags::MS_RDONLY
            )
        );
    }

    #[test]
    fn readonly_paths_are_bound_then_remounted_read_only() {
        let sys = RecordingSyscall::new().with_file("/proc/sys", FileKind::Directory);
        readonly_paths(&sys, &strings(&["/proc/sys", "/proc/none"])).unwrap();
        let made = sys.mounts();
        assert_eq!(made.len(), 2);
        assert!(made[1].2.contains(MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT));
    }

    #[test]
    fn pivot_detaches_the_old_root() {
        let sys = RecordingSyscall::new();
        pivot(&sys, &root(&sys)).unwrap();
        assert_eq!(
            sys.calls()[..2],
            [Call::Chdir("/r".into()), Call::PivotRoot(".".into())]
        );
        assert!(sys.calls().contains(&Call::Umount(".".into())));
    }

    #[test]
    fn unknown_root_propagation_is_rejected() {
        let err = isolate_mount_tree(&RecordingSyscall::new(), Some("sideways")).unwrap_err();
        assert!(err.to_string().contains("sideways"), "{err}");
    }

    #[test]
    fn sysctls_are_written_under_proc_sys_and_traversal_is_refused() {
        let sys = RecordingSyscall::new();
        let key = "net.ipv4.ip_forward".to_string();
        let value = "1".to_string();
        apply_sysctls(&sys, [(&key, &value)]).unwrap();
        assert_eq!(
            sys.calls(),
            [Call::WriteFile(
                "/proc/sys/net/ipv4/ip_forward".into(),
                "1".into()
            )]
        );
        let bad = "../../etc/passwd".to_string();
        assert!(apply_sysctls(&sys, [(&bad, &value)]).is_err());
    }
}
