//! Identity reset through the binary: `corral clone` of a template fixture (a container root
//! filesystem and an ext4 VM disk) twice, `corral template` / `publish --seal`, `corral sysprep`
//! on an instance, a disk and a directory, and `corral guest sysprep`. VM disks are checked
//! offline with debugfs (never mounted). The fixture is corral-testkit's `identity` template.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_testkit::identity::{build_template, hash_file, hash_tree, DbusId, FIXED_ID};
use corral_testkit::{require_program, require_root};
use serde_json::Value;

use common::CorralRoot as Root;

/// `debugfs -R REQUEST` on the ext4 image at `image`, its stdout.
fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The raw bytes of the qcow2 (or raw) disk at `disk`, as a raw file in `dir`, for debugfs.
fn as_raw(disk: &Path, dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    let out = Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(disk)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    raw
}

/// An ext4 image (no partition table) of the template fixture.
fn template_disk(dir: &Path) -> PathBuf {
    let tree = dir.join("template-tree");
    std::fs::create_dir_all(&tree).unwrap();
    build_template(&tree, DbusId::Symlink);
    let image = dir.join("template.raw");
    corral_testkit::mkfs_ext4(&tree, &image, "64M");
    image
}

/// Instance `name`'s root disk: its `[[disks]]` first path, resolved.
fn root_disk(root: &Root, name: &str) -> PathBuf {
    let info: Value = root.info(name);
    let path = PathBuf::from(info["definition"]["disks"][0]["path"].as_str().unwrap());
    root.instance_dir(name).join(path)
}

/// A container whose root filesystem is busybox plus the template fixture.
fn template_container(root: &Root, name: &str) -> PathBuf {
    let tree = root.dir.path().join(format!("{name}-tree"));
    common::build_rootfs(&tree);
    build_template(&tree, DbusId::Separate);
    root.ok(&[
        "create",
        name,
        "--rootfs",
        tree.to_str().unwrap(),
        "--",
        "/bin/true",
    ]);
    root.instance_dir(name).join("rootfs")
}

fn host_key(rootfs: &Path) -> Vec<u8> {
    std::fs::read(rootfs.join("etc/ssh/ssh_host_ed25519_key.pub")).unwrap()
}

#[test]
fn two_container_clones_of_a_template_are_reset_and_differ_from_each_other() {
    require_root!();
    require_program!("ssh-keygen");
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let source = template_container(&root, "tmpl");
    let source_hash = hash_tree(&source);
    let source_key = host_key(&source);

    for clone in ["web1", "web2"] {
        let out = root.ok(&["clone", "tmpl", clone]);
        assert!(out.contains("ssh-hostkeys:"), "{out}");
    }
    assert_eq!(hash_tree(&source), source_hash, "the source changed");
    let (a, b) = (
        root.instance_dir("web1").join("rootfs"),
        root.instance_dir("web2").join("rootfs"),
    );
    for (name, rootfs) in [("web1", &a), ("web2", &b)] {
        let read = |path: &str| std::fs::read_to_string(rootfs.join(path)).unwrap();
        assert_eq!(read("etc/machine-id"), "", "{name}");
        assert_eq!(read("var/lib/dbus/machine-id"), "", "{name}");
        assert_eq!(read("etc/hostname"), format!("{name}\n"));
        assert!(
            read("etc/hosts").contains(&format!("127.0.1.1\t{name}")),
            "{name}"
        );
        for gone in [
            "var/lib/dhcp/dhclient.eth0.leases",
            "etc/udev/rules.d/70-persistent-net.rules",
            "root/.bash_history",
            "tmp/junk",
            "var/lib/cloud/instances",
        ] {
            assert!(!rootfs.join(gone).exists(), "{name} still has /{gone}");
        }
        let journal = format!("var/log/journal/{FIXED_ID}/system.journal");
        assert!(!rootfs.join(journal).exists(), "{name} kept the journal");
        assert!(
            !read("etc/sysconfig/network-scripts/ifcfg-eth0").contains("HWADDR"),
            "{name}"
        );
        assert_eq!(read("var/log/syslog"), "", "{name}");
        assert_ne!(
            host_key(rootfs),
            source_key,
            "{name} kept the source's host key"
        );
        assert_ne!(
            std::fs::read(rootfs.join("var/lib/systemd/random-seed")).unwrap(),
            std::fs::read(source.join("var/lib/systemd/random-seed")).unwrap(),
            "{name} kept the source's random seed"
        );
    }
    assert_ne!(
        host_key(&a),
        host_key(&b),
        "the two clones share a host key"
    );
}

#[test]
fn a_clone_told_to_remove_host_keys_has_none_and_its_source_keeps_its_own() {
    require_root!();
    require_program!("ssh-keygen");
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let source = template_container(&root, "tmpl");
    let source_key = host_key(&source);
    let out = root.ok(&["clone", "tmpl", "quick", "--ssh-hostkeys", "remove"]);
    assert!(out.contains("ssh-hostkeys: removed"), "{out}");
    let keys: Vec<_> = std::fs::read_dir(root.instance_dir("quick").join("rootfs/etc/ssh"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("ssh_host_"))
        .collect();
    assert!(keys.is_empty(), "the clone kept host keys: {keys:?}");
    assert_eq!(host_key(&source), source_key, "the source lost its key");
    let refused = root.fails(&[
        "clone",
        "tmpl",
        "q2",
        "--keep-identity",
        "--ssh-hostkeys",
        "new",
    ]);
    assert!(refused.contains("--keep-identity"), "{refused}");
}

#[test]
fn two_vm_clones_of_an_ext4_template_disk_are_reset_offline() {
    require_program!("mkfs.ext4");
    require_program!("debugfs");
    require_program!("qemu-img");
    require_program!("ssh-keygen");
    let root = Root::new();
    let scratch = root.dir.path();
    let disk = template_disk(scratch);
    let kernel = corral_guests::elf("hello");
    root.ok(&[
        "image",
        "import",
        disk.to_str().unwrap(),
        "--format",
        "disk",
        "--kernel",
        kernel.to_str().unwrap(),
        "--alias",
        "tmpl-disk",
    ]);
    root.ok(&["create", "tmpl", "--image", "tmpl-disk", "--memory", "32M"]);
    let source_disk = root_disk(&root, "tmpl");
    let source_hash = hash_file(&source_disk);

    root.ok(&["clone", "tmpl", "vm1"]);
    root.ok(&["clone", "tmpl", "vm2", "--linked", "--hostname", "second"]);
    assert_eq!(
        hash_file(&source_disk),
        source_hash,
        "the source's disk changed"
    );

    let source_raw = as_raw(&source_disk, scratch, "tmpl");
    let source_key = debugfs(&source_raw, "cat /etc/ssh/ssh_host_ed25519_key.pub");
    assert!(source_key.starts_with("ssh-ed25519 "), "{source_key}");
    assert_eq!(debugfs(&source_raw, "cat /etc/machine-id").trim(), FIXED_ID);
    let mut keys = Vec::new();
    for (name, hostname) in [("vm1", "vm1"), ("vm2", "second")] {
        let raw = as_raw(&root_disk(&root, name), scratch, name);
        assert_eq!(debugfs(&raw, "cat /etc/machine-id"), "", "{name}");
        assert_eq!(
            debugfs(&raw, "cat /etc/hostname"),
            format!("{hostname}\n"),
            "{name}"
        );
        assert!(
            !debugfs(&raw, "ls /var/lib/dhcp").contains("dhclient.eth0.leases"),
            "{name}"
        );
        assert_eq!(debugfs(&raw, "cat /var/log/syslog"), "", "{name}");
        let key = debugfs(&raw, "cat /etc/ssh/ssh_host_ed25519_key.pub");
        assert!(key.starts_with("ssh-ed25519 "), "{name}: {key}");
        assert_ne!(key, source_key, "{name} kept the source's host key");
        keys.push(key);
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&raw)
            .output()
            .unwrap();
        assert!(fsck.status.success(), "{name}: {fsck:?}");
    }
    assert_ne!(keys[0], keys[1], "the two clones share a host key");
}

#[test]
fn a_template_carries_no_identity_and_leaves_its_source_as_it_was() {
    require_root!();
    require_program!("ssh-keygen");
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let source = template_container(&root, "box");
    let before = hash_tree(&source);
    let out = root.ok(&["template", "box", "--alias", "sealed"]);
    assert!(
        out.contains("machine-id: truncated /etc/machine-id"),
        "{out}"
    );
    assert!(
        out.contains("published instance box as template image"),
        "{out}"
    );
    assert_eq!(hash_tree(&source), before, "templating changed its source");

    root.ok(&["create", "fromtmpl", "--image", "sealed", "--", "/bin/true"]);
    let made = root.instance_dir("fromtmpl").join("rootfs");
    assert_eq!(std::fs::read(made.join("etc/machine-id")).unwrap(), b"");
    let keys: Vec<_> = std::fs::read_dir(made.join("etc/ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(keys.is_empty(), "the template carries host keys: {keys:?}");
    assert!(!made.join("var/lib/cloud/instances").exists());

    // publish without --seal keeps the identity.
    root.ok(&["publish", "box", "--alias", "unsealed"]);
    root.ok(&["create", "twin", "--image", "unsealed", "--", "/bin/true"]);
    let twin = root.instance_dir("twin").join("rootfs");
    assert_eq!(
        std::fs::read_to_string(twin.join("etc/machine-id")).unwrap(),
        format!("{FIXED_ID}\n")
    );
}

#[test]
fn a_vm_template_is_sealed_in_its_image_disk() {
    require_program!("mkfs.ext4");
    require_program!("debugfs");
    require_program!("qemu-img");
    require_program!("ssh-keygen");
    let root = Root::new();
    let scratch = root.dir.path();
    let disk = template_disk(scratch);
    let before = hash_file(&disk);
    let disk_arg = format!("{},format=raw", disk.display());
    common::create_vm(&root, "vm", "hello", &["--disk", &disk_arg]);
    let out = root.ok(&["publish", "vm", "--seal", "--alias", "vm-template"]);
    assert!(out.contains("ssh-hostkeys: removed"), "{out}");
    assert_eq!(
        hash_file(&disk),
        before,
        "sealing changed the instance's disk"
    );

    let image: Value =
        serde_json::from_str(&root.ok(&["image", "info", "vm-template", "-o", "json"])).unwrap();
    let fingerprint = image["fingerprint"].as_str().unwrap();
    let image_disk = root
        .path()
        .join("images")
        .join(fingerprint)
        .join("disk.qcow2");
    let raw = as_raw(&image_disk, scratch, "sealed");
    assert_eq!(debugfs(&raw, "cat /etc/machine-id"), "");
    assert!(!debugfs(&raw, "ls /etc/ssh").contains("ssh_host_"));
}

#[test]
fn sysprep_resets_an_instance_a_disk_or_a_directory_and_a_dry_run_changes_nothing() {
    require_root!();
    require_program!("mkfs.ext4");
    require_program!("debugfs");
    require_program!("ssh-keygen");
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let listed = root.ok(&["sysprep", "--list-operations"]);
    assert!(
        listed.contains("machine-id") && listed.contains("fs-uuids"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("fs-uuids") && l.contains("opt-in")),
        "{listed}"
    );

    let rootfs = template_container(&root, "box");
    let before = hash_tree(&rootfs);
    let planned = root.ok(&["sysprep", "box", "--dry-run"]);
    assert!(
        planned.contains("machine-id: would truncate /etc/machine-id"),
        "{planned}"
    );
    assert_eq!(hash_tree(&rootfs), before, "a dry run changed the instance");
    let done = root.ok(&[
        "sysprep",
        "box",
        "--operations",
        "machine-id,hostname",
        "--hostname",
        "fresh",
    ]);
    assert!(
        done.contains("machine-id: truncated /etc/machine-id"),
        "{done}"
    );
    assert!(!done.contains("logfiles"), "{done}");
    assert_eq!(std::fs::read(rootfs.join("etc/machine-id")).unwrap(), b"");
    assert_eq!(
        std::fs::read(rootfs.join("etc/hostname")).unwrap(),
        b"fresh\n"
    );
    assert_ne!(
        std::fs::read(rootfs.join("var/log/syslog")).unwrap(),
        b"",
        "not asked for"
    );

    let err = root.fails(&["sysprep", "box", "--operations", "machine-id,bogus"]);
    assert!(err.contains("bogus"), "{err}");

    // A directory, with a new id written now.
    let dir = root.dir.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    build_template(&dir, DbusId::Symlink);
    let json: Value = serde_json::from_str(&root.ok(&[
        "sysprep",
        "--rootfs",
        dir.to_str().unwrap(),
        "--machine-id",
        "new",
        "-o",
        "json",
    ]))
    .unwrap();
    assert!(!json["changes"].as_array().unwrap().is_empty(), "{json}");
    let id = std::fs::read_to_string(dir.join("etc/machine-id")).unwrap();
    assert_eq!(id.trim().len(), 32, "{id:?}");
    assert_ne!(id.trim(), FIXED_ID);

    // The guest-side tool on the same kind of tree.
    let guest_dir = root.dir.path().join("guest");
    std::fs::create_dir(&guest_dir).unwrap();
    build_template(&guest_dir, DbusId::Separate);
    let guest_before = hash_tree(&guest_dir);
    let planned = root.ok(&[
        "guest",
        "sysprep",
        "--root",
        guest_dir.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(planned.contains("would"), "{planned}");
    assert_eq!(hash_tree(&guest_dir), guest_before);
    root.ok(&["guest", "sysprep", "--root", guest_dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(guest_dir.join("etc/machine-id")).unwrap(),
        b""
    );

    // A disk image, edited without mounting.
    let disk = template_disk(root.dir.path());
    let out = root.ok(&[
        "sysprep",
        "--disk",
        disk.to_str().unwrap(),
        "--hostname",
        "disky",
    ]);
    assert!(out.contains("hostname: wrote /etc/hostname"), "{out}");
    assert_eq!(debugfs(&disk, "cat /etc/hostname"), "disky\n");
    assert_eq!(debugfs(&disk, "cat /etc/machine-id"), "");

    // A running instance is refused.
    root.ok(&[
        "create",
        "sleeper",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "/bin/sleep",
        "60",
    ]);
    root.ok(&["start", "sleeper"]);
    let err = root.fails(&["sysprep", "sleeper"]);
    assert!(
        err.contains("is running") && err.contains("corral guest sysprep"),
        "{err}"
    );
}
