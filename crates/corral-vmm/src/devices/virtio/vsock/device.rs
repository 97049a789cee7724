//! The vsock device's front: its identity (the guest CID) and features, driven by the transport
//! from vCPU threads; the connections live in the back end ([`super::muxer`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;

use super::muxer::VsockHandler;
use super::{MIN_GUEST_CID, QUEUE_SIZE};
use crate::devices::virtio::worker::{QueueEvent, Worker, WorkerError};
use crate::devices::virtio::{read_config_bytes, DeviceQueues, VirtioDevice};
use crate::seccomp::ThreadClass;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock guest CID {0} is reserved; use 3 or more")]
    Cid(u64),
    #[error("vsock socket")]
    Socket(#[from] corral_control::ControlError),
    #[error("cannot make the vsock socket non-blocking: {0}")]
    NonBlocking(std::io::Error),
}

/// The vsock device's identity as the guest sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    pub guest_cid: u64,
}

pub struct Vsock {
    state: VsockState,
    worker: Worker<VsockHandler>,
}

impl Vsock {
    /// A device for guest CID `cid` whose host side listens at `socket`.
    pub fn new(cid: u64, socket: &Path) -> Result<Vsock, VsockError> {
        if cid < MIN_GUEST_CID || cid > u64::from(u32::MAX) {
            return Err(VsockError::Cid(cid));
        }
        // Listened on when the guest's driver first starts the device (see the muxer's `start`).
        let listener = corral_control::bind_without_listening(socket)?;
        listener
            .set_nonblocking(true)
            .map_err(VsockError::NonBlocking)?;
        Ok(Vsock {
            state: VsockState { guest_cid: cid },
            worker: Worker::new(
                ThreadClass::Vsock,
                VsockHandler::new(cid, socket.to_owned(), listener),
            ),
        })
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }
    fn name(&self) -> &str {
        "virtio-vsock"
    }
    fn queue_max_sizes(&self) -> &[u16] {
        // rx, tx, event
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        0
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.state.guest_cid.to_le_bytes(), offset, data);
    }
    fn activate(
        &mut self,
        queues: DeviceQueues,
        events: Vec<QueueEvent>,
    ) -> Result<(), WorkerError> {
        self.worker.activate("virtio-vsock", queues, events)
    }
    fn start_worker(&mut self) -> Result<(), WorkerError> {
        self.worker.start("virtio-vsock")
    }
    fn reset(&mut self) {
        self.worker.reset();
    }
}
