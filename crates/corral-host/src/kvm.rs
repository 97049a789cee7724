//! What `/dev/kvm` offers: API version, the capabilities corral's VMM needs, vCPU limits.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};
use serde::Serialize;

/// The KVM API version every stable kernel reports.
pub const EXPECTED_API_VERSION: i32 = 12;

/// Capabilities corral's VMM relies on, with the names `host check` prints.
pub const REQUIRED_CAPABILITIES: &[(Cap, &str)] = &[
    (Cap::Irqchip, "irqchip"),
    (Cap::UserMemory, "user-memory"),
    (Cap::SetTssAddr, "tss-address"),
    (Cap::SetIdentityMapAddr, "identity-map-address"),
    (Cap::ExtCpuid, "ext-cpuid"),
    (Cap::Pit2, "pit2"),
    (Cap::Irqfd, "irqfd"),
    (Cap::Ioeventfd, "ioeventfd"),
    (Cap::MpState, "mp-state"),
    (Cap::VcpuEvents, "vcpu-events"),
    (Cap::ImmediateExit, "immediate-exit"),
];

/// State of the `/dev/kvm` device node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "kebab-case")]
pub enum DeviceState {
    /// The node does not exist.
    Missing,
    /// The node exists but cannot be opened read-write (the error says why).
    Inaccessible(String),
    /// The node opens read-write.
    ReadWrite,
}

/// One capability and whether KVM has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapabilityFact {
    pub name: String,
    pub present: bool,
}

/// Everything corral learns from `/dev/kvm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KvmFacts {
    pub device: DeviceState,
    pub api_version: Option<i32>,
    pub capabilities: Vec<CapabilityFact>,
    /// Hard limit of vCPUs per VM (`KVM_CAP_MAX_VCPUS`).
    pub max_vcpus: Option<usize>,
    /// Recommended vCPUs per VM (`KVM_CAP_NR_VCPUS`).
    pub recommended_vcpus: Option<usize>,
    /// Whether a VM could actually be created; the error text when not.
    pub create_vm: Option<Result<(), String>>,
}

impl KvmFacts {
    /// Facts for a host where `/dev/kvm` is in `device` state and nothing more could be learnt.
    pub fn unavailable(device: DeviceState) -> Self {
        Self {
            device,
            api_version: None,
            capabilities: Vec::new(),
            max_vcpus: None,
            recommended_vcpus: None,
            create_vm: None,
        }
    }

    /// True when KVM is usable for running VMs: device read-write, API 12, a VM can be created.
    pub fn usable(&self) -> bool {
        self.device == DeviceState::ReadWrite
            && self.api_version == Some(EXPECTED_API_VERSION)
            && matches!(self.create_vm, Some(Ok(())))
    }

    /// Names of required capabilities KVM lacks.
    pub fn missing_capabilities(&self) -> Vec<&str> {
        self.capabilities
            .iter()
            .filter(|c| !c.present)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Probes the KVM device at `path` (normally `/dev/kvm`).
    pub fn probe(path: &Path) -> Self {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(file) => {
                use std::os::unix::fs::FileTypeExt;
                let is_char_device = file.metadata().map(|m| m.file_type().is_char_device());
                if !matches!(is_char_device, Ok(true)) {
                    return Self::unavailable(DeviceState::Inaccessible(
                        "it is not a character device".to_string(),
                    ));
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Self::unavailable(DeviceState::Missing)
            }
            Err(err) => return Self::unavailable(DeviceState::Inaccessible(err.to_string())),
        }
        let kvm = match Kvm::new_with_path(path_as_cstr(path).as_c_str()) {
            Ok(kvm) => kvm,
            Err(err) => return Self::unavailable(DeviceState::Inaccessible(err.to_string())),
        };
        let api_version = kvm.get_api_version();
        if api_version < 0 {
            return Self::unavailable(DeviceState::Inaccessible(
                "it does not answer KVM ioctls".to_string(),
            ));
        }
        Self {
            device: DeviceState::ReadWrite,
            api_version: Some(api_version),
            capabilities: REQUIRED_CAPABILITIES
                .iter()
                .map(|(cap, name)| CapabilityFact {
                    name: name.to_string(),
                    present: kvm.check_extension(*cap),
                })
                .collect(),
            max_vcpus: Some(kvm.get_max_vcpus()),
            recommended_vcpus: Some(kvm.get_nr_vcpus()),
            create_vm: Some(kvm.create_vm().map(drop).map_err(|e| e.to_string())),
        }
    }
}

fn path_as_cstr(path: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    // A path from the file system never holds a NUL byte; fall back to the default device if a
    // caller built one that does.
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap_or_else(|_| c"/dev/kvm".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_reported_as_missing() {
        let facts = KvmFacts::probe(Path::new("/nonexistent/dev/kvm"));
        assert_eq!(facts.device, DeviceState::Missing);
        assert!(!facts.usable());
    }

    #[test]
    fn a_char_device_that_is_not_kvm() {
        let facts = KvmFacts::probe(Path::new("/dev/null"));
        assert_eq!(
            facts.device,
            DeviceState::Inaccessible("it does not answer KVM ioctls".into())
        );
    }

    #[test]
    fn a_regular_file_is_not_kvm() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let facts = KvmFacts::probe(file.path());
        assert!(
            matches!(facts.device, DeviceState::Inaccessible(_)),
            "{facts:?}"
        );
        assert!(!facts.usable());
    }
}
