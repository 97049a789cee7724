//! cgroup v2: one unified hierarchy; controllers are delegated down through
//! `cgroup.subtree_control` at every level above the container.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::bpf::attach_device_filter;
use super::devices::{program, rules_from_spec};
use super::{
    chown_delegated, read, read_keyed, read_number, read_pids, remove_tree, wait_until, write,
    Cgroup, Hierarchy, Stats, V2_DELEGATED_FILES,
};
use crate::error::{Error, Result};
use crate::rootfs::CgroupMount;

/// Controllers a container's limits may use; each is delegated only where the parent offers it.
const WANTED_CONTROLLERS: [&str; 6] = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/// The default CFS period when the spec gives a quota without one (the kernel's default).
const DEFAULT_CPU_PERIOD_US: u64 = 100_000;

/// A container's cgroup on the unified hierarchy.
#[derive(Debug)]
pub struct V2Cgroup {
    hierarchy: Hierarchy,
    path: PathBuf,
}

impl V2Cgroup {
    pub fn new(hierarchy: Hierarchy, path: &Path) -> Self {
        V2Cgroup {
            hierarchy,
            path: path.to_path_buf(),
        }
    }

    fn dir(&self) -> PathBuf {
        let relative = self
            .path
            .strip_prefix(&self.hierarchy.root)
            .unwrap_or(&self.path);
        let relative = relative.strip_prefix("/").unwrap_or(relative);
        self.hierarchy.mount_point.join(relative)
    }

    /// Enables the wanted controllers the parent offers in `dir`'s `cgroup.subtree_control`.
    fn delegate(dir: &Path) -> Result<()> {
        let available = read(dir, "cgroup.controllers").unwrap_or_default();
        let enable: Vec<String> = available
            .split_whitespace()
            .filter(|c| WANTED_CONTROLLERS.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if enable.is_empty() {
            return Ok(());
        }
        // One write enables all; if the kernel refuses one (e.g. cpu with realtime tasks), enable
        // the rest one by one so a single controller does not cost the others.
        if write(dir, "cgroup.subtree_control", &enable.join(" ")).is_err() {
            for controller in &enable {
                if let Err(err) = write(dir, "cgroup.subtree_control", controller) {
                    tracing::warn!("{err}");
                }
            }
        }
        Ok(())
    }
}

/// Converts v1 cpu shares (2..262144) to a v2 cpu.weight (1..10000), as runc and crun do.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// Converts a v1 blkio weight (10..1000) to a v2 io.weight (1..10000).
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight.clamp(10, 1000)) - 10) * 9999 / 990
}

fn limit_or_max(value: i64) -> String {
    if value < 0 {
        "max".to_owned()
    } else {
        value.to_string()
    }
}

impl Cgroup for V2Cgroup {
    fn path(&self) -> &Path {
        &self.path
    }

    fn create(&self) -> Result<()> {
        let leaf = self.dir();
        let relative = leaf
            .strip_prefix(&self.hierarchy.mount_point)
            .unwrap_or(&leaf)
            .to_path_buf();
        let mut dir = self.hierarchy.mount_point.clone();
        for part in relative.components() {
            Self::delegate(&dir)?;
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).map_err(|e| Error::io("create cgroup", &dir, e))?;
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write(&self.dir(), "cgroup.procs", &pid.to_string())
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        let dir = self.dir();
        if let Some(memory) = resources.memory() {
            if let Some(reservation) = memory.reservation() {
                write(&dir, "memory.low", &limit_or_max(reservation))?;
            }
            // A test proves its memory check can fail by skipping this write.
            let skip_limit = || {
                fail::fail_point!("inject.cgroup-v2-skip-memory-max", |_| true);
                false
            };
            if let Some(limit) = memory.limit().filter(|_| !skip_limit()) {
                write(&dir, "memory.max", &limit_or_max(limit))?;
            }
            // The spec's swap is memory+swap (v1 semantics); v2 limits swap alone.
            if let Some(swap) = memory.swap() {
                let value = match (swap, memory.limit()) {
                    (s, _) if s < 0 => "max".to_owned(),
                    (s, Some(limit)) if limit >= 0 => {
                        if s < limit {
                            return Err(Error::InvalidSpec(format!(
                                "memory.swap {s} is below memory.limit {limit}; swap counts memory plus swap"
                            )));
                        }
                        (s - limit).to_string()
                    }
                    (s, _) => s.to_string(),
                };
                write(&dir, "memory.swap.max", &value)?;
            }
            if memory.disable_oom_killer() == Some(true) {
                tracing::warn!("disableOOMKiller has no cgroup v2 equivalent; ignored");
            }
        }
        if let Some(cpu) = resources.cpu() {
            if let Some(shares) = cpu.shares() {
                write(&dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let period = cpu.period().unwrap_or(DEFAULT_CPU_PERIOD_US);
                let quota = cpu
                    .quota()
                    .filter(|&q| q > 0)
                    .map_or("max".to_owned(), |q| q.to_string());
                write(&dir, "cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(burst) = cpu.burst() {
                write(&dir, "cpu.max.burst", &burst.to_string())?;
            }
            if let Some(idle) = cpu.idle() {
                write(&dir, "cpu.idle", &idle.to_string())?;
            }
            if let Some(cpus) = cpu.cpus() {
                write(&dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems() {
                write(&dir, "cpuset.mems", mems)?;
            }
        }
        if let Some(pids) = resources.pids() {
            let limit = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            };
            write(&dir, "pids.max", &limit)?;
        }
        if let Some(block_io) = resources.block_io() {
            if let Some(weight) = block_io.weight() {
                write(
                    &dir,
                    "io.weight",
                    &format!("default {}", blkio_weight_to_io_weight(weight)),
                )?;
            }
            let throttles = [
                ("rbps", block_io.throttle_read_bps_device()),
                ("wbps", block_io.throttle_write_bps_device()),
                ("riops", block_io.throttle_read_iops_device()),
                ("wiops", block_io.throttle_write_iops_device()),
            ];
            for (key, devices) in throttles {
                for device in devices.iter().flatten() {
                    let rule = format!(
                        "{}:{} {key}={}",
                        device.major(),
                        device.minor(),
                        device.rate()
                    );
                    write(&dir, "io.max", &rule)?;
                }
            }
        }
        for limit in resources.hugepage_limits().iter().flatten() {
            write(
                &dir,
                &format!("hugetlb.{}.max", limit.page_size()),
                &limit.limit().to_string(),
            )?;
        }
        if let Some(devices) = resources.devices() {
            let rules = rules_from_spec(devices)?;
            attach_device_filter(&dir, &program(&rules))?;
        }
        for (key, value) in resources.unified().iter().flatten() {
            if key.contains('/') || key.starts_with('.') || !key.contains('.') {
                return Err(Error::InvalidSpec(format!(
                    "unified cgroup key {key:?} is not a cgroup file name such as memory.high"
                )));
            }
            write(&dir, key, value)?;
        }
        Ok(())
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let dir = self.dir();
        write(&dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let wanted = if frozen { 1 } else { 0 };
        if wait_until(|| Ok(read_keyed(&dir, "cgroup.events", "frozen") == Some(wanted)))? {
            Ok(())
        } else {
            write(&dir, "cgroup.freeze", "0")?;
            Err(Error::Cgroup(format!(
                "tasks in {} did not freeze within 1s",
                dir.display()
            )))
        }
    }

    fn freezer_dir(&self) -> Option<PathBuf> {
        Some(self.dir())
    }

    fn is_frozen(&self) -> Result<bool> {
        Ok(read_keyed(&self.dir(), "cgroup.events", "frozen") == Some(1))
    }

    fn pids(&self) -> Result<Vec<i32>> {
        read_pids(&self.dir())
    }

    fn stats(&self) -> Result<Stats> {
        let dir = self.dir();
        let micros = |key| read_keyed(&dir, "cpu.stat", key).map(|us| us * 1000);
        Ok(Stats {
            cpu_usage_ns: micros("usage_usec"),
            cpu_user_ns: micros("user_usec"),
            cpu_system_ns: micros("system_usec"),
            memory_usage_bytes: read_number(&dir, "memory.current"),
            memory_max_usage_bytes: read_number(&dir, "memory.peak"),
            memory_limit_bytes: read_number(&dir, "memory.max"),
            oom_kills: read_keyed(&dir, "memory.events", "oom_kill"),
            pids_current: read_number(&dir, "pids.current"),
            pids_limit: read_number(&dir, "pids.max"),
        })
    }

    fn destroy(&self) -> Result<()> {
        remove_tree(&self.dir())
    }

    fn delegate(&self, owner: (u32, u32)) -> Result<()> {
        chown_delegated(&self.dir(), &V2_DELEGATED_FILES, owner)
    }

    fn container_mounts(&self, delegated: bool) -> Vec<CgroupMount> {
        vec![CgroupMount {
            subdir: String::new(),
            fstype: "cgroup2",
            data: String::new(),
            host_path: self.dir(),
            writable: delegated,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    fn fixture() -> (tempfile::TempDir, V2Cgroup) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        let hierarchy = Hierarchy {
            mount_point: root.path().to_path_buf(),
            root: "/".into(),
            controllers: vec![],
        };
        (root, V2Cgroup::new(hierarchy, Path::new("/corral/c1")))
    }

    fn file(root: &tempfile::TempDir, rel: &str) -> String {
        std::fs::read_to_string(root.path().join(rel)).unwrap()
    }

    #[test]
    fn create_delegates_the_offered_controllers_at_each_level() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        assert!(root.path().join("corral/c1").is_dir());
        assert_eq!(
            file(&root, "cgroup.subtree_control"),
            "+cpuset +cpu +io +memory +hugetlb +pids"
        );
    }

    #[test]
    fn limits_use_the_v2_files_and_units() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(96 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(30).build().unwrap())
            .unified(std::collections::HashMap::from([(
                "memory.high".to_string(),
                "50000000".to_string(),
            )]))
            .build()
            .unwrap();
        cgroup.apply(&resources).unwrap();
        assert_eq!(
            file(&root, "corral/c1/memory.max"),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            file(&root, "corral/c1/memory.swap.max"),
            (32u64 << 20).to_string()
        );
        assert_eq!(file(&root, "corral/c1/cpu.weight"), "39");
        assert_eq!(file(&root, "corral/c1/cpu.max"), "50000 100000");
        assert_eq!(file(&root, "corral/c1/pids.max"), "30");
        assert_eq!(file(&root, "corral/c1/memory.high"), "50000000");
    }

    #[test]
    fn unlimited_values_become_max_and_bad_unified_keys_are_refused() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let resources = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .period(200_000u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        cgroup.apply(&resources).unwrap();
        assert_eq!(file(&root, "corral/c1/memory.max"), "max");
        assert_eq!(file(&root, "corral/c1/cpu.max"), "max 200000");
        let bad = LinuxResourcesBuilder::default()
            .unified(std::collections::HashMap::from([(
                "../../cgroup.procs".to_string(),
                "1".to_string(),
            )]))
            .build()
            .unwrap();
        assert!(cgroup.apply(&bad).is_err());
    }

    #[test]
    fn shares_and_weights_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
    }

    #[test]
    fn freeze_waits_for_the_kernel_to_report_frozen() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        std::fs::write(
            root.path().join("corral/c1/cgroup.events"),
            "populated 1\nfrozen 1\n",
        )
        .unwrap();
        cgroup.set_frozen(true).unwrap();
        assert_eq!(file(&root, "corral/c1/cgroup.freeze"), "1");
        assert!(cgroup.is_frozen().unwrap());
        // The fake kernel never reports thawed: the wait gives up and says so.
        let err = cgroup.set_frozen(false).unwrap_err();
        assert!(err.to_string().contains("did not freeze"), "{err}");
    }

    #[test]
    fn stats_read_the_v2_files() {
        let (root, cgroup) = fixture();
        cgroup.create().unwrap();
        let write = |rel: &str, text: &str| {
            std::fs::write(root.path().join("corral/c1").join(rel), text).unwrap()
        };
        write(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        );
        write("memory.current", "8192\n");
        write("memory.max", "max\n");
        write("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
        write("pids.current", "2\n");
        let stats = cgroup.stats().unwrap();
        assert_eq!(stats.cpu_usage_ns, Some(1_500_000));
        assert_eq!(stats.memory_usage_bytes, Some(8192));
        assert_eq!(stats.memory_limit_bytes, None);
        assert_eq!(stats.oom_kills, Some(1));
        assert_eq!(stats.pids_current, Some(2));
    }
}
