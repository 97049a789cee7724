//! `corral guest detect`: which hypervisor and which container technology a machine runs in,
//! with the ids `systemd-detect-virt` uses.
//!
//! Container file markers (`/.dockerenv`, `/run/.containerenv`) are only believed when the process
//! is not in the host's initial namespaces: images built from container layers often keep such a
//! file when booted as VMs, and `systemd-detect-virt` then wrongly reports a container.

use serde::Serialize;

use crate::fsroot::FsRoot;
use crate::namespaces::{self, NamespaceFact};

/// The value corral's container engine puts in `container=` for a container's PID 1.
pub const CORRAL_CONTAINER_ID: &str = "corral";

/// Hypervisor CPUID signatures (leaf 0x40000000, EBX:ECX:EDX) and their systemd ids.
const CPUID_SIGNATURES: &[(&[u8], &str)] = &[
    (b"KVMKVMKVM\0\0\0", "kvm"),
    (b"Linux KVM Hv", "kvm"),
    (b"TCGTCGTCGTCG", "qemu"),
    (b"Microsoft Hv", "microsoft"),
    (b"VMwareVMware", "vmware"),
    (b"XenVMMXenVMM", "xen"),
    (b"VBoxVBoxVBox", "oracle"),
    (b"bhyve bhyve ", "bhyve"),
    (b"ACRNACRNACRN", "acrn"),
    (b" lrpepyh  vr", "parallels"),
    (b"QNXQVMBSQG\0\0", "qnx"),
];

/// DMI vendor/product substrings and their systemd ids, most specific first.
const DMI_VENDORS: &[(&str, &str)] = &[
    ("Amazon EC2", "amazon"),
    ("Google", "google"),
    ("KVM", "kvm"),
    ("QEMU", "qemu"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "oracle"),
    ("VirtualBox", "oracle"),
    ("Oracle Corporation", "oracle"),
    ("Xen", "xen"),
    ("Bochs", "bochs"),
    ("Parallels", "parallels"),
    ("BHYVE", "bhyve"),
    ("Hyper-V", "microsoft"),
    ("Microsoft Corporation Virtual Machine", "microsoft"),
];

/// DMI files read, in order.
const DMI_FILES: &[&str] = &["sys_vendor", "product_name", "board_vendor", "bios_vendor"];

/// Executes CPUID; a trait so detection can be tested with any signature.
pub trait Cpuid {
    /// Returns EAX, EBX, ECX, EDX of `leaf` (subleaf 0).
    fn cpuid(&self, leaf: u32) -> [u32; 4];
}

/// The CPU this process runs on.
pub struct NativeCpuid;

impl Cpuid for NativeCpuid {
    fn cpuid(&self, leaf: u32) -> [u32; 4] {
        #[cfg(target_arch = "x86_64")]
        {
            let r = std::arch::x86_64::__cpuid(leaf);
            [r.eax, r.ebx, r.ecx, r.edx]
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = leaf;
            [0; 4]
        }
    }
}

/// What was found, with the evidence for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// systemd-style hypervisor id (`kvm`, `vmware`, ..., `vm-other`), if in a VM.
    pub vm: Option<String>,
    /// Container technology id (`corral`, `docker`, `podman`, ..., `container-other`).
    pub container: Option<String>,
    /// Human-readable lines saying what each source showed.
    pub evidence: Vec<String>,
}

impl Detection {
    /// What `systemd-detect-virt` prints without options: the container if any, else the VM.
    pub fn primary(&self) -> Option<&str> {
        self.container.as_deref().or(self.vm.as_deref())
    }
}

/// Detects virtualization from the root `root` (normally `/`) and the CPU `cpuid`.
pub fn detect(root: &FsRoot, cpuid: &dyn Cpuid) -> Detection {
    let mut detection = Detection::default();
    detection.vm = detect_vm(root, cpuid, &mut detection.evidence);
    detection.container = detect_container(root, &mut detection.evidence);
    detection
}

fn detect_vm(root: &FsRoot, cpuid: &dyn Cpuid, evidence: &mut Vec<String>) -> Option<String> {
    let dmi = dmi_vendor(root, evidence);
    let hypervisor_bit = cpuid.cpuid(1)[2] & (1 << 31) != 0;
    let from_cpuid = if hypervisor_bit {
        let [_, ebx, ecx, edx] = cpuid.cpuid(0x4000_0000);
        let signature: Vec<u8> = [ebx, ecx, edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        let printable = String::from_utf8_lossy(&signature)
            .trim_end_matches('\0')
            .to_string();
        let id = CPUID_SIGNATURES
            .iter()
            .find(|(sig, _)| *sig == signature.as_slice())
            .map(|(_, id)| id.to_string());
        evidence.push(format!(
            "cpuid: hypervisor bit set, signature {printable:?} ({})",
            id.as_deref().unwrap_or("unknown")
        ));
        Some(id.unwrap_or_else(|| "vm-other".to_string()))
    } else {
        evidence.push("cpuid: hypervisor bit clear".to_string());
        None
    };
    match (from_cpuid, dmi) {
        // Clouds built on KVM name themselves only in DMI; systemd reports the cloud.
        (Some(cpu), Some(dmi)) if cpu == "kvm" && (dmi == "amazon" || dmi == "google") => Some(dmi),
        (Some(cpu), Some(dmi)) if cpu == "vm-other" => Some(dmi),
        (Some(cpu), _) => Some(cpu),
        (None, dmi) => dmi,
    }
}

fn dmi_vendor(root: &FsRoot, evidence: &mut Vec<String>) -> Option<String> {
    for file in DMI_FILES {
        let path = root.join(&format!("/sys/class/dmi/id/{file}"));
        let Ok(value) = std::fs::read_to_string(&path) else {
            continue;
        };
        let value = value.trim();
        if let Some((_, id)) = DMI_VENDORS
            .iter()
            .find(|(needle, _)| value.contains(needle))
        {
            evidence.push(format!("dmi: {file} is {value:?} ({id})"));
            return Some(id.to_string());
        }
    }
    evidence.push("dmi: no hypervisor vendor in /sys/class/dmi/id".to_string());
    None
}

fn detect_container(root: &FsRoot, evidence: &mut Vec<String>) -> Option<String> {
    // An explicit statement by the container manager wins.
    match std::fs::read(root.join("/proc/1/environ")) {
        Ok(environ) => {
            if let Some(value) = environ
                .split(|b| *b == 0)
                .find_map(|var| var.strip_prefix(b"container="))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .filter(|v| !v.is_empty())
            {
                evidence.push(format!("/proc/1/environ: container={value}"));
                return Some(value);
            }
            evidence.push("/proc/1/environ: no container= variable".to_string());
        }
        Err(err) => evidence.push(format!("/proc/1/environ: unreadable ({err})")),
    }
    if let Ok(value) = std::fs::read_to_string(root.join("/run/systemd/container")) {
        let value = value.trim();
        if !value.is_empty() {
            evidence.push(format!("/run/systemd/container: {value}"));
            return Some(value.to_string());
        }
    }
    if root.join("/proc/vz").exists() && !root.join("/proc/bc").exists() {
        evidence.push("/proc/vz without /proc/bc: OpenVZ container".to_string());
        return Some("openvz".to_string());
    }
    if let Ok(release) = std::fs::read_to_string(root.join("/proc/sys/kernel/osrelease")) {
        if release.contains("Microsoft") || release.contains("WSL") {
            evidence.push(format!("kernel release {:?}: WSL", release.trim()));
            return Some("wsl".to_string());
        }
    }

    let namespaces = namespaces::read(&root.join("/proc/self/ns"));
    let foreign: Vec<&NamespaceFact> = namespaces
        .iter()
        .filter(|ns| ns.is_initial() == Some(false))
        .collect();
    let marker = [("/run/.containerenv", "podman"), ("/.dockerenv", "docker")]
        .into_iter()
        .find(|(path, _)| root.join(path).exists());
    if foreign.is_empty() {
        let known = namespaces
            .iter()
            .filter(|ns| ns.is_initial().is_some())
            .count();
        evidence.push(format!(
            "namespaces: all {known} checked are the host's initial ones"
        ));
        if let Some((path, tech)) = marker {
            evidence.push(format!(
                "{path} exists but is stale: a {tech} container would not share the host's namespaces"
            ));
        }
        return None;
    }
    let kinds: Vec<&str> = foreign.iter().map(|ns| ns.kind.as_str()).collect();
    evidence.push(format!("namespaces: not the host's ({})", kinds.join(", ")));
    match marker {
        Some((path, tech)) => {
            evidence.push(format!("{path} exists ({tech})"));
            Some(tech.to_string())
        }
        None => Some("container-other".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    struct FakeCpuid(Option<&'static [u8; 12]>);

    impl Cpuid for FakeCpuid {
        fn cpuid(&self, leaf: u32) -> [u32; 4] {
            let word =
                |s: &[u8; 12], i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
            match (leaf, self.0) {
                (1, Some(_)) => [0, 0, 1 << 31, 0],
                (0x4000_0000, Some(sig)) => [0x4000_0001, word(sig, 0), word(sig, 4), word(sig, 8)],
                _ => [0; 4],
            }
        }
    }

    /// A fake root with a `/proc/self/ns` whose pid namespace is initial or not.
    fn root_with_ns(initial: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("proc/self/ns");
        std::fs::create_dir_all(&ns).unwrap();
        let pid = if initial { 0xEFFF_FFFCu64 } else { 4026532500 };
        symlink(format!("pid:[{pid}]"), ns.join("pid")).unwrap();
        symlink("uts:[4026531838]", ns.join("uts")).unwrap();
        dir
    }

    fn write(root: &Path, path: &str, content: &[u8]) {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn kvm_signature() {
        let dir = root_with_ns(true);
        let d = detect(
            &FsRoot::new(dir.path()),
            &FakeCpuid(Some(b"KVMKVMKVM\0\0\0")),
        );
        assert_eq!(d.vm.as_deref(), Some("kvm"));
        assert_eq!(d.container, None);
        assert_eq!(d.primary(), Some("kvm"));
    }

    #[test]
    fn each_hypervisor_signature_maps_to_its_id() {
        let dir = root_with_ns(true);
        for (sig, id) in [
            (b"Microsoft Hv", "microsoft"),
            (b"VMwareVMware", "vmware"),
            (b"XenVMMXenVMM", "xen"),
            (b"VBoxVBoxVBox", "oracle"),
            (b"bhyve bhyve ", "bhyve"),
            (b"TCGTCGTCGTCG", "qemu"),
        ] {
            let d = detect(&FsRoot::new(dir.path()), &FakeCpuid(Some(sig)));
            assert_eq!(d.vm.as_deref(), Some(id));
        }
        let d = detect(&FsRoot::new(dir.path()), &FakeCpuid(Some(b"SomethingNew")));
        assert_eq!(d.vm.as_deref(), Some("vm-other"));
    }

    #[test]
    fn dmi_names_the_cloud_on_kvm() {
        let dir = root_with_ns(true);
        write(dir.path(), "/sys/class/dmi/id/sys_vendor", b"Amazon EC2\n");
        let d = detect(
            &FsRoot::new(dir.path()),
            &FakeCpuid(Some(b"KVMKVMKVM\0\0\0")),
        );
        assert_eq!(d.vm.as_deref(), Some("amazon"));
    }

    #[test]
    fn dmi_alone_detects_qemu() {
        let dir = root_with_ns(true);
        write(dir.path(), "/sys/class/dmi/id/sys_vendor", b"QEMU\n");
        let d = detect(&FsRoot::new(dir.path()), &FakeCpuid(None));
        assert_eq!(d.vm.as_deref(), Some("qemu"));
    }

    #[test]
    fn bare_metal_is_none() {
        let dir = root_with_ns(true);
        write(dir.path(), "/sys/class/dmi/id/sys_vendor", b"Dell Inc.\n");
        let d = detect(&FsRoot::new(dir.path()), &FakeCpuid(None));
        assert_eq!(
            d,
            Detection {
                evidence: d.evidence.clone(),
                ..Default::default()
            }
        );
        assert_eq!(d.primary(), None);
    }

    #[test]
    fn corral_container_from_pid1_environment() {
        let dir = root_with_ns(false);
        write(
            dir.path(),
            "/proc/1/environ",
            b"PATH=/bin\0container=corral\0HOME=/\0",
        );
        let d = detect(
            &FsRoot::new(dir.path()),
            &FakeCpuid(Some(b"KVMKVMKVM\0\0\0")),
        );
        assert_eq!(d.container.as_deref(), Some(CORRAL_CONTAINER_ID));
        assert_eq!(d.primary(), Some("corral"), "a container wins over the VM");
    }

    #[test]
    fn systemd_container_file() {
        let dir = root_with_ns(false);
        write(dir.path(), "/run/systemd/container", b"systemd-nspawn\n");
        let d = detect(&FsRoot::new(dir.path()), &FakeCpuid(None));
        assert_eq!(d.container.as_deref(), Some("systemd-nspawn"));
    }

    #[test]
    fn podman_and_docker_markers_in_a_foreign_pid_namespace() {
        let dir = root_with_ns(false);
        write(dir.path(), "/run/.containerenv", b"");
        let d = detect(&FsRoot::new(dir.path()), &FakeCpuid(None));
        assert_eq!(d.container.as_deref(), Some("podman"));

        let dir = root_with_ns(false);
        write(dir.path(), "/.dockerenv", b"");
        let d = detect(&FsRoot::new(dir.path()), &FakeCpuid(None));
        assert_eq!(d.container.as_deref(), Some("docker"));
    }

    #[test]
    fn unknown_container_from_namespaces_alone() {
        let dir = root_with_ns(false);
        let d = detect(&FsRoot::new(dir.path()), &FakeCpuid(None));
        assert_eq!(d.container.as_deref(), Some("container-other"));
    }

    #[test]
    fn stale_docker_marker_in_host_namespaces_is_not_a_container() {
        let dir = root_with_ns(true);
        write(dir.path(), "/.dockerenv", b"");
        let d = detect(
            &FsRoot::new(dir.path()),
            &FakeCpuid(Some(b"KVMKVMKVM\0\0\0")),
        );
        assert_eq!(d.container, None);
        assert!(
            d.evidence.iter().any(|e| e.contains("stale")),
            "{:?}",
            d.evidence
        );
        assert_eq!(d.primary(), Some("kvm"));
    }
}
