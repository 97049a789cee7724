//! The host's cgroup layout (v1, v2 or hybrid) and which controllers it offers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::mountinfo;

/// How cgroups are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 ("legacy") hierarchies.
    V1,
    /// Only the v2 unified hierarchy.
    V2,
    /// v1 controller hierarchies plus a v2 mount (systemd's "hybrid" layout).
    Hybrid,
    /// No cgroup filesystem is mounted.
    None,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::Hybrid => "hybrid",
            Self::None => "none",
        })
    }
}

/// The controllers corral's container engine uses, by their v2 names.
pub const CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuset", "pids", "devices", "freezer", "io",
];

/// One mounted cgroup v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct V1Hierarchy {
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point (`/` unless the mount is a bind of a sub-cgroup).
    pub root: PathBuf,
    /// The options that name the hierarchy: its controllers (`cpu`, `cpuacct`) and, for a named
    /// hierarchy, `name=systemd`.
    pub options: Vec<String>,
}

impl V1Hierarchy {
    /// The controllers bound to the hierarchy (none for a named hierarchy like `name=systemd`).
    pub fn controllers(&self) -> impl Iterator<Item = &str> {
        self.options
            .iter()
            .map(String::as_str)
            .filter(|o| !o.starts_with("name="))
    }

    /// The `name=` of a named hierarchy.
    pub fn name(&self) -> Option<&str> {
        self.options.iter().find_map(|o| o.strip_prefix("name="))
    }
}

/// The cgroup2 mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct V2Mount {
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point.
    pub root: PathBuf,
}

/// Options of a v1 mount that tune the mount rather than name the hierarchy.
fn is_hierarchy_option(option: &str) -> bool {
    const MOUNT_OPTIONS: [&str; 6] = [
        "rw",
        "ro",
        "noprefix",
        "clone_children",
        "xattr",
        "nsdelegate",
    ];
    !option.is_empty()
        && !MOUNT_OPTIONS.contains(&option)
        && !option.starts_with("release_agent=")
        && !option.starts_with("none")
}

/// Where a controller can be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum ControllerSupport {
    /// Mounted as (part of) a v1 hierarchy.
    V1 { mount_point: PathBuf },
    /// Listed in the v2 root's `cgroup.controllers`, or built into v2 (devices, freezer).
    V2,
}

/// The cgroup mounts of a mount namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CgroupLayout {
    /// v1 hierarchies, controller-bound or named.
    pub v1: Vec<V1Hierarchy>,
    /// The first cgroup2 mount.
    pub v2: Option<V2Mount>,
    /// Controllers the v2 root makes available (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
}

impl CgroupLayout {
    /// Parses `/proc/self/mountinfo` text. The v2 controllers are read later with
    /// [`CgroupLayout::with_v2_controllers`], since they live in the mounted filesystem.
    pub fn parse_mountinfo(text: &str) -> Self {
        let mut layout = Self::default();
        for entry in mountinfo::parse(text) {
            match entry.fstype.as_str() {
                "cgroup2" if layout.v2.is_none() => {
                    layout.v2 = Some(V2Mount {
                        mount_point: entry.mount_point,
                        root: entry.root,
                    })
                }
                "cgroup" => {
                    let options: Vec<String> = entry
                        .super_options
                        .split(',')
                        .filter(|o| is_hierarchy_option(o))
                        .map(str::to_string)
                        .collect();
                    if !options.is_empty() {
                        layout.v1.push(V1Hierarchy {
                            mount_point: entry.mount_point,
                            root: entry.root,
                            options,
                        });
                    }
                }
                _ => {}
            }
        }
        layout
    }

    /// Where cgroup2 is mounted, if it is.
    pub fn v2_mount(&self) -> Option<&Path> {
        self.v2.as_ref().map(|v2| v2.mount_point.as_path())
    }

    /// Records the v2 root's available controllers from the text of its `cgroup.controllers`.
    pub fn with_v2_controllers(mut self, text: &str) -> Self {
        self.v2_controllers = text.split_whitespace().map(str::to_string).collect();
        self
    }

    /// Reads the v2 root's `cgroup.controllers` from the mounted filesystem, if v2 is mounted.
    pub fn read_v2_controllers(self) -> Self {
        let Some(path) = self.v2_mount().map(|m| m.join("cgroup.controllers")) else {
            return self;
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        self.with_v2_controllers(&text)
    }

    /// The layout's mode.
    pub fn mode(&self) -> CgroupMode {
        let has_v1_controllers = self.v1.iter().any(|h| h.controllers().next().is_some());
        match (has_v1_controllers, self.v2.is_some()) {
            (true, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::V1,
            (false, true) => CgroupMode::V2,
            (false, false) => CgroupMode::None,
        }
    }

    /// Where `controller` (a v2 name from [`CONTROLLERS`]; `io` is `blkio` in v1) is available.
    /// A v1 hierarchy wins in hybrid mode, because controllers bound to v1 cannot be used in v2.
    pub fn controller(&self, controller: &str) -> Option<ControllerSupport> {
        let v1_name = if controller == "io" {
            "blkio"
        } else {
            controller
        };
        if let Some(h) = self
            .v1
            .iter()
            .find(|h| h.controllers().any(|c| c == v1_name))
        {
            return Some(ControllerSupport::V1 {
                mount_point: h.mount_point.clone(),
            });
        }
        // In v2, device control (eBPF) and the freezer (cgroup.freeze) are part of the core.
        let builtin_v2 = matches!(controller, "devices" | "freezer");
        let in_v2 = self.v2_controllers.iter().any(|c| c == controller);
        if self.mode() == CgroupMode::V2 && (builtin_v2 || in_v2) || (self.v2.is_some() && in_v2) {
            return Some(ControllerSupport::V2);
        }
        None
    }

    /// Every controller of [`CONTROLLERS`] with where it is available.
    pub fn controllers(&self) -> BTreeMap<&'static str, Option<ControllerSupport>> {
        CONTROLLERS
            .iter()
            .map(|c| (*c, self.controller(c)))
            .collect()
    }
}

/// Reads the cgroup layout of the calling process's mount namespace.
pub fn read_layout(proc_root: &Path) -> CgroupLayout {
    let text = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    CgroupLayout::parse_mountinfo(&text).read_v2_controllers()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn v1_at(path: &str) -> Option<ControllerSupport> {
        Some(ControllerSupport::V1 {
            mount_point: PathBuf::from(path),
        })
    }

    #[test]
    fn pure_v1_layout() {
        let layout = CgroupLayout::parse_mountinfo(fixtures::MOUNTINFO_V1);
        assert_eq!(layout.mode(), CgroupMode::V1);
        assert_eq!(
            layout.controller("cpu"),
            v1_at("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(layout.controller("io"), v1_at("/sys/fs/cgroup/blkio"));
        assert_eq!(layout.controller("memory"), v1_at("/sys/fs/cgroup/memory"));
        let systemd = layout.v1.iter().find(|h| h.name().is_some()).unwrap();
        assert_eq!(systemd.name(), Some("systemd"));
        assert_eq!(systemd.controllers().count(), 0);
        let cpu = layout
            .v1
            .iter()
            .find(|h| h.controllers().any(|c| c == "cpuacct"))
            .unwrap();
        assert_eq!(cpu.controllers().collect::<Vec<_>>(), ["cpu", "cpuacct"]);
    }

    #[test]
    fn pure_v2_layout_has_builtin_devices_and_freezer() {
        let layout = CgroupLayout::parse_mountinfo(fixtures::MOUNTINFO_V2)
            .with_v2_controllers("cpuset cpu io memory pids\n");
        assert_eq!(layout.mode(), CgroupMode::V2);
        for c in CONTROLLERS {
            assert_eq!(layout.controller(c), Some(ControllerSupport::V2), "{c}");
        }
    }

    #[test]
    fn v2_without_a_controller_reports_it_missing() {
        let layout =
            CgroupLayout::parse_mountinfo(fixtures::MOUNTINFO_V2).with_v2_controllers("cpu pids");
        assert_eq!(layout.controller("memory"), None);
        assert_eq!(layout.controller("cpu"), Some(ControllerSupport::V2));
    }

    #[test]
    fn hybrid_layout_uses_v1_controllers() {
        let layout =
            CgroupLayout::parse_mountinfo(fixtures::MOUNTINFO_HYBRID).with_v2_controllers("");
        assert_eq!(layout.mode(), CgroupMode::Hybrid);
        assert_eq!(layout.v2_mount(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            layout.controller("freezer"),
            v1_at("/sys/fs/cgroup/freezer")
        );
        assert_eq!(layout.controller("io"), v1_at("/sys/fs/cgroup/blkio"));
        // The empty v2 mount offers nothing of its own.
        assert!(layout
            .controllers()
            .values()
            .all(|s| matches!(s, Some(ControllerSupport::V1 { .. }))));
    }

    #[test]
    fn no_cgroups_mounted() {
        let layout = CgroupLayout::parse_mountinfo("22 1 254:0 / / rw - ext4 /dev/vda rw\n");
        assert_eq!(layout.mode(), CgroupMode::None);
        assert_eq!(layout.controller("memory"), None);
    }

    #[test]
    fn mount_options_are_not_hierarchy_options() {
        let line =
            "31 30 0:27 /sub /sys/fs/cgroup/misc rw - cgroup cgroup rw,xattr,clone_children,misc\n";
        let layout = CgroupLayout::parse_mountinfo(line);
        assert_eq!(layout.v1[0].options, ["misc"]);
        assert_eq!(layout.v1[0].root, PathBuf::from("/sub"));
    }
}
