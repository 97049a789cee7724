//! Boots the real Linux guests of `guests/linux/` in `corral vmm run`: PVH entry, two vCPUs, our
//! own init, then a reboot through the i8042 controller (default kernel, MP table) or a power-off
//! through ACPI S5 (the ACPI variant, MADT). About a minute each on the emulated-KVM development
//! host, so they are ignored in the fast run; `scripts/test.sh` runs them as their own step with
//! `CORRAL_GUEST_LINUX_DIR` / `CORRAL_GUEST_LINUX_ACPI_DIR` pointing at `guests/linux/build.sh`
//! outputs (without them the test builds the guest itself).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{require_kvm, require_program};

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
    let cmdline = std::fs::read_to_string(repo_root().join("guests/linux/cmdline")).unwrap();
    let cmdline = format!("{} {extra_cmdline}", cmdline.trim());
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
