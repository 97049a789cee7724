//! `corral migrate` end to end: a running VM instance moved live from one corral root to
//! another (`corral migrate receive` there), between two network namespaces acting as hosts
//! and over unix sockets; its disk on storage both reach; and the refusals and failures that
//! must leave the source running and the destination's root as it was.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use corral_testkit::{require_kvm, require_program, require_root, Netns};
use serde_json::Value;

use common::CorralRoot as Root;

const TOKEN: &str = "instance-migration-secret";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A `corral migrate receive` waiting in `root`.
struct Receiver(Child);

impl Receiver {
    fn start(root: &Root, listen: &str, token: &str) -> Receiver {
        let child = root
            .command(&["migrate", "receive", "--listen", listen, "--token", token])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Receiver(child)
    }

    /// Its exit code, stdout and stderr.
    fn wait(self) -> (Option<i32>, String, String) {
        let output = self.0.wait_with_output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// The counts a `counter` console printed, in order (complete lines only).
fn counts(console: &str) -> Vec<u64> {
    console
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| line.trim_end().strip_prefix("count "))
        .map(|count| count.parse().unwrap())
        .collect()
}

fn logs(root: &Root, name: &str) -> String {
    root.ok(&["logs", name])
}

fn last_exit(root: &Root, name: &str) -> String {
    root.info(name)["state"]["last_exit"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn instances(root: &Root) -> Vec<String> {
    let list: Value = serde_json::from_str(&root.ok(&["list", "--all", "-o", "json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect()
}

/// Defines and starts counter VM `name` in `root`, with a raw disk at `disk` (shared storage),
/// and waits for its first counts.
fn running_counter(root: &Root, name: &str, disk: &Path) {
    std::fs::write(disk, vec![0u8; 1 << 20]).unwrap();
    common::create_vm(root, name, "counter", &["--disk", disk.to_str().unwrap()]);
    root.ok(&["start", name]);
    common::wait_for("the first counts", TIMEOUT, || {
        counts(&logs(root, name)).len() >= 3
    });
}

/// The source still runs `name` and its counter goes on.
fn keeps_counting(root: &Root, name: &str) {
    assert_eq!(root.status(name), "running");
    let before = counts(&logs(root, name)).len();
    common::wait_for("more counts on the source", TIMEOUT, || {
        counts(&logs(root, name)).len() > before + 2
    });
}

/// `corral migrate ARGS`, again while the receiver does not listen yet.
fn migrate_once_listening(root: &Root, args: &[&str]) -> std::process::Output {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let output = root.run(&[&["migrate"], args].concat());
        let err = String::from_utf8_lossy(&output.stderr);
        if !err.contains("cannot connect") || std::time::Instant::now() >= deadline {
            return output;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two namespaces acting as hosts, joined by a veth: source 192.0.2.1, destination 192.0.2.2.
fn two_hosts() -> (Netns, Netns) {
    let source = Netns::new("imig-src");
    let destination = Netns::new("imig-dst");
    source.ip(&[
        "link",
        "add",
        "imig0",
        "type",
        "veth",
        "peer",
        "name",
        "imig1",
        "netns",
        destination.name(),
    ]);
    for (netns, link, address) in [
        (&source, "imig0", "192.0.2.1/24"),
        (&destination, "imig1", "192.0.2.2/24"),
    ] {
        netns.ip(&["link", "set", "lo", "up"]);
        netns.ip(&["address", "add", address, "dev", link]);
        netns.ip(&["link", "set", link, "up"]);
    }
    (source, destination)
}

#[test]
fn an_instance_migrates_between_two_hosts_with_shared_storage_and_counts_on_with_no_gap() {
    require_root!();
    require_kvm!();
    require_program!("ip");
    require_program!("nsenter");
    let (source_host, destination_host) = two_hosts();
    let source = Root::in_netns(&source_host);
    let destination = Root::in_netns(&destination_host);
    let shared = tempfile::tempdir().unwrap();
    let disk = shared.path().join("disk.raw");
    running_counter(&source, "web", &disk);

    let receiver = Receiver::start(&destination, "tcp:192.0.2.2:7400", TOKEN);
    let migrated =
        migrate_once_listening(&source, &["web", "tcp:192.0.2.2:7400", "--token", TOKEN]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let said = String::from_utf8_lossy(&migrated.stdout).into_owned();
    assert!(
        said.starts_with("instance web migrated to tcp:192.0.2.2:7400 in ")
            && said.contains("downtime"),
        "{said}"
    );
    let (code, out, err) = receiver.wait();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "instance web runs here\n");

    // The source instance stays, stopped, its last exit `migrated`; the destination runs it.
    assert_eq!(source.status("web"), "stopped");
    assert_eq!(last_exit(&source, "web"), "migrated");
    assert_eq!(destination.status("web"), "running");
    assert_eq!(
        destination.info("web")["definition"]["disks"][0]["path"],
        disk.to_str().unwrap()
    );
    let before = logs(&source, "web");
    common::wait_for("counts on the destination", TIMEOUT, || {
        counts(&logs(&destination, "web")).len() >= 3
    });
    // One counter, no gap and no repeat across the two hosts' consoles.
    let all = counts(&format!("{before}{}", logs(&destination, "web")));
    let expected: Vec<u64> = (all[0]..all[0] + all.len() as u64).collect();
    assert_eq!(all, expected);
    // The destination's VMM holds the disk now: the source could not start on it again.
    let refused = source.fails(&["start", "web"]);
    assert!(refused.contains("disk.raw"), "{refused}");
    destination.ok(&["kill", "web"]);
}

/// Two corral roots on this host, a directory both use as shared storage, and the unix socket
/// address where the destination's receiver waits.
struct TwoRoots {
    source: Root,
    destination: Root,
    shared: tempfile::TempDir,
    address: String,
}

impl TwoRoots {
    fn new() -> TwoRoots {
        let shared = tempfile::tempdir().unwrap();
        let address = format!("unix:{}", shared.path().join("migrate.sock").display());
        TwoRoots {
            source: Root::new(),
            destination: Root::new(),
            shared,
            address,
        }
    }

    /// Two roots, the source running counter VM `name` with a disk on the shared storage.
    fn counting(name: &str) -> TwoRoots {
        let roots = TwoRoots::new();
        running_counter(&roots.source, name, &roots.shared.path().join("disk.raw"));
        roots
    }

    /// A receiver in the destination root, once it listens.
    fn receive(&self) -> Receiver {
        let receiver = Receiver::start(&self.destination, &self.address, TOKEN);
        let socket = self.shared.path().join("migrate.sock");
        common::wait_for("the receiver listens", TIMEOUT, || socket.exists());
        receiver
    }
}

/// The rounds of the `snapshot-io` guest's complete lines, each checked to have read back
/// the sector it wrote (its sum printed).
fn io_rounds(console: &str) -> Vec<u64> {
    console
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| line.trim_end().strip_prefix("round "))
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            assert!(
                matches!(words[..], [_, "blk", sum, ..] if sum != "-"),
                "bad line {line:?} in {console}"
            );
            words[0].parse().unwrap()
        })
        .collect()
}

#[test]
fn a_guest_writing_its_shared_disk_goes_on_writing_it_on_the_destination() {
    require_root!();
    require_kvm!();
    let roots = TwoRoots::new();
    let (source, destination, address) = (&roots.source, &roots.destination, &roots.address);
    let disk = roots.shared.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    common::create_vm(
        source,
        "io",
        "snapshot-io",
        &["--disk", disk.to_str().unwrap()],
    );
    source.ok(&["start", "io"]);
    common::wait_for("the first rounds", TIMEOUT, || {
        io_rounds(&logs(source, "io")).len() >= 3
    });
    let receiver = roots.receive();
    source.ok(&["migrate", "io", address, "--token", TOKEN]);
    assert_eq!(receiver.wait().0, Some(0));

    let before = logs(source, "io");
    common::wait_for("rounds on the destination", TIMEOUT, || {
        io_rounds(&logs(destination, "io")).len() >= 3
    });
    destination.ok(&["kill", "io"]);
    // Each round wrote its sector and read it back whole, on either host, one after the other
    // (a line the pause cut in two goes on on the destination's console).
    let all = io_rounds(&format!("{before}{}", logs(destination, "io")));
    let expected: Vec<u64> = (all[0]..all[0] + all.len() as u64).collect();
    assert_eq!(all, expected);
    // The last round's sector on the shared disk holds its pattern: the destination wrote it.
    let last = *all.last().unwrap();
    let content = std::fs::read(&disk).unwrap();
    let sector = &content[(last % 8) as usize * 512..][..512];
    let pattern: Vec<u8> = (0..512u64).map(|j| ((last + j) * (j + 1)) as u8).collect();
    assert_eq!(sector, &pattern[..]);
}

#[test]
fn a_wrong_token_is_refused_and_the_source_keeps_running() {
    require_root!();
    require_kvm!();
    let roots = TwoRoots::counting("web");
    let (source, destination, address) = (&roots.source, &roots.destination, &roots.address);
    let receiver = roots.receive();

    // Once the receiver listens (it may still be starting on a loaded host).
    let output = migrate_once_listening(source, &["web", address, "--token", "not-the-token"]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("token does not match"), "{err}");
    let (code, _, err) = receiver.wait();
    assert_eq!(code, Some(1));
    assert!(err.contains("token does not match"), "{err}");
    keeps_counting(source, "web");
    assert!(instances(destination).is_empty());
}

#[test]
fn a_name_taken_on_the_destination_is_refused_and_both_instances_stay_as_they_were() {
    require_root!();
    require_kvm!();
    let roots = TwoRoots::counting("web");
    let (source, destination, address) = (&roots.source, &roots.destination, &roots.address);
    common::create_vm(destination, "web", "hello", &[]);
    let definition = std::fs::read(destination.instance_dir("web").join("instance.toml")).unwrap();
    let receiver = roots.receive();

    // Once the receiver listens (it may still be starting on a loaded host).
    let output = migrate_once_listening(source, &["web", address, "--token", TOKEN]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("an instance named web exists on this host already"),
        "{err}"
    );
    let (code, _, _) = receiver.wait();
    assert_eq!(code, Some(1));
    keeps_counting(source, "web");
    assert_eq!(destination.status("web"), "stopped");
    assert_eq!(
        std::fs::read(destination.instance_dir("web").join("instance.toml")).unwrap(),
        definition
    );
}

/// Starts a migration of a counter that never converges, kills the destination as `kill` does
/// (given the receiver and the pid of the destination's VMM) mid-transfer, and checks that the
/// source hears it at once and runs on, and that the destination's root is left empty.
fn killed_mid_transfer(kill: impl FnOnce(&mut Receiver, i32)) {
    let roots = TwoRoots::counting("web");
    let (source, destination, address) = (&roots.source, &roots.destination, &roots.address);
    let mut receiver = roots.receive();

    // A 0 ms downtime limit is never met: the transfer goes on, pass after pass, until the
    // destination is killed.
    let migration = source
        .command(&[
            "migrate",
            "web",
            address,
            "--token",
            TOKEN,
            "--downtime-limit",
            "0ms",
            "--max-iterations",
            "1000000",
            "--max-time",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = destination.instance_dir("web").join("state.json");
    let mut pid = 0;
    common::wait_for("the destination's VMM", TIMEOUT, || {
        let recorded: Option<Value> = std::fs::read(&state)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        pid = recorded
            .and_then(|state| state["pid"].as_u64())
            .unwrap_or_default();
        pid != 0
    });
    std::thread::sleep(Duration::from_secs(2));
    kill(&mut receiver, pid as i32);

    let killed = std::time::Instant::now();
    let output = migration.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    // Told at once, not at the end of the time limit.
    assert!(killed.elapsed() < Duration::from_secs(20), "{err}");
    assert!(
        err.contains("keeps running on the source") || err.contains("gave up"),
        "{err}"
    );
    assert_ne!(receiver.wait().0, Some(0));
    keeps_counting(source, "web");
    // (A killed receiver's leftovers go with the next `list`, once its VMM has ended.)
    common::wait_for("an empty destination", TIMEOUT, || {
        instances(destination).is_empty()
    });
    let left: Vec<_> = std::fs::read_dir(destination.path().join("instances"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_destination_vmm_killed_mid_transfer_leaves_the_source_running_and_nothing_there() {
    require_root!();
    require_kvm!();
    killed_mid_transfer(|_, vmm| {
        // The destination VMM this test's corral started (its pid recorded).
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(vmm),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    });
}

#[test]
fn a_receiver_killed_mid_transfer_leaves_the_source_running_and_nothing_there() {
    require_root!();
    require_kvm!();
    killed_mid_transfer(|receiver, _| receiver.0.kill().unwrap());
}

#[test]
fn copy_storage_copies_a_read_only_disk_and_refuses_a_writable_one_in_the_instance() {
    require_root!();
    require_kvm!();
    let roots = TwoRoots::new();
    let (source, destination, address) = (&roots.source, &roots.destination, &roots.address);
    let definition = roots.shared.path().join("ro.toml");
    let disks = "[[disks]]\npath = \"data.raw\"\nformat = \"raw\"\nreadonly = true\n\n\
                 [[disks]]\npath = \"scratch.raw\"\nformat = \"raw\"\n";
    std::fs::write(
        &definition,
        format!(
            "name = \"ro\"\ntype = \"vm\"\nuuid = \"6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b\"\n\
             memory = \"32M\"\n\n[boot]\nkernel = \"{}\"\n\n{disks}",
            corral_guests::elf("counter").display()
        ),
    )
    .unwrap();
    source.ok(&["define", definition.to_str().unwrap()]);
    // 3 MiB and a bit of bytes that are not all alike: it goes in more than one piece.
    let content: Vec<u8> = (0..(3u32 << 20) + 4097)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(source.instance_dir("ro").join("data.raw"), &content).unwrap();
    std::fs::write(
        source.instance_dir("ro").join("scratch.raw"),
        vec![0u8; 1 << 20],
    )
    .unwrap();
    source.ok(&["start", "ro"]);

    // The writable disk cannot be copied while the guest may write it.
    let err = source.fails(&["migrate", "ro", address, "--token", TOKEN, "--copy-storage"]);
    assert!(
        err.contains("disks[1] of instance ro")
            && err.contains("--copy-storage copies only read-only raw disks"),
        "{err}"
    );
    source.ok(&["kill", "ro"]);
    let text = std::fs::read_to_string(&definition).unwrap();
    let without_scratch = text.replace("[[disks]]\npath = \"scratch.raw\"\nformat = \"raw\"\n", "");
    assert_ne!(without_scratch, text);
    std::fs::write(&definition, without_scratch).unwrap();
    source.ok(&["delete", "ro"]);
    source.ok(&["define", definition.to_str().unwrap()]);
    std::fs::write(source.instance_dir("ro").join("data.raw"), &content).unwrap();
    source.ok(&["start", "ro"]);
    let err = source.fails(&["migrate", "ro", address, "--token", TOKEN]);
    assert!(
        err.contains("or, for a read-only raw disk, give --copy-storage"),
        "{err}"
    );

    let receiver = roots.receive();
    source.ok(&["migrate", "ro", address, "--token", TOKEN, "--copy-storage"]);
    assert_eq!(receiver.wait().0, Some(0));
    assert_eq!(destination.status("ro"), "running");
    let copied = std::fs::read(destination.instance_dir("ro").join("data.raw")).unwrap();
    assert!(copied == content, "the copy differs from the disk");
    common::wait_for("counts on the destination", TIMEOUT, || {
        counts(&logs(destination, "ro")).len() >= 3
    });
    destination.ok(&["kill", "ro"]);
}

#[test]
fn containers_and_stopped_vms_are_refused_with_a_sentence() {
    require_root!();
    require_kvm!();
    let source = Root::new();
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = scratch.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    source.ok(&["create", "box", "--rootfs", rootfs.to_str().unwrap()]);
    let err = source.fails(&["migrate", "box", "tcp:127.0.0.1:9", "--token", TOKEN]);
    assert!(
        err.contains("instance box is a container; only VMs migrate live"),
        "{err}"
    );

    common::create_vm(&source, "web", "counter", &[]);
    let err = source.fails(&["migrate", "web", "tcp:127.0.0.1:9", "--token", TOKEN]);
    assert!(
        err.contains("instance web is stopped; only a running VM migrates live"),
        "{err}"
    );

    source.ok(&["start", "web"]);
    let err = source.fails(&["migrate", "web", "tcp:127.0.0.1:9", "--token", TOKEN]);
    assert!(
        err.contains("is `corral migrate receive` waiting there?"),
        "{err}"
    );
    keeps_counting(&source, "web");
}
