//! The host's client. The guest controls the agent, so every answer is untrusted: each frame is
//! bounded in size (the framing) and in time ([`TimedReader`]), each message is validated
//! against what the request allows, and every failure is one [`ClientError`].

mod timed;
mod transport;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use transport::Transport;

use crate::frame::{self, Frame, FrameError, Stream, MAX_CHUNK};
use crate::message::{GuestInfo, Reply, Request, WindowSize, PROTOCOL_VERSION, UNKNOWN_REQUEST};
use timed::TimedReader;

/// How long the host waits for an agent by default: for connecting, and for each reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest text of an agent's error message shown.
const MAX_SHOWN_MESSAGE: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the guest agent at {target} (is `corral guest agent` running in the guest?)")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest did not accept a connection on vsock port {port} (it answered {answer:?}); is `corral guest agent` running in the guest?")]
    VsockRefused { port: u32, answer: String },
    #[error("the guest agent did not answer within {} s", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error("the guest agent closed the connection")]
    Closed,
    #[error("the guest agent sent an invalid reply")]
    Invalid(#[source] FrameError),
    #[error("the guest agent answered {got} where {expected} was expected")]
    Unexpected { expected: &'static str, got: String },
    #[error("the guest agent speaks protocol version {theirs}; this corral speaks {PROTOCOL_VERSION}: install the same corral in the guest")]
    Version { theirs: u32 },
    #[error("the guest agent does not know `{request}` (it refused or hung up on it): install the same corral in the guest")]
    NotSupported { request: &'static str },
    #[error("the guest agent refused: {0}")]
    Refused(String),
    #[error("the guest agent sent {got} bytes of {path}, not the {announced} it announced")]
    SizeMismatch {
        path: String,
        announced: u64,
        got: u64,
    },
    #[error("cannot {what}")]
    Local {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A file's attributes as the agent reported them on `pull`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// How a command run by `exec` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The exit status a shell would report (128 + the signal for a killed command).
    pub fn shell_code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }
}

/// What `exec` runs.
#[derive(Clone, Debug, Default)]
pub struct Command {
    pub argv: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// A terminal in the guest, of this size (0 by 0 when unknown): stdout then carries all
    /// the output.
    pub tty: Option<WindowSize>,
}

/// A connection to an agent that has passed the version handshake.
pub struct Client {
    stream: UnixStream,
    timeout: Duration,
}

impl Client {
    /// Connects and shakes hands, each step within `timeout` (which also bounds every later
    /// reply).
    pub fn connect(transport: &Transport, timeout: Duration) -> Result<Self, ClientError> {
        let stream = transport.connect(timeout)?;
        let mut client = Self { stream, timeout };
        client.send(&Request::Hello {
            version: PROTOCOL_VERSION,
        })?;
        match client.reply()? {
            Reply::Hello {
                version: PROTOCOL_VERSION,
                ..
            } => Ok(client),
            Reply::Hello { version, .. } => Err(ClientError::Version { theirs: version }),
            other => Err(unexpected("hello", other)),
        }
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.send(&Request::Ping)?;
        match self.reply()? {
            Reply::Pong => Ok(()),
            other => Err(unexpected("pong", other)),
        }
    }

    pub fn info(&mut self) -> Result<GuestInfo, ClientError> {
        self.send(&Request::Info)?;
        match self.reply()? {
            Reply::Info(info) => Ok(info),
            other => Err(unexpected("info", other)),
        }
    }

    /// Asks the guest to power off (or reboot); returns once the agent has said it will.
    pub fn shutdown(&mut self, reboot: bool) -> Result<(), ClientError> {
        self.send(&Request::Shutdown { reboot })?;
        match self.reply()? {
            Reply::Done => Ok(()),
            other => Err(unexpected("done", other)),
        }
    }

    /// Freezes the guest's writable filesystems; returns their mountpoints. The agent thaws
    /// them itself if [`Client::thaw`] does not come within a minute.
    pub fn freeze(&mut self) -> Result<Vec<String>, ClientError> {
        match self.newer_request(&Request::Fsfreeze, "fsfreeze")? {
            Reply::Frozen { mountpoints } => Ok(shown_all(mountpoints)),
            other => Err(unexpected("frozen", other)),
        }
    }

    /// Thaws what [`Client::freeze`] froze; returns the mountpoints (none when nothing was
    /// frozen).
    pub fn thaw(&mut self) -> Result<Vec<String>, ClientError> {
        match self.newer_request(&Request::Thaw, "thaw")? {
            Reply::Thawed { mountpoints } => Ok(shown_all(mountpoints)),
            other => Err(unexpected("thawed", other)),
        }
    }

    /// Resets the guest's identity with the operations `operations` names (corral-sysprep's
    /// grammar; the defaults when `None`); returns the report's lines.
    pub fn sysprep(
        &mut self,
        operations: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<String>, ClientError> {
        let request = Request::Sysprep {
            operations: operations.map(str::to_string),
            dry_run,
        };
        match self.newer_request(&request, "sysprep")? {
            Reply::Sysprep {
                dry_run: answered,
                changes,
            } if answered == dry_run => Ok(shown_all(changes)),
            other => Err(unexpected("a sysprep report", other)),
        }
    }

    /// Sends a request that agents older than it do not know, and reads its reply: their
    /// refusal (or, before they answered unknown requests, their hanging up) is `NotSupported`.
    fn newer_request(
        &mut self,
        request: &Request,
        name: &'static str,
    ) -> Result<Reply, ClientError> {
        self.send(request)?;
        match self.reply() {
            Err(ClientError::Refused(message)) if message.starts_with(UNKNOWN_REQUEST) => {
                Err(ClientError::NotSupported { request: name })
            }
            Err(ClientError::Closed) => Err(ClientError::NotSupported { request: name }),
            other => other,
        }
    }

    /// Writes what `data` yields to `remote` in the guest, created with `mode` (and owner when
    /// given) and renamed into place; returns the bytes written.
    pub fn push(
        &mut self,
        data: &mut dyn Read,
        remote: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<u64, ClientError> {
        self.send(&Request::Push {
            path: remote.to_string(),
            mode,
            uid: owner.map(|(uid, _)| uid),
            gid: owner.map(|(_, gid)| gid),
        })?;
        match self.reply()? {
            Reply::Ready => {}
            other => return Err(unexpected("ready", other)),
        }
        let mut buffer = vec![0u8; MAX_CHUNK];
        let mut sent: u64 = 0;
        loop {
            let n = match data.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ClientError::Local {
                        what: "read the file to push".to_string(),
                        source,
                    })
                }
            };
            frame::write_data(&mut self.stream, Stream::Data, &buffer[..n])
                .map_err(|e| self.failure(e))?;
            sent += n as u64;
        }
        self.send(&Request::Eof)?;
        match self.reply()? {
            Reply::Written { bytes } if bytes == sent => Ok(bytes),
            Reply::Written { bytes } => Err(ClientError::SizeMismatch {
                path: remote.to_string(),
                announced: sent,
                got: bytes,
            }),
            other => Err(unexpected("written", other)),
        }
    }

    /// Copies `remote` from the guest into `out`; never more than the size the agent announced.
    pub fn pull(&mut self, remote: &str, out: &mut dyn Write) -> Result<RemoteFile, ClientError> {
        self.send(&Request::Pull {
            path: remote.to_string(),
        })?;
        let file = match self.reply()? {
            Reply::File {
                size,
                mode,
                uid,
                gid,
            } => RemoteFile {
                size,
                mode,
                uid,
                gid,
            },
            other => return Err(unexpected("file", other)),
        };
        let mut got: u64 = 0;
        loop {
            match self.frame(Some(self.timeout))? {
                Frame::Data(Stream::Data, bytes) => {
                    got += bytes.len() as u64;
                    if got > file.size {
                        return Err(ClientError::SizeMismatch {
                            path: remote.to_string(),
                            announced: file.size,
                            got,
                        });
                    }
                    out.write_all(&bytes).map_err(|source| ClientError::Local {
                        what: format!("write what was pulled from {remote}"),
                        source,
                    })?;
                }
                Frame::Data(stream, _) => {
                    return Err(unexpected("file data", format!("{stream:?} data")))
                }
                Frame::Message(body) => match parse_reply(&body)? {
                    Reply::Eof if got == file.size => return Ok(file),
                    Reply::Eof => {
                        return Err(ClientError::SizeMismatch {
                            path: remote.to_string(),
                            announced: file.size,
                            got,
                        })
                    }
                    other => return Err(unexpected("file data", other)),
                },
            }
        }
    }

    /// Runs `command` in the guest: `stdin` (if any) is sent as it is read, by a thread of its
    /// own, and so is each size `resizes` yields (for a command with a terminal); its output is
    /// written to `stdout` and `stderr` as it comes. Waits as long as the command runs; each
    /// output frame, once begun, must arrive within the timeout.
    pub fn exec(
        mut self,
        command: &Command,
        stdin: Option<Box<dyn Read + Send>>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        resizes: Option<Receiver<WindowSize>>,
    ) -> Result<ExitStatus, ClientError> {
        let request = Request::Exec {
            argv: command.argv.clone(),
            env: command.env.clone(),
            cwd: command.cwd.clone(),
            tty: command.tty,
        };
        let reply = if command.tty.is_some() {
            self.newer_request(&request, "exec --tty")?
        } else {
            self.send(&request)?;
            self.reply()?
        };
        match reply {
            Reply::Ready => {}
            other => return Err(unexpected("ready", other)),
        }
        let writer = self
            .stream
            .try_clone()
            .map_err(|source| ClientError::Local {
                what: "share the agent connection".to_string(),
                source,
            })?;
        // The stdin and resize threads write whole frames in turn.
        let writer = Arc::new(Mutex::new(writer));
        // Not joined: a local stdin that never ends (a terminal) must not hold the result back.
        let input = Arc::clone(&writer);
        std::thread::spawn(move || feed_stdin(&input, stdin));
        if let Some(resizes) = resizes {
            std::thread::spawn(move || {
                for WindowSize { rows, cols } in resizes {
                    if send_locked(&writer, &Request::Resize { rows, cols }).is_err() {
                        return;
                    }
                }
            });
        }
        loop {
            match self.frame(None)? {
                Frame::Data(Stream::Stdout, bytes) => write_output(stdout, &bytes)?,
                Frame::Data(Stream::Stderr, bytes) => write_output(stderr, &bytes)?,
                Frame::Data(Stream::Data, _) => {
                    return Err(unexpected("output", "file data".to_string()))
                }
                Frame::Message(body) => {
                    return match parse_reply(&body)? {
                        Reply::Exited {
                            code: Some(code),
                            signal: None,
                        } => Ok(ExitStatus::Code(code)),
                        Reply::Exited {
                            code: None,
                            signal: Some(signal),
                        } if (1..=64).contains(&signal) => Ok(ExitStatus::Signal(signal)),
                        other => Err(unexpected("output or an exit status", other)),
                    }
                }
            }
        }
    }

    fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        frame::write_message(&mut self.stream, request).map_err(|e| self.failure(e))
    }

    /// The next frame, which must be a message: an error reply becomes `Refused`.
    fn reply(&mut self) -> Result<Reply, ClientError> {
        match self.frame(Some(self.timeout))? {
            Frame::Message(body) => parse_reply(&body),
            Frame::Data(stream, _) => Err(unexpected("a reply", format!("{stream:?} data"))),
        }
    }

    /// The next frame: its first byte within `wait` (`None`: however long), the rest within
    /// the timeout.
    fn frame(&mut self, wait: Option<Duration>) -> Result<Frame, ClientError> {
        let mut reader = TimedReader::after_first_byte(&self.stream, wait, self.timeout);
        frame::read_frame(&mut reader).map_err(|e| self.failure(e))
    }

    fn failure(&self, err: FrameError) -> ClientError {
        match err {
            FrameError::TimedOut(_) => ClientError::TimedOut(self.timeout),
            FrameError::Closed => ClientError::Closed,
            FrameError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ClientError::Closed,
            other => ClientError::Invalid(other),
        }
    }
}

/// A message from the agent; its error reply becomes `Refused`.
fn parse_reply(body: &[u8]) -> Result<Reply, ClientError> {
    match frame::parse(body).map_err(ClientError::Invalid)? {
        Reply::Error { message } => Err(ClientError::Refused(shown(&message))),
        reply => Ok(reply),
    }
}

fn feed_stdin(writer: &Mutex<UnixStream>, stdin: Option<Box<dyn Read + Send>>) {
    if let Some(mut stdin) = stdin {
        let mut buffer = vec![0u8; MAX_CHUNK];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    let mut stream = writer
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    if frame::write_data(&mut *stream, Stream::Data, &buffer[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
    // The command may be gone already; then nobody reads this.
    let _ = send_locked(writer, &Request::Eof);
}

/// Writes one message on a connection other threads write to as well.
fn send_locked(writer: &Mutex<UnixStream>, request: &Request) -> Result<(), FrameError> {
    let mut stream = writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    frame::write_message(&mut *stream, request)
}

fn write_output(out: &mut dyn Write, bytes: &[u8]) -> Result<(), ClientError> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|source| ClientError::Local {
            what: "write the command's output".to_string(),
            source,
        })
}

fn unexpected(expected: &'static str, got: impl std::fmt::Debug) -> ClientError {
    let got = format!("{got:?}");
    ClientError::Unexpected {
        expected,
        got: shown(&got),
    }
}

fn shown_all(texts: Vec<String>) -> Vec<String> {
    texts.iter().map(|text| shown(text)).collect()
}

/// Guest-controlled text made safe to print: control characters escaped, length capped.
fn shown(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(MAX_SHOWN_MESSAGE)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > MAX_SHOWN_MESSAGE {
        shown.push('…');
    }
    shown
}
