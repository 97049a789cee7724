//! cloud-init NoCloud seeds of real instances (docs/cloud-init.md): a VM's CIDATA disk, read by
//! a test guest and checked with tools that are not corral's (blkid, fsck.fat, mtools,
//! cloud-localds), a clone's new instance-id, and a container's seed directory written inside
//! its root filesystem only. Nothing is mounted: this host's kernel may not know vfat.

mod common;

use std::path::Path;
use std::time::Duration;

use corral_testkit::vfat::{files_in, run_ok};
use corral_testkit::{require_kvm, require_program};

use common::{create_vm, wait_for, CorralRoot as Root};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHlW0gHj7a8n0k6mY2b9Yc1Zx9e7Wq3nQ0f3dYt1m2p3 ada@host";

fn uuid(root: &Root, name: &str) -> String {
    let text = root.ok(&["config", "show", name]);
    let line = text.lines().find(|l| l.starts_with("uuid = ")).unwrap();
    line.trim_start_matches("uuid = ")
        .trim_matches('"')
        .to_string()
}

fn text(files: &[(String, Vec<u8>)], name: &str) -> String {
    let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap();
    String::from_utf8(bytes.clone()).unwrap()
}

#[test]
fn a_vm_gets_a_cidata_disk_after_its_own_that_tools_and_cloud_localds_agree_on() {
    require_kvm!();
    require_program!("blkid");
    require_program!("fsck.fat");
    require_program!("mdir");
    require_program!("cloud-localds");
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let disk = host.path().join("system.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let user_data = host.path().join("user-data.yaml");
    std::fs::write(
        &user_data,
        "#cloud-config\nruncmd:\n- [touch, /run/marker]\n",
    )
    .unwrap();
    let key = host.path().join("id.pub");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    create_vm(
        &root,
        "seeded",
        "virtio-blk-dump",
        &[
            "--disk",
            // Read-only, so a clone may share it.
            &format!("{},ro", disk.display()),
            "--user-data",
            user_data.to_str().unwrap(),
            "--user",
            "ada",
            "--ssh-key",
            key.to_str().unwrap(),
            "--hostname",
            "web.lab",
        ],
    );
    root.ok(&["start", "seeded"]);
    wait_for("the guest to finish", Duration::from_secs(60), || {
        root.status("seeded") != "running"
    });
    let image = root.instance_dir("seeded").join("cidata.img");
    let logs = root.ok(&["logs", "seeded"]);
    // The seed is the second disk the guest finds, and it reads the seed's own first bytes.
    let first: String = std::fs::read(&image).unwrap()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(logs.contains(&format!("disk 1: {first}")), "{logs}");
    assert!(!logs.contains("disk 2:"), "{logs}");

    let probe = run_ok(
        "blkid",
        &[
            "-p".as_ref(),
            "-o".as_ref(),
            "export".as_ref(),
            image.as_os_str(),
        ],
    );
    assert!(probe.lines().any(|l| l == "LABEL=CIDATA"), "{probe}");
    assert!(probe.lines().any(|l| l == "TYPE=vfat"), "{probe}");
    run_ok("fsck.fat", &["-n".as_ref(), image.as_os_str()]);

    let files = files_in(&image);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["meta-data", "user-data"],
        "no nics: no network-config"
    );
    assert_eq!(
        text(&files, "meta-data"),
        format!(
            "instance-id: iid-{}\nlocal-hostname: web.lab\n",
            uuid(&root, "seeded")
        )
    );
    let user = text(&files, "user-data");
    assert!(user.starts_with("#cloud-config\n"), "{user}");
    for wanted in [
        "runcmd:",
        "- name: ada",
        "sudo: ALL=(ALL) NOPASSWD:ALL",
        KEY,
    ] {
        assert!(user.contains(wanted), "{wanted} in {user}");
    }

    // cloud-localds, given the same files, writes the same names and bytes.
    let inputs = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        std::fs::write(inputs.path().join(name), bytes).unwrap();
    }
    let reference = inputs.path().join("reference.img");
    run_ok(
        "cloud-localds",
        &[
            "--filesystem=vfat".as_ref(),
            reference.as_os_str(),
            inputs.path().join("user-data").as_os_str(),
            inputs.path().join("meta-data").as_os_str(),
        ],
    );
    assert_eq!(files_in(&reference), files);

    // A clone is a new instance to cloud-init: only the instance-id differs (and its name).
    root.ok(&[
        "clone",
        "seeded",
        "copy",
        "--keep-identity",
        "--hostname",
        "copy.lab",
    ]);
    root.ok(&["start", "copy"]);
    wait_for("the clone to finish", Duration::from_secs(60), || {
        root.status("copy") != "running"
    });
    let cloned = files_in(&root.instance_dir("copy").join("cidata.img"));
    let copy_uuid = uuid(&root, "copy");
    assert_ne!(copy_uuid, uuid(&root, "seeded"));
    assert_eq!(
        text(&cloned, "meta-data"),
        format!("instance-id: iid-{copy_uuid}\nlocal-hostname: copy.lab\n")
    );
    assert_eq!(text(&cloned, "user-data"), user);
}

/// The files of an ISO 9660 image as bsdtar reads them (Rock Ridge names), in name order.
fn iso_files(image: &Path) -> Vec<(String, Vec<u8>)> {
    let listing = run_ok("bsdtar", &["-tf".as_ref(), image.as_os_str()]);
    let mut names: Vec<String> = listing
        .lines()
        .map(|line| line.trim_start_matches("./").to_string())
        .filter(|name| !name.is_empty() && name != ".")
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let out = std::process::Command::new("bsdtar")
                .arg("-xOf")
                .arg(image)
                .arg(&name)
                .output()
                .unwrap();
            assert!(out.status.success(), "bsdtar -xOf {name}");
            (name, out.stdout)
        })
        .collect()
}

#[test]
fn an_iso_seed_has_volume_id_cidata_and_the_lowercase_files_cloud_localds_writes() {
    require_kvm!();
    require_program!("genisoimage");
    require_program!("isoinfo");
    require_program!("bsdtar");
    require_program!("cloud-localds");
    let root = Root::new();
    create_vm(
        &root,
        "iso",
        "virtio-blk-dump",
        &["--user", "ada", "--hostname", "iso.lab"],
    );
    root.ok(&["config", "set", "iso", "cloud_init.seed_format=iso"]);
    let err = root.fails(&["config", "set", "iso", "cloud_init.seed_format=udf"]);
    assert!(err.contains("is not vfat or iso"), "{err}");
    root.ok(&["start", "iso"]);
    wait_for("the guest to finish", Duration::from_secs(60), || {
        root.status("iso") != "running"
    });
    let image = root.instance_dir("iso").join("cidata.img");
    // The guest found it as its first disk (it has no other).
    let logs = root.ok(&["logs", "iso"]);
    assert!(logs.contains("disk 0:"), "{logs}");

    let volume = run_ok(
        "isoinfo",
        &["-d".as_ref(), "-i".as_ref(), image.as_os_str()],
    );
    assert!(
        volume.lines().any(|l| l.trim() == "Volume id: cidata"),
        "{volume}"
    );
    let files = iso_files(&image);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["meta-data", "user-data"]);
    assert_eq!(
        text(&files, "meta-data"),
        format!(
            "instance-id: iid-{}\nlocal-hostname: iso.lab\n",
            uuid(&root, "iso")
        )
    );
    assert!(text(&files, "user-data").contains("- name: ada"));

    let inputs = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        std::fs::write(inputs.path().join(name), bytes).unwrap();
    }
    let reference = inputs.path().join("reference.iso");
    run_ok(
        "cloud-localds",
        &[
            "--filesystem=iso9660".as_ref(),
            reference.as_os_str(),
            inputs.path().join("user-data").as_os_str(),
            inputs.path().join("meta-data").as_os_str(),
        ],
    );
    assert_eq!(iso_files(&reference), files);
}

#[test]
fn seed_documents_are_checked_at_create_and_config_set() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let script = host.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
    let kernel = corral_guests::elf("hello");
    let err = root.fails(&[
        "create",
        "mixed",
        "--kernel",
        kernel.to_str().unwrap(),
        "--user-data",
        script.to_str().unwrap(),
        "--user",
        "ada",
    ]);
    assert!(
        err.contains("the --user-data file is another type"),
        "{err}"
    );
    let broken = host.path().join("broken.yaml");
    std::fs::write(&broken, "#cloud-config\nusers: [unclosed\n").unwrap();
    let err = root.fails(&[
        "create",
        "broken",
        "--kernel",
        kernel.to_str().unwrap(),
        "--user-data",
        broken.to_str().unwrap(),
    ]);
    assert!(
        err.contains("cloud_init.user_data is not valid YAML"),
        "{err}"
    );
    assert!(root.fails(&["info", "broken"]).contains("broken"));

    create_vm(&root, "plain", "hello", &[]);
    let err = root.fails(&["config", "set", "plain", "cloud_init.vendor_data=hello"]);
    assert!(err.contains("cloud_init.vendor_data"), "{err}");
    root.ok(&["config", "set", "plain", "cloud_init.user_data=#!/bin/sh"]);
    assert!(root
        .ok(&["config", "show", "plain"])
        .contains("[cloud_init]"));
}

#[test]
fn a_containers_seed_is_written_inside_its_root_filesystem_only() {
    if !corral_testkit::is_root() {
        corral_testkit::skip("needs root for namespaces and cgroups");
        return;
    }
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let busybox = root.dir.path().join("busybox");
    common::build_rootfs(&busybox);
    let host = tempfile::tempdir().unwrap();
    let user_data = host.path().join("user-data.yaml");
    std::fs::write(
        &user_data,
        "#cloud-config\nruncmd:\n- [touch, /run/marker]\n",
    )
    .unwrap();
    root.ok(&[
        "create",
        "box",
        "--rootfs",
        busybox.to_str().unwrap(),
        "--hostname",
        "box.lab",
        "--user-data",
        user_data.to_str().unwrap(),
        "--",
        "/bin/true",
    ]);
    let rootfs = root.instance_dir("box").join("rootfs");
    root.ok(&["start", "box"]);
    wait_for("the container to finish", Duration::from_secs(30), || {
        root.status("box") != "running"
    });
    let seed = rootfs.join("var/lib/cloud/seed/nocloud-net");
    let mut names: Vec<String> = std::fs::read_dir(&seed)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["meta-data", "user-data"]);
    assert_eq!(
        std::fs::read_to_string(seed.join("meta-data")).unwrap(),
        format!(
            "instance-id: iid-{}\nlocal-hostname: box.lab\n",
            uuid(&root, "box")
        )
    );
    assert_eq!(
        std::fs::read(seed.join("user-data")).unwrap(),
        std::fs::read(&user_data).unwrap()
    );
    // The container's root owns them (a shifted uid in a user namespace), and only it reads them.
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(&rootfs).unwrap().uid();
    for name in ["meta-data", "user-data"] {
        let meta = std::fs::metadata(seed.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (owner, 0o600), "{name}");
    }

    // The guest replaces /var/lib/cloud with a link to `/`: the next start writes into the
    // root's own top directory, never the host's.
    std::fs::remove_dir_all(rootfs.join("var/lib/cloud")).unwrap();
    std::os::unix::fs::symlink("/", rootfs.join("var/lib/cloud")).unwrap();
    let host_seed = Path::new("/seed");
    let host_seed_existed = host_seed.exists();
    root.ok(&["start", "box"]);
    wait_for("the container to finish", Duration::from_secs(30), || {
        root.status("box") != "running"
    });
    assert!(rootfs.join("seed/nocloud-net/meta-data").is_file());
    assert_eq!(
        host_seed.exists(),
        host_seed_existed,
        "nothing written at the host's /seed"
    );
}
