//! Consoles of supervised instances: a VM's serial port or a container's terminal.
//!
//! The supervisor side is a [`ConsoleHub`]: everything the guest prints goes to a size-capped log
//! (`corral logs`) and to the one attached client; what that client types goes to the guest.
//! The guest never waits for a client: output a client's socket does not take at once is held
//! for it (up to [`CLIENT_BUFFER_LIMIT`]) and sent by the client's session thread; a client that
//! falls further behind is dropped.
//!
//! The client side is [`attach`], which relays a terminal to the hub's socket until the user
//! types the escape byte (Ctrl-], as in virsh) or the console goes away.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::termios::{self, SetArg, Termios};

use crate::log::RotatingLog;
pub use crate::log::DEFAULT_LOG_LIMIT;
use crate::ControlError;

/// Ctrl-]: the byte that detaches a console client.
pub const ESCAPE_BYTE: u8 = 0x1d;

/// Said to a second client while one is attached.
const BUSY_MESSAGE: &[u8] =
    b"corral: the console is attached by another client; detach it first\r\n";
/// How long saying so may take (the message fits any socket buffer; this only bounds a bug).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking writer leaves only bytes behind; the data is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Output held for an attached client that reads slower than the guest prints. A client that
/// falls this far behind is dropped: the guest never waits for a client.
pub const CLIENT_BUFFER_LIMIT: usize = 1 << 20;

/// The attached client. Its socket is non-blocking: the guest's output goes out as far as the
/// socket takes it, the rest waits in `pending` for the session thread to send.
struct Client {
    /// Tells this client's session from later ones.
    session: u64,
    stream: UnixStream,
    pending: VecDeque<u8>,
    /// Wakes the session thread when output is pending.
    wake: Arc<EventFd>,
}

impl Client {
    /// Sends pending output until the socket would block; an error means the client is gone.
    fn send_pending(&mut self) -> std::io::Result<()> {
        while !self.pending.is_empty() {
            let (front, _) = self.pending.as_slices();
            match (&self.stream).write(front) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.pending.drain(..written);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Ends the session: wakes the session thread, which finds itself replaced and exits,
    /// closing the connection's last descriptor. (A vCPU drops clients from its serial port
    /// writes; waking a thread is all its seccomp filter needs for that.)
    fn hang_up(self) {
        let _ = self.wake.write(1);
    }
}

#[derive(Default)]
struct Shared {
    client: Mutex<Option<Client>>,
    log: Mutex<Option<RotatingLog>>,
}

/// The supervisor's end of a console. Cloning shares it.
#[derive(Clone, Default)]
pub struct ConsoleHub {
    shared: Arc<Shared>,
}

impl ConsoleHub {
    /// A hub that appends output to `log` (rotated at `log_limit` bytes), if given.
    pub fn new(log: Option<&Path>, log_limit: u64) -> Result<Self, ControlError> {
        let hub = Self::default();
        if let Some(path) = log {
            *lock(&hub.shared.log) = Some(RotatingLog::open(path, log_limit)?);
        }
        Ok(hub)
    }

    /// Serves clients on the unix socket at `path`, one at a time; each client's input is passed
    /// to `input`. Runs in a background thread for the life of the process.
    pub fn serve(
        &self,
        path: &Path,
        input: impl FnMut(&[u8]) + Send + 'static,
    ) -> Result<(), ControlError> {
        let listener = crate::bind(path)?;
        self.serve_on(listener, input);
        Ok(())
    }

    /// Like [`ConsoleHub::serve`], on a socket the caller has bound already. Threads: one that
    /// accepts clients, and one per attached client (its session).
    pub fn serve_on(&self, listener: UnixListener, input: impl FnMut(&[u8]) + Send + 'static) {
        let hub = self.clone();
        std::thread::spawn(move || hub.accept_loop(listener, input));
    }

    /// Serves clients on `listener` in the calling thread, for as long as the listener works
    /// (what [`ConsoleHub::serve_on`] runs on its own thread). Each client's input is read by a
    /// thread started from this one.
    pub fn accept_loop(&self, listener: UnixListener, input: impl FnMut(&[u8]) + Send + 'static) {
        let input = Arc::new(Mutex::new(input));
        let mut sessions = 0u64;
        for stream in listener.incoming().flatten() {
            let mut client = lock(&self.shared.client);
            if client.is_some() {
                drop(client);
                let mut refused = stream;
                // The refused client may already be gone; nothing to do then.
                let _ = refused.set_write_timeout(Some(REFUSAL_TIMEOUT));
                let _ = refused.write_all(BUSY_MESSAGE);
                continue;
            }
            let Ok(wake) = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            else {
                continue;
            };
            let Ok(reader) = stream.try_clone() else {
                continue;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            sessions += 1;
            let wake = Arc::new(wake);
            *client = Some(Client {
                session: sessions,
                stream,
                pending: VecDeque::new(),
                wake: wake.clone(),
            });
            drop(client);
            // Its own thread, so a second client is answered while this one is attached.
            let hub = self.clone();
            let input = input.clone();
            let session = sessions;
            std::thread::spawn(move || {
                hub.session(session, &reader, &wake, &mut *lock(&input));
            });
        }
    }

    /// Passes the client's input on and sends it the output the guest printed faster than the
    /// socket took it, until the client goes or is dropped.
    fn session(
        &self,
        session: u64,
        stream: &UnixStream,
        wake: &EventFd,
        input: &mut dyn FnMut(&[u8]),
    ) {
        let mut buffer = [0u8; 4096];
        loop {
            let sending = match lock(&self.shared.client).as_ref() {
                Some(client) if client.session == session => !client.pending.is_empty(),
                // Dropped (or replaced after a drop): nothing more to do.
                _ => return,
            };
            let mut wanted = PollFlags::POLLIN;
            if sending {
                wanted |= PollFlags::POLLOUT;
            }
            let mut fds = [
                PollFd::new(stream.as_fd(), wanted),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
            let stream_events = fds[0].revents().unwrap_or(PollFlags::empty());
            if fds[1].any() == Some(true) {
                let _ = wake.read();
            }
            if stream_events.contains(PollFlags::POLLOUT) && self.send_pending(session).is_err() {
                break;
            }
            if stream_events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            {
                match (&*stream).read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => input(&buffer[..read]),
                    Err(err)
                        if matches!(
                            err.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => break,
                }
            }
        }
        // Only end our own session: a drop may already have let a new one in.
        let mut client = lock(&self.shared.client);
        if client.as_ref().is_some_and(|c| c.session == session) {
            if let Some(client) = client.take() {
                client.hang_up();
            }
        }
    }

    /// Sends session `session`'s pending output as far as the socket takes it.
    fn send_pending(&self, session: u64) -> std::io::Result<()> {
        match lock(&self.shared.client).as_mut() {
            Some(client) if client.session == session => client.send_pending(),
            _ => Ok(()),
        }
    }

    /// True while a client is attached.
    pub fn attached(&self) -> bool {
        lock(&self.shared.client).is_some()
    }

    /// Appends `bytes` to the log; a log that fails is given up with a warning.
    fn log(&self, bytes: &[u8]) {
        // One guard for the whole step: the failure path must not lock the mutex again.
        let mut log = lock(&self.shared.log);
        if let Some(file) = log.as_mut() {
            if let Err(err) = file.write(bytes) {
                tracing::warn!(
                    "console log {} failed, logging stops: {err}",
                    file.path().display()
                );
                *log = None;
            }
        }
    }

    /// Sends `bytes` to the attached client without waiting for it: what its socket does not
    /// take now waits for the session thread, up to [`CLIENT_BUFFER_LIMIT`]; past that the client
    /// is dropped.
    fn send(&self, bytes: &[u8]) {
        let mut slot = lock(&self.shared.client);
        let Some(client) = slot.as_mut() else {
            return;
        };
        if client.pending.len() + bytes.len() > CLIENT_BUFFER_LIMIT {
            tracing::warn!(
                "console client dropped: it fell {} KiB behind the output (it stopped reading)",
                CLIENT_BUFFER_LIMIT >> 10
            );
            if let Some(client) = slot.take() {
                client.hang_up();
            }
            return;
        }
        client.pending.extend(bytes);
        match client.send_pending() {
            Ok(()) if client.pending.is_empty() => {}
            Ok(()) => {
                // The session thread sends the rest once the socket has room.
                let _ = client.wake.write(1);
            }
            Err(_) => {
                if let Some(client) = slot.take() {
                    client.hang_up();
                }
            }
        }
    }
}

impl Write for ConsoleHub {
    /// Never fails and never waits for a client: a broken log or a slow or vanished client must
    /// not stop the guest's output.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log(buf);
        self.send(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A terminal in raw mode (keys reach the guest as typed, no local echo) until this is dropped,
/// which restores its previous mode. Input typed before it was enabled is discarded. Does
/// nothing when the input is not a terminal.
pub struct RawMode<'fd> {
    saved: Option<(BorrowedFd<'fd>, Termios)>,
}

impl<'fd> RawMode<'fd> {
    pub fn enable(input: BorrowedFd<'fd>) -> Result<Self, ControlError> {
        let Ok(saved) = termios::tcgetattr(input) else {
            return Ok(Self { saved: None });
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // Flush pending input: an end-of-file typed in canonical mode (script(1) types one when
        // its input ends) waits in the queue as a NUL byte, which raw mode would hand over, and
        // the guest's terminal would echo it as "^@".
        termios::tcsetattr(input, SetArg::TCSAFLUSH, &raw).map_err(std::io::Error::from)?;
        Ok(Self {
            saved: Some((input, saved)),
        })
    }

    /// True when the input is a terminal (and is now raw).
    pub fn is_terminal(&self) -> bool {
        self.saved.is_some()
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        if let Some((fd, saved)) = self.saved.take() {
            // Nothing more can be done if restoring fails; the shell's `reset` recovers.
            let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &saved);
        }
    }
}

/// How an attached session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detach {
    /// The user typed the escape byte.
    Escape,
    /// The console closed (the instance stopped) or refused us.
    Closed,
    /// The input reached end of file.
    InputEnded,
}

/// What of `chunk` the console gets: the bytes before the escape byte, and whether it came.
pub fn before_escape(chunk: &[u8], escape: u8) -> (&[u8], bool) {
    match chunk.iter().position(|b| *b == escape) {
        Some(at) => (&chunk[..at], true),
        None => (chunk, false),
    }
}

/// Relays `input` to the console at `path` and the console to `output`, until the escape byte,
/// the end of the console or the end of input.
pub fn attach(
    path: &Path,
    input: BorrowedFd<'_>,
    output: &mut impl Write,
    escape: u8,
) -> Result<Detach, ControlError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let mut buffer = [0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(input, PollFlags::POLLIN),
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
        let [input_ready, console_ready] = fds.map(|fd| fd.any().unwrap_or(true));
        if console_ready {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return Ok(Detach::Closed);
            }
            output.write_all(&buffer[..read])?;
            output.flush()?;
        }
        if input_ready {
            let read = match nix::unistd::read(input, &mut buffer) {
                Ok(read) => read,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(std::io::Error::from(e).into()),
            };
            if read == 0 {
                return Ok(Detach::InputEnded);
            }
            let (typed, escaped) = before_escape(&buffer[..read], escape);
            stream.write_all(typed)?;
            if escaped {
                return Ok(Detach::Escape);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn wait_until(mut condition: impl FnMut() -> bool) {
        for _ in 0..200 {
            if condition() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("condition not reached");
    }

    #[test]
    fn output_goes_to_log_and_client_input_to_guest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let socket = dir.path().join("console.sock");
        let mut hub = ConsoleHub::new(Some(&log), DEFAULT_LOG_LIMIT).unwrap();
        let typed = Arc::new(Mutex::new(Vec::new()));
        let sink = typed.clone();
        hub.serve(&socket, move |bytes| lock(&sink).extend_from_slice(bytes))
            .unwrap();
        hub.write_all(b"before attach\n").unwrap();

        let mut client = UnixStream::connect(&socket).unwrap();
        wait_until(|| hub.attached());
        hub.write_all(b"hello\n").unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\n");
        client.write_all(b"ls\n").unwrap();
        wait_until(|| lock(&typed).as_slice() == b"ls\n");

        // A second client is refused while the first is attached.
        let mut second = UnixStream::connect(&socket).unwrap();
        let mut refusal = String::new();
        second.read_to_string(&mut refusal).unwrap();
        assert!(refusal.contains("attached by another client"), "{refusal}");

        drop(client);
        wait_until(|| !hub.attached());
        assert_eq!(std::fs::read(&log).unwrap(), b"before attach\nhello\n");
    }

    #[test]
    fn log_rotates_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let mut hub = ConsoleHub::new(Some(&log), 10).unwrap();
        hub.write_all(b"0123456789").unwrap();
        hub.write_all(b"abc").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("console.log.1")).unwrap(),
            b"0123456789"
        );
        assert_eq!(std::fs::read(&log).unwrap(), b"abc");
    }

    /// Runs `write` on its own thread and fails (instead of hanging the test) if it has not
    /// returned within `bound`.
    fn finishes_within(bound: Duration, write: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            write();
            let _ = done.send(());
        });
        if finished.recv_timeout(bound).is_err() {
            panic!("the console writer was still blocked after {bound:?}");
        }
    }

    #[test]
    fn a_removed_log_neither_hangs_later_writes_nor_stops_logging() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let mut hub = ConsoleHub::new(Some(&log), 10).unwrap();
        hub.write_all(b"01234").unwrap();
        std::fs::remove_file(&log).unwrap();
        let mut writer = hub.clone();
        finishes_within(Duration::from_secs(10), move || {
            // Past the rotation size: the rename finds no file.
            writer.write_all(b"56789abcdef").unwrap();
            writer.write_all(b"more").unwrap();
        });
        // A new log was started, and rotates as usual.
        assert_eq!(
            std::fs::read(dir.path().join("console.log.1")).unwrap(),
            b"56789abcdef"
        );
        assert_eq!(std::fs::read(&log).unwrap(), b"more");
    }

    #[test]
    fn a_log_that_cannot_rotate_stops_logging_without_hanging_writes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        // A non-empty directory where the rotated log goes: the rename fails.
        std::fs::create_dir_all(dir.path().join("console.log.1/x")).unwrap();
        let mut hub = ConsoleHub::new(Some(&log), 10).unwrap();
        let mut writer = hub.clone();
        finishes_within(Duration::from_secs(10), move || {
            writer.write_all(b"0123456789abc").unwrap();
            writer.write_all(b"more").unwrap();
        });
        hub.write_all(b"still fine").unwrap();
        assert!(lock(&hub.shared.log).is_none(), "logging stopped");
    }

    /// Log lines written while `run` runs on this thread.
    fn logged(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                lock(&self.0).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8_lossy(&lock(&capture.0)).into_owned();
        text
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped_and_never_blocks_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("console.sock");
        let hub = ConsoleHub::new(None, DEFAULT_LOG_LIMIT).unwrap();
        hub.serve(&socket, |_| {}).unwrap();
        let mut client = UnixStream::connect(&socket).unwrap();
        wait_until(|| hub.attached());
        // The guest prints 16 MiB; the client reads none of it.
        let (notes, noted) = std::sync::mpsc::channel();
        let mut writer = hub.clone();
        finishes_within(Duration::from_secs(60), move || {
            let line = [b'x'; 4096];
            let log = logged(|| {
                for _ in 0..4096 {
                    writer.write_all(&line).unwrap();
                }
            });
            notes.send(log).unwrap();
        });
        let log = noted.recv().unwrap();
        assert!(!hub.attached(), "the client was dropped");
        assert!(log.contains("console client dropped"), "{log}");
        // What the client had been sent is still there, then the end of the stream.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert!(!received.is_empty() && received.len() < 16 << 20);
    }

    #[test]
    fn a_client_that_reads_late_gets_all_output_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("console.sock");
        let mut hub = ConsoleHub::new(None, DEFAULT_LOG_LIMIT).unwrap();
        hub.serve(&socket, |_| {}).unwrap();
        let mut client = UnixStream::connect(&socket).unwrap();
        wait_until(|| hub.attached());
        // More than the socket holds, less than the bound: the rest waits in the hub.
        let output: Vec<u8> = (0..CLIENT_BUFFER_LIMIT * 3 / 4)
            .map(|i| (i % 251) as u8)
            .collect();
        for chunk in output.chunks(4096) {
            hub.write_all(chunk).unwrap();
        }
        let mut received = vec![0u8; output.len()];
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.read_exact(&mut received).unwrap();
        assert!(received == output, "the output arrived changed");
        assert!(hub.attached());
    }

    #[test]
    fn attach_relays_until_escape() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("console.sock");
        let hub = ConsoleHub::new(None, DEFAULT_LOG_LIMIT).unwrap();
        let typed = Arc::new(Mutex::new(Vec::new()));
        let sink = typed.clone();
        hub.serve(&socket, move |bytes| lock(&sink).extend_from_slice(bytes))
            .unwrap();
        let (input_read, mut input_write) = std::io::pipe().unwrap();
        let printer = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                wait_until(|| hub.attached());
                let mut hub = hub;
                hub.write_all(b"login: ").unwrap();
            })
        };
        input_write.write_all(b"root\n").unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            input_write.write_all(&[b'x', ESCAPE_BYTE, b'y']).unwrap();
        });
        let mut output = Vec::new();
        let end = attach(&socket, input_read.as_fd(), &mut output, ESCAPE_BYTE).unwrap();
        assert_eq!(end, Detach::Escape);
        printer.join().unwrap();
        writer.join().unwrap();
        wait_until(|| lock(&typed).as_slice() == b"root\nx");
        assert_eq!(output, b"login: ");
    }
}
