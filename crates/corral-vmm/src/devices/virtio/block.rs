//! virtio-blk on a [`corral_disk::Disk`] (raw file, host block device, qcow2 with backing chain).
//!
//! Requests: read, write, flush, get-id (the serial), and — on writable disks — discard and
//! write-zeroes. A read-only disk offers `VIRTIO_BLK_F_RO` and fails writes. Requests run on the
//! device's I/O thread and copy through a bounded buffer, so a guest asking for a huge transfer
//! costs time, not host memory.

use std::io::{Read, Write};
use std::mem::offset_of;
use std::sync::Arc;

use corral_disk::{Disk, SERIAL_LEN};
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use vmm_sys_util::epoll::Epoll;

use super::block_counters::BlockCounters;
use super::common::virtio_device;
use super::worker::{QueueHandler, Worker};
use super::{put_le, Chain, DeviceQueues, QueueError, Reader, VirtioCommon, Writer};
use crate::seccomp::ThreadClass;

pub const SECTOR_SIZE: u64 = 512;
/// Descriptors per queue; a request uses up to `QUEUE_SIZE` of them.
pub const QUEUE_SIZE: u16 = 256;
/// The most bytes copied between the disk and guest memory at once.
const CHUNK_BYTES: usize = 128 << 10;
/// Discard and write-zeroes: one segment per request, up to 1 GiB each.
const MAX_SEGMENTS: u32 = 1;
const MAX_SEGMENT_SECTORS: u32 = (1 << 30) / SECTOR_SIZE as u32;
const SEGMENT_BYTES: usize = 16;

/// The block device's identity as the guest sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub serial: String,
}

pub struct Block {
    state: BlockState,
    common: VirtioCommon,
    counters: Arc<BlockCounters>,
}

impl Block {
    /// A device for `disk`; `serial` (at most 20 bytes are used) defaults to one derived from
    /// the image file's identity.
    pub fn new(name: String, disk: Box<dyn Disk>, serial: Option<String>) -> Block {
        let read_only = disk.read_only();
        let serial = serial.unwrap_or_else(|| disk.id().serial());
        let state = BlockState {
            capacity_sectors: disk.virtual_size() / SECTOR_SIZE,
            read_only,
            serial,
        };
        let mut features = 1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_FLUSH;
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            features |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        let counters = Arc::new(BlockCounters::default());
        let handler = BlockHandler::new(disk, &state.serial, Arc::clone(&counters));
        Block {
            common: VirtioCommon {
                name,
                features,
                queue_max_sizes: vec![QUEUE_SIZE],
                config: config_space(&state),
                worker: Worker::new(ThreadClass::Block, handler),
            },
            state,
            counters,
        }
    }
}

impl Block {
    /// What the guest sees of the disk (saved with snapshots).
    pub fn state(&self) -> &BlockState {
        &self.state
    }

    /// What it has served so far.
    pub fn counters(&self) -> Arc<BlockCounters> {
        Arc::clone(&self.counters)
    }
}

fn config_space(state: &BlockState) -> Vec<u8> {
    let mut config = vec![0u8; std::mem::size_of::<virtio_blk_config>()];
    let put =
        |config: &mut Vec<u8>, offset, value: u32| put_le(config, offset, &value.to_le_bytes());
    put_le(
        &mut config,
        offset_of!(virtio_blk_config, capacity),
        &state.capacity_sectors.to_le_bytes(),
    );
    // Two descriptors of each chain carry the header and the status.
    put(
        &mut config,
        offset_of!(virtio_blk_config, seg_max),
        u32::from(QUEUE_SIZE) - 2,
    );
    for (field, value) in [
        (
            offset_of!(virtio_blk_config, max_discard_sectors),
            MAX_SEGMENT_SECTORS,
        ),
        (offset_of!(virtio_blk_config, max_discard_seg), MAX_SEGMENTS),
        (offset_of!(virtio_blk_config, discard_sector_alignment), 1),
        (
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            MAX_SEGMENT_SECTORS,
        ),
        (
            offset_of!(virtio_blk_config, max_write_zeroes_seg),
            MAX_SEGMENTS,
        ),
    ] {
        put(&mut config, field, value);
    }
    config[offset_of!(virtio_blk_config, write_zeroes_may_unmap)] = 1;
    config
}

virtio_device!(Block, VIRTIO_ID_BLOCK, {
    fn config_mismatch(&self, saved: &[u8]) -> Option<String> {
        let capacity = offset_of!(virtio_blk_config, capacity);
        let saved_sectors = saved
            .get(capacity..capacity + 8)
            .map(|bytes| u64::from_le_bytes(le_bytes(bytes)));
        if saved_sectors != Some(self.state.capacity_sectors) {
            return Some(format!(
                "its disk holds {} sectors, the snapshot's held {} (the disk changed size)",
                self.state.capacity_sectors,
                saved_sectors.map_or("an unknown number of".to_owned(), |n| n.to_string())
            ));
        }
        crate::devices::virtio::config_differs(&self.common.config, saved)
    }
});

/// The back end: the disk and the request loop.
pub struct BlockHandler {
    disk: Box<dyn Disk>,
    serial: [u8; SERIAL_LEN],
    buffer: Vec<u8>,
    counters: Arc<BlockCounters>,
}

/// How one request ends: the status byte for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    IoError,
    Unsupported,
}

impl Status {
    fn byte(self) -> u8 {
        (match self {
            Status::Ok => VIRTIO_BLK_S_OK,
            Status::IoError => VIRTIO_BLK_S_IOERR,
            Status::Unsupported => VIRTIO_BLK_S_UNSUPP,
        }) as u8
    }
}

impl BlockHandler {
    pub fn new(disk: Box<dyn Disk>, serial: &str, counters: Arc<BlockCounters>) -> BlockHandler {
        let mut id = [0u8; SERIAL_LEN];
        let bytes = serial.as_bytes();
        let len = bytes.len().min(SERIAL_LEN);
        id[..len].copy_from_slice(&bytes[..len]);
        BlockHandler {
            disk,
            serial: id,
            buffer: vec![0; CHUNK_BYTES],
            counters,
        }
    }

    fn flush_quietly(&mut self) {
        if !self.disk.read_only() {
            if let Err(err) = self.disk.flush() {
                tracing::error!("cannot flush a virtio disk: {err}");
            }
        }
    }

    /// Serves every request available on the queue.
    pub fn process_queue(&mut self, queues: &mut DeviceQueues) -> Result<(), QueueError> {
        let mut served = false;
        loop {
            let memory = queues.memory.clone();
            let features = queues.features;
            let Some(chain) = queues.pop(0)? else { break };
            let head = chain.head_index();
            let written = self.serve(chain, &memory, features)?;
            queues.add_used(0, head, written)?;
            served = true;
        }
        if served {
            queues.notify(0)?;
        }
        Ok(())
    }

    /// Serves one request; returns how many bytes went into the chain's writable part.
    fn serve(
        &mut self,
        chain: Chain<'_>,
        memory: &crate::vstate::memory::GuestMemoryMmap,
        features: u64,
    ) -> Result<u32, QueueError> {
        let malformed = |what: &str| QueueError::Request {
            queue: 0,
            what: format!("block request {what}"),
        };
        let ring = |source| QueueError::Ring { queue: 0, source };
        let mut reader: Reader<'_> = chain.clone().reader(memory).map_err(ring)?;
        let mut writer: Writer<'_> = chain.writer(memory).map_err(ring)?;
        let data_len = writer
            .available_bytes()
            .checked_sub(1)
            .ok_or_else(|| malformed("has no status byte"))?;
        let mut status_writer = writer.split_at(data_len).map_err(ring)?;
        let status = match read_header(&mut reader) {
            Some((kind, sector)) => self.request(kind, sector, features, &mut reader, &mut writer),
            None => Status::IoError,
        };
        status_writer
            .write_all(&[status.byte()])
            .map_err(|_| malformed("status byte is not writable"))?;
        Ok((writer.bytes_written() + 1) as u32)
    }

    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        features: u64,
        reader: &mut Reader<'_>,
        writer: &mut Writer<'_>,
    ) -> Status {
        let offered = |bit: u32| features & (1 << bit) != 0;
        let status = match kind {
            VIRTIO_BLK_T_IN => {
                let bytes = writer.available_bytes() as u64;
                let status = self.read(sector, writer);
                if status == Status::Ok {
                    self.counters.transferred(false, bytes);
                }
                status
            }
            VIRTIO_BLK_T_OUT => {
                let bytes = reader.available_bytes() as u64;
                let status = self.write(sector, reader);
                if status == Status::Ok {
                    self.counters.transferred(true, bytes);
                }
                status
            }
            VIRTIO_BLK_T_FLUSH => {
                BlockCounters::count(&self.counters.flushes);
                status_of(self.disk.flush())
            }
            VIRTIO_BLK_T_GET_ID => {
                let len = writer.available_bytes().min(SERIAL_LEN);
                match writer.write_all(&self.serial[..len]) {
                    Ok(()) => Status::Ok,
                    Err(_) => Status::IoError,
                }
            }
            VIRTIO_BLK_T_DISCARD if offered(VIRTIO_BLK_F_DISCARD) => self.segments(reader, false),
            VIRTIO_BLK_T_WRITE_ZEROES if offered(VIRTIO_BLK_F_WRITE_ZEROES) => {
                self.segments(reader, true)
            }
            _ => Status::Unsupported,
        };
        if status != Status::Ok {
            BlockCounters::count(&self.counters.errors);
        }
        status
    }

    /// The byte range of a transfer of `len` bytes at `sector`, if it lies inside the disk
    /// and is whole sectors.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let offset = sector.checked_mul(SECTOR_SIZE)?;
        let end = offset.checked_add(len)?;
        (len % SECTOR_SIZE == 0 && end <= self.disk.virtual_size()).then_some(offset)
    }

    fn read(&mut self, sector: u64, writer: &mut Writer<'_>) -> Status {
        let mut remaining = writer.available_bytes();
        let Some(mut offset) = self.range(sector, remaining as u64) else {
            return Status::IoError;
        };
        while remaining > 0 {
            let chunk = remaining.min(CHUNK_BYTES);
            let buffer = &mut self.buffer[..chunk];
            if let Err(err) = self.disk.read_at(buffer, offset) {
                tracing::warn!("virtio-blk read failed: {err}");
                return Status::IoError;
            }
            if writer.write_all(buffer).is_err() {
                return Status::IoError;
            }
            remaining -= chunk;
            offset += chunk as u64;
        }
        Status::Ok
    }

    fn write(&mut self, sector: u64, reader: &mut Reader<'_>) -> Status {
        let mut remaining = reader.available_bytes();
        let Some(mut offset) = self.range(sector, remaining as u64) else {
            return Status::IoError;
        };
        if self.disk.read_only() {
            return Status::IoError;
        }
        while remaining > 0 {
            let chunk = remaining.min(CHUNK_BYTES);
            let buffer = &mut self.buffer[..chunk];
            if reader.read_exact(buffer).is_err() {
                return Status::IoError;
            }
            if let Err(err) = self.disk.write_at(buffer, offset) {
                tracing::warn!("virtio-blk write failed: {err}");
                return Status::IoError;
            }
            remaining -= chunk;
            offset += chunk as u64;
        }
        Status::Ok
    }

    /// Discard or write-zeroes: `virtio_blk_discard_write_zeroes` segments.
    fn segments(&mut self, reader: &mut Reader<'_>, zeroes: bool) -> Status {
        let bytes = reader.available_bytes();
        let count = bytes / SEGMENT_BYTES;
        if bytes % SEGMENT_BYTES != 0 || count == 0 || count > MAX_SEGMENTS as usize {
            return Status::IoError;
        }
        for _ in 0..count {
            let mut segment = [0u8; SEGMENT_BYTES];
            if reader.read_exact(&mut segment).is_err() {
                return Status::IoError;
            }
            let sector = u64::from_le_bytes(le_bytes(&segment[0..8]));
            let sectors = u32::from_le_bytes(le_bytes(&segment[8..12]));
            let flags = u32::from_le_bytes(le_bytes(&segment[12..16]));
            // Discard has no flags; write-zeroes has only "unmap", which corral always may do.
            let allowed_flags = if zeroes {
                VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
            } else {
                0
            };
            if flags & !allowed_flags != 0 {
                return Status::Unsupported;
            }
            let len = u64::from(sectors) * SECTOR_SIZE;
            let Some(offset) = self
                .range(sector, len)
                .filter(|_| sectors <= MAX_SEGMENT_SECTORS)
            else {
                return Status::IoError;
            };
            let result = if zeroes {
                self.disk.write_zeroes(offset, len)
            } else {
                match self.disk.discard(offset, len) {
                    // A discard is a hint (the guest may not rely on the range reading as
                    // zeroes), so a host that cannot release the range has still done it.
                    Err(corral_disk::DiskError::OperationUnsupported { .. }) => Ok(()),
                    other => other,
                }
            };
            if status_of(result) != Status::Ok {
                return Status::IoError;
            }
        }
        Status::Ok
    }
}

fn status_of(result: corral_disk::Result<()>) -> Status {
    match result {
        Ok(()) => Status::Ok,
        Err(err) => {
            tracing::warn!("virtio-blk request failed: {err}");
            Status::IoError
        }
    }
}

fn le_bytes<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[..N]);
    array
}

/// The request header: type and sector (the reserved word between them is ignored).
fn read_header(reader: &mut Reader<'_>) -> Option<(u32, u64)> {
    let mut header = [0u8; 16];
    reader.read_exact(&mut header).ok()?;
    Some((
        u32::from_le_bytes(le_bytes(&header[0..4])),
        u64::from_le_bytes(le_bytes(&header[8..16])),
    ))
}

impl QueueHandler for BlockHandler {
    fn queue_notified(
        &mut self,
        queues: &mut DeviceQueues,
        _index: usize,
        _epoll: &Epoll,
    ) -> Result<(), QueueError> {
        self.process_queue(queues)
    }

    /// The driver is gone: make its writes durable.
    fn stop(&mut self) {
        self.flush_quietly();
    }

    /// Makes the guest's writes durable and writes the qcow2 metadata caches back, so that a
    /// migration destination opening the disk after the pause reads it whole.
    fn paused(&mut self) {
        self.flush_quietly();
    }
}

impl Drop for BlockHandler {
    fn drop(&mut self) {
        self.flush_quietly();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{TestQueues, DATA_START};
    use std::sync::atomic::Ordering;

    const HEADER: u64 = DATA_START;
    const DATA: u64 = DATA_START + 0x100;
    const STATUS: u64 = DATA_START + 0x80;

    fn disk(read_only: bool) -> (tempfile::NamedTempFile, BlockHandler) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..64 * 1024).map(|i| (i / 512) as u8).collect();
        std::fs::write(file.path(), bytes).unwrap();
        let mut options = corral_disk::OpenOptions::read_only();
        options.writable = !read_only;
        let image = corral_disk::open(file.path(), options).unwrap();
        let counters = Arc::new(BlockCounters::default());
        (file, BlockHandler::new(image, "serial-1", counters))
    }

    fn header(queues: &TestQueues, kind: u32, sector: u64) {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&kind.to_le_bytes());
        bytes[8..].copy_from_slice(&sector.to_le_bytes());
        queues.write_bytes(HEADER, &bytes);
        queues.write_bytes(STATUS, &[0xff]);
    }

    fn status(queues: &TestQueues) -> u32 {
        u32::from(queues.read_bytes(STATUS, 1)[0])
    }

    #[test]
    fn reads_and_writes_reach_the_disk_with_ok_status() {
        let (file, mut handler) = disk(false);
        let mut queues = TestQueues::new(1).unwrap();
        header(&queues, VIRTIO_BLK_T_IN, 3);
        queues.add_chain(
            0,
            &[(HEADER, 16, false), (DATA, 1024, true), (STATUS, 1, true)],
        );
        handler.process_queue(&mut queues.queues).unwrap();
        assert_eq!(status(&queues), VIRTIO_BLK_S_OK);
        assert_eq!(queues.used(0, 0), (0, 1025));
        let data = queues.read_bytes(DATA, 1024);
        assert!(data[..512].iter().all(|&b| b == 3) && data[512..].iter().all(|&b| b == 4));

        queues.write_bytes(DATA, &[0xee; 512]);
        header(&queues, VIRTIO_BLK_T_OUT, 10);
        queues.add_chain(
            0,
            &[(HEADER, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        handler.process_queue(&mut queues.queues).unwrap();
        assert_eq!(status(&queues), VIRTIO_BLK_S_OK);
        header(&queues, VIRTIO_BLK_T_FLUSH, 0);
        queues.add_chain(0, &[(HEADER, 16, false), (STATUS, 1, true)]);
        handler.process_queue(&mut queues.queues).unwrap();
        assert_eq!(status(&queues), VIRTIO_BLK_S_OK);
        let on_disk = std::fs::read(file.path()).unwrap();
        assert!(on_disk[10 * 512..11 * 512].iter().all(|&b| b == 0xee));
        assert!(on_disk[11 * 512..12 * 512].iter().all(|&b| b == 11));
        let mut counted = std::collections::BTreeMap::new();
        handler.counters.named("vda", &mut counted);
        let expected = [
            ("reads", 1),
            ("read_bytes", 1024),
            ("writes", 1),
            ("written_bytes", 512),
            ("flushes", 1),
            ("errors", 0),
        ]
        .map(|(name, value)| (format!("disk.vda.{name}"), value));
        assert_eq!(counted, std::collections::BTreeMap::from(expected));
    }

    #[test]
    fn bad_requests_get_error_statuses() {
        let (_file, mut handler) = disk(true);
        let mut queues = TestQueues::new(1).unwrap();
        queues.queues.features = 1 << VIRTIO_BLK_F_RO;
        let cases = [
            (VIRTIO_BLK_T_IN, 128, 512, VIRTIO_BLK_S_IOERR), // past the end
            (VIRTIO_BLK_T_IN, 0, 100, VIRTIO_BLK_S_IOERR),   // not whole sectors
            (VIRTIO_BLK_T_IN, u64::MAX, 512, VIRTIO_BLK_S_IOERR), // offset overflow
            (VIRTIO_BLK_T_OUT, 0, 512, VIRTIO_BLK_S_IOERR),  // read-only disk
            (VIRTIO_BLK_T_DISCARD, 0, 16, VIRTIO_BLK_S_UNSUPP), // not offered when read-only
            (99, 0, 512, VIRTIO_BLK_S_UNSUPP),
        ];
        for (kind, sector, len, expected) in cases {
            header(&queues, kind, sector);
            let writes = kind == VIRTIO_BLK_T_IN;
            queues.add_chain(
                0,
                &[(HEADER, 16, false), (DATA, len, writes), (STATUS, 1, true)],
            );
            handler.process_queue(&mut queues.queues).unwrap();
            assert_eq!(
                status(&queues),
                expected,
                "request type {kind} sector {sector}"
            );
        }
        let counters = &handler.counters;
        assert_eq!(counters.errors.load(Ordering::Relaxed), cases.len() as u64);
        assert_eq!(
            counters.reads.load(Ordering::Relaxed),
            0,
            "failed reads are not reads"
        );
    }

    #[test]
    fn get_id_returns_the_serial() {
        let (_file, mut handler) = disk(true);
        let mut queues = TestQueues::new(1).unwrap();
        header(&queues, VIRTIO_BLK_T_GET_ID, 0);
        queues.add_chain(
            0,
            &[(HEADER, 16, false), (DATA, 20, true), (STATUS, 1, true)],
        );
        handler.process_queue(&mut queues.queues).unwrap();
        assert_eq!(status(&queues), VIRTIO_BLK_S_OK);
        assert_eq!(&queues.read_bytes(DATA, 20)[..9], b"serial-1\0");
    }

    #[test]
    fn broken_chains_ask_for_a_reset_without_touching_memory_outside_the_guest() {
        let (_file, mut handler) = disk(false);
        // No status byte.
        let mut queues = TestQueues::new(1).unwrap();
        header(&queues, VIRTIO_BLK_T_IN, 0);
        queues.add_chain(0, &[(HEADER, 16, false), (DATA, 512, false)]);
        assert!(handler.process_queue(&mut queues.queues).is_err());
        // A data buffer far outside guest memory.
        let mut queues = TestQueues::new(1).unwrap();
        queues.add_chain(
            0,
            &[(HEADER, 16, false), (1 << 40, 512, true), (STATUS, 1, true)],
        );
        assert!(handler.process_queue(&mut queues.queues).is_err());
        // A chain that loops forever: descriptor 0 names itself as next.
        let mut queues = TestQueues::new(1).unwrap();
        queues.add_chain(0, &[(HEADER, 16, false), (DATA, 512, false)]);
        queues.write_bytes(14, &0u16.to_le_bytes());
        assert!(handler.process_queue(&mut queues.queues).is_err());
    }
}
