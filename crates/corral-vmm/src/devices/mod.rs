//! Emulated devices and the buses they sit on.
//!
//! The [`DeviceManager`] owns both buses and every interrupt line. It outlives guest restarts:
//! on a restart each device goes back to its power-on state and the interrupt lines are
//! registered with the new VM. Devices are state machines whose state is a plain serialisable
//! struct (`*State`), kept apart from their host-side handles, so snapshots can save them later.
//!
//! MMIO devices (virtio-mmio, next) get a 4 KiB slot from [`interrupt::MmioAllocator`] and a GSI
//! from [`interrupt::GsiAllocator`], are inserted in the MMIO bus, and raise their interrupt
//! through an [`interrupt::IrqLine`]; the MP table already routes GSIs 5-23.

pub mod bus;
pub mod interrupt;
pub mod legacy;

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;

use bus::{lock, Bus, BusOverlap};
use interrupt::{InterruptError, IrqLine, IRQ_COM1, IRQ_KEYBOARD};
use legacy::acpi_pm::{AcpiPm, ACPI_PM_PORT, ACPI_PM_PORT_LEN};
use legacy::debug_exit::{DebugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_LEN};
use legacy::i8042::{I8042, I8042_PORT, I8042_PORT_LEN};
use legacy::serial::{SerialDevice, SerialOutput, COM1_PORT, COM1_PORT_LEN};

use crate::exit::StopSender;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Interrupt(#[from] InterruptError),
    #[error(transparent)]
    Bus(#[from] BusOverlap),
}

pub struct DeviceManager {
    pub pio_bus: Arc<Bus>,
    pub mmio_bus: Arc<Bus>,
    irq_lines: Vec<IrqLine>,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub debug_exit: Arc<Mutex<DebugExit>>,
}

impl DeviceManager {
    /// Creates the legacy devices and maps them on the port I/O bus.
    pub fn new(serial_output: SerialOutput, stop: StopSender) -> Result<Self, DeviceError> {
        let com1_irq = IrqLine::new(IRQ_COM1)?;
        let keyboard_irq = IrqLine::new(IRQ_KEYBOARD)?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            com1_irq.trigger(),
            serial_output,
        )));
        let i8042 = Arc::new(Mutex::new(I8042::new(keyboard_irq.trigger(), stop.clone())));
        let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(stop.clone())));
        let debug_exit = Arc::new(Mutex::new(DebugExit::new(stop)));

        let mut pio_bus = Bus::new("port I/O");
        pio_bus.insert(u64::from(COM1_PORT), COM1_PORT_LEN, serial.clone())?;
        pio_bus.insert(u64::from(I8042_PORT), I8042_PORT_LEN, i8042.clone())?;
        pio_bus.insert(u64::from(ACPI_PM_PORT), ACPI_PM_PORT_LEN, acpi_pm)?;
        pio_bus.insert(
            u64::from(DEBUG_EXIT_PORT),
            DEBUG_EXIT_PORT_LEN,
            debug_exit.clone(),
        )?;
        Ok(DeviceManager {
            pio_bus: Arc::new(pio_bus),
            mmio_bus: Arc::new(Bus::new("MMIO")),
            irq_lines: vec![com1_irq, keyboard_irq],
            serial,
            i8042,
            debug_exit,
        })
    }

    /// Connects every interrupt line to a (new) VM.
    pub fn attach(&self, vm: &VmFd) -> Result<(), DeviceError> {
        for line in &self.irq_lines {
            line.register(vm)?;
        }
        Ok(())
    }

    /// Returns every device to its power-on state, for a guest restart.
    pub fn reset(&self) {
        lock(&self.serial).reset();
        lock(&self.i8042).reset();
        lock(&self.debug_exit).reset();
    }
}
