//! The guest agent in a busybox system container: `corral guest install-agent` puts the corral
//! binary in the root filesystem (with the shared libraries it loads copied to their host paths)
//! and an inittab line, busybox's init starts `corral guest agent`, which listens on
//! `/run/corral-agent/agent.sock` (the directory corral bind-mounts out of every system
//! container), and the host's `corral agent ping|sysprep`, `file push/pull` and `info` go
//! through it.
//! Needs root and busybox-static.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{wait_for, CorralRoot as Root};

fn setup() -> Option<Root> {
    if !corral_testkit::is_root() {
        corral_testkit::skip("needs root for namespaces and cgroups");
        return None;
    }
    if !common::have_busybox() {
        return None;
    }
    Some(Root::new())
}

#[test]
fn a_system_containers_agent_pushes_pulls_and_reports_the_guest() {
    let Some(root) = setup() else { return };
    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    // busybox's init, told by its inittab to respawn what install-agent adds.
    std::fs::write(rootfs.join("etc/inittab"), "::sysinit:/bin/true\n").unwrap();
    let out = root.ok(&["guest", "install-agent", "--root", rootfs.to_str().unwrap()]);
    assert!(out.contains("init respawns it"), "{out}");
    common::install_corral_libraries(&rootfs);
    root.ok(&[
        "create",
        "agentbox",
        "--init",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "/bin/init",
    ]);
    root.ok(&["start", "agentbox"]);
    wait_for("the agent", Duration::from_secs(30), || {
        root.run(&["agent", "ping", "agentbox"]).status.success()
    });

    // 10 MiB in, checked inside by the container engine's exec (not the agent), and out again.
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let local = root.dir.path().join("data.bin");
    std::fs::write(&local, &data).unwrap();
    let pushed = root.ok(&[
        "file",
        "push",
        "agentbox",
        local.to_str().unwrap(),
        "/tmp/data.bin",
        "--mode",
        "640",
    ]);
    assert!(pushed.contains("10485760 bytes"), "{pushed}");
    let inside = root.ok(&[
        "exec",
        "agentbox",
        "--",
        "sh",
        "-c",
        "sha256sum /tmp/data.bin; stat -c %a /tmp/data.bin",
    ]);
    let expected = common::sha256_hex(&data);
    assert!(inside.contains(&expected), "{inside} vs {expected}");
    assert!(inside.lines().any(|line| line == "640"), "{inside}");

    let pulled = root.dir.path().join("pulled.bin");
    root.ok(&[
        "file",
        "pull",
        "agentbox",
        "/tmp/data.bin",
        pulled.to_str().unwrap(),
    ]);
    assert_eq!(
        common::sha256_hex(&std::fs::read(&pulled).unwrap()),
        expected
    );
    let mode = std::fs::metadata(&pulled).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    // Into a directory: the remote file's name.
    let into = root.dir.path().join("into");
    std::fs::create_dir(&into).unwrap();
    root.ok(&[
        "file",
        "pull",
        "agentbox",
        "/etc/passwd",
        into.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(into.join("passwd")).unwrap(),
        std::fs::read(rootfs.join("etc/passwd")).unwrap()
    );

    let err = root.fails(&["file", "pull", "agentbox", "/no/such/file", "x"]);
    assert!(
        err.contains("cannot use the guest agent of instance agentbox")
            && err.contains("/no/such/file"),
        "{err}"
    );

    // info shows what the agent reports: the container's own hostname and the host's kernel.
    let info = root.info("agentbox");
    let agent = &info["agent"];
    assert_eq!(agent["status"], "answering", "{info}");
    assert_eq!(agent["hostname"], "agentbox", "{agent}");
    let kernel = nix::sys::utsname::uname().unwrap();
    assert_eq!(
        agent["kernel"].as_str(),
        kernel.release().to_str(),
        "{agent}"
    );
    let text = root.ok(&["info", "agentbox"]);
    assert!(text.contains("Agent:        answering"), "{text}");

    // sysprep from inside: a dry run changes nothing, a real run gives a new machine-id.
    let old_id = "0123456789abcdef0123456789abcdef\n";
    let id_file = root.dir.path().join("machine-id");
    std::fs::write(&id_file, old_id).unwrap();
    let id_file = id_file.to_str().unwrap();
    root.ok(&["file", "push", "agentbox", id_file, "/etc/machine-id"]);
    let machine_id = || root.ok(&["exec", "agentbox", "--", "cat", "/etc/machine-id"]);
    let planned = root.ok(&[
        "agent",
        "sysprep",
        "agentbox",
        "--operations",
        "machine-id",
        "--dry-run",
    ]);
    assert!(
        planned.contains("machine-id: would ") && planned.contains("/etc/machine-id"),
        "{planned}"
    );
    assert_eq!(machine_id(), old_id);
    root.ok(&["agent", "sysprep", "agentbox", "--operations", "machine-id"]);
    let new_id = machine_id();
    assert!(new_id != old_id && new_id.trim().len() == 32, "{new_id:?}");
    // A container's filesystems are the host's: no freeze.
    let err = root.fails(&["agent", "fsfreeze", "agentbox"]);
    assert!(err.contains("fsfreeze is for VMs"), "{err}");

    // With the agent frozen, info says so instead of failing, within its 2 s.
    // (SIGSTOP: init would respawn a killed one.)
    root.ok(&[
        "exec",
        "agentbox",
        "--",
        "sh",
        "-c",
        "kill -STOP $(pidof corral)",
    ]);
    let text = root.ok(&["info", "agentbox"]);
    assert!(
        text.contains("Agent:        not answering") && text.contains("did not answer within 2 s"),
        "{text}"
    );
    root.ok(&["kill", "agentbox"]);
}

/// The static build (`scripts/build-static.sh`; `scripts/test.sh` names it in
/// `CORRAL_STATIC_CORRAL`) serves from a root filesystem with no shared library at all.
#[test]
fn a_static_agent_serves_a_root_filesystem_without_shared_libraries() {
    let Some(root) = setup() else { return };
    let Some(static_corral) = std::env::var_os("CORRAL_STATIC_CORRAL") else {
        corral_testkit::skip(
            "CORRAL_STATIC_CORRAL is not set: build the static corral with \
             scripts/build-static.sh and name it there (scripts/test.sh does)",
        );
        return;
    };
    corral_testkit::require_program!("file");
    let kind = std::process::Command::new("file")
        .arg("-L")
        .arg(&static_corral)
        .output()
        .unwrap();
    let kind = String::from_utf8_lossy(&kind.stdout);
    assert!(
        kind.contains("statically linked") || kind.contains("static-pie linked"),
        "{kind}"
    );

    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    std::fs::write(rootfs.join("etc/inittab"), "::sysinit:/bin/true\n").unwrap();
    // The static corral installs itself: `install-agent` copies the running binary.
    let install = std::process::Command::new(&static_corral)
        .args(["guest", "install-agent", "--root"])
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert_eq!(
        std::fs::read(rootfs.join("usr/local/bin/corral")).unwrap(),
        std::fs::read(&static_corral).unwrap()
    );
    let mut shared = Vec::new();
    corral_host::tree::walk(
        &rootfs,
        |path, _| -> Result<(), corral_host::tree::TreeError> {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.contains(".so") || name.starts_with("ld-linux") {
                shared.push(path.to_path_buf());
            }
            Ok(())
        },
    )
    .unwrap();
    assert!(
        shared.is_empty(),
        "the root has shared libraries: {shared:?}"
    );

    root.ok(&[
        "create",
        "staticbox",
        "--init",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "/bin/init",
    ]);
    root.ok(&["start", "staticbox"]);
    wait_for("the static agent", Duration::from_secs(30), || {
        root.run(&["agent", "ping", "staticbox"]).status.success()
    });
    root.ok(&["exec", "staticbox", "--", "true"]);
    // exec through the agent itself, with its status and streams.
    let out = root.run(&[
        "exec",
        "--agent",
        "staticbox",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let tty = root.ok(&["exec", "--agent", "--tty", "staticbox", "--", "tty"]);
    assert!(tty.starts_with("/dev/pts/"), "{tty:?}");
    // Through the agent itself: a file in, its facts out.
    let local = root.dir.path().join("hello");
    std::fs::write(&local, "hello from the host\n").unwrap();
    root.ok(&[
        "file",
        "push",
        "staticbox",
        local.to_str().unwrap(),
        "/tmp/hello",
    ]);
    let inside = root.ok(&["exec", "staticbox", "--", "cat", "/tmp/hello"]);
    assert_eq!(inside, "hello from the host\n");
    assert_eq!(root.info("staticbox")["agent"]["hostname"], "staticbox");
    root.ok(&["kill", "staticbox"]);
}

#[test]
fn an_application_container_has_no_agent_and_says_so() {
    let Some(root) = setup() else { return };
    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    root.ok(&[
        "create",
        "app",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "sleep",
        "1000",
    ]);
    let err = root.fails(&["file", "pull", "app", "/etc/passwd", "x"]);
    assert!(
        err.contains("application container, which has no guest agent"),
        "{err}"
    );
}
