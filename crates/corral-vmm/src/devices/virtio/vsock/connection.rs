//! One connection between a guest port and a host unix stream: its phase, the credit each side
//! has given the other, and the guest bytes the host stream has not taken yet.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;

use super::packet::PacketHeader;
use super::CONNECTION_BUFFER;

/// (host port, guest port)
pub(super) type ConnectionKey = (u32, u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Host-initiated, waiting for the guest's response.
    Connecting,
    Established,
}

pub(super) struct Connection {
    pub(super) stream: UnixStream,
    pub(super) token: u64,
    pub(super) phase: Phase,
    /// The guest's receive buffer and how much of it it has consumed.
    pub(super) peer_buf_alloc: u32,
    pub(super) peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    pub(super) tx_cnt: u32,
    /// Bytes received from the guest, and how many of them went on to the host stream.
    pub(super) rx_cnt: u32,
    pub(super) fwd_cnt: u32,
    /// The `fwd_cnt` the guest last heard of.
    pub(super) fwd_cnt_told: u32,
    /// Guest bytes the host stream has not taken yet.
    pub(super) outgoing: VecDeque<u8>,
    /// The host stream may have bytes to read (edge-triggered).
    pub(super) readable: bool,
    /// The guest will send no more: close the host's direction once `outgoing` is empty.
    pub(super) guest_done_sending: bool,
    /// The host closed its side; the guest was told.
    pub(super) host_done_sending: bool,
}

impl Connection {
    pub(super) fn new(
        stream: UnixStream,
        token: u64,
        phase: Phase,
        peer: &PacketHeader,
    ) -> Connection {
        Connection {
            stream,
            token,
            phase,
            peer_buf_alloc: peer.buf_alloc,
            peer_fwd_cnt: peer.fwd_cnt,
            tx_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_told: 0,
            outgoing: VecDeque::new(),
            readable: true,
            guest_done_sending: false,
            host_done_sending: false,
        }
    }

    /// How many bytes the guest can take now.
    pub(super) fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Writes queued guest bytes to the host stream until it would block.
    pub(super) fn flush_outgoing(&mut self) -> std::io::Result<()> {
        while !self.outgoing.is_empty() {
            let (front, _) = self.outgoing.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.outgoing.drain(..written);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(written as u32);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if self.guest_done_sending {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// The guest should hear about freed buffer space when its view of it runs low.
    pub(super) fn wants_credit_update(&self) -> bool {
        let seen_free =
            CONNECTION_BUFFER.saturating_sub(self.rx_cnt.wrapping_sub(self.fwd_cnt_told));
        self.fwd_cnt != self.fwd_cnt_told && seen_free < CONNECTION_BUFFER / 2
    }
}
