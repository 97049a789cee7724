//! `corral --remote NAME exec` and `console`: the API's websockets relayed to this process's
//! stdio, with the local commands' terminal handling (raw mode, the window's size, the escape
//! byte), so both behave and print as they do on the server itself.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use corral_control::console::{before_escape, Detach, RawMode};
use corral_host::terminal::WindowSize;
use corral_remote::{Client, Incoming, WebSocket};
use serde_json::json;

use crate::instance::{self, ExecArgs};

/// How often a command on a terminal looks for a new window size while nothing else happens.
const RESIZE_CHECK: Duration = Duration::from_millis(250);
/// The stream byte leading the exec's stderr output (`routes/exec.rs`; all else is stdout).
const STDERR: u8 = 2;

/// What the exec websocket says as text.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Exit { exit_code: i32 },
    Error { error: String },
}

/// `corral exec` on the remote: the same request a local exec makes, this process's stdin sent
/// until its end, the output to stdout and stderr; the exit status is the command's.
pub fn exec(client: &Client, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let (name, request) = args.into_request();
    // Before anything else could start a thread (`watch_resizes` says why).
    let resizes = if request.tty {
        crate::terminal::watch_resizes()?
    } else {
        None
    };
    let mut socket = client.websocket(&format!("/1.0/instances/{name}/exec"))?;
    socket.send_text(serde_json::to_string(&request)?)?;
    let stdin = std::io::stdin();
    let raw = if request.tty {
        Some(RawMode::enable(stdin.as_fd())?)
    } else {
        None
    };
    let code = relay_exec(&mut socket, stdin.as_fd(), resizes.as_ref());
    // The terminal is the user's again before any error is printed.
    drop(raw);
    Ok(instance::exit_status(code?))
}

/// Relays `stdin` and the terminal's new sizes to the exec and its output to stdout and
/// stderr until the server closes; returns the command's exit code.
fn relay_exec(
    socket: &mut WebSocket,
    stdin: BorrowedFd<'_>,
    resizes: Option<&Receiver<WindowSize>>,
) -> anyhow::Result<i32> {
    let mut input = Some(stdin);
    let mut exit_code = None;
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut buffer = vec![0u8; 32 << 10];
    loop {
        loop {
            let incoming = match (socket.receive(), exit_code) {
                (Ok(Some(incoming)), _) => incoming,
                (Ok(None), _) => break,
                // Once the exit code is in, a connection that ends without the closing
                // handshake has said all there was.
                (Err(_), Some(code)) => return Ok(code),
                (Err(err), None) => return Err(err.into()),
            };
            match incoming {
                Incoming::Binary(bytes) => {
                    let Some((&stream, output)) = bytes.split_first() else {
                        continue;
                    };
                    if stream == STDERR {
                        stderr.write_all(output)?;
                    } else {
                        stdout.write_all(output)?;
                        stdout.flush()?;
                    }
                }
                Incoming::Text(text) => match serde_json::from_str(&text) {
                    Ok(Control::Exit { exit_code: code }) => exit_code = Some(code),
                    Ok(Control::Error { error }) => bail!(error),
                    Err(_) => bail!(
                        "the remote's exec sent {text:?}, which corral serve does not send; \
                         update the server's corral to this client's version"
                    ),
                },
                Incoming::Closed => {
                    return exit_code.ok_or_else(|| {
                        anyhow!(
                            "the remote ended the exec before the command's exit code came (the \
                             server stopped, or the connection broke); check the instance there \
                             and run the command again"
                        )
                    })
                }
            }
        }
        if let Some(resizes) = resizes {
            while let Ok(size) = resizes.try_recv() {
                let resize = json!({"type": "resize", "rows": size.rows, "cols": size.cols});
                socket.send_text(resize.to_string())?;
            }
        }
        if !socket.wait(input, resizes.map(|_| RESIZE_CHECK))? {
            continue;
        }
        let Some(fd) = input else { continue };
        match nix::unistd::read(fd, &mut buffer) {
            Ok(0) => {
                socket.send_text(json!({"type": "eof"}).to_string())?;
                input = None;
            }
            Ok(read) => socket.send_binary(buffer[..read].to_vec())?,
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
            Err(err) => return Err(std::io::Error::from(err)).context("cannot read stdin"),
        }
    }
}

/// `corral console` on the remote, as the local one attaches (`instance::attach_console`).
pub fn console(client: &Client, name: &str) -> anyhow::Result<ExitCode> {
    let mut socket = client.websocket(&format!("/1.0/instances/{name}/console"))?;
    instance::attach_console(name, |input, output, escape| {
        relay_console(&mut socket, input, output, escape)
    })
}

/// Relays `input` to the console and its output to `output` until the escape byte, the end of
/// the console or the end of input.
fn relay_console(
    socket: &mut WebSocket,
    input: BorrowedFd<'_>,
    output: &mut impl Write,
    escape: u8,
) -> anyhow::Result<Detach> {
    let mut buffer = [0u8; 4096];
    loop {
        while let Some(incoming) = socket.receive()? {
            match incoming {
                Incoming::Binary(bytes) => output.write_all(&bytes)?,
                Incoming::Text(text) => output.write_all(text.as_bytes())?,
                Incoming::Closed => return Ok(Detach::Closed),
            }
            output.flush()?;
        }
        if !socket.wait(Some(input), None)? {
            continue;
        }
        let read = match nix::unistd::read(input, &mut buffer) {
            Ok(read) => read,
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => continue,
            Err(err) => return Err(std::io::Error::from(err)).context("cannot read stdin"),
        };
        if read == 0 {
            socket.close()?;
            return Ok(Detach::InputEnded);
        }
        let (typed, escaped) = before_escape(&buffer[..read], escape);
        if !typed.is_empty() {
            socket.send_binary(typed.to_vec())?;
        }
        if escaped {
            socket.close()?;
            return Ok(Detach::Escape);
        }
    }
}
