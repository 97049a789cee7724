//! podman drives corral as its OCI runtime (`--runtime` pointing at a `corral-oci` symlink), with
//! its storage and state in temp dirs so tests leave the host's podman alone.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use corral_testkit::{require_criu, require_program, require_root};

/// On this kind of host podman needs cgroupfs and modest limits (runc behaves the same).
const RUN_FLAGS: [&str; 6] = [
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];
const IMAGE: &str = "localhost/corral-busybox:test";

struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
}

impl Podman {
    /// Fresh podman storage with the busybox rootfs imported as an image.
    fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("corral-oci");
        std::os::unix::fs::symlink(common::corral_bin(), &runtime).unwrap();
        let rootfs = dir.path().join("rootfs");
        common::build_rootfs(&rootfs);
        let podman = Podman { dir, runtime };
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let import = podman
            .command()
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success());
        assert!(
            import.status.success(),
            "import: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        podman
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `podman` with this test's storage, cgroupfs and corral as the runtime.
    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.path("storage"))
            .arg("--runroot")
            .arg(self.path("run"))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .arg("--runtime")
            .arg(&self.runtime);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        common::output_via_files(self.command().args(args))
    }

    fn run_in_container(&self, extra: &[&str], command: &[&str]) -> Output {
        let mut args = vec!["run"];
        args.extend(RUN_FLAGS);
        args.extend(extra);
        args.push(IMAGE);
        args.extend(command);
        self.run(&args)
    }

    fn command_line(&self) -> String {
        let command = self.command();
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

macro_rules! require_podman_host {
    () => {
        require_root!();
        require_program!("podman");
        if !common::have_busybox() {
            return;
        }
    };
}

#[test]
fn podman_runs_echo_and_passes_exit_codes() {
    require_podman_host!();
    let podman = Podman::new();
    let out = podman.run_in_container(&["--rm"], &["sh", "-c", "echo hello from $container"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from corral\n");
    let out = podman.run_in_container(&["--rm"], &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let out = podman.run_in_container(&["--rm"], &["no-such-command"]);
    assert_eq!(
        out.status.code(),
        Some(127),
        "podman maps 'not found' to 127: {}",
        text(&out.stderr)
    );
}

#[test]
fn podman_interactive_terminal() {
    require_podman_host!();
    require_program!("script");
    let podman = Podman::new();
    // script(1) gives podman a terminal; the input arrives once the shell is up.
    let inner = format!(
        "{} run -it --rm {} {IMAGE} sh",
        podman.command_line(),
        RUN_FLAGS.join(" ")
    );
    let feed =
        "sleep 3; printf 'tty; echo marker-$((6*7))\\r'; sleep 1; printf 'exit 4\\r'; sleep 1";
    let shell = format!("({feed}) | script -qfec '{inner}' /dev/null");
    let out = common::output_via_files(Command::new("sh").args(["-c", &shell]));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("/dev/pts/0"),
        "the shell has a pty: {stdout} {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("marker-42"), "{stdout}");
    assert_eq!(out.status.code(), Some(4), "{stdout}");
}

#[test]
fn podman_terminal_carries_only_the_process_output() {
    require_podman_host!();
    require_program!("script");
    let podman = Podman::new();
    // Input stays open: with script's input at end-of-file, podman itself reads the NUL that
    // the kernel keeps for a canonical-mode EOF once it switches the terminal to raw mode, and
    // forwards it (runc shows the same "^@"); that is podman's, not the runtime's.
    let inner = format!(
        "{} run -t --rm {} {IMAGE} echo marker-tty",
        podman.command_line(),
        RUN_FLAGS.join(" ")
    );
    for round in 0..5 {
        let shell = format!("sleep 3 | script -qfec '{inner}' /dev/null");
        let out = common::output_via_files(Command::new("sh").args(["-c", &shell]));
        assert_eq!(
            text(&out.stdout),
            "marker-tty\r\n",
            "round {round}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn podman_exec_ps_and_stop() {
    require_podman_host!();
    let podman = Podman::new();
    let out = podman.run_in_container(
        &["-d", "--name", "sleeper"],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let ps = podman.run(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        text(&ps.stdout).contains("sleeper Up"),
        "{}",
        text(&ps.stdout)
    );

    let exec = podman.run(&[
        "exec",
        "sleeper",
        "sh",
        "-c",
        "echo exec-in-$container; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(exec.status.success(), "{}", text(&exec.stderr));
    assert!(
        text(&exec.stdout).starts_with("exec-in-corral\nsh -c trap"),
        "{}",
        text(&exec.stdout)
    );
    let exec = podman.run(&["exec", "sleeper", "sh", "-c", "exit 5"]);
    assert_eq!(exec.status.code(), Some(5));

    let stop = podman.run(&["stop", "--time", "10", "sleeper"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let ps = podman.run(&["ps", "--all", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        text(&ps.stdout).contains("sleeper Exited (0)"),
        "stopped by SIGTERM, not killed: {}",
        text(&ps.stdout)
    );
    let rm = podman.run(&["rm", "sleeper"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
}

/// podman's `container checkpoint` and `container restore` call the runtime with runc's flags
/// (`checkpoint --file-locks --image-path ... --work-path ... ID`; conmon's `restore --bundle
/// ... --pid-file ... --detach --image-path ... --work-path ... ID`).
#[test]
fn podman_checkpoints_and_restores_a_counting_container() {
    require_podman_host!();
    require_criu!();
    let podman = Podman::new();
    let out = podman.run_in_container(
        &["-d", "--name", "counter"],
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /c; sleep 0.05; done",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read = || -> u64 {
        let out = podman.run(&["exec", "counter", "cat", "/c"]);
        text(&out.stdout).trim().parse().unwrap_or(0)
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = podman.run(&["container", "checkpoint", "counter"]);
    assert!(out.status.success(), "checkpoint: {}", text(&out.stderr));
    let ps = podman.run(&["ps", "--all", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        !text(&ps.stdout).contains("counter Up"),
        "{}",
        text(&ps.stdout)
    );
    let out = podman.run(&["container", "restore", "counter"]);
    assert!(out.status.success(), "restore: {}", text(&out.stderr));
    let first = read();
    assert!(first > 0, "the restored counter kept its count");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(read() > first, "the restored counter counts on");
}

/// Where `criu check` fails, podman's checkpoint reaches corral (`checkpoint --image-path ...
/// --work-path ... ID`), which refuses with CRIU's reason: podman shows it, and the container
/// runs on.
#[test]
fn podman_checkpoint_shows_crius_reason_where_criu_does_not_work() {
    require_podman_host!();
    if corral_testkit::criu_check().is_ok() {
        corral_testkit::skip("`criu check` passes on this host, so CRIU is not refused here");
        return;
    }
    let podman = Podman::new();
    let out = podman.run_in_container(
        &["-d", "--name", "sleeper"],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = podman.run(&["container", "checkpoint", "sleeper"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("CRIU does not work on this host: ")
            && err.contains("where `criu check` passes"),
        "{err}"
    );
    let ps = podman.run(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        text(&ps.stdout).contains("sleeper Up"),
        "{}",
        text(&ps.stdout)
    );
}
