//! Facts about the host, gathered once and shared by `host check` and `host info`.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cgroups::{self, CgroupLayout, CgroupMode, ControllerSupport};
use crate::cpu::{CpuInfo, VirtExtension};
use crate::kvm::KvmFacts;
use crate::modules::LoadedModules;
use crate::namespaces::{self, NamespaceFact};

/// Where the live system's pseudo-filesystems are; tests point these at fixture trees.
#[derive(Clone, Debug)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
    /// The directory where corral keeps its instances and volumes, when the caller has one.
    pub corral_root: Option<PathBuf>,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            corral_root: None,
        }
    }
}

/// The running kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelInfo {
    pub release: String,
    pub version: String,
    pub arch: String,
}

/// A device node corral needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub present: bool,
    /// Opens read-write (only meaningful when present).
    pub accessible: bool,
}

/// corral's own directory (its root), which holds definitions, consoles, logs and disks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CorralRootFacts {
    pub path: PathBuf,
    /// Permission bits; `None` when it does not exist yet.
    pub mode: Option<u32>,
}

impl CorralRootFacts {
    pub fn read(path: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        Self {
            path: path.to_path_buf(),
            mode: std::fs::metadata(path)
                .ok()
                .map(|meta| meta.permissions().mode() & 0o7777),
        }
    }
}

/// How this host's KVM runs guests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KvmBackend {
    /// VT-x/AMD-V through kvm_intel/kvm_amd; `nested` when the host is itself a VM.
    Hardware {
        extension: VirtExtension,
        nested: bool,
    },
    /// KVM without VT-x/AMD-V through a paravirtual module (e.g. `kvm_pvm`): guest kernel code
    /// runs in KVM's instruction emulator.
    Paravirtual { module: String },
    /// KVM works but neither of the above explains how.
    Unknown,
    /// KVM is not usable.
    Unusable,
}

/// The cgroup layout with its derived mode and controller availability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupFacts {
    pub mode: CgroupMode,
    pub controllers: BTreeMap<&'static str, Option<ControllerSupport>>,
    pub layout: CgroupLayout,
}

impl CgroupFacts {
    pub fn new(layout: CgroupLayout) -> Self {
        Self {
            mode: layout.mode(),
            controllers: layout.controllers(),
            layout,
        }
    }
}

/// Everything `host check` judges and `host info` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    pub kernel: KernelInfo,
    pub memory_total_bytes: Option<u64>,
    pub cpu: CpuInfo,
    pub modules: LoadedModules,
    pub kvm: KvmFacts,
    pub kvm_backend: KvmBackend,
    pub tun: DeviceNode,
    /// The bridge driver is loaded or built in.
    pub bridge: bool,
    pub namespaces: Vec<NamespaceFact>,
    /// `/proc/sys/user/max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    pub cgroups: CgroupFacts,
    pub corral_root: Option<CorralRootFacts>,
}

impl HostFacts {
    /// Reads the facts of the live host.
    pub fn gather(paths: &HostPaths) -> Self {
        let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let proc_modules = paths.proc.join("modules");
        let modules = if proc_modules.exists() {
            LoadedModules::parse_proc_modules(&read(proc_modules))
        } else {
            LoadedModules::from_sys_module(&paths.sys.join("module"))
        };
        let cpu = CpuInfo::parse(&read(paths.proc.join("cpuinfo")));
        let kvm = KvmFacts::probe(&paths.dev.join("kvm"));
        let kvm_backend = kvm_backend(&cpu, &modules, &kvm);
        let bridge = modules.contains("bridge")
            || paths.sys.join("class/net/bridge").exists()
            || paths.sys.join("module/bridge").exists();
        Self {
            kernel: KernelInfo {
                release: read(paths.proc.join("sys/kernel/osrelease"))
                    .trim()
                    .to_string(),
                version: read(paths.proc.join("sys/kernel/version"))
                    .trim()
                    .to_string(),
                arch: std::env::consts::ARCH.to_string(),
            },
            memory_total_bytes: parse_mem_total(&read(paths.proc.join("meminfo"))),
            cpu,
            modules,
            kvm,
            kvm_backend,
            tun: probe_char_device(&paths.dev.join("net/tun")),
            bridge,
            namespaces: namespaces::read(&paths.proc.join("self/ns")),
            max_user_namespaces: read(paths.proc.join("sys/user/max_user_namespaces"))
                .trim()
                .parse()
                .ok(),
            cgroups: CgroupFacts::new(cgroups::read_layout(&paths.proc)),
            corral_root: paths.corral_root.as_deref().map(CorralRootFacts::read),
        }
    }
}

/// Decides how KVM runs guests here from the CPU flags, the loaded modules and the probe.
pub fn kvm_backend(cpu: &CpuInfo, modules: &LoadedModules, kvm: &KvmFacts) -> KvmBackend {
    if !kvm.usable() {
        return KvmBackend::Unusable;
    }
    let hardware_module = modules.contains("kvm_intel") || modules.contains("kvm_amd");
    match cpu.virt_extension() {
        Some(extension) if hardware_module || !modules.contains("kvm_pvm") => {
            KvmBackend::Hardware {
                extension,
                nested: cpu.is_virtualized(),
            }
        }
        _ => match modules.kvm_modules().into_iter().find(|m| *m == "kvm_pvm") {
            Some(module) => KvmBackend::Paravirtual {
                module: module.to_string(),
            },
            None => KvmBackend::Unknown,
        },
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn probe_char_device(path: &Path) -> DeviceNode {
    let present = std::fs::metadata(path)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false);
    let accessible = present
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .is_ok();
    DeviceNode {
        path: path.to_path_buf(),
        present,
        accessible,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fixtures;
    use crate::kvm::{CapabilityFact, DeviceState, REQUIRED_CAPABILITIES};

    /// KVM facts of a healthy host.
    pub fn usable_kvm() -> KvmFacts {
        KvmFacts {
            device: DeviceState::ReadWrite,
            api_version: Some(12),
            capabilities: REQUIRED_CAPABILITIES
                .iter()
                .map(|(_, name)| CapabilityFact {
                    name: name.to_string(),
                    present: true,
                })
                .collect(),
            max_vcpus: Some(1024),
            recommended_vcpus: Some(2),
            create_vm: Some(Ok(())),
        }
    }

    #[test]
    fn intel_host_uses_hardware_virtualization() {
        let cpu = CpuInfo::parse(fixtures::CPUINFO_INTEL_VMX);
        let modules = LoadedModules::parse_proc_modules(fixtures::MODULES_INTEL);
        assert_eq!(
            kvm_backend(&cpu, &modules, &usable_kvm()),
            KvmBackend::Hardware {
                extension: VirtExtension::Vmx,
                nested: false
            }
        );
    }

    #[test]
    fn vm_with_svm_is_nested() {
        let mut cpu = CpuInfo::parse(fixtures::CPUINFO_AMD_SVM);
        cpu.flags.insert("hypervisor".into());
        let modules = LoadedModules::parse_proc_modules(fixtures::MODULES_AMD);
        assert_eq!(
            kvm_backend(&cpu, &modules, &usable_kvm()),
            KvmBackend::Hardware {
                extension: VirtExtension::Svm,
                nested: true
            }
        );
    }

    #[test]
    fn vm_without_extensions_but_kvm_pvm_is_paravirtual() {
        let cpu = CpuInfo::parse(fixtures::CPUINFO_VM_NO_VIRT);
        let modules = LoadedModules::from_names(["kvm", "kvm_pvm"]);
        assert_eq!(
            kvm_backend(&cpu, &modules, &usable_kvm()),
            KvmBackend::Paravirtual {
                module: "kvm_pvm".into()
            }
        );
    }

    #[test]
    fn no_kvm_device_means_unusable() {
        let cpu = CpuInfo::parse(fixtures::CPUINFO_NO_VIRT);
        let modules = LoadedModules::default();
        let kvm = KvmFacts::unavailable(DeviceState::Missing);
        assert_eq!(kvm_backend(&cpu, &modules, &kvm), KvmBackend::Unusable);
    }

    #[test]
    fn meminfo_total() {
        let text = "MemTotal:       24576000 kB\nMemFree:        100 kB\n";
        assert_eq!(parse_mem_total(text), Some(24576000 * 1024));
        assert_eq!(parse_mem_total("garbage"), None);
    }
}
