//! Fixture files captured from (or shaped like) real hosts, for the unit tests.

pub const CPUINFO_INTEL_VMX: &str = include_str!("fixtures/cpuinfo-intel-vmx.txt");
pub const CPUINFO_AMD_SVM: &str = include_str!("fixtures/cpuinfo-amd-svm.txt");
pub const CPUINFO_VM_NO_VIRT: &str = include_str!("fixtures/cpuinfo-vm-no-virt.txt");
pub const CPUINFO_NO_VIRT: &str = include_str!("fixtures/cpuinfo-no-virt.txt");
pub const MODULES_INTEL: &str = include_str!("fixtures/modules-intel.txt");
pub const MODULES_AMD: &str = include_str!("fixtures/modules-amd.txt");
pub const MOUNTINFO_V1: &str = include_str!("fixtures/mountinfo-v1.txt");
pub const MOUNTINFO_V2: &str = include_str!("fixtures/mountinfo-v2.txt");
pub const MOUNTINFO_HYBRID: &str = include_str!("fixtures/mountinfo-hybrid.txt");
