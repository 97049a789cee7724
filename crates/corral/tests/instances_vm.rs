//! End-to-end tests of VM instances: the instance CLI driving `corral vmm run` with the
//! freestanding test guests from `guests/`. Needs /dev/kvm.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use corral_testkit::require_kvm;
use serde_json::Value;

use common::{create_vm as vm, wait_for, CorralRoot as Root};

fn log_len(root: &Root, name: &str) -> usize {
    root.ok(&["logs", name]).len()
}

#[test]
fn vm_lifecycle_with_logs_pause_and_forced_stop() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "vm1", "counter", &["--cpus", "1"]);
    root.ok(&["start", "vm1"]);
    let listed: Value = serde_json::from_str(&root.ok(&["list", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["type"], "vm");
    assert_eq!(listed[0]["status"], "running");
    wait_for("the guest's output", Duration::from_secs(20), || {
        root.ok(&["logs", "vm1"]).contains("count 2")
    });
    let info = root.info("vm1");
    // The VMM is the VMM-only executable beside corral's, not corral itself.
    let pid = info["state"]["pid"].as_u64().unwrap();
    let vmm = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        vmm,
        Path::new(common::corral_bin()).with_file_name("corral-vmm"),
        "the VM ran in corral itself: build corral-vmm beside it (cargo build -p corral-vmm-cli, \
         which the workspace's tests do)"
    );
    let live = info["live"].clone();
    assert_eq!(live["kind"], "vm");
    assert!(
        live["counters"]["exits_io_out"].as_u64().unwrap() > 0,
        "{live}"
    );

    root.ok(&["pause", "vm1"]);
    assert_eq!(root.status("vm1"), "paused");
    let frozen = log_len(&root, "vm1");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(log_len(&root, "vm1"), frozen, "a paused VM prints nothing");
    root.ok(&["resume", "vm1"]);
    wait_for("output after resume", Duration::from_secs(20), || {
        log_len(&root, "vm1") > frozen
    });

    // The counter guest ignores Ctrl-Alt-Del: stop forces it off after the timeout.
    root.ok(&["stop", "vm1", "--timeout", "1"]);
    let info = root.info("vm1");
    assert_eq!(info["state"]["status"], "stopped");
    assert_eq!(info["state"]["last_exit"]["reason"], "stopped");
    assert!(info["state"]["last_exit"]["detail"]
        .as_str()
        .unwrap()
        .contains("did not shut down"));
}

#[test]
fn graceful_stop_reaches_the_guest() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "cad", "ctrl-alt-del", &[]);
    root.ok(&["start", "cad"]);
    wait_for("the guest to wait", Duration::from_secs(20), || {
        root.ok(&["logs", "cad"])
            .contains("waiting for ctrl-alt-del")
    });
    root.ok(&["stop", "cad", "--timeout", "30"]);
    assert_eq!(root.info("cad")["state"]["last_exit"]["reason"], "poweroff");
    assert!(root.ok(&["logs", "cad"]).contains("powering off"));
}

#[test]
fn a_guest_that_powers_off_is_noticed_by_list() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "once", "exit", &[]);
    root.ok(&["start", "once"]);
    wait_for("the power-off", Duration::from_secs(20), || {
        !root
            .ok(&["list", "--all"])
            .lines()
            .any(|l| l.contains("running"))
    });
    let exit = &root.info("once")["state"]["last_exit"];
    assert_eq!(exit["reason"], "poweroff");
    assert!(exit["code"].is_number());
}

#[test]
fn crash_policies() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "doomed", "triple-fault", &["--on-crash", "destroy"]);
    root.ok(&["start", "doomed"]);
    wait_for("the crash", Duration::from_secs(20), || {
        root.status("doomed") == "crashed"
    });
    let exit = &root.info("doomed")["state"]["last_exit"];
    assert_eq!(exit["reason"], "crashed");
    assert!(
        exit["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("triple fault"),
        "{exit}"
    );

    vm(&root, "phoenix", "triple-fault", &["--on-crash", "restart"]);
    // A limit it cannot reach while the test watches it restart.
    root.ok(&["config", "set", "phoenix", "restart_limit.burst=1000"]);
    root.ok(&["start", "phoenix"]);
    wait_for("restarts", Duration::from_secs(20), || {
        root.info("phoenix")["live"]["restarts"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    assert_eq!(root.status("phoenix"), "running");
    root.ok(&["kill", "phoenix"]);
    assert_eq!(root.status("phoenix"), "stopped");
}

#[test]
fn a_crash_looping_vm_ends_crashed_at_its_restart_limit() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "loop", "triple-fault", &["--on-crash", "restart"]);
    root.ok(&["start", "loop"]);
    wait_for("the restart limit", Duration::from_secs(60), || {
        root.status("loop") == "crashed"
    });
    let exit = &root.info("loop")["state"]["last_exit"];
    assert_eq!(exit["reason"], "restart-limit", "{exit}");
    let detail = exit["detail"].as_str().unwrap();
    assert!(detail.contains("5 restarts within 10 s"), "{detail}");
    assert!(detail.to_lowercase().contains("triple fault"), "{detail}");
    // The supervisor's log names each crash a bounded number of times, not once per restart.
    let log =
        std::fs::read_to_string(root.instance_dir("loop").join("run/supervisor.log")).unwrap();
    assert!(log.contains("restart limit"), "{log}");
}

#[test]
fn console_reaches_the_serial_port() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "echo", "echo", &[]);
    root.ok(&["start", "echo"]);
    wait_for("the guest to be ready", Duration::from_secs(20), || {
        root.ok(&["logs", "echo"]).contains("ready")
    });
    let mut console = root
        .command(&["console", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    console
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"over-the-console\r")
        .unwrap();
    // The echo guest answers and powers off, which closes the console.
    let mut output = String::new();
    console
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    assert!(console.wait().unwrap().success());
    assert!(output.contains("echo: over-the-console"), "{output:?}");
    let mut stderr = String::new();
    console
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("console of echo closed"), "{stderr}");
    wait_for("the power-off", Duration::from_secs(10), || {
        root.status("echo") == "stopped"
    });
}

#[test]
fn killed_vmm_shows_crashed() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "victim", "counter", &[]);
    root.ok(&["start", "victim"]);
    let pid = root.info("victim")["state"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) of the VMM this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_for("the VMM to die", Duration::from_secs(5), || {
        !PathBuf::from(format!("/proc/{pid}")).exists()
    });
    let info = root.info("victim");
    assert_eq!(info["state"]["status"], "crashed");
    assert_eq!(info["state"]["last_exit"]["reason"], "supervisor-lost");
    root.ok(&["start", "victim"]);
    assert_eq!(root.status("victim"), "running");
}

#[test]
fn exec_into_a_vm_without_an_agent_fails_at_once_naming_the_agent() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "vmx", "counter", &[]);
    let err = root.fails(&["exec", "vmx", "--", "ls"]);
    assert!(err.contains("instance vmx is not running"), "{err}");
    root.ok(&["start", "vmx"]);
    // The counter guest has no vsock driver: the VMM's vsock socket does not listen, so the
    // connection is refused rather than left waiting for a driver that never comes.
    let started = std::time::Instant::now();
    let err = root.fails(&["exec", "vmx", "--", "ls"]);
    assert!(
        err.contains("cannot use the guest agent of instance vmx")
            && err.contains("is `corral guest agent` running in the guest?")
            && err.contains("Connection refused"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    root.ok(&["kill", "vmx"]);
}

#[test]
fn a_vm_agent_answers_ping_and_exec_through_vsock_and_stop_goes_through_it() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "agentvm", "vsock-agent", &[]);
    root.ok(&["start", "agentvm"]);
    wait_for("the agent", Duration::from_secs(20), || {
        root.ok(&["logs", "agentvm"])
            .contains("listening on port 1024")
    });
    let out = root.ok(&["agent", "ping", "agentvm"]);
    assert!(out.contains("the guest agent of agentvm answered"), "{out}");
    // exec streams the command's output and ends with its status.
    let out = root.run(&["exec", "agentvm", "--", "anything"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "output from vsock-agent\n"
    );
    // On a terminal (script(1)'s), exec asks the guest for one of the same size, and leaves the
    // terminal's mode as it found it.
    if corral_testkit::has_program("script") {
        let dir = root.dir.path();
        let shell = format!(
            "stty rows 33 cols 111; stty -g >{before}; {corral} exec agentvm -- anything; \
             echo status=$?; stty -g >{after}",
            before = dir.join("before").display(),
            after = dir.join("after").display(),
            corral = common::corral_bin(),
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &shell, "/dev/null"])
            .env("CORRAL_ROOT", root.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("output on a 33x111 terminal") && text.contains("status=3"),
            "{text}"
        );
        let mode = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(
            mode("before"),
            mode("after"),
            "the terminal's mode came back"
        );
        assert!(!mode("before").is_empty());
    } else {
        corral_testkit::skip("the terminal part needs `script` (util-linux)");
    }
    // The guest ignores Ctrl-Alt-Del: only the agent's shutdown can power it off cleanly.
    root.ok(&["stop", "agentvm", "--timeout", "60"]);
    let state = &root.info("agentvm")["state"];
    assert_eq!(state["last_exit"]["reason"], "poweroff", "{state}");
    assert!(root
        .ok(&["logs", "agentvm"])
        .contains("vsock-agent: shutdown requested"));
}

#[test]
fn a_hostile_agent_in_a_vm_gets_clear_errors_in_time_and_stop_falls_back() {
    require_kvm!();
    let root = Root::new();
    vm(
        &root,
        "hostile",
        "vsock-agent",
        &["--cmdline", "agent.hostile=1"],
    );
    root.ok(&["start", "hostile"]);
    wait_for("the fake agent", Duration::from_secs(20), || {
        root.ok(&["logs", "hostile"])
            .contains("hostile, listening on port 1024")
    });
    // Its answer to the handshake announces a 64 MiB frame: refused at once, not read.
    for command in [
        &["agent", "ping", "hostile"][..],
        &["exec", "hostile", "--", "true"],
        &["file", "pull", "hostile", "/etc/hostname", "x"],
    ] {
        let started = std::time::Instant::now();
        let err = root.fails(command);
        assert!(
            err.contains("cannot use the guest agent of instance hostile")
                && err.contains("invalid reply")
                && err.contains("67108864 bytes is over the limit"),
            "{command:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{command:?}");
    }
    assert!(root
        .ok(&["logs", "hostile"])
        .contains("accepted a connection"));
    let agent = &root.info("hostile")["agent"];
    assert_eq!(agent["status"], "not_answering", "{agent}");
    // Without a usable agent, stop takes the old way: the guest ignores Ctrl-Alt-Del and is
    // forced off at the timeout.
    root.ok(&["stop", "hostile", "--timeout", "1"]);
    let state = &root.info("hostile")["state"];
    assert_eq!(state["status"], "stopped");
    assert_eq!(state["last_exit"]["reason"], "stopped", "{state}");
}

#[test]
fn vm_instance_disks_are_virtio_disks_including_a_pool_overlay() {
    require_kvm!();
    corral_testkit::require_program!("qemu-img");
    let root = Root::new();
    let images = tempfile::tempdir().unwrap();
    let base = images.path().join("base.raw");
    // The sector pattern the virtio-blk test guest expects (see guests/virtio-blk.c).
    let pattern: Vec<u8> = (0..1 << 20)
        .map(|offset: usize| ((offset / 512) * 7 + offset % 512) as u8)
        .collect();
    std::fs::write(&base, &pattern).unwrap();
    // A base from outside the pool is imported (an overlay's chain stays in the pool).
    let refused = root.fails(&[
        "volume",
        "create",
        "clone",
        "--format",
        "qcow2",
        "--backing",
        base.to_str().unwrap(),
    ]);
    assert!(refused.contains("corral volume import"), "{refused}");
    root.ok(&["volume", "import", "base", base.to_str().unwrap()]);
    root.ok(&[
        "volume",
        "create",
        "clone",
        "--format",
        "qcow2",
        "--backing",
        "base",
    ]);
    let read_only = format!("{},ro", base.display());
    vm(
        &root,
        "disks",
        "virtio-blk",
        &[
            "--disk",
            &read_only,
            "--disk",
            "vol=clone,serial=clone-disk",
        ],
    );
    root.ok(&["start", "disks"]);
    wait_for("the guest to finish", Duration::from_secs(60), || {
        root.status("disks") != "running"
    });
    let logs = root.ok(&["logs", "disks"]);
    assert!(logs.contains("virtio-blk: all checks passed"), "{logs}");
    assert!(logs.contains("serial: clone-disk"), "{logs}");
    assert_eq!(
        root.info("disks")["state"]["last_exit"]["reason"],
        "poweroff"
    );
    // The guest wrote into the overlay, never into the shared bases.
    assert_eq!(std::fs::read(&base).unwrap(), pattern);
    let imported = root.path().join("storage/default/base.raw");
    assert_eq!(std::fs::read(imported).unwrap(), pattern);
    let overlay = root.path().join("storage/default/clone.qcow2");
    let check = std::process::Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(check.success());
}

#[test]
fn vm_instance_nics_show_a_stable_mac() {
    let root = Root::new();
    vm(&root, "net", "hello", &["--nic", "bridge=br-test"]);
    let first = root.ok(&["info", "net"]);
    let mac_line = first
        .lines()
        .find(|line| line.contains("Nic 0"))
        .unwrap()
        .to_owned();
    assert!(mac_line.contains("bridge br-test, mac 02:"), "{mac_line}");
    assert!(root.ok(&["info", "net"]).contains(&mac_line));
    let refused = root.fails(&[
        "create",
        "bad",
        "--kernel",
        "k",
        "--nic",
        "mac=02:00:00:00:00:01",
    ]);
    assert!(refused.contains("nics[0]"), "{refused}");
}

#[test]
fn config_edit_validates_before_saving() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "edited", "counter", &[]);
    // A scripted editor: the change is saved once it parses and validates.
    let out = root
        .command(&["config", "edit", "edited"])
        .env("VISUAL", "sed -i s/^cpus\\ =\\ 1/cpus\\ =\\ 2/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.ok(&["config", "show", "edited"]).contains("cpus = 2"));
    // An invalid edit is refused (no terminal to ask "edit again?") and nothing changes.
    let out = root
        .command(&["config", "edit", "edited"])
        .env(
            "VISUAL",
            "sed -i s/^memory\\ =.*/memory\\ =\\ \\\"lots\\\"/",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("field `memory`"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(root
        .ok(&["config", "show", "edited"])
        .contains("memory = \"32M\""));
}

#[test]
fn restart_runs_the_vm_again_under_a_new_supervisor() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "again", "counter", &[]);
    root.ok(&["start", "again"]);
    let first = root.info("again")["state"]["pid"].clone();
    root.ok(&["restart", "again", "--timeout", "1"]);
    let info = root.info("again");
    assert_eq!(info["state"]["status"], "running");
    assert_ne!(info["state"]["pid"], first);
    root.ok(&["kill", "again"]);
}

#[test]
fn a_start_killed_after_spawning_the_vmm_leaves_the_vm_recorded_and_stoppable() {
    require_kvm!();
    let root = Root::new();
    vm(&root, "orphan", "counter", &[]);
    let mut start = root
        .command(&["start", "orphan"])
        .env("FAILPOINTS", "start.pid-recorded=pause")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = root.instance_dir("orphan").join("run/control.sock");
    wait_for("the VMM to serve", Duration::from_secs(20), || {
        socket.exists()
    });
    // kill -9 of the CLI between spawning the supervisor and recording it as running.
    start.kill().unwrap();
    start.wait().unwrap();
    wait_for("the VM to show running", Duration::from_secs(20), || {
        root.status("orphan") == "running"
    });
    let pid = root.info("orphan")["state"]["pid"].as_i64().unwrap();
    root.ok(&["stop", "orphan", "--timeout", "1"]);
    assert_eq!(root.status("orphan"), "stopped");
    // Gone, or a zombie: the killed CLI was its parent, and whoever inherited it reaps it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
    assert!(
        state.is_empty() || state.starts_with('Z'),
        "the VMM still runs: {stat}"
    );
}

/// Every directory, file and socket under `dir`, with its permission bits.
fn modes_under(dir: &std::path::Path) -> Vec<(PathBuf, std::fs::FileType, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            }
            let mode = meta.permissions().mode() & 0o7777;
            found.push((entry.path(), meta.file_type(), mode));
        }
    }
    found
}

#[test]
fn everything_a_vm_instance_creates_is_private_to_its_owner() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    require_kvm!();
    let root = Root::new();
    root.ok(&["volume", "create", "data", "--size", "1M"]);
    root.ok(&[
        "volume", "create", "layer", "--format", "qcow2", "--size", "1M",
    ]);
    vm(
        &root,
        "private",
        "counter",
        &["--disk", "vol=data", "--disk", "vol=layer"],
    );
    root.ok(&["start", "private"]);
    wait_for("the guest's output", Duration::from_secs(20), || {
        root.ok(&["logs", "private"]).contains("count 1")
    });
    let top = std::fs::metadata(root.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(top, 0o700, "the corral root");
    let found = modes_under(&root.path());
    for name in [
        "control.sock",
        "console.sock",
        "console.log",
        "supervisor.log",
    ] {
        assert!(
            found.iter().any(|(path, ..)| path.ends_with(name)),
            "{name} was not created"
        );
    }
    for (path, kind, mode) in &found {
        let expected = if kind.is_dir() { 0o700 } else { 0o600 };
        assert!(
            kind.is_dir() || kind.is_file() || kind.is_socket(),
            "{} is neither a file, a directory nor a socket",
            path.display()
        );
        assert_eq!(*mode, expected, "{} has mode {mode:o}", path.display());
    }
    root.ok(&["stop", "private", "--timeout", "1"]);
    for (path, kind, mode) in modes_under(&root.path()) {
        let expected = if kind.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{} has mode {mode:o}", path.display());
    }
}

#[test]
fn a_vm_nic_on_a_bridge_sends_only_from_its_own_address_unless_unfiltered() {
    corral_testkit::require_root!();
    require_kvm!();
    corral_testkit::require_program!("ip");
    corral_testkit::require_program!("nft");
    // corral runs in the test's namespace: the bridge, taps and nftables rules stay there.
    let net = corral_testkit::Netns::new("vmfilter");
    net.ip(&["link", "add", "br0", "type", "bridge"]);
    net.ip(&["addr", "add", "10.0.1.1/24", "dev", "br0"]);
    net.ip(&["link", "set", "br0", "up"]);
    let root = Root::in_netns(&net);
    // The guest sends from the address on its command line, 10.0.1.2, and pings the bridge.
    for (name, nic, passes) in [
        ("honest", "bridge=br0,ip=10.0.1.2/24", true),
        ("forger", "bridge=br0,ip=10.0.1.3/24", false),
        ("unfiltered", "bridge=br0,ip=10.0.1.3/24,filter=off", true),
    ] {
        vm(
            &root,
            name,
            "virtio-net",
            &[
                "--nic",
                nic,
                "--cmdline",
                "guest_ip=10.0.1.2 peer_ip=10.0.1.1",
            ],
        );
        root.ok(&["start", name]);
        wait_for("the guest to finish", Duration::from_secs(30), || {
            root.status(name) == "stopped"
        });
        let log = root.ok(&["logs", name]);
        assert_eq!(
            log.contains("virtio-net: echo reply from the peer"),
            passes,
            "{name}: {log}"
        );
    }
    // Each run's filter went with it.
    let rules = net
        .command("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("chain nic-"), "{rules}");
}
