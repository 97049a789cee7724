//! The VMM's confinement, end to end with freestanding guests: per-thread seccomp filters (a
//! vCPU that makes a forbidden call dies of SIGSYS; every thread is confined, devices
//! attached) and `corral vmm run --jail`. Needs /dev/kvm and root.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{require_kvm, require_root, vmm_run_command};

const TIMEOUT: Duration = Duration::from_secs(60);

fn corral() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corral"))
}

fn guest(name: &str) -> String {
    corral_guests::elf(name).display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wait_with_timeout(mut child: Child) -> Output {
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("corral vmm run did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The VMM under test (`corral vmm run`, or `CORRAL_TEST_VMM`) with `--memory 32M`.
fn vmm_command() -> Command {
    let (program, run) = vmm_run_command(env!("CARGO_BIN_EXE_corral"));
    let mut command = Command::new(program);
    command.args(run).args(["--memory", "32M"]);
    command
}

fn vmm(args: &[&str]) -> Output {
    let child = vmm_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child)
}

/// A running `corral vmm run` with a control socket; killed through it when dropped.
struct RunningVm {
    child: Option<Child>,
    control: PathBuf,
}

impl RunningVm {
    fn start(args: &[&str], control: &Path) -> RunningVm {
        let child = vmm_command()
            .arg("--control-socket")
            .arg(control)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut vm = RunningVm {
            child: Some(child),
            control: control.to_owned(),
        };
        let deadline = Instant::now() + TIMEOUT;
        while vm.call("status").is_none() {
            if vm.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                let output = vm.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "the VMM ended ({}): {}",
                    output.status,
                    text(&output.stderr)
                );
            }
            assert!(Instant::now() < deadline, "the VMM never served its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        vm
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn call(&self, request: &str) -> Option<serde_json::Value> {
        let output = corral()
            .args(["vmm", "control"])
            .arg(&self.control)
            .arg(request)
            .output()
            .unwrap();
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).unwrap())
    }

    /// Kills the VM and returns its output.
    fn finish(mut self) -> Output {
        self.call("kill");
        wait_with_timeout(self.child.take().unwrap())
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `Name:\tvalue` from a `/proc/.../status` file.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} missing from {status}"))
        .trim()
        .to_owned()
}

/// The names of `pid`'s threads, once all of `expected` exist.
fn thread_names(pid: u32, expected: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect();
        if expected.iter().all(|e| names.iter().any(|name| name == e)) {
            return names;
        }
        assert!(Instant::now() < deadline, "no {expected:?} among {names:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every thread of `pid` is confined: its own seccomp filter (mode 2) and no_new_privs.
fn assert_every_thread_confined(pid: u32, expected_threads: &[&str]) {
    thread_names(pid, expected_threads);
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        // A thread that ended since the listing (a finished connection's) needs no check.
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue;
        };
        let name = name.trim().to_owned();
        assert_eq!(status_field(&status, "Seccomp"), "2", "thread {name}");
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "thread {name}");
        names.push(name);
    }
    for expected in expected_threads {
        assert!(
            names.iter().any(|name| name == expected),
            "no {expected} thread among {names:?}"
        );
    }
}

#[test]
fn a_vcpu_making_a_forbidden_call_kills_the_vmm_with_sigsys() {
    require_kvm!();
    let kernel = guest("forbidden-call");
    let args = ["--kernel", &kernel, "--test-forbidden-call-port"];
    let output = vmm(&args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.signal(), Some(libc::SIGSYS), "{stderr}");
    assert!(
        stderr.contains("thread vcpu0 made the forbidden system call execve"),
        "{stderr}"
    );
    // Without the filters the same guest carries on and exits with its own code.
    let mut unfiltered = args.to_vec();
    unfiltered.push("--no-seccomp");
    let output = vmm(&unfiltered);
    assert_eq!(output.status.code(), Some(7), "{}", text(&output.stderr));
}

#[test]
fn every_vmm_thread_is_confined_with_devices_attached() {
    require_kvm!();
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let tap = format!("csec{}", std::process::id() % 100_000);
    let vsock = format!("cid=3,socket={}", dir.path().join("v.sock").display());
    let console = format!("socket:{}", dir.path().join("console.sock").display());
    let kernel = guest("counter");
    let vm = RunningVm::start(
        &[
            "--kernel",
            &kernel,
            "--disk",
            disk.to_str().unwrap(),
            "--nic",
            &format!("tap={tap}"),
            "--rng",
            "--vsock",
            &vsock,
            "--serial",
            &console,
        ],
        &dir.path().join("control.sock"),
    );
    assert_every_thread_confined(
        vm.pid(),
        &[
            "vcpu0",
            "virtio-blk0",
            "virtio-net0",
            "virtio-rng",
            "virtio-vsock",
            "control",
            "console",
        ],
    );
    let output = vm.finish();
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
}

#[test]
fn a_jailed_vmm_sees_only_its_directory_and_runs_unprivileged() {
    require_kvm!();
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "host file").unwrap();
    let kernel = guest("counter");
    let exit_file = jail.join("exit.json");
    let vm = RunningVm::start(
        &[
            "--kernel",
            &kernel,
            "--serial",
            "none",
            "--jail",
            jail.to_str().unwrap(),
            "--exit-file",
            exit_file.to_str().unwrap(),
        ],
        &jail.join("control.sock"),
    );
    let pid = vm.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for field in ["Uid", "Gid"] {
        let ids = status_field(&status, field);
        assert!(ids.split_whitespace().all(|id| id != "0"), "{field}: {ids}");
    }
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    assert_every_thread_confined(pid, &["vcpu0", "control"]);
    // Its root holds the jail directory at its own path, and nothing else.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let jail = std::fs::canonicalize(&jail).unwrap();
    for entry in walk(&root) {
        let inside = Path::new("/").join(entry.strip_prefix(&root).unwrap());
        assert!(
            jail.starts_with(&inside) || inside.starts_with(&jail),
            "{} is in the jail",
            inside.display()
        );
    }
    assert!(root
        .join(jail.strip_prefix("/").unwrap())
        .join("control.sock")
        .exists());
    assert!(!root.join(secret.strip_prefix("/").unwrap()).exists());
    let output = vm.finish();
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
    // The exit record was written from inside the jail, where the host finds it.
    assert!(std::fs::read_to_string(&exit_file)
        .unwrap()
        .contains("stopped"));
    assert_ne!(std::fs::metadata(&jail).unwrap().uid(), 0);
}

#[test]
fn a_jailed_confined_vmm_restarts_its_guest_in_place() {
    require_kvm!();
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let kernel = guest("reset");
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let jail = dir.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    let vm = RunningVm::start(
        &[
            "--kernel",
            &kernel,
            "--serial",
            "none",
            "--disk",
            disk.to_str().unwrap(),
            "--on-reboot",
            "restart",
            "--jail",
            jail.to_str().unwrap(),
        ],
        &jail.join("control.sock"),
    );
    // Each restart builds a new VM from the kernel and disk opened before the jail, under the
    // main thread's filter.
    let deadline = Instant::now() + TIMEOUT;
    while vm.call("info").unwrap()["restarts"].as_u64().unwrap() < 3 {
        assert!(Instant::now() < deadline, "the guest did not restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = vm.finish();
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
}

#[test]
fn a_jailed_vmm_refuses_to_write_outside_its_directory() {
    require_kvm!();
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    let kernel = guest("counter");
    let outside = dir.path().join("control.sock");
    let output = vmm(&[
        "--kernel",
        &kernel,
        "--jail",
        jail.to_str().unwrap(),
        "--control-socket",
        outside.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("control socket") && stderr.contains("outside the jail directory"),
        "{stderr}"
    );
}

/// Every path under `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}
