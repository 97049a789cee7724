//! `corral guest detect` and `corral guest machine-id` on the real host and on temporary trees.

use std::path::Path;
use std::process::Command;

use corral_testkit::{require_program, require_root};

fn corral(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .output()
        .expect("run corral")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn detect_vm_agrees_with_systemd_detect_virt() {
    require_program!("systemd-detect-virt");
    let theirs = Command::new("systemd-detect-virt")
        .arg("--vm")
        .output()
        .unwrap();
    let ours = corral(&["guest", "detect", "--vm"]);
    assert_eq!(stdout(&ours), stdout(&theirs), "hypervisor id differs");
    assert_eq!(ours.status.code(), theirs.status.code());
}

#[test]
fn quiet_detect_answers_by_exit_status_only() {
    let loud = corral(&["guest", "detect", "--vm"]);
    let quiet = corral(&["guest", "detect", "--vm", "--quiet"]);
    assert!(quiet.stdout.is_empty());
    assert_eq!(quiet.status.code(), loud.status.code());
}

#[test]
fn detect_json_lists_evidence() {
    let out = corral(&["guest", "detect", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap().starts_with("cpuid:")));
}

/// Runs `corral guest detect --container` as PID 1 of a new pid namespace, with `env`.
fn detect_in_new_pid_namespace(env: &[&str]) -> (String, Option<i32>) {
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "env"])
        .args(env)
        .args([
            env!("CARGO_BIN_EXE_corral"),
            "guest",
            "detect",
            "--container",
        ])
        .output()
        .expect("run unshare");
    (stdout(&out), out.status.code())
}

#[test]
fn detect_sees_a_foreign_pid_namespace() {
    require_root!();
    require_program!("unshare");
    let (id, code) = detect_in_new_pid_namespace(&[]);
    // The namespace shares this host's files, so a container marker here names the technology.
    let expected = if Path::new("/run/.containerenv").exists() {
        "podman"
    } else if Path::new("/.dockerenv").exists() {
        "docker"
    } else {
        "container-other"
    };
    assert_eq!(id, expected);
    assert_eq!(code, Some(0));
}

#[test]
fn detect_names_corral_from_pid1_environment() {
    require_root!();
    require_program!("unshare");
    let (id, code) = detect_in_new_pid_namespace(&["container=corral"]);
    assert_eq!(id, "corral");
    assert_eq!(code, Some(0));
}

fn guest_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::create_dir_all(dir.path().join("var/lib/dbus")).unwrap();
    dir
}

fn is_machine_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn root_arg(dir: &Path) -> String {
    dir.to_str().unwrap().to_string()
}

#[test]
fn regenerate_on_an_offline_root_keeps_the_dbus_symlink() {
    let dir = guest_tree();
    let old = "3d1219c7c4c5404aaa1f6d2a48adfda4";
    std::fs::write(dir.path().join("etc/machine-id"), format!("{old}\n")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/machine-id",
        dir.path().join("var/lib/dbus/machine-id"),
    )
    .unwrap();
    let out = corral(&[
        "guest",
        "machine-id",
        "--regenerate",
        "--root",
        &root_arg(dir.path()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = stdout(&out);
    assert!(is_machine_id(&new) && new != old, "{new}");
    let etc = std::fs::read_to_string(dir.path().join("etc/machine-id")).unwrap();
    assert_eq!(etc, format!("{new}\n"));
    let link = dir.path().join("var/lib/dbus/machine-id");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/etc/machine-id")
    );
    let shown = corral(&["guest", "machine-id", "--root", &root_arg(dir.path())]);
    assert_eq!(stdout(&shown), new);
    // The host's own id is untouched by work on an offline root.
    if let Ok(host) = std::fs::read_to_string("/etc/machine-id") {
        assert_ne!(host.trim(), new);
    }
}

#[test]
fn ensure_creates_a_missing_id_once() {
    let dir = guest_tree();
    let root = root_arg(dir.path());
    let first = corral(&["guest", "machine-id", "--ensure", "--root", &root]);
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stderr).contains("created /etc/machine-id"));
    let id = stdout(&first);
    assert!(is_machine_id(&id));
    let second = corral(&["guest", "machine-id", "--ensure", "--root", &root]);
    assert_eq!(stdout(&second), id, "--ensure keeps a valid id");
    assert!(
        second.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let etc = std::fs::read_to_string(dir.path().join("etc/machine-id")).unwrap();
    assert_eq!(etc, format!("{id}\n"));
    // D-Bus is installed in the tree, so it gets Debian's link to the canonical file.
    let dbus = std::fs::read_link(dir.path().join("var/lib/dbus/machine-id")).unwrap();
    assert_eq!(dbus, Path::new("/etc/machine-id"));
}

#[test]
fn invalid_id_is_reported_not_kept() {
    let dir = guest_tree();
    let root = root_arg(dir.path());
    std::fs::write(dir.path().join("etc/machine-id"), "DEADBEEF\n").unwrap();
    let show = corral(&["guest", "machine-id", "--root", &root]);
    assert_eq!(show.status.code(), Some(1));
    let err = String::from_utf8_lossy(&show.stderr);
    assert!(err.contains("invalid machine-id (\"DEADBEEF\")"), "{err}");
    assert!(err.contains("--regenerate"), "{err}");
    let ensure = corral(&["guest", "machine-id", "--ensure", "--root", &root]);
    assert!(ensure.status.success());
    assert!(String::from_utf8_lossy(&ensure.stderr).contains("replaced \"DEADBEEF\""));
    assert!(is_machine_id(&stdout(&ensure)));
}

#[test]
fn missing_root_is_a_clear_error() {
    let out = corral(&["guest", "machine-id", "--root", "/nonexistent/corral-root"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "corral: root directory /nonexistent/corral-root does not exist"
    );
}
