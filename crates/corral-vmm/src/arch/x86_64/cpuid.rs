//! The CPUID a vCPU sees: what KVM supports, with this vCPU's topology and APIC id, the KVM
//! hypervisor leaves, and (on hosts whose KVM emulates guest kernel code) without the instruction
//! families that emulator cannot execute.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMETERS: u32 = 0x4;
const LEAF_EXTENDED_FEATURES: u32 = 0x7;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
const LEAF_ADDRESS_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXTENDED_APIC: u32 = 0x8000_001e;

/// "KVMKVMKVM\0\0\0": Linux then uses kvm-clock and the other paravirtual features of leaf
/// 0x40000001 (which KVM fills in).
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

const ECX_POPCNT: u32 = 1 << 23;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;
const ECX_RDRAND: u32 = 1 << 30;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const EBX7_FSGSBASE: u32 = 1 << 0;
const EBX7_AVX2: u32 = 1 << 5;
const EBX7_ERMS: u32 = 1 << 9;
const EBX7_RDSEED: u32 = 1 << 18;
const EBX7_SMAP: u32 = 1 << 20;
const EDX7_FSRM: u32 = 1 << 4;
/// KVM paravirtual features that work without hypercalls (kvm-clock, no-op port delays, async
/// page faults, steal time, PV EOI, stable clock bit). The others (PV unhalt, TLB flush, IPIs,
/// sched yield, poll control) are driven by VMCALL/VMMCALL, which an emulating KVM mishandles:
/// with them Linux hangs bringing up its second CPU.
const KVM_FEATURES_WITHOUT_HYPERCALLS: u32 =
    (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 24);
/// AMD's "FXSAVE/FXRSTOR always save the error pointers": lets Linux skip a workaround made of
/// instructions (fnclex, fild) the emulator rejects.
const EBX_XSAVEERPTR: u32 = 1 << 2;

/// Whether this host's KVM runs guest ring-0 code in its instruction emulator: the CPU has no
/// VT-x/AMD-V (e.g. KVM through the `kvm_pvm` module). Such a KVM still reports features its
/// emulator cannot execute, so they are hidden from the guest.
pub fn host_kvm_emulates_kernel_code() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    corral_host::cpu::CpuInfo::parse(&cpuinfo)
        .virt_extension()
        .is_none()
}

/// How the vCPUs are laid out and what to hide.
#[derive(Clone, Copy, Debug)]
pub struct CpuidPolicy {
    /// All vCPUs are cores of one socket, one thread per core.
    pub vcpu_count: u8,
    pub hide_unemulated: bool,
}

/// The CPUID for vCPU `index`, derived from KVM's supported CPUID. Fails only if the topology
/// subleaves do not fit in a CPUID list (KVM's limit of entries).
pub fn vcpu_cpuid(
    supported: &CpuId,
    index: u8,
    policy: CpuidPolicy,
) -> Result<CpuId, vmm_sys_util::fam::Error> {
    let mut cpuid = supported.clone();
    add_core_level(&mut cpuid)?;
    let count = u32::from(policy.vcpu_count);
    let apic_id = u32::from(index);
    // Bits of the x2APIC id that number cores within the package.
    let core_bits = 32 - (count.max(1) - 1).leading_zeros();

    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (count << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
                if policy.hide_unemulated {
                    entry.ecx &= !(ECX_POPCNT
                        | ECX_XSAVE
                        | ECX_OSXSAVE
                        | ECX_AVX
                        | ECX_RDRAND
                        | ECX_TSC_DEADLINE);
                }
            }
            LEAF_CACHE_PARAMETERS => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
                let shared = if (entry.eax >> 5) & 0x7 >= 3 {
                    count - 1
                } else {
                    0
                };
                entry.eax = (entry.eax & 0x3fff) | ((count - 1) << 26) | (shared << 14);
            }
            LEAF_EXTENDED_FEATURES if entry.index == 0 && policy.hide_unemulated => {
                entry.ebx &= !(EBX7_FSGSBASE | EBX7_AVX2 | EBX7_ERMS | EBX7_RDSEED | EBX7_SMAP);
                entry.edx &= !EDX7_FSRM;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => topology_entry(entry, apic_id, count, core_bits),
            LEAF_HYPERVISOR => {
                entry.eax = entry.eax.max(LEAF_HYPERVISOR + 1);
                [entry.ebx, entry.ecx, entry.edx] = KVM_SIGNATURE;
            }
            LEAF_KVM_FEATURES if policy.hide_unemulated => {
                entry.eax &= KVM_FEATURES_WITHOUT_HYPERCALLS;
            }
            LEAF_ADDRESS_SIZES => {
                // AMD: ECX[15:12] APIC id bits for cores, ECX[7:0] cores in the package - 1.
                entry.ecx = (entry.ecx & !0xf0ff) | (core_bits << 12) | (count - 1);
                if policy.hide_unemulated {
                    entry.ebx |= EBX_XSAVEERPTR;
                }
            }
            LEAF_AMD_EXTENDED_APIC => {
                // AMD topology: extended APIC id, core id (one thread per core), node 0.
                (entry.eax, entry.ebx, entry.ecx, entry.edx) = (apic_id, apic_id, 0, 0);
            }
            _ => {}
        }
    }
    Ok(cpuid)
}

/// Gives leaves 0xB and 0x1F (those KVM reports) their core level, subleaf 1, when KVM left it
/// out: KVM reports only subleaf 0 of them ("a valid topology is indicated by the presence of
/// subleaf 1"), as Firecracker's CPUID normalisation also knows. Without it Linux finds no core
/// level and puts each vCPU in a package of its own (`smpboot: Max logical packages: 2`): the
/// vCPUs share no cache, so the scheduler wakes a task on the other vCPU with an IPI and
/// balances load between "packages" (bench/vmm-start/README.md). [`topology_entry`] fills it
/// in.
fn add_core_level(cpuid: &mut CpuId) -> Result<(), vmm_sys_util::fam::Error> {
    for leaf in [LEAF_TOPOLOGY, LEAF_TOPOLOGY_V2] {
        let has = |subleaf: u32| {
            cpuid
                .as_slice()
                .iter()
                .any(|e| e.function == leaf && e.index == subleaf)
        };
        if has(0) && !has(1) {
            cpuid.push(kvm_cpuid_entry2 {
                function: leaf,
                index: 1,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            })?;
        }
    }
    Ok(())
}

/// Leaf 0xB/0x1F: level 0 is SMT (one thread per core), level 1 is core (all vCPUs).
fn topology_entry(entry: &mut kvm_cpuid_entry2, apic_id: u32, count: u32, core_bits: u32) {
    const LEVEL_SMT: u32 = 1;
    const LEVEL_CORE: u32 = 2;
    entry.edx = apic_id;
    (entry.eax, entry.ebx, entry.ecx) = match entry.index {
        0 => (0, 1, LEVEL_SMT << 8),
        1 => (core_bits, count, (LEVEL_CORE << 8) | 1),
        level => (0, 0, level),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0,
            ebx: 0x0000_0800,
            ecx: ECX_POPCNT | ECX_RDRAND,
            edx: EDX_HTT,
            ..Default::default()
        }
    }

    #[test]
    fn each_vcpu_gets_its_apic_id_and_the_topology() {
        let supported = CpuId::from_entries(&[
            entry(LEAF_FEATURES, 0),
            entry(LEAF_TOPOLOGY, 0),
            entry(LEAF_TOPOLOGY, 1),
            entry(LEAF_HYPERVISOR, 0),
        ])
        .unwrap();
        let policy = CpuidPolicy {
            vcpu_count: 4,
            hide_unemulated: true,
        };
        let cpuid = vcpu_cpuid(&supported, 3, policy).unwrap();
        let leaf = |f: u32, i: u32| {
            *cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == f && e.index == i)
                .unwrap()
        };
        let features = leaf(LEAF_FEATURES, 0);
        assert_eq!(features.ebx >> 24, 3, "apic id");
        assert_eq!((features.ebx >> 16) & 0xff, 4, "logical processor count");
        assert_eq!(features.ebx & 0xffff, 0x0800, "clflush size kept");
        assert_ne!(features.ecx & ECX_HYPERVISOR, 0);
        assert_eq!(
            features.ecx & (ECX_POPCNT | ECX_RDRAND),
            0,
            "unemulated hidden"
        );
        let core = leaf(LEAF_TOPOLOGY, 1);
        assert_eq!((core.eax, core.ebx, core.edx), (2, 4, 3));
        let hv = leaf(LEAF_HYPERVISOR, 0);
        assert_eq!([hv.ebx, hv.ecx, hv.edx], KVM_SIGNATURE);

        let single = vcpu_cpuid(
            &supported,
            0,
            CpuidPolicy {
                vcpu_count: 1,
                hide_unemulated: false,
            },
        )
        .unwrap();
        let features = single.as_slice()[0];
        assert_eq!(features.edx & EDX_HTT, 0);
        assert_ne!(
            features.ecx & ECX_POPCNT,
            0,
            "kept when the host executes it"
        );
    }

    /// KVM reports leaves 0xB and 0x1F with subleaf 0 only: the core level is added, so both
    /// vCPUs are cores of one package (Linux: one logical package, a shared cache).
    #[test]
    fn the_core_level_is_added_when_kvm_reports_subleaf_0_only() {
        let subleaf_0 = |function| kvm_cpuid_entry2 {
            function,
            index: 0,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            ..Default::default()
        };
        let supported = CpuId::from_entries(&[
            entry(LEAF_FEATURES, 0),
            subleaf_0(LEAF_TOPOLOGY),
            subleaf_0(LEAF_TOPOLOGY_V2),
        ])
        .unwrap();
        let policy = CpuidPolicy {
            vcpu_count: 2,
            hide_unemulated: true,
        };
        for index in 0..2u8 {
            let cpuid = vcpu_cpuid(&supported, index, policy).unwrap();
            for leaf in [LEAF_TOPOLOGY, LEAF_TOPOLOGY_V2] {
                let level = |subleaf| {
                    *cpuid
                        .as_slice()
                        .iter()
                        .find(|e| e.function == leaf && e.index == subleaf)
                        .unwrap()
                };
                let (smt, core) = (level(0), level(1));
                assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8), (0, 1, 1), "SMT level");
                // Core level: 1 bit of APIC id for the cores, 2 of them, type core (2).
                assert_eq!((core.eax, core.ebx, core.ecx), (1, 2, (2 << 8) | 1));
                assert_eq!(core.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
                assert_eq!((smt.edx, core.edx), (u32::from(index), u32::from(index)));
                // The package id Linux derives (APIC id >> the core level's shift) is 0 for both.
                assert_eq!(u32::from(index) >> core.eax, 0);
            }
            let count = |leaf| {
                cpuid
                    .as_slice()
                    .iter()
                    .filter(|e| e.function == leaf)
                    .count()
            };
            assert_eq!((count(LEAF_TOPOLOGY), count(LEAF_TOPOLOGY_V2)), (2, 2));
        }
        // A KVM that reports subleaf 1 itself keeps it (filled in, not duplicated).
        let full = CpuId::from_entries(&[
            subleaf_0(LEAF_TOPOLOGY),
            kvm_cpuid_entry2 {
                index: 1,
                ..subleaf_0(LEAF_TOPOLOGY)
            },
        ])
        .unwrap();
        let cpuid = vcpu_cpuid(&full, 1, policy).unwrap();
        assert_eq!(cpuid.as_slice().len(), 2);
    }
}
