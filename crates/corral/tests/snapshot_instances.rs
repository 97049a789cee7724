//! End-to-end tests of `corral snapshot` through the real binary on a temporary corral root: a
//! stopped VM's disks come back byte for byte (again and again), deleted snapshots keep the bases
//! later ones need, a stopped container's root filesystem comes back, and each refusal is one
//! sentence that changes nothing.

mod common;

use std::path::{Path, PathBuf};

use corral_disk::{BackingPolicy, DiskFormat, OpenOptions};
use corral_testkit::{require_kvm, require_root};
use serde_json::Value;

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

fn snapshot_names(root: &Root, name: &str) -> Vec<String> {
    let list: Value =
        serde_json::from_str(&root.ok(&["snapshot", "list", name, "-o", "json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
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
    assert_eq!(snapshot_names(&root, "v"), ["snap0", "snap1"]);
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
    assert_eq!(snapshot_names(&root, "v"), ["second"]);
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
    assert!(snapshot_names(&root, "v").is_empty());
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
    assert!(err.contains("ghost"), "{err}");
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
    assert_eq!(snapshot_names(&root, "v"), ["one"]);
}

#[test]
fn a_running_vm_is_refused_and_a_restore_needs_it_stopped() {
    require_kvm!();
    let root = Root::new();
    hello_vm(&root, "v");
    root.ok(&["snapshot", "create", "v"]);
    common::create_vm(&root, "counter", "counter", &[]);
    root.ok(&["start", "counter"]);
    let err = root.fails(&["snapshot", "create", "counter"]);
    assert!(
        err.contains("stop it first (`corral stop counter`)"),
        "{err}"
    );
    assert!(snapshot_dirs(&root, "counter").is_empty());
    root.ok(&["kill", "counter"]);
    // A stopped VM without disks has nothing but its definition to keep.
    root.ok(&["snapshot", "create", "counter"]);
    root.ok(&["snapshot", "restore", "counter", "snap0"]);
}

#[test]
fn a_stopped_container_snapshot_brings_its_root_filesystem_back_and_a_running_one_is_refused() {
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

    root.ok(&["start", "box"]);
    let err = root.fails(&["snapshot", "create", "box"]);
    assert!(
        err.contains("checkpointing running containers needs CRIU"),
        "{err}"
    );
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
