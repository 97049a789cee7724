//! virtio-vsock with the host side as unix sockets, in Firecracker's scheme:
//! - host-initiated: a host program connects to the listening socket (`vsock.sock`) and writes
//!   `CONNECT <port>\n`; once the guest accepts, the VMM answers `OK <host port>\n` and the stream
//!   carries the connection (the guest refusing closes it);
//! - guest-initiated: a guest connection to CID 2 port P is connected to the unix socket
//!   `<socket>_P` (e.g. `vsock.sock_1234`) that a host program listens on.
//!
//! Only stream sockets exist. Flow control is virtio-vsock's credit scheme: the device never sends
//! the guest more than its advertised buffer has room for, and tells the guest how much of its own
//! buffer (`CONNECTION_BUFFER` per connection) is free. A guest sending past that credit, or a
//! malformed packet, resets that connection; a malformed ring makes the device need a reset.
//!
//! The code follows Firecracker's layout: [`packet`] (the wire header), [`connection`] (one
//! connection's state and credit), [`muxer`] (the back end: the host sockets, the connections and
//! the packets waiting for the guest) and [`device`] (the front the transport drives).

pub mod connection;
pub mod device;
pub mod muxer;
pub mod packet;

pub use device::{Vsock, VsockError, VsockState};
pub use muxer::VsockHandler;
pub use packet::PacketHeader;

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const EVENT_QUEUE: usize = 2;
const QUEUE_SIZE: u16 = 256;
/// The host's context ID.
pub const HOST_CID: u64 = 2;
/// Context IDs 0-2 are reserved (hypervisor, local, host).
pub const MIN_GUEST_CID: u64 = 3;
/// The most payload one packet carries.
const MAX_PAYLOAD: usize = 64 << 10;
/// Each connection's receive buffer, as advertised to the guest (`buf_alloc`).
const CONNECTION_BUFFER: u32 = 256 << 10;
