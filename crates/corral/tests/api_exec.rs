//! `GET /1.0/instances/NAME/exec`: a command in a running container with its stdio over a
//! websocket, through `corral serve`. It gives what `corral exec` gives (stdout, stderr, exit
//! code), carries a megabyte each way without stalling, runs on a terminal when asked, refuses
//! a bad request with a sentence, and ends the command when the client leaves.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

mod common;

use common::serve::Server;

/// What a command gave.
#[derive(Debug, Default, PartialEq, Eq)]
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: i64,
}

/// An exec websocket whose command runs.
struct Exec(tungstenite::WebSocket<UnixStream>);

impl Exec {
    /// Opens the exec of `name` and sends `request`; the HTTP refusal's status and body when
    /// the upgrade is refused.
    fn open(server: &Server, name: &str, request: &Value) -> Result<Exec, (u16, String)> {
        let stream = UnixStream::connect(&server.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let url = format!("ws://corral/1.0/instances/{name}/exec");
        let (mut socket, _) = tungstenite::client(url, stream).map_err(|err| match err {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                (
                    response.status().as_u16(),
                    String::from_utf8_lossy(&body).into_owned(),
                )
            }
            other => panic!("exec handshake: {other}"),
        })?;
        socket.send(Message::text(request.to_string())).unwrap();
        Ok(Exec(socket))
    }

    fn send_stdin(&mut self, bytes: &[u8]) {
        self.0.send(Message::binary(bytes.to_vec())).unwrap();
    }

    fn eof(&mut self) {
        self.0.send(Message::text(r#"{"type":"eof"}"#)).unwrap();
    }

    /// Reads to the end: the output by stream and the exit code, or the error sentence.
    fn finish(mut self) -> Result<Ran, String> {
        let mut ran = Ran::default();
        loop {
            match self.0.read().expect("a message within 60 s") {
                Message::Binary(bytes) => match bytes.split_first() {
                    Some((1, data)) => ran.stdout.extend_from_slice(data),
                    Some((2, data)) => ran.stderr.extend_from_slice(data),
                    other => panic!("an output message of no stream: {other:?}"),
                },
                Message::Text(text) => {
                    let control: Value = serde_json::from_str(&text).unwrap();
                    match control["type"].as_str() {
                        Some("exit") => ran.exit_code = control["exit_code"].as_i64().unwrap(),
                        Some("error") => return Err(control["error"].as_str().unwrap().into()),
                        _ => panic!("unexpected control message {text}"),
                    }
                }
                Message::Close(_) => return Ok(ran),
                _ => {}
            }
        }
    }
}

/// `corral exec NAME -- ARGV` with `stdin`: what it gave.
fn cli_exec(root: &common::CorralRoot, name: &str, argv: &[&str], stdin: &[u8]) -> Ran {
    let mut child = root
        .command(&[&["exec", name, "--"], argv].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    Ran {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.status.code().unwrap().into(),
    }
}

/// Whether a process whose command line is exactly `argv` runs on the host.
fn runs(argv: &[&str]) -> bool {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|arg| [arg.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| cmdline == wanted)
    })
}

#[test]
fn a_command_runs_over_the_exec_websocket_as_corral_exec_runs_it() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    let rootfs = rootfs.to_str().unwrap();
    root.ok(&["create", "box", "--rootfs", rootfs, "--", "sleep", "1000"]);
    root.ok(&["create", "idle", "--rootfs", rootfs, "--", "sleep", "1000"]);
    root.ok(&["start", "box"]);
    let server = Server::start(&root);

    // Stdin in, both output streams and the exit code out, as `corral exec` gives them.
    let script = r#"read line; echo "out:$line"; echo err >&2; exit 3"#;
    let mut exec = Exec::open(&server, "box", &json!({"command": ["sh", "-c", script]})).unwrap();
    exec.send_stdin(b"hello\n");
    exec.eof();
    let through_api = exec.finish().unwrap();
    assert_eq!(
        through_api,
        Ran {
            stdout: b"out:hello\n".to_vec(),
            stderr: b"err\n".to_vec(),
            exit_code: 3
        }
    );
    assert_eq!(
        through_api,
        cli_exec(&root, "box", &["sh", "-c", script], b"hello\n")
    );

    // A megabyte through cat: stdin is written while output is read, so neither pipe stalls.
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut exec = Exec::open(&server, "box", &json!({"command": ["cat"]})).unwrap();
    for chunk in data.chunks(64 << 10) {
        exec.send_stdin(chunk);
    }
    exec.eof();
    let ran = exec.finish().unwrap();
    assert_eq!((ran.stdout.len(), ran.exit_code), (data.len(), 0));
    assert!(ran.stdout == data, "cat gave back other bytes");

    // Environment and working directory; a terminal when asked.
    let request = json!({"command": ["sh", "-c", "echo $GREETING; pwd"], "env": ["GREETING=hi"],
                         "cwd": "/tmp"});
    let ran = Exec::open(&server, "box", &request)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hi\n/tmp\n");
    let request = json!({"command": ["sh", "-c", "tty; [ -t 0 ] && echo on-a-terminal"],
                         "tty": true, "window": {"rows": 30, "cols": 100}});
    let ran = Exec::open(&server, "box", &request)
        .unwrap()
        .finish()
        .unwrap();
    let screen = String::from_utf8_lossy(&ran.stdout);
    assert!(
        screen.contains("/dev/pts/") && screen.contains("on-a-terminal"),
        "{screen:?}"
    );
    assert!(ran.stderr.is_empty(), "a terminal has one stream");

    // Refusals: before the upgrade for the instance, after it for the command.
    let (status, body) = Exec::open(&server, "idle", &json!({"command": ["true"]}))
        .err()
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("instance idle is not running"), "{body}");
    let (status, _) = Exec::open(&server, "ghost", &json!({"command": ["true"]}))
        .err()
        .unwrap();
    assert_eq!(status, 404);
    let refused = Exec::open(&server, "box", &json!({"command": []}))
        .unwrap()
        .finish();
    assert!(refused.unwrap_err().contains("needs a command"));
    let refused = Exec::open(&server, "box", &json!({"argv": ["true"]}))
        .unwrap()
        .finish();
    assert!(refused.unwrap_err().contains("unknown field `argv`"));
    let ran = Exec::open(&server, "box", &json!({"command": ["/no/such/program"]}))
        .unwrap()
        .finish()
        .unwrap();
    assert_ne!(ran.exit_code, 0, "{ran:?}");

    // A client that leaves ends its command.
    let mut exec = Exec::open(&server, "box", &json!({"command": ["sleep", "777"]})).unwrap();
    common::wait_for("sleep 777 to run", Duration::from_secs(30), || {
        runs(&["sleep", "777"])
    });
    exec.0.close(None).unwrap();
    let _ = exec.0.flush();
    drop(exec);
    let left = Instant::now();
    common::wait_for("sleep 777 to end", Duration::from_secs(15), || {
        !runs(&["sleep", "777"])
    });
    println!(
        "the command ended {:?} after its client left",
        left.elapsed()
    );
    root.ok(&["delete", "--force", "box"]);
    root.ok(&["delete", "idle"]);
}
