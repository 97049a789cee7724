//! The vsock device's front: its identity (the guest CID) and features, driven by the transport
//! from vCPU threads; the connections live in the back end ([`super::muxer`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;

use super::muxer::VsockHandler;
use super::{MIN_GUEST_CID, QUEUE_SIZE};
use crate::devices::virtio::common::virtio_device;
use crate::devices::virtio::worker::Worker;
use crate::devices::virtio::VirtioCommon;
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
    common: VirtioCommon,
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
        let state = VsockState { guest_cid: cid };
        Ok(Vsock {
            common: VirtioCommon {
                name: "virtio-vsock".to_owned(),
                features: 0,
                // rx, tx, event
                queue_max_sizes: vec![QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE],
                // `struct virtio_vsock_config`: the guest CID.
                config: state.guest_cid.to_le_bytes().to_vec(),
                worker: Worker::new(
                    ThreadClass::Vsock,
                    VsockHandler::new(cid, socket.to_owned(), listener),
                ),
            },
        })
    }
}

virtio_device!(Vsock, VIRTIO_ID_VSOCK);
