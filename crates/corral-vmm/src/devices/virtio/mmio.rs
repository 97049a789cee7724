//! The virtio-mmio transport, version 2 ("modern", virtio 1.x): one 4 KiB register page per
//! device, announced to Linux with `virtio_mmio.device=4K@ADDRESS:GSI` on the kernel command line.
//!
//! The transport is a state machine driven by the guest's register writes (on vCPU threads). Its
//! state ([`MmioState`]) is plain data so it can be saved; the host handles (queue eventfds, the
//! interrupt, guest memory) sit beside it. Queue notifications normally never reach this code:
//! each queue's eventfd is registered with KVM as an ioeventfd on the QueueNotify register, so
//! the write wakes the device's I/O thread directly. A write that does arrive here (no ioeventfd)
//! is forwarded to the same eventfd.
//!
//! Driver mistakes are contained: writes in the wrong state are ignored (and logged), a feature
//! set the device did not offer or without `VIRTIO_F_VERSION_1` does not get `FEATURES_OK`, and
//! queues outside guest memory or misaligned at `DRIVER_OK` leave the device in `NEEDS_RESET`.
//!
//! A snapshot saves a [`VirtioDeviceState`] per device ([`MmioTransport::pause_and_save`], with
//! the I/O thread paused) and a restore writes it back ([`MmioTransport::restore`]): a device the
//! driver had started is activated again with its queues where they stood, without the driver
//! setting it up again.

use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, VmFd};
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use crate::vstate::memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::worker::{QueueEvent, QueuePosition};
use super::{DeviceQueues, Interrupt, QueueError, VirtioDevice, FEATURE_VERSION_1};
use crate::devices::bus::BusDevice;

/// "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;
const VERSION_MODERN: u32 = 2;
/// "CRRL": corral's vendor ID.
const VENDOR_ID: u32 = u32::from_le_bytes(*b"CRRL");
/// Device-specific configuration starts here.
const CONFIG_SPACE_OFFSET: u64 = 0x100;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot create the notification eventfd of {device} queue {queue}")]
    EventFd {
        device: String,
        queue: usize,
        source: std::io::Error,
    },
    #[error(
        "queue notifications of {device} take the slower path through the vCPU thread, as KVM \
         refused their ioeventfd"
    )]
    IoEvent {
        device: String,
        source: kvm_ioctls::Error,
    },
    #[error(
        "cannot restore {device} from the snapshot: {what}; restore with the disks, network \
         interfaces and devices as they were when the snapshot was taken"
    )]
    Mismatch { device: String, what: String },
}

/// One queue as the driver configured it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub descriptor_table: u64,
    pub available_ring: u64,
    pub used_ring: u64,
}

/// The transport's register state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioState {
    pub status: u32,
    pub device_features_select: u32,
    pub driver_features_select: u32,
    pub driver_features: u64,
    pub queue_select: u32,
    pub queues: Vec<QueueConfig>,
}

impl MmioState {
    fn new(max_sizes: &[u16]) -> MmioState {
        MmioState {
            queues: max_sizes
                .iter()
                .map(|&max_size| QueueConfig {
                    max_size,
                    size: max_size,
                    ..QueueConfig::default()
                })
                .collect(),
            ..MmioState::default()
        }
    }

    fn has(&self, bits: u32) -> bool {
        self.status & bits == bits
    }
}

/// What a snapshot holds of one virtio device: who it is (checked on restore) and where its
/// transport and queues stand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioDeviceState {
    pub name: String,
    pub device_type: u32,
    /// The device-specific configuration space: a disk's capacity, a NIC's MAC, the guest CID.
    pub config: Vec<u8>,
    pub registers: MmioState,
    pub interrupt_status: u32,
    pub needs_reset: bool,
    /// Each queue's position; empty when the device was not active.
    pub positions: Vec<QueuePosition>,
}

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    pub state: MmioState,
    interrupt: Interrupt,
    queue_events: Vec<Arc<EventFd>>,
    memory: Option<GuestMemoryMmap>,
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        interrupt: Interrupt,
    ) -> Result<MmioTransport, TransportError> {
        let max_sizes = device.queue_max_sizes().to_vec();
        let queue_events = (0..max_sizes.len())
            .map(|queue| {
                EventFd::new(EFD_NONBLOCK)
                    .map(Arc::new)
                    .map_err(|source| TransportError::EventFd {
                        device: device.name().to_owned(),
                        queue,
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            state: MmioState::new(&max_sizes),
            device,
            interrupt,
            queue_events,
            memory: None,
        })
    }

    pub fn device_name(&self) -> &str {
        self.device.name()
    }

    /// Starts the device's I/O thread.
    pub fn start_worker(&mut self) -> Result<(), super::worker::WorkerError> {
        self.device.start_worker()
    }

    /// Connects the transport to a (new) VM: queue notifications at `base` + QueueNotify become
    /// ioeventfds where KVM allows, and queues are read from `memory`.
    pub fn attach(&mut self, vm: &VmFd, base: u64, memory: &GuestMemoryMmap) {
        let notify = IoEventAddress::Mmio(base + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY));
        for (index, event) in self.queue_events.iter().enumerate() {
            if let Err(source) = vm.register_ioevent(event.as_ref(), &notify, index as u32) {
                // Without ioeventfds every notification exits to the vCPU thread, which
                // forwards it to the same eventfd: slower, not broken.
                let err = TransportError::IoEvent {
                    device: self.device.name().to_owned(),
                    source,
                };
                tracing::warn!("{}", corral_host::error_chain(&err));
                break;
            }
        }
        self.set_memory(memory);
    }

    /// Pauses the device's I/O thread (between two requests) and returns the device's state.
    /// The thread stays paused until [`MmioTransport::resume_worker`].
    pub fn pause_and_save(&mut self) -> VirtioDeviceState {
        let positions = self.device.pause().unwrap_or_default();
        VirtioDeviceState {
            name: self.device.name().to_owned(),
            device_type: self.device.device_type(),
            config: self.device.common().config.clone(),
            registers: self.state.clone(),
            interrupt_status: self.interrupt.status(),
            needs_reset: self.interrupt.needs_reset(),
            positions,
        }
    }

    /// Lets the I/O thread paused by [`MmioTransport::pause_and_save`] go on.
    pub fn resume_worker(&mut self) {
        self.device.resume();
    }

    /// Puts the transport back in the state `saved` (after [`MmioTransport::attach`]) and, if
    /// the driver had started the device, activates it with its queues where they stood. A
    /// device that is not the one saved is refused.
    pub fn restore(&mut self, saved: &VirtioDeviceState) -> Result<(), TransportError> {
        let mismatch = |what: String| TransportError::Mismatch {
            device: self.device.name().to_owned(),
            what,
        };
        if saved.device_type != self.device.device_type() || saved.name != self.device.name() {
            return Err(mismatch(format!(
                "the snapshot has {} (virtio device type {}) in its place",
                saved.name, saved.device_type
            )));
        }
        if let Some(what) = self.device.config_mismatch(&saved.config) {
            return Err(mismatch(what));
        }
        if saved.registers.driver_features & !self.offered_features() != 0 {
            return Err(mismatch(
                "its driver uses features the device no longer offers (did a disk become \
                 read-only?)"
                    .to_owned(),
            ));
        }
        let saved_sizes = saved.registers.queues.iter().map(|queue| queue.max_size);
        if !saved_sizes.eq(self.device.queue_max_sizes().iter().copied()) {
            return Err(mismatch("its queues differ from the snapshot's".to_owned()));
        }
        self.state = saved.registers.clone();
        self.interrupt
            .restore(saved.interrupt_status, saved.needs_reset);
        if self.state.has(VIRTIO_CONFIG_S_DRIVER_OK) && !saved.needs_reset {
            self.activate(Some(&saved.positions));
        }
        Ok(())
    }

    /// The guest memory queues live in (set by [`MmioTransport::attach`]; fuzz targets set it
    /// directly).
    pub fn set_memory(&mut self, memory: &GuestMemoryMmap) {
        self.memory = Some(memory.clone());
    }

    /// Back to power-on state (guest restart, or the driver writing 0 to Status).
    pub fn reset(&mut self) {
        self.device.reset();
        self.state = MmioState::new(self.device.queue_max_sizes());
        self.interrupt.clear();
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        let index = self.state.queue_select as usize;
        self.state.queues.get_mut(index)
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | FEATURE_VERSION_1
    }

    fn read_register(&self, offset: u32) -> u32 {
        let state = &self.state;
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION_MODERN,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match state.device_features_select {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self
                .state
                .queues
                .get(state.queue_select as usize)
                .map_or(0, |queue| u32::from(queue.max_size)),
            VIRTIO_MMIO_QUEUE_READY => self
                .state
                .queues
                .get(state.queue_select as usize)
                .map_or(0, |queue| u32::from(queue.ready)),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => {
                let needs_reset = if self.interrupt.needs_reset() {
                    VIRTIO_CONFIG_S_NEEDS_RESET
                } else {
                    0
                };
                state.status | needs_reset
            }
            // The configuration never changes under the driver, so one generation suffices.
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => {
                tracing::debug!(
                    "{}: read of unknown register {offset:#x}",
                    self.device.name()
                );
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        // Feature negotiation happens between DRIVER and FEATURES_OK; queue setup between
        // FEATURES_OK and DRIVER_OK (virtio 1.2, 3.1.1).
        let negotiating =
            self.state.has(VIRTIO_CONFIG_S_DRIVER) && !self.state.has(VIRTIO_CONFIG_S_FEATURES_OK);
        let configuring_queues = self.state.has(VIRTIO_CONFIG_S_FEATURES_OK)
            && !self.state.has(VIRTIO_CONFIG_S_DRIVER_OK);
        let set_low = |old: u64| (old & !0xffff_ffff) | u64::from(value);
        let set_high = |old: u64| (old & 0xffff_ffff) | (u64::from(value) << 32);
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.state.device_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.state.driver_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES if negotiating => {
                let features = &mut self.state.driver_features;
                match self.state.driver_features_select {
                    0 => *features = set_low(*features),
                    1 => *features = set_high(*features),
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.state.queue_select = value,
            VIRTIO_MMIO_QUEUE_NUM if configuring_queues => {
                if let Some(queue) = self.selected_queue() {
                    queue.size = value as u16;
                }
            }
            VIRTIO_MMIO_QUEUE_READY if configuring_queues => {
                if let Some(queue) = self.selected_queue() {
                    queue.ready = value == 1;
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH
                if configuring_queues =>
            {
                if let Some(queue) = self.selected_queue() {
                    let address = match offset {
                        VIRTIO_MMIO_QUEUE_DESC_LOW | VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                            &mut queue.descriptor_table
                        }
                        VIRTIO_MMIO_QUEUE_AVAIL_LOW | VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                            &mut queue.available_ring
                        }
                        _ => &mut queue.used_ring,
                    };
                    *address = if offset % 8 == 0 {
                        set_low(*address)
                    } else {
                        set_high(*address)
                    };
                }
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                if let Some(event) = self.queue_events.get(value as usize) {
                    if let Err(err) = event.write(1) {
                        tracing::warn!(
                            "{}: cannot forward a notification: {err}",
                            self.device.name()
                        );
                    }
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.acknowledge(value),
            VIRTIO_MMIO_STATUS => self.write_status(value),
            _ => tracing::debug!(
                "{}: ignoring write of {value:#x} to register {offset:#x} in status {:#x}",
                self.device.name(),
                self.state.status
            ),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.state.status;
        if value & old != old {
            tracing::debug!(
                "{}: status {value:#x} clears bits of {old:#x} without a reset; ignored",
                self.device.name()
            );
            return;
        }
        let added = value & !old;
        let mut status = value;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable() {
            // The driver reads Status back and gives up on the device.
            status &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        let ordered = [
            VIRTIO_CONFIG_S_ACKNOWLEDGE,
            VIRTIO_CONFIG_S_DRIVER,
            VIRTIO_CONFIG_S_FEATURES_OK,
            VIRTIO_CONFIG_S_DRIVER_OK,
        ];
        // Each step needs the ones before it (FAILED may come at any time).
        let mut allowed = true;
        for bit in ordered {
            if !allowed {
                status &= !bit;
            }
            allowed &= status & bit != 0;
        }
        self.state.status = status & (ordered.iter().fold(VIRTIO_CONFIG_S_FAILED, |a, b| a | b));
        if self.state.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && old & VIRTIO_CONFIG_S_DRIVER_OK == 0
        {
            self.activate(None);
        }
    }

    fn features_acceptable(&self) -> bool {
        let wanted = self.state.driver_features;
        wanted & !self.offered_features() == 0 && wanted & FEATURE_VERSION_1 != 0
    }

    /// Hands the queues to the device: set up by the driver, or restored at `positions`.
    fn activate(&mut self, positions: Option<&[QueuePosition]>) {
        let Some(memory) = self.memory.clone() else {
            return;
        };
        let queues = match self.build_queues(&memory, positions.unwrap_or_default()) {
            Ok(queues) => queues,
            Err(err) => {
                self.interrupt.fail(&err);
                return;
            }
        };
        let events = self
            .queue_events
            .iter()
            .map(|event| QueueEvent(event.clone()))
            .collect();
        let queues = DeviceQueues {
            memory,
            queues,
            interrupt: self.interrupt.clone(),
            features: self.state.driver_features,
            restored: positions.is_some(),
        };
        if let Err(err) = self.device.activate(queues, events) {
            tracing::error!("{err}");
            self.interrupt.fail(&QueueError::Request {
                queue: 0,
                what: "the device could not start".into(),
            });
        }
    }

    fn build_queues(
        &self,
        memory: &GuestMemoryMmap,
        positions: &[QueuePosition],
    ) -> Result<Vec<Queue>, QueueError> {
        let mut queues = Vec::with_capacity(self.state.queues.len());
        for (index, config) in self.state.queues.iter().enumerate() {
            let ring = |source| QueueError::Ring {
                queue: index,
                source,
            };
            let mut queue = Queue::new(config.max_size).map_err(ring)?;
            if config.ready {
                queue.try_set_size(config.size).map_err(ring)?;
                queue
                    .try_set_desc_table_address(GuestAddress(config.descriptor_table))
                    .map_err(ring)?;
                queue
                    .try_set_avail_ring_address(GuestAddress(config.available_ring))
                    .map_err(ring)?;
                queue
                    .try_set_used_ring_address(GuestAddress(config.used_ring))
                    .map_err(ring)?;
                if let Some(position) = positions.get(index) {
                    queue.set_next_avail(position.next_avail);
                    queue.set_next_used(position.next_used);
                }
                queue.set_ready(true);
                if !queue.is_valid(memory) {
                    return Err(QueueError::Request {
                        queue: index,
                        what: "rings outside guest memory".into(),
                    });
                }
            }
            queues.push(queue);
        }
        Ok(queues)
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        data.fill(0);
        if data.len() == 4 {
            data.copy_from_slice(&self.read_register(offset as u32).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        // Registers are 32 bits wide and accessed as such (virtio 1.2, 4.2.2.2).
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.write_register(offset as u32, u32::from_le_bytes(bytes));
        }
    }
}

impl Drop for MmioTransport {
    fn drop(&mut self) {
        self.device.reset();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::devices::interrupt::IrqLine;
    use crate::devices::virtio::rng::RngHandler;
    use crate::devices::virtio::worker::{Worker, WorkerError};
    use crate::devices::virtio::VirtioCommon;
    use crate::seccomp::ThreadClass;

    /// A device with two queues that records activations (its I/O thread never starts).
    pub struct Probe {
        common: VirtioCommon,
        activations: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Probe {
        fn new(activations: Arc<std::sync::atomic::AtomicUsize>) -> Probe {
            Probe {
                common: VirtioCommon {
                    name: "probe".to_owned(),
                    features: 1 << 5,
                    queue_max_sizes: vec![16, 8],
                    config: vec![0xaa, 0xbb, 0xcc],
                    worker: Worker::new(ThreadClass::Rng, RngHandler),
                },
                activations,
            }
        }
    }

    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            42
        }
        fn common(&self) -> &VirtioCommon {
            &self.common
        }
        fn common_mut(&mut self) -> &mut VirtioCommon {
            &mut self.common
        }
        fn activate(
            &mut self,
            _queues: DeviceQueues,
            _events: Vec<QueueEvent>,
        ) -> Result<(), WorkerError> {
            self.activations
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        fn start_worker(&mut self) -> Result<(), WorkerError> {
            Ok(())
        }
    }

    fn transport() -> (MmioTransport, Arc<std::sync::atomic::AtomicUsize>) {
        let activations = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let irq = IrqLine::new(5).unwrap();
        let mut transport = MmioTransport::new(
            Box::new(Probe::new(activations.clone())),
            Interrupt::new(irq.trigger()),
        )
        .unwrap();
        transport.memory =
            Some(crate::vstate::memory::from_ranges(&[(GuestAddress(0), 1 << 20)], false).unwrap());
        (transport, activations)
    }

    fn read(transport: &mut MmioTransport, offset: u32) -> u32 {
        let mut data = [0u8; 4];
        transport.read(u64::from(offset), &mut data);
        u32::from_le_bytes(data)
    }

    fn write(transport: &mut MmioTransport, offset: u32, value: u32) {
        transport.write(u64::from(offset), &value.to_le_bytes());
    }

    fn negotiate(transport: &mut MmioTransport, features: u64) -> u32 {
        write(transport, VIRTIO_MMIO_STATUS, 0);
        write(transport, VIRTIO_MMIO_STATUS, 1);
        write(transport, VIRTIO_MMIO_STATUS, 1 | 2);
        for select in 0..2 {
            write(transport, VIRTIO_MMIO_DRIVER_FEATURES_SEL, select);
            write(
                transport,
                VIRTIO_MMIO_DRIVER_FEATURES,
                (features >> (32 * select)) as u32,
            );
        }
        write(transport, VIRTIO_MMIO_STATUS, 1 | 2 | 8);
        read(transport, VIRTIO_MMIO_STATUS)
    }

    fn setup_queue(transport: &mut MmioTransport, index: u32, base: u64) {
        write(transport, VIRTIO_MMIO_QUEUE_SEL, index);
        write(transport, VIRTIO_MMIO_QUEUE_NUM, 8);
        for (register, address) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, base),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x1000),
            (VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x2000),
        ] {
            write(transport, register, address as u32);
            write(transport, register + 4, (address >> 32) as u32);
        }
        write(transport, VIRTIO_MMIO_QUEUE_READY, 1);
    }

    #[test]
    fn identity_registers_and_config_space() {
        let (mut transport, _) = transport();
        assert_eq!(read(&mut transport, VIRTIO_MMIO_MAGIC_VALUE), MAGIC);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_DEVICE_ID), 42);
        write(&mut transport, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_DEVICE_FEATURES), 1);
        write(&mut transport, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_DEVICE_FEATURES), 1 << 5);
        write(&mut transport, VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_QUEUE_NUM_MAX), 8);
        write(&mut transport, VIRTIO_MMIO_QUEUE_SEL, 7);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
        let mut config = [0u8; 2];
        transport.read(0x101, &mut config);
        assert_eq!(config, [0xbb, 0xcc]);
        // Narrow register accesses are ignored, not misread.
        let mut narrow = [0xffu8; 2];
        transport.read(0, &mut narrow);
        assert_eq!(narrow, [0, 0]);
    }

    #[test]
    fn features_ok_needs_version_1_and_only_offered_bits() {
        let (mut transport, _) = transport();
        assert_eq!(negotiate(&mut transport, 1 << 5) & 8, 0, "no VERSION_1");
        assert_eq!(
            negotiate(&mut transport, FEATURE_VERSION_1 | 1 << 6) & 8,
            0,
            "unoffered bit"
        );
        assert_eq!(
            negotiate(&mut transport, FEATURE_VERSION_1 | 1 << 5),
            1 | 2 | 8
        );
    }

    #[test]
    fn driver_ok_activates_with_valid_queues_and_reset_starts_over() {
        let (mut transport, activations) = transport();
        negotiate(&mut transport, FEATURE_VERSION_1);
        setup_queue(&mut transport, 0, 0x10000);
        write(&mut transport, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
        assert_eq!(activations.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_STATUS), 1 | 2 | 8 | 4);
        // Queue setup after DRIVER_OK is ignored.
        write(&mut transport, VIRTIO_MMIO_QUEUE_SEL, 0);
        write(&mut transport, VIRTIO_MMIO_QUEUE_NUM, 2);
        assert_eq!(transport.state.queues[0].size, 8);
        write(&mut transport, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_STATUS), 0);
        assert_eq!(
            transport.state.queues[0],
            QueueConfig {
                max_size: 16,
                size: 16,
                ..QueueConfig::default()
            }
        );
    }

    #[test]
    fn queues_outside_memory_set_needs_reset_instead_of_activating() {
        let (mut transport, activations) = transport();
        negotiate(&mut transport, FEATURE_VERSION_1);
        setup_queue(&mut transport, 0, 0xffff_0000);
        write(&mut transport, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
        assert_eq!(activations.load(std::sync::atomic::Ordering::SeqCst), 0);
        let status = read(&mut transport, VIRTIO_MMIO_STATUS);
        assert_ne!(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_ne!(read(&mut transport, VIRTIO_MMIO_INTERRUPT_STATUS) & 2, 0);
        write(&mut transport, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_STATUS), 0);
    }

    #[test]
    fn a_restored_transport_is_activated_again_and_a_changed_device_is_refused() {
        let (mut original, _) = transport();
        negotiate(&mut original, FEATURE_VERSION_1);
        setup_queue(&mut original, 0, 0x10000);
        write(&mut original, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
        original.interrupt.signal_used();
        let saved = original.pause_and_save();
        original.resume_worker();

        let (mut restored, activations) = transport();
        restored.restore(&saved).unwrap();
        assert_eq!(activations.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(restored.state, original.state);
        assert_eq!(read(&mut restored, VIRTIO_MMIO_INTERRUPT_STATUS), 1);

        let (mut other, activations) = transport();
        let changed = VirtioDeviceState {
            config: vec![0xaa, 0xbb, 0xcd],
            ..saved
        };
        let err = other.restore(&changed).unwrap_err().to_string();
        assert!(err.contains("cannot restore probe"), "{err}");
        assert!(err.contains("configuration space differs"), "{err}");
        assert_eq!(activations.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn status_steps_cannot_be_skipped() {
        let (mut transport, activations) = transport();
        write(&mut transport, VIRTIO_MMIO_STATUS, 4);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_STATUS), 0);
        write(&mut transport, VIRTIO_MMIO_STATUS, 1 | 2 | 4);
        assert_eq!(read(&mut transport, VIRTIO_MMIO_STATUS), 1 | 2);
        assert_eq!(activations.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
