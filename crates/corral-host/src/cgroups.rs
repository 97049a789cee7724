//! The host's cgroup layout (v1, v2 or hybrid) and which controllers it offers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

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

/// Kernel v1 controller names (anything else in a v1 mount's options is a mount flag or a name=).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One mounted cgroup v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct V1Hierarchy {
    pub mount_point: PathBuf,
    /// Controllers bound to the hierarchy (empty for named ones like `name=systemd`).
    pub controllers: Vec<String>,
    /// The `name=` of a named hierarchy.
    pub name: Option<String>,
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
    pub v1: Vec<V1Hierarchy>,
    pub v2_mount: Option<PathBuf>,
    /// Controllers the v2 root makes available (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
}

impl CgroupLayout {
    /// Parses `/proc/self/mountinfo` text. The v2 controllers are read later with
    /// [`CgroupLayout::with_v2_controllers`], since they live in the mounted filesystem.
    pub fn parse_mountinfo(text: &str) -> Self {
        let mut layout = Self::default();
        for line in text.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = before.split_whitespace().nth(4) else {
                continue;
            };
            let mut after = after.split_whitespace();
            let (Some(fstype), _source, Some(options)) = (after.next(), after.next(), after.next())
            else {
                continue;
            };
            let mount_point = PathBuf::from(unescape_mount_path(mount_point));
            match fstype {
                "cgroup2" => layout.v2_mount = Some(mount_point),
                "cgroup" => {
                    let options: Vec<&str> = options.split(',').collect();
                    layout.v1.push(V1Hierarchy {
                        mount_point,
                        controllers: options
                            .iter()
                            .filter(|o| V1_CONTROLLERS.contains(o))
                            .map(|o| o.to_string())
                            .collect(),
                        name: options
                            .iter()
                            .find_map(|o| o.strip_prefix("name="))
                            .map(str::to_string),
                    });
                }
                _ => {}
            }
        }
        layout
    }

    /// Records the v2 root's available controllers from the text of its `cgroup.controllers`.
    pub fn with_v2_controllers(mut self, text: &str) -> Self {
        self.v2_controllers = text.split_whitespace().map(str::to_string).collect();
        self
    }

    /// Reads the v2 root's `cgroup.controllers` from the mounted filesystem, if v2 is mounted.
    pub fn read_v2_controllers(self) -> Self {
        let Some(path) = self.v2_mount.as_ref().map(|m| m.join("cgroup.controllers")) else {
            return self;
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        self.with_v2_controllers(&text)
    }

    /// The layout's mode.
    pub fn mode(&self) -> CgroupMode {
        let has_v1_controllers = self.v1.iter().any(|h| !h.controllers.is_empty());
        match (has_v1_controllers, self.v2_mount.is_some()) {
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
            .find(|h| h.controllers.iter().any(|c| c == v1_name))
        {
            return Some(ControllerSupport::V1 {
                mount_point: h.mount_point.clone(),
            });
        }
        // In v2, device control (eBPF) and the freezer (cgroup.freeze) are part of the core.
        let builtin_v2 = matches!(controller, "devices" | "freezer");
        let in_v2 = self.v2_controllers.iter().any(|c| c == controller);
        if self.mode() == CgroupMode::V2 && (builtin_v2 || in_v2)
            || (self.v2_mount.is_some() && in_v2)
        {
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

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        let systemd = layout.v1.iter().find(|h| h.name.is_some()).unwrap();
        assert_eq!(systemd.name.as_deref(), Some("systemd"));
        assert!(systemd.controllers.is_empty());
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
        assert_eq!(
            layout.v2_mount,
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
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
    fn escaped_mount_points_are_decoded() {
        let line = "30 25 0:26 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        let layout = CgroupLayout::parse_mountinfo(line);
        assert_eq!(layout.v2_mount, Some(PathBuf::from("/mnt/my cgroups")));
    }
}
