//! Boots the real Linux guest of `guests/linux/` in `corral vmm run`: PVH entry, two vCPUs, our
//! own init, and a reboot through the i8042 controller. About a minute on the emulated-KVM
//! development host, so it is ignored in the fast run; `scripts/test.sh` runs it as its own step
//! with `CORRAL_GUEST_LINUX_DIR` pointing at the output of `guests/linux/build.sh`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{require_kvm, require_program};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory with `vmlinux` and `initramfs.cpio`, building them if no one did.
fn guest_linux_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    if let Some(dir) = std::env::var_os("CORRAL_GUEST_LINUX_DIR") {
        return (PathBuf::from(dir), None);
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(repo_root().join("guests/linux/build.sh"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "guests/linux/build.sh failed");
    (dir.path().to_owned(), Some(dir))
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn linux_boots_to_init_with_two_vcpus_and_reboots() {
    require_kvm!();
    require_program!("gcc");
    let (dir, _keep) = guest_linux_dir();
    let cmdline = std::fs::read_to_string(repo_root().join("guests/linux/cmdline")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["vmm", "run", "--vcpus", "2", "--memory", "256M"])
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
                "Linux did not finish booting within {BOOT_TIMEOUT:?}; console:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().unwrap();
    let console = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The guest's tty turns "\n" into "\r\n".
    let init_lines: Vec<&str> = console
        .lines()
        .map(str::trim_end)
        .filter(|line| line.starts_with("corral-init: "))
        .collect();
    assert_eq!(
        init_lines,
        [
            "corral-init: started",
            "corral-init: cpus=2",
            "corral-init: rebooting"
        ],
        "{console}"
    );
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("vm stopped: reboot ("), "{stderr}");
}
