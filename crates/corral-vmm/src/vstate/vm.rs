//! One KVM VM: its file descriptor, memory, in-kernel interrupt controllers and PIT.

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use super::memory::{self, MemoryError};
use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot create a KVM virtual machine: {0}")]
    Create(kvm_ioctls::Error),
    #[error("cannot set up the in-kernel {what}")]
    Irqchip {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

pub struct Vm {
    // Field order matters: the VM fd is closed before its memory is unmapped.
    pub fd: VmFd,
    pub memory: GuestMemoryMmap,
}

impl Vm {
    pub fn new(kvm: &Kvm, memory_size: u64) -> Result<Vm, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        let memory = memory::create(memory_size)?;
        memory::register(&fd, &memory)?;
        let irqchip = |what| move |source| VmError::Irqchip { what, source };
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(irqchip("TSS area"))?;
        // PIC + I/O APIC + local APICs in the kernel: interrupts never need a trip to userspace.
        fd.create_irq_chip().map_err(irqchip("irqchip"))?;
        // The speaker port (0x61) is emulated in the kernel too; Linux's PIT calibration polls it.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(irqchip("PIT"))?;
        Ok(Vm { fd, memory })
    }
}
