//! `exec`: runs a program with its output streamed to the host as it comes, and its stdin fed
//! from the host's data frames. The connection ends with the program's exit status.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::frame::{self, Frame, FrameError, Stream, MAX_CHUNK};
use crate::message::{Reply, Request};

pub fn run(
    mut stream: UnixStream,
    argv: &[String],
    env: &[String],
    cwd: Option<String>,
) -> Result<(), FrameError> {
    let mut child = match spawn(argv, env, cwd) {
        Ok(child) => child,
        Err(message) => return frame::write_message(&mut stream, &Reply::Error { message }),
    };
    frame::write_message(&mut stream, &Reply::Ready)?;
    // Only the output threads and the final status write; they share the connection.
    let writer = Arc::new(Mutex::new(stream.try_clone().map_err(FrameError::Io)?));
    let mut pumps = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.push(pump(stdout, Stream::Stdout, Arc::clone(&writer)));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.push(pump(stderr, Stream::Stderr, Arc::clone(&writer)));
    }
    let stdin = child.stdin.take();
    let mut reader = stream.try_clone().map_err(FrameError::Io)?;
    // Not joined: it ends when the host sends Eof or the connection is shut down below.
    std::thread::spawn(move || feed_stdin(&mut reader, stdin));

    let status = child.wait().map_err(FrameError::Io)?;
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

fn spawn(
    argv: &[String],
    env: &[String],
    cwd: Option<String>,
) -> Result<std::process::Child, String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "exec needs a program to run".to_string())?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for entry in env {
        let (name, value) = entry
            .split_once('=')
            .ok_or_else(|| format!("environment entry {entry:?} is not NAME=value"))?;
        command.env(name, value);
    }
    if let Some(cwd) = &cwd {
        command.current_dir(cwd);
    }
    command.spawn().map_err(|e| match &cwd {
        Some(cwd) => format!("cannot run {program:?} in {cwd:?}: {e}"),
        None => format!("cannot run {program:?}: {e}"),
    })
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

/// Writes the host's stdin data to the program until `Eof`; a program that stopped reading
/// only makes its remaining input be discarded.
fn feed_stdin(reader: &mut UnixStream, mut stdin: Option<std::process::ChildStdin>) {
    loop {
        match frame::read_frame(reader) {
            Ok(Frame::Data(Stream::Data, bytes)) => {
                if let Some(pipe) = &mut stdin {
                    if pipe.write_all(&bytes).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Frame::Message(body)) if matches!(frame::parse(&body), Ok(Request::Eof)) => return,
            Ok(_) | Err(_) => return,
        }
    }
}
