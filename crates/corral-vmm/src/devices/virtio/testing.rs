//! Split-ring queues in a small guest memory, built by hand (unit tests) or from arbitrary bytes
//! (fuzz targets), to drive the devices' queue handlers without a VM.
//!
//! Layout: queue `i` has its descriptor table at `i * 0x3000`, its available ring one page later
//! and its used ring one page after that; everything from [`DATA_START`] is free for buffers.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{DeviceQueues, Interrupt};
use crate::devices::interrupt::IrqLine;

/// Guest memory size of a test queue set.
pub const MEMORY_BYTES: usize = 1 << 20;
/// Where buffers may go.
pub const DATA_START: u64 = 0x10000;
/// Descriptors per test queue.
pub const QUEUE_SIZE: u16 = 16;
const QUEUE_STRIDE: u64 = 0x3000;

/// Queues for a device under test, and the interrupt line they raise.
pub struct TestQueues {
    pub queues: DeviceQueues,
    /// Keeps the interrupt's eventfd alive.
    pub irq: IrqLine,
    next_descriptor: Vec<u16>,
}

impl TestQueues {
    /// `queue_count` empty, ready queues in zeroed memory.
    pub fn new(queue_count: usize) -> std::io::Result<TestQueues> {
        TestQueues::from_bytes(&[], queue_count)
    }

    /// Queues whose memory starts with `bytes` (descriptor tables and rings included), as a
    /// hostile driver could lay it out.
    pub fn from_bytes(bytes: &[u8], queue_count: usize) -> std::io::Result<TestQueues> {
        let memory = crate::vstate::memory::from_ranges(&[(GuestAddress(0), MEMORY_BYTES)], false)
            .map_err(std::io::Error::other)?;
        let len = bytes.len().min(MEMORY_BYTES);
        memory
            .write_slice(&bytes[..len], GuestAddress(0))
            .map_err(std::io::Error::other)?;
        let mut queues = Vec::with_capacity(queue_count);
        for index in 0..queue_count as u64 {
            let mut queue = Queue::new(QUEUE_SIZE).map_err(std::io::Error::other)?;
            let base = index * QUEUE_STRIDE;
            queue
                .try_set_desc_table_address(GuestAddress(base))
                .map_err(std::io::Error::other)?;
            queue
                .try_set_avail_ring_address(GuestAddress(base + 0x1000))
                .map_err(std::io::Error::other)?;
            queue
                .try_set_used_ring_address(GuestAddress(base + 0x2000))
                .map_err(std::io::Error::other)?;
            queue.set_ready(true);
            queues.push(queue);
        }
        let irq = IrqLine::new(5).map_err(std::io::Error::other)?;
        Ok(TestQueues {
            queues: DeviceQueues {
                memory,
                queues,
                interrupt: Interrupt::new(irq.trigger()),
                features: u64::MAX,
                restored: false,
            },
            irq,
            next_descriptor: vec![0; queue_count],
        })
    }

    fn write<T: vm_memory::ByteValued>(&self, value: T, address: u64) {
        // Addresses are inside the test layout, which lies inside the memory.
        let _ = self.queues.memory.write_obj(value, GuestAddress(address));
    }

    /// Writes `bytes` into guest memory at `address`.
    pub fn write_bytes(&self, address: u64, bytes: &[u8]) {
        let _ = self.queues.memory.write_slice(bytes, GuestAddress(address));
    }

    /// Reads `len` bytes of guest memory at `address`.
    pub fn read_bytes(&self, address: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        let _ = self
            .queues
            .memory
            .read_slice(&mut bytes, GuestAddress(address));
        bytes
    }

    /// Makes a chain of `(address, length, device writes)` buffers available on `queue`.
    pub fn add_chain(&mut self, queue: usize, buffers: &[(u64, u32, bool)]) {
        let base = queue as u64 * QUEUE_STRIDE;
        let head = self.next_descriptor[queue];
        for (offset, &(address, len, device_writes)) in buffers.iter().enumerate() {
            let index = (head + offset as u16) % QUEUE_SIZE;
            let next = (index + 1) % QUEUE_SIZE;
            let mut flags = if device_writes { 2u16 } else { 0 };
            if offset + 1 < buffers.len() {
                flags |= 1;
            }
            let descriptor = base + 16 * u64::from(index);
            self.write(address, descriptor);
            self.write(len, descriptor + 8);
            self.write(flags, descriptor + 12);
            self.write(next, descriptor + 14);
        }
        self.next_descriptor[queue] = (head + buffers.len() as u16) % QUEUE_SIZE;
        let avail = base + 0x1000;
        let idx = self.read_u16(avail + 2);
        self.write(head, avail + 4 + 2 * u64::from(idx % QUEUE_SIZE));
        self.write(idx.wrapping_add(1), avail + 2);
    }

    fn read_u16(&self, address: u64) -> u16 {
        self.queues
            .memory
            .read_obj(GuestAddress(address))
            .unwrap_or(0)
    }

    /// How many chains the device has returned on `queue`.
    pub fn used_count(&self, queue: usize) -> u16 {
        self.read_u16(queue as u64 * QUEUE_STRIDE + 0x2000 + 2)
    }

    /// The `n`th used element of `queue`: (head, length written).
    pub fn used(&self, queue: usize, n: u16) -> (u32, u32) {
        let element = queue as u64 * QUEUE_STRIDE + 0x2000 + 4 + 8 * u64::from(n % QUEUE_SIZE);
        let memory = &self.queues.memory;
        (
            memory.read_obj(GuestAddress(element)).unwrap_or(0),
            memory.read_obj(GuestAddress(element + 4)).unwrap_or(0),
        )
    }
}
