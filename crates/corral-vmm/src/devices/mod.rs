//! Emulated devices and the buses they sit on.
//!
//! The [`DeviceManager`] owns both buses and every interrupt line. It outlives guest restarts:
//! on a restart each device goes back to its power-on state and the interrupt lines are
//! registered with the new VM. Devices are state machines whose state is a plain serialisable
//! struct (`*State`), kept apart from their host-side handles, so snapshots can save them later.
//!
//! Virtio devices sit behind virtio-mmio transports: each gets a 4 KiB slot from
//! [`interrupt::MmioAllocator`] and a GSI from [`interrupt::GsiAllocator`] (in the order of
//! [`virtio_slots`]), is inserted in the MMIO bus, and raises its interrupt through an
//! [`interrupt::IrqLine`]; the MP table already routes GSIs 5-23. The guest learns of them from
//! `virtio_mmio.device=` entries on its command line ([`VirtioSlot::cmdline_entry`]).
//!
//! [`DeviceStates`] is what a snapshot holds of them: the legacy devices' state (the ACPI PM
//! registers act at once and hold none) and each virtio device's
//! ([`virtio::mmio::VirtioDeviceState`]), saved with its I/O thread paused so that guest memory
//! holds no half-done request until the memory is saved too
//! ([`DeviceManager::resume_virtio`]).

pub mod bus;
pub mod interrupt;
pub mod legacy;
pub mod virtio;
pub mod vm_generation;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use virtio::block_counters::BlockCounters;

use crate::vstate::memory::GuestMemoryMmap;
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use crate::config::{MacAddress, VmConfig};
use bus::{lock, Bus, BusOverlap};
use interrupt::{
    GsiAllocator, InterruptError, IrqLine, MmioAllocator, IRQ_COM1, IRQ_KEYBOARD, MMIO_SLOT_BYTES,
};
use legacy::acpi_pm::{AcpiPm, ACPI_PM_PORT, ACPI_PM_PORT_LEN};
use legacy::debug_exit::{DebugExit, DebugExitState, DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_LEN};
use legacy::forbidden_call::{ForbiddenCall, FORBIDDEN_CALL_PORT, FORBIDDEN_CALL_PORT_LEN};
use legacy::i8042::{I8042State, I8042, I8042_PORT, I8042_PORT_LEN};
use legacy::serial::{Com1State, SerialDevice, SerialOutput, COM1_PORT, COM1_PORT_LEN};
use virtio::mmio::{MmioTransport, TransportError, VirtioDeviceState};
use virtio::VirtioDevice;
use vm_generation::{VmGeneration, VmGenerationError};

use crate::exit::StopSender;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Interrupt(#[from] InterruptError),
    #[error(transparent)]
    Bus(#[from] BusOverlap),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("cannot attach disk {path}")]
    Disk {
        path: PathBuf,
        source: corral_disk::DiskError,
    },
    #[error(transparent)]
    Tap(#[from] virtio::tap::TapError),
    #[error(transparent)]
    Vsock(#[from] virtio::vsock::VsockError),
    #[error(transparent)]
    Worker(#[from] virtio::worker::WorkerError),
    #[error(
        "the snapshot has {saved} virtio devices, this VM has {present}; restore with the \
         configuration saved in the snapshot"
    )]
    VirtioCount { saved: usize, present: usize },
    #[error("the saved COM1 state cannot be restored")]
    Com1State(#[source] vm_superio::serial::Error<std::io::Error>),
    #[error(transparent)]
    VmGeneration(#[from] VmGenerationError),
}

/// What a snapshot holds of the devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceStates {
    pub com1: Com1State,
    pub i8042: I8042State,
    pub debug_exit: DebugExitState,
    /// In the order of their slots.
    pub virtio: Vec<VirtioDeviceState>,
}

/// Where a virtio-mmio device lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioSlot {
    pub base: u64,
    pub gsi: u32,
}

impl VirtioSlot {
    /// How Linux learns of the device (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`).
    pub fn cmdline_entry(&self) -> String {
        format!("virtio_mmio.device=4K@{:#x}:{}", self.base, self.gsi)
    }
}

/// The slots of `count` virtio devices, in order.
pub fn virtio_slots(count: usize) -> Result<Vec<VirtioSlot>, InterruptError> {
    let mut mmio = MmioAllocator::default();
    let mut gsis = GsiAllocator::default();
    (0..count)
        .map(|_| {
            Ok(VirtioSlot {
                base: mmio.allocate()?,
                gsi: gsis.allocate()?,
            })
        })
        .collect()
}

/// The write locks of the VM's writable disks, apart from the disks (which their I/O threads
/// own): a live migration hands them to the destination once the VM is paused for good, and
/// takes them back if it fails.
#[derive(Debug, Default)]
pub struct DiskLocks(Vec<corral_disk::LockHandle>);

impl DiskLocks {
    /// Lets another process open the disks for writing; on failure none is released.
    pub fn release(&self) -> Result<(), DeviceError> {
        for (index, handle) in self.0.iter().enumerate() {
            if let Err(source) = handle.release() {
                self.retake_first(index);
                return Err(DeviceError::Disk {
                    path: handle.path().to_path_buf(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// Takes the disks back after a failed migration. A disk another process took meanwhile is
    /// logged: the VM goes on (its guest keeps its disk), unprotected from that writer.
    pub fn retake(&self) {
        self.retake_first(self.0.len());
    }

    fn retake_first(&self, count: usize) {
        for handle in &self.0[..count] {
            if let Err(err) = handle.retake() {
                tracing::error!(
                    "cannot lock disk {} again after the migration failed: {}",
                    handle.path().display(),
                    corral_host::error_chain(&err)
                );
            }
        }
    }
}

/// The virtio devices a VM was given, and what of its disks lives apart from them.
pub struct OpenedDevices {
    pub devices: Vec<Box<dyn VirtioDevice>>,
    pub disk_locks: DiskLocks,
    /// Each disk's counters, by device name.
    pub disk_counters: Vec<(String, Arc<BlockCounters>)>,
}

/// Opens the host side of every virtio device `config` asks for: disks, then network
/// interfaces, then the entropy device, then vsock (the order of their slots); and the handles
/// on the disks' locks and counters.
pub fn open_virtio_devices(config: &VmConfig) -> Result<OpenedDevices, DeviceError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut locks = DiskLocks::default();
    let mut disk_counters = Vec::new();
    for (index, disk) in config.disks.iter().enumerate() {
        if disk.format.is_none() {
            tracing::warn!(
                "disk {}: no format given, detected from the file's contents; give format=raw or \
                 format=qcow2 to stop a guest that writes a qcow2 header into a raw disk from \
                 changing how the next start opens it",
                disk.path.display()
            );
        }
        let options = corral_disk::OpenOptions {
            format: disk.format,
            writable: !disk.readonly,
            backing: match &disk.allow_backing {
                None => corral_disk::BackingPolicy::Any,
                Some(places) => corral_disk::BackingPolicy::Within(places.clone()),
            },
            locking: corral_disk::Locking::Lock,
        };
        let mut image =
            corral_disk::open(&disk.path, options).map_err(|source| DeviceError::Disk {
                path: disk.path.clone(),
                source,
            })?;
        locks.0.extend(image.take_lock_handle());
        let name = format!("virtio-blk{index}");
        let block = virtio::block::Block::new(name.clone(), image, disk.serial.clone());
        disk_counters.push((name, block.counters()));
        devices.push(Box::new(block));
    }
    for (index, nic) in config.nics.iter().enumerate() {
        let tap = virtio::tap::Tap::open(nic.tap.as_deref().unwrap_or("ctap%d"))?;
        if let Some(bridge) = &nic.bridge {
            tap.attach_to_bridge(bridge)?;
        }
        tap.set_up()?;
        // Callers choose missing MACs first (`VmConfig::with_chosen_macs`), so snapshots keep them.
        let mac = nic.mac.unwrap_or_else(MacAddress::random_local);
        tracing::info!("virtio-net{index}: tap {} with MAC {mac}", tap.name());
        devices.push(Box::new(virtio::net::Net::new(
            format!("virtio-net{index}"),
            Box::new(tap),
            mac,
        )));
    }
    if config.rng {
        devices.push(Box::<virtio::rng::Rng>::default());
    }
    if let Some(vsock) = &config.vsock {
        devices.push(Box::new(virtio::vsock::Vsock::new(
            vsock.cid,
            &vsock.socket,
        )?));
    }
    Ok(OpenedDevices {
        devices,
        disk_locks: locks,
        disk_counters,
    })
}

pub struct DeviceManager {
    pub pio_bus: Arc<Bus>,
    pub mmio_bus: Arc<Bus>,
    irq_lines: Vec<IrqLine>,
    virtio: Vec<(VirtioSlot, Arc<Mutex<MmioTransport>>)>,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub debug_exit: Arc<Mutex<DebugExit>>,
    vm_generation: VmGeneration,
}

impl DeviceManager {
    /// Creates the legacy devices and maps them on the port I/O bus (with the test-only
    /// forbidden-call port when asked), and puts each virtio device behind a virtio-mmio
    /// transport on the MMIO bus.
    pub fn new(
        serial_output: SerialOutput,
        stop: StopSender,
        virtio_devices: Vec<Box<dyn VirtioDevice>>,
        forbidden_call_port: bool,
    ) -> Result<Self, DeviceError> {
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
        if forbidden_call_port {
            pio_bus.insert(
                u64::from(FORBIDDEN_CALL_PORT),
                FORBIDDEN_CALL_PORT_LEN,
                Arc::new(Mutex::new(ForbiddenCall)),
            )?;
        }
        let mut mmio_bus = Bus::new("MMIO");
        let (vm_generation, acpi_event_irq) = VmGeneration::new()?;
        let mut irq_lines = vec![com1_irq, keyboard_irq, acpi_event_irq];
        let mut virtio = Vec::new();
        let slots = virtio_slots(virtio_devices.len())?;
        for (device, slot) in virtio_devices.into_iter().zip(slots) {
            let line = IrqLine::new(slot.gsi)?;
            let interrupt = virtio::Interrupt::new(line.trigger());
            let transport = Arc::new(Mutex::new(MmioTransport::new(device, interrupt)?));
            mmio_bus.insert(slot.base, MMIO_SLOT_BYTES, transport.clone())?;
            irq_lines.push(line);
            virtio.push((slot, transport));
        }
        Ok(DeviceManager {
            pio_bus: Arc::new(pio_bus),
            mmio_bus: Arc::new(mmio_bus),
            irq_lines,
            virtio,
            serial,
            i8042,
            debug_exit,
            vm_generation,
        })
    }

    /// Starts every virtio device's I/O thread (see [`virtio::worker::Worker::start`]).
    pub fn start_workers(&self) -> Result<(), DeviceError> {
        for (_, transport) in &self.virtio {
            lock(transport).start_worker()?;
        }
        Ok(())
    }

    /// The `virtio_mmio.device=` command-line entries of the virtio devices.
    pub fn virtio_cmdline(&self) -> Vec<String> {
        self.virtio
            .iter()
            .map(|(slot, _)| slot.cmdline_entry())
            .collect()
    }

    /// Connects every interrupt line and queue notification to a (new) VM and its memory.
    pub fn attach(&self, vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), DeviceError> {
        for line in &self.irq_lines {
            line.register(vm)?;
        }
        for (slot, transport) in &self.virtio {
            lock(transport).attach(vm, slot.base, memory);
        }
        Ok(())
    }

    /// The devices' state, for a snapshot of a paused VM, taken before the vCPUs' and the
    /// VM's: from here no device raises an interrupt those could miss. Console input and the
    /// virtio devices' I/O threads wait until [`DeviceManager::resume_io`], which must follow
    /// once guest memory is saved.
    pub fn save_state(&self) -> DeviceStates {
        let mut serial = lock(&self.serial);
        serial.hold_input();
        DeviceStates {
            com1: serial.state(),
            i8042: lock(&self.i8042).state.clone(),
            debug_exit: lock(&self.debug_exit).state.clone(),
            virtio: self
                .virtio
                .iter()
                .map(|(_, transport)| lock(transport).pause_and_save())
                .collect(),
        }
    }

    /// Lets console input and the virtio devices' I/O threads go on: after
    /// [`DeviceManager::save_state`], and once a VM is built or restored.
    pub fn resume_io(&self) {
        lock(&self.serial).release_input();
        for (_, transport) in &self.virtio {
            lock(transport).resume_worker();
        }
    }

    /// Puts the devices back in a saved state, after the VM's and the vCPUs' interrupt
    /// controllers (an interrupt a device raises from here would be dropped by a later
    /// `KVM_SET_LAPIC`) and before the vCPUs run. A virtio device that is not the one saved is
    /// refused.
    pub fn restore_state(&self, states: &DeviceStates) -> Result<(), DeviceError> {
        if states.virtio.len() != self.virtio.len() {
            return Err(DeviceError::VirtioCount {
                saved: states.virtio.len(),
                present: self.virtio.len(),
            });
        }
        lock(&self.serial)
            .restore(&states.com1)
            .map_err(DeviceError::Com1State)?;
        lock(&self.i8042).state = states.i8042.clone();
        lock(&self.debug_exit).state = states.debug_exit.clone();
        for ((_, transport), saved) in self.virtio.iter().zip(&states.virtio) {
            lock(transport).restore(saved)?;
        }
        Ok(())
    }

    /// Gives a booting VM its VM generation ID (see [`vm_generation`]).
    pub fn write_vm_generation_id(&self, memory: &GuestMemoryMmap) -> Result<(), DeviceError> {
        Ok(self.vm_generation.write_new_id(memory)?)
    }

    /// Gives a VM restored from a snapshot a new VM generation ID and tells the guest, after
    /// [`DeviceManager::restore_state`].
    pub fn fork_vm_generation(&self, memory: &GuestMemoryMmap) -> Result<(), DeviceError> {
        Ok(self.vm_generation.fork(memory)?)
    }

    /// Returns every device to its power-on state, for a guest restart.
    pub fn reset(&self) {
        lock(&self.serial).reset();
        lock(&self.i8042).reset();
        lock(&self.debug_exit).reset();
        for (_, transport) in &self.virtio {
            lock(transport).reset();
        }
    }
}
