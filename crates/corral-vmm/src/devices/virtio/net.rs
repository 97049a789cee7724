//! virtio-net on a host tap device: one receive and one transmit queue, a MAC address from the
//! configuration, link always up. No checksum or segmentation offloads are offered (none are
//! implemented), so every frame is a plain Ethernet frame behind a zeroed virtio-net header.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use vmm_sys_util::epoll::{Epoll, EventSet};

use super::common::virtio_device;
use super::worker::{watch, QueueHandler, Worker, FIRST_BACKEND_TOKEN};
use super::{DeviceQueues, QueueError, VirtioCommon};
use crate::config::MacAddress;
use crate::seccomp::ThreadClass;

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr_v1`: what precedes every frame in virtio 1.x.
const HEADER_BYTES: usize = 12;
/// Offset of `num_buffers` in the header; 1 when buffers are not merged.
const NUM_BUFFERS_OFFSET: usize = 10;
/// The largest frame: 64 KiB (what a tap may deliver) plus the Ethernet header.
const MAX_FRAME_BYTES: usize = 65536 + 14;
const TAP_TOKEN: u64 = FIRST_BACKEND_TOKEN;

/// Where frames go on the host: a tap device, or (in tests and fuzzing) a datagram socket.
pub trait FrameIo: Send + AsRawFd {
    fn read_frame(&mut self, buffer: &mut [u8]) -> std::io::Result<usize>;
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize>;
}

impl FrameIo for super::tap::Tap {
    fn read_frame(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        super::tap::Tap::read_frame(self, buffer)
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        super::tap::Tap::write_frame(self, frame)
    }
}

impl FrameIo for std::os::unix::net::UnixDatagram {
    fn read_frame(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.recv(buffer)
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.send(frame)
    }
}

/// The network device's identity as the guest sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    pub mac: MacAddress,
    pub link_up: bool,
}

pub struct Net {
    common: VirtioCommon,
}

impl Net {
    pub fn new(name: String, io: Box<dyn FrameIo>, mac: MacAddress) -> Net {
        Net {
            common: VirtioCommon {
                name,
                features: 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS,
                queue_max_sizes: vec![QUEUE_SIZE, QUEUE_SIZE],
                config: config_space(&NetState { mac, link_up: true }),
                worker: Worker::new(ThreadClass::Net, NetHandler::new(io)),
            },
        }
    }
}

/// `struct virtio_net_config` up to `status`: the MAC address and the link state.
fn config_space(state: &NetState) -> Vec<u8> {
    let status = if state.link_up {
        VIRTIO_NET_S_LINK_UP as u16
    } else {
        0
    };
    [&state.mac.0[..], &status.to_le_bytes()].concat()
}

virtio_device!(Net, VIRTIO_ID_NET);

/// The back end: moves frames between the tap and the queues.
pub struct NetHandler {
    io: Box<dyn FrameIo>,
    /// A frame read from the tap (its length, the bytes in `rx_frame`) that waits for a receive
    /// buffer. Transmitting never touches it: each direction has its own buffer.
    pending: Option<usize>,
    rx_frame: Vec<u8>,
    tx_frame: Vec<u8>,
    /// The tap signalled data and has not reported "would block" since (it is edge-triggered).
    tap_readable: bool,
}

impl NetHandler {
    pub fn new(io: Box<dyn FrameIo>) -> NetHandler {
        NetHandler {
            io,
            pending: None,
            rx_frame: vec![0; HEADER_BYTES + MAX_FRAME_BYTES],
            tx_frame: vec![0; HEADER_BYTES + MAX_FRAME_BYTES],
            tap_readable: true,
        }
    }

    /// Sends every frame the driver queued for transmission.
    pub fn process_tx(&mut self, queues: &mut DeviceQueues) -> Result<(), QueueError> {
        let mut served = false;
        loop {
            let memory = queues.memory.clone();
            let Some((head, mut reader)) = queues.pop_reader(TX_QUEUE, &memory)? else {
                break;
            };
            let len = reader.available_bytes();
            if (HEADER_BYTES..=self.tx_frame.len()).contains(&len) {
                let frame = &mut self.tx_frame[..len];
                if reader.read_exact(frame).is_ok() {
                    if let Err(err) = self.io.write_frame(&frame[HEADER_BYTES..]) {
                        tracing::debug!("virtio-net: frame dropped, tap write failed: {err}");
                    }
                }
            } else {
                tracing::debug!("virtio-net: dropped a {len}-byte transmit buffer");
            }
            queues.add_used(TX_QUEUE, head, 0)?;
            served = true;
        }
        if served {
            queues.notify(TX_QUEUE)?;
        }
        Ok(())
    }

    /// Moves frames from the tap into receive buffers until either runs out.
    pub fn process_rx(&mut self, queues: &mut DeviceQueues) -> Result<(), QueueError> {
        let mut served = false;
        loop {
            let len = match self.pending.take() {
                Some(len) => len,
                None if self.tap_readable => {
                    match self.io.read_frame(&mut self.rx_frame[HEADER_BYTES..]) {
                        Ok(len) => len,
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                            self.tap_readable = false;
                            break;
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(err) => {
                            tracing::warn!("virtio-net: cannot read from the tap: {err}");
                            self.tap_readable = false;
                            break;
                        }
                    }
                }
                None => break,
            };
            let memory = queues.memory.clone();
            let Some((head, mut writer)) = queues.pop_writer(RX_QUEUE, &memory)? else {
                self.pending = Some(len);
                break;
            };
            let total = HEADER_BYTES + len;
            let header = &mut self.rx_frame[..HEADER_BYTES];
            header.fill(0);
            header[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2].copy_from_slice(&1u16.to_le_bytes());
            let used = if writer.available_bytes() >= total
                && writer.write_all(&self.rx_frame[..total]).is_ok()
            {
                total as u32
            } else {
                tracing::debug!("virtio-net: a {len}-byte frame does not fit a receive buffer");
                0
            };
            queues.add_used(RX_QUEUE, head, used)?;
            served = true;
        }
        if served {
            queues.notify(RX_QUEUE)?;
        }
        Ok(())
    }
}

impl QueueHandler for NetHandler {
    fn start(&mut self, epoll: &Epoll) -> std::io::Result<()> {
        let fd: RawFd = self.io.as_raw_fd();
        self.tap_readable = true;
        watch(
            epoll,
            fd,
            TAP_TOKEN,
            EventSet::IN | EventSet::EDGE_TRIGGERED,
        )
    }

    fn queue_notified(
        &mut self,
        queues: &mut DeviceQueues,
        index: usize,
        _epoll: &Epoll,
    ) -> Result<(), QueueError> {
        match index {
            RX_QUEUE => self.process_rx(queues),
            _ => self.process_tx(queues),
        }
    }

    fn backend_ready(
        &mut self,
        queues: &mut DeviceQueues,
        _token: u64,
        _events: EventSet,
        _epoll: &Epoll,
    ) -> Result<(), QueueError> {
        self.tap_readable = true;
        self.process_rx(queues)
    }

    fn stop(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;
    use crate::devices::virtio::testing::{TestQueues, DATA_START};

    fn handler() -> (UnixDatagram, NetHandler) {
        let (host, device) = UnixDatagram::pair().unwrap();
        device.set_nonblocking(true).unwrap();
        (host, NetHandler::new(Box::new(device)))
    }

    #[test]
    fn transmitted_frames_reach_the_tap_without_the_header() {
        let (host, mut handler) = handler();
        let mut queues = TestQueues::new(2).unwrap();
        let mut buffer = vec![0u8; HEADER_BYTES];
        buffer.extend_from_slice(b"an ethernet frame");
        queues.write_bytes(DATA_START, &buffer);
        queues.add_chain(
            TX_QUEUE,
            &[
                (DATA_START, 4, false),
                (DATA_START + 4, buffer.len() as u32 - 4, false),
            ],
        );
        handler.process_tx(&mut queues.queues).unwrap();
        let mut frame = [0u8; 64];
        let len = host.recv(&mut frame).unwrap();
        assert_eq!(&frame[..len], b"an ethernet frame");
        assert_eq!(queues.used_count(TX_QUEUE), 1);
    }

    #[test]
    fn received_frames_wait_for_a_buffer_and_fill_it_behind_a_header() {
        let (host, mut handler) = handler();
        let mut queues = TestQueues::new(2).unwrap();
        host.send(b"first frame").unwrap();
        // No receive buffer yet: the frame waits.
        handler.process_rx(&mut queues.queues).unwrap();
        assert_eq!(queues.used_count(RX_QUEUE), 0);
        queues.add_chain(RX_QUEUE, &[(DATA_START, 2048, true)]);
        handler.process_rx(&mut queues.queues).unwrap();
        assert_eq!(queues.used(RX_QUEUE, 0), (0, (HEADER_BYTES + 11) as u32));
        let bytes = queues.read_bytes(DATA_START, HEADER_BYTES + 11);
        assert_eq!(&bytes[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2], &[1, 0]);
        assert_eq!(&bytes[HEADER_BYTES..], b"first frame");
        // A buffer too small for the frame comes back empty.
        host.send(&[7u8; 100]).unwrap();
        handler.tap_readable = true;
        queues.add_chain(RX_QUEUE, &[(DATA_START, 50, true)]);
        handler.process_rx(&mut queues.queues).unwrap();
        assert_eq!(queues.used(RX_QUEUE, 1), (1, 0));
    }

    #[test]
    fn a_frame_waiting_for_a_receive_buffer_survives_a_transmission() {
        let (host, mut handler) = handler();
        let mut queues = TestQueues::new(2).unwrap();
        host.send(b"frame for the guest").unwrap();
        // No receive buffer: the frame waits in the device.
        handler.process_rx(&mut queues.queues).unwrap();
        assert_eq!(queues.used_count(RX_QUEUE), 0);
        // Meanwhile the guest sends a frame of its own.
        let mut sent = vec![0u8; HEADER_BYTES];
        sent.extend_from_slice(b"a longer frame from the guest to the host");
        queues.write_bytes(DATA_START, &sent);
        queues.add_chain(TX_QUEUE, &[(DATA_START, sent.len() as u32, false)]);
        handler.process_tx(&mut queues.queues).unwrap();
        let mut frame = [0u8; 64];
        let len = host.recv(&mut frame).unwrap();
        assert_eq!(&frame[..len], &sent[HEADER_BYTES..]);
        // A receive buffer appears: the guest gets the frame that waited, intact.
        let rx_at = DATA_START + 0x1000;
        queues.add_chain(RX_QUEUE, &[(rx_at, 2048, true)]);
        handler.process_rx(&mut queues.queues).unwrap();
        assert_eq!(queues.used(RX_QUEUE, 0), (0, (HEADER_BYTES + 19) as u32));
        let bytes = queues.read_bytes(rx_at, HEADER_BYTES + 19);
        assert_eq!(&bytes[HEADER_BYTES..], b"frame for the guest");
    }
}
