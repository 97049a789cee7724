//! End-to-end tests of `corral snapshot` through the real binary on a temporary corral root: a
//! stopped VM's disks come back byte for byte (again and again), deleted snapshots keep the bases
//! later ones need, a stopped container's root filesystem comes back, and each refusal is one
//! sentence that changes nothing.

mod common;

use std::path::{Path, PathBuf};

use corral_disk::{BackingPolicy, DiskFormat, OpenOptions};
use corral_testkit::{require_kvm, require_root};

use common::CorralRoot as Root;

const MIB: u64 = 1 << 20;

/// Instance `name`'s first disk (absolute) and the places its chain may use: its
/// `allow_backing` resolved against the instance directory, and the image store.
fn first_disk(root: &Root, name: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = root.instance_dir(name);
    let text = std::fs::read_to_string(dir.join("instance.toml")).unwrap();
    let definition: toml::Table = toml::from_str(&text).unwrap();
    let disk = &definition["disks"][0];
    let path = dir.join(disk["path"].as_str().unwrap());
    let allow = disk
        .get("allow_backing")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().map(|p| dir.join(p.as_str().unwrap())).collect())
        .unwrap_or_default();
    (path, allow)
}

/// Writes `length` bytes of `pattern` at `offset` into VM `name`'s first disk (qcow2).
fn write_disk(root: &Root, name: &str, offset: u64, length: u64, pattern: u8) {
    let (path, allow) = first_disk(root, name);
    let options = OpenOptions {
        backing: BackingPolicy::Within(allow),
        ..OpenOptions::writable().format(DiskFormat::Qcow2)
    };
    let mut disk = corral_disk::open(&path, options).unwrap();
    disk.write_at(&vec![pattern; length as usize], offset)
        .unwrap();
    disk.flush().unwrap();
}

/// The whole virtual disk of VM `name`'s first disk.
fn disk_content(root: &Root, name: &str) -> Vec<u8> {
    let (path, allow) = first_disk(root, name);
    let options = OpenOptions {
        backing: BackingPolicy::Within(allow),
        ..OpenOptions::read_only().format(DiskFormat::Qcow2)
    };
    let disk = corral_disk::open(&path, options).unwrap();
    let mut bytes = vec![0; disk.virtual_size() as usize];
    disk.read_at(&mut bytes, 0).unwrap();
    bytes
}

/// The snapshot directories of instance `name` (deleted ones whose bases are kept included).
fn snapshot_dirs(root: &Root, name: &str) -> Vec<PathBuf> {
    match std::fs::read_dir(root.instance_dir(name).join("snapshots")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Files directly in instance `name`'s directory that are disk images.
fn disk_files(root: &Root, name: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root.instance_dir(name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".qcow2") || n.ends_with(".raw"))
        .collect();
    files.sort();
    files
}

/// A stopped VM `name` made from the `hello` guest's 16 MiB qcow2 image (its disk an overlay
/// on the image).
fn hello_vm(root: &Root, name: &str) {
    common::import_hello_vm_image(root, root.dir.path(), "hello-vm", "16M");
    root.ok(&["create", name, "--image", "hello-vm", "--memory", "32M"]);
}

fn boots(root: &Root, name: &str) {
    const GREETING: &str = "hello from a corral test guest";
    let before = root.ok(&["logs", name]).matches(GREETING).count();
    root.ok(&["start", name]);
    common::wait_for(
        "the guest's greeting and power-off",
        std::time::Duration::from_secs(30),
        || {
            root.ok(&["logs", name]).matches(GREETING).count() > before
                && root.status(name) == "stopped"
        },
    );
}

#[test]
fn a_stopped_vm_snapshot_brings_its_disk_back_byte_for_byte_again_and_again() {
    require_kvm!();
    let root = Root::new();
    hello_vm(&root, "v");
    write_disk(&root, "v", 4 * MIB, MIB, 0xa1);
    let at_snapshot = disk_content(&root, "v");

    let out = root.ok(&["snapshot", "create", "v"]);
    assert_eq!(out, "created snapshot snap0 of v\n");
    // The VM continues on an overlay of the frozen disk, whose old name is gone.
    let files = disk_files(&root, "v");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("root-"), "{files:?}");
    assert_eq!(disk_content(&root, "v"), at_snapshot);
    let list = root.ok(&["snapshot", "list", "v"]);
    assert!(list.contains("snap0") && list.contains(" no "), "{list}");

    // The VM runs on the overlay.
    boots(&root, "v");
    for pattern in [0xb2, 0xc3] {
        write_disk(&root, "v", 4 * MIB, 2 * MIB, pattern);
        assert_ne!(disk_content(&root, "v"), at_snapshot);
        root.ok(&["snapshot", "restore", "v", "snap0"]);
        assert_eq!(root.status("v"), "stopped");
        assert!(
            disk_content(&root, "v") == at_snapshot,
            "the disk came back"
        );
        // The overlay the restore replaced is gone.
        assert_eq!(disk_files(&root, "v").len(), 1);
    }
    boots(&root, "v");
    assert!(disk_content(&root, "v")[4 * MIB as usize..5 * MIB as usize]
        .iter()
        .all(|&b| b == 0xa1));

    // A second snapshot's default name counts on; deleting the instance takes them all.
    assert_eq!(
        root.ok(&["snapshot", "create", "v"]),
        "created snapshot snap1 of v\n"
    );
    assert_eq!(common::snapshot_names(&root, "v"), ["snap0", "snap1"]);
    root.ok(&["delete", "v"]);
    assert!(!root.instance_dir("v").exists());
}

#[test]
fn deleting_a_snapshot_keeps_its_base_while_a_disk_or_a_later_snapshot_builds_on_it() {
    require_kvm!();
    let root = Root::new();
    hello_vm(&root, "v");
    write_disk(&root, "v", 0, MIB, 0x11);
    root.ok(&["snapshot", "create", "v", "first"]);
    write_disk(&root, "v", MIB, MIB, 0x22);
    let at_second = disk_content(&root, "v");
    root.ok(&["snapshot", "create", "v", "second"]);
    write_disk(&root, "v", 2 * MIB, MIB, 0x33);
    assert_eq!(snapshot_dirs(&root, "v").len(), 2);

    // `second`'s base is an overlay on `first`'s: deleting `first` keeps its base.
    root.ok(&["snapshot", "delete", "v", "first"]);
    assert_eq!(common::snapshot_names(&root, "v"), ["second"]);
    assert_eq!(snapshot_dirs(&root, "v").len(), 2);
    root.ok(&["snapshot", "restore", "v", "second"]);
    assert!(disk_content(&root, "v") == at_second);
    boots(&root, "v");

    // A snapshot nothing builds on goes whole; then `first`'s base (below the disk) still stays.
    root.ok(&["snapshot", "create", "v", "third"]);
    root.ok(&["snapshot", "restore", "v", "second"]);
    root.ok(&["snapshot", "delete", "v", "third"]);
    assert_eq!(snapshot_dirs(&root, "v").len(), 2);
    root.ok(&["snapshot", "delete", "v", "second"]);
    assert!(common::snapshot_names(&root, "v").is_empty());
    assert_eq!(
        snapshot_dirs(&root, "v").len(),
        2,
        "the disk's chain needs both bases"
    );
    assert!(disk_content(&root, "v") == at_second);
    boots(&root, "v");
}

#[test]
fn bad_snapshot_requests_are_refused_with_a_sentence_and_change_nothing() {
    require_kvm!();
    let root = Root::new();
    hello_vm(&root, "v");
    let err = root.fails(&["snapshot", "create", "ghost"]);
    assert!(err.contains("instance ghost does not exist"), "{err}");
    root.ok(&["snapshot", "create", "v", "one"]);
    let before = std::fs::read(root.instance_dir("v").join("instance.toml")).unwrap();

    let err = root.fails(&["snapshot", "create", "v", "one"]);
    assert!(
        err.contains("instance v already has a snapshot one"),
        "{err}"
    );
    let err = root.fails(&["snapshot", "create", "v", "../x"]);
    assert!(err.contains("is not a valid snapshot name"), "{err}");
    for verb in ["restore", "delete"] {
        let err = root.fails(&["snapshot", verb, "v", "nope"]);
        assert!(
            err.contains("instance v has no snapshot nope; `corral snapshot list v`"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read(root.instance_dir("v").join("instance.toml")).unwrap(),
        before
    );
    assert_eq!(common::snapshot_names(&root, "v"), ["one"]);
}

/// The numbers of the console's complete lines that start with `prefix`, in order.
fn numbered(console: &str, prefix: &str) -> Vec<u64> {
    console
        .split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n')?.strip_prefix(prefix))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

fn assert_consecutive(numbers: &[u64], what: &str) {
    for pair in numbers.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{what}: a gap or repeat in {numbers:?}"
        );
    }
}

fn supervisor_pid(root: &Root, name: &str) -> u64 {
    root.info(name)["state"]["pid"].as_u64().unwrap()
}

/// Waits until instance `name`'s console, from byte `from` on (where a run killed earlier left
/// off, maybe mid-line), holds `count` complete lines starting with `prefix`; returns that part.
fn wait_for_lines(root: &Root, name: &str, prefix: &str, from: usize, count: usize) -> String {
    let mut logs = String::new();
    common::wait_for(
        &format!("{count} lines {prefix:?}"),
        std::time::Duration::from_secs(30),
        || {
            logs = root.ok(&["logs", name]).split_off(from);
            numbered(&logs, prefix).len() >= count
        },
    );
    logs
}

#[test]
fn a_running_vm_snapshot_keeps_it_counting_and_its_restore_goes_back_to_that_count() {
    require_kvm!();
    let root = Root::new();
    common::create_vm(&root, "counter", "counter", &[]);
    root.ok(&["start", "counter"]);
    let before = numbered(&wait_for_lines(&root, "counter", "count ", 0, 3), "count ");
    let pid = supervisor_pid(&root, "counter");

    let out = root.ok(&["snapshot", "create", "counter"]);
    assert!(
        out.starts_with("created snapshot snap0 of counter with its memory and device state"),
        "{out}"
    );
    let paused_ms: u64 = out
        .split("paused for ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    println!("the guest was paused for {paused_ms} ms");
    let after = numbered(&root.ok(&["logs", "counter"]), "count ");
    // Still running, under a new supervisor, counting on from where it was.
    assert_eq!(root.status("counter"), "running");
    assert_ne!(supervisor_pid(&root, "counter"), pid);
    let list = root.ok(&["snapshot", "list", "counter"]);
    assert!(list.contains(" yes "), "{list}");
    let logs = wait_for_lines(&root, "counter", "count ", 0, after.len() + 5);
    let counts = numbered(&logs, "count ");
    assert_consecutive(&counts, "counting across the snapshot");

    // Stopped later, the snapshot's restore runs it again from the count it had.
    root.ok(&["kill", "counter"]);
    let at_kill = root.ok(&["logs", "counter"]);
    let last = *numbered(&at_kill, "count ").last().unwrap();
    let out = root.ok(&["snapshot", "restore", "counter", "snap0"]);
    assert!(out.contains("running from its saved state"), "{out}");
    assert_eq!(root.status("counter"), "running");
    let restored = numbered(
        &wait_for_lines(&root, "counter", "count ", at_kill.len(), 5),
        "count ",
    );
    assert_consecutive(&restored, "counting after the restore");
    let first = restored[0];
    let (at_least, at_most) = (*before.last().unwrap(), *after.last().unwrap());
    assert!(
        (at_least + 1..=at_most + 1).contains(&first) && first < last,
        "restored at {first}: the snapshot was taken between counts {at_least} and {at_most}, the \
         guest had reached {last}"
    );
    root.ok(&["kill", "counter"]);
}

/// The sum the `snapshot-io` guest prints for round `round` (guests/snapshot-io.c).
fn round_sum(round: u64) -> u64 {
    (0..512u64)
        .map(|j| (round + j).wrapping_mul(j + 1) & 0xff)
        .sum()
}

/// The round numbers of the `snapshot-io` guest's lines, each checked to have read back what it
/// wrote to its disk.
fn io_rounds(console: &str) -> Vec<u64> {
    console
        .split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n')?.strip_prefix("round "))
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let round: u64 = words[0].parse().unwrap();
            assert_eq!(
                words[1..3],
                ["blk".to_string(), round_sum(round).to_string()],
                "{line}"
            );
            round
        })
        .collect()
}

#[test]
fn a_running_vm_writing_its_disk_goes_on_on_an_overlay_and_restores_to_it() {
    require_kvm!();
    let root = Root::new();
    common::import_vm_image(&root, root.dir.path(), "io", "1M", "snapshot-io");
    root.ok(&["create", "io", "--image", "io", "--memory", "32M"]);
    root.ok(&["start", "io"]);
    wait_for_lines(&root, "io", "round ", 0, 3);
    let out = root.ok(&["snapshot", "create", "io", "busy"]);
    assert!(out.contains("with its memory and device state"), "{out}");
    let files = disk_files(&root, "io");
    assert!(
        files.len() == 1 && files[0].starts_with("root-"),
        "{files:?}"
    );
    let seen = io_rounds(&root.ok(&["logs", "io"])).len();
    let rounds = io_rounds(&wait_for_lines(&root, "io", "round ", 0, seen + 5));
    assert_consecutive(&rounds, "rounds across the snapshot");

    root.ok(&["kill", "io"]);
    let at_kill = root.ok(&["logs", "io"]).len();
    root.ok(&["snapshot", "restore", "io", "busy"]);
    let restored = io_rounds(&wait_for_lines(&root, "io", "round ", at_kill, 5));
    assert_consecutive(&restored, "rounds after the restore");
    assert!(
        restored[0] <= rounds[rounds.len() - 1],
        "{restored:?} went back"
    );
    root.ok(&["kill", "io"]);
}

#[test]
fn a_paused_vm_is_refused_and_a_restore_needs_it_stopped() {
    require_kvm!();
    let root = Root::new();
    common::create_vm(&root, "counter", "counter", &[]);
    root.ok(&["snapshot", "create", "counter", "cold"]);
    root.ok(&["start", "counter"]);
    root.ok(&["pause", "counter"]);
    let err = root.fails(&["snapshot", "create", "counter"]);
    assert!(err.contains("instance counter is paused"), "{err}");
    assert!(err.contains("`corral resume counter`"), "{err}");
    let err = root.fails(&["snapshot", "restore", "counter", "cold"]);
    assert!(
        err.contains("stop it first (`corral stop counter`)"),
        "{err}"
    );
    root.ok(&["kill", "counter"]);
    // A stateless snapshot's restore leaves the VM stopped.
    root.ok(&["snapshot", "restore", "counter", "cold"]);
    assert_eq!(root.status("counter"), "stopped");
}

#[test]
fn a_stopped_container_snapshot_brings_its_root_filesystem_back_and_is_not_restored_over_a_running_one(
) {
    require_root!();
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let tree = root.dir.path().join("busybox");
    common::build_rootfs(&tree);
    std::fs::write(tree.join("etc/motd"), b"as snapshotted\n").unwrap();
    root.ok(&[
        "create",
        "box",
        "--rootfs",
        tree.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "sleep 60",
    ]);
    let motd = root.instance_dir("box").join("rootfs/etc/motd");
    assert!(
        motd.exists(),
        "the container's rootfs is {}",
        motd.display()
    );
    root.ok(&["snapshot", "create", "box", "clean"]);
    std::fs::write(&motd, b"changed\n").unwrap();
    std::fs::write(root.instance_dir("box").join("rootfs/etc/new"), b"x").unwrap();
    root.ok(&["snapshot", "restore", "box", "clean"]);
    assert_eq!(std::fs::read(&motd).unwrap(), b"as snapshotted\n");
    assert!(!root.instance_dir("box").join("rootfs/etc/new").exists());
    // Nothing is left of the swap.
    let hidden: Vec<_> = std::fs::read_dir(root.instance_dir("box").join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // A running container's snapshot needs CRIU: tests/checkpoint.rs.
    root.ok(&["start", "box"]);
    let err = root.fails(&["snapshot", "restore", "box", "clean"]);
    assert!(err.contains("stop it first (`corral stop box`)"), "{err}");
    root.ok(&["kill", "box"]);
}

/// The snapshot's record names the definition it restores.
#[test]
fn a_restore_brings_the_definition_back_too() {
    require_kvm!();
    let root = Root::new();
    hello_vm(&root, "v");
    root.ok(&["snapshot", "create", "v"]);
    root.ok(&["config", "set", "v", "cpus=2"]);
    root.ok(&["snapshot", "restore", "v", "snap0"]);
    let info = root.info("v");
    assert_eq!(info["definition"]["cpus"], 1, "{info}");
    let dir: &Path = &root.instance_dir("v");
    assert!(dir.join("snapshots").is_dir());
}
