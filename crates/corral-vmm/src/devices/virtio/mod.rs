//! Paravirtual devices: the virtio-mmio transport ([`mmio`]) and the devices behind it
//! ([`block`], [`net`], [`rng`], [`vsock`]).
//!
//! A device is split in two:
//! - the front, a [`VirtioDevice`] the transport drives from vCPU threads: identity, features,
//!   configuration space, activation and reset (a [`VirtioCommon`] holds what every device has);
//! - the back, a [`worker::QueueHandler`] that owns the queues once the driver has set them up and
//!   runs on the device's own I/O thread ([`worker::Worker`]), woken by queue notifications
//!   (ioeventfds) and by its host file descriptors (tap, sockets). Blocking I/O never happens on a
//!   vCPU thread.
//!
//! Everything in guest memory is untrusted. Queues are read through `virtio-queue`, which checks
//! every descriptor address against guest memory and bounds chain length by the queue size (so a
//! looping chain ends); a ring the driver corrupts makes the device report `NEEDS_RESET`
//! ([`Interrupt::fail`]) and stop touching its queues until the driver resets it; a bad request in
//! a well-formed chain gets the device's error status.

pub mod block;
pub mod block_counters;
pub mod common;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod tap;
pub mod testing;
pub mod vsock;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::vstate::memory::GuestMemoryMmap;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::bitmap::MS;

use super::interrupt::IrqTrigger;
pub use common::VirtioCommon;

/// `VIRTIO_F_VERSION_1`: the device speaks virtio 1.x ("modern"); every corral device offers it.
pub const FEATURE_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// Interrupt status bits (the transport's InterruptStatus register).
const INTERRUPT_USED_BUFFER: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
const INTERRUPT_CONFIG_CHANGE: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// The guest memory of a split-ring descriptor chain as the devices read it.
pub type Chain<'m> = DescriptorChain<&'m GuestMemoryMmap>;
/// A chain's device-readable part.
pub type Reader<'m> = virtio_queue::Reader<'m, MS<'m, GuestMemoryMmap>>;
/// A chain's device-writable part; its writes mark the pages dirty when the VM tracks them.
pub type Writer<'m> = virtio_queue::Writer<'m, MS<'m, GuestMemoryMmap>>;

/// A guest driver broke the virtio protocol on a queue: the device stops using its queues and
/// asks for a reset.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {queue}")]
    Ring {
        queue: usize,
        source: virtio_queue::Error,
    },
    #[error("queue {queue}: {what}")]
    Request { queue: usize, what: String },
}

/// A device's interrupt: the InterruptStatus bits the transport shows the driver, the
/// `NEEDS_RESET` flag, and the irqfd that injects the device's GSI.
#[derive(Clone)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    needs_reset: Arc<AtomicBool>,
    irq: IrqTrigger,
}

impl Interrupt {
    pub fn new(irq: IrqTrigger) -> Interrupt {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            needs_reset: Arc::new(AtomicBool::new(false)),
            irq,
        }
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(err) = vm_superio::Trigger::trigger(&self.irq) {
            tracing::warn!("cannot raise a virtio interrupt: {err}");
        }
    }

    /// Tells the driver that used buffers are waiting.
    pub fn signal_used(&self) {
        self.raise(INTERRUPT_USED_BUFFER);
    }

    /// Marks the device as needing a reset (the driver sees `NEEDS_RESET` in the status
    /// register) and tells the driver through a configuration-change interrupt.
    pub fn fail(&self, error: &QueueError) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            tracing::warn!("virtio device needs a reset: {error}");
        }
        self.raise(INTERRUPT_CONFIG_CHANGE);
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Puts back the status and `NEEDS_RESET` a snapshot saved, and raises the interrupt again
    /// if any bit is pending (the guest's interrupt controller state was saved separately and
    /// may not hold it).
    fn restore(&self, status: u32, needs_reset: bool) {
        self.status.store(status, Ordering::SeqCst);
        self.needs_reset.store(needs_reset, Ordering::SeqCst);
        if status != 0 {
            if let Err(err) = vm_superio::Trigger::trigger(&self.irq) {
                tracing::warn!("cannot raise a restored virtio interrupt: {err}");
            }
        }
    }

    fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}

/// The queues of an activated device, with the memory they live in.
pub struct DeviceQueues {
    pub memory: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub interrupt: Interrupt,
    /// Negotiated feature bits.
    pub features: u64,
    /// The queues come from a snapshot, mid-way, not from the driver's setup
    /// ([`worker::QueueHandler::restored`] runs before any event).
    pub restored: bool,
}

impl DeviceQueues {
    /// Takes the next available chain of queue `index`, if any. A queue the driver did not set
    /// up has nothing available.
    pub fn pop(&mut self, index: usize) -> Result<Option<Chain<'_>>, QueueError> {
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(None);
        };
        if !queue.ready() {
            return Ok(None);
        }
        let mut chains = queue
            .iter(&self.memory)
            .map_err(|source| QueueError::Ring {
                queue: index,
                source,
            })?;
        Ok(chains.next())
    }

    /// The next chain on queue `index`: its head and a reader of its device-readable part, read
    /// through `memory` (a clone of the queues' memory, so the reader does not hold the queues).
    pub fn pop_reader<'m>(
        &mut self,
        index: usize,
        memory: &'m GuestMemoryMmap,
    ) -> Result<Option<(u16, Reader<'m>)>, QueueError> {
        let Some(chain) = self.pop(index)? else {
            return Ok(None);
        };
        let head = chain.head_index();
        let reader = chain.reader(memory).map_err(|source| QueueError::Ring {
            queue: index,
            source,
        })?;
        Ok(Some((head, reader)))
    }

    /// Like [`DeviceQueues::pop_reader`], for the chain's device-writable part.
    pub fn pop_writer<'m>(
        &mut self,
        index: usize,
        memory: &'m GuestMemoryMmap,
    ) -> Result<Option<(u16, Writer<'m>)>, QueueError> {
        let Some(chain) = self.pop(index)? else {
            return Ok(None);
        };
        let head = chain.head_index();
        let writer = chain.writer(memory).map_err(|source| QueueError::Ring {
            queue: index,
            source,
        })?;
        Ok(Some((head, writer)))
    }

    /// Puts a chain back at the head of queue `index` (it could not be used yet).
    pub fn undo_pop(&mut self, index: usize) {
        if let Some(queue) = self.queues.get_mut(index) {
            queue.go_to_previous_position();
        }
    }

    /// Returns chain `head` to the driver with `len` bytes written into it.
    pub fn add_used(&mut self, index: usize, head: u16, len: u32) -> Result<(), QueueError> {
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        queue
            .add_used(&self.memory, head, len)
            .map_err(|source| QueueError::Ring {
                queue: index,
                source,
            })
    }

    /// Interrupts the driver if it wants to hear about the used buffers of queue `index`.
    pub fn notify(&mut self, index: usize) -> Result<(), QueueError> {
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        let wanted = queue
            .needs_notification(&self.memory)
            .map_err(|source| QueueError::Ring {
                queue: index,
                source,
            })?;
        if wanted {
            self.interrupt.signal_used();
        }
        Ok(())
    }

    pub fn has_feature(&self, bit: u32) -> bool {
        self.features & (1 << bit) != 0
    }
}

/// The front of a virtio device, as the transport drives it. A device gives its type and its
/// [`VirtioCommon`]; the rest defaults to what that holds.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    fn common(&self) -> &VirtioCommon;
    fn common_mut(&mut self) -> &mut VirtioCommon;
    /// A short name for logs and thread names (`virtio-blk0`).
    fn name(&self) -> &str {
        &self.common().name
    }
    /// The largest size of each queue; the driver may choose smaller ones.
    fn queue_max_sizes(&self) -> &[u16] {
        &self.common().queue_max_sizes
    }
    /// Feature bits offered to the driver.
    fn features(&self) -> u64 {
        self.common().features
    }
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.common().config, offset, data);
    }
    /// Writes the configuration space; read-only everywhere in corral's devices.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!(
            "{}: ignoring a {}-byte write to read-only configuration offset {offset:#x}",
            self.name(),
            data.len()
        );
    }
    /// Starts the device's work on the queues the driver set up.
    fn activate(
        &mut self,
        queues: DeviceQueues,
        events: Vec<worker::QueueEvent>,
    ) -> Result<(), worker::WorkerError> {
        let common = self.common_mut();
        common.worker.activate(&common.name, queues, events)
    }
    /// Starts the device's I/O thread (once, after the VMM has entered its jail and before any
    /// vCPU runs; see [`worker::Worker::start`]).
    fn start_worker(&mut self) -> Result<(), worker::WorkerError> {
        let common = self.common_mut();
        common.worker.start(&common.name)
    }
    /// Stops the work and forgets the queues; the device is as after power-on.
    fn reset(&mut self) {
        self.common_mut().worker.reset();
    }
    /// Pauses the I/O thread for a snapshot (see [`worker::Worker::pause`]).
    fn pause(&mut self) -> Option<Vec<worker::QueuePosition>> {
        self.common_mut().worker.pause()
    }
    fn resume(&mut self) {
        self.common_mut().worker.resume();
    }
    /// Why a snapshot's configuration space `saved` does not fit this device, if it does not.
    fn config_mismatch(&self, saved: &[u8]) -> Option<String> {
        config_differs(&self.common().config, saved)
    }
}

/// Copies the bytes of `config` at `offset` into `data`; bytes past its end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(bytes) = config.get(start..) {
        let len = bytes.len().min(data.len());
        data[..len].copy_from_slice(&bytes[..len]);
    }
}

/// The generic answer of [`VirtioDevice::config_mismatch`]: whether the bytes differ.
pub(crate) fn config_differs(ours: &[u8], saved: &[u8]) -> Option<String> {
    (ours != saved).then(|| "its configuration space differs from the snapshot's".to_owned())
}

/// Writes `value` little-endian at `offset` of a configuration space under construction.
pub(crate) fn put_le(config: &mut [u8], offset: usize, value: &[u8]) {
    config[offset..offset + value.len()].copy_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0xffu8; 4];
        read_config_bytes(&config, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0]);
        read_config_bytes(&config, 100, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&config, u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }
}
