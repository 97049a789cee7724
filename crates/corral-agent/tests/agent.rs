//! The agent's server driven by the host's client over a unix socket, as a system container's
//! agent is.

use std::io::{Cursor, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use corral_agent::client::{Command, ExitStatus};
use corral_agent::message::WindowSize;
use corral_agent::server::{self, Listener};
use corral_agent::{Client, ClientError, Transport};
use sha2::{Digest, Sha256};

const TIMEOUT: Duration = Duration::from_secs(10);

/// An agent serving on a socket in a temp dir, for the life of the test process.
fn agent(dir: &Path) -> Transport {
    let socket = dir.join("agent.sock");
    let listener = Listener::unix(&socket).unwrap();
    let agent = server::Agent::new();
    std::thread::spawn(move || server::serve(&listener, &agent));
    Transport::Unix(socket)
}

fn client(transport: &Transport) -> Client {
    Client::connect(transport, TIMEOUT).unwrap()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

#[test]
fn ping_and_info_answer() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let mut client = client(&transport);
    client.ping().unwrap();
    let info = client.info().unwrap();
    let uname = nix::sys::utsname::uname().unwrap();
    assert_eq!(info.kernel, uname.release().to_string_lossy());
    assert_eq!(
        info.hostname,
        nix::unistd::gethostname().unwrap().to_string_lossy()
    );
    assert!(info.interfaces.iter().any(|i| i.name == "lo"));
    // The same connection serves further requests.
    client.ping().unwrap();
}

#[test]
fn exec_streams_stdin_stdout_stderr_and_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let command = Command {
        argv: [
            "sh",
            "-c",
            "cat; echo \"$GREETING from $(pwd)\" >&2; exit 7",
        ]
        .map(String::from)
        .to_vec(),
        env: vec!["GREETING=hello".to_string()],
        cwd: Some("/tmp".to_string()),
        tty: None,
    };
    // More than one chunk of stdin, echoed back through stdout.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let status = client(&transport)
        .exec(
            &command,
            Some(Box::new(Cursor::new(input.clone()))),
            &mut stdout,
            &mut stderr,
            None,
        )
        .unwrap();
    assert_eq!(status, ExitStatus::Code(7));
    assert_eq!(sha256(&stdout), sha256(&input));
    assert_eq!(String::from_utf8(stderr).unwrap(), "hello from /tmp\n");
}

#[test]
fn exec_reports_a_signal_and_a_program_that_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let command = Command {
        argv: ["sh", "-c", "kill -9 $$"].map(String::from).to_vec(),
        ..Command::default()
    };
    let status = client(&transport)
        .exec(&command, None, &mut Vec::new(), &mut Vec::new(), None)
        .unwrap();
    assert_eq!(status, ExitStatus::Signal(9));
    assert_eq!(status.shell_code(), 137);

    let missing = Command {
        argv: vec!["/no/such/program".to_string()],
        ..Command::default()
    };
    let err = client(&transport)
        .exec(&missing, None, &mut Vec::new(), &mut Vec::new(), None)
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("/no/such/program")),
        "{err}"
    );
}

/// Output that sends one terminal size on `resize` once `trigger` has been written.
struct ResizeAfter {
    output: Vec<u8>,
    trigger: &'static str,
    resize: Option<(mpsc::Sender<WindowSize>, WindowSize)>,
}

impl Write for ResizeAfter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(bytes);
        if String::from_utf8_lossy(&self.output).contains(self.trigger) {
            if let Some((sender, size)) = self.resize.take() {
                sender.send(size).unwrap();
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn on_terminal(script: &str) -> Command {
    Command {
        argv: ["sh", "-c", script].map(String::from).to_vec(),
        tty: Some(WindowSize {
            rows: 33,
            cols: 111,
        }),
        ..Command::default()
    }
}

#[test]
fn exec_on_a_terminal_gets_a_pty_of_the_size_asked_and_follows_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    // The first size, then the new one once the host resized (5 s at most), then stderr.
    let command = on_terminal(
        "tty; stty size; i=0; \
         while [ \"$(stty size)\" != '40 120' ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
         stty size; echo to-stderr >&2; exit 5",
    );
    let (sender, resizes) = mpsc::channel();
    let mut stdout = ResizeAfter {
        output: Vec::new(),
        trigger: "33 111\r\n",
        resize: Some((
            sender,
            WindowSize {
                rows: 40,
                cols: 120,
            },
        )),
    };
    let mut stderr = Vec::new();
    let status = client(&transport)
        .exec(&command, None, &mut stdout, &mut stderr, Some(resizes))
        .unwrap();
    assert_eq!(status, ExitStatus::Code(5));
    let output = String::from_utf8(stdout.output).unwrap();
    let lines: Vec<&str> = output.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{output:?}");
    assert_eq!(
        lines[1..],
        ["33 111", "40 120", "to-stderr", ""],
        "{output:?}"
    );
    assert!(stderr.is_empty(), "a terminal has one output stream");
}

#[test]
fn a_terminals_input_is_echoed_and_its_end_ends_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let mut stdout = Vec::new();
    let status = client(&transport)
        .exec(
            &on_terminal("cat; echo cat-ended"),
            Some(Box::new(Cursor::new(b"typed\n".to_vec()))),
            &mut stdout,
            &mut Vec::new(),
            None,
        )
        .unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    let output = String::from_utf8(stdout).unwrap();
    // The terminal echoes the line, cat prints it, and the end of the host's input is the
    // terminal's end of file.
    assert_eq!(output.matches("typed\r\n").count(), 2, "{output:?}");
    assert!(output.ends_with("cat-ended\r\n"), "{output:?}");
}

#[test]
fn a_program_leaving_a_process_on_its_terminal_still_ends_the_exec() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let started = std::time::Instant::now();
    let mut stdout = Vec::new();
    // The child ignores the hangup of the session's end and keeps the pty open.
    let status = client(&transport)
        .exec(
            &on_terminal("(trap '' HUP; exec sleep 30) & echo left-running"),
            None,
            &mut stdout,
            &mut Vec::new(),
            None,
        )
        .unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(String::from_utf8(stdout).unwrap(), "left-running\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_10_mib_file_pushed_and_pulled_back_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let remote = dir.path().join("pushed.bin");
    let remote_str = remote.to_str().unwrap();
    let mut client = client(&transport);
    let written = client
        .push(&mut Cursor::new(&data), remote_str, 0o640, None)
        .unwrap();
    assert_eq!(written, data.len() as u64);
    let meta = std::fs::metadata(&remote).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(sha256(&std::fs::read(&remote).unwrap()), sha256(&data));
    // No temp file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

    let mut pulled = Vec::new();
    let file = client.pull(remote_str, &mut pulled).unwrap();
    assert_eq!(file.size, data.len() as u64);
    assert_eq!(file.mode, 0o640);
    assert_eq!(file.uid, meta.uid());
    assert_eq!(sha256(&pulled), sha256(&data));
}

#[test]
fn push_sets_the_owner_when_asked() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: changing a file's owner needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let remote = dir.path().join("owned");
    client(&transport)
        .push(
            &mut Cursor::new(b"x"),
            remote.to_str().unwrap(),
            0o4755,
            Some((1234, 5678)),
        )
        .unwrap();
    let meta = std::fs::metadata(&remote).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    // The mode is set after the owner, so chown does not clear set-uid.
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
}

#[test]
fn bad_paths_are_refused_with_the_agents_reason_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let mut client = client(&transport);
    let err = client
        .push(&mut Cursor::new(b"x"), "relative/file", 0o644, None)
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("not an absolute path")),
        "{err}"
    );
    let err = client
        .push(&mut Cursor::new(b"x"), "/no/such/dir/file", 0o644, None)
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("/no/such/dir")),
        "{err}"
    );
    let err = client.pull("/no/such/file", &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("/no/such/file")),
        "{err}"
    );
    let err = client
        .pull(dir.path().to_str().unwrap(), &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("not a regular file")),
        "{err}"
    );
    client.ping().unwrap();
}

#[test]
fn the_agent_refuses_another_protocol_version() {
    use corral_agent::frame;
    use corral_agent::message::{Reply, Request};
    let dir = tempfile::tempdir().unwrap();
    let Transport::Unix(socket) = agent(dir.path()) else {
        unreachable!()
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    frame::write_message(&mut stream, &Request::Hello { version: 99 }).unwrap();
    let reply: Reply = frame::read_message(&mut stream).unwrap();
    assert!(
        matches!(&reply, Reply::Error { message } if message.contains("not 99")),
        "{reply:?}"
    );
    // And then closes the connection.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// A stale socket file (an agent killed earlier) does not stop a new agent.
#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = dir.path().join("agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let transport = agent(dir.path());
    client(&transport).ping().unwrap();
}

#[test]
fn a_request_the_agent_does_not_know_is_refused_and_the_connection_goes_on() {
    use corral_agent::frame;
    use corral_agent::message::{Reply, Request, PROTOCOL_VERSION, UNKNOWN_REQUEST};
    let dir = tempfile::tempdir().unwrap();
    let Transport::Unix(socket) = agent(dir.path()) else {
        unreachable!()
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    frame::write_message(&mut stream, &hello).unwrap();
    let _: Reply = frame::read_message(&mut stream).unwrap();
    frame::write_message(&mut stream, &serde_json::json!({"type": "from_the_future"})).unwrap();
    match frame::read_message(&mut stream).unwrap() {
        Reply::Error { message } => assert!(message.starts_with(UNKNOWN_REQUEST), "{message}"),
        other => panic!("{other:?}"),
    }
    frame::write_message(&mut stream, &Request::Ping).unwrap();
    assert_eq!(
        frame::read_message::<Reply>(&mut stream).unwrap(),
        Reply::Pong
    );
}
