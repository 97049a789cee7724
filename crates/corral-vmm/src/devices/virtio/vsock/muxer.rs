//! The vsock back end: the listening unix socket and its `CONNECT` handshakes, the connections
//! keyed by port pair, and the control packets waiting for a receive buffer. It runs on the
//! device's I/O thread.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::Backlog;
use vmm_sys_util::epoll::{Epoll, EventSet};

use super::connection::{Connection, ConnectionKey, Phase};
use super::packet::{
    PacketHeader, EVENT_TRANSPORT_RESET, HEADER_BYTES, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE,
    OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_RECEIVE, SHUTDOWN_SEND,
    TYPE_STREAM,
};
use super::{CONNECTION_BUFFER, EVENT_QUEUE, HOST_CID, MAX_PAYLOAD, RX_QUEUE, TX_QUEUE};
use crate::devices::virtio::worker::{unwatch, watch, QueueHandler, FIRST_BACKEND_TOKEN};
use crate::devices::virtio::{DeviceQueues, QueueError};

/// `CONNECT <port>\n` is at most this long.
const MAX_CONNECT_LINE: usize = 32;
/// Host connections waiting for their `CONNECT` line to be read.
const LISTEN_BACKLOG: i32 = 128;
/// Host ports of host-initiated connections count up from here.
const FIRST_HOST_PORT: u32 = 1 << 30;
const LISTENER_TOKEN: u64 = FIRST_BACKEND_TOKEN;
/// At most this many control packets wait for receive buffers. Every guest packet needs at most
/// one answer, so the device stops taking guest packets at this many: a guest that floods resets
/// or credit requests without posting receive buffers only fills its own transmit ring.
const MAX_QUEUED_CONTROL: usize = 256;

/// What an epoll token stands for.
enum Target {
    Listener,
    /// A host stream that has not finished its `CONNECT` line yet.
    Handshake(UnixStream, Vec<u8>),
    Connection(ConnectionKey),
}

/// The back end: the listening socket, the connections and the packets waiting for the guest.
pub struct VsockHandler {
    guest_cid: u64,
    socket: PathBuf,
    listener: UnixListener,
    /// Whether `listener` listens yet: from the first start of the guest's driver on.
    listening: bool,
    targets: HashMap<u64, Target>,
    connections: BTreeMap<ConnectionKey, Connection>,
    /// Control packets (no payload) waiting for a receive buffer.
    control: VecDeque<PacketHeader>,
    next_token: u64,
    next_host_port: u32,
    payload: Vec<u8>,
}

impl VsockHandler {
    pub fn new(guest_cid: u64, socket: PathBuf, listener: UnixListener) -> VsockHandler {
        VsockHandler {
            guest_cid,
            socket,
            listener,
            listening: false,
            targets: HashMap::new(),
            connections: BTreeMap::new(),
            control: VecDeque::new(),
            next_token: LISTENER_TOKEN + 1,
            next_host_port: FIRST_HOST_PORT,
            payload: vec![0; MAX_PAYLOAD],
        }
    }

    fn header(&self, (host_port, guest_port): ConnectionKey, op: u16) -> PacketHeader {
        let fwd_cnt = self
            .connections
            .get(&(host_port, guest_port))
            .map_or(0, |c| c.fwd_cnt);
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: host_port,
            dst_port: guest_port,
            kind: TYPE_STREAM,
            op,
            buf_alloc: CONNECTION_BUFFER,
            fwd_cnt,
            ..PacketHeader::default()
        }
    }

    fn queue_control(&mut self, key: ConnectionKey, op: u16, flags: u32) {
        let mut header = self.header(key, op);
        header.flags = flags;
        if let Some(connection) = self.connections.get_mut(&key) {
            connection.fwd_cnt_told = connection.fwd_cnt;
        }
        self.control.push_back(header);
    }

    fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn close(&mut self, key: ConnectionKey, epoll: &Epoll) {
        if let Some(connection) = self.connections.remove(&key) {
            let _ = unwatch(epoll, connection.stream.as_raw_fd());
            self.targets.remove(&connection.token);
        }
    }

    fn reset_connection(&mut self, key: ConnectionKey, epoll: &Epoll) {
        self.close(key, epoll);
        self.queue_control(key, OP_RST, 0);
    }

    /// Moves packets both ways: handles what the guest sent while the answers have room to wait
    /// ([`MAX_QUEUED_CONTROL`]), and fills receive buffers with answers and host data; again while
    /// freed room lets held-back guest packets through.
    pub fn process(&mut self, queues: &mut DeviceQueues, epoll: &Epoll) -> Result<(), QueueError> {
        loop {
            let held = self.process_tx(queues, epoll)?;
            self.process_rx(queues)?;
            if !held || self.control.len() >= MAX_QUEUED_CONTROL {
                return Ok(());
            }
        }
    }

    /// Handles the packets the guest sent; true when some wait because the answers are at the cap.
    fn process_tx(&mut self, queues: &mut DeviceQueues, epoll: &Epoll) -> Result<bool, QueueError> {
        let mut served = false;
        let mut held = false;
        loop {
            if self.control.len() >= MAX_QUEUED_CONTROL {
                held = true;
                break;
            }
            let memory = queues.memory.clone();
            let Some((head, mut reader)) = queues.pop_reader(TX_QUEUE, &memory)? else {
                break;
            };
            let mut bytes = [0u8; HEADER_BYTES];
            if reader.read_exact(&mut bytes).is_ok() {
                let header = PacketHeader::decode(&bytes);
                let len = header.len as usize;
                if len <= MAX_PAYLOAD && reader.read_exact(&mut self.payload[..len]).is_ok() {
                    self.guest_packet(header, len, epoll);
                } else {
                    tracing::debug!("vsock: dropped a malformed packet from the guest");
                    self.refuse(&header);
                }
            }
            queues.add_used(TX_QUEUE, head, 0)?;
            served = true;
        }
        if served {
            queues.notify(TX_QUEUE)?;
        }
        Ok(held)
    }

    /// Answers a packet that belongs to no connection with a reset (never a reset with a reset).
    fn refuse(&mut self, header: &PacketHeader) {
        if header.op != OP_RST && header.src_cid == self.guest_cid {
            let mut reply = self.header((header.dst_port, header.src_port), OP_RST);
            reply.fwd_cnt = 0;
            self.control.push_back(reply);
        }
    }

    fn guest_packet(&mut self, header: PacketHeader, len: usize, epoll: &Epoll) {
        if header.src_cid != self.guest_cid
            || header.dst_cid != HOST_CID
            || header.kind != TYPE_STREAM
        {
            self.refuse(&header);
            return;
        }
        let key = (header.dst_port, header.src_port);
        if header.op == OP_REQUEST {
            self.guest_connect(key, &header, epoll);
            return;
        }
        let Some(connection) = self.connections.get_mut(&key) else {
            self.refuse(&header);
            return;
        };
        connection.peer_buf_alloc = header.buf_alloc;
        connection.peer_fwd_cnt = header.fwd_cnt;
        match (header.op, connection.phase) {
            (OP_RESPONSE, Phase::Connecting) => {
                connection.phase = Phase::Established;
                let line = format!("OK {}\n", key.0);
                // The line is tiny and the stream new; a host that cannot take it is gone.
                if connection.stream.write_all(line.as_bytes()).is_err() {
                    self.reset_connection(key, epoll);
                }
            }
            (OP_RW, Phase::Established) => {
                connection.rx_cnt = connection.rx_cnt.wrapping_add(len as u32);
                let buffered = connection.outgoing.len() + len;
                if buffered > CONNECTION_BUFFER as usize {
                    tracing::debug!("vsock: guest port {} sent past its credit", key.1);
                    self.reset_connection(key, epoll);
                    return;
                }
                connection.outgoing.extend(&self.payload[..len]);
                if connection.flush_outgoing().is_err() {
                    self.reset_connection(key, epoll);
                } else if connection.wants_credit_update() {
                    self.queue_control(key, OP_CREDIT_UPDATE, 0);
                }
            }
            (OP_CREDIT_UPDATE, _) => {}
            (OP_CREDIT_REQUEST, _) => self.queue_control(key, OP_CREDIT_UPDATE, 0),
            (OP_SHUTDOWN, _) => {
                if header.flags & SHUTDOWN_SEND != 0 {
                    connection.guest_done_sending = true;
                }
                if header.flags & (SHUTDOWN_SEND | SHUTDOWN_RECEIVE)
                    == SHUTDOWN_SEND | SHUTDOWN_RECEIVE
                {
                    // Nothing more either way: whatever the host stream has not taken yet is
                    // written on a best-effort basis, then the connection ends.
                    let _ = connection.flush_outgoing();
                    self.reset_connection(key, epoll);
                } else if connection.flush_outgoing().is_err() {
                    self.reset_connection(key, epoll);
                }
            }
            (OP_RST, _) => self.close(key, epoll),
            _ => self.reset_connection(key, epoll),
        }
    }

    /// The guest connects to host port `key.0`: connect to `<socket>_<port>`.
    fn guest_connect(&mut self, key: ConnectionKey, header: &PacketHeader, epoll: &Epoll) {
        if self.connections.contains_key(&key) {
            self.reset_connection(key, epoll);
            return;
        }
        let mut path = self.socket.clone().into_os_string();
        path.push(format!("_{}", key.0));
        let stream = match connect_without_waiting(Path::new(&path)) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!("vsock: guest connection to {path:?} refused: {err}");
                self.queue_control(key, OP_RST, 0);
                return;
            }
        };
        let token = self.new_token();
        if watch_stream(epoll, &stream, token).is_err() {
            self.queue_control(key, OP_RST, 0);
            return;
        }
        self.targets.insert(token, Target::Connection(key));
        self.connections.insert(
            key,
            Connection::new(stream, token, Phase::Established, header),
        );
        self.queue_control(key, OP_RESPONSE, 0);
    }

    /// Fills receive buffers with control packets, then with data from readable host streams.
    fn process_rx(&mut self, queues: &mut DeviceQueues) -> Result<(), QueueError> {
        let mut served = false;
        loop {
            let memory = queues.memory.clone();
            let Some((head, mut writer)) = queues.pop_writer(RX_QUEUE, &memory)? else {
                break;
            };
            let room = writer.available_bytes();
            if room < HEADER_BYTES {
                return Err(QueueError::Request {
                    queue: RX_QUEUE,
                    what: format!("a {room}-byte receive buffer cannot hold a packet header"),
                });
            }
            let Some((header, len)) = self.next_packet(room - HEADER_BYTES) else {
                queues.undo_pop(RX_QUEUE);
                break;
            };
            let written = writer
                .write_all(&header.encode())
                .and_then(|()| writer.write_all(&self.payload[..len]));
            let used = if written.is_ok() {
                HEADER_BYTES + len
            } else {
                0
            };
            queues.add_used(RX_QUEUE, head, used as u32)?;
            served = true;
        }
        if served {
            queues.notify(RX_QUEUE)?;
        }
        Ok(())
    }

    /// The next packet for the guest, its payload (at most `room` bytes) in `self.payload`.
    fn next_packet(&mut self, room: usize) -> Option<(PacketHeader, usize)> {
        if let Some(header) = self.control.pop_front() {
            return Some((header, 0));
        }
        let keys: Vec<ConnectionKey> = self.connections.keys().copied().collect();
        for key in keys {
            let Some(connection) = self.connections.get_mut(&key) else {
                continue;
            };
            if connection.phase != Phase::Established
                || !connection.readable
                || connection.host_done_sending
            {
                continue;
            }
            let want = room.min(MAX_PAYLOAD).min(connection.peer_credit() as usize);
            if want == 0 {
                continue;
            }
            match connection.stream.read(&mut self.payload[..want]) {
                Ok(0) => {
                    connection.host_done_sending = true;
                    let mut header = self.header(key, OP_SHUTDOWN);
                    header.flags = SHUTDOWN_SEND | SHUTDOWN_RECEIVE;
                    return Some((header, 0));
                }
                Ok(len) => {
                    connection.tx_cnt = connection.tx_cnt.wrapping_add(len as u32);
                    connection.fwd_cnt_told = connection.fwd_cnt;
                    let mut header = self.header(key, OP_RW);
                    header.len = len as u32;
                    return Some((header, len));
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    connection.readable = false;
                }
                Err(_) => {
                    connection.host_done_sending = true;
                    let mut header = self.header(key, OP_SHUTDOWN);
                    header.flags = SHUTDOWN_SEND | SHUTDOWN_RECEIVE;
                    return Some((header, 0));
                }
            }
        }
        None
    }

    fn accept_host_connections(&mut self, epoll: &Epoll) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let token = self.new_token();
                    if stream.set_nonblocking(true).is_ok()
                        && watch_stream(epoll, &stream, token).is_ok()
                    {
                        self.targets
                            .insert(token, Target::Handshake(stream, Vec::new()));
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Reads the `CONNECT <port>\n` line byte by byte (nothing past it belongs to the handshake).
    fn handshake(&mut self, token: u64, epoll: &Epoll) {
        let Some(Target::Handshake(stream, line)) = self.targets.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(line),
                Ok(1) if line.len() < MAX_CONNECT_LINE => line.push(byte[0]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                _ => break None,
            }
        };
        let Some(Target::Handshake(stream, _)) = self.targets.remove(&token) else {
            return;
        };
        let Some(guest_port) = port else {
            let _ = unwatch(epoll, stream.as_raw_fd());
            return;
        };
        let host_port = self.free_host_port(guest_port);
        let key = (host_port, guest_port);
        let guest_view = PacketHeader::default();
        let mut connection = Connection::new(stream, token, Phase::Connecting, &guest_view);
        connection.readable = false;
        self.connections.insert(key, connection);
        self.targets.insert(token, Target::Connection(key));
        self.queue_control(key, OP_REQUEST, 0);
    }

    fn free_host_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let port = self.next_host_port;
            self.next_host_port = self
                .next_host_port
                .checked_add(1)
                .unwrap_or(FIRST_HOST_PORT);
            if !self.connections.contains_key(&(port, guest_port)) {
                return port;
            }
        }
    }

    fn connection_event(&mut self, key: ConnectionKey, events: EventSet, epoll: &Epoll) {
        let Some(connection) = self.connections.get_mut(&key) else {
            return;
        };
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP) {
            connection.readable = true;
        }
        if connection.phase == Phase::Connecting && events.contains(EventSet::HANG_UP) {
            // The host gave up before the guest answered.
            self.reset_connection(key, epoll);
            return;
        }
        if events.contains(EventSet::OUT) {
            if connection.flush_outgoing().is_err() {
                self.reset_connection(key, epoll);
            } else if connection.wants_credit_update() {
                self.queue_control(key, OP_CREDIT_UPDATE, 0);
            }
        }
    }
}

fn watch_stream(epoll: &Epoll, stream: &UnixStream, token: u64) -> std::io::Result<()> {
    watch(
        epoll,
        stream.as_raw_fd(),
        token,
        EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
    )
}

/// Connects a non-blocking unix stream to `path`. A listener whose backlog is full refuses at
/// once (`EAGAIN`) instead of stalling the device thread the way a blocking connect would.
fn connect_without_waiting(path: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

    // A path too long for sun_path fails here (ENAMETOOLONG), before any socket exists.
    let address = UnixAddr::new(path)?;
    let socket = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(socket.as_raw_fd(), &address)?;
    Ok(UnixStream::from(socket))
}

/// `CONNECT <port>` (the newline already stripped).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    text.strip_prefix("CONNECT ")?.trim().parse().ok()
}

impl QueueHandler for VsockHandler {
    fn start(&mut self, epoll: &Epoll) -> std::io::Result<()> {
        // Until the guest's driver first starts the device the socket does not listen, so a
        // host connection is refused at once instead of waiting for a driver that a guest
        // without vsock support never starts. After a driver reset, connections wait in the
        // backlog for the driver to come back.
        if !self.listening {
            nix::sys::socket::listen(&self.listener, Backlog::new(LISTEN_BACKLOG)?)?;
            self.listening = true;
        }
        watch(
            epoll,
            self.listener.as_raw_fd(),
            LISTENER_TOKEN,
            EventSet::IN | EventSet::EDGE_TRIGGERED,
        )?;
        self.targets.insert(LISTENER_TOKEN, Target::Listener);
        self.accept_host_connections(epoll);
        Ok(())
    }

    fn queue_notified(
        &mut self,
        queues: &mut DeviceQueues,
        index: usize,
        epoll: &Epoll,
    ) -> Result<(), QueueError> {
        match index {
            RX_QUEUE | TX_QUEUE => self.process(queues, epoll),
            // The event queue carries only the transport reset sent by `restored`.
            _ => Ok(()),
        }
    }

    fn restored(&mut self, queues: &mut DeviceQueues) -> Result<(), QueueError> {
        // Connections do not survive a snapshot (their host ends stayed with the old process):
        // as in Firecracker, a transport reset tells the guest to drop them all.
        let memory = queues.memory.clone();
        let Some((head, mut writer)) = queues.pop_writer(EVENT_QUEUE, &memory)? else {
            tracing::warn!(
                "virtio-vsock: the guest has no event buffer posted, so it is not told that its \
                 connections from before the snapshot are gone"
            );
            return Ok(());
        };
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let written = writer.write_all(&event).map_or(0, |()| event.len() as u32);
        queues.add_used(EVENT_QUEUE, head, written)?;
        queues.notify(EVENT_QUEUE)
    }

    fn backend_ready(
        &mut self,
        queues: &mut DeviceQueues,
        token: u64,
        events: EventSet,
        epoll: &Epoll,
    ) -> Result<(), QueueError> {
        match self.targets.get(&token) {
            Some(Target::Listener) => self.accept_host_connections(epoll),
            Some(Target::Handshake(..)) => self.handshake(token, epoll),
            Some(Target::Connection(key)) => {
                let key = *key;
                self.connection_event(key, events, epoll);
            }
            None => {}
        }
        self.process(queues, epoll)
    }

    fn stop(&mut self) {
        // The driver reset forgets every connection; host streams see end-of-file.
        self.connections.clear();
        self.targets.clear();
        self.control.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{TestQueues, DATA_START};

    fn guest_packet(queues: &mut TestQueues, header: PacketHeader, payload: &[u8]) {
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(payload);
        queues.write_bytes(DATA_START, &bytes);
        queues.add_chain(TX_QUEUE, &[(DATA_START, bytes.len() as u32, false)]);
    }

    fn packet_at(queues: &TestQueues, address: u64) -> PacketHeader {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes.copy_from_slice(&queues.read_bytes(address, HEADER_BYTES));
        PacketHeader::decode(&bytes)
    }

    fn from_guest(op: u16, src_port: u32, dst_port: u32, len: u32) -> PacketHeader {
        PacketHeader {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            kind: TYPE_STREAM,
            op,
            buf_alloc: 4096,
            ..PacketHeader::default()
        }
    }

    /// A handler whose guest (cid 3, port 1000) has connected to the host's port 80 with
    /// `request`; the host side of that connection is `stream`.
    struct GuestConnection {
        _dir: tempfile::TempDir,
        handler: VsockHandler,
        epoll: Epoll,
        queues: TestQueues,
        stream: UnixStream,
    }

    fn guest_connection(request: PacketHeader) -> GuestConnection {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("v.sock");
        let host = UnixListener::bind(dir.path().join("v.sock_80")).unwrap();
        let listener = corral_control::bind(&socket).unwrap();
        let mut handler = VsockHandler::new(3, socket, listener);
        let epoll = Epoll::new().unwrap();
        let mut queues = TestQueues::new(3).unwrap();
        guest_packet(&mut queues, request, &[]);
        handler.process(&mut queues.queues, &epoll).unwrap();
        let (stream, _) = host.accept().unwrap();
        GuestConnection {
            _dir: dir,
            handler,
            epoll,
            queues,
            stream,
        }
    }

    #[test]
    fn guest_connections_reach_the_port_socket_and_carry_data() {
        let GuestConnection {
            _dir,
            mut handler,
            epoll,
            mut queues,
            mut stream,
        } = guest_connection(from_guest(OP_REQUEST, 1000, 80, 0));
        // The answer waits for a receive buffer.
        let reply_at = DATA_START + 0x1000;
        queues.add_chain(RX_QUEUE, &[(reply_at, 4096, true)]);
        handler.process(&mut queues.queues, &epoll).unwrap();
        let reply = packet_at(&queues, reply_at);
        assert_eq!(
            (reply.op, reply.src_port, reply.dst_port, reply.dst_cid),
            (OP_RESPONSE, 80, 1000, 3)
        );

        guest_packet(&mut queues, from_guest(OP_RW, 1000, 80, 5), b"hello");
        handler.process(&mut queues.queues, &epoll).unwrap();
        let mut data = [0u8; 5];
        stream.read_exact(&mut data).unwrap();
        assert_eq!(&data, b"hello");
    }

    #[test]
    fn data_for_the_guest_respects_its_credit() {
        let mut request = from_guest(OP_REQUEST, 1000, 80, 0);
        request.buf_alloc = 8;
        let GuestConnection {
            _dir,
            mut handler,
            epoll,
            mut queues,
            mut stream,
        } = guest_connection(request);
        stream.write_all(&[b'x'; 20]).unwrap();
        let rx = |slot: u64| DATA_START + 0x1000 * (slot + 1);
        for slot in 0..4 {
            queues.add_chain(RX_QUEUE, &[(rx(slot), 4096, true)]);
        }
        handler.process(&mut queues.queues, &epoll).unwrap();
        // The response, then 8 bytes: all the credit the guest gave.
        assert_eq!(queues.used_count(RX_QUEUE), 2);
        assert_eq!(
            (packet_at(&queues, rx(1)).op, packet_at(&queues, rx(1)).len),
            (OP_RW, 8)
        );
        // The guest consumed them and says so: 8 more.
        let mut update = from_guest(OP_CREDIT_UPDATE, 1000, 80, 0);
        update.buf_alloc = 8;
        update.fwd_cnt = 8;
        guest_packet(&mut queues, update, &[]);
        handler.process(&mut queues.queues, &epoll).unwrap();
        assert_eq!(queues.used_count(RX_QUEUE), 3);
        assert_eq!(
            (packet_at(&queues, rx(2)).op, packet_at(&queues, rx(2)).len),
            (OP_RW, 8)
        );
    }

    #[test]
    fn a_guest_sending_past_its_credit_is_reset() {
        let GuestConnection {
            _dir,
            mut handler,
            epoll,
            mut queues,
            stream,
        } = guest_connection(from_guest(OP_REQUEST, 1000, 80, 0));
        // The host never reads, so guest data piles up in the socket buffer and then in the
        // device, until the guest exceeds the 256 KiB it was allowed.
        let chunk = vec![0u8; 60000];
        let mut reset = false;
        for _ in 0..64 {
            guest_packet(
                &mut queues,
                from_guest(OP_RW, 1000, 80, chunk.len() as u32),
                &chunk,
            );
            handler.process(&mut queues.queues, &epoll).unwrap();
            if handler.connections.is_empty() {
                reset = true;
                break;
            }
        }
        assert!(reset, "the connection survived a guest ignoring its credit");
        drop(stream);
    }

    #[test]
    fn a_guest_flooding_credit_requests_without_receive_buffers_is_held_at_the_cap() {
        use crate::devices::virtio::testing::QUEUE_SIZE as RING;
        let GuestConnection {
            _dir,
            mut handler,
            epoll,
            mut queues,
            stream: _stream,
        } = guest_connection(from_guest(OP_REQUEST, 1000, 80, 0));
        // Every credit request needs an answer; the guest posts no receive buffer for them and
        // keeps its transmit ring full.
        let ring = usize::from(RING);
        let mut posted = 1; // the connection request
        for _ in 0..2 * MAX_QUEUED_CONTROL / ring {
            let outstanding = posted - usize::from(queues.used_count(TX_QUEUE));
            for _ in outstanding..ring {
                guest_packet(&mut queues, from_guest(OP_CREDIT_REQUEST, 1000, 80, 0), &[]);
                posted += 1;
            }
            handler.process(&mut queues.queues, &epoll).unwrap();
            assert!(handler.control.len() <= MAX_QUEUED_CONTROL);
        }
        assert_eq!(handler.control.len(), MAX_QUEUED_CONTROL);
        assert_eq!(usize::from(queues.used_count(TX_QUEUE)), MAX_QUEUED_CONTROL);
        assert_eq!(
            posted - MAX_QUEUED_CONTROL,
            ring,
            "packets beyond the cap stay in the transmit ring"
        );

        // Receive buffers appear: every answer reaches the guest and every packet is consumed.
        let mut received = 0;
        while received < posted {
            for slot in 0..u64::from(RING) {
                queues.add_chain(RX_QUEUE, &[(DATA_START + 0x1000 * (slot + 1), 4096, true)]);
            }
            handler.process(&mut queues.queues, &epoll).unwrap();
            let now = usize::from(queues.used_count(RX_QUEUE));
            assert!(now > received, "no progress after {received} answers");
            received = now;
        }
        assert_eq!(received, posted);
        assert_eq!(usize::from(queues.used_count(TX_QUEUE)), posted);
        assert!(handler.control.is_empty());
    }

    #[test]
    fn host_connections_are_refused_until_the_driver_first_starts_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("v.sock");
        let listener = corral_control::bind_without_listening(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut handler = VsockHandler::new(3, socket.clone(), listener);
        let refused = UnixStream::connect(&socket).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        let epoll = Epoll::new().unwrap();
        handler.start(&epoll).unwrap();
        UnixStream::connect(&socket).unwrap();
        // A driver reset and restart keeps it listening.
        handler.stop();
        handler.start(&Epoll::new().unwrap()).unwrap();
        UnixStream::connect(&socket).unwrap();
    }

    #[test]
    fn packets_for_unknown_connections_and_refused_ports_are_reset() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("v.sock");
        let listener = corral_control::bind(&socket).unwrap();
        let mut handler = VsockHandler::new(3, socket, listener);
        let epoll = Epoll::new().unwrap();
        let mut queues = TestQueues::new(3).unwrap();
        guest_packet(&mut queues, from_guest(OP_REQUEST, 1000, 81, 0), &[]);
        handler.process(&mut queues.queues, &epoll).unwrap();
        guest_packet(&mut queues, from_guest(OP_RW, 1001, 82, 0), &[]);
        handler.process(&mut queues.queues, &epoll).unwrap();
        // A packet claiming a length past its buffer is dropped and reset, not read beyond.
        guest_packet(&mut queues, from_guest(OP_RW, 1002, 83, 60000), b"short");
        handler.process(&mut queues.queues, &epoll).unwrap();
        for slot in 0..3u64 {
            queues.add_chain(RX_QUEUE, &[(DATA_START + 0x1000 * (slot + 1), 4096, true)]);
        }
        handler.process(&mut queues.queues, &epoll).unwrap();
        assert_eq!(queues.used_count(RX_QUEUE), 3);
        for slot in 0..3u64 {
            let reply = packet_at(&queues, DATA_START + 0x1000 * (slot + 1));
            assert_eq!(reply.op, OP_RST, "packet {slot}");
        }
    }

    #[test]
    fn a_restored_device_tells_the_guest_of_a_transport_reset() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("v.sock");
        let listener = corral_control::bind(&socket).unwrap();
        let mut handler = VsockHandler::new(3, socket, listener);
        let mut queues = TestQueues::new(3).unwrap();
        // Without an event buffer the guest cannot be told; nothing breaks.
        handler.restored(&mut queues.queues).unwrap();
        assert_eq!(queues.used_count(EVENT_QUEUE), 0);
        queues.write_bytes(DATA_START, &[0xff; 4]);
        queues.add_chain(EVENT_QUEUE, &[(DATA_START, 4, true)]);
        handler.restored(&mut queues.queues).unwrap();
        assert_eq!(queues.used_count(EVENT_QUEUE), 1);
        assert_eq!(queues.used(EVENT_QUEUE, 0).1, 4);
        assert_eq!(
            queues.read_bytes(DATA_START, 4),
            EVENT_TRANSPORT_RESET.to_le_bytes()
        );
    }

    #[test]
    fn connect_lines_parse() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT x"), None);
        assert_eq!(parse_connect(b"connect 52"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
    }
}
