//! `exec`: runs a program with its output streamed to the host as it comes, and its stdin fed
//! from the host's data frames. The connection ends with the program's exit status. With a
//! terminal, the program runs on a pty ([`super::terminal`]) instead of pipes.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::terminal;
use crate::frame::{self, Frame, FrameError, Stream, MAX_CHUNK};
use crate::message::{Reply, Request, WindowSize};

/// The byte a terminal in canonical mode takes for end of input (Ctrl-D): what the program on
/// a pty reads as the end of the host's stdin.
const END_OF_INPUT: u8 = 0x04;

pub fn run(
    mut stream: UnixStream,
    argv: &[String],
    env: &[String],
    cwd: Option<String>,
    tty: Option<WindowSize>,
) -> Result<(), FrameError> {
    let started = command(argv, env, cwd.as_deref()).and_then(|command| match tty {
        None => spawn_piped(command).map(|child| (child, None)),
        Some(size) => terminal::spawn(command, size).map(|(child, pty)| (child, Some(pty))),
    });
    let (mut child, pty) = match started {
        Ok(started) => started,
        Err(message) => return frame::write_message(&mut stream, &Reply::Error { message }),
    };
    frame::write_message(&mut stream, &Reply::Ready)?;
    // Only the output threads and the final status write; they share the connection.
    let writer = Arc::new(Mutex::new(stream.try_clone().map_err(FrameError::Io)?));
    let exited = Arc::new(AtomicBool::new(false));
    let mut pumps = Vec::new();
    let mut reader = stream.try_clone().map_err(FrameError::Io)?;
    match pty {
        None => {
            if let Some(stdout) = child.stdout.take() {
                pumps.push(pump(stdout, Stream::Stdout, Arc::clone(&writer)));
            }
            if let Some(stderr) = child.stderr.take() {
                pumps.push(pump(stderr, Stream::Stderr, Arc::clone(&writer)));
            }
            let stdin = child.stdin.take();
            // Not joined: it ends when the host sends Eof or the connection is shut down below.
            std::thread::spawn(move || feed_input(&mut reader, stdin, None));
        }
        Some(pty) => {
            let input = pty.try_clone().map_err(FrameError::Io)?;
            let pty = Arc::new(pty);
            let resized = Arc::clone(&pty);
            std::thread::spawn(move || feed_input(&mut reader, Some(input), Some(&*resized)));
            let exited = Arc::clone(&exited);
            let writer = Arc::clone(&writer);
            pumps.push(std::thread::spawn(move || {
                terminal::pump(&pty, &exited, |bytes| {
                    let mut writer = writer
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    frame::write_data(&mut *writer, Stream::Stdout, bytes)
                })
            }));
        }
    }

    let status = child.wait().map_err(FrameError::Io)?;
    exited.store(true, Ordering::SeqCst);
    for pump in pumps {
        // A pump that failed could not write to the host; the status below fails the same way.
        let _ = pump.join();
    }
    let mut writer = writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    frame::write_message(
        &mut *writer,
        &Reply::Exited {
            code: status.code(),
            signal: status.signal(),
        },
    )?;
    // Ends the stdin thread's read as well.
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// The program with the host's environment entries and working directory.
fn command(argv: &[String], env: &[String], cwd: Option<&str>) -> Result<Command, String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "exec needs a program to run".to_string())?;
    let mut command = Command::new(program);
    command.args(args);
    for entry in env {
        let (name, value) = entry
            .split_once('=')
            .ok_or_else(|| format!("environment entry {entry:?} is not NAME=value"))?;
        command.env(name, value);
    }
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    Ok(command)
}

fn spawn_piped(mut command: Command) -> Result<Child, String> {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.spawn().map_err(|e| cannot_run(&command, &e))
}

/// The error text of a program that did not start.
pub(super) fn cannot_run(command: &Command, err: &std::io::Error) -> String {
    let program = command.get_program();
    match command.get_current_dir() {
        Some(cwd) => format!("cannot run {program:?} in {cwd:?}: {err}"),
        None => format!("cannot run {program:?}: {err}"),
    }
}

/// Copies one output pipe to the host as data frames of `kind`.
fn pump(
    mut pipe: impl Read + Send + 'static,
    kind: Stream,
    writer: Arc<Mutex<UnixStream>>,
) -> std::thread::JoinHandle<Result<(), FrameError>> {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; MAX_CHUNK];
        loop {
            let n = match pipe.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FrameError::Io(e)),
            };
            let mut writer = writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            frame::write_data(&mut *writer, kind, &buffer[..n])?;
        }
    })
}

/// Writes the host's stdin data to `input` until `Eof` (then closes a pipe, or types the end
/// of input on a terminal) and applies the host's resizes to `pty`, until the connection ends.
/// A program that stopped reading only makes its remaining input be discarded.
fn feed_input(reader: &mut UnixStream, mut input: Option<impl Write>, pty: Option<&File>) {
    loop {
        match frame::read_frame(reader) {
            Ok(Frame::Data(Stream::Data, bytes)) => {
                if let Some(sink) = &mut input {
                    if sink.write_all(&bytes).is_err() {
                        input = None;
                    }
                }
            }
            Ok(Frame::Message(body)) => match frame::parse(&body) {
                Ok(Request::Eof) => {
                    if let (Some(sink), Some(_)) = (&mut input, pty) {
                        let _ = sink.write_all(&[END_OF_INPUT]);
                    }
                    input = None;
                }
                Ok(Request::Resize { rows, cols }) => {
                    if let Some(pty) = pty {
                        let size = WindowSize { rows, cols };
                        if let Err(err) = corral_host::terminal::set_window_size(pty.as_fd(), size)
                        {
                            tracing::info!("cannot resize the terminal: {err}");
                        }
                    }
                }
                _ => return,
            },
            Ok(_) | Err(_) => return,
        }
    }
}
