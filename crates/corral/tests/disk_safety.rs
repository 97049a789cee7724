//! What a VM's disks may reach: a disk's format is decided when it is attached and never guessed
//! again (a guest that writes a qcow2 header into its raw disk gains nothing), qcow2 backing files
//! stay in the storage pool unless the definition allows more, and an image has one writer at a
//! time (another VM, `volume resize`, `volume delete`, qemu) or any number of readers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_testkit::{require_kvm, require_program};

use common::{create_vm as vm, wait_for, CorralRoot as Root};

const MIB: u64 = 1 << 20;

fn qemu_img(args: &[&str]) {
    let output = Command::new("qemu-img").args(args).output().unwrap();
    assert!(output.status.success(), "qemu-img {args:?}: {output:?}");
}

/// What the dump guest printed for disk `index`: the first 16 bytes it read, in hex.
fn first_bytes_seen(logs: &str, index: usize) -> String {
    let prefix = format!("disk {index}: ");
    logs.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no line for disk {index} in:\n{logs}"))
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_qcow2_header_a_guest_writes_into_its_raw_disk_does_not_change_how_it_opens() {
    require_kvm!();
    require_program!("qemu-img");
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    // A host file the attack wants to read through the guest.
    let secret = host.path().join("secret");
    std::fs::write(&secret, b"TOP SECRET HOST FILE ".repeat(50_000)).unwrap();
    // A raw disk attached by path (its format detected now, once) and a raw pool volume.
    let disk = host.path().join("disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(MIB).unwrap();
    root.ok(&["volume", "create", "data", "--size", "1M"]);
    let volume = root.path().join("storage/default/data.raw");
    vm(
        &root,
        "victim",
        "virtio-blk-dump",
        &["--disk", disk.to_str().unwrap(), "--disk", "vol=data"],
    );

    // The guest writes a whole qcow2 image naming the host file as backing into the first bytes
    // of both disks, as it can through virtio-blk.
    let malicious = host.path().join("malicious.qcow2");
    let secret_name = secret.to_str().unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        secret_name,
        "-F",
        "raw",
        malicious.to_str().unwrap(),
        "1M",
    ]);
    let header = std::fs::read(&malicious).unwrap();
    for target in [&disk, &volume] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(target)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &header, 0).unwrap();
        // Probing would now take it for qcow2, reading the host file.
        assert_eq!(
            corral_disk::detect_format(target).unwrap(),
            corral_disk::DiskFormat::Qcow2
        );
    }

    root.ok(&["start", "victim"]);
    wait_for("the guest to finish", Duration::from_secs(60), || {
        root.status("victim") != "running"
    });
    let logs = root.ok(&["logs", "victim"]);
    assert!(logs.contains("dump: done"), "{logs}");
    // Both disks opened as raw: the guest reads its own header bytes, not the host's file.
    for index in 0..2 {
        assert_eq!(first_bytes_seen(&logs, index), hex(&header[..16]), "{logs}");
    }
    assert!(!logs.contains(&hex(b"TOP SECRET HOST ")), "{logs}");
    let info: serde_json::Value =
        serde_json::from_str(&root.ok(&["volume", "info", "data", "-o", "json"])).unwrap();
    assert_eq!(info["format"], "raw");
    let listed: serde_json::Value =
        serde_json::from_str(&root.ok(&["volume", "list", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["format"], "raw");
    assert!(
        root.ok(&["config", "show", "victim"])
            .contains("format = \"raw\""),
        "the path disk's format is recorded at create"
    );
}

#[test]
fn a_pool_qcow2_naming_a_host_file_as_backing_is_refused_at_start_and_by_volume_info() {
    require_kvm!();
    require_program!("qemu-img");
    let root = Root::new();
    root.ok(&[
        "volume", "create", "disk", "--format", "qcow2", "--size", "1M",
    ]);
    let image = root.path().join("storage/default/disk.qcow2");
    // The header edited to name /etc/passwd as the backing file.
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        image.to_str().unwrap(),
    ]);
    vm(&root, "reader", "virtio-blk-dump", &["--disk", "vol=disk"]);
    let refused = root.fails(&["start", "reader"]);
    assert!(refused.contains("/etc/passwd"), "{refused}");
    assert!(refused.contains("allow_backing"), "{refused}");
    assert_eq!(root.status("reader"), "stopped");
    let refused = root.fails(&["volume", "info", "disk"]);
    assert!(refused.contains("/etc/passwd"), "{refused}");
    assert!(refused.contains("allow_backing"), "{refused}");
    let listed = root.ok(&["volume", "list"]);
    assert!(listed.contains("unusable"), "{listed}");

    // Allowed explicitly in the definition, it is used.
    vm(
        &root,
        "allowed",
        "virtio-blk-dump",
        &["--disk", "vol=disk,allow_backing=/etc/passwd"],
    );
    root.ok(&["start", "allowed"]);
    wait_for("the guest to finish", Duration::from_secs(60), || {
        root.status("allowed") != "running"
    });
    let logs = root.ok(&["logs", "allowed"]);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    assert_eq!(first_bytes_seen(&logs, 0), hex(&passwd[..16]), "{logs}");
}

#[test]
fn one_writer_per_disk_named_when_refused_and_readers_share() {
    require_kvm!();
    let root = Root::new();
    root.ok(&["volume", "create", "shared", "--size", "1M"]);
    vm(&root, "first", "counter", &["--disk", "vol=shared"]);
    vm(&root, "second", "counter", &["--disk", "vol=shared"]);
    root.ok(&["start", "first"]);
    let pid = root.info("first")["state"]["pid"].as_u64().unwrap();

    let refused = root.fails(&["start", "second"]);
    assert!(
        refused.contains(&format!("in use by instance first (pid {pid})")),
        "{refused}"
    );
    assert_eq!(root.status("second"), "stopped");
    let refused = root.fails(&["volume", "resize", "shared", "2M"]);
    assert!(
        refused.contains(&format!("open in instance first (pid {pid})")),
        "{refused}"
    );
    // `volume check` on a raw volume has nothing to check; on qcow2 it would wait for the writer.
    root.ok(&["stop", "first", "--timeout", "1"]);
    root.ok(&["volume", "resize", "shared", "2M"]);

    // Read-only attachments share the disk.
    vm(&root, "reader1", "counter", &["--disk", "vol=shared,ro"]);
    vm(&root, "reader2", "counter", &["--disk", "vol=shared,ro"]);
    root.ok(&["start", "reader1"]);
    root.ok(&["start", "reader2"]);
    let refused = root.fails(&["start", "first"]);
    assert!(refused.contains("in use by instance reader"), "{refused}");
}

/// `qemu-io` holding `image` open for writing until its stdin closes.
fn qemu_io_writer(image: &Path) -> std::process::Child {
    let mut child = Command::new("qemu-io")
        .args(["-f", "raw", image.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It prompts once the image is open (and locked).
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"qemu-io> ") {
        let n = std::io::Read::read(&mut stdout, &mut byte).unwrap();
        assert_eq!(n, 1, "qemu-io ended: {}", String::from_utf8_lossy(&seen));
        seen.push(byte[0]);
    }
    child
}

#[test]
fn a_volume_qemu_writes_is_not_deleted_resized_or_started_under_it() {
    require_kvm!();
    require_program!("qemu-io");
    let root = Root::new();
    root.ok(&["volume", "create", "busy", "--size", "1M"]);
    let image = root.path().join("storage/default/busy.raw");
    let mut qemu = qemu_io_writer(&image);
    for args in [
        &["volume", "delete", "busy"][..],
        &["volume", "resize", "busy", "2M"][..],
    ] {
        let refused = root.fails(args);
        assert!(refused.contains("qemu-io"), "{args:?}: {refused}");
    }
    vm(&root, "vm", "counter", &["--disk", "vol=busy"]);
    let refused = root.fails(&["start", "vm"]);
    assert!(refused.contains("qemu-io"), "{refused}");
    drop(qemu.stdin.take());
    qemu.wait().unwrap();
    root.ok(&["volume", "resize", "busy", "2M"]);
}
