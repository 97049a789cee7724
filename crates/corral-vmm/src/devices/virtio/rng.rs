//! virtio-rng: fills the driver's buffers from the host's `getrandom(2)`.

use std::io::Write;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use vmm_sys_util::epoll::Epoll;

use super::common::virtio_device;
use super::worker::{QueueHandler, Worker};
use super::{DeviceQueues, QueueError, VirtioCommon};
use crate::seccomp::ThreadClass;

const QUEUE_SIZE: u16 = 256;
/// The most entropy handed out per buffer; a larger buffer gets this much (the driver asks
/// again).
const MAX_BYTES_PER_REQUEST: usize = 4096;

pub struct Rng {
    common: VirtioCommon,
}

impl Default for Rng {
    fn default() -> Self {
        Rng {
            common: VirtioCommon {
                name: "virtio-rng".to_owned(),
                features: 0,
                queue_max_sizes: vec![QUEUE_SIZE],
                config: Vec::new(),
                worker: Worker::new(ThreadClass::Rng, RngHandler),
            },
        }
    }
}

virtio_device!(Rng, VIRTIO_ID_RNG);

#[derive(Default)]
pub struct RngHandler;

impl RngHandler {
    /// Fills every available buffer.
    pub fn process_queue(&mut self, queues: &mut DeviceQueues) -> Result<(), QueueError> {
        let mut served = false;
        let mut random = [0u8; MAX_BYTES_PER_REQUEST];
        loop {
            let memory = queues.memory.clone();
            let Some((head, mut writer)) = queues.pop_writer(0, &memory)? else {
                break;
            };
            let len = writer.available_bytes().min(MAX_BYTES_PER_REQUEST);
            let written = match getrandom::fill(&mut random[..len]) {
                Ok(()) => writer.write_all(&random[..len]).map(|()| len).unwrap_or(0),
                Err(err) => {
                    tracing::error!("virtio-rng: getrandom failed: {err}");
                    0
                }
            };
            queues.add_used(0, head, written as u32)?;
            served = true;
        }
        if served {
            queues.notify(0)?;
        }
        Ok(())
    }
}

impl QueueHandler for RngHandler {
    fn queue_notified(
        &mut self,
        queues: &mut DeviceQueues,
        _index: usize,
        _epoll: &Epoll,
    ) -> Result<(), QueueError> {
        self.process_queue(queues)
    }
}
