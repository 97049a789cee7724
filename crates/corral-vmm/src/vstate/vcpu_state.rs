//! A vCPU's complete KVM state, saved while it is paused and restored into a fresh vCPU, in the
//! order KVM requires (after Firecracker's `vstate/vcpu.rs`).
//!
//! Saving: `KVM_GET_MP_STATE` first (it makes KVM accept pending APIC events, which changes the
//! LAPIC), `KVM_GET_VCPU_EVENTS` last. Restoring: CPUID before MSRs and sregs (KVM checks them
//! against the guest's CPUID), sregs before the LAPIC (the APIC base), the LAPIC before the
//! MSRs (`IA32_TSC_DEADLINE` only sticks in TSC-deadline mode), events last.
//! The FPU and SSE state is part of the XSAVE area (its legacy region), so it is not saved twice.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

/// `IA32_MCG_CTL`: KVM lists it but refuses writes when the guest has no MCG_CTL_P.
const MSR_IA32_MCG_CTL: u32 = 0x17b;
/// Hyper-V's synthetic debugger MSRs (`HV_X64_MSR_SYNDBG_*`): listed, not state to carry.
const HV_SYNDBG_MSRS: std::ops::RangeInclusive<u32> = 0x4000_00f1..=0x4000_00f5;

#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("cannot {action} the {what} of vCPU {index}")]
    Kvm {
        action: &'static str,
        what: &'static str,
        index: u8,
        source: kvm_ioctls::Error,
    },
    #[error("cannot read the list of MSRs KVM saves: {0}")]
    MsrList(kvm_ioctls::Error),
    #[error("vCPU {index}: too many {what} entries in the state")]
    TooMany { index: u8, what: &'static str },
    #[error("KVM refused MSR {msr:#x} of vCPU {index}")]
    MsrRefused { index: u8, msr: u32 },
    #[error(
        "this host's XSAVE area is {size} bytes, more than the {max} corral snapshots hold yet"
    )]
    XsaveTooLarge { size: usize, max: usize },
}

/// Everything KVM holds for one vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub msrs: Vec<kvm_msr_entry>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub vcpu_events: kvm_vcpu_events,
}

/// The MSRs to save: KVM's list without those it lists but cannot restore.
pub fn msrs_to_save(kvm: &Kvm) -> Result<Vec<u32>, VcpuStateError> {
    let list = kvm.get_msr_index_list().map_err(VcpuStateError::MsrList)?;
    Ok(list
        .as_slice()
        .iter()
        .copied()
        .filter(|&msr| msr != MSR_IA32_MCG_CTL && !HV_SYNDBG_MSRS.contains(&msr))
        .collect())
}

/// Refuses hosts whose XSAVE area does not fit `kvm_xsave`: `KVM_SET_XSAVE` would read past it.
pub fn check_xsave_size(vm: &VmFd) -> Result<(), VcpuStateError> {
    let max = std::mem::size_of::<kvm_xsave>();
    let size = usize::try_from(vm.check_extension_int(Cap::Xsave2)).unwrap_or(0);
    if size > max {
        return Err(VcpuStateError::XsaveTooLarge { size, max });
    }
    Ok(())
}

fn kvm_error(
    action: &'static str,
    what: &'static str,
    index: u8,
) -> impl Fn(kvm_ioctls::Error) -> VcpuStateError {
    move |source| VcpuStateError::Kvm {
        action,
        what,
        index,
        source,
    }
}

/// Reads the state of a vCPU that is not running. `msr_indices` from [`msrs_to_save`]; the MSRs
/// KVM cannot read on this host are left out (they hold nothing KVM could give back).
pub fn save(fd: &mut VcpuFd, index: u8, msr_indices: &[u32]) -> Result<VcpuState, VcpuStateError> {
    let get = |what| kvm_error("read", what, index);
    // A vCPU stopped right after an I/O exit completes that I/O only on its next KVM_RUN; with
    // immediate_exit that KVM_RUN finishes it and returns at once (EINTR), so the registers
    // saved below hold its result.
    fd.set_kvm_immediate_exit(1);
    let _ = fd.run();
    fd.set_kvm_immediate_exit(0);

    let mp_state = fd.get_mp_state().map_err(get("MP state"))?;
    let regs = fd.get_regs().map_err(get("registers"))?;
    let sregs = fd.get_sregs().map_err(get("special registers"))?;
    let xsave = fd.get_xsave().map_err(get("XSAVE area"))?;
    let xcrs = fd.get_xcrs().map_err(get("XCRs"))?;
    let debug_regs = fd.get_debug_regs().map_err(get("debug registers"))?;
    let lapic = fd.get_lapic().map_err(get("local APIC"))?;
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(get("CPUID"))?
        .as_slice()
        .to_vec();
    let msrs = read_msrs(fd, index, msr_indices)?;
    let vcpu_events = fd.get_vcpu_events().map_err(get("pending events"))?;
    Ok(VcpuState {
        cpuid,
        msrs,
        mp_state,
        regs,
        sregs,
        xsave,
        xcrs,
        debug_regs,
        lapic,
        vcpu_events,
    })
}

/// Reads `indices`; `KVM_GET_MSRS` stops at the first MSR it cannot read, which is skipped.
fn read_msrs(
    fd: &VcpuFd,
    index: u8,
    indices: &[u32],
) -> Result<Vec<kvm_msr_entry>, VcpuStateError> {
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&msr| kvm_msr_entry {
                index: msr,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|_| VcpuStateError::TooMany { index, what: "MSR" })?;
        let read = fd
            .get_msrs(&mut msrs)
            .map_err(kvm_error("read", "MSRs", index))?;
        saved.extend_from_slice(&msrs.as_slice()[..read]);
        if read < rest.len() {
            tracing::debug!(
                "vCPU {index}: KVM cannot read MSR {:#x}; not saved",
                rest[read]
            );
        }
        rest = rest.get(read + 1..).unwrap_or_default();
    }
    Ok(saved)
}

/// Writes `state` into a fresh vCPU of a VM whose irqchip exists.
pub fn restore(fd: &VcpuFd, index: u8, state: &VcpuState) -> Result<(), VcpuStateError> {
    let set = |what| kvm_error("restore", what, index);
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| VcpuStateError::TooMany {
        index,
        what: "CPUID",
    })?;
    fd.set_cpuid2(&cpuid).map_err(set("CPUID"))?;
    fd.set_mp_state(state.mp_state).map_err(set("MP state"))?;
    fd.set_regs(&state.regs).map_err(set("registers"))?;
    fd.set_sregs(&state.sregs)
        .map_err(set("special registers"))?;
    // SAFETY: `check_xsave_size` ran for this VM before any vCPU was restored: KVM's XSAVE
    // area is no larger than `kvm_xsave`, so KVM reads only within `state.xsave`.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(set("XSAVE area"))?;
    fd.set_xcrs(&state.xcrs).map_err(set("XCRs"))?;
    fd.set_debug_regs(&state.debug_regs)
        .map_err(set("debug registers"))?;
    fd.set_lapic(&state.lapic).map_err(set("local APIC"))?;
    let msrs = Msrs::from_entries(&state.msrs)
        .map_err(|_| VcpuStateError::TooMany { index, what: "MSR" })?;
    let written = fd.set_msrs(&msrs).map_err(set("MSRs"))?;
    if let Some(refused) = state.msrs.get(written) {
        return Err(VcpuStateError::MsrRefused {
            index,
            msr: refused.index,
        });
    }
    fd.set_vcpu_events(&state.vcpu_events)
        .map_err(set("pending events"))
}
