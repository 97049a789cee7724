//! The real Linux test guest of `guests/linux/`: its kernel, command line and what its kernel
//! prints when it kills a program.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root (guests/ and scripts/ live there).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory with `vmlinux` and `initramfs.cpio` of the test guest (`guests/linux/guest.config`:
/// virtio disk, net and vsock, ext4, vfat) from `CORRAL_GUEST_LINUX_DIR`, or built now (the kernel
/// comes from the build cache when it was built before). The temp dir, when one was made, must
/// live as long as the directory is used.
pub fn guest_linux_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    built_or_given("CORRAL_GUEST_LINUX_DIR", &[])
}

/// Like [`guest_linux_dir`], the variant with ACPI and everything containers need (cgroup v2
/// controllers, eBPF device filters, namespaces, seccomp, overlayfs: `guest-full.config`) from
/// `CORRAL_GUEST_LINUX_FULL_DIR`. It runs programs several times slower than the other (the
/// cgroup controllers' accounting, in the instruction emulator), so only the tests that need it
/// boot it.
pub fn guest_linux_full_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    built_or_given("CORRAL_GUEST_LINUX_FULL_DIR", &["guest-full.config"])
}

fn built_or_given(variable: &str, fragments: &[&str]) -> (PathBuf, Option<tempfile::TempDir>) {
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

/// The guest kernel's command line (`guests/linux/cmdline`) followed by `extra`.
pub fn cmdline(extra: &str) -> String {
    let base = std::fs::read_to_string(repo_root().join("guests/linux/cmdline")).unwrap();
    format!("{} {extra}", base.trim()).trim().to_owned()
}

/// What the guest kernel prints when it kills a program for a fault.
const GUEST_FAULT_REPORTS: [&str; 3] = ["segfault at", "traps:", "general protection"];

/// True when `console` holds the guest kernel's report of a program it killed for a fault (this
/// host's emulator now and then hands a fresh guest program stale memory: guests/linux/README.md).
pub fn reports_a_fault(console: &str) -> bool {
    GUEST_FAULT_REPORTS
        .iter()
        .any(|report| console.contains(report))
}

/// A copy of the corral binary without its symbols (a third of the size), at `to`.
pub fn stripped_corral(to: &Path) {
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(to)
        .arg(env!("CARGO_BIN_EXE_corral"))
        .status()
        .unwrap();
    assert!(stripped.success(), "strip failed");
}
