//! The I/O thread of an activated virtio device: an epoll loop over the queues' notification
//! eventfds, the device's host file descriptors and a stop eventfd.
//!
//! The handler (a device's back end: the disk, the tap, the vsock connections) lives behind a
//! mutex that only the running thread takes, so it survives a driver reset and is handed to the
//! next activation.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{DeviceQueues, QueueError};
use crate::devices::bus::lock;

/// Tokens at or above this value belong to the handler's own file descriptors; below it are
/// queue indexes.
pub const FIRST_BACKEND_TOKEN: u64 = 1 << 16;
const STOP_TOKEN: u64 = u64::MAX;
const EVENTS_PER_WAIT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot set up the I/O thread of {device}: {source}")]
    Setup {
        device: String,
        source: std::io::Error,
    },
}

/// The notification eventfd of one queue (a duplicate of the transport's ioeventfd).
pub struct QueueEvent(pub EventFd);

/// A device's back end, driven by its I/O thread.
pub trait QueueHandler: Send + 'static {
    /// Registers the handler's host file descriptors, with tokens from [`FIRST_BACKEND_TOKEN`].
    fn start(&mut self, _epoll: &Epoll) -> std::io::Result<()> {
        Ok(())
    }
    /// The driver made buffers available on queue `index`.
    fn queue_notified(
        &mut self,
        queues: &mut DeviceQueues,
        index: usize,
        epoll: &Epoll,
    ) -> Result<(), QueueError>;
    /// A host file descriptor registered under `token` is ready.
    fn backend_ready(
        &mut self,
        _queues: &mut DeviceQueues,
        _token: u64,
        _events: EventSet,
        _epoll: &Epoll,
    ) -> Result<(), QueueError> {
        Ok(())
    }
    /// The device is being reset: drop what belonged to this activation.
    fn stop(&mut self) {}
}

struct Running {
    stop: EventFd,
    thread: JoinHandle<()>,
}

/// Starts and stops the I/O thread of one device.
pub struct Worker<H> {
    handler: Arc<Mutex<H>>,
    running: Option<Running>,
}

impl<H: QueueHandler> Worker<H> {
    pub fn new(handler: H) -> Worker<H> {
        Worker {
            handler: Arc::new(Mutex::new(handler)),
            running: None,
        }
    }

    /// The handler, for inspection while the worker is stopped (tests).
    pub fn handler(&self) -> &Arc<Mutex<H>> {
        &self.handler
    }

    /// Starts the I/O thread on `queues`; a running one is stopped first.
    pub fn activate(
        &mut self,
        name: &str,
        queues: DeviceQueues,
        events: Vec<QueueEvent>,
    ) -> Result<(), WorkerError> {
        self.reset();
        let setup = |source| WorkerError::Setup {
            device: name.to_owned(),
            source,
        };
        let epoll = Epoll::new().map_err(setup)?;
        let stop = EventFd::new(EFD_NONBLOCK).map_err(setup)?;
        watch(&epoll, stop.as_raw_fd(), STOP_TOKEN, EventSet::IN).map_err(setup)?;
        for (index, event) in events.iter().enumerate() {
            watch(&epoll, event.0.as_raw_fd(), index as u64, EventSet::IN).map_err(setup)?;
        }
        lock(&self.handler).start(&epoll).map_err(setup)?;
        let thread_stop = stop.try_clone().map_err(setup)?;
        let handler = self.handler.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&handler, queues, &events, &thread_stop, &epoll))
            .map_err(setup)?;
        self.running = Some(Running { stop, thread });
        Ok(())
    }

    /// Stops the I/O thread, if running, and waits for it.
    pub fn reset(&mut self) {
        if let Some(running) = self.running.take() {
            if let Err(err) = running.stop.write(1) {
                tracing::error!("cannot stop a virtio I/O thread: {err}");
                return;
            }
            // A thread that panicked has nothing left to clean up.
            let _ = running.thread.join();
        }
    }
}

impl<H> Drop for Worker<H> {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            if running.stop.write(1).is_ok() {
                let _ = running.thread.join();
            }
        }
    }
}

/// Adds `fd` to `epoll` for `events`, reported with `token`.
pub fn watch(epoll: &Epoll, fd: RawFd, token: u64, events: EventSet) -> std::io::Result<()> {
    epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
}

/// Removes `fd` from `epoll`.
pub fn unwatch(epoll: &Epoll, fd: RawFd) -> std::io::Result<()> {
    epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default())
}

fn run<H: QueueHandler>(
    handler: &Mutex<H>,
    mut queues: DeviceQueues,
    events: &[QueueEvent],
    stop: &EventFd,
    epoll: &Epoll,
) {
    let mut ready = vec![EpollEvent::default(); EVENTS_PER_WAIT];
    loop {
        let count = match epoll.wait(-1, &mut ready) {
            Ok(count) => count,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::error!("virtio I/O thread cannot wait for events: {err}");
                return;
            }
        };
        let mut handler = lock(handler);
        for event in &ready[..count] {
            let token = event.data();
            if token == STOP_TOKEN {
                // Drained so a later activation does not see a stale stop.
                let _ = stop.read();
                handler.stop();
                return;
            }
            let result = if token < FIRST_BACKEND_TOKEN {
                let index = token as usize;
                if let Some(QueueEvent(fd)) = events.get(index) {
                    let _ = fd.read(); // Drain: one wake-up covers every notification so far.
                }
                if queues.interrupt.needs_reset() {
                    continue;
                }
                handler.queue_notified(&mut queues, index, epoll)
            } else {
                if queues.interrupt.needs_reset() {
                    continue;
                }
                handler.backend_ready(&mut queues, token, event.event_set(), epoll)
            };
            if let Err(err) = result {
                queues.interrupt.fail(&err);
            }
        }
    }
}
