//! `corral oci create` killed at any instant (a crash, an OOM kill, a power cut of the caller)
//! must leave nothing that blocks the id: `delete --force` cleans up and `create` works again,
//! with no process or cgroup left behind. Needs root and Debian's busybox-static.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{corral_bin, TestBundle};
use corral_testkit::require_root;

/// Set in the environment of the runtimes this test kills, so their clones (the containers'
/// inits, which never exec) can be found in /proc.
const TAG: &str = "CORRAL_TEST_KILLED_CREATE";

/// Pids of live processes whose environment carries `TAG=value`.
fn tagged_processes(value: &str) -> Vec<i32> {
    let needle = format!("{TAG}={value}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !zombie && environ.split(|b| *b == 0).any(|e| e == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_runtime_killed_during_create_leaves_nothing_that_blocks_the_id() {
    require_root!();
    if !common::have_busybox() {
        return;
    }
    let bundle = TestBundle::new("killed", "true");
    let bundle_arg = bundle.path().to_string_lossy().into_owned();
    let create = [
        "create",
        "--bundle",
        bundle_arg.as_str(),
        bundle.id.as_str(),
    ];
    let delete = ["delete", "--force", bundle.id.as_str()];
    // How long a whole create takes here, to spread the kills over it (not an assertion).
    let started = Instant::now();
    bundle.oci_ok(&create);
    let whole = started.elapsed();
    bundle.oci_ok(&delete);

    let rounds = 24u32;
    let mut left = std::collections::BTreeMap::new();
    for round in 0..rounds {
        let delay = whole * round / (rounds - 4);
        let mut runtime = Command::new(corral_bin())
            .env(TAG, &bundle.id)
            .arg("oci")
            .arg("--root")
            .arg(&bundle.state_root)
            .args(create)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // The runtime is our child: kill it by its pid (it may have finished already).
        let _ = runtime.kill();
        let _ = runtime.wait();
        *left.entry(leftover(&bundle)).or_insert(0) += 1;

        if round % 2 == 1 {
            // Straight to create, as a restarting supervisor does: a half-made container must
            // not block it; a complete one is reported as existing.
            let out = bundle.oci(&create);
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("already exists"), "round {round}: {err}");
                assert_eq!(bundle.status(), "created", "round {round}: {err}");
            }
        }
        bundle.oci_ok(&delete);
        bundle.oci_ok(&create);
        bundle.oci_ok(&delete);
        assert!(bundle.left_nothing_behind(), "round {round}");
        common::wait_for(
            &format!("round {round}: the killed runtime's processes to end"),
            Duration::from_secs(10),
            || tagged_processes(&bundle.id).is_empty(),
        );
    }
    eprintln!("what the killed creates left: {left:?}");
}

/// What a killed create left in its state directory.
fn leftover(bundle: &TestBundle) -> &'static str {
    let dir = bundle.state_root.join(&bundle.id);
    match std::fs::read_to_string(dir.join("state.json")) {
        Ok(text) if text.contains("\"creator\"") => "an interrupted record",
        Ok(_) => "a complete container",
        Err(_) if dir.exists() => "a directory without a record",
        Err(_) => "nothing",
    }
}
