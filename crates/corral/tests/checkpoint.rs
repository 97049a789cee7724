//! Checkpoint and restore of running containers with CRIU, through the real binary: `corral oci
//! checkpoint/restore` (runc's flags) and stateful snapshots of container instances. Where
//! `criu check` fails (this development host: CRIU cannot parse its vDSO) the refusals run and
//! must carry CRIU's own reason and change nothing; the real checkpoints run only where
//! `criu check` passes, and skip with CRIU's words otherwise.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{CorralRoot as Root, TestBundle};
use corral_testkit::{require_criu, require_root};

/// A counter that appends 1, 2, 3, ... to `/count`, one line every 50 ms (and stops on TERM,
/// which an init without a handler would ignore).
const COUNTER: &str =
    "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.05; done";

macro_rules! require_container_host {
    () => {
        require_root!();
        if !common::have_busybox() {
            return;
        }
    };
}

/// CRIU's first error message from `criu check` (its root cause), where `criu check` fails;
/// `None` (after recording a skip) where it passes, since the refusals cannot be provoked there.
fn criu_failure() -> Option<String> {
    match corral_testkit::criu_check() {
        Ok(()) => {
            corral_testkit::skip("`criu check` passes on this host, so CRIU is not refused here");
            None
        }
        Err(output) if output.starts_with("criu cannot be run") => {
            Some("criu is not installed".to_string())
        }
        Err(output) => {
            let first = output
                .lines()
                .find_map(|line| line.split_once("): ").map(|(_, text)| text.trim()))
                .unwrap_or(output.lines().last().unwrap_or_default());
            Some(first.trim_end_matches('.').to_string())
        }
    }
}

/// The numbers in a counter file, asserting they run 1, 2, 3, ... without a gap or a repeat.
fn consecutive_count(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut expected = 1;
    for line in text.lines() {
        assert_eq!(
            line.parse::<u64>().ok(),
            Some(expected),
            "the count skips or repeats at line {expected} of {}:\n{text}",
            path.display()
        );
        expected += 1;
    }
    expected - 1
}

/// Waits until the counter file holds at least `at_least` lines; returns the count.
fn wait_for_count(path: &Path, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let count = consecutive_count(path);
        if count >= at_least {
            return count;
        }
        assert!(
            Instant::now() < deadline,
            "the counter reached only {count} of {at_least}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn oci_checkpoint_and_restore_are_refused_with_crius_reason_and_change_nothing() {
    require_container_host!();
    let bundle = TestBundle::new("ckpt-refused", COUNTER);
    // --pre-dump is refused whatever CRIU can do.
    bundle.create_and_start();
    let out = bundle.oci(&["checkpoint", "--pre-dump", &bundle.id]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        err.contains("cannot pre-dump container") && err.contains("without --pre-dump"),
        "{err}"
    );
    let Some(reason) = criu_failure() else {
        bundle.force_delete();
        return;
    };
    let images = bundle.path().join("images");
    let work = bundle.path().join("work");
    let out = bundle.oci(&[
        "checkpoint",
        "--image-path",
        images.to_str().unwrap(),
        "--work-path",
        work.to_str().unwrap(),
        "--leave-running",
        &bundle.id,
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot checkpoint container {}: CRIU does not work on this host: ",
            bundle.id
        )),
        "{err}"
    );
    assert!(
        err.contains(&reason),
        "CRIU's reason {reason:?} is missing: {err}"
    );
    assert!(err.contains("where `criu check` passes"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(!images.exists() && !work.exists(), "nothing is created");
    assert_eq!(bundle.status(), "running");

    // A restore is refused before the id is taken.
    let out = bundle.oci(&[
        "restore",
        "--image-path",
        images.to_str().unwrap(),
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--detach",
        "restored",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot restore container restored: CRIU does not work on this host")
            && err.contains(&reason),
        "{err}"
    );
    assert!(!bundle.state_root.join("restored").exists());
    bundle.force_delete();
    assert!(bundle.left_nothing_behind());
}

#[test]
fn oci_checkpoint_stops_a_counting_container_and_restore_brings_it_back() {
    require_container_host!();
    require_criu!();
    let bundle = TestBundle::new("ckpt", COUNTER);
    bundle.create_and_start();
    let count = bundle.rootfs().join("count");
    wait_for_count(&count, 5);
    let images = bundle.path().join("images");
    let work = bundle.path().join("work");
    let (images_arg, work_arg) = (images.to_str().unwrap(), work.to_str().unwrap());
    bundle.oci_ok(&[
        "checkpoint",
        "--image-path",
        images_arg,
        "--work-path",
        work_arg,
        &bundle.id,
    ]);
    // Without --leave-running the container is gone, as with runc, and counts no more.
    assert!(
        bundle.state().is_none(),
        "the checkpointed container is deleted"
    );
    let saved = consecutive_count(&count);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        consecutive_count(&count),
        saved,
        "nothing counts after the dump"
    );
    assert!(images.join("inventory.img").is_file());

    let pid_file = bundle.path().join("restored.pid");
    bundle.oci_ok(&[
        "restore",
        "--image-path",
        images_arg,
        "--work-path",
        work_arg,
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &bundle.id,
    ]);
    let state = bundle.state().expect("the restored container has a state");
    assert_eq!(state["status"], "running", "{state}");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(state["pid"], pid, "{state}");
    // The same process goes on: the count continues where the dump left it.
    let later = wait_for_count(&count, saved + 10);
    assert!(later > saved);
    bundle.oci_ok(&["kill", &bundle.id, "KILL"]);
    bundle.wait_for_status("stopped");
    bundle.oci_ok(&["delete", &bundle.id]);
    assert!(bundle.left_nothing_behind());
}

/// A busybox container instance `box` running the counter, in a new root, without a terminal
/// (a terminal's master is the monitor's, which CRIU's command line cannot hand back).
fn counting_instance() -> (Root, std::path::PathBuf) {
    let root = Root::new();
    let tree = root.dir.path().join("busybox");
    common::build_rootfs(&tree);
    root.ok(&[
        "create",
        "box",
        "--rootfs",
        tree.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        COUNTER,
    ]);
    root.ok(&["config", "set", "box", "container.tty=false"]);
    root.ok(&["start", "box"]);
    let count = root.instance_dir("box").join("rootfs/count");
    (root, count)
}

#[test]
fn a_running_container_snapshot_is_refused_with_crius_reason_and_changes_nothing() {
    require_container_host!();
    let Some(reason) = criu_failure() else { return };
    let (root, count) = counting_instance();
    wait_for_count(&count, 3);
    let err = root.fails(&["snapshot", "create", "box", "hot"]);
    assert!(
        err.contains("cannot checkpoint running container box: CRIU does not work on this host: "),
        "{err}"
    );
    assert!(
        err.contains(&reason),
        "CRIU's reason {reason:?} is missing: {err}"
    );
    assert!(
        err.contains("stop it first (`corral stop box`) for a filesystem-only snapshot"),
        "{err}"
    );
    assert!(common::snapshot_names(&root, "box").is_empty());
    let snapshots = root.instance_dir("box").join("snapshots");
    let made = std::fs::read_dir(&snapshots)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(made, 0, "nothing in {}", snapshots.display());
    assert!(!root.instance_dir("box").join("run/criu-dump").exists());
    assert_eq!(root.status("box"), "running");
    let before = consecutive_count(&count);
    wait_for_count(&count, before + 2);
    // The fix the sentence names works.
    root.ok(&["stop", "box"]);
    root.ok(&["snapshot", "create", "box", "cold"]);
    assert_eq!(common::snapshot_names(&root, "box"), ["cold"]);
}

#[test]
fn a_running_container_snapshot_keeps_it_running_and_restore_continues_its_processes() {
    require_container_host!();
    require_criu!();
    let (root, count) = counting_instance();
    wait_for_count(&count, 5);
    let out = root.ok(&["snapshot", "create", "box", "live"]);
    assert!(out.contains("live"), "{out}");
    let listed: serde_json::Value =
        serde_json::from_str(&root.ok(&["snapshot", "list", "box", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["stateful"], true, "{listed}");
    // Like incus's stateful snapshots, the container goes on running.
    assert_eq!(root.status("box"), "running");
    let at_snapshot = consecutive_count(&count);
    wait_for_count(&count, at_snapshot + 10);

    root.ok(&["stop", "box"]);
    let out = root.ok(&["snapshot", "restore", "box", "live"]);
    assert!(!out.is_empty());
    assert_eq!(root.status("box"), "running");
    // The root filesystem is the snapshot's and the counter's memory with it: the file goes on
    // from where the snapshot was taken, with no gap and no repeat.
    let restored = wait_for_count(&count, 3);
    assert!(restored >= 1);
    let later = wait_for_count(&count, restored + 10);
    assert!(later > restored);
    root.ok(&["kill", "box"]);
}

/// A stand-in for `criu` that passes `check`, logs every command line, writes an inventory on
/// `dump` (and ends the tree unless `--leave-running`, as CRIU does) and, on `restore`, starts a
/// process and writes its pid where `--pidfile` says. It proves what corral hands CRIU and what
/// it keeps of the result, on any host; the real CRIU runs in the tests above.
const FAKE_CRIU: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_CRIU_LOG"
command=$1
all="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --images-dir) images=$2 ;;
        --tree) tree=$2 ;;
        --pidfile) pidfile=$2 ;;
    esac
    shift
done
case "$command" in
    check) exit 0 ;;
    dump)
        touch "$images/inventory.img"
        case "$all" in *--leave-running*) ;; *) kill -9 "$tree" ;; esac
        ;;
    restore)
        setsid sleep 600 < /dev/null > /dev/null 2>&1 &
        echo $! > "$pidfile"
        ;;
esac
"#;

#[test]
fn oci_checkpoint_and_restore_hand_criu_runcs_options_and_keep_the_restored_container() {
    require_container_host!();
    let bundle = TestBundle::new("ckpt-wiring", COUNTER);
    bundle.create_and_start();
    let fake = tempfile::tempdir().unwrap();
    let criu = fake.path().join("criu");
    std::fs::write(&criu, FAKE_CRIU).unwrap();
    std::fs::set_permissions(&criu, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = fake.path().join("log");
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let oci = |args: &[&str]| {
        let mut command = std::process::Command::new(common::corral_bin());
        command
            .env("PATH", &path)
            .env("FAKE_CRIU_LOG", &log)
            .arg("oci")
            .arg("--root")
            .arg(&bundle.state_root)
            .args(args);
        let out = common::output_via_files(&mut command);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let init = bundle.state().unwrap()["pid"].as_i64().unwrap();
    let images = bundle.path().join("images");
    let work = bundle.path().join("work");
    let (images_arg, work_arg) = (images.to_str().unwrap(), work.to_str().unwrap());
    oci(&[
        "checkpoint",
        "--file-locks",
        "--image-path",
        images_arg,
        "--work-path",
        work_arg,
        &bundle.id,
    ]);
    let logged = std::fs::read_to_string(&log).unwrap();
    let dump = logged.lines().find(|l| l.starts_with("dump ")).unwrap();
    for part in [
        format!("--tree {init}"),
        format!("--images-dir {images_arg}"),
        format!("--work-dir {work_arg}"),
        format!(
            "--root {}",
            bundle.rootfs().canonicalize().unwrap().display()
        ),
        "--log-file dump.log".to_string(),
        "--file-locks".to_string(),
        "--manage-cgroups=soft".to_string(),
        "--freeze-cgroup /sys/fs/cgroup/".to_string(),
    ] {
        assert!(dump.contains(&part), "no {part:?} in: {dump}");
    }
    assert!(!dump.contains("--leave-running"), "{dump}");
    // The init's stdio are recorded for the restore (runc's descriptors.json).
    let descriptors: Vec<String> =
        serde_json::from_slice(&std::fs::read(images.join("descriptors.json")).unwrap()).unwrap();
    assert_eq!(descriptors.len(), 3, "{descriptors:?}");
    // Without --leave-running the container is gone, cgroup and all, as after runc's.
    assert!(bundle.state().is_none());
    assert!(bundle.left_nothing_behind());

    let pid_file = bundle.path().join("restored.pid");
    oci(&[
        "restore",
        "--image-path",
        images_arg,
        "--work-path",
        work_arg,
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &bundle.id,
    ]);
    let logged = std::fs::read_to_string(&log).unwrap();
    let restore = logged.lines().find(|l| l.starts_with("restore ")).unwrap();
    for part in [
        "--restore-detached",
        "--restore-sibling",
        "--log-file restore.log",
        "--cgroup-root /corral/",
        "--root ",
    ] {
        assert!(restore.contains(part), "no {part:?} in: {restore}");
    }
    // The restored process is a container of corral's: state, kill and delete manage it.
    let state = bundle.state().expect("the restored container has a state");
    assert_eq!(state["status"], "running", "{state}");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(state["pid"], pid, "{state}");
    assert!(
        !bundle
            .state_root
            .join(&bundle.id)
            .join("criu-root")
            .exists(),
        "the rootfs bound for CRIU is gone"
    );
    bundle.oci_ok(&["kill", &bundle.id, "KILL"]);
    bundle.wait_for_status("stopped");
    bundle.oci_ok(&["delete", &bundle.id]);
    assert!(bundle.left_nothing_behind());
}

#[test]
fn a_running_container_snapshot_hands_criu_a_leave_running_dump_of_the_paused_container() {
    require_container_host!();
    let (root, count) = counting_instance();
    wait_for_count(&count, 3);
    let fake = tempfile::tempdir().unwrap();
    let criu = fake.path().join("criu");
    std::fs::write(&criu, FAKE_CRIU).unwrap();
    std::fs::set_permissions(&criu, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = fake.path().join("log");
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = root.command(&["snapshot", "create", "box", "live"]);
    command.env("PATH", &path).env("FAKE_CRIU_LOG", &log);
    let out = common::output_via_files(&mut command);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("created snapshot live of box with its processes (it was paused for "),
        "{stdout}"
    );
    let dump = std::fs::read_to_string(&log).unwrap();
    let dump = dump.lines().find(|l| l.starts_with("dump ")).unwrap();
    for part in [
        "--leave-running",
        "--tcp-established",
        "--file-locks",
        "--freeze-cgroup /sys/fs/cgroup/freezer/corral-instances/box.",
        "/run/criu-dump",
    ] {
        assert!(dump.contains(part), "no {part:?} in: {dump}");
    }
    let listed: serde_json::Value =
        serde_json::from_str(&root.ok(&["snapshot", "list", "box", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["stateful"], true, "{listed}");
    // The images and the root filesystem copy are in the snapshot, taken while it was paused.
    let snapshot = std::fs::read_dir(root.instance_dir("box").join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    assert!(snapshot.join("criu/inventory.img").is_file());
    assert!(snapshot.join("criu/descriptors.json").is_file());
    let copied = consecutive_count(&snapshot.join("rootfs/count"));
    assert!(copied >= 3);
    // It was resumed and goes on counting.
    assert_eq!(root.status("box"), "running");
    wait_for_count(&count, copied + 5);
    root.ok(&["stop", "box"]);

    // With the host's own CRIU, where `criu check` fails, the stateful snapshot is not restored,
    // and its root filesystem is not touched.
    if corral_testkit::criu_check().is_ok() {
        return;
    }
    std::fs::write(&count, "changed since\n").unwrap();
    let err = root.fails(&["snapshot", "restore", "box", "live"]);
    assert!(
        err.contains(
            "cannot restore snapshot live of container box: it holds running processes, and \
             CRIU does not work on this host: "
        ) && err.contains("restore it where `criu check` passes"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "changed since\n");
    assert_eq!(root.status("box"), "stopped");
}
