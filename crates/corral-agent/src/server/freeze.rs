//! `fsfreeze`/`thaw`: the guest's writable filesystems frozen (FIFREEZE) so the host can take a
//! consistent snapshot of its disks, and thawed (FITHAW) afterwards.
//!
//! A freeze left in place hangs every writer in the guest, so it never outlives its purpose:
//! it is thawed after [`AUTO_THAW`] when no thaw came, and when the agent exits. The kernel
//! calls are behind [`Freezer`] so the bookkeeping is tested without root.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a freeze lasts when the host never thaws.
pub const AUTO_THAW: Duration = Duration::from_secs(60);

/// Filesystem types that are never frozen: virtual ones (nothing on a disk to make
/// consistent), and ones whose kernel code has no freeze.
const SKIPPED_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nfs",
    "nfs4",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "virtiofs",
    "9p",
];
/// Type prefixes skipped as [`SKIPPED_TYPES`] are (`cgroup`, `cgroup2`, `fuse.sshfs`, ...).
const SKIPPED_TYPE_PREFIXES: &[&str] = &["cgroup", "fuse"];

/// The kernel calls a freeze makes.
pub trait Freezer: Send + Sync {
    /// This process's `/proc/self/mountinfo`.
    fn mountinfo(&self) -> std::io::Result<String>;
    fn freeze(&self, mountpoint: &Path) -> std::io::Result<()>;
    fn thaw(&self, mountpoint: &Path) -> std::io::Result<()>;
}

/// The real kernel.
pub struct Kernel;

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

impl Freezer for Kernel {
    fn mountinfo(&self) -> std::io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }

    fn freeze(&self, mountpoint: &Path) -> std::io::Result<()> {
        let dir = File::open(mountpoint)?;
        let mut unused: libc::c_int = 0;
        // SAFETY: FIFREEZE on an open descriptor; the argument is an int the kernel ignores.
        unsafe { fifreeze(dir.as_raw_fd(), &mut unused) }?;
        Ok(())
    }

    fn thaw(&self, mountpoint: &Path) -> std::io::Result<()> {
        let dir = File::open(mountpoint)?;
        let mut unused: libc::c_int = 0;
        // SAFETY: FITHAW on an open descriptor; the argument is an int the kernel ignores.
        unsafe { fithaw(dir.as_raw_fd(), &mut unused) }?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("the filesystems are frozen already; thaw them first")]
    AlreadyFrozen,
    #[error("cannot read /proc/self/mountinfo")]
    Mountinfo(#[source] std::io::Error),
    #[error("cannot freeze {} (the ones frozen before it were thawed)", .mountpoint.display())]
    Freeze {
        mountpoint: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot thaw {}", .mountpoint.display())]
    Thaw {
        mountpoint: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The agent's freeze: what is frozen, and the timer that thaws it.
pub struct Freezes {
    freezer: Box<dyn Freezer>,
    auto_thaw: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Frozen mountpoints, in the order they were frozen.
    frozen: Vec<PathBuf>,
    /// Counts freezes, so a timer thaws only the freeze that started it.
    generation: u64,
}

impl Freezes {
    pub fn new(freezer: Box<dyn Freezer>, auto_thaw: Duration) -> Arc<Self> {
        Arc::new(Self {
            freezer,
            auto_thaw,
            state: Mutex::default(),
        })
    }

    /// Freezes every freezable filesystem in mount order; returns their mountpoints. A failure
    /// part way thaws what was frozen.
    pub fn freeze(self: &Arc<Self>) -> Result<Vec<PathBuf>, FreezeError> {
        let mut state = self.lock();
        if !state.frozen.is_empty() {
            return Err(FreezeError::AlreadyFrozen);
        }
        let mountinfo = self.freezer.mountinfo().map_err(FreezeError::Mountinfo)?;
        for mountpoint in freezable(&mountinfo) {
            match self.freezer.freeze(&mountpoint) {
                Ok(()) => {}
                // A filesystem without freeze support (zfs, for one): nothing to hold still,
                // as qemu-ga treats it.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    tracing::info!("{} cannot be frozen: skipped", mountpoint.display());
                    continue;
                }
                Err(source) => {
                    if let Err(err) = self.thaw_locked(&mut state) {
                        tracing::warn!("{err}");
                    }
                    return Err(FreezeError::Freeze { mountpoint, source });
                }
            }
            state.frozen.push(mountpoint);
        }
        state.generation += 1;
        let generation = state.generation;
        let frozen = state.frozen.clone();
        drop(state);
        let this = Arc::clone(self);
        std::thread::spawn(move || {
            std::thread::sleep(this.auto_thaw);
            let mut state = this.lock();
            if state.generation == generation && !state.frozen.is_empty() {
                tracing::warn!(
                    "no thaw came within {} s: thawing",
                    this.auto_thaw.as_secs_f64()
                );
                if let Err(err) = this.thaw_locked(&mut state) {
                    tracing::warn!("{err}");
                }
            }
        });
        Ok(frozen)
    }

    /// Thaws what is frozen, in reverse order; returns the mountpoints (none when nothing was
    /// frozen, as after an automatic thaw).
    pub fn thaw(&self) -> Result<Vec<PathBuf>, FreezeError> {
        self.thaw_locked(&mut self.lock())
    }

    /// Thaws all it can; the first failure is returned after the others were tried.
    fn thaw_locked(&self, state: &mut State) -> Result<Vec<PathBuf>, FreezeError> {
        let mut first_error = None;
        let thawed: Vec<PathBuf> = state.frozen.drain(..).rev().collect();
        for mountpoint in &thawed {
            if let Err(source) = self.freezer.thaw(mountpoint) {
                first_error.get_or_insert(FreezeError::Thaw {
                    mountpoint: mountpoint.clone(),
                    source,
                });
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(thawed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic: `frozen` is only pushed and drained.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The mountpoints to freeze, in mount order: writable, of a type that can be frozen, and each
/// filesystem once (a bind mount of a filesystem already listed is skipped; freezing it twice
/// fails).
pub fn freezable(mountinfo: &str) -> Vec<PathBuf> {
    let mut devices = Vec::new();
    let mut mountpoints = Vec::new();
    for line in mountinfo.lines() {
        let Some(mount) = parse_line(line) else {
            continue;
        };
        let skipped_type = SKIPPED_TYPES.contains(&mount.fstype)
            || SKIPPED_TYPE_PREFIXES
                .iter()
                .any(|prefix| mount.fstype.starts_with(prefix));
        if skipped_type || mount.read_only || devices.contains(&mount.device) {
            continue;
        }
        devices.push(mount.device);
        mountpoints.push(mount.mountpoint);
    }
    mountpoints
}

struct Mount<'a> {
    device: &'a str,
    mountpoint: PathBuf,
    fstype: &'a str,
    read_only: bool,
}

/// One line of mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE
/// SOURCE SUPER_OPTIONS`.
fn parse_line(line: &str) -> Option<Mount<'_>> {
    let (mount_part, super_part) = line.split_once(" - ")?;
    let fields: Vec<&str> = mount_part.split(' ').collect();
    let [_, _, device, _, mountpoint, options, ..] = fields[..] else {
        return None;
    };
    let mut super_fields = super_part.split(' ');
    let fstype = super_fields.next()?;
    let super_options = super_fields.nth(1).unwrap_or("");
    let has_ro = |options: &str| options.split(',').any(|option| option == "ro");
    Some(Mount {
        device,
        mountpoint: PathBuf::from(unescape(mountpoint)),
        fstype,
        read_only: has_ro(options) || has_ro(super_options),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .map(|d| (d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
26 22 0:5 / /dev rw,nosuid,relatime shared:8 - devtmpfs udev rw,size=4000k
27 26 0:24 / /dev/pts rw,nosuid,noexec,relatime shared:9 - devpts devpts rw,gid=5,mode=620
28 22 0:25 / /run rw,nosuid,nodev,noexec,relatime shared:10 - tmpfs tmpfs rw,size=800k
29 22 253:2 / /boot ro,relatime shared:30 - ext4 /dev/vda2 ro
30 22 253:3 / /srv/my\\040data rw,relatime shared:31 - xfs /dev/vdb rw,attr2
31 22 253:1 /home /home rw,relatime shared:1 - ext4 /dev/vda1 rw
32 22 0:40 / /var/lib/snap rw,relatime - btrfs /dev/vdc rw,space_cache
33 22 0:41 / /mnt/squash ro,relatime - squashfs /dev/loop0 ro
34 22 253:4 / /mnt/readonly-super rw,relatime - ext4 /dev/vdd ro
35 22 0:42 / /mnt/fuse rw,relatime - fuse.sshfs host:/ rw
garbage line
";

    #[test]
    fn writable_disk_filesystems_are_frozen_in_mount_order_once_each() {
        assert_eq!(
            freezable(MOUNTINFO),
            ["/", "/srv/my data", "/var/lib/snap"].map(PathBuf::from)
        );
    }

    /// Records calls; fails the freeze of `fail_at` with `errno`.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        fail_at: Option<(&'static str, i32)>,
    }

    impl Freezer for Arc<Fake> {
        fn mountinfo(&self) -> std::io::Result<String> {
            Ok(MOUNTINFO.to_string())
        }
        fn freeze(&self, mountpoint: &Path) -> std::io::Result<()> {
            if let Some((fail, errno)) = self.fail_at {
                if Path::new(fail) == mountpoint {
                    return Err(std::io::Error::from_raw_os_error(errno));
                }
            }
            self.calls
                .lock()
                .unwrap()
                .push(format!("freeze {}", mountpoint.display()));
            Ok(())
        }
        fn thaw(&self, mountpoint: &Path) -> std::io::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("thaw {}", mountpoint.display()));
            Ok(())
        }
    }

    fn calls(fake: &Fake) -> Vec<String> {
        fake.calls.lock().unwrap().clone()
    }

    #[test]
    fn thaw_undoes_a_freeze_in_reverse_order_and_a_second_freeze_waits_for_it() {
        let fake = Arc::new(Fake::default());
        let freezes = Freezes::new(Box::new(Arc::clone(&fake)), AUTO_THAW);
        assert_eq!(freezes.freeze().unwrap().len(), 3);
        assert!(matches!(freezes.freeze(), Err(FreezeError::AlreadyFrozen)));
        assert_eq!(
            freezes.thaw().unwrap(),
            ["/var/lib/snap", "/srv/my data", "/"].map(PathBuf::from)
        );
        assert_eq!(
            calls(&fake),
            [
                "freeze /",
                "freeze /srv/my data",
                "freeze /var/lib/snap",
                "thaw /var/lib/snap",
                "thaw /srv/my data",
                "thaw /"
            ]
        );
        assert!(freezes.thaw().unwrap().is_empty());
    }

    #[test]
    fn a_freeze_failing_part_way_thaws_what_it_froze() {
        let fake = Arc::new(Fake {
            fail_at: Some(("/var/lib/snap", libc::EBUSY)),
            ..Fake::default()
        });
        let freezes = Freezes::new(Box::new(Arc::clone(&fake)), AUTO_THAW);
        let err = freezes.freeze().unwrap_err();
        assert!(
            matches!(&err, FreezeError::Freeze { mountpoint, .. } if mountpoint == Path::new("/var/lib/snap"))
        );
        assert_eq!(
            calls(&fake),
            [
                "freeze /",
                "freeze /srv/my data",
                "thaw /srv/my data",
                "thaw /"
            ]
        );
        // Nothing is left frozen, so a new freeze may start.
        assert!(freezes.thaw().unwrap().is_empty());
    }

    #[test]
    fn a_filesystem_without_freeze_support_is_skipped() {
        let fake = Arc::new(Fake {
            fail_at: Some(("/srv/my data", libc::EOPNOTSUPP)),
            ..Fake::default()
        });
        let freezes = Freezes::new(Box::new(Arc::clone(&fake)), AUTO_THAW);
        assert_eq!(
            freezes.freeze().unwrap(),
            ["/", "/var/lib/snap"].map(PathBuf::from)
        );
        assert_eq!(freezes.thaw().unwrap().len(), 2);
    }

    #[test]
    fn a_freeze_nobody_thaws_is_thawed_by_its_timer_but_not_a_later_one() {
        let fake = Arc::new(Fake::default());
        let freezes = Freezes::new(Box::new(Arc::clone(&fake)), Duration::from_millis(300));
        freezes.freeze().unwrap();
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(calls(&fake).len(), 6, "{:?}", calls(&fake));
        assert!(freezes.thaw().unwrap().is_empty());

        // A freeze thawed by hand and frozen again is not thawed by the first freeze's timer.
        let freezes = Freezes::new(Box::new(Arc::clone(&fake)), Duration::from_millis(1000));
        freezes.freeze().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        freezes.thaw().unwrap();
        freezes.freeze().unwrap();
        std::thread::sleep(Duration::from_millis(750));
        assert_eq!(calls(&fake).len(), 15, "{:?}", calls(&fake));
        std::thread::sleep(Duration::from_millis(950));
        assert_eq!(calls(&fake).len(), 18, "{:?}", calls(&fake));
    }
}
