//! Consoles of supervised instances: a VM's serial port or a container's terminal.
//!
//! The supervisor side is a [`ConsoleHub`]: everything the guest prints goes to a size-capped log
//! (`corral logs`) and to the one attached client; what that client types goes to the guest. The
//! client side is [`attach`], which relays a terminal to the hub's socket until the user types
//! the escape byte (Ctrl-], as in virsh) or the console goes away.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::termios::{self, SetArg, Termios};

use crate::ControlError;

/// Ctrl-]: the byte that detaches a console client.
pub const ESCAPE_BYTE: u8 = 0x1d;

/// Default size at which `console.log` is rotated to `console.log.1`.
pub const DEFAULT_LOG_LIMIT: u64 = 1 << 20;

/// Said to a second client while one is attached.
const BUSY_MESSAGE: &[u8] =
    b"corral: the console is attached by another client; detach it first\r\n";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking writer leaves only bytes behind; the data is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct LogFile {
    file: File,
    path: PathBuf,
    written: u64,
    limit: u64,
}

impl LogFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.written + bytes.len() as u64 > self.limit {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, &rotated)?;
            self.file = open_log(&self.path)?;
            self.written = 0;
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[derive(Default)]
struct Shared {
    /// The attached client, with a number telling its session from later ones.
    client: Mutex<Option<(u64, UnixStream)>>,
    log: Mutex<Option<LogFile>>,
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
            let file = open_log(path)?;
            let written = file.metadata()?.len();
            *lock(&hub.shared.log) = Some(LogFile {
                file,
                path: path.to_path_buf(),
                written,
                limit: log_limit.max(1),
            });
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

    /// Like [`ConsoleHub::serve`], on a socket the caller has bound already.
    pub fn serve_on(&self, listener: UnixListener, input: impl FnMut(&[u8]) + Send + 'static) {
        let hub = self.clone();
        std::thread::spawn(move || hub.accept_loop(listener, input));
    }

    fn accept_loop(&self, listener: UnixListener, input: impl FnMut(&[u8]) + Send + 'static) {
        let input = Arc::new(Mutex::new(input));
        let mut sessions = 0u64;
        for stream in listener.incoming().flatten() {
            let Ok(writer) = stream.try_clone() else {
                continue;
            };
            {
                let mut client = lock(&self.shared.client);
                if client.is_some() {
                    let mut refused = stream;
                    // The refused client may already be gone; nothing to do then.
                    let _ = refused.write_all(BUSY_MESSAGE);
                    continue;
                }
                sessions += 1;
                *client = Some((sessions, writer));
            }
            let session = sessions;
            // Forward in its own thread so a second client is answered while this one is attached.
            let hub = self.clone();
            let input = input.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0u8; 4096];
                while let Ok(read @ 1..) = stream.read(&mut buffer) {
                    (*lock(&input))(&buffer[..read]);
                }
                // Only end our own session: a write failure may already have let a new one in.
                let mut client = lock(&hub.shared.client);
                if client.as_ref().is_some_and(|(s, _)| *s == session) {
                    *client = None;
                }
            });
        }
    }

    /// True while a client is attached.
    pub fn attached(&self) -> bool {
        lock(&self.shared.client).is_some()
    }
}

impl Write for ConsoleHub {
    /// Never fails: a broken log or a vanished client must not stop the guest's output.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(log) = lock(&self.shared.log).as_mut() {
            if let Err(err) = log.write(buf) {
                tracing::warn!(
                    "console log {} failed, logging stops: {err}",
                    log.path.display()
                );
                *lock(&self.shared.log) = None;
                return Ok(buf.len());
            }
        }
        let mut client = lock(&self.shared.client);
        if let Some((_, stream)) = client.as_mut() {
            if stream.write_all(buf).is_err() {
                *client = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A terminal in raw mode (keys reach the guest as typed, no local echo) until this is dropped,
/// which restores its previous mode. Does nothing when the input is not a terminal.
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
        termios::tcsetattr(input, SetArg::TCSANOW, &raw).map_err(std::io::Error::from)?;
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
            libc::pollfd {
                fd: input.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structs for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err.into());
        }
        if fds[1].revents != 0 {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return Ok(Detach::Closed);
            }
            output.write_all(&buffer[..read])?;
            output.flush()?;
        }
        if fds[0].revents != 0 {
            // SAFETY: reading into our own buffer from a descriptor the caller keeps open.
            let read =
                unsafe { libc::read(input.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
            if read < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err.into());
            }
            let read = read as usize;
            if read == 0 {
                return Ok(Detach::InputEnded);
            }
            let chunk = &buffer[..read];
            if let Some(at) = chunk.iter().position(|b| *b == escape) {
                stream.write_all(&chunk[..at])?;
                return Ok(Detach::Escape);
            }
            stream.write_all(chunk)?;
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
