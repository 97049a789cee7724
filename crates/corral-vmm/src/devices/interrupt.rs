//! Interrupt routing: device interrupt lines into KVM's in-kernel irqchip through irqfds, and the
//! allocation of GSIs and MMIO slots for devices added at boot (virtio-mmio).
//!
//! Every device interrupt is an [`IrqLine`]: an eventfd registered with KVM as an irqfd for one
//! GSI, so raising it from any thread is one `write(2)` and never a vCPU exit. GSIs 0-15 are the
//! ISA IRQs (routed to both the PIC and the I/O APIC by KVM's default routing), 16-23 are I/O
//! APIC-only. The eventfd survives a guest restart and is registered again with the new VM.

use std::sync::Arc;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::super::arch::x86_64::layout::{IOAPIC_PINS, MMIO_DEVICES_END, MMIO_DEVICES_START};

/// The keyboard controller's IRQ.
pub const IRQ_KEYBOARD: u32 = 1;
/// COM1's IRQ.
pub const IRQ_COM1: u32 = 4;
/// The first GSI handed to devices that are not legacy PC devices.
const FIRST_DEVICE_GSI: u32 = 5;
/// The last I/O APIC pin: the ACPI generic event device's, which tells the guest of a new VM
/// generation ID (see `vm_generation`).
pub const GSI_ACPI_EVENT: u32 = IOAPIC_PINS as u32 - 1;
/// Each MMIO device gets one 4 KiB page (the virtio-mmio register block).
pub const MMIO_SLOT_BYTES: u64 = 0x1000;

#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    #[error("cannot create an eventfd for interrupt {gsi}")]
    EventFd { gsi: u32, source: std::io::Error },
    #[error("cannot register interrupt {gsi} with KVM (irqfd)")]
    Register { gsi: u32, source: kvm_ioctls::Error },
    #[error("no interrupt line left for another device (all {0} I/O APIC pins are in use)")]
    NoGsiLeft(u8),
    #[error("no MMIO address space left for another device")]
    NoMmioLeft,
}

/// An edge-triggered interrupt line: writing the eventfd injects the GSI.
pub struct IrqLine {
    gsi: u32,
    event: Arc<EventFd>,
}

impl IrqLine {
    pub fn new(gsi: u32) -> Result<IrqLine, InterruptError> {
        let event =
            EventFd::new(EFD_NONBLOCK).map_err(|source| InterruptError::EventFd { gsi, source })?;
        Ok(IrqLine {
            gsi,
            event: Arc::new(event),
        })
    }

    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// Connects the line to a VM's irqchip.
    pub fn register(&self, vm: &VmFd) -> Result<(), InterruptError> {
        vm.register_irqfd(&self.event, self.gsi)
            .map_err(|source| InterruptError::Register {
                gsi: self.gsi,
                source,
            })
    }

    /// A handle devices keep to raise the line.
    pub fn trigger(&self) -> IrqTrigger {
        IrqTrigger(self.event.clone())
    }

    /// How many times the line was raised since the last call (no VM reads it in unit tests).
    #[cfg(test)]
    pub fn take_raised(&self) -> u64 {
        self.event.read().unwrap_or(0)
    }
}

/// Raises an [`IrqLine`].
#[derive(Clone)]
pub struct IrqTrigger(Arc<EventFd>);

impl vm_superio::Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Hands out the GSIs above the legacy ISA devices, one per device.
pub struct GsiAllocator {
    next: u32,
}

impl Default for GsiAllocator {
    fn default() -> Self {
        GsiAllocator {
            next: FIRST_DEVICE_GSI,
        }
    }
}

impl GsiAllocator {
    pub fn allocate(&mut self) -> Result<u32, InterruptError> {
        if self.next >= GSI_ACPI_EVENT {
            return Err(InterruptError::NoGsiLeft(IOAPIC_PINS));
        }
        self.next += 1;
        Ok(self.next - 1)
    }
}

/// Hands out 4 KiB MMIO slots in the hole below 4 GiB.
pub struct MmioAllocator {
    next: u64,
}

impl Default for MmioAllocator {
    fn default() -> Self {
        MmioAllocator {
            next: MMIO_DEVICES_START,
        }
    }
}

impl MmioAllocator {
    pub fn allocate(&mut self) -> Result<u64, InterruptError> {
        if self.next + MMIO_SLOT_BYTES > MMIO_DEVICES_END {
            return Err(InterruptError::NoMmioLeft);
        }
        self.next += MMIO_SLOT_BYTES;
        Ok(self.next - MMIO_SLOT_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_gsis_skip_the_legacy_irqs_and_run_out() {
        let mut gsis = GsiAllocator::default();
        let all: Vec<u32> = std::iter::from_fn(|| gsis.allocate().ok()).collect();
        assert_eq!(all, (5..23).collect::<Vec<_>>());
        assert!(!all.contains(&IRQ_COM1) && !all.contains(&IRQ_KEYBOARD));
        assert!(!all.contains(&GSI_ACPI_EVENT));
    }

    #[test]
    fn mmio_slots_are_disjoint_pages_in_the_gap() {
        let mut slots = MmioAllocator::default();
        let first = slots.allocate().unwrap();
        let second = slots.allocate().unwrap();
        assert_eq!(first, MMIO_DEVICES_START);
        assert_eq!(second - first, MMIO_SLOT_BYTES);
    }
}
