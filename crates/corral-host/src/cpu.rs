//! Facts about the host CPU, read from `/proc/cpuinfo`.

use std::collections::BTreeSet;

use serde::Serialize;

/// Hardware virtualization extension advertised by the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtExtension {
    /// Intel VT-x (`vmx` flag).
    Vmx,
    /// AMD-V (`svm` flag).
    Svm,
}

impl VirtExtension {
    /// The `/proc/cpuinfo` flag that announces this extension.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Vmx => "vmx",
            Self::Svm => "svm",
        }
    }

    /// The marketing name admins know it by.
    pub fn product_name(self) -> &'static str {
        match self {
            Self::Vmx => "Intel VT-x",
            Self::Svm => "AMD-V",
        }
    }
}

/// The flags that matter to corral, in the order `host info` prints them.
pub const RELEVANT_FLAGS: &[&str] = &[
    "vmx",
    "svm",
    "hypervisor",
    "lm",
    "nx",
    "pae",
    "ept",
    "npt",
    "vpid",
    "x2apic",
    "tsc_deadline_timer",
    "constant_tsc",
    "xsave",
    "avx2",
    "avx512f",
    "aes",
    "rdrand",
];

/// The CPU as `/proc/cpuinfo` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    /// `vendor_id` of the first processor, e.g. `GenuineIntel`.
    pub vendor: String,
    /// `model name` of the first processor.
    pub model_name: String,
    /// Number of logical processors listed.
    pub logical_cpus: usize,
    /// Flags of the first processor.
    pub flags: BTreeSet<String>,
}

impl CpuInfo {
    /// Parses the text of `/proc/cpuinfo` (x86 layout: `key<TAB>: value` lines, one block per
    /// logical processor). Unknown keys are ignored; missing keys leave fields empty.
    pub fn parse(text: &str) -> Self {
        let mut info = Self::default();
        let mut first_block = true;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                if line.trim().is_empty() && info.logical_cpus > 0 {
                    first_block = false;
                }
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if key == "processor" {
                info.logical_cpus += 1;
                continue;
            }
            if !first_block {
                continue;
            }
            match key {
                "vendor_id" => info.vendor = value.to_string(),
                "model name" => info.model_name = value.to_string(),
                "flags" => info.flags = value.split_whitespace().map(str::to_string).collect(),
                _ => {}
            }
        }
        info
    }

    /// True when the CPU lists `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains(flag)
    }

    /// The hardware virtualization extension the CPU advertises, if any.
    pub fn virt_extension(&self) -> Option<VirtExtension> {
        if self.has("vmx") {
            Some(VirtExtension::Vmx)
        } else if self.has("svm") {
            Some(VirtExtension::Svm)
        } else {
            None
        }
    }

    /// True when the CPU says it runs under a hypervisor (the `hypervisor` flag).
    pub fn is_virtualized(&self) -> bool {
        self.has("hypervisor")
    }

    /// The relevant flags this CPU has, in [`RELEVANT_FLAGS`] order.
    pub fn relevant_flags(&self) -> Vec<&'static str> {
        RELEVANT_FLAGS
            .iter()
            .copied()
            .filter(|f| self.has(f))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn intel_host_with_vmx() {
        let cpu = CpuInfo::parse(fixtures::CPUINFO_INTEL_VMX);
        assert_eq!(cpu.vendor, "GenuineIntel");
        assert_eq!(cpu.model_name, "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz");
        assert_eq!(cpu.logical_cpus, 2);
        assert_eq!(cpu.virt_extension(), Some(VirtExtension::Vmx));
        assert!(cpu.has("lm"));
        assert!(!cpu.is_virtualized());
    }

    #[test]
    fn amd_host_with_svm() {
        let cpu = CpuInfo::parse(fixtures::CPUINFO_AMD_SVM);
        assert_eq!(cpu.vendor, "AuthenticAMD");
        assert_eq!(cpu.virt_extension(), Some(VirtExtension::Svm));
        assert_eq!(cpu.logical_cpus, 1);
    }

    #[test]
    fn vm_without_extensions() {
        let cpu = CpuInfo::parse(fixtures::CPUINFO_VM_NO_VIRT);
        assert_eq!(cpu.virt_extension(), None);
        assert!(cpu.is_virtualized());
        assert_eq!(cpu.relevant_flags(), vec!["hypervisor", "lm", "nx", "pae"]);
    }

    #[test]
    fn only_the_first_processor_flags_count() {
        let text = "processor\t: 0\nflags\t\t: lm vmx\n\nprocessor\t: 1\nflags\t\t: lm\n";
        let cpu = CpuInfo::parse(text);
        assert_eq!(cpu.logical_cpus, 2);
        assert!(cpu.has("vmx"));
    }

    #[test]
    fn empty_text_gives_empty_facts() {
        let cpu = CpuInfo::parse("");
        assert_eq!(cpu, CpuInfo::default());
    }
}
