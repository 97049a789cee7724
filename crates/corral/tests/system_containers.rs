//! System containers (`--init`): what an init system needs from corral (its own user namespace,
//! a delegated cgroup, /dev/console, tmpfs /run and /tmp, `container=corral`), checked with
//! busybox; and Debian 12 with systemd booted, stopped with systemd's own shutdown and cloned
//! into two new machines. Needs root and busybox-static; the Debian test needs mmdebstrap and
//! Debian's archive (its root filesystem is cached).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{wait_for, CorralRoot as Root};

/// The packages of the systemd root filesystem; they also key its cache.
const DEBIAN_PACKAGES: &str = "systemd,systemd-sysv,dbus,openssh-server,iproute2";

/// Units that fail in any container and so may leave systemd `degraded` (none so far: a unit
/// failing here is a fault of corral's container or of the image).
const UNITS_THAT_CANNOT_WORK_IN_A_CONTAINER: &[&str] = &[];

fn setup() -> Option<Root> {
    if !corral_testkit::is_root() {
        corral_testkit::skip("needs root for namespaces and cgroups");
        return None;
    }
    Some(Root::new())
}

/// The host directory of instance `name`'s cgroup in the hierarchy mounted at `hierarchy`.
fn host_cgroup(root: &Root, hierarchy: &str, name: &str) -> PathBuf {
    let dir = root.instance_dir(name);
    let file = dir.join("instance.toml");
    let text = std::fs::read_to_string(&file).expect("the instance's definition");
    let definition = corral_core::definition::Definition::parse(&text, &file).unwrap();
    let cgroup = corral_core::driver::instance_cgroup(
        &definition,
        &corral_core::driver::InstancePaths::new(dir),
    );
    Path::new("/sys/fs/cgroup")
        .join(hierarchy)
        .join(cgroup.strip_prefix("/").unwrap())
}

#[test]
fn a_system_container_gets_a_delegated_cgroup_a_console_and_its_own_user_namespace() {
    let Some(root) = setup() else { return };
    if !common::have_busybox() {
        return;
    }
    if !Path::new("/sys/fs/cgroup/systemd/cgroup.procs").exists() {
        corral_testkit::skip("needs a cgroup v1 host with a name=systemd hierarchy");
        return;
    }
    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    let probe = "\
        mkdir /sys/fs/cgroup/systemd/init.scope && echo $$ > /sys/fs/cgroup/systemd/init.scope/cgroup.procs \
            && echo systemd-writable; \
        grep -q ':name=systemd:/init.scope$' /proc/self/cgroup && echo moved-inside; \
        mkdir /sys/fs/cgroup/memory/escape 2>/dev/null || echo memory-read-only; \
        mkdir /sys/fs/cgroup/unified/init.scope && echo unified-writable; \
        [ -c /dev/console ] && echo console-is-a-tty; \
        echo env-$container; \
        grep -q '^tmpfs /run ' /proc/mounts && grep -q '^tmpfs /tmp ' /proc/mounts && echo tmpfs-run-tmp; \
        awk '$1 == 0 && $2 != 0 { print \"mapped-root\" }' /proc/self/uid_map; \
        echo probe-done; exec sleep 1000";
    root.ok(&[
        "create",
        "sysbox",
        "--init",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        probe,
    ]);
    root.ok(&["start", "sysbox"]);
    wait_for("the probe", Duration::from_secs(20), || {
        root.ok(&["logs", "sysbox"]).contains("probe-done")
    });
    let logs = root.ok(&["logs", "sysbox"]);
    for expected in [
        "systemd-writable",
        "moved-inside",
        "memory-read-only",
        "unified-writable",
        "console-is-a-tty",
        "env-corral",
        "tmpfs-run-tmp",
        "mapped-root",
    ] {
        assert!(logs.contains(expected), "{expected} in {logs}");
    }
    // On the host: the systemd hierarchy's directory is the container root's, the limits' not.
    use std::os::unix::fs::MetadataExt;
    let systemd = host_cgroup(&root, "systemd", "sysbox");
    let memory = host_cgroup(&root, "memory", "sysbox");
    assert_ne!(std::fs::metadata(&systemd).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(&memory).unwrap().uid(), 0);
    assert!(systemd.join("init.scope").is_dir());

    root.ok(&["kill", "sysbox"]);
    assert!(
        !systemd.exists(),
        "the cgroups made inside go with the container's"
    );
}

/// A Debian 12 root filesystem with systemd and OpenSSH as a tarball: made by mmdebstrap once
/// (minutes), then taken from the cache, keyed by the command that makes it.
fn debian_systemd_tarball() -> PathBuf {
    let command = format!("mmdebstrap --variant=minbase --include={DEBIAN_PACKAGES} bookworm");
    let key = common::sha256_hex(command.as_bytes());
    let dir = common::cache_dir().join("rootfs").join(key);
    let tarball = dir.join("rootfs.tar");
    if tarball.exists() {
        return tarball;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let partial = dir.join("rootfs.tar.partial");
    let status = std::process::Command::new("mmdebstrap")
        .args(command.split(' ').skip(1))
        .arg("--format=tar")
        .arg(&partial)
        .status()
        .unwrap();
    assert!(status.success(), "mmdebstrap failed: {status}");
    std::fs::rename(&partial, &tarball).unwrap();
    tarball
}

/// Waits for systemd in `name` to finish booting; returns its state and how long that took.
fn wait_for_boot(root: &Root, name: &str) -> (String, Duration) {
    let started = Instant::now();
    // exec fails until systemd's private socket exists; --wait then blocks until boot ends.
    loop {
        let out = root.run(&[
            "exec",
            name,
            "--",
            "timeout",
            "120",
            "systemctl",
            "is-system-running",
            "--wait",
        ]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if matches!(state.as_str(), "running" | "degraded") {
            return (state, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{name} did not finish booting: {state:?} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            root.ok(&["logs", name])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks that `name` booted to `running`, or `degraded` only through units that cannot work
/// in a container (printed, so a failure is visible).
fn assert_booted(root: &Root, name: &str) -> Duration {
    let (state, took) = wait_for_boot(root, name);
    eprintln!("{name}: systemd {state} after {took:.1?}");
    if state == "degraded" {
        let failed = root.ok(&[
            "exec",
            name,
            "--",
            "systemctl",
            "--failed",
            "--plain",
            "--no-legend",
        ]);
        eprintln!("{name}: failed units:\n{failed}");
        for unit in failed.lines().filter_map(|l| l.split_whitespace().next()) {
            assert!(
                UNITS_THAT_CANNOT_WORK_IN_A_CONTAINER.contains(&unit),
                "unit {unit} failed in {name}:\n{failed}"
            );
        }
    }
    took
}

fn exec(root: &Root, name: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", name, "--"];
    args.extend_from_slice(command);
    root.ok(&args).trim().to_string()
}

/// The identity `corral exec` sees in `name`: machine-id, SSH host key fingerprint, hostname
/// and eth0's MAC.
fn identity(root: &Root, name: &str) -> (String, String, String, String) {
    let machine_id = exec(root, name, &["cat", "/etc/machine-id"]);
    // The host keys may still be in the making by sshd's first-boot unit.
    wait_for("the SSH host key", Duration::from_secs(30), || {
        root.run(&[
            "exec",
            name,
            "--",
            "test",
            "-s",
            "/etc/ssh/ssh_host_ed25519_key.pub",
        ])
        .status
        .success()
    });
    let fingerprint = exec(
        root,
        name,
        &["ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"],
    );
    let hostname = exec(root, name, &["hostname"]);
    let link = exec(root, name, &["ip", "-o", "link", "show", "eth0"]);
    let mac = link
        .split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link:?}"))
        .to_owned();
    (machine_id, fingerprint, hostname, mac)
}

#[test]
#[ignore = "builds a Debian 12 rootfs with mmdebstrap (minutes the first time); scripts/test.sh runs it"]
fn debian_with_systemd_boots_stops_itself_and_its_clones_are_new_machines() {
    let Some(_) = setup() else { return };
    corral_testkit::require_program!("mmdebstrap");
    corral_testkit::require_program!("nft");
    corral_testkit::require_program!("dnsmasq");
    // corral works in a network namespace of the test's own, where the instances' network is.
    let netns = corral_testkit::Netns::new("debsys");
    netns.ip(&["link", "set", "lo", "up"]);
    let root = Root::in_netns(&netns);
    let tarball = debian_systemd_tarball();
    root.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--alias",
        "debian-systemd",
    ]);
    root.ok(&["network", "create", "lab", "--subnet", "10.0.11.1/24"]);
    root.ok(&[
        "create",
        "deb",
        "--image",
        "debian-systemd",
        "--init",
        "--nic",
        "network=lab",
    ]);
    root.ok(&["start", "deb"]);
    assert_booted(&root, "deb");

    // systemd's own shutdown: SIGRTMIN+3 makes it halt, which in a pid namespace ends the
    // init with SIGINT (128 + 2); a kill at the stop timeout would show SIGKILL's 137.
    let stopping = Instant::now();
    root.ok(&["stop", "deb", "--timeout", "60"]);
    wait_for("deb to stop", Duration::from_secs(60), || {
        root.status("deb") == "stopped"
    });
    let info = root.info("deb");
    let exit = &info["state"]["last_exit"];
    eprintln!("deb: stopped in {:.1?}: {exit}", stopping.elapsed());
    assert_eq!(exit["reason"], "stopped", "{exit}");
    assert_eq!(exit["code"], 130, "systemd halted itself: {exit}");

    root.ok(&["clone", "deb", "deb1"]);
    root.ok(&["clone", "deb", "deb2"]);
    let mut identities = Vec::new();
    for name in ["deb1", "deb2"] {
        root.ok(&["start", name]);
        assert_booted(&root, name);
        let identity = identity(&root, name);
        eprintln!("{name}: {identity:?}");
        assert_eq!(identity.0.len(), 32, "a machine-id: {identity:?}");
        assert!(identity.1.contains("ED25519"), "{identity:?}");
        assert_eq!(identity.2, name, "the clone's hostname is its name");
        assert_eq!(
            identity.3,
            root.info(name)["nics"][0]["mac"].as_str().unwrap(),
            "eth0 has the clone's MAC"
        );
        identities.push(identity);
    }
    assert_ne!(identities[0].0, identities[1].0, "machine-ids differ");
    assert_ne!(identities[0].1, identities[1].1, "host keys differ");
    assert_ne!(identities[0].3, identities[1].3, "MACs differ");
    assert_ne!(
        identities[0].3,
        root.info("deb")["nics"][0]["mac"].as_str().unwrap(),
        "a clone's MAC is not its source's"
    );
    for name in ["deb1", "deb2"] {
        root.ok(&["stop", name, "--timeout", "60"]);
    }
    for name in ["deb", "deb1", "deb2"] {
        root.ok(&["delete", name]);
    }
    root.ok(&["network", "delete", "lab"]);
}
