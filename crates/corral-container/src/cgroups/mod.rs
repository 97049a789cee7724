//! cgroups v1 and v2 behind one interface.
//!
//! The layout (which hierarchies exist and where they are mounted) is read from
//! `/proc/self/mountinfo`: any v1 hierarchy with a controller means v1 (or hybrid, where a
//! cgroup2 mount exists but holds no controllers); a cgroup2 mount alone means pure v2. Both
//! implementations work on plain paths, so unit tests run them against fixture directories.

mod bpf;
mod devices;
mod v1;
mod v2;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};

pub use v1::V1Cgroup;
pub use v2::V2Cgroup;

use crate::error::{Error, Result};
use crate::rootfs::CgroupMount;

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// Where it is mounted (`/sys/fs/cgroup/memory`).
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point (`/` unless the mount is a bind of a sub-cgroup).
    pub root: PathBuf,
    /// v1 controllers (`cpu`, `cpuacct`) or a named hierarchy (`name=systemd`); empty for v2.
    pub controllers: Vec<String>,
}

/// How cgroups are mounted on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Controllers on v1 hierarchies; `unified` is the cgroup2 mount without controllers of a
    /// hybrid host, where systemd tracks processes (it is told there when a cgroup empties).
    V1 {
        hierarchies: Vec<Hierarchy>,
        #[serde(default)]
        unified: Option<Hierarchy>,
    },
    /// Everything on one cgroup2 hierarchy.
    V2 { hierarchy: Hierarchy },
}

impl Layout {
    /// Reads the layout of the calling process's mount namespace.
    pub fn detect() -> Result<Layout> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Layout::from_mountinfo(&text)
    }

    /// Parses the text of a `mountinfo` file.
    pub fn from_mountinfo(mountinfo: &str) -> Result<Layout> {
        let facts = corral_host::cgroups::CgroupLayout::parse_mountinfo(mountinfo);
        let has_v1_controller = facts.v1.iter().any(|h| h.controllers().next().is_some());
        match (has_v1_controller, facts.v2) {
            (true, unified) => Ok(Layout::V1 {
                unified: unified.map(|v2| Hierarchy {
                    mount_point: v2.mount_point,
                    root: v2.root,
                    controllers: Vec::new(),
                }),
                hierarchies: facts
                    .v1
                    .into_iter()
                    .map(|h| Hierarchy {
                        mount_point: h.mount_point,
                        root: h.root,
                        controllers: h.options,
                    })
                    .collect(),
            }),
            (false, Some(v2)) => Ok(Layout::V2 {
                hierarchy: Hierarchy {
                    mount_point: v2.mount_point,
                    root: v2.root,
                    controllers: Vec::new(),
                },
            }),
            (false, None) => Err(Error::Cgroup(
                "no cgroup filesystem is mounted; mount cgroup2 on /sys/fs/cgroup".into(),
            )),
        }
    }

    /// True on a v1 host without the `name=systemd` hierarchy a system container's init needs.
    fn lacks_systemd_hierarchy(&self) -> bool {
        match self {
            Layout::V1 { hierarchies, .. } => !hierarchies
                .iter()
                .any(|h| h.controllers.iter().any(|c| c == "name=systemd")),
            Layout::V2 { .. } => false,
        }
    }

    /// This layout with a `name=systemd` hierarchy: on a v1 host that has none (an init other
    /// than systemd), corral mounts the named hierarchy at [`SYSTEMD_HIERARCHY_MOUNT`] once,
    /// as LXC does, and it stays for every later container.
    pub fn with_systemd_hierarchy(self) -> Result<Layout> {
        if !self.lacks_systemd_hierarchy() {
            return Ok(self);
        }
        let dir = Path::new(SYSTEMD_HIERARCHY_MOUNT);
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        nix::mount::mount(
            Some("cgroup"),
            dir,
            Some("cgroup"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("none,name=systemd"),
        )
        .map_err(|e| {
            Error::sys(
                format!("mount a name=systemd cgroup hierarchy on {}", dir.display()),
                e,
            )
        })?;
        let layout = Layout::detect()?;
        if layout.lacks_systemd_hierarchy() {
            return Err(Error::Cgroup(format!(
                "the name=systemd hierarchy mounted on {} does not show in /proc/self/mountinfo",
                dir.display()
            )));
        }
        Ok(layout)
    }

    /// Opens the cgroup at `path` (absolute, from the hierarchy root) for this layout.
    pub fn open(&self, path: &Path) -> Box<dyn Cgroup> {
        match self {
            Layout::V1 {
                hierarchies,
                unified,
            } => Box::new(V1Cgroup::new(hierarchies.clone(), unified.clone(), path)),
            Layout::V2 { hierarchy } => Box::new(V2Cgroup::new(hierarchy.clone(), path)),
        }
    }
}

/// Where corral mounts a `name=systemd` hierarchy on a cgroup v1 host that has none.
pub const SYSTEMD_HIERARCHY_MOUNT: &str = "/run/corral-cgroups/systemd";

/// The cgroup path a container uses: the spec's `cgroupsPath` (relative paths are placed under
/// the hierarchy root), or `/corral/<id>`.
pub fn container_cgroup_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let path = match cgroups_path {
        None => return Ok(Path::new("/corral").join(id)),
        Some(path) => path,
    };
    // systemd's "slice:prefix:name" form needs the systemd cgroup driver.
    if !path.is_absolute() && path.to_string_lossy().contains(':') {
        return Err(Error::InvalidSpec(format!(
            "cgroupsPath {} is in systemd's slice:prefix:name form; corral manages cgroupfs paths, so use a path such as /machine/{id} (podman: --cgroup-manager=cgroupfs)",
            path.display()
        )));
    }
    let mut clean = PathBuf::from("/");
    for part in path.components() {
        match part {
            std::path::Component::Normal(name) => clean.push(name),
            std::path::Component::ParentDir => {
                return Err(Error::InvalidSpec(format!(
                    "cgroupsPath {} must not contain '..'",
                    path.display()
                )))
            }
            _ => {}
        }
    }
    if clean == Path::new("/") {
        return Err(Error::InvalidSpec(
            "cgroupsPath must name a cgroup below the root, not the root itself".into(),
        ));
    }
    Ok(clean)
}

/// The spec's device rules followed by the devices every container needs (those runc allows
/// too: the default nodes, ptys, tun) and the spec's own device nodes, so a spec that only says
/// "deny all" (as podman's does) still yields a usable /dev.
pub fn with_default_device_rules(
    resources: &LinuxResources,
    devices: &[LinuxDevice],
) -> LinuxResources {
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(typ));
        rule.set_major(major);
        rule.set_minor(minor);
        rule.set_access(Some(access.to_owned()));
        rule
    };
    let mut rules = resources.devices().clone().unwrap_or_default();
    rules.push(rule(LinuxDeviceType::C, None, None, "m"));
    rules.push(rule(LinuxDeviceType::B, None, None, "m"));
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (10, 200),
    ] {
        rules.push(rule(LinuxDeviceType::C, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(LinuxDeviceType::C, Some(136), None, "rwm"));
    // Only character and block devices pass through the device controller; fifos need no rule.
    for device in devices.iter().filter(|d| {
        matches!(
            d.typ(),
            LinuxDeviceType::C | LinuxDeviceType::U | LinuxDeviceType::B
        )
    }) {
        let mut rule = LinuxDeviceCgroup::from(device);
        if device.typ() == LinuxDeviceType::U {
            rule.set_typ(Some(LinuxDeviceType::C));
        }
        rules.push(rule);
    }
    let mut resources = resources.clone();
    resources.set_devices(Some(rules));
    resources
}

/// Resource usage of a cgroup, for `corral` metrics and `oci events --stats`-style reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU time used by all tasks, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    /// Memory in use now, in bytes (page cache included, as the kernel counts it).
    pub memory_usage_bytes: Option<u64>,
    /// The highest memory use seen, where the kernel records it.
    pub memory_max_usage_bytes: Option<u64>,
    /// The memory limit; `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// How many times the OOM killer killed a task in this cgroup.
    pub oom_kills: Option<u64>,
    pub pids_current: Option<u64>,
    /// The pids limit; `None` when unlimited.
    pub pids_limit: Option<u64>,
}

/// One container's cgroup, whichever cgroup version the host uses.
pub trait Cgroup: std::fmt::Debug + Send + Sync {
    /// The cgroup's path from the hierarchy root (`/corral/web`).
    fn path(&self) -> &Path;
    /// Creates the cgroup (and its parents, delegating controllers on v2).
    fn create(&self) -> Result<()>;
    /// Moves a process into the cgroup.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Applies the spec's resource limits.
    fn apply(&self, resources: &LinuxResources) -> Result<()>;
    /// Freezes (pause) or thaws (resume) every task, waiting until the kernel reports it done.
    fn set_frozen(&self, frozen: bool) -> Result<()>;
    /// True while the cgroup is frozen.
    fn is_frozen(&self) -> Result<bool>;
    /// The directory whose freezer stops every process of the container (v1: in the freezer
    /// hierarchy; v2: the cgroup itself), which CRIU freezes the container with.
    fn freezer_dir(&self) -> Option<PathBuf>;
    /// The processes in the cgroup (host pids).
    fn pids(&self) -> Result<Vec<i32>>;
    /// Usage statistics.
    fn stats(&self) -> Result<Stats>;
    /// Removes the cgroup and the cgroups made inside it; they must hold no processes.
    fn destroy(&self) -> Result<()>;
    /// Hands the cgroup an init system manages (v1: the `name=systemd` hierarchy's, v2: the
    /// container's) to `owner`, the host uid and gid of the container's root, so it can make
    /// cgroups inside it and move its processes between them.
    fn delegate(&self, owner: (u32, u32)) -> Result<()>;
    /// The filesystems to show at a `cgroup` mount inside the container; with `delegated`, the
    /// one [`Cgroup::delegate`] hands over is writable.
    fn container_mounts(&self, delegated: bool) -> Vec<CgroupMount>;
}

/// Files of a cgroup2 directory that its delegate writes (/sys/kernel/cgroup/delegate).
const V2_DELEGATED_FILES: [&str; 3] = ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

/// Changes the owner of a delegated cgroup directory and of the `files` in it that moving
/// processes and making cgroups need (the rest, its limits, stay the host's).
fn chown_delegated(dir: &Path, files: &[&str], (uid, gid): (u32, u32)) -> Result<()> {
    let owner = (Some(uid.into()), Some(gid.into()));
    nix::unistd::chown(dir, owner.0, owner.1)
        .map_err(|e| Error::sys(format!("delegate cgroup {}", dir.display()), e))?;
    for file in files {
        let path = dir.join(file);
        nix::unistd::chown(&path, owner.0, owner.1)
            .map_err(|e| Error::sys(format!("delegate {}", path.display()), e))?;
    }
    Ok(())
}

/// The cgroups an init system made inside `dir`, deepest first.
fn sub_cgroups(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let children = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for child in children.filter(|c| c.file_type().is_ok_and(|t| t.is_dir())) {
        found.extend(sub_cgroups(&child.path()));
        found.push(child.path());
    }
    found
}

/// Reads a cgroup file as trimmed text.
fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io("read", path, e))
}

/// Reads a cgroup file holding one number; `max` and missing files read as `None`.
fn read_number(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file).ok()?.parse().ok()
}

/// Reads `key value` lines (memory.stat, cpu.stat, memory.events) and returns the value of `key`.
fn read_keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    read(dir, file).ok()?.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Writes one value to a cgroup file, naming the file and value in the error.
fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| Error::CgroupWrite {
        path: path.clone(),
        value: value.to_owned(),
        source,
    })
}

/// Parses `cgroup.procs` of `dir` and of the cgroups inside it.
fn read_pids(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    for cgroup in std::iter::once(dir.to_path_buf()).chain(sub_cgroups(dir)) {
        pids.extend(
            read(&cgroup, "cgroup.procs")?
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok()),
        );
    }
    Ok(pids)
}

/// Removes a cgroup directory and the cgroups inside it (an init system's), deepest first.
fn remove_tree(dir: &Path) -> Result<()> {
    for cgroup in sub_cgroups(dir) {
        remove_dir(&cgroup)?;
    }
    remove_dir(dir)
}

/// Removes a cgroup directory, retrying while exiting tasks still pin it (EBUSY).
fn remove_dir(dir: &Path) -> Result<()> {
    for _ in 0..1000 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // Fixture directories in tests are plain directories holding the fake control files.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
                return std::fs::remove_dir_all(dir).map_err(|e| Error::io("remove", dir, e));
            }
            Err(e) => return Err(Error::io("remove cgroup", dir, e)),
        }
    }
    Err(Error::Cgroup(format!(
        "cgroup {} still has tasks after 1s; kill them and retry",
        dir.display()
    )))
}

fn is_cgroupfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| {
            let kind = s.filesystem_type();
            kind == nix::sys::statfs::CGROUP_SUPER_MAGIC
                || kind == nix::sys::statfs::CGROUP2_SUPER_MAGIC
        })
        .unwrap_or(false)
}

/// Polls `done` every millisecond for up to a second.
fn wait_until(mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    for _ in 0..1000 {
        if done()? {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const PURE_V2: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
27 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host_is_v1_with_named_hierarchies() {
        let Layout::V1 {
            hierarchies,
            unified,
        } = Layout::from_mountinfo(HYBRID).unwrap()
        else {
            panic!("expected v1")
        };
        assert_eq!(
            unified.unwrap().mount_point,
            Path::new("/sys/fs/cgroup/unified")
        );
        let names: Vec<_> = hierarchies
            .iter()
            .map(|h| h.controllers.join(","))
            .collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "name=systemd"]);
        assert_eq!(
            hierarchies[2].mount_point,
            Path::new("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn only_a_v1_host_without_name_systemd_lacks_its_hierarchy() {
        assert!(!Layout::from_mountinfo(HYBRID)
            .unwrap()
            .lacks_systemd_hierarchy());
        assert!(!Layout::from_mountinfo(PURE_V2)
            .unwrap()
            .lacks_systemd_hierarchy());
        let without: String = HYBRID
            .lines()
            .filter(|l| !l.contains("name=systemd"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(Layout::from_mountinfo(&without)
            .unwrap()
            .lacks_systemd_hierarchy());
    }

    #[test]
    fn pure_v2_host_is_v2() {
        let layout = Layout::from_mountinfo(PURE_V2).unwrap();
        let Layout::V2 { hierarchy } = layout else {
            panic!("expected v2")
        };
        assert_eq!(hierarchy.mount_point, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn co_mounted_controllers_and_escaped_paths_are_parsed() {
        let text =
            "40 31 0:37 /sub /sys/fs/cgroup/cpu\\054cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let Layout::V1 { hierarchies, .. } = Layout::from_mountinfo(text).unwrap() else {
            panic!("expected v1")
        };
        assert_eq!(hierarchies[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            hierarchies[0].mount_point,
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(hierarchies[0].root, Path::new("/sub"));
    }

    #[test]
    fn no_cgroup_mount_is_an_error_with_a_fix() {
        let err = Layout::from_mountinfo("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap_err();
        assert!(err.to_string().contains("mount cgroup2"), "{err}");
    }

    #[test]
    fn cgroup_paths_default_under_corral_and_reject_escapes() {
        assert_eq!(
            container_cgroup_path(None, "c1").unwrap(),
            Path::new("/corral/c1")
        );
        assert_eq!(
            container_cgroup_path(Some(Path::new("/libpod_parent/libpod-1")), "c1").unwrap(),
            Path::new("/libpod_parent/libpod-1")
        );
        assert_eq!(
            container_cgroup_path(Some(Path::new("a/b")), "c1").unwrap(),
            Path::new("/a/b")
        );
        assert!(container_cgroup_path(Some(Path::new("/a/../../etc")), "c1").is_err());
        assert!(container_cgroup_path(Some(Path::new("/")), "c1").is_err());
        let err =
            container_cgroup_path(Some(Path::new("machine.slice:libpod:abc")), "c1").unwrap_err();
        assert!(err.to_string().contains("cgroupfs"), "{err}");
    }
}
