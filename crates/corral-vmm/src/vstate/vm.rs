//! One KVM VM: its file descriptor, memory, in-kernel interrupt controllers and PIT.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_config, kvm_pit_state2, KVM_CLOCK_TSC_STABLE,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use serde::{Deserialize, Serialize};

use super::memory::{self, GuestMemoryMmap, MemoryError};
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
    #[error("cannot {action} the VM's {what}")]
    State {
        action: &'static str,
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

/// The VM-wide KVM state: the in-kernel interrupt controllers, the PIT and the KVM clock.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

fn state_error(action: &'static str, what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::State {
        action,
        what,
        source,
    }
}

pub struct Vm {
    // Field order matters: the VM fd is closed before its memory is unmapped.
    pub fd: VmFd,
    pub memory: GuestMemoryMmap,
}

impl Vm {
    /// A VM with `memory_size` bytes of RAM; `track_dirty` turns on dirty-page tracking (see
    /// [`memory`]) for diff snapshots.
    pub fn new(kvm: &Kvm, memory_size: u64, track_dirty: bool) -> Result<Vm, VmError> {
        Vm::with_memory(kvm, memory::create(memory_size, track_dirty)?)
    }

    /// A VM whose RAM is `memory`, mapped already.
    pub fn with_memory(kvm: &Kvm, memory: GuestMemoryMmap) -> Result<Vm, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
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

impl Vm {
    /// Reads the VM-wide state; the vCPUs must be paused.
    pub fn save_state(&self) -> Result<VmState, VmError> {
        let chip = |chip_id, what| {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.fd
                .get_irqchip(&mut chip)
                .map_err(state_error("read", what))
                .map(|()| chip)
        };
        Ok(VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER, "master PIC")?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE, "slave PIC")?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC, "I/O APIC")?,
            pit: self.fd.get_pit2().map_err(state_error("read", "PIT"))?,
            clock: self
                .fd
                .get_clock()
                .map_err(state_error("read", "KVM clock"))?,
        })
    }

    /// Writes `state` into a new VM (after [`Vm::new`], before its vCPUs are restored).
    pub fn restore_state(&self, state: &VmState) -> Result<(), VmError> {
        self.fd
            .set_pit2(&state.pit)
            .map_err(state_error("restore", "PIT"))?;
        // TSC_STABLE describes the host the clock was read on; KVM decides it anew here.
        let clock = kvm_clock_data {
            flags: state.clock.flags & !KVM_CLOCK_TSC_STABLE,
            ..state.clock
        };
        self.fd
            .set_clock(&clock)
            .map_err(state_error("restore", "KVM clock"))?;
        for (chip, what) in [
            (&state.pic_master, "master PIC"),
            (&state.pic_slave, "slave PIC"),
            (&state.ioapic, "I/O APIC"),
        ] {
            self.fd
                .set_irqchip(chip)
                .map_err(state_error("restore", what))?;
        }
        Ok(())
    }
}
