//! Supervisors started under systemd log to the journal. `corral start` runs as systemd runs a
//! service: its stderr a journal stream that `JOURNAL_STREAM` names. A fake journald listens
//! where journald's stream socket lives, in a private mount namespace (a tmpfs over `/run`), so
//! the host's `/run` is never touched. Needs root and /dev/kvm: the supervisor is a jailed VMM,
//! the hardest to reach the journal from.

mod common;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::mpsc;
use std::time::Duration;

use corral_testkit::{require_kvm, require_root};
use nix::mount::{mount, MsFlags};

use common::{create_vm as vm, wait_for, CorralRoot as Root};

/// journald's stream socket, as `corral_control::journal` connects to it.
const JOURNALD_STDOUT: &str = "/run/systemd/journal/stdout";

/// A journald stand-in: a stream socket whose every connection is read to its end and sent
/// whole on `streams`.
struct FakeJournald {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    streams: mpsc::Receiver<String>,
}

impl FakeJournald {
    fn new() -> FakeJournald {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("stdout");
        let listener = UnixListener::bind(&socket).unwrap();
        let (sender, streams) = mpsc::channel();
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    let mut text = String::new();
                    connection.unwrap().read_to_string(&mut text).unwrap();
                    let _ = sender.send(text);
                });
            }
        });
        FakeJournald {
            _dir: dir,
            socket,
            streams,
        }
    }

    /// The next stream to end.
    fn stream(&self) -> String {
        self.streams.recv_timeout(Duration::from_secs(30)).unwrap()
    }
}

/// Runs corral with `args` as a systemd service runs: stderr a journal stream (returned as
/// what reached it) named by `JOURNAL_STREAM`, in a mount namespace of its own whose `/run`
/// is a tmpfs with `journald`'s socket at journald's path, or none.
fn under_systemd(root: &Root, args: &[&str], journald: Option<&Path>) -> (Output, String) {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let stat = nix::sys::stat::fstat(theirs.as_fd()).unwrap();
    let mut command = root.command(args);
    command
        .env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
        .stderr(std::os::fd::OwnedFd::from(theirs));
    let journald = journald.map(Path::to_path_buf);
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (unshare, mount, mkdir, open) on short paths that nix converts on the stack.
    unsafe {
        command.pre_exec(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            mount(
                Some("tmpfs"),
                "/run",
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )?;
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o755);
            nix::unistd::mkdir("/run/systemd", mode)?;
            nix::unistd::mkdir("/run/systemd/journal", mode)?;
            if let Some(socket) = &journald {
                drop(nix::fcntl::open(
                    JOURNALD_STDOUT,
                    nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
                    mode,
                )?);
                mount(
                    Some(socket.as_path()),
                    JOURNALD_STDOUT,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    drop(command);
    let mut stderr = String::new();
    ours.read_to_string(&mut stderr).unwrap();
    (output, stderr)
}

fn supervisor_log(root: &Root, name: &str) -> String {
    std::fs::read_to_string(root.instance_dir(name).join("run/supervisor.log")).unwrap()
}

#[test]
fn a_vm_started_under_systemd_logs_to_the_journal_under_its_name() {
    require_root!();
    require_kvm!();
    let root = Root::new();
    vm(&root, "crashy", "triple-fault", &[]);
    let journald = FakeJournald::new();
    let (output, _) = under_systemd(&root, &["start", "crashy"], Some(&journald.socket));
    assert!(output.status.success(), "{output:?}");
    wait_for("the crash", Duration::from_secs(20), || {
        root.status("crashy") == "crashed"
    });
    let stream = journald.stream();
    let lines = stream
        .strip_prefix("corral-crashy\n\n6\n1\n0\n0\n0\n")
        .unwrap_or_else(|| panic!("no stream header naming corral-crashy: {stream:?}"));
    assert!(
        lines.lines().any(|l| l.starts_with("<3>guest crashed")),
        "the VMM's error is at priority 3: {lines}"
    );
    assert!(
        lines.lines().any(|l| l.starts_with("corral: vm stopped")),
        "what it prints plainly reaches the journal too: {lines}"
    );
    assert_eq!(
        supervisor_log(&root, "crashy"),
        "corral: this supervisor logs to the systemd journal: journalctl -t corral-crashy\n"
    );
}

#[test]
fn an_unreachable_journal_leaves_the_supervisor_log() {
    require_root!();
    require_kvm!();
    let root = Root::new();
    vm(&root, "crashy", "triple-fault", &[]);
    let (output, stderr) = under_systemd(&root, &["start", "crashy"], None);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stderr.starts_with(
            "<4>cannot reach the journal at /run/systemd/journal/stdout, so corral-crashy logs to"
        ),
        "the manager warns, at priority 4: {stderr}"
    );
    wait_for("the crash in the log", Duration::from_secs(20), || {
        supervisor_log(&root, "crashy").contains("guest crashed")
    });
    assert!(!supervisor_log(&root, "crashy").contains("<3>"));
}
