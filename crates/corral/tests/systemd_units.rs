//! The systemd units corral's package ships (packaging/systemd/): each passes `systemd-analyze
//! verify`, and corral-autostart.service's commands, run as systemd runs them (its command lines,
//! a service's environment), bring the marked instances up at boot and every instance down at
//! shutdown. Starting instances needs root and busybox-static.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::CorralRoot;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd")
}

/// The unit file `name` as the package installs it.
fn unit(name: &str) -> String {
    std::fs::read_to_string(units_dir().join(name)).unwrap()
}

/// The unit with the binary under test where the package puts corral.
fn with_binary_under_test(text: &str) -> String {
    text.replace("/usr/bin/corral", common::corral_bin())
}

/// The command line of the unit's `key=` line (ExecStart, ExecStop), with the binary under
/// test and without systemd's `-` prefix (failure ignored).
fn command_line(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the unit has no {key}="));
    let line = line.trim_start_matches('-');
    with_binary_under_test(line)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `command` run the way systemd runs a system service's command: nothing of the caller's
/// environment but what systemd sets (its PATH, the invocation id), stdin from /dev/null. The
/// corral root is the test's, which the unit leaves at its default.
fn as_systemd_runs(command: &[String], root: &CorralRoot) -> Command {
    let mut run = Command::new(&command[0]);
    run.args(&command[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
        .env("CORRAL_ROOT", root.path());
    run
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    corral_testkit::require_program!("systemd-analyze");
    let checked = tempfile::tempdir().unwrap();
    let mut units = 0;
    for entry in std::fs::read_dir(units_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        // verify checks that the unit's programs exist: corral is not installed here.
        let copy = checked.path().join(&name);
        std::fs::write(
            &copy,
            with_binary_under_test(&std::fs::read_to_string(&path).unwrap()),
        )
        .unwrap();
        // The man pages the unit names are checked in the installed package (tests/package.rs).
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        units += 1;
    }
    assert!(units >= 1, "no units in {}", units_dir().display());
}

#[test]
fn the_autostart_unit_starts_marked_instances_at_boot_and_stops_all_at_shutdown() {
    if !corral_testkit::is_root() {
        corral_testkit::skip("needs root for namespaces and cgroups");
        return;
    }
    if !common::have_busybox() {
        return;
    }
    let root = CorralRoot::new();
    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    let rootfs = rootfs.to_str().unwrap();
    // `trap` makes the shell end on SIGTERM, as a service's main process would.
    let script = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    for (name, marked) in [("auto", true), ("manual", false)] {
        let mut args = vec!["create", name, "--rootfs", rootfs];
        if marked {
            args.push("--autostart");
        }
        args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
        root.ok(&args);
    }
    root.ok(&["start", "manual"]);

    let service = unit("corral-autostart.service");
    let start = command_line(&service, "ExecStart");
    assert_eq!(start[1..], ["autostart"]);
    let out = common::output_via_files(&mut as_systemd_runs(&start, &root));
    assert!(
        out.status.success(),
        "ExecStart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(root.status("auto"), "running");

    let stop = command_line(&service, "ExecStop");
    let out = common::output_via_files(&mut as_systemd_runs(&stop, &root));
    assert!(
        out.status.success(),
        "ExecStop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("stopped auto") && said.contains("stopped manual"),
        "{said}"
    );
    assert_eq!(root.status("auto"), "stopped");
    assert_eq!(root.status("manual"), "stopped");
}
