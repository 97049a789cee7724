//! Boots the real Linux guests of `guests/linux/` in `corral vmm run`: PVH entry, two vCPUs, our
//! own init, then a reboot through the i8042 controller (default kernel, MP table) or a power-off
//! through ACPI S5 (the ACPI variant, MADT). About a minute each on the emulated-KVM development
//! host, so they are ignored in the fast run; `scripts/test.sh` runs them as their own step with
//! `CORRAL_GUEST_LINUX_DIR` / `CORRAL_GUEST_LINUX_ACPI_DIR` / `CORRAL_GUEST_LINUX_NET_DIR` pointing
//! at `guests/linux/build.sh` outputs (without them the test builds the guest itself). The virtio
//! variant (`guest-net.config`) mounts an ext4 virtio disk and pings a peer over virtio-net.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{require_kvm, require_program, require_root, Netns};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory with `vmlinux` and `initramfs.cpio` from `$variable`, or built now with the
/// extra config `fragments`.
fn guest_linux_dir(variable: &str, fragments: &[&str]) -> (PathBuf, Option<tempfile::TempDir>) {
    if let Some(dir) = std::env::var_os(variable) {
        return (PathBuf::from(dir), None);
    }
    let dir = tempfile::tempdir().unwrap();
    let linux = repo_root().join("guests/linux");
    let status = Command::new("bash")
        .arg(linux.join("build.sh"))
        .arg(dir.path())
        .args(fragments.iter().map(|fragment| linux.join(fragment)))
        .status()
        .unwrap();
    assert!(status.success(), "guests/linux/build.sh failed");
    (dir.path().to_owned(), Some(dir))
}

/// Boots the guest in `dir` with two vCPUs and returns (exit status, console, stderr).
fn boot(dir: &Path, extra_cmdline: &str) -> (Option<i32>, String, String) {
    boot_with(
        Command::new(env!("CARGO_BIN_EXE_corral")),
        dir,
        extra_cmdline,
        &[],
    )
}

/// Boots like [`boot`] through `command` (the corral binary, perhaps inside a network
/// namespace) with extra `vmm run` arguments.
fn boot_with(
    mut command: Command,
    dir: &Path,
    extra_cmdline: &str,
    extra_args: &[&str],
) -> (Option<i32>, String, String) {
    let cmdline = std::fs::read_to_string(repo_root().join("guests/linux/cmdline")).unwrap();
    let cmdline = format!("{} {extra_cmdline}", cmdline.trim());
    let mut child = command
        .args(["vmm", "run", "--vcpus", "2", "--memory", "256M"])
        .args(extra_args)
        .args(["--on-reboot", "destroy", "--cmdline", cmdline.trim()])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "Linux did not finish within {BOOT_TIMEOUT:?}; console:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The lines init printed (the guest's tty turns "\n" into "\r\n").
fn init_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .map(str::trim_end)
        .filter(|line| line.starts_with("corral-init: "))
        .collect()
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn linux_boots_to_init_with_two_vcpus_and_reboots() {
    require_kvm!();
    require_program!("gcc");
    let (dir, _keep) = guest_linux_dir("CORRAL_GUEST_LINUX_DIR", &[]);
    let (status, console, stderr) = boot(&dir, "");
    assert_eq!(
        init_lines(&console),
        [
            "corral-init: started",
            "corral-init: cpus=2",
            "corral-init: rebooting"
        ],
        "{console}"
    );
    assert_eq!(status, Some(3), "{stderr}");
    assert!(stderr.contains("vm stopped: reboot ("), "{stderr}");
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn linux_with_acpi_finds_its_cpus_in_the_madt_and_powers_off_through_s5() {
    require_kvm!();
    require_program!("gcc");
    let (dir, _keep) = guest_linux_dir("CORRAL_GUEST_LINUX_ACPI_DIR", &["guest-acpi.config"]);
    let (status, console, stderr) = boot(&dir, "corral_init=poweroff");
    assert!(
        console.contains("Using ACPI (MADT) for SMP configuration"),
        "ACPI was not used: {console}"
    );
    assert_eq!(
        init_lines(&console),
        [
            "corral-init: started",
            "corral-init: cpus=2",
            "corral-init: powering off"
        ],
        "{console}"
    );
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stderr.contains("vm stopped: poweroff (the guest entered ACPI S5"),
        "{stderr}"
    );
}

/// The host side of the guest's vsock step: answers the guest's connection to port 6000, then
/// connects to the guest's port 5000 (retrying until the guest listens) and sends "ping".
/// Returns what the guest sent on each connection.
fn vsock_host_side(dir: &Path) -> std::thread::JoinHandle<(String, String)> {
    let listener = UnixListener::bind(dir.join("vsock.sock_6000")).unwrap();
    let socket = dir.join("vsock.sock");
    std::thread::spawn(move || {
        let read_line = |stream: &UnixStream| {
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            line
        };
        let (mut from_guest, _) = listener.accept().unwrap();
        let greeting = read_line(&from_guest);
        from_guest.write_all(b"hello linux\n").unwrap();
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            let Ok(mut to_guest) = UnixStream::connect(&socket) else {
                continue;
            };
            to_guest.set_read_timeout(Some(BOOT_TIMEOUT)).unwrap();
            // The guest refuses (the stream closes) until it listens.
            if to_guest.write_all(b"CONNECT 5000\n").is_err()
                || !read_line(&to_guest).starts_with("OK ")
            {
                continue;
            }
            to_guest.write_all(b"ping\n").unwrap();
            return (greeting, read_line(&to_guest));
        }
        (greeting, String::new())
    })
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn linux_uses_virtio_disk_net_and_vsock() {
    require_root!();
    require_kvm!();
    require_program!("gcc");
    require_program!("ip");
    require_program!("mkfs.ext4");
    require_program!("debugfs");
    let (dir, _keep) = guest_linux_dir("CORRAL_GUEST_LINUX_NET_DIR", &["guest-net.config"]);
    let work = tempfile::tempdir().unwrap();
    let content = work.path().join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("hello.txt"), "hello from the host\n").unwrap();
    let disk = work.path().join("disk.ext4");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&disk)
        .arg("8M")
        .status()
        .unwrap();
    assert!(made.success(), "mkfs.ext4 failed");

    let netns = Netns::new("linux");
    netns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    netns.ip(&["addr", "add", "10.0.2.1/24", "dev", "tap0"]);
    netns.ip(&["link", "set", "tap0", "up"]);
    let disk_arg = format!("path={},format=raw", disk.display());
    let vsock_arg = format!("cid=3,socket={}", work.path().join("vsock.sock").display());
    let host_side = vsock_host_side(work.path());
    let (status, console, stderr) = boot_with(
        netns.command(env!("CARGO_BIN_EXE_corral")),
        &dir,
        "corral_disk=vda corral_net=10.0.2.2 corral_peer=10.0.2.1 corral_vsock=6000",
        &[
            "--disk", &disk_arg, "--nic", "tap=tap0", "--vsock", &vsock_arg,
        ],
    );
    assert_eq!(
        init_lines(&console),
        [
            "corral-init: started",
            "corral-init: cpus=2",
            "corral-init: read hello.txt: hello from the host",
            "corral-init: wrote from-guest.txt",
            "corral-init: eth0 up with 10.0.2.2",
            "corral-init: ping 10.0.2.1 ok",
            "corral-init: vsock host said: hello linux",
            "corral-init: vsock listening on 5000",
            "corral-init: vsock answered the host",
            "corral-init: rebooting"
        ],
        "{console}"
    );
    assert_eq!(status, Some(3), "{stderr}");
    let (greeting, answer) = host_side.join().unwrap();
    assert_eq!(greeting, "hello from linux\n");
    assert_eq!(answer, "pong\n");

    // The file the guest wrote is on the disk, read by e2fsprogs after the VM ended.
    let written = Command::new("debugfs")
        .args(["-R", "cat /from-guest.txt"])
        .arg(&disk)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&written.stdout),
        "written by the guest over virtio-blk\n"
    );
    let check = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
