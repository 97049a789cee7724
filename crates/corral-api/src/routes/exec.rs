//! `GET /1.0/instances/NAME/exec`: a command in a running instance, its stdio over a websocket
//! (`corral exec`). The client's first message is the command (core's `ExecRequest`, JSON
//! text); then binary messages in are its stdin, binary messages out its output, the first
//! byte saying which stream (1 stdout, 2 stderr; with a terminal all is 1). Text messages are
//! control: in, `{"type":"eof"}` (stdin closed) and `{"type":"resize","rows":R,"cols":C}`; out,
//! `{"type":"exit","exit_code":N}` or `{"type":"error","error":SENTENCE}`, then the close.
//!
//! The command runs as `corral exec` (core's `exec_process`), a process of its own: the engine
//! enters a container only from a single-threaded program. Its output is relayed by tasks of
//! its own, so a client that stops reading does not stall its stdin, nor the reverse. A client
//! that leaves ends the command: SIGTERM (which `corral exec` passes on), SIGKILL 5 s later.

use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{
    rejection::WebSocketUpgradeRejection, Message, WebSocket, WebSocketUpgrade,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use corral_core::exec::ExecRequest;
use corral_core::state::Status;
use corral_core::CoreError;
use corral_host::terminal::WindowSize;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::{ApiError, ErrorBody};
use crate::routes::blocking;
use crate::Api;

/// Output messages waiting for a slow client before the command's output waits too.
const OUTPUT_BACKLOG: usize = 64;
/// How long a command whose client left has to end after SIGTERM.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// How long output is still relayed after the command exited (a program it left behind may
/// hold its terminal open).
const OUTPUT_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The first stream byte of each output message.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;

#[utoipa::path(get, path = "/1.0/instances/{name}/exec", tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 101, description = "A websocket running the command its first message gives (`ExecRequest`)"),
              (status = 400, description = "Not a websocket request, or not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 409, description = "It is not running", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn exec(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    {
        let (api, name) = (Arc::clone(&api), name.clone());
        blocking(move || match api.manager.state(&name)?.status {
            Status::Running => Ok(()),
            Status::Paused => Err(CoreError::Paused(name).into()),
            _ => Err(CoreError::NotRunning(name).into()),
        })
        .await?;
    }
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "exec is a websocket; connect with a websocket client ({})",
                rejection.body_text()
            ),
        )
    })?;
    Ok(upgrade.on_upgrade(move |socket| session(api, name, socket)))
}

/// What the client sends as text once the command runs.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Control {
    Eof,
    Resize { rows: u16, cols: u16 },
}

/// Where the command's stdin goes, and its terminal when it has one.
struct Input {
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    terminal: Option<std::fs::File>,
}

async fn session(api: Arc<Api>, name: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let request = match stream.next().await {
        Some(Ok(Message::Text(text))) => match crate::body::parse::<ExecRequest>(text.as_bytes()) {
            Ok(request) => request,
            Err(err) => return refuse(&mut sink, &mut stream, err.message).await,
        },
        _ => {
            let sentence = "the first message of an exec is its command, as JSON text";
            return refuse(&mut sink, &mut stream, sentence.into()).await;
        }
    };
    let started = api
        .manager
        .exec_process(&name, &request)
        .map_err(|err| corral_host::error_chain(&err))
        .and_then(|command| start(command, &request).map_err(|err| err.to_string()));
    let (mut child, mut input, outputs) = match started {
        Ok(started) => started,
        Err(sentence) => return refuse(&mut sink, &mut stream, sentence).await,
    };

    let (output, mut to_client) = mpsc::channel::<Message>(OUTPUT_BACKLOG);
    let writer = tokio::spawn(async move {
        while let Some(message) = to_client.recv().await {
            let last = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || last {
                return;
            }
        }
    });
    let pumps: Vec<_> = (outputs.into_iter())
        .map(|(kind, reader)| tokio::spawn(pump(kind, reader, output.clone())))
        .collect();
    let (leave, mut left) = tokio::sync::oneshot::channel::<()>();
    let mut reporter = tokio::spawn(async move {
        let status = tokio::select! {
            status = child.wait() => status,
            _ = &mut left => terminate(&mut child).await,
        };
        for pump in pumps {
            let _ = tokio::time::timeout(OUTPUT_AFTER_EXIT, pump).await;
        }
        let message = match status {
            Ok(status) => json!({"type": "exit", "exit_code": exit_code(status)}),
            Err(err) => {
                json!({"type": "error", "error": format!("cannot wait for the command: {err}")})
            }
        };
        let _ = output.send(Message::Text(message.to_string().into())).await;
        let _ = output.send(Message::Close(None)).await;
    });

    // The client's side: stdin and control, until it leaves or the command has been reported
    // (after which the client has nothing more to say).
    let mut reported = false;
    loop {
        let incoming = tokio::select! {
            incoming = stream.next() => incoming,
            _ = &mut reporter => {
                reported = true;
                break;
            }
        };
        match incoming {
            Some(Ok(Message::Binary(bytes))) => {
                if let Some(stdin) = input.stdin.as_mut() {
                    if stdin.write_all(&bytes).await.is_err() {
                        input.stdin = None;
                    }
                }
            }
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<Control>(&text) {
                Ok(Control::Eof) => input.stdin = None,
                Ok(Control::Resize { rows, cols }) => {
                    if let Some(terminal) = &input.terminal {
                        let size = WindowSize { rows, cols };
                        let _ = corral_host::terminal::set_window_size(terminal.as_fd(), size);
                    }
                }
                // Text that is not control is typed, as the console takes it.
                Err(_) => {
                    if let Some(stdin) = input.stdin.as_mut() {
                        let _ = stdin.write_all(text.as_bytes()).await;
                    }
                }
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                let _ = leave.send(());
                break;
            }
        }
    }
    if !reported {
        let _ = reporter.await;
    }
    let _ = writer.await;
    crate::closing::await_close_answer(&mut stream).await;
}

/// Tells the client why its command does not run, and closes.
async fn refuse(
    sink: &mut SplitSink<WebSocket, Message>,
    stream: &mut SplitStream<WebSocket>,
    sentence: String,
) {
    let message = json!({"type": "error", "error": sentence}).to_string();
    let _ = sink.send(Message::Text(message.into())).await;
    let _ = sink.send(Message::Close(None)).await;
    crate::closing::await_close_answer(stream).await;
}

/// Starts `command` with piped stdio, or on a new pty of `request.window` with `request.tty`.
#[allow(clippy::type_complexity)]
fn start(
    command: std::process::Command,
    request: &ExecRequest,
) -> std::io::Result<(
    tokio::process::Child,
    Input,
    Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)>,
)> {
    if request.tty {
        let mut command = command;
        command.env("TERM", "xterm-256color");
        let pty = corral_host::terminal::attach_new_pty(&mut command, request.window)?;
        let mut command = tokio::process::Command::from(command);
        let child = command.kill_on_drop(true).spawn()?;
        // With the command go its copies of the pty's slave side.
        drop(command);
        let master = pty.into_master();
        let reader = tokio::fs::File::from_std(master.try_clone()?);
        let writer = tokio::fs::File::from_std(master.try_clone()?);
        let input = Input {
            stdin: Some(Box::new(writer)),
            terminal: Some(master),
        };
        return Ok((child, input, vec![(STDOUT, Box::new(reader))]));
    }
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let missing = || std::io::Error::other("the command's stdio is missing");
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    let input = Input {
        stdin: Some(Box::new(stdin)),
        terminal: None,
    };
    Ok((
        child,
        input,
        vec![(STDOUT, Box::new(stdout)), (STDERR, Box::new(stderr))],
    ))
}

/// Sends what `reader` gives as output messages of stream `kind` until it ends (a pty's EIO
/// included) or the client is gone.
async fn pump(
    kind: u8,
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    output: mpsc::Sender<Message>,
) {
    let mut buffer = vec![0u8; 32 << 10];
    loop {
        let n = match reader.read(&mut buffer[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer[0] = kind;
        let message = Message::Binary(axum::body::Bytes::copy_from_slice(&buffer[..=n]));
        if output.send(message).await.is_err() {
            return;
        }
    }
}

/// Ends a command whose client left: SIGTERM, then SIGKILL after [`TERMINATE_GRACE`].
async fn terminate(child: &mut tokio::process::Child) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    match tokio::time::timeout(TERMINATE_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            child.kill().await?;
            child.wait().await
        }
    }
}

/// The exit code a shell would give: the code, or 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(255)
}
