//! `corral host check`: verdicts on the host's facts, like `virt-host-validate`.

use serde::Serialize;

use crate::cgroups::{CgroupMode, ControllerSupport};
use crate::facts::{CorralRootFacts, HostFacts, KvmBackend};
use crate::kvm::{DeviceState, EXPECTED_API_VERSION};

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        })
    }
}

/// One verdict with the fact behind it and, unless it passed, what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `kvm.device`.
    pub id: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn pass(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            status: Status::Pass,
            detail: detail.into(),
            hint: None,
        }
    }

    fn with(
        status: Status,
        id: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            status,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// The worst status among `checks` (PASS when empty).
pub fn overall(checks: &[Check]) -> Status {
    checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Pass)
}

/// Judges the facts. Pure: the same facts always give the same checks, in a stable order.
pub fn evaluate(facts: &HostFacts) -> Vec<Check> {
    let mut checks = Vec::new();
    cpu_checks(facts, &mut checks);
    kvm_checks(facts, &mut checks);
    network_checks(facts, &mut checks);
    namespace_checks(facts, &mut checks);
    cgroup_checks(facts, &mut checks);
    if let Some(root) = &facts.corral_root {
        checks.push(corral_root_check(root));
    }
    checks
}

/// corral's root holds guest consoles, logs, disk images and control sockets: other users must
/// not read it.
fn corral_root_check(root: &CorralRootFacts) -> Check {
    let path = root.path.display();
    match root.mode {
        None => Check::pass(
            "corral.root",
            format!("{path} does not exist yet; corral creates it private (0700)"),
        ),
        Some(mode) if mode & 0o007 != 0 => Check::with(
            Status::Warn,
            "corral.root",
            format!(
                "{path} (mode {mode:04o}) is open to every user: instance definitions, consoles, \
                 logs and disks are readable"
            ),
            format!("chmod 700 {path}"),
        ),
        Some(mode) => Check::pass(
            "corral.root",
            format!("{path} (mode {mode:04o}) is closed to other users"),
        ),
    }
}

fn cpu_checks(facts: &HostFacts, checks: &mut Vec<Check>) {
    let cpu = &facts.cpu;
    checks.push(if cpu.has("lm") {
        Check::pass("cpu.64bit", "64-bit CPU (lm)")
    } else {
        Check::with(
            Status::Fail,
            "cpu.64bit",
            "the CPU lacks long mode (no `lm` flag)",
            "corral runs x86_64 guests only; use a 64-bit CPU",
        )
    });
    checks.push(match (cpu.virt_extension(), &facts.kvm_backend) {
        (Some(ext), KvmBackend::Hardware { nested: true, .. }) => Check::pass(
            "cpu.virtualization",
            format!(
                "{} ({}) exposed by the outer hypervisor: nested virtualization",
                ext.product_name(),
                ext.flag()
            ),
        ),
        (Some(ext), _) => Check::pass(
            "cpu.virtualization",
            format!(
                "hardware virtualization {} ({})",
                ext.product_name(),
                ext.flag()
            ),
        ),
        (None, KvmBackend::Paravirtual { module }) => Check::with(
            Status::Warn,
            "cpu.virtualization",
            format!("no vmx/svm flag, but KVM is usable through the paravirtual module {module}"),
            "guest kernels run in KVM's instruction emulator (slow; some instructions fail); \
             enable nested VT-x/AMD-V on the outer hypervisor for full speed",
        ),
        (None, KvmBackend::Unknown) => Check::with(
            Status::Warn,
            "cpu.virtualization",
            "no vmx/svm flag, yet KVM is usable by an unrecognised backend",
            "expect guests to run slowly; enable VT-x/AMD-V for full speed",
        ),
        (None, _) if cpu.is_virtualized() => Check::with(
            Status::Fail,
            "cpu.virtualization",
            "no vmx/svm flag: this host is a VM without nested virtualization",
            "enable nested virtualization for this VM on the outer hypervisor",
        ),
        (None, _) => Check::with(
            Status::Fail,
            "cpu.virtualization",
            "no vmx/svm flag: hardware virtualization is absent or disabled",
            "enable Intel VT-x or AMD-V (SVM) in the BIOS/UEFI setup",
        ),
    });
}

fn kvm_checks(facts: &HostFacts, checks: &mut Vec<Check>) {
    let kvm_modules = facts.modules.kvm_modules();
    checks.push(if kvm_modules.is_empty() {
        Check::with(
            Status::Fail,
            "kvm.modules",
            "no kvm module is loaded",
            "load it: modprobe kvm_intel (Intel) or modprobe kvm_amd (AMD)",
        )
    } else {
        Check::pass("kvm.modules", format!("loaded: {}", kvm_modules.join(", ")))
    });

    let kvm = &facts.kvm;
    checks.push(match &kvm.device {
        DeviceState::ReadWrite => Check::pass("kvm.device", "/dev/kvm is present and read-write"),
        DeviceState::Missing => Check::with(
            Status::Fail,
            "kvm.device",
            "/dev/kvm does not exist",
            "load the kvm modules (see kvm.modules) and check that udev created the node",
        ),
        DeviceState::Inaccessible(err) => Check::with(
            Status::Fail,
            "kvm.device",
            format!("/dev/kvm cannot be opened read-write: {err}"),
            "run as root or add the user to the group owning /dev/kvm (usually `kvm`)",
        ),
    });
    if kvm.device != DeviceState::ReadWrite {
        return;
    }

    checks.push(match kvm.api_version {
        Some(EXPECTED_API_VERSION) => {
            Check::pass("kvm.api", format!("KVM API version {EXPECTED_API_VERSION}"))
        }
        other => Check::with(
            Status::Fail,
            "kvm.api",
            format!(
                "KVM API version {} (expected {EXPECTED_API_VERSION})",
                other.map_or("unknown".to_string(), |v| v.to_string())
            ),
            "use a mainline Linux kernel's KVM",
        ),
    });
    let missing = kvm.missing_capabilities();
    checks.push(if missing.is_empty() {
        let names: Vec<&str> = kvm.capabilities.iter().map(|c| c.name.as_str()).collect();
        Check::pass("kvm.capabilities", format!("has {}", names.join(", ")))
    } else {
        Check::with(
            Status::Fail,
            "kvm.capabilities",
            format!("KVM lacks {}", missing.join(", ")),
            "corral's VMM needs these; upgrade the host kernel",
        )
    });
    checks.push(match kvm.max_vcpus {
        Some(max) if max > 0 => Check::pass(
            "kvm.vcpus",
            format!(
                "up to {max} vCPUs per VM (recommended {})",
                kvm.recommended_vcpus.unwrap_or(max)
            ),
        ),
        _ => Check::with(
            Status::Fail,
            "kvm.vcpus",
            "KVM reports no vCPU limit",
            "the host kernel's KVM is broken; upgrade it",
        ),
    });
    checks.push(match &kvm.create_vm {
        Some(Ok(())) => Check::pass("kvm.create-vm", "a test VM was created and destroyed"),
        Some(Err(err)) => Check::with(
            Status::Fail,
            "kvm.create-vm",
            format!("KVM refused to create a VM: {err}"),
            "check dmesg for KVM errors; another hypervisor may hold VT-x/AMD-V",
        ),
        None => Check::with(
            Status::Fail,
            "kvm.create-vm",
            "no VM creation was attempted",
            "fix the KVM checks above",
        ),
    });
}

fn network_checks(facts: &HostFacts, checks: &mut Vec<Check>) {
    let tun = &facts.tun;
    checks.push(match (tun.present, tun.accessible) {
        (true, true) => Check::pass("net.tun", "/dev/net/tun is present (tap devices for VMs)"),
        (true, false) => Check::with(
            Status::Warn,
            "net.tun",
            "/dev/net/tun exists but cannot be opened read-write",
            "run as root to give VMs tap network devices",
        ),
        (false, _) => Check::with(
            Status::Warn,
            "net.tun",
            "/dev/net/tun is missing: VMs cannot get tap network devices",
            "load the tun module: modprobe tun",
        ),
    });
    checks.push(if facts.bridge {
        Check::pass("net.bridge", "the bridge driver is available")
    } else {
        Check::with(
            Status::Warn,
            "net.bridge",
            "the bridge driver is not loaded: bridged networks are unavailable",
            "load it: modprobe bridge",
        )
    });
}

fn namespace_checks(facts: &HostFacts, checks: &mut Vec<Check>) {
    for ns in &facts.namespaces {
        let id = format!("namespaces.{}", ns.kind);
        if !ns.available {
            checks.push(Check::with(
                Status::Fail,
                id,
                format!("the kernel has no {} namespaces", ns.kind),
                format!(
                    "enable CONFIG_{}_NS in the host kernel",
                    ns.kind.to_uppercase()
                ),
            ));
        } else if ns.kind == "user" && facts.max_user_namespaces == Some(0) {
            checks.push(Check::with(
                Status::Warn,
                id,
                "user namespaces are disabled (user.max_user_namespaces = 0)",
                "sysctl -w user.max_user_namespaces=15000 to allow uid-mapped containers",
            ));
        } else {
            checks.push(Check::pass(id, format!("{} namespaces available", ns.kind)));
        }
    }
}

fn cgroup_checks(facts: &HostFacts, checks: &mut Vec<Check>) {
    let cgroups = &facts.cgroups;
    checks.push(match cgroups.mode {
        CgroupMode::None => Check::with(
            Status::Fail,
            "cgroups.mode",
            "no cgroup filesystem is mounted",
            "mount cgroup2 at /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)",
        ),
        CgroupMode::V1 => Check::pass("cgroups.mode", "cgroup v1 (legacy hierarchies)"),
        CgroupMode::V2 => Check::pass(
            "cgroups.mode",
            format!(
                "cgroup v2 (unified) at {}",
                display_mount(cgroups.layout.v2_mount())
            ),
        ),
        CgroupMode::Hybrid => Check::pass(
            "cgroups.mode",
            format!(
                "hybrid: v1 controller hierarchies plus cgroup v2 at {}",
                display_mount(cgroups.layout.v2_mount())
            ),
        ),
    });
    if cgroups.mode == CgroupMode::None {
        return;
    }
    for (name, support) in &cgroups.controllers {
        let id = format!("cgroups.{name}");
        checks.push(match support {
            Some(ControllerSupport::V1 { mount_point }) => Check::pass(
                id,
                format!("{name} controller (v1 at {})", mount_point.display()),
            ),
            Some(ControllerSupport::V2) => Check::pass(id, format!("{name} controller (v2)")),
            None => {
                // Limits, accounting and pause depend on these; the rest degrade gracefully.
                let essential = matches!(*name, "memory" | "cpu" | "pids" | "devices" | "freezer");
                Check::with(
                    if essential {
                        Status::Fail
                    } else {
                        Status::Warn
                    },
                    id,
                    format!("the {name} controller is not available"),
                    match cgroups.mode {
                        CgroupMode::V2 => format!(
                            "enable it in the parent's cgroup.subtree_control or boot with \
                             cgroup_enable={name}"
                        ),
                        _ => format!(
                            "mount it: mount -t cgroup -o {name} cgroup /sys/fs/cgroup/{name}"
                        ),
                    },
                )
            }
        });
    }
}

fn display_mount(mount: Option<&std::path::Path>) -> String {
    mount.map_or("?".to_string(), |m| m.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupLayout;
    use crate::cpu::CpuInfo;
    use crate::facts::tests::usable_kvm;
    use crate::facts::{kvm_backend, CgroupFacts, DeviceNode, KernelInfo};
    use crate::fixtures;
    use crate::kvm::KvmFacts;
    use crate::modules::LoadedModules;
    use crate::namespaces::{NamespaceFact, KINDS};

    fn facts(cpuinfo: &str, modules: LoadedModules, kvm: KvmFacts, mountinfo: &str) -> HostFacts {
        let cpu = CpuInfo::parse(cpuinfo);
        HostFacts {
            kernel: KernelInfo::default(),
            memory_total_bytes: Some(1 << 30),
            kvm_backend: kvm_backend(&cpu, &modules, &kvm),
            cpu,
            modules,
            kvm,
            tun: DeviceNode {
                path: "/dev/net/tun".into(),
                present: true,
                accessible: true,
            },
            bridge: true,
            namespaces: KINDS
                .iter()
                .map(|k| NamespaceFact {
                    kind: k.to_string(),
                    available: true,
                    inode: None,
                })
                .collect(),
            max_user_namespaces: Some(1000),
            cgroups: CgroupFacts::new(CgroupLayout::parse_mountinfo(mountinfo)),
            corral_root: None,
        }
    }

    #[test]
    fn a_corral_root_open_to_other_users_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let fixture = tempfile::tempdir().unwrap();
        let root = fixture.path().join("corral");
        let mut f = facts(
            fixtures::CPUINFO_INTEL_VMX,
            LoadedModules::parse_proc_modules(fixtures::MODULES_INTEL),
            usable_kvm(),
            fixtures::MOUNTINFO_V1,
        );
        let verdict = |f: &mut HostFacts| {
            f.corral_root = Some(CorralRootFacts::read(&root));
            let checks = evaluate(f);
            let check = checks
                .iter()
                .find(|c| c.id == "corral.root")
                .unwrap()
                .clone();
            (check.status, check.detail, check.hint)
        };
        assert_eq!(verdict(&mut f).0, Status::Pass, "a root not created yet");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (status, detail, hint) = verdict(&mut f);
        assert_eq!(status, Status::Warn);
        assert!(detail.contains("mode 0755"), "{detail}");
        assert_eq!(
            hint.as_deref(),
            Some(&*format!("chmod 700 {}", root.display()))
        );
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(verdict(&mut f).0, Status::Pass);
    }

    fn status_of(checks: &[Check], id: &str) -> Status {
        checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no check {id}"))
            .status
    }

    #[test]
    fn intel_host_with_vmx_passes_everything() {
        let f = facts(
            fixtures::CPUINFO_INTEL_VMX,
            LoadedModules::parse_proc_modules(fixtures::MODULES_INTEL),
            usable_kvm(),
            fixtures::MOUNTINFO_V1,
        );
        let checks = evaluate(&f);
        assert_eq!(overall(&checks), Status::Pass, "{checks:#?}");
        let virt = checks
            .iter()
            .find(|c| c.id == "cpu.virtualization")
            .unwrap();
        assert!(virt.detail.contains("Intel VT-x (vmx)"), "{}", virt.detail);
    }

    #[test]
    fn amd_host_with_svm_on_v2_passes() {
        let mut f = facts(
            fixtures::CPUINFO_AMD_SVM,
            LoadedModules::parse_proc_modules(fixtures::MODULES_AMD),
            usable_kvm(),
            fixtures::MOUNTINFO_V2,
        );
        f.cgroups = CgroupFacts::new(
            CgroupLayout::parse_mountinfo(fixtures::MOUNTINFO_V2)
                .with_v2_controllers("cpuset cpu io memory pids"),
        );
        let checks = evaluate(&f);
        assert_eq!(overall(&checks), Status::Pass, "{checks:#?}");
        assert!(checks
            .iter()
            .any(|c| c.id == "cgroups.mode" && c.detail.contains("v2")));
    }

    #[test]
    fn vm_with_kvm_pvm_warns_that_guests_are_emulated() {
        let f = facts(
            fixtures::CPUINFO_VM_NO_VIRT,
            LoadedModules::from_names(["kvm", "kvm_pvm", "bridge"]),
            usable_kvm(),
            fixtures::MOUNTINFO_HYBRID,
        );
        let checks = evaluate(&f);
        let virt = checks
            .iter()
            .find(|c| c.id == "cpu.virtualization")
            .unwrap();
        assert_eq!(virt.status, Status::Warn);
        assert!(virt.detail.contains("kvm_pvm"));
        assert!(virt.hint.as_deref().unwrap().contains("emulator"));
        assert_eq!(overall(&checks), Status::Warn, "{checks:#?}");
        assert!(checks
            .iter()
            .any(|c| c.id == "cgroups.mode" && c.detail.starts_with("hybrid")));
    }

    #[test]
    fn vm_without_nested_virtualization_fails() {
        let f = facts(
            fixtures::CPUINFO_VM_NO_VIRT,
            LoadedModules::default(),
            KvmFacts::unavailable(DeviceState::Missing),
            fixtures::MOUNTINFO_V1,
        );
        let checks = evaluate(&f);
        let virt = checks
            .iter()
            .find(|c| c.id == "cpu.virtualization")
            .unwrap();
        assert_eq!(virt.status, Status::Fail);
        assert!(virt.hint.as_deref().unwrap().contains("nested"));
        assert_eq!(status_of(&checks, "kvm.device"), Status::Fail);
        assert_eq!(status_of(&checks, "kvm.modules"), Status::Fail);
        assert!(
            !checks.iter().any(|c| c.id == "kvm.api"),
            "no API check without a device"
        );
    }

    #[test]
    fn bare_metal_without_virtualization_points_at_the_bios() {
        let f = facts(
            fixtures::CPUINFO_NO_VIRT,
            LoadedModules::default(),
            KvmFacts::unavailable(DeviceState::Missing),
            fixtures::MOUNTINFO_V2,
        );
        let checks = evaluate(&f);
        let virt = checks
            .iter()
            .find(|c| c.id == "cpu.virtualization")
            .unwrap();
        assert_eq!(virt.status, Status::Fail);
        assert!(virt.hint.as_deref().unwrap().contains("BIOS"));
        assert_eq!(
            status_of(&checks, "cpu.64bit"),
            Status::Fail,
            "the Atom N270 is 32-bit"
        );
    }

    #[test]
    fn missing_capability_fails_and_names_it() {
        let mut kvm = usable_kvm();
        kvm.capabilities[0].present = false;
        let f = facts(
            fixtures::CPUINFO_INTEL_VMX,
            LoadedModules::parse_proc_modules(fixtures::MODULES_INTEL),
            kvm,
            fixtures::MOUNTINFO_V1,
        );
        let checks = evaluate(&f);
        let caps = checks.iter().find(|c| c.id == "kvm.capabilities").unwrap();
        assert_eq!(caps.status, Status::Fail);
        assert!(caps.detail.contains("irqchip"));
    }

    #[test]
    fn inaccessible_device_suggests_the_kvm_group() {
        let f = facts(
            fixtures::CPUINFO_INTEL_VMX,
            LoadedModules::parse_proc_modules(fixtures::MODULES_INTEL),
            KvmFacts::unavailable(DeviceState::Inaccessible("Permission denied".into())),
            fixtures::MOUNTINFO_V1,
        );
        let device = evaluate(&f)
            .into_iter()
            .find(|c| c.id == "kvm.device")
            .unwrap();
        assert_eq!(device.status, Status::Fail);
        assert!(device.hint.unwrap().contains("kvm"));
    }

    #[test]
    fn v2_without_memory_controller_fails_it() {
        let mut f = facts(
            fixtures::CPUINFO_INTEL_VMX,
            LoadedModules::parse_proc_modules(fixtures::MODULES_INTEL),
            usable_kvm(),
            fixtures::MOUNTINFO_V2,
        );
        f.cgroups = CgroupFacts::new(
            CgroupLayout::parse_mountinfo(fixtures::MOUNTINFO_V2).with_v2_controllers("cpu pids"),
        );
        let checks = evaluate(&f);
        assert_eq!(status_of(&checks, "cgroups.memory"), Status::Fail);
        assert_eq!(status_of(&checks, "cgroups.cpuset"), Status::Warn);
        assert_eq!(
            status_of(&checks, "cgroups.freezer"),
            Status::Pass,
            "built into v2"
        );
    }

    #[test]
    fn no_cgroups_and_no_tun_or_bridge() {
        let mut f = facts(
            fixtures::CPUINFO_INTEL_VMX,
            LoadedModules::parse_proc_modules(fixtures::MODULES_INTEL),
            usable_kvm(),
            "",
        );
        f.tun.present = false;
        f.bridge = false;
        f.max_user_namespaces = Some(0);
        let checks = evaluate(&f);
        assert_eq!(status_of(&checks, "cgroups.mode"), Status::Fail);
        assert!(!checks.iter().any(|c| c.id == "cgroups.memory"));
        assert_eq!(status_of(&checks, "net.tun"), Status::Warn);
        assert_eq!(status_of(&checks, "net.bridge"), Status::Warn);
        assert_eq!(status_of(&checks, "namespaces.user"), Status::Warn);
    }
}
