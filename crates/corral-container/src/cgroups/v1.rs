//! cgroup v1: one directory per hierarchy, one file per knob.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBlockIo, LinuxResources};

use super::devices::rules_from_spec;
use super::{
    chown_delegated, read, read_keyed, read_number, read_pids, remove_tree, wait_until, write,
    Cgroup, Hierarchy, Stats, V2_DELEGATED_FILES,
};
use crate::error::{Error, Result};
use crate::rootfs::CgroupMount;

/// Nanoseconds per USER_HZ tick, the unit of `cpuacct.stat` (USER_HZ is 100 on Linux).
const NS_PER_TICK: u64 = 10_000_000;

/// The named hierarchy without controllers that systemd keeps its cgroups in.
const SYSTEMD_HIERARCHY: &str = "name=systemd";

/// A container's cgroup in every v1 hierarchy.
#[derive(Debug)]
pub struct V1Cgroup {
    hierarchies: Vec<Hierarchy>,
    /// A hybrid host's cgroup2 mount without controllers.
    unified: Option<Hierarchy>,
    path: PathBuf,
}

impl V1Cgroup {
    pub fn new(hierarchies: Vec<Hierarchy>, unified: Option<Hierarchy>, path: &Path) -> Self {
        V1Cgroup {
            hierarchies,
            unified,
            path: path.to_path_buf(),
        }
    }

    /// Every hierarchy the container has a directory in: the v1 ones and the hybrid one.
    fn all_hierarchies(&self) -> impl Iterator<Item = &Hierarchy> {
        self.hierarchies.iter().chain(self.unified.as_ref())
    }

    fn dir(&self, hierarchy: &Hierarchy) -> PathBuf {
        let relative = self
            .path
            .strip_prefix(&hierarchy.root)
            .unwrap_or(&self.path);
        let relative = relative.strip_prefix("/").unwrap_or(relative);
        hierarchy.mount_point.join(relative)
    }

    /// The container's directory in the hierarchy holding `controller`.
    fn controller_dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| self.dir(h))
    }

    fn require(&self, controller: &str) -> Result<PathBuf> {
        self.controller_dir(controller).ok_or_else(|| {
            Error::Cgroup(format!(
                "the {controller} controller is not mounted; mount it under /sys/fs/cgroup or drop the limit"
            ))
        })
    }

    fn apply_memory(&self, resources: &LinuxResources) -> Result<()> {
        let Some(memory) = resources.memory() else {
            return Ok(());
        };
        let dir = self.require("memory")?;
        if let Some(reservation) = memory.reservation() {
            write(&dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
        }
        let limit = memory.limit().map(|v| v.to_string());
        // memory+swap is only there with swap accounting on.
        let swap = memory
            .swap()
            .filter(|_| dir.join("memory.memsw.limit_in_bytes").exists())
            .map(|v| v.to_string());
        match (limit, swap) {
            (Some(limit), Some(swap)) => {
                // The kernel keeps limit <= memsw at every step, so the order depends on the
                // direction of the change: try one order, then the other.
                let forward = write(&dir, "memory.limit_in_bytes", &limit)
                    .and_then(|_| write(&dir, "memory.memsw.limit_in_bytes", &swap));
                if forward.is_err() {
                    write(&dir, "memory.memsw.limit_in_bytes", &swap)?;
                    write(&dir, "memory.limit_in_bytes", &limit)?;
                }
            }
            (Some(limit), None) => write(&dir, "memory.limit_in_bytes", &limit)?,
            (None, Some(swap)) => write(&dir, "memory.memsw.limit_in_bytes", &swap)?,
            (None, None) => {}
        }
        #[allow(deprecated)] // kernel memory limits are still accepted by v1 kernels that have them
        let kernel_limits = [
            ("memory.kmem.limit_in_bytes", memory.kernel()),
            ("memory.kmem.tcp.limit_in_bytes", memory.kernel_tcp()),
        ];
        for (file, value) in kernel_limits {
            if let Some(value) = value {
                write(&dir, file, &value.to_string())?;
            }
        }
        if let Some(swappiness) = memory.swappiness() {
            if swappiness > 100 {
                return Err(Error::InvalidSpec(format!(
                    "memory swappiness {swappiness} is above 100"
                )));
            }
            write(&dir, "memory.swappiness", &swappiness.to_string())?;
        }
        if memory.disable_oom_killer() == Some(true) {
            write(&dir, "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, resources: &LinuxResources) -> Result<()> {
        let Some(cpu) = resources.cpu() else {
            return Ok(());
        };
        let numbers = [
            ("cpu.shares", cpu.shares().map(|v| v.to_string())),
            ("cpu.cfs_period_us", cpu.period().map(|v| v.to_string())),
            ("cpu.cfs_quota_us", cpu.quota().map(|v| v.to_string())),
            (
                "cpu.rt_period_us",
                cpu.realtime_period().map(|v| v.to_string()),
            ),
            (
                "cpu.rt_runtime_us",
                cpu.realtime_runtime().map(|v| v.to_string()),
            ),
        ];
        for (file, value) in numbers {
            if let Some(value) = value {
                write(&self.require("cpu")?, file, &value)?;
            }
        }
        if let Some(cpus) = cpu.cpus() {
            write(&self.require("cpuset")?, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = cpu.mems() {
            write(&self.require("cpuset")?, "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_block_io(&self, block_io: &LinuxBlockIo) -> Result<()> {
        let dir = self.require("blkio")?;
        if let Some(weight) = block_io.weight() {
            write(&dir, "blkio.weight", &weight.to_string())?;
        }
        if let Some(weight) = block_io.leaf_weight() {
            write(&dir, "blkio.leaf_weight", &weight.to_string())?;
        }
        for device in block_io.weight_device().iter().flatten() {
            if let Some(weight) = device.weight() {
                let rule = format!("{}:{} {weight}", device.major(), device.minor());
                write(&dir, "blkio.weight_device", &rule)?;
            }
        }
        let throttles = [
            (
                "blkio.throttle.read_bps_device",
                block_io.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                block_io.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                block_io.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                block_io.throttle_write_iops_device(),
            ),
        ];
        for (file, devices) in throttles {
            for device in devices.iter().flatten() {
                let rule = format!("{}:{} {}", device.major(), device.minor(), device.rate());
                write(&dir, file, &rule)?;
            }
        }
        Ok(())
    }
}

impl Cgroup for V1Cgroup {
    fn path(&self) -> &Path {
        &self.path
    }

    fn create(&self) -> Result<()> {
        for hierarchy in self.all_hierarchies() {
            let leaf = self.dir(hierarchy);
            let is_cpuset = hierarchy.controllers.iter().any(|c| c == "cpuset");
            // Each level is created in turn so a new cpuset level can inherit its parent's cpus
            // and mems: v1 leaves them empty, and an empty cpuset refuses tasks.
            let mut dir = hierarchy.mount_point.clone();
            let relative = leaf
                .strip_prefix(&hierarchy.mount_point)
                .unwrap_or(&leaf)
                .to_path_buf();
            for part in relative.components() {
                let parent = dir.clone();
                dir.push(part);
                if !dir.exists() {
                    std::fs::create_dir(&dir).map_err(|e| Error::io("create cgroup", &dir, e))?;
                }
                if is_cpuset {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        if read(&dir, file).unwrap_or_default().is_empty() {
                            write(&dir, file, &read(&parent, file)?)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for hierarchy in self.all_hierarchies() {
            write(&self.dir(hierarchy), "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        self.apply_memory(resources)?;
        self.apply_cpu(resources)?;
        if let Some(pids) = resources.pids() {
            let limit = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            };
            write(&self.require("pids")?, "pids.max", &limit)?;
        }
        if let Some(block_io) = resources.block_io() {
            self.apply_block_io(block_io)?;
        }
        for limit in resources.hugepage_limits().iter().flatten() {
            let file = format!("hugetlb.{}.limit_in_bytes", limit.page_size());
            write(&self.require("hugetlb")?, &file, &limit.limit().to_string())?;
        }
        if let Some(devices) = resources.devices() {
            let rules = rules_from_spec(devices)?;
            let dir = self.require("devices")?;
            // A new cgroup inherits its parent's rules (allow-all at the root): start from
            // deny-all whatever the list says first.
            write(&dir, "devices.deny", "a")?;
            for rule in rules {
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(&dir, file, &rule.to_string())?;
            }
        }
        if let Some(network) = resources.network() {
            if let Some(class_id) = network.class_id() {
                write(
                    &self.require("net_cls")?,
                    "net_cls.classid",
                    &class_id.to_string(),
                )?;
            }
            for priority in network.priorities().iter().flatten() {
                let rule = format!("{} {}", priority.name(), priority.priority());
                write(&self.require("net_prio")?, "net_prio.ifpriomap", &rule)?;
            }
        }
        if resources.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::InvalidSpec(
                "linux.resources.unified needs cgroup v2, but this host uses cgroup v1".into(),
            ));
        }
        Ok(())
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let dir = self.require("freezer")?;
        let wanted = if frozen { "FROZEN" } else { "THAWED" };
        // FREEZING is transient: keep asking until every task is frozen.
        let done = wait_until(|| {
            write(&dir, "freezer.state", wanted)?;
            Ok(read(&dir, "freezer.state")? == wanted)
        })?;
        if done {
            Ok(())
        } else {
            // Leave no half-frozen container behind.
            write(&dir, "freezer.state", "THAWED")?;
            Err(Error::Cgroup(format!(
                "tasks in {} did not freeze within 1s",
                dir.display()
            )))
        }
    }

    fn freezer_dir(&self) -> Option<PathBuf> {
        self.controller_dir("freezer")
    }

    fn is_frozen(&self) -> Result<bool> {
        match self.controller_dir("freezer") {
            Some(dir) => Ok(read(&dir, "freezer.state")? != "THAWED"),
            None => Ok(false),
        }
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let dir = self
            .controller_dir("pids")
            .or_else(|| self.hierarchies.first().map(|h| self.dir(h)))
            .ok_or_else(|| Error::Cgroup("no cgroup hierarchy is mounted".into()))?;
        read_pids(&dir)
    }

    fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        if let Some(dir) = self.controller_dir("cpuacct") {
            stats.cpu_usage_ns = read_number(&dir, "cpuacct.usage");
            stats.cpu_user_ns = read_keyed(&dir, "cpuacct.stat", "user").map(|t| t * NS_PER_TICK);
            stats.cpu_system_ns =
                read_keyed(&dir, "cpuacct.stat", "system").map(|t| t * NS_PER_TICK);
        }
        if let Some(dir) = self.controller_dir("memory") {
            stats.memory_usage_bytes = read_number(&dir, "memory.usage_in_bytes");
            stats.memory_max_usage_bytes = read_number(&dir, "memory.max_usage_in_bytes");
            // v1 reports "unlimited" as the largest page-aligned i64.
            stats.memory_limit_bytes = read_number(&dir, "memory.limit_in_bytes")
                .filter(|&l| l < (i64::MAX as u64) & !0xfff);
            stats.oom_kills = read_keyed(&dir, "memory.oom_control", "oom_kill");
        }
        if let Some(dir) = self.controller_dir("pids") {
            stats.pids_current = read_number(&dir, "pids.current");
            stats.pids_limit = read_number(&dir, "pids.max");
        }
        Ok(stats)
    }

    fn destroy(&self) -> Result<()> {
        for hierarchy in self.all_hierarchies() {
            remove_tree(&self.dir(hierarchy))?;
        }
        Ok(())
    }

    fn delegate(&self, owner: (u32, u32)) -> Result<()> {
        let dir = self.controller_dir(SYSTEMD_HIERARCHY).ok_or_else(|| {
            Error::Cgroup(format!(
                "this host has no {SYSTEMD_HIERARCHY} cgroup hierarchy to hand to a system container's init"
            ))
        })?;
        chown_delegated(
            &dir,
            &["cgroup.procs", "tasks", "cgroup.clone_children"],
            owner,
        )?;
        match &self.unified {
            Some(unified) => chown_delegated(&self.dir(unified), &V2_DELEGATED_FILES, owner),
            None => Ok(()),
        }
    }

    fn container_mounts(&self, delegated: bool) -> Vec<CgroupMount> {
        self.hierarchies
            .iter()
            .map(|h| CgroupMount {
                subdir: h
                    .mount_point
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| h.controllers.join(",")),
                fstype: "cgroup",
                data: h.controllers.join(","),
                host_path: self.dir(h),
                // Only the hierarchy without controllers: limits stay the host's to set.
                writable: delegated && h.controllers.iter().any(|c| c == SYSTEMD_HIERARCHY),
            })
            // A delegated init also gets the hybrid cgroup2 mount, to learn when cgroups empty
            // (v1 tells only a release agent, which a container cannot have).
            .chain(
                self.unified
                    .as_ref()
                    .filter(|_| delegated)
                    .map(|unified| CgroupMount {
                        subdir: "unified".into(),
                        fstype: "cgroup2",
                        data: String::new(),
                        host_path: self.dir(unified),
                        writable: true,
                    }),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    /// A fake v1 tree: one directory per controller with the files the kernel would show.
    fn fixture() -> (tempfile::TempDir, V1Cgroup) {
        let root = tempfile::tempdir().unwrap();
        let mut hierarchies = Vec::new();
        for controller in [
            "cpu",
            "cpuacct",
            "cpuset",
            "memory",
            "pids",
            "freezer",
            "devices",
            "name=systemd",
        ] {
            let dir = root.path().join(controller.trim_start_matches("name="));
            std::fs::create_dir(&dir).unwrap();
            if controller == "cpuset" {
                std::fs::write(dir.join("cpuset.cpus"), "0-1\n").unwrap();
                std::fs::write(dir.join("cpuset.mems"), "0\n").unwrap();
            }
            hierarchies.push(Hierarchy {
                mount_point: dir,
                root: "/".into(),
                controllers: vec![controller.into()],
            });
        }
        let unified = root.path().join("unified");
        std::fs::create_dir(&unified).unwrap();
        let unified = Hierarchy {
            mount_point: unified,
            root: "/".into(),
            controllers: Vec::new(),
        };
        let cgroup = V1Cgroup::new(hierarchies, Some(unified), Path::new("/corral/c1"));
        (root, cgroup)
    }

    fn file(root: &tempfile::TempDir, rel: &str) -> String {
        std::fs::read_to_string(root.path().join(rel)).unwrap()
    }

    #[test]
    fn create_makes_a_directory_per_hierarchy_and_seeds_cpuset() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        assert!(root.path().join("memory/corral/c1").is_dir());
        assert!(root.path().join("systemd/corral/c1").is_dir());
        assert_eq!(file(&root, "cpuset/corral/cpuset.cpus"), "0-1");
        assert_eq!(file(&root, "cpuset/corral/c1/cpuset.mems"), "0");
    }

    #[test]
    fn resources_are_written_to_their_controllers() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .reservation(32 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000)
                    .period(100_000u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
            .devices(vec![
                LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()
                    .unwrap(),
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(LinuxDeviceType::C)
                    .major(1)
                    .minor(3)
                    .access("rwm")
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        cgroup.apply(&resources).unwrap();
        assert_eq!(
            file(&root, "memory/corral/c1/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            file(&root, "memory/corral/c1/memory.soft_limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(file(&root, "cpu/corral/c1/cpu.shares"), "512");
        assert_eq!(file(&root, "cpu/corral/c1/cpu.cfs_quota_us"), "50000");
        assert_eq!(file(&root, "cpuset/corral/c1/cpuset.cpus"), "0");
        assert_eq!(file(&root, "pids/corral/c1/pids.max"), "20");
        assert_eq!(file(&root, "devices/corral/c1/devices.deny"), "a *:* rwm");
        assert_eq!(file(&root, "devices/corral/c1/devices.allow"), "c 1:3 rwm");
    }

    #[test]
    fn device_rules_start_from_deny_all_even_without_a_deny_rule() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let resources = LinuxResourcesBuilder::default()
            .devices(vec![LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        cgroup.apply(&resources).unwrap();
        assert_eq!(file(&root, "devices/corral/c1/devices.deny"), "a");
        assert_eq!(file(&root, "devices/corral/c1/devices.allow"), "c 1:3 rwm");
    }

    #[test]
    fn unlimited_pids_and_unified_keys_are_handled() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let resources = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(0).build().unwrap())
            .build()
            .unwrap();
        cgroup.apply(&resources).unwrap();
        assert_eq!(file(&root, "pids/corral/c1/pids.max"), "max");
        let unified = LinuxResourcesBuilder::default()
            .unified(std::collections::HashMap::from([(
                "memory.high".to_string(),
                "1M".to_string(),
            )]))
            .build()
            .unwrap();
        assert!(cgroup
            .apply(&unified)
            .unwrap_err()
            .to_string()
            .contains("cgroup v2"));
    }

    #[test]
    fn freezing_writes_the_freezer_state() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        cgroup.set_frozen(true).unwrap();
        assert_eq!(file(&root, "freezer/corral/c1/freezer.state"), "FROZEN");
        assert!(cgroup.is_frozen().unwrap());
        cgroup.set_frozen(false).unwrap();
        assert!(!cgroup.is_frozen().unwrap());
    }

    #[test]
    fn processes_are_added_everywhere_and_listed() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        cgroup.add_process(4242).unwrap();
        assert_eq!(file(&root, "freezer/corral/c1/cgroup.procs"), "4242");
        assert_eq!(cgroup.pids().unwrap(), [4242]);
    }

    #[test]
    fn stats_read_the_v1_files() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let write = |rel: &str, text: &str| std::fs::write(root.path().join(rel), text).unwrap();
        write("cpuacct/corral/c1/cpuacct.usage", "123456\n");
        write("cpuacct/corral/c1/cpuacct.stat", "user 3\nsystem 4\n");
        write("memory/corral/c1/memory.usage_in_bytes", "4096\n");
        write(
            "memory/corral/c1/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            "memory/corral/c1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write("pids/corral/c1/pids.current", "3\n");
        write("pids/corral/c1/pids.max", "max\n");
        let stats = cgroup.stats().unwrap();
        assert_eq!(stats.cpu_usage_ns, Some(123456));
        assert_eq!(stats.cpu_user_ns, Some(30_000_000));
        assert_eq!(stats.memory_usage_bytes, Some(4096));
        assert_eq!(stats.memory_limit_bytes, None, "unlimited reads as None");
        assert_eq!(stats.oom_kills, Some(2));
        assert_eq!(stats.pids_current, Some(3));
        assert_eq!(stats.pids_limit, None);
    }

    #[test]
    fn container_mounts_name_each_hierarchy() {
        let (root, cgroup) = fixture();
        let mounts = cgroup.container_mounts(false);
        let systemd = mounts.iter().find(|m| m.subdir == "systemd").unwrap();
        assert_eq!(systemd.data, "name=systemd");
        assert_eq!(systemd.host_path, root.path().join("systemd/corral/c1"));
        assert!(mounts.iter().all(|m| !m.writable));
        assert!(
            mounts.iter().all(|m| m.subdir != "unified"),
            "the hybrid cgroup2 mount is for a delegated init only"
        );
    }

    #[test]
    fn only_the_systemd_hierarchy_of_a_delegated_cgroup_is_writable() {
        let (_root, cgroup) = fixture();
        let writable: Vec<_> = cgroup
            .container_mounts(true)
            .into_iter()
            .filter(|m| m.writable)
            .map(|m| m.subdir)
            .collect();
        assert_eq!(writable, ["systemd", "unified"]);
    }

    #[test]
    fn destroy_removes_every_directory_and_the_cgroups_made_inside() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let scope = root
            .path()
            .join("systemd/corral/c1/system.slice/cron.service");
        std::fs::create_dir_all(&scope).unwrap();
        std::fs::write(scope.join("cgroup.procs"), "").unwrap();
        cgroup.destroy().unwrap();
        assert!(!root.path().join("memory/corral/c1").exists());
        assert!(!root.path().join("systemd/corral/c1").exists());
        assert!(root.path().join("memory/corral").exists(), "parents stay");
    }

    #[test]
    fn processes_in_cgroups_made_inside_are_listed() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let scope = root.path().join("pids/corral/c1/init.scope");
        std::fs::create_dir_all(&scope).unwrap();
        std::fs::write(scope.join("cgroup.procs"), "42\n").unwrap();
        std::fs::write(root.path().join("pids/corral/c1/cgroup.procs"), "7\n").unwrap();
        let mut pids = cgroup.pids().unwrap();
        pids.sort();
        assert_eq!(pids, [7, 42]);
    }
}
