//! Real containers from a busybox rootfs, driven through `corral oci` as podman would drive it.
//! Needs root (namespaces, mounts, cgroups) and Debian's busybox-static.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestBundle;
use corral_testkit::require_root;
use serde_json::json;

macro_rules! require_container_host {
    () => {
        require_root!();
        if !common::have_busybox() {
            return;
        }
    };
}

#[test]
fn pid1_hostname_environment_and_mounts() {
    require_container_host!();
    let mut bundle = TestBundle::new(
        "basics",
        "echo pid=$$; hostname; echo env=$container; \
        grep -c ' /proc proc ' /proc/mounts; grep -c ' /dev/pts devpts ' /proc/mounts; \
        ls -l /dev/ptmx /dev/fd; echo nul > /dev/null && echo devnull-ok",
    );
    bundle.config["hostname"] = json!("box-under-test");
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    assert_eq!(lines[1], "box-under-test");
    assert_eq!(lines[2], "env=corral");
    assert_eq!(lines[3], "1", "proc mounted once: {out}");
    assert_eq!(lines[4], "1", "devpts mounted: {out}");
    assert!(out.contains("/dev/ptmx -> pts/ptmx"), "{out}");
    assert!(out.contains("/dev/fd -> /proc/self/fd"), "{out}");
    assert!(out.contains("devnull-ok"), "{out}");
    assert!(
        bundle.left_nothing_behind(),
        "run must clean up after itself"
    );
}

#[test]
fn masked_and_readonly_paths_and_readonly_root() {
    require_container_host!();
    let mut bundle = TestBundle::new("masked", "wc -c < /etc/group; ls /root | wc -l; \
        echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable || echo sys-readonly; \
        touch /newfile 2>/dev/null && echo root-writable || echo root-readonly; \
        echo ok > /tmp-mount/x && echo tmpfs-writable");
    bundle.config["root"]["readonly"] = json!(true);
    std::fs::write(bundle.rootfs().join("root/secret"), "hidden").unwrap();
    bundle.config["linux"]["maskedPaths"] = json!(["/etc/group", "/root", "/does/not/exist"]);
    bundle.config["linux"]["readonlyPaths"] = json!(["/proc/sys"]);
    bundle.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/tmp-mount", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}));
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["0", "0", "sys-readonly", "root-readonly", "tmpfs-writable"],
        "{out}"
    );
}

#[test]
fn exit_codes_pass_through_run() {
    require_container_host!();
    for (script, expected) in [("exit 0", 0), ("exit 3", 3), ("exit 255", 255)] {
        let bundle = TestBundle::new("exit", script);
        let (code, _, err) = bundle.run();
        assert_eq!(code, expected, "{script}: {err}");
    }
}

#[test]
fn memory_limit_oom_kills_the_process() {
    require_container_host!();
    // dd reads 96 MiB from /dev/zero into one buffer: every page is touched.
    let mut bundle = TestBundle::new(
        "oom",
        "dd if=/dev/zero of=/dev/null bs=96M count=1 2>/dev/null; echo dd-exit=$?",
    );
    let limit = 24 << 20;
    bundle.config["linux"]["resources"] = json!({"memory": {"limit": limit, "swap": limit}});
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "the shell itself stays under the limit: {err}");
    assert_eq!(
        out.trim(),
        "dd-exit=137",
        "the OOM killer kills dd with SIGKILL"
    );

    let bundle = TestBundle::new(
        "nolimit",
        "dd if=/dev/zero of=/dev/null bs=96M count=1 2>/dev/null; echo dd-exit=$?",
    );
    let (_, out, _) = bundle.run();
    assert_eq!(out.trim(), "dd-exit=0", "without the limit dd completes");

    let mut bundle = TestBundle::new("oom-init", "dd if=/dev/zero of=/dev/null bs=96M count=1");
    bundle.config["linux"]["resources"] = json!({"memory": {"limit": limit, "swap": limit}});
    bundle.config["process"]["args"] =
        json!(["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]);
    let (code, _, err) = bundle.run();
    assert_eq!(code, 137, "killed by SIGKILL: {err}");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    require_container_host!();
    // The bomb runs in a child shell (a failed fork ends an ash script); the init then counts
    // processes with a glob, which needs no fork.
    let mut bundle = TestBundle::new(
        "pids",
        "sh -c 'i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done'; \
        set -- /proc/[0-9]*; echo procs=$#",
    );
    bundle.config["linux"]["resources"] = json!({"pids": {"limit": 12}});
    let start = Instant::now();
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("can't fork"),
        "forks beyond the limit fail: {err}"
    );
    let procs: usize = out.trim().strip_prefix("procs=").unwrap().parse().unwrap();
    assert!(
        (5..=12).contains(&procs),
        "the pids limit must hold: {procs} processes"
    );
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "the sleeping children die with the init"
    );
}

#[test]
fn pause_and_resume_freeze_a_counter() {
    require_container_host!();
    // The rename keeps readers from seeing a half-written file.
    let bundle = TestBundle::new("pause", "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; sleep 0.01; done");
    bundle.create_and_start();
    let counter = bundle.rootfs().join("tmp/counter");
    let read = || -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(n) = std::fs::read_to_string(&counter)
                .unwrap_or_default()
                .trim()
                .parse()
            {
                return n;
            }
            assert!(Instant::now() < deadline, "the counter never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let before = read();
    std::thread::sleep(Duration::from_millis(100));
    assert!(read() > before, "the counter runs");

    assert!(bundle.oci(&["pause", &bundle.id]).status.success());
    assert_eq!(bundle.status(), "paused");
    let frozen = read();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), frozen, "a paused container does not count");
    let again = bundle.oci(&["pause", &bundle.id]);
    assert!(!again.status.success(), "pausing twice is an error");

    assert!(bundle.oci(&["resume", &bundle.id]).status.success());
    assert_eq!(bundle.status(), "running");
    std::thread::sleep(Duration::from_millis(200));
    assert!(read() > frozen, "a resumed container counts again");

    let delete = bundle.oci(&["delete", &bundle.id]);
    assert!(
        !delete.status.success(),
        "deleting a running container needs --force"
    );
    assert!(String::from_utf8_lossy(&delete.stderr).contains("is running"));
    assert!(bundle
        .oci(&["delete", "--force", &bundle.id])
        .status
        .success());
    assert!(bundle.left_nothing_behind());
}

#[test]
fn signals_reach_the_container_and_exit_status_is_reported() {
    require_container_host!();
    let bundle = TestBundle::new(
        "signal",
        "trap 'echo got-term; exit 42' TERM; while true; do sleep 0.05; done",
    );
    bundle.save();
    let mut child = Command::new(common::corral_bin())
        .arg("oci")
        .arg("--root")
        .arg(&bundle.state_root)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&bundle.id)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    bundle.wait_for_status("running");
    // Give the shell time to install its trap.
    std::thread::sleep(Duration::from_millis(300));
    let bad = bundle.oci(&["kill", &bundle.id, "NOTASIGNAL"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid signal"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(bundle.oci(&["kill", &bundle.id, "TERM"]).status.success());
    let status = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(42), "{out}");
    assert!(out.contains("got-term"));

    let bundle = TestBundle::new("sigkill", "sleep 60");
    bundle.save();
    let mut child = Command::new(common::corral_bin())
        .arg("oci")
        .arg("--root")
        .arg(&bundle.state_root)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&bundle.id)
        .spawn()
        .unwrap();
    bundle.wait_for_status("running");
    assert!(bundle.oci(&["kill", &bundle.id, "9"]).status.success());
    assert_eq!(
        child.wait().unwrap().code(),
        Some(137),
        "a SIGKILLed init reports 128 + 9"
    );
    assert!(bundle.left_nothing_behind());
}

#[test]
fn lifecycle_states_ps_list_and_kill_all() {
    require_container_host!();
    let bundle = TestBundle::new("life", "sleep 60 & sleep 60");
    let path = bundle.path().to_string_lossy().into_owned();
    let out = bundle.oci(&[
        "create",
        "--bundle",
        &path,
        "--pid-file",
        &format!("{path}/pid"),
        &bundle.id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = bundle.state().unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(state["ociVersion"], "1.0.2");
    assert_eq!(state["id"], bundle.id.as_str());
    let pid = state["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{path}/pid")).unwrap(),
        pid.to_string()
    );
    assert_eq!(state["bundle"], path.as_str());

    let early = bundle.oci(&["delete", &bundle.id]);
    assert!(
        !early.status.success(),
        "a created container is not deleted without --force"
    );

    assert!(bundle.oci(&["start", &bundle.id]).status.success());
    assert_eq!(bundle.status(), "running");
    assert!(
        !bundle.oci(&["start", &bundle.id]).status.success(),
        "start twice is an error"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let pids = loop {
        let ps = bundle.oci(&["ps", "--format", "json", &bundle.id]);
        let pids: Vec<i64> = serde_json::from_slice(&ps.stdout).unwrap();
        if pids.len() >= 2 || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(pids.contains(&pid) && pids.len() >= 2, "{pids:?}");

    let events = bundle.oci(&["events", "--stats", &bundle.id]);
    let stats: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    assert!(
        stats["data"]["memory_usage_bytes"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        stats["data"]["pids_current"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    assert!(stats["data"]["cpu_usage_ns"].as_u64().is_some(), "{stats}");

    let list = bundle.oci(&["list", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["id"], bundle.id.as_str());
    let quiet = bundle.oci(&["list", "-q"]);
    assert_eq!(String::from_utf8_lossy(&quiet.stdout).trim(), bundle.id);

    assert!(bundle
        .oci(&["kill", "--all", &bundle.id, "KILL"])
        .status
        .success());
    bundle.wait_for_status("stopped");
    assert_eq!(bundle.state().unwrap()["pid"], 0);
    let late = bundle.oci(&["kill", &bundle.id, "TERM"]);
    assert!(
        !late.status.success(),
        "signalling a stopped container is an error"
    );
    assert!(bundle.oci(&["delete", &bundle.id]).status.success());
    let gone = bundle.oci(&["state", &bundle.id]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
    assert!(bundle.left_nothing_behind());
}

#[test]
fn exec_joins_the_running_container() {
    require_container_host!();
    let mut bundle = TestBundle::new("exec", "echo started > /tmp/marker; sleep 60");
    bundle.config["hostname"] = json!("exec-host");
    bundle.create_and_start();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !bundle.rootfs().join("tmp/marker").exists() {
        assert!(
            Instant::now() < deadline,
            "the container never wrote its marker"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = bundle.oci(&[
        "exec",
        &bundle.id,
        "sh",
        "-c",
        "hostname; cat /tmp/marker; echo env=$container; exit 9",
    ]);
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["exec-host", "started", "env=corral"]
    );

    let process = json!({"args": ["sh", "-c", "id -u; echo $FOO"], "cwd": "/tmp", "env": ["FOO=from-process-json", "PATH=/bin"], "user": {"uid": 1000, "gid": 1000}});
    let process_file = bundle.path().join("process.json");
    std::fs::write(&process_file, process.to_string()).unwrap();
    let out = bundle.oci(&[
        "exec",
        "--process",
        &process_file.to_string_lossy(),
        &bundle.id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\nfrom-process-json\n"
    );

    let pid_file = bundle.path().join("exec.pid");
    let out = bundle.oci(&[
        "exec",
        "--detach",
        "--pid-file",
        &pid_file.to_string_lossy(),
        &bundle.id,
        "sleep",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let ps = bundle.oci(&["ps", "--format", "json", &bundle.id]);
    let pids: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(
        pids.contains(&pid),
        "the exec'd process is in the container's cgroup: {pids:?} {pid}"
    );

    let missing = bundle.oci(&["exec", &bundle.id, "no-such-program"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("executable file not found"));
    bundle.force_delete();
    assert!(bundle.left_nothing_behind());
}

#[test]
fn console_socket_receives_the_terminal_master() {
    require_container_host!();
    let mut bundle = TestBundle::new("tty", "tty; echo hello-tty");
    bundle.config["process"]["terminal"] = json!(true);
    let socket_path = bundle.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    let path = bundle.path().to_string_lossy().into_owned();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        corral_container::console::receive_fd(stream.as_raw_fd()).unwrap()
    });
    let out = bundle.oci(&[
        "create",
        "--bundle",
        &path,
        "--console-socket",
        &socket_path.to_string_lossy(),
        &bundle.id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let master = receiver.join().unwrap();
    assert!(bundle.oci(&["start", &bundle.id]).status.success());
    let mut master = std::fs::File::from(master);
    let mut seen = String::new();
    let mut buffer = [0u8; 256];
    while let Ok(n) = master.read(&mut buffer) {
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        if seen.contains("hello-tty") {
            break;
        }
    }
    assert!(
        seen.contains("/dev/pts/0"),
        "the process's terminal is the pty: {seen:?}"
    );
    assert!(seen.contains("hello-tty"));
    bundle.force_delete();
}

#[test]
fn user_capabilities_rlimits_and_user_namespace() {
    require_container_host!();
    let mut bundle = TestBundle::new(
        "user",
        "id -u; id -g; grep CapEff /proc/self/status; ulimit -n; umask",
    );
    bundle.config["process"]["user"] = json!({"uid": 1000, "gid": 1000, "umask": 63});
    bundle.config["process"]["capabilities"] = json!({"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"], "inheritable": [], "ambient": []});
    bundle.config["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}]);
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1000");
    assert_eq!(
        lines[2], "CapEff:\t0000000000000000",
        "a non-root process without ambient caps has none effective"
    );
    assert_eq!(lines[3], "123");
    assert_eq!(lines[4], "0077");

    let mut bundle = TestBundle::new("userns", "cat /proc/self/uid_map; id -u");
    bundle.map_root_to(200000);
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    let first: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first, ["0", "200000", "65536"]);
    assert_eq!(out.lines().nth(1), Some("0"));
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    require_container_host!();
    let mut bundle = TestBundle::new("hooks", "echo main");
    let log = bundle.path().join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat | grep -o '\"status\":\"[a-z]*\"') >> {}", log.display())]});
    bundle.config["hooks"] = json!({
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "main\n");
    let text = std::fs::read_to_string(&log).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        ["createRuntime", "createContainer", "poststart", "poststop"],
        "{text}"
    );
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("\"status\":\"created\""),
        "{text}"
    );

    let mut failing = TestBundle::new("hookfail", "echo never");
    failing.config["hooks"] = json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hook-broke >&2; exit 1"]}]});
    let (code, out, err) = failing.run();
    assert_ne!(code, 0);
    assert!(!out.contains("never"));
    assert!(
        err.contains("prestart hook") && err.contains("hook-broke"),
        "{err}"
    );
    assert!(failing.left_nothing_behind());
}

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing_behind() {
    require_container_host!();
    let check = |bundle: &TestBundle, words: &str| {
        let (code, _, err) = bundle.run();
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(words), "expected {words:?} in: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(bundle.left_nothing_behind(), "after: {err}");
    };

    let bundle = TestBundle::new("badjson", "true");
    bundle.save();
    std::fs::write(bundle.path().join("config.json"), "{ \"ociVersion\": ").unwrap();
    let out = Command::new(common::corral_bin())
        .args(["oci", "--root"])
        .arg(&bundle.state_root)
        .args(["create", "--bundle"])
        .arg(bundle.path())
        .arg(&bundle.id)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    assert!(bundle.left_nothing_behind());

    let mut bundle = TestBundle::new("norootfs", "true");
    bundle.config["root"]["path"] = json!("missing-rootfs");
    check(&bundle, "is not a directory");

    let mut bundle = TestBundle::new("badns", "true");
    bundle.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "bogus"}));
    check(&bundle, "unknown namespace type \"bogus\"");

    let mut bundle = TestBundle::new("dupns", "true");
    bundle.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "pid"}));
    check(&bundle, "listed twice");

    let mut bundle = TestBundle::new("noexe", "true");
    bundle.config["process"]["args"] = json!(["/no/such/program"]);
    check(&bundle, "no such file or directory");

    let mut bundle = TestBundle::new("badmount", "true");
    bundle.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "bind", "source": "/no/such/source", "options": ["bind"]}));
    check(&bundle, "/no/such/source");

    let bundle = TestBundle::new("collide", "sleep 30");
    bundle.create_and_start();
    let path = bundle.path().to_string_lossy().into_owned();
    let again = bundle.oci(&["create", "--bundle", &path, &bundle.id]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(
        bundle.status(),
        "running",
        "the first container is untouched"
    );
    bundle.force_delete();

    let unknown = bundle.oci(&["start", "no-such-container"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("container no-such-container does not exist"));
    let bad_id = bundle.oci(&["state", "../etc"]);
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("invalid container id"));
}

#[test]
fn json_log_file_gets_errors_for_conmon() {
    require_container_host!();
    let bundle = TestBundle::new("log", "true");
    let log = bundle.path().join("oci-log");
    let out = bundle.oci(&[
        "--log",
        &log.to_string_lossy(),
        "--log-format",
        "json",
        "start",
        "missing-one",
    ]);
    assert!(!out.status.success());
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
}

#[test]
fn runtime_name_symlink_speaks_runc_directly() {
    require_container_host!();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("corral-oci");
    std::os::unix::fs::symlink(common::corral_bin(), &link).unwrap();
    let version = Command::new(&link).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("spec: 1.0.2"));
    let features = Command::new(&link).arg("features").output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&features.stdout).unwrap();
    assert_eq!(doc["linux"]["cgroup"]["v1"], true);
    let bundle = TestBundle::new("symlink", "echo via-symlink");
    bundle.save();
    let out = Command::new(&link)
        .arg("--root")
        .arg(&bundle.state_root)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&bundle.id)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "via-symlink\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn corral_guest_detect_inside_recognises_the_container() {
    require_container_host!();
    let mut bundle = TestBundle::new("detect", "/corral guest detect --container");
    // The dynamically linked corral needs the host's libraries: bind them in read-only.
    for dir in ["lib", "lib64", "usr/lib", "usr/lib64"] {
        let host = std::path::Path::new("/").join(dir);
        if host.exists() {
            std::fs::create_dir_all(bundle.rootfs().join(dir)).unwrap();
            bundle.config["mounts"].as_array_mut().unwrap().push(json!({"destination": format!("/{dir}"), "type": "bind", "source": host, "options": ["rbind", "ro"]}));
        }
    }
    bundle.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/corral", "type": "bind", "source": common::corral_bin(), "options": ["bind", "ro"]}));
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(
        out.trim(),
        "corral",
        "guest detect names the runtime from PID 1's container=corral"
    );
}

#[test]
fn run_with_a_terminal_relays_the_callers_terminal() {
    require_container_host!();
    corral_testkit::require_program!("script");
    let mut bundle = TestBundle::new("runtty", "tty; read line; echo got-$line; exit 6");
    bundle.config["process"]["terminal"] = json!(true);
    bundle.save();
    // script(1) gives `corral oci run` a terminal of its own; corral relays it to the container's.
    let run = format!(
        "{} oci --root {} run --bundle {} {}",
        common::corral_bin(),
        bundle.state_root.display(),
        bundle.path().display(),
        bundle.id
    );
    let shell = format!("(sleep 1; printf 'hello\\r') | script -qfec '{run}' /dev/null");
    let out = common::output_via_files(Command::new("sh").args(["-c", &shell]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/0"),
        "the process has the container's pty: {text}"
    );
    assert!(
        text.contains("got-hello"),
        "input reaches the process: {text}"
    );
    assert_eq!(out.status.code(), Some(6), "{text}");
}

#[test]
fn device_nodes_in_the_rootfs_stay_closed_without_a_deny_rule() {
    require_container_host!();
    // A host block device node shipped in the rootfs (the first loop device: this host's sandbox
    // keeps even root from opening its real disk), and a spec whose device list has no
    // "deny all": the container's cgroup must not inherit the host's allow-all.
    let mut bundle = TestBundle::new(
        "devices",
        "head -c 1 /disk >/dev/null && echo disk-opens; echo x > /dev/null && echo null-writable",
    );
    let disk = bundle.rootfs().join("disk");
    nix::sys::stat::mknod(
        &disk,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(7, 0),
    )
    .unwrap();
    std::fs::File::open(&disk).expect("outside the container the node opens");
    bundle.config["linux"]["resources"] = json!({});
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("disk-opens"), "{out}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(out.contains("null-writable"), "{out}");
}

#[test]
fn a_mapped_root_gets_its_rootfs_and_volumes_from_a_private_directory() {
    require_container_host!();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The bundle lies in a directory only the host's root may enter, as corral keeps its
    // instances. The container's root is host uid 200000: the runtime must hand it its rootfs
    // and a bind-mounted directory from there without opening the directory to it.
    let mut bundle = TestBundle::new(
        "private",
        "cat /proc/self/uid_map; cat /data/hello; touch /made && echo made; \
         grep ' / ' /proc/self/mounts; echo x > /null2 || echo null2-closed",
    );
    std::fs::set_permissions(bundle.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = bundle.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello"), "hello from the host\n").unwrap();
    // /dev/null's numbers, which the device rules allow: only nodev keeps it closed.
    nix::sys::stat::mknod(
        &bundle.rootfs().join("null2"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-hR", "200000:200000"])
        .arg(bundle.rootfs())
        .status()
        .unwrap();
    assert!(chown.success());
    bundle.map_root_to(200000);
    bundle.config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind"]}),
    );
    bundle.config["annotations"] = json!({"org.corral.rootfs.nodev": "true"});
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"]
    );
    assert_eq!(lines[1], "hello from the host", "{out}");
    assert_eq!(lines[2], "made", "{out}");
    assert!(
        lines[3]
            .split_whitespace()
            .nth(3)
            .unwrap_or("")
            .split(',')
            .any(|o| o == "nodev"),
        "the root is mounted nodev: {out}"
    );
    assert_eq!(lines.get(4), Some(&"null2-closed"), "{out}");
    assert_eq!(
        std::fs::metadata(bundle.rootfs().join("made"))
            .unwrap()
            .uid(),
        200000
    );

    // Made read-only, the root stays nodev.
    bundle.config["root"]["readonly"] = json!(true);
    bundle.config["process"]["args"] = json!(["sh", "-c", "grep ' / ' /proc/self/mounts"]);
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    let options: Vec<&str> = out
        .split_whitespace()
        .nth(3)
        .unwrap_or("")
        .split(',')
        .collect();
    assert!(
        options.contains(&"ro") && options.contains(&"nodev"),
        "{out}"
    );
}

#[test]
fn the_terminal_carries_only_what_the_process_writes() {
    require_container_host!();
    // The engine writes nothing of its own to the pty (no readiness byte, no stray SCM_RIGHTS
    // payload): the master reads exactly the process's output, every time.
    for round in 0..50 {
        let mut bundle = TestBundle::new("ttybytes", "printf 'marker-%s\\n' ok");
        bundle.config["process"]["terminal"] = json!(true);
        let socket_path = bundle.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
        let receiver = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            corral_container::console::receive_fd(stream.as_raw_fd()).unwrap()
        });
        let path = bundle.path().to_string_lossy().into_owned();
        let socket = socket_path.to_string_lossy().into_owned();
        let out = bundle.oci(&[
            "create",
            "--bundle",
            &path,
            "--console-socket",
            &socket,
            &bundle.id,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut master = std::fs::File::from(receiver.join().unwrap());
        assert!(bundle.oci(&["start", &bundle.id]).status.success());
        let mut seen = Vec::new();
        let mut buffer = [0u8; 256];
        // EIO once the process (the last holder of the slave) has exited.
        while let Ok(n) = master.read(&mut buffer) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buffer[..n]);
        }
        assert_eq!(
            String::from_utf8_lossy(&seen),
            "marker-ok\r\n",
            "round {round}: {seen:?}"
        );
        bundle.force_delete();
    }
}

#[test]
fn run_with_a_terminal_and_closed_input_echoes_no_nul() {
    require_container_host!();
    corral_testkit::require_program!("script");
    // script(1) with its input at end-of-file types the EOF character into the terminal while
    // it is still in canonical mode; the kernel keeps it as a NUL byte, which a raw-mode reader
    // receives unless switching to raw mode flushes pending input. Relayed to the container's
    // pty it came back echoed as "^@".
    let mut bundle = TestBundle::new("ttyeof", "echo hello-tty; sleep 0.3");
    bundle.config["process"]["terminal"] = json!(true);
    bundle.save();
    for round in 0..10 {
        let run = format!(
            "{} oci --root {} run --bundle {} {}-{round}",
            common::corral_bin(),
            bundle.state_root.display(),
            bundle.path().display(),
            bundle.id
        );
        let shell = format!("script -qfec '{run}' /dev/null < /dev/null");
        let out = common::output_via_files(Command::new("sh").args(["-c", &shell]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("hello-tty"), "round {round}: {text:?}");
        assert!(
            !text.contains("^@") && !text.contains('\0'),
            "round {round}: {text:?}"
        );
    }
}
