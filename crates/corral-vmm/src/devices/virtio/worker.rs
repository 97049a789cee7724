//! The I/O thread of a virtio device: an epoll loop over the queues' notification eventfds, the
//! device's host file descriptors and a stop eventfd.
//!
//! The thread lives as long as the device. It is started once, after the VMM has entered its
//! jail and before any vCPU runs ([`Worker::start`]), so it is created inside the jail and
//! confined by its own seccomp filter, never by the filter of the vCPU thread that activates the
//! device. Activation and reset are requests to that thread, answered before they return: the
//! handler (a device's back end: the disk, the tap, the vsock connections) belongs to the thread
//! and survives driver resets and guest restarts.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{DeviceQueues, QueueError};
use crate::seccomp::{self, ThreadClass};

/// Tokens at or above this value belong to the handler's own file descriptors; below it are
/// queue indexes.
pub const FIRST_BACKEND_TOKEN: u64 = 1 << 16;
const STOP_TOKEN: u64 = u64::MAX;
const EVENTS_PER_WAIT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot set up the I/O thread of {device}")]
    Setup {
        device: String,
        source: std::io::Error,
    },
}

/// The notification eventfd of one queue (shared with the transport, which registers it as the
/// queue's ioeventfd).
pub struct QueueEvent(pub Arc<EventFd>);

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

/// What the device asks of its I/O thread.
enum Command {
    Activate {
        queues: DeviceQueues,
        events: Vec<QueueEvent>,
    },
    Shutdown,
}

/// What the I/O thread answers.
enum Reply {
    /// The activation's epoll set is ready (or could not be built).
    Activated(std::io::Result<()>),
    /// The activation ended: the handler has stopped.
    Stopped,
}

struct Thread {
    commands: Sender<Command>,
    replies: Receiver<Reply>,
    stop: EventFd,
    handle: JoinHandle<()>,
    /// An activation is running (a `Stopped` reply is due after the stop eventfd is written).
    active: bool,
}

/// What the I/O thread runs: [`serve`] with the handler it owns. Boxed so that a worker's type
/// does not name its handler's (the transport holds every device as the same trait object).
type Body = Box<dyn FnOnce(Receiver<Command>, Sender<Reply>, EventFd) + Send>;

enum State {
    /// Not started yet: the handler waits here, inside the thread's body.
    Created(Body),
    Started(Thread),
    /// Starting failed or the thread is gone.
    Failed,
}

/// The I/O thread of one device and the requests to it.
pub struct Worker {
    class: ThreadClass,
    state: State,
}

impl Worker {
    /// A worker whose thread (of seccomp class `class`) runs `handler` once started.
    pub fn new<H: QueueHandler>(class: ThreadClass, handler: H) -> Worker {
        let body: Body =
            Box::new(move |commands, replies, stop| serve(handler, &commands, &replies, &stop));
        Worker {
            class,
            state: State::Created(body),
        }
    }

    /// Starts the I/O thread, named `name`, if it is not running yet.
    pub fn start(&mut self, name: &str) -> Result<(), WorkerError> {
        let setup = |source| WorkerError::Setup {
            device: name.to_owned(),
            source,
        };
        let body = match std::mem::replace(&mut self.state, State::Failed) {
            State::Created(body) => body,
            started @ State::Started(_) => {
                self.state = started;
                return Ok(());
            }
            State::Failed => {
                return Err(setup(std::io::Error::other("the I/O thread has ended")));
            }
        };
        let stop = EventFd::new(EFD_NONBLOCK).map_err(setup)?;
        let thread_stop = stop.try_clone().map_err(setup)?;
        let (commands, thread_commands) = mpsc::channel();
        let (thread_replies, replies) = mpsc::channel();
        let class = self.class;
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                seccomp::enter(class);
                body(thread_commands, thread_replies, thread_stop);
            })
            .map_err(setup)?;
        self.state = State::Started(Thread {
            commands,
            replies,
            stop,
            handle,
            active: false,
        });
        Ok(())
    }

    /// Starts the handler's work on `queues`; a running activation is stopped first. The thread
    /// is started here if [`Worker::start`] was not called (unit tests and fuzz targets).
    pub fn activate(
        &mut self,
        name: &str,
        queues: DeviceQueues,
        events: Vec<QueueEvent>,
    ) -> Result<(), WorkerError> {
        self.start(name)?;
        self.reset();
        let gone = || WorkerError::Setup {
            device: name.to_owned(),
            source: std::io::Error::other("the I/O thread has ended"),
        };
        let State::Started(thread) = &mut self.state else {
            return Err(gone());
        };
        if thread
            .commands
            .send(Command::Activate { queues, events })
            .is_err()
        {
            return Err(gone());
        }
        loop {
            match thread.replies.recv() {
                Ok(Reply::Activated(Ok(()))) => {
                    thread.active = true;
                    return Ok(());
                }
                Ok(Reply::Activated(Err(source))) => {
                    return Err(WorkerError::Setup {
                        device: name.to_owned(),
                        source,
                    })
                }
                // Left over from an activation that ended on its own.
                Ok(Reply::Stopped) => {}
                Err(_) => return Err(gone()),
            }
        }
    }

    /// Stops the running activation, if any, and waits until the handler has stopped.
    pub fn reset(&mut self) {
        let State::Started(thread) = &mut self.state else {
            return;
        };
        if !std::mem::take(&mut thread.active) {
            return;
        }
        if let Err(err) = thread.stop.write(1) {
            tracing::error!("cannot stop a virtio I/O thread: {err}");
            return;
        }
        while let Ok(reply) = thread.replies.recv() {
            if matches!(reply, Reply::Stopped) {
                break;
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let State::Started(thread) = std::mem::replace(&mut self.state, State::Failed) {
            if thread.active && thread.stop.write(1).is_err() {
                // The thread cannot be told to stop; it ends with the process.
                return;
            }
            let _ = thread.commands.send(Command::Shutdown);
            // A thread that panicked has nothing left to clean up.
            let _ = thread.handle.join();
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

/// The I/O thread: serves activations until the device goes away. The handler is dropped here,
/// on this thread (a disk's last flush happens under this thread's filter).
fn serve<H: QueueHandler>(
    mut handler: H,
    commands: &Receiver<Command>,
    replies: &Sender<Reply>,
    stop: &EventFd,
) {
    while let Ok(Command::Activate { queues, events }) = commands.recv() {
        let epoll = match activation_epoll(&mut handler, &events, stop) {
            Ok(epoll) => epoll,
            Err(err) => {
                let _ = replies.send(Reply::Activated(Err(err)));
                continue;
            }
        };
        if replies.send(Reply::Activated(Ok(()))).is_err() {
            return;
        }
        run(&mut handler, queues, &events, stop, &epoll);
        handler.stop();
        if replies.send(Reply::Stopped).is_err() {
            return;
        }
    }
}

/// The epoll set of one activation: the stop eventfd, the queue notifications and whatever the
/// handler registers.
fn activation_epoll<H: QueueHandler>(
    handler: &mut H,
    events: &[QueueEvent],
    stop: &EventFd,
) -> std::io::Result<Epoll> {
    // A stop written after an activation ended on its own must not end this one.
    let _ = stop.read();
    let epoll = Epoll::new()?;
    watch(&epoll, stop.as_raw_fd(), STOP_TOKEN, EventSet::IN)?;
    for (index, event) in events.iter().enumerate() {
        watch(&epoll, event.0.as_raw_fd(), index as u64, EventSet::IN)?;
    }
    handler.start(&epoll)?;
    Ok(epoll)
}

/// One activation's event loop; returns when the stop eventfd fires (or epoll fails).
fn run<H: QueueHandler>(
    handler: &mut H,
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
        for event in &ready[..count] {
            let token = event.data();
            if token == STOP_TOKEN {
                // Drained so a later activation does not see a stale stop.
                let _ = stop.read();
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
