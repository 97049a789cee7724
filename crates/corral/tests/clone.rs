//! End-to-end tests of `corral clone` through the real binary on a temporary corral root:
//! containers and VMs, full and linked copies, what changes in the definition (the identity,
//! checked by diffing the two files) and what must not (everything else, the source's files), and
//! the refusals that leave nothing behind.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_disk::{DiskFormat, OpenOptions};
use corral_testkit::{require_kvm, require_program, require_root};
use serde_json::Value;

use common::{wait_for, CorralRoot as Root};

/// Every entry below `dir` (but `skip`, relative to it): type, mode, owner and content (SHA-256)
/// or link target, by relative path.
fn manifest(dir: &Path, skip: &[&str]) -> BTreeMap<PathBuf, String> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let relative = path.strip_prefix(dir).unwrap().to_path_buf();
        if skip.iter().any(|s| relative == Path::new(s)) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            "dir".to_string()
        } else if meta.is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else {
            sha256(&std::fs::read(&path).unwrap())
        };
        let line = format!("{:o} {}:{} {content}", meta.mode(), meta.uid(), meta.gid());
        entries.insert(relative, line);
    }
    entries
}

fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Instance `name`'s definition file, parsed.
fn definition(root: &Root, name: &str) -> toml::Table {
    let text = std::fs::read_to_string(root.instance_dir(name).join("instance.toml")).unwrap();
    text.parse().unwrap()
}

/// A definition without the fields a clone gets anew: name, uuid, a container's hostname, the
/// MAC addresses of its interfaces.
fn without_identity(mut definition: toml::Table) -> toml::Table {
    definition.remove("name");
    definition.remove("uuid");
    if let Some(toml::Value::Table(container)) = definition.get_mut("container") {
        container.remove("hostname");
    }
    if let Some(toml::Value::Array(nics)) = definition.get_mut("nics") {
        for nic in nics {
            if let toml::Value::Table(nic) = nic {
                nic.remove("mac");
            }
        }
    }
    definition
}

/// Asserts the clone's definition equals the source's but for the identity, which is its own.
fn assert_same_but_identity(root: &Root, source: &str, clone: &str) {
    let (a, b) = (definition(root, source), definition(root, clone));
    assert_eq!(b["name"].as_str(), Some(clone));
    assert_ne!(a["uuid"], b["uuid"], "the clone needs a UUID of its own");
    assert_eq!(
        without_identity(a.clone()),
        without_identity(b.clone()),
        "{source} and {clone} differ beyond their identity:\n{a:#?}\n{b:#?}"
    );
}

/// Nothing of instance `name` exists: no directory, no staging directory.
fn assert_absent(root: &Root, name: &str) {
    assert!(!root.instance_dir(name).exists(), "{name} was left behind");
    let staging: Vec<String> = std::fs::read_dir(root.path().join("instances"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(staging.is_empty(), "hidden litter: {staging:?}");
}

/// A busybox tree with a setuid file and a file owned by another user, beside the root.
fn rootfs(root: &Root) -> PathBuf {
    let tree = root.dir.path().join("busybox");
    common::build_rootfs(&tree);
    let tool = tree.join("bin/setuid-tool");
    std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(tree.join("etc/motd"), b"made for a clone\n").unwrap();
    std::os::unix::fs::chown(tree.join("etc/motd"), Some(1000), Some(1000)).unwrap();
    // The source's identity, which a clone must not carry.
    std::fs::write(
        tree.join("etc/machine-id"),
        format!("{SOURCE_MACHINE_ID}\n"),
    )
    .unwrap();
    std::fs::write(tree.join("etc/hostname"), b"boxhost\n").unwrap();
    std::fs::create_dir_all(tree.join("var/log")).unwrap();
    std::fs::write(tree.join("var/log/messages"), b"the source's log\n").unwrap();
    tree
}

const SOURCE_MACHINE_ID: &str = "0123456789abcdef0123456789abcdef";

/// The identity files of [`rootfs`], which a clone's reset changes.
const IDENTITY_FILES: [&str; 3] = ["etc/machine-id", "etc/hostname", "var/log/messages"];

#[test]
fn a_container_clone_copies_the_content_gets_a_new_identity_and_leaves_the_source_as_it_was() {
    require_root!();
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let tree = rootfs(&root);
    root.ok(&[
        "create",
        "box",
        "--rootfs",
        tree.to_str().unwrap(),
        "--hostname",
        "boxhost",
        "--",
        "/bin/sh",
        "-c",
        "echo host=$(hostname); cat /etc/motd",
    ]);
    // The lock names its last holder, which the clone is.
    let before = manifest(&root.instance_dir("box"), &["lock"]);

    let out = root.ok(&["clone", "box", "box2"]);
    assert!(out.starts_with("cloned container box as box2\n"), "{out}");
    for change in [
        "machine-id: truncated /etc/machine-id",
        "hostname: wrote /etc/hostname",
        "logfiles: truncated /var/log/messages",
    ] {
        assert!(out.contains(change), "no `{change}` in:\n{out}");
    }
    assert_eq!(
        manifest(&root.instance_dir("box"), &["lock"]),
        before,
        "the source changed"
    );
    assert_eq!(
        manifest(&root.instance_dir("box").join("rootfs"), &IDENTITY_FILES),
        manifest(&root.instance_dir("box2").join("rootfs"), &IDENTITY_FILES),
        "the root filesystems differ beyond the identity (content, modes or owners)"
    );
    let clone_rootfs = root.instance_dir("box2").join("rootfs");
    assert_eq!(
        std::fs::read(clone_rootfs.join("etc/machine-id")).unwrap(),
        b""
    );
    assert_eq!(
        std::fs::read(clone_rootfs.join("etc/hostname")).unwrap(),
        b"box2\n"
    );
    assert_eq!(
        std::fs::read(clone_rootfs.join("var/log/messages")).unwrap(),
        b""
    );

    // --keep-identity: a copy, byte for byte.
    root.ok(&["clone", "box", "twin", "--keep-identity"]);
    assert_eq!(
        manifest(&root.instance_dir("box").join("rootfs"), &[]),
        manifest(&root.instance_dir("twin").join("rootfs"), &[]),
        "--keep-identity changed the copy"
    );
    assert_same_but_identity(&root, "box", "box2");
    assert_eq!(
        definition(&root, "box2")["container"]["hostname"].as_str(),
        Some("box2"),
        "the source's hostname is replaced by the clone's name"
    );
    root.ok(&["start", "box2"]);
    wait_for("the clone's output", Duration::from_secs(20), || {
        root.ok(&["logs", "box2"]).contains("made for a clone")
    });
    assert!(root.ok(&["logs", "box2"]).contains("host=box2"));

    let out = root.ok(&["clone", "box", "box3", "--hostname", "other", "--start"]);
    assert!(out.contains("started"), "{out}");
    wait_for("the second clone's output", Duration::from_secs(20), || {
        root.ok(&["logs", "box3"]).contains("host=other")
    });
    let json: Value =
        serde_json::from_str(&root.ok(&["clone", "box", "box4", "-o", "json"])).unwrap();
    assert_eq!(json["definition"]["name"], "box4");
    assert_eq!(json["definition"]["container"]["hostname"], "box4");
}

#[test]
fn cloning_a_running_or_paused_container_an_existing_or_unknown_name_is_refused_cleanly() {
    require_root!();
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let tree = rootfs(&root);
    root.ok(&[
        "create",
        "box",
        "--rootfs",
        tree.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    root.ok(&["start", "box"]);
    let err = root.fails(&["clone", "box", "copy"]);
    assert!(
        err.contains("instance box is running") && err.contains("--force"),
        "{err}"
    );
    assert_absent(&root, "copy");
    let err = root.fails(&["clone", "box", "copy", "--force"]);
    assert!(err.contains("instance box is running"), "{err}");
    assert_absent(&root, "copy");

    root.ok(&["pause", "box"]);
    let err = root.fails(&["clone", "box", "copy"]);
    assert!(
        err.contains("instance box is paused") && err.contains("--force"),
        "{err}"
    );
    assert_absent(&root, "copy");
    root.ok(&["clone", "box", "copy", "--force"]);
    assert_eq!(root.status("box"), "paused", "the source stays paused");
    assert_eq!(
        manifest(&root.instance_dir("box").join("rootfs"), &IDENTITY_FILES),
        manifest(&root.instance_dir("copy").join("rootfs"), &IDENTITY_FILES),
    );

    let err = root.fails(&["clone", "box", "copy", "--force"]);
    assert!(err.contains("instance copy already exists"), "{err}");
    let err = root.fails(&["clone", "nothing", "other"]);
    assert!(err.contains("instance nothing does not exist"), "{err}");
    assert_absent(&root, "other");
    let err = root.fails(&["clone", "box", "../escape", "--force"]);
    assert!(err.contains("invalid instance name"), "{err}");
    assert!(!root.path().join("escape").exists());
    assert_absent(&root, "other");
}

/// Defines VM `name` running the `hello` guest with `extra` arguments for `corral create`.
fn create_hello_vm(root: &Root, name: &str, extra: &[&str]) {
    common::create_vm(root, name, "hello", extra);
}

#[test]
fn vm_interfaces_get_new_macs_and_disks_outside_the_instance_are_shared_or_refused() {
    let root = Root::new();
    create_hello_vm(
        &root,
        "net",
        &[
            "--nic",
            "bridge=br0,mac=52:54:00:12:34:56",
            "--nic",
            "bridge=br1",
        ],
    );
    root.ok(&["clone", "net", "net2"]);
    assert_same_but_identity(&root, "net", "net2");
    let clone = definition(&root, "net2");
    let nics = clone["nics"].as_array().unwrap();
    let mac = nics[0]["mac"].as_str().unwrap();
    assert_ne!(mac, "52:54:00:12:34:56", "a pinned MAC is replaced");
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(
        first & 0b11,
        0b10,
        "{mac} is not locally administered unicast"
    );
    assert!(
        nics[1].get("mac").is_none(),
        "an interface without a MAC derives one from the new UUID"
    );
    let info: Value = serde_json::from_str(&root.ok(&["info", "net2", "-o", "json"])).unwrap();
    assert_eq!(info["definition"]["nics"][0]["mac"], mac);

    create_hello_vm(&root, "tapped", &["--nic", "tap=ctap-fixed"]);
    let err = root.fails(&["clone", "tapped", "tapped2"]);
    assert!(
        err.contains("tap device ctap-fixed") && err.contains("--nic"),
        "{err}"
    );
    assert_absent(&root, "tapped2");
    root.ok(&["clone", "tapped", "tapped2", "--nic", "bridge=br0"]);
    assert_eq!(
        definition(&root, "tapped2")["nics"][0]["bridge"].as_str(),
        Some("br0")
    );

    let disk = root.dir.path().join("shared.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let writable = disk.to_str().unwrap().to_string();
    create_hello_vm(&root, "disked", &["--disk", &writable]);
    let err = root.fails(&["clone", "disked", "disked2"]);
    assert!(
        err.contains(&format!("disks[0] of instance disked (file {writable})"))
            && err.contains("readonly"),
        "{err}"
    );
    assert_absent(&root, "disked2");
    let readonly = format!("{writable},ro");
    create_hello_vm(&root, "reader", &["--disk", &readonly]);
    let err = root.fails(&["clone", "reader", "reader2"]);
    assert!(
        err.contains("read-only and shared") && err.contains("--keep-identity"),
        "{err}"
    );
    assert_absent(&root, "reader2");
    root.ok(&["clone", "reader", "reader2", "--keep-identity"]);
    assert_same_but_identity(&root, "reader", "reader2");
}

/// Writes `length` bytes of `pattern` at `offset` into the VM disk at `path` (qcow2).
fn write_disk(path: &Path, offset: u64, length: usize, pattern: u8, allow: &[PathBuf]) {
    let options = OpenOptions {
        backing: corral_disk::BackingPolicy::Within(allow.to_vec()),
        ..OpenOptions::writable().format(DiskFormat::Qcow2)
    };
    let mut disk = corral_disk::open(path, options).unwrap();
    disk.write_at(&vec![pattern; length], offset).unwrap();
    disk.flush().unwrap();
}

/// `length` bytes at `offset` of the virtual disk at `path` (qcow2, backing files in `allow`).
fn read_disk(path: &Path, offset: u64, length: usize, allow: &[PathBuf]) -> Vec<u8> {
    let options = OpenOptions {
        backing: corral_disk::BackingPolicy::Within(allow.to_vec()),
        ..OpenOptions::read_only().format(DiskFormat::Qcow2)
    };
    let disk = corral_disk::open(path, options).unwrap();
    let mut bytes = vec![0; length];
    disk.read_at(&mut bytes, offset).unwrap();
    bytes
}

/// Bytes a file takes on disk.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The base files of the root's linked clones.
fn bases(root: &Root) -> Vec<PathBuf> {
    match std::fs::read_dir(root.path().join("bases")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The path of instance `name`'s first disk and the backing places its definition allows.
fn first_disk(root: &Root, name: &str) -> (PathBuf, Vec<PathBuf>) {
    let definition = definition(root, name);
    let disk = &definition["disks"][0];
    let path = root.instance_dir(name).join(disk["path"].as_str().unwrap());
    let allow = disk
        .get("allow_backing")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().map(|p| p.as_str().unwrap().into()).collect())
        .unwrap_or_default();
    (path, allow)
}

/// Starts VM `name` and waits for one more greeting of the hello guest in its console log (which
/// keeps earlier runs'), then for its power-off.
fn greets(root: &Root, name: &str) {
    const GREETING: &str = "hello from a corral test guest";
    let before = root.ok(&["logs", name]).matches(GREETING).count();
    root.ok(&["start", name]);
    wait_for(
        &format!("{name}'s greeting"),
        Duration::from_secs(20),
        || root.ok(&["logs", name]).matches(GREETING).count() > before,
    );
    wait_for(
        &format!("{name}'s power-off"),
        Duration::from_secs(20),
        || root.status(name) == "stopped",
    );
}

const MIB: usize = 1 << 20;

#[test]
fn vm_clones_full_and_linked_share_nothing_they_write_and_outlive_each_other() {
    require_kvm!();
    let root = Root::new();
    common::import_hello_vm_image(&root, root.dir.path(), "hello-vm", "64M");
    root.ok(&[
        "create", "solo", "--image", "hello-vm", "--full", "--memory", "32M",
    ]);
    // 8 MiB of data in the standalone disk, so sizes tell copies from overlays.
    let (solo_disk, _) = first_disk(&root, "solo");
    write_disk(&solo_disk, 0, 8 * MIB, 0xab, &[]);
    let solo_before = manifest(&root.instance_dir("solo"), &["lock"]);

    // The test guest's disk holds no filesystem whose identity corral could reset.
    let err = root.fails(&["clone", "solo", "full"]);
    assert!(
        err.contains("cannot reset the identity of instance full") && err.contains("ext2/3/4"),
        "{err}"
    );
    assert_absent(&root, "full");

    // Full (the default): an independent copy of the file.
    root.ok(&["clone", "solo", "full", "--keep-identity"]);
    assert_same_but_identity(&root, "solo", "full");
    assert_eq!(
        manifest(&root.instance_dir("solo"), &["lock"]),
        solo_before,
        "a full clone changed its source"
    );
    let (full_disk, _) = first_disk(&root, "full");
    assert_eq!(
        sha256(&std::fs::read(&full_disk).unwrap()),
        sha256(&std::fs::read(&solo_disk).unwrap())
    );
    write_disk(&full_disk, 0, MIB, 0xcd, &[]);
    assert_eq!(
        manifest(&root.instance_dir("solo"), &["lock"]),
        solo_before,
        "writing the full clone changed its source"
    );
    greets(&root, "full");

    // Linked: the standalone disk is frozen into a base; source and clone are overlays on it.
    let source_disk_bytes = read_disk(&solo_disk, 0, 8 * MIB, &[]);
    root.ok(&["clone", "solo", "linked", "--linked", "--keep-identity"]);
    assert_same_but_identity(&root, "solo", "linked");
    let [base] = bases(&root).try_into().expect("one base");
    assert!(
        allocated(&base) >= 8 * MIB as u64,
        "the base holds the data"
    );
    let (solo_overlay, solo_allow) = first_disk(&root, "solo");
    let (linked_overlay, linked_allow) = first_disk(&root, "linked");
    assert_eq!(solo_allow, std::slice::from_ref(&base));
    assert_eq!(linked_allow, std::slice::from_ref(&base));
    assert!(
        !solo_disk.exists(),
        "the source's disk lives on as the base"
    );
    for overlay in [&solo_overlay, &linked_overlay] {
        assert!(
            allocated(overlay) < MIB as u64,
            "{} takes {} bytes",
            overlay.display(),
            allocated(overlay)
        );
    }
    assert_eq!(
        read_disk(&solo_overlay, 0, 8 * MIB, &solo_allow),
        source_disk_bytes,
        "the source's disk reads as before"
    );
    write_disk(&linked_overlay, 0, MIB, 0x11, &linked_allow);
    assert_eq!(
        read_disk(&solo_overlay, 0, MIB, &solo_allow),
        vec![0xab; MIB],
        "writing the linked clone changed its source"
    );
    greets(&root, "linked");

    // A second linked clone copies the source's (small) overlay onto the same base.
    root.ok(&["clone", "solo", "linked2", "--linked", "--keep-identity"]);
    assert_eq!(bases(&root), std::slice::from_ref(&base));
    assert_eq!(first_disk(&root, "linked2").1, std::slice::from_ref(&base));

    // Deleting the source keeps the base for the clones; the last user takes it along.
    root.ok(&["delete", "--force", "solo"]);
    assert!(base.exists());
    greets(&root, "linked2");
    greets(&root, "linked");
    // Deleted together (at once), the last two users take it along as well.
    root.ok(&["delete", "--force", "linked2", "linked"]);
    assert!(
        bases(&root).is_empty(),
        "an unused base is left: {:?}",
        bases(&root)
    );

    // And the other way round: deleting the clone leaves the source working.
    root.ok(&[
        "create", "solo2", "--image", "hello-vm", "--full", "--memory", "32M",
    ]);
    root.ok(&["clone", "solo2", "gone", "--linked", "--keep-identity"]);
    root.ok(&["delete", "gone"]);
    assert_eq!(bases(&root).len(), 1, "the source still uses its base");
    greets(&root, "solo2");
    root.ok(&["delete", "--force", "solo2"]);
    assert!(bases(&root).is_empty());
}

#[test]
fn a_vm_linked_to_an_image_clones_into_another_user_of_that_image() {
    require_kvm!();
    let root = Root::new();
    common::import_hello_vm_image(&root, root.dir.path(), "hello-vm", "16M");
    root.ok(&["create", "v1", "--image", "hello-vm", "--memory", "32M"]);
    let (v1_disk, allow) = first_disk(&root, "v1");
    write_disk(&v1_disk, 0, MIB, 0x5a, &allow);
    root.ok(&["clone", "v1", "v2", "--linked", "--keep-identity"]);
    assert_same_but_identity(&root, "v1", "v2");
    assert!(bases(&root).is_empty(), "an overlay is copied, not frozen");
    let (v2_disk, v2_allow) = first_disk(&root, "v2");
    assert_eq!(read_disk(&v2_disk, 0, MIB, &v2_allow), vec![0x5a; MIB]);
    root.ok(&["delete", "v1"]);
    let err = root.fails(&["image", "delete", "hello-vm"]);
    assert!(err.contains("is used by v2"), "{err}");
    greets(&root, "v2");
}

fn sh(script: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

/// A full clone of a VM made on an XFS (loop-mounted, made with `reflink` set as given): its
/// output and the extents of the clone's disk (`filefrag -v`).
fn full_clone_on_xfs(scratch: &Path, reflink: u8) -> (String, String) {
    let image = scratch.join(format!("xfs{reflink}.img"));
    let mount = scratch.join(format!("xfs{reflink}"));
    std::fs::create_dir(&mount).unwrap();
    sh(&format!(
        "truncate -s 512M {i} && mkfs.xfs -q -m reflink={reflink} {i} && mount -o loop {i} {m}",
        i = image.display(),
        m = mount.display()
    ));
    let result = std::panic::catch_unwind(|| {
        let root = Root {
            dir: tempfile::tempdir_in(&mount).unwrap(),
            netns: None,
        };
        common::import_hello_vm_image(&root, root.dir.path(), "hello-vm", "64M");
        root.ok(&[
            "create", "solo", "--image", "hello-vm", "--full", "--memory", "32M",
        ]);
        let (solo_disk, _) = first_disk(&root, "solo");
        write_disk(&solo_disk, 0, 8 * MIB, 0xab, &[]);
        let out = root.ok(&["clone", "solo", "twin", "--keep-identity"]);
        let (twin_disk, _) = first_disk(&root, "twin");
        let extents = std::process::Command::new("filefrag")
            .arg("-v")
            .arg(&twin_disk)
            .output()
            .unwrap();
        assert_eq!(
            sha256(&std::fs::read(&twin_disk).unwrap()),
            sha256(&std::fs::read(&solo_disk).unwrap())
        );
        (out, String::from_utf8_lossy(&extents.stdout).into_owned())
    });
    sh(&format!("umount {}", mount.display()));
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[test]
fn a_full_clone_shares_the_disks_blocks_where_the_filesystem_can_and_says_when_it_copies() {
    require_root!();
    require_program!("mkfs.xfs");
    require_program!("filefrag");
    let scratch = tempfile::tempdir().unwrap();

    let (out, extents) = full_clone_on_xfs(scratch.path(), 1);
    assert!(out.contains(": reflinked"), "{out}");
    assert!(extents.contains("shared"), "filefrag -v: {extents}");

    let (out, extents) = full_clone_on_xfs(scratch.path(), 0);
    assert!(
        out.contains(": copied (its data only): this filesystem cannot share blocks"),
        "{out}"
    );
    assert!(!extents.contains("shared"), "filefrag -v: {extents}");
}
