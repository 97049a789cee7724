//! The VM generation ID (Microsoft's "Virtual Machine Generation ID", which Linux's vmgenid
//! driver reads): 16 random bytes in guest memory, described by the ACPI `VGEN` device. Every
//! boot gets a fresh one, and so does every restore from a snapshot, followed by the interrupt of
//! the ACPI generic event device, whose `_EVT` notifies `VGEN`: the guest then reseeds its random
//! number generator with the new ID ("crng reseeded due to virtual machine fork"). Without it,
//! VMs restored from one snapshot would go on from the same RNG state and draw the same keys and
//! nonces. A live migration's destination keeps the ID: the VM goes on there, it is not copied.

use vm_memory::{Bytes, GuestAddress};

use super::interrupt::{InterruptError, IrqLine, IrqTrigger, GSI_ACPI_EVENT};
use crate::arch::x86_64::layout::{
    ACPI_MAX_BYTES, ACPI_START, MPTABLE_START, VM_GENERATION_ID_START,
};
use crate::vstate::memory::GuestMemoryMmap;

/// The ID's size: a GUID.
pub const ID_BYTES: usize = 16;
const _: () = assert!(
    VM_GENERATION_ID_START >= ACPI_START + ACPI_MAX_BYTES
        && VM_GENERATION_ID_START + ID_BYTES as u64 <= MPTABLE_START,
    "the VM generation ID lies between the ACPI tables and the MP table"
);

#[derive(Debug, thiserror::Error)]
pub enum VmGenerationError {
    #[error("cannot draw a VM generation ID from the host's random number generator")]
    Random(#[source] getrandom::Error),
    #[error("cannot write the VM generation ID into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
    #[error("cannot tell the guest of its new VM generation ID (the ACPI event interrupt)")]
    Notify(#[source] std::io::Error),
}

/// The generation ID's interrupt line (the ACPI generic event device's).
pub struct VmGeneration {
    event: IrqTrigger,
}

impl VmGeneration {
    /// The device and the line its notification raises, which the caller connects to the VM.
    pub fn new() -> Result<(VmGeneration, IrqLine), InterruptError> {
        let line = IrqLine::new(GSI_ACPI_EVENT)?;
        Ok((
            VmGeneration {
                event: line.trigger(),
            },
            line,
        ))
    }

    /// Gives a booting VM its first ID.
    pub fn write_new_id(&self, memory: &GuestMemoryMmap) -> Result<(), VmGenerationError> {
        let mut id = [0u8; ID_BYTES];
        getrandom::fill(&mut id).map_err(VmGenerationError::Random)?;
        memory
            .write_slice(&id, GuestAddress(VM_GENERATION_ID_START))
            .map_err(VmGenerationError::Write)
    }

    /// Gives a VM restored from a snapshot a new ID and notifies the guest, once the restored
    /// interrupt controllers are in place (the edge waits in the I/O APIC until a vCPU runs).
    pub fn fork(&self, memory: &GuestMemoryMmap) -> Result<(), VmGenerationError> {
        self.write_new_id(memory)?;
        vm_superio::Trigger::trigger(&self.event).map_err(VmGenerationError::Notify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_in(memory: &GuestMemoryMmap) -> [u8; ID_BYTES] {
        let mut id = [0u8; ID_BYTES];
        memory
            .read_slice(&mut id, GuestAddress(VM_GENERATION_ID_START))
            .unwrap();
        id
    }

    #[test]
    fn each_boot_and_each_fork_gets_a_new_id_and_only_a_fork_notifies() {
        let memory = crate::vstate::memory::create(1 << 20, false).unwrap();
        let (generation, line) = VmGeneration::new().unwrap();
        assert_eq!(line.gsi(), GSI_ACPI_EVENT);

        generation.write_new_id(&memory).unwrap();
        let booted = id_in(&memory);
        assert_ne!(booted, [0; ID_BYTES]);
        assert_eq!(line.take_raised(), 0);

        generation.fork(&memory).unwrap();
        let forked = id_in(&memory);
        assert_ne!(forked, booted);
        assert_eq!(line.take_raised(), 1);
        generation.fork(&memory).unwrap();
        assert_ne!(id_in(&memory), forked);
        assert_eq!(line.take_raised(), 1);
    }
}
