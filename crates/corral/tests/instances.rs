//! End-to-end tests of the instance layer with containers: the real `corral` binary, a temporary
//! corral root, busybox root filesystems. Needs root (namespaces, cgroups) and busybox-static.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{wait_for, CorralRoot as Root};

/// The busybox root filesystem built beside the corral root.
fn rootfs(root: &Root) -> PathBuf {
    root.dir.path().join("busybox")
}

/// Creates a container running `script` with `extra` flags.
fn container(root: &Root, name: &str, script: &str, extra: &[&str]) {
    let rootfs = rootfs(root);
    let mut args = vec!["create", name, "--rootfs", rootfs.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    root.ok(&args);
}

fn setup() -> Option<Root> {
    if !corral_testkit::is_root() {
        corral_testkit::skip("needs root for namespaces and cgroups");
        return None;
    }
    if !common::have_busybox() {
        return None;
    }
    let root = Root::new();
    common::build_rootfs(&rootfs(&root));
    Some(root)
}

#[test]
fn container_lifecycle_with_logs_exec_pause_and_stop() {
    let Some(root) = setup() else { return };
    let counter =
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo tick $i; sleep 0.1; done";
    container(
        &root,
        "box",
        counter,
        &["--memory", "64M", "--pids-limit", "50"],
    );
    assert!(
        root.ok(&["list"]).lines().count() == 1,
        "list shows running instances only"
    );
    assert!(root
        .ok(&["list", "--all"])
        .contains("box   container  stopped"));
    assert_eq!(root.status("box"), "stopped");

    root.ok(&["start", "box"]);
    assert_eq!(root.status("box"), "running");
    let listed: Value = serde_json::from_str(&root.ok(&["list", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["name"], "box");
    assert_eq!(listed[0]["memory_bytes"], 64 << 20);
    wait_for("console output", Duration::from_secs(10), || {
        root.ok(&["logs", "box"]).contains("tick 3")
    });
    assert_eq!(
        root.ok(&["exec", "box", "--", "/bin/hostname"]).trim(),
        "box"
    );
    let out = root.run(&["exec", "box", "--", "/bin/sh", "-c", "exit 7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exec passes the exit code through"
    );

    let count_file = root.instance_dir("box").join("rootfs/tmp/count");
    let read_count = || -> u64 {
        std::fs::read_to_string(&count_file)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    root.ok(&["pause", "box"]);
    assert_eq!(root.status("box"), "paused");
    let frozen = read_count();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        read_count(),
        frozen,
        "the counter must not move while paused"
    );
    let err = root.fails(&["exec", "box", "--", "/bin/true"]);
    assert!(err.contains("is paused"), "{err}");
    root.ok(&["resume", "box"]);
    wait_for("the counter to move again", Duration::from_secs(5), || {
        read_count() > frozen + 2
    });
    assert!(root.fails(&["resume", "box"]).contains("is not paused"));

    let stopped = root.ok(&["stop", "box", "--timeout", "1"]);
    assert!(stopped.contains("stopped box"), "{stopped}");
    let info = root.info("box");
    assert_eq!(info["state"]["status"], "stopped");
    assert_eq!(info["state"]["last_exit"]["reason"], "stopped");
    assert!(root.fails(&["stop", "box"]).contains("is not running"));
}

#[test]
fn several_containers_start_and_delete_at_once_each_outcome_reported_under_corral_monitor() {
    let Some(root) = setup() else { return };
    for name in ["one", "two", "three"] {
        container(&root, name, "sleep 1000", &[]);
    }
    root.ok(&["start", "two"]);
    let out = root.run(&["start", "one", "two", "ghost", "three"]);
    assert_eq!(out.status.code(), Some(1), "one failure fails the command");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["started one", "started three"],
        "the others start, reported in the order given"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corral: cannot start two\n  caused by: instance two is already running"),
        "{stderr}"
    );
    assert!(
        stderr.contains("corral: cannot start ghost\n  caused by: instance ghost does not exist"),
        "{stderr}"
    );
    for name in ["one", "two", "three"] {
        assert_eq!(root.status(name), "running", "{name}");
        // The monitor is the monitor-only executable beside corral's (run from its sealed copy,
        // which keeps its name), not corral itself.
        let pid = root.info(name)["state"]["pid"].as_u64().unwrap();
        let monitor = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            monitor.file_name().and_then(|n| n.to_str()),
            Some("corral-monitor"),
            "{}",
            monitor.display()
        );
    }

    // Stopped and killed several at once, the same way.
    let out = root.run(&["stop", "--timeout", "1", "one", "ghost"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("stopped one ("), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corral: cannot stop ghost\n  caused by: instance ghost does not exist"),
        "{stderr}"
    );
    let killed = root.ok(&["kill", "two", "two"]);
    assert!(killed.starts_with("killed two ("), "{killed}");
    assert_eq!(
        killed.lines().count(),
        1,
        "a name given twice is killed once: {killed}"
    );
    assert_eq!(root.status("one"), "stopped");
    assert_eq!(root.status("two"), "stopped");
    assert_eq!(root.status("three"), "running");

    // And deleted at once, stopped or (with --force) running, the same way.
    let out = root.run(&["delete", "--force", "one", "ghost", "two", "three", "one"]);
    assert_eq!(out.status.code(), Some(1), "one failure fails the command");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["deleted one", "deleted two", "deleted three"],
        "each name once, in the order given"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corral: cannot delete ghost\n  caused by: instance ghost does not exist"),
        "{stderr}"
    );
    assert_eq!(root.ok(&["list", "--all", "--output", "json"]).trim(), "[]");
}

#[test]
fn console_attach_and_detach() {
    let Some(root) = setup() else { return };
    let rootfs = rootfs(&root);
    root.ok(&[
        "create",
        "term",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "/bin/sh",
    ]);
    root.ok(&["start", "term"]);
    let mut console = root
        .command(&["console", "term"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = console.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        while let Ok(n @ 1..) = stdout.read(&mut buffer) {
            let _ = tx.send(buffer[..n].to_vec());
        }
    });
    let mut stdin = console.stdin.take().unwrap();
    stdin.write_all(b"echo marker-$((6*7))\r").unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("marker-42") {
        assert!(
            Instant::now() < deadline,
            "no answer on the console: {:?}",
            String::from_utf8_lossy(&seen)
        );
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.extend(chunk);
        }
    }
    // Ctrl-] detaches, leaving the instance running.
    stdin.write_all(&[0x1d]).unwrap();
    let status = wait_child(&mut console, Duration::from_secs(5));
    assert!(status.success());
    assert_eq!(root.status("term"), "running");
    assert!(
        root.ok(&["logs", "term"]).contains("marker-42"),
        "the console is logged"
    );
    root.ok(&["kill", "term"]);
}

fn wait_child(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn restart_policy_and_directory_volume() {
    let Some(root) = setup() else { return };
    root.ok(&["volume", "create", "data", "--format", "dir"]);
    // Fails twice, then succeeds: on_crash=restart brings it back until it powers off.
    let script = "echo run >> /data/runs; [ $(wc -l < /data/runs) -ge 3 ] && exit 0; exit 3";
    container(
        &root,
        "flaky",
        script,
        &[
            "--disk",
            "vol=data,target=/data",
            "--on-crash",
            "restart",
            "--on-poweroff",
            "destroy",
        ],
    );
    root.ok(&["start", "flaky"]);
    wait_for("the container to finish", Duration::from_secs(20), || {
        root.status("flaky") == "stopped"
    });
    let info = root.info("flaky");
    assert_eq!(info["state"]["last_exit"]["reason"], "exited");
    assert_eq!(info["state"]["last_exit"]["code"], 0);
    let runs = root.path().join("storage/default/data/runs");
    assert_eq!(std::fs::read_to_string(runs).unwrap().lines().count(), 3);
    let err = root.fails(&["volume", "delete", "data"]);
    assert!(err.contains("in use by instance flaky"), "{err}");
}

#[test]
fn a_crash_looping_container_ends_crashed_at_its_restart_limit() {
    let Some(root) = setup() else { return };
    container(
        &root,
        "crashloop",
        "echo run; exit 3",
        &["--on-crash", "restart"],
    );
    root.ok(&["start", "crashloop"]);
    wait_for("the restart limit", Duration::from_secs(60), || {
        root.status("crashloop") == "crashed"
    });
    let exit = &root.info("crashloop")["state"]["last_exit"];
    assert_eq!(exit["reason"], "restart-limit", "{exit}");
    assert_eq!(exit["code"], 3);
    let runs = root.ok(&["logs", "crashloop"]).matches("run").count();
    assert_eq!(runs, 6, "the first run and 5 restarts");
}

#[test]
fn system_container_reboots_in_place_and_powers_off() {
    let Some(root) = setup() else { return };
    let rootfs = rootfs(&root);
    std::os::unix::fs::symlink("../bin/busybox", rootfs.join("bin/init")).ok();
    std::fs::create_dir_all(rootfs.join("sbin")).unwrap();
    std::os::unix::fs::symlink("../bin/busybox", rootfs.join("sbin/init")).unwrap();
    root.ok(&[
        "create",
        "sys",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--init",
    ]);
    root.ok(&["start", "sys"]);
    let supervisor = root.info("sys")["state"]["pid"].clone();
    root.ok(&["exec", "sys", "--", "/bin/reboot"]);
    wait_for("the reboot", Duration::from_secs(15), || {
        root.info("sys")["live"]["restarts"].as_u64() == Some(1)
    });
    assert_eq!(root.status("sys"), "running");
    assert_eq!(
        root.info("sys")["state"]["pid"],
        supervisor,
        "rebooted under the same supervisor"
    );
    root.ok(&["exec", "sys", "--", "/bin/poweroff"]);
    wait_for("the power-off", Duration::from_secs(15), || {
        root.status("sys") == "stopped"
    });
    assert_eq!(root.info("sys")["state"]["last_exit"]["reason"], "poweroff");
}

#[test]
fn a_container_instance_keeps_its_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let Some(root) = setup() else { return };
    root.ok(&["volume", "create", "shared", "--format", "dir"]);
    container(
        &root,
        "quiet",
        "sleep 1000",
        &["--disk", "vol=shared,target=/shared"],
    );
    root.ok(&["start", "quiet"]);
    let dir = root.instance_dir("quiet");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for private_dir in [
        root.path(),
        root.path().join("instances"),
        dir.clone(),
        dir.join("run"),
        dir.join("run/bundle"),
        root.path().join("storage"),
        root.path().join("storage/default"),
    ] {
        assert_eq!(mode(&private_dir), 0o700, "{}", private_dir.display());
    }
    for private_file in [
        "instance.toml",
        "state.json",
        "lock",
        "run/supervisor.log",
        "run/console.log",
        "run/control.sock",
        "run/console.sock",
        "run/bundle/config.json",
    ] {
        assert_eq!(mode(&dir.join(private_file)), 0o600, "{private_file}");
    }
    root.ok(&["kill", "quiet"]);
    assert_eq!(mode(&dir.join("run/exit.json")), 0o600);
}

#[test]
fn delete_refuses_a_running_instance() {
    let Some(root) = setup() else { return };
    container(&root, "busy", "sleep 1000", &[]);
    root.ok(&["start", "busy"]);
    let err = root.fails(&["delete", "busy"]);
    assert!(
        err.contains("instance busy is running; stop it first, or delete it with --force"),
        "{err}"
    );
    assert!(root.instance_dir("busy").exists());
    root.ok(&["delete", "busy", "--force"]);
    assert!(!root.instance_dir("busy").exists());
    assert!(!root.ok(&["list", "--all"]).contains("busy"));
}

#[test]
fn killed_supervisor_shows_crashed_and_leaves_nothing_running() {
    let Some(root) = setup() else { return };
    container(&root, "victim", "sleep 4242", &[]);
    root.ok(&["start", "victim"]);
    let pid = root.info("victim")["state"]["pid"].as_i64().unwrap();
    // SAFETY: kill(2) of the supervisor this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    wait_for("the supervisor to die", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let info = root.info("victim");
    assert_eq!(info["state"]["status"], "crashed");
    assert_eq!(info["state"]["last_exit"]["reason"], "supervisor-lost");
    let leftovers = Command::new("pgrep")
        .args(["-f", "sleep 4242"])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "the container's processes must not outlive it"
    );
    root.ok(&["start", "victim"]);
    assert_eq!(
        root.status("victim"),
        "running",
        "a crashed instance starts again"
    );
}

#[test]
fn a_supervisor_killed_by_stop_leaves_nothing_running() {
    let Some(root) = setup() else { return };
    container(&root, "frozen", "sleep 4243", &[]);
    root.ok(&["start", "frozen"]);
    let monitor = root.info("frozen")["state"]["pid"].as_i64().unwrap() as i32;
    let engine_state = root
        .instance_dir("frozen")
        .join("run/oci/frozen/state.json");
    let engine: Value = serde_json::from_slice(&std::fs::read(engine_state).unwrap()).unwrap();
    let init = engine["pid"].as_i64().unwrap();
    // A supervisor that answers nothing: kill ends with SIGKILL.
    // SAFETY: kill(2) of the supervisor this test started.
    assert_eq!(unsafe { libc::kill(monitor, libc::SIGSTOP) }, 0);
    root.ok(&["kill", "frozen"]);
    assert_ne!(root.status("frozen"), "running");
    wait_for(
        "the container's init to be gone",
        Duration::from_secs(10),
        || !Path::new(&format!("/proc/{init}")).exists(),
    );
}

#[test]
fn killed_create_leaves_no_half_instance() {
    let Some(root) = setup() else { return };
    // A `cp` that never finishes holds `create` in the middle of copying the root filesystem.
    let bin = root.dir.path().join("slow-bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("cp"), "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(
        bin.join("cp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let rootfs = rootfs(&root);
    let mut create = root.command(&["create", "half", "--rootfs", rootfs.to_str().unwrap()]);
    // SAFETY: setpgid in the child before exec, so the test can kill the CLI and its `cp` together.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut create, || {
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let mut child = create
        .env("PATH", path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let instances = root.path().join("instances");
    wait_for("create to start copying", Duration::from_secs(10), || {
        std::fs::read_dir(&instances)
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".creating-half")
                })
            })
            .unwrap_or(false)
    });
    // SAFETY: kill(2) of the process group the test created.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    assert!(
        !root.ok(&["list", "--all"]).contains("half"),
        "no half instance is listed"
    );
    assert!(root
        .fails(&["info", "half"])
        .contains("instance half does not exist"));
    // The next create of the same name works, and sweeps the litter of the dead one.
    root.ok(&["create", "half", "--rootfs", rootfs.to_str().unwrap()]);
    let litter = std::fs::read_dir(&instances)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(litter, 0);
}

#[test]
fn racing_commands_wait_or_fail_clearly() {
    let Some(root) = setup() else { return };
    // PID 1 of a pid namespace ignores SIGTERM: the stop holds the lock for its whole timeout.
    container(&root, "race", "sleep 1000", &[]);
    root.ok(&["start", "race"]);
    let mut stop = root
        .command(&["stop", "race", "--timeout", "3"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the stop to take the lock", Duration::from_secs(5), || {
        root.status("race") == "stopping"
    });
    let impatient = root
        .command(&["pause", "race"])
        .env("CORRAL_LOCK_TIMEOUT", "0.5")
        .output()
        .unwrap();
    assert_eq!(impatient.status.code(), Some(1));
    let err = String::from_utf8_lossy(&impatient.stderr);
    assert!(err.contains("instance race is busy: `"), "{err}");
    assert!(
        err.contains(&format!("(pid {})", stop.id())),
        "names the holder: {err}"
    );
    // A patient command waits for the stop, then sees its result.
    let patient = root.run(&["start", "race"]);
    assert!(
        patient.status.success(),
        "{}",
        String::from_utf8_lossy(&patient.stderr)
    );
    assert!(stop.wait().unwrap().success());
    assert_eq!(root.status("race"), "running");
}

#[test]
fn bad_input_gets_one_clear_sentence() {
    let Some(root) = setup() else { return };
    let rootfs = rootfs(&root);
    let rootfs = rootfs.to_str().unwrap();
    assert_eq!(
        root.fails(&["start", "nope"]).trim(),
        "corral: instance nope does not exist; `corral list --all` shows the defined instances"
    );
    root.ok(&["create", "dup", "--rootfs", rootfs]);
    assert!(root
        .fails(&["create", "dup", "--rootfs", rootfs])
        .contains("instance dup already exists"));
    let err = root.fails(&["create", "x", "--rootfs", rootfs, "--memory", "12 parsecs"]);
    assert!(err.contains("12 parsecs"), "{err}");
    let err = root.fails(&["create", "vm1", "--kernel", "/nonexistent/vmlinux"]);
    assert!(
        err.contains("kernel /nonexistent/vmlinux does not exist"),
        "{err}"
    );
    assert!(
        !root.instance_dir("vm1").exists(),
        "a refused create leaves nothing"
    );
    let file = root.dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"t\"\ntype = \"container\"\nmemory = [oops\n",
    )
    .unwrap();
    let err = root.fails(&["define", file.to_str().unwrap()]);
    assert!(
        err.contains("invalid instance definition") && err.contains("line 3"),
        "{err}"
    );
    std::fs::write(&file, "name = \"t\"\ntype = \"container\"\nmemory = \"12 parsecs\"\n[container]\nrootfs = \"/\"\n").unwrap();
    let err = root.fails(&["define", file.to_str().unwrap()]);
    assert!(
        err.contains("field `memory`") && err.contains("12 parsecs"),
        "{err}"
    );
    let err = root.fails(&["create", "bad/name", "--rootfs", rootfs]);
    assert!(err.contains("invalid instance name"), "{err}");
}

#[test]
fn config_set_and_show() {
    let Some(root) = setup() else { return };
    container(&root, "cfg", "true", &[]);
    root.ok(&[
        "config",
        "set",
        "cfg",
        "memory=1G",
        "limits.pids=64",
        "on_crash=restart",
    ]);
    let shown = root.ok(&["config", "show", "cfg"]);
    assert!(shown.contains("memory = \"1G\""), "{shown}");
    assert!(shown.contains("pids = 64"), "{shown}");
    let err = root.fails(&["config", "set", "cfg", "memory=lots"]);
    assert!(err.contains("field `memory`"), "{err}");
    assert!(
        root.ok(&["config", "show", "cfg"])
            .contains("memory = \"1G\""),
        "unchanged by a bad set"
    );
    let defined = root.instance_dir("cfg").join("instance.toml");
    let text = std::fs::read_to_string(&defined).unwrap();
    assert!(text.contains("on_crash = \"restart\""));
}

/// The number of the last `line N` in `text`.
fn last_line_number(text: &str) -> u64 {
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("line ")?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn logs_follow_streams_new_console_lines_until_interrupted() {
    let Some(root) = setup() else { return };
    let counter = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done";
    container(&root, "ticker", counter, &[]);
    root.ok(&["start", "ticker"]);
    wait_for("the first lines", Duration::from_secs(10), || {
        last_line_number(&root.ok(&["logs", "ticker"])) >= 2
    });
    let mut follow = root
        .command(&["logs", "--follow", "ticker"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let before = last_line_number(&root.ok(&["logs", "ticker"]));
    let (sender, lines) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in corral_testkit::whole_lines(stdout) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    // Lines printed after `logs --follow` began arrive while it runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut newest = 0;
    while newest < before + 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no new line past {newest} (it had {before})"));
        newest = newest.max(last_line_number(&line));
    }
    // It runs until interrupted, like `podman logs -f`.
    assert!(follow.try_wait().unwrap().is_none(), "logs --follow ended");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follow.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = follow.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert_eq!(root.status("ticker"), "running");
}

#[test]
fn autostart_starts_only_marked_instances() {
    let Some(root) = setup() else { return };
    container(&root, "auto", "sleep 1000", &["--autostart"]);
    container(&root, "manual", "sleep 1000", &[]);
    assert!(root.ok(&["autostart"]).contains("started auto"));
    assert_eq!(root.status("auto"), "running");
    assert_eq!(root.status("manual"), "stopped");
    assert!(
        !root.ok(&["autostart"]).contains("started"),
        "a running instance is left alone"
    );
}

#[test]
fn images_bring_no_device_nodes_and_the_rootfs_is_nodev() {
    let Some(root) = setup() else { return };
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::MetadataExt;
    // An image tarball shipping /disk = the block device holding the host's root.
    let rootfs = rootfs(&root);
    let root_dev = std::fs::metadata("/").unwrap().dev();
    mknod(
        &rootfs.join("disk"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        root_dev,
    )
    .unwrap();
    let image = root.dir.path().join("image.tar");
    let tar = Command::new("tar")
        .arg("-cf")
        .arg(&image)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let create = root.run(&[
        "create",
        "img",
        "--rootfs",
        image.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "sleep 1000",
    ]);
    assert!(
        create.status.success(),
        "{}",
        String::from_utf8_lossy(&create.stderr)
    );
    assert!(
        String::from_utf8_lossy(&create.stderr)
            .contains("removed 1 device node from the root filesystem: /disk"),
        "{}",
        String::from_utf8_lossy(&create.stderr)
    );
    let instance_rootfs = root.instance_dir("img").join("rootfs");
    assert!(instance_rootfs.join("bin/busybox").exists());
    assert!(
        !instance_rootfs.join("disk").exists(),
        "the node was not unpacked"
    );
    // A node made by hand (a host block device root may open here) opens nothing inside.
    let by_hand = instance_rootfs.join("disk2");
    mknod(
        &by_hand,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(7, 0),
    )
    .unwrap();
    std::fs::File::open(&by_hand).expect("outside the container the node opens");
    root.ok(&["start", "img"]);
    let out = root.ok(&[
        "exec",
        "img",
        "--",
        "/bin/sh",
        "-c",
        "head -c 1 /disk2 >/dev/null 2>&1 && echo disk-opens; grep ' / ' /proc/self/mounts; echo x > /dev/null && echo null-writable",
    ]);
    assert!(!out.contains("disk-opens"), "{out}");
    assert!(out.contains("nodev"), "the root is mounted nodev: {out}");
    assert!(out.contains("null-writable"), "/dev still works: {out}");
    root.ok(&["delete", "img", "--force"]);
}

/// A static program that calls kcmp(2), which podman's profile refuses (EPERM) to a container
/// without CAP_SYS_PTRACE, and which works unconfined. busybox has no applet for a call the
/// profile forbids that the default capabilities would otherwise allow.
fn build_kcmp_probe(dir: &Path) -> bool {
    if Command::new("cc").arg("--version").output().is_err() {
        corral_testkit::skip("needs cc (build-essential) for the seccomp probe");
        return false;
    }
    let source = dir.join("kcmp-probe.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <errno.h>\n#include <string.h>\n#include <unistd.h>\n\
         #include <sys/syscall.h>\n\
         int main(void) { pid_t p = getpid();\n\
           if (syscall(SYS_kcmp, p, p, 0, 0, 0) < 0) { printf(\"kcmp: %s\\n\", strerror(errno)); return 1; }\n\
           puts(\"kcmp: ok\"); return 0; }\n",
    )
    .unwrap();
    let status = Command::new("cc")
        .args(["-static", "-o"])
        .arg(dir.join("bin/kcmp-probe"))
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "building the probe");
    true
}

#[test]
fn containers_get_podmans_seccomp_profile_unless_unconfined() {
    let Some(root) = setup() else { return };
    if !build_kcmp_probe(&rootfs(&root)) {
        return;
    }
    // The second confined container's filter comes from the root's cache, compiled for the
    // first; both must be confined alike.
    let confined = ["confined", "confined-too"];
    for name in confined.iter().chain(&["free"]) {
        container(&root, name, "sleep 1000", &[]);
    }
    root.ok(&["config", "set", "free", "container.seccomp=unconfined"]);
    let cache = root.path().join("cache/seccomp");
    let check = "grep Seccomp: /proc/1/status; grep Seccomp: /proc/self/status; kcmp-probe";
    for name in confined {
        root.ok(&["start", name]);
        let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(cached.len(), 1, "one compiled program for the one profile");
        let out = root.run(&["exec", name, "--", "/bin/sh", "-c", check]);
        let out = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "Seccomp:\t2",
                "Seccomp:\t2",
                "kcmp: Operation not permitted"
            ],
            "{name}: {out}"
        );
    }
    root.ok(&["start", "free"]);
    let free = root.ok(&["exec", "free", "--", "/bin/sh", "-c", check]);
    assert_eq!(
        free.lines().collect::<Vec<_>>(),
        ["Seccomp:\t0", "Seccomp:\t0", "kcmp: ok"],
        "{free}"
    );
    for name in confined.iter().chain(&["free"]) {
        root.ok(&["delete", name, "--force"]);
    }
}

#[test]
fn application_containers_get_a_user_namespace_from_corrals_subuid_range() {
    let Some(root) = setup() else { return };
    use std::os::unix::fs::MetadataExt;
    container(&root, "mapped", "sleep 1000", &[]);
    container(&root, "shared", "sleep 1000", &["--userns", "host"]);
    assert!(root.ok(&["info", "mapped"]).contains("auto"));
    for name in ["mapped", "shared"] {
        root.ok(&["start", name]);
    }
    let check = "id -u; cat /proc/self/uid_map; touch /root/made-by-root && echo made";
    let mapped = root.ok(&["exec", "mapped", "--", "/bin/sh", "-c", check]);
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let base: u32 = subuid
        .lines()
        .find_map(|l| l.strip_prefix("corral:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|start| start.parse().ok())
        .expect("a corral entry in /etc/subuid");
    let map: Vec<String> = mapped
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(mapped.lines().next(), Some("0"), "root inside: {mapped}");
    assert_eq!(map, ["0", &base.to_string(), "65536"], "{mapped}");
    assert!(mapped.contains("made"), "{mapped}");
    let made = root.instance_dir("mapped").join("rootfs/root/made-by-root");
    assert_eq!(
        std::fs::metadata(&made).unwrap().uid(),
        base,
        "owned by the mapped host uid"
    );
    let busybox = root.instance_dir("mapped").join("rootfs/bin/busybox");
    assert_eq!(
        std::fs::metadata(busybox).unwrap().uid(),
        base,
        "the rootfs was shifted"
    );
    let marker = root.instance_dir("mapped").join("rootfs.userns");
    assert_eq!(
        std::fs::metadata(marker).unwrap().mode() & 0o777,
        0o600,
        "private like the instance's other files"
    );

    let shared = root.ok(&["exec", "shared", "--", "/bin/sh", "-c", check]);
    assert!(
        shared
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .eq(["0", "0", "4294967295"]),
        "{shared}"
    );
    let made = root.instance_dir("shared").join("rootfs/root/made-by-root");
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), 0);
    for name in ["mapped", "shared"] {
        root.ok(&["delete", name, "--force"]);
    }
}
