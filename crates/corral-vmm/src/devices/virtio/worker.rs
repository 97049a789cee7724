//! The I/O thread of a virtio device: an epoll loop over the queues' notification eventfds, the
//! device's host file descriptors and a stop eventfd.
//!
//! The thread lives as long as the device. It is started once, after the VMM has entered its
//! jail and before any vCPU runs ([`Worker::start`]), so it is created inside the jail and
//! confined by its own seccomp filter, never by the filter of the vCPU thread that activates the
//! device. Activation and reset are requests to that thread, answered before they return: the
//! handler (a device's back end: the disk, the tap, the vsock connections) belongs to the thread
//! and survives driver resets and guest restarts.
//!
//! For a snapshot the thread is paused ([`Worker::pause`]): it answers between two events, so no
//! request is half done in guest memory, with its queues' positions, and waits for
//! [`Worker::resume`] without touching guest memory.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use serde::{Deserialize, Serialize};
use virtio_queue::QueueT;

use super::{DeviceQueues, QueueError};
use crate::seccomp::{self, ThreadClass};

/// Tokens at or above this value belong to the handler's own file descriptors; below it are
/// queue indexes.
pub const FIRST_BACKEND_TOKEN: u64 = 1 << 16;
const STOP_TOKEN: u64 = u64::MAX;
const PAUSE_TOKEN: u64 = u64::MAX - 1;
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
    /// The device was activated from a snapshot (the driver did not set it up again): tell the
    /// driver what did not survive the move.
    fn restored(&mut self, _queues: &mut DeviceQueues) -> Result<(), QueueError> {
        Ok(())
    }
    /// The device is being reset: drop what belonged to this activation.
    fn stop(&mut self) {}
    /// The thread pauses (a snapshot, a migration's last pass): whatever the back end holds back
    /// goes to the host now, as another process may take over its files.
    fn paused(&mut self) {}
}

/// Where a queue's device side stands: the next available entry to take and the next used entry
/// to fill. Saved with snapshots so a restored device continues where it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePosition {
    pub next_avail: u16,
    pub next_used: u16,
}

/// What the device asks of its I/O thread.
enum Command {
    Activate {
        queues: DeviceQueues,
        events: Vec<QueueEvent>,
    },
    /// Go on after a pause.
    Resume,
    Shutdown,
}

/// What the I/O thread answers.
enum Reply {
    /// The activation's epoll set is ready (or could not be built).
    Activated(std::io::Result<()>),
    /// The activation ended: the handler has stopped.
    Stopped,
    /// The thread is paused between two events; its queues stand here.
    Paused(Vec<QueuePosition>),
}

/// How an activation's event loop ended.
enum Ended {
    /// The stop eventfd fired (or epoll failed): the thread waits for the next activation.
    Stopped,
    /// The device went away while the thread was paused.
    Shutdown,
}

struct Thread {
    commands: Sender<Command>,
    replies: Receiver<Reply>,
    stop: EventFd,
    pause: EventFd,
    handle: JoinHandle<()>,
    /// An activation is running (a `Stopped` reply is due after the stop eventfd is written).
    active: bool,
    /// The activation is paused: it waits for [`Command::Resume`].
    paused: bool,
}

/// What the I/O thread runs: [`serve`] with the handler it owns. Boxed so that a worker's type
/// does not name its handler's (the transport holds every device as the same trait object).
type Body = Box<dyn FnOnce(Receiver<Command>, Sender<Reply>, Signals) + Send>;

/// The eventfds that interrupt an activation's event loop.
struct Signals {
    stop: EventFd,
    pause: EventFd,
}

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
        let body: Body = Box::new(move |commands, replies, signals| {
            serve(handler, &commands, &replies, &signals)
        });
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
        let pause = EventFd::new(EFD_NONBLOCK).map_err(setup)?;
        let signals = Signals {
            stop: stop.try_clone().map_err(setup)?,
            pause: pause.try_clone().map_err(setup)?,
        };
        let (commands, thread_commands) = mpsc::channel();
        let (thread_replies, replies) = mpsc::channel();
        let class = self.class;
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                seccomp::enter(class);
                body(thread_commands, thread_replies, signals);
            })
            .map_err(setup)?;
        self.state = State::Started(Thread {
            commands,
            replies,
            stop,
            pause,
            handle,
            active: false,
            paused: false,
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
                // Left over from an activation that ended on its own (pauses are answered
                // before `pause` returns, so none is left over).
                Ok(Reply::Stopped | Reply::Paused(_)) => {}
                Err(_) => return Err(gone()),
            }
        }
    }

    /// Pauses the running activation between two events and returns its queues' positions;
    /// `None` when the device is not active. The thread touches no guest memory until
    /// [`Worker::resume`].
    pub fn pause(&mut self) -> Option<Vec<QueuePosition>> {
        let State::Started(thread) = &mut self.state else {
            return None;
        };
        if !thread.active || thread.paused {
            return None;
        }
        if let Err(err) = thread.pause.write(1) {
            tracing::error!("cannot pause a virtio I/O thread: {err}");
            return None;
        }
        loop {
            match thread.replies.recv() {
                Ok(Reply::Paused(positions)) => {
                    thread.paused = true;
                    return Some(positions);
                }
                // The activation ended on its own (its event loop failed) before the pause.
                Ok(Reply::Stopped) | Err(_) => {
                    thread.active = false;
                    return None;
                }
                Ok(Reply::Activated(_)) => {}
            }
        }
    }

    /// Lets a paused activation go on.
    pub fn resume(&mut self) {
        let State::Started(thread) = &mut self.state else {
            return;
        };
        if std::mem::take(&mut thread.paused) && thread.commands.send(Command::Resume).is_err() {
            tracing::error!("cannot resume a virtio I/O thread: it has ended");
        }
    }

    /// Stops the running activation, if any, and waits until the handler has stopped.
    pub fn reset(&mut self) {
        self.resume();
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
            // A paused thread waits for a command: `Shutdown` ends it.
            if thread.active && !thread.paused && thread.stop.write(1).is_err() {
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
    signals: &Signals,
) {
    while let Ok(Command::Activate { mut queues, events }) = commands.recv() {
        let epoll = match activation_epoll(&mut handler, &events, signals) {
            Ok(epoll) => epoll,
            Err(err) => {
                let _ = replies.send(Reply::Activated(Err(err)));
                continue;
            }
        };
        if replies.send(Reply::Activated(Ok(()))).is_err() {
            return;
        }
        if queues.restored {
            if let Err(err) = handler.restored(&mut queues) {
                queues.interrupt.fail(&err);
            }
            // The driver may have published requests and notified the old process, which had
            // not read the notification when the VM was saved: this process never sees that
            // one, and with event-index suppression the driver does not notify again until the
            // device catches up. So every queue is looked at once, as a notification would.
            for event in &events {
                if let Err(err) = event.0.write(1) {
                    tracing::warn!("cannot look at a restored virtio queue: {err}");
                }
            }
        }
        let channel = (commands, replies);
        let ended = run(&mut handler, queues, &events, signals, &epoll, channel);
        handler.stop();
        if matches!(ended, Ended::Shutdown) || replies.send(Reply::Stopped).is_err() {
            return;
        }
    }
}

/// The epoll set of one activation: the stop eventfd, the queue notifications and whatever the
/// handler registers.
fn activation_epoll<H: QueueHandler>(
    handler: &mut H,
    events: &[QueueEvent],
    signals: &Signals,
) -> std::io::Result<Epoll> {
    // A stop or pause written after an activation ended on its own must not reach this one.
    let _ = signals.stop.read();
    let _ = signals.pause.read();
    let epoll = Epoll::new()?;
    watch(&epoll, signals.stop.as_raw_fd(), STOP_TOKEN, EventSet::IN)?;
    watch(&epoll, signals.pause.as_raw_fd(), PAUSE_TOKEN, EventSet::IN)?;
    for (index, event) in events.iter().enumerate() {
        watch(&epoll, event.0.as_raw_fd(), index as u64, EventSet::IN)?;
    }
    handler.start(&epoll)?;
    Ok(epoll)
}

/// One activation's event loop; returns when the stop eventfd fires (or epoll fails), or when
/// the device goes away while paused.
fn run<H: QueueHandler>(
    handler: &mut H,
    mut queues: DeviceQueues,
    events: &[QueueEvent],
    signals: &Signals,
    epoll: &Epoll,
    (commands, replies): (&Receiver<Command>, &Sender<Reply>),
) -> Ended {
    let mut ready = vec![EpollEvent::default(); EVENTS_PER_WAIT];
    loop {
        let count = match epoll.wait(-1, &mut ready) {
            Ok(count) => count,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::error!("virtio I/O thread cannot wait for events: {err}");
                return Ended::Stopped;
            }
        };
        for event in &ready[..count] {
            let token = event.data();
            if token == STOP_TOKEN {
                // Drained so a later activation does not see a stale stop.
                let _ = signals.stop.read();
                return Ended::Stopped;
            }
            if token == PAUSE_TOKEN {
                let _ = signals.pause.read();
                handler.paused();
                let positions = queues
                    .queues
                    .iter()
                    .map(|queue| QueuePosition {
                        next_avail: queue.next_avail(),
                        next_used: queue.next_used(),
                    })
                    .collect();
                if replies.send(Reply::Paused(positions)).is_err() {
                    return Ended::Shutdown;
                }
                match commands.recv() {
                    Ok(Command::Resume) => continue,
                    // Activations come only after a reset, which resumes first.
                    _ => return Ended::Shutdown,
                }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use virtio_queue::Queue;

    use super::*;
    use crate::devices::virtio::rng::RngHandler;
    use crate::devices::virtio::testing::{TestQueues, DATA_START};

    fn wait_for_used(test: &TestQueues, count: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while test.used_count(0) < count {
            assert!(Instant::now() < deadline, "the I/O thread never served");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_paused_worker_reports_its_positions_and_serves_nothing_until_resumed() {
        let mut test = TestQueues::new(1).unwrap();
        // The worker's queues share the test's memory and start where the test's stand.
        let queues = DeviceQueues {
            memory: test.queues.memory.clone(),
            queues: vec![Queue::try_from(test.queues.queues[0].state()).unwrap()],
            interrupt: test.queues.interrupt.clone(),
            features: 0,
            restored: false,
        };
        let notify = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut worker = Worker::new(ThreadClass::Rng, RngHandler);
        worker
            .activate("rng-test", queues, vec![QueueEvent(notify.clone())])
            .unwrap();
        test.add_chain(0, &[(DATA_START, 16, true)]);
        notify.write(1).unwrap();
        wait_for_used(&test, 1);

        let positions = worker.pause().unwrap();
        assert_eq!(
            positions,
            [QueuePosition {
                next_avail: 1,
                next_used: 1
            }]
        );
        test.add_chain(0, &[(DATA_START + 16, 16, true)]);
        notify.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(test.used_count(0), 1, "a paused worker served a request");
        worker.resume();
        wait_for_used(&test, 2);

        // A worker paused when the device goes away ends without a resume.
        assert!(worker.pause().is_some());
        drop(worker);
    }

    #[test]
    fn a_restored_worker_serves_requests_published_before_the_save_without_a_notification() {
        let mut test = TestQueues::new(1).unwrap();
        // The driver published a request and notified the process that was saved; this
        // activation's eventfd never hears of it.
        test.add_chain(0, &[(DATA_START, 16, true)]);
        let queues = DeviceQueues {
            memory: test.queues.memory.clone(),
            queues: vec![Queue::try_from(test.queues.queues[0].state()).unwrap()],
            interrupt: test.queues.interrupt.clone(),
            features: 0,
            restored: true,
        };
        let notify = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut worker = Worker::new(ThreadClass::Rng, RngHandler);
        worker
            .activate("rng-restored", queues, vec![QueueEvent(notify)])
            .unwrap();
        wait_for_used(&test, 1);
    }
}
