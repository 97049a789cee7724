//! End-to-end tests of images: `corral image import/export/list/info/alias/delete`, instances
//! made from images (`corral create --image`), and `corral publish`, through the real binary
//! on a temporary corral root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_testkit::{require_kvm, require_program, require_root};
use serde_json::Value;

use common::{wait_for, CorralRoot as Root};

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn sh(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}

fn images(root: &Root) -> Vec<Value> {
    let listed: Value = serde_json::from_str(&root.ok(&["image", "list", "-o", "json"])).unwrap();
    listed.as_array().unwrap().clone()
}

/// What the store directory holds besides its lock and alias file: images and litter.
fn store_entries(root: &Root) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && n != "aliases.json")
        .collect();
    names.sort();
    names
}

/// A busybox tree and a GNU tar of it, beside the corral root.
fn busybox_tarball(root: &Root) -> PathBuf {
    let tree = root.dir.path().join("busybox");
    common::build_rootfs(&tree);
    std::fs::write(tree.join("etc/motd"), "made by GNU tar\n").unwrap();
    let tarball = root.dir.path().join("busybox.tar.gz");
    sh(&format!(
        "tar --numeric-owner --xattrs -czf {} -C {} .",
        tarball.display(),
        tree.display()
    ));
    tarball
}

#[test]
fn a_rootfs_tarball_is_imported_once_exported_round_trip_and_makes_containers() {
    require_root!();
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let tarball = busybox_tarball(&root);
    let out = root.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--alias",
        "busybox",
    ]);
    assert!(out.starts_with("imported image busybox ("), "{out}");
    let again = root.ok(&["image", "import", tarball.to_str().unwrap()]);
    assert!(again.contains("was already stored"), "{again}");
    let listed = images(&root);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["aliases"][0], "busybox");
    assert_eq!(listed[0]["type"], "container");
    let fingerprint = listed[0]["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fingerprint.len(), 64);
    let info: Value =
        serde_json::from_str(&root.ok(&["image", "info", &fingerprint[..12], "-o", "json"]))
            .unwrap();
    assert_eq!(info["fingerprint"], fingerprint.as_str());

    // Incus's rule (SHA-256 of the unified tarball) gives the same fingerprint for the export.
    let exported = root.dir.path().join("busybox-incus.tar");
    root.ok(&[
        "image",
        "export",
        "busybox",
        exported.to_str().unwrap(),
        "--format",
        "incus",
    ]);
    assert_eq!(sha256(&exported), fingerprint);
    let out = root.ok(&["image", "import", exported.to_str().unwrap()]);
    assert!(out.contains("was already stored"), "{out}");
    // So does a rootfs export imported back.
    let rootfs_tar = root.dir.path().join("busybox-rootfs.tar");
    root.ok(&[
        "image",
        "export",
        "busybox",
        rootfs_tar.to_str().unwrap(),
        "--format",
        "rootfs",
    ]);
    let out = root.ok(&["image", "import", rootfs_tar.to_str().unwrap()]);
    assert!(out.contains("was already stored"), "{out}");
    let refused = root.fails(&["image", "export", "busybox", rootfs_tar.to_str().unwrap()]);
    assert!(refused.contains("exists; give a new name"), "{refused}");

    root.ok(&[
        "create",
        "box",
        "--image",
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/motd; echo done",
    ]);
    let info = root.ok(&["info", "box"]);
    assert!(info.contains("Image"), "{info}");
    assert!(
        info.contains("busybox (") && info.contains("copy"),
        "{info}"
    );
    root.ok(&["start", "box"]);
    wait_for("the container's output", Duration::from_secs(20), || {
        let logs = root.ok(&["logs", "box"]);
        logs.contains("made by GNU tar") && logs.contains("done")
    });
    // A container holds its own copy: the image can go.
    let out = root.ok(&["image", "delete", "busybox"]);
    assert!(out.starts_with("deleted image busybox"), "{out}");
    assert!(images(&root).is_empty());
    assert!(
        store_entries(&root).is_empty(),
        "{:?}",
        store_entries(&root)
    );
}

#[test]
fn an_incus_unified_tarball_keeps_incus_fingerprint_and_metadata() {
    require_root!();
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let dir = root.dir.path().join("incus");
    common::build_rootfs(&dir.join("rootfs"));
    std::fs::write(
        dir.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1701388800\nproperties:\n  os: Alpine\n  \
         release: \"3.20\"\n  description: Alpine 3.20 amd64\ntemplates: {}\n",
    )
    .unwrap();
    let tarball = root.dir.path().join("alpine.tar.xz");
    sh(&format!(
        "tar --numeric-owner -cJf {} -C {} metadata.yaml rootfs",
        tarball.display(),
        dir.display()
    ));
    root.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--alias",
        "alpine/3.20",
    ]);
    let info: Value =
        serde_json::from_str(&root.ok(&["image", "info", "alpine/3.20", "-o", "json"])).unwrap();
    assert_eq!(
        info["fingerprint"],
        sha256(&tarball).as_str(),
        "Incus's rule"
    );
    assert_eq!(info["architecture"], "amd64");
    assert_eq!(info["os"], "Alpine");
    assert_eq!(info["release"], "3.20");
    assert_eq!(info["created"], "2023-12-01T00:00:00Z");
    assert_eq!(
        info["source"],
        format!("incus:{}", tarball.display()).as_str()
    );
}

#[test]
fn malformed_imports_give_one_error_and_leave_no_trace() {
    require_root!();
    require_program!("python3");
    let root = Root::new();
    let dir = root.dir.path();
    // A path escape, written the way a hostile image would (GNU tar refuses to make one).
    let escape = dir.join("escape.tar");
    sh(&format!(
        "python3 -c 'import tarfile,io\nt=tarfile.open(\"{}\",\"w\")\ni=tarfile.TarInfo(\"../../evil\")\n\
         d=b\"x\"\ni.size=len(d)\nt.addfile(i,io.BytesIO(d))\nt.close()'",
        escape.display()
    ));
    // A device node outside /dev.
    let device = dir.join("device.tar");
    sh(&format!(
        "python3 -c 'import tarfile\nt=tarfile.open(\"{}\",\"w\")\ni=tarfile.TarInfo(\"disk\")\n\
         i.type=tarfile.BLKTYPE\ni.devmajor=8\ni.devminor=0\nt.addfile(i)\nt.close()'",
        device.display()
    ));
    // A truncated tarball.
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("big"), vec![7u8; 1 << 20]).unwrap();
    let truncated = dir.join("truncated.tar");
    sh(&format!(
        "tar -cf {t} -C {} . && truncate -s 300000 {t}",
        tree.display(),
        t = truncated.display()
    ));
    // A tar bomb: 256 MiB of zeros in a few hundred KiB.
    let bomb = dir.join("bomb.tar.gz");
    sh(&format!(
        "head -c 268435456 /dev/zero > {d}/zeros && tar -czf {} -C {d} zeros && rm {d}/zeros",
        bomb.display(),
        d = dir.display()
    ));
    for (file, extra, expected) in [
        (&escape, None, "evil"),
        (&device, None, "disk"),
        (&truncated, None, "truncated"),
        (&bomb, Some("64M"), "64"),
    ] {
        let mut args = vec!["image", "import", file.to_str().unwrap(), "--alias", "bad"];
        if let Some(size) = extra {
            args.extend(["--max-size", size]);
        }
        let err = root.fails(&args);
        assert!(err.contains(expected), "{}: {err}", file.display());
        assert_eq!(err.matches("corral:").count(), 1, "one error: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(images(&root).is_empty());
        assert!(
            store_entries(&root).is_empty(),
            "{:?}",
            store_entries(&root)
        );
        assert!(!dir.join("evil").exists() && !root.path().join("evil").exists());
    }
}

#[test]
fn vm_images_make_linked_clones_full_copies_and_are_kept_while_linked() {
    require_kvm!();
    require_program!("qemu-img");
    let root = Root::new();
    common::import_hello_vm_image(&root, root.dir.path(), "hello-vm", "16M");
    let fingerprint = images(&root)[0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    root.ok(&["create", "v1", "--image", "hello-vm", "--memory", "32M"]);
    let info = root.ok(&["info", "v1"]);
    assert!(info.contains("linked clone"), "{info}");
    let overlay = root.instance_dir("v1").join("root.qcow2");
    let qemu_info = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&overlay)
        .output()
        .unwrap();
    let qemu_info: Value = serde_json::from_slice(&qemu_info.stdout).unwrap();
    assert!(
        qemu_info["backing-filename"]
            .as_str()
            .unwrap()
            .ends_with(&format!("images/{fingerprint}/disk.qcow2")),
        "{qemu_info}"
    );
    root.ok(&["start", "v1"]);
    wait_for("the guest's output", Duration::from_secs(20), || {
        root.ok(&["logs", "v1"]).contains("hello")
    });
    let refused = root.fails(&["image", "delete", "hello-vm"]);
    assert!(
        refused.contains("is used by v1") && refused.contains("--full"),
        "{refused}"
    );

    root.ok(&[
        "create", "v2", "--image", "hello-vm", "--full", "--memory", "32M",
    ]);
    assert!(root.ok(&["info", "v2"]).contains("full copy"));
    root.ok(&["delete", "v1", "--force"]);
    root.ok(&["image", "delete", "hello-vm"]);
    // The full copy needs nothing of the image.
    root.ok(&["start", "v2"]);
    wait_for("the full copy's output", Duration::from_secs(20), || {
        root.ok(&["logs", "v2"]).contains("hello")
    });
}

#[test]
fn a_stopped_container_is_published_as_an_image() {
    require_root!();
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let tarball = busybox_tarball(&root);
    root.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--alias",
        "busybox",
    ]);
    root.ok(&[
        "create",
        "box",
        "--image",
        "busybox",
        "--userns",
        "auto",
        "--",
        "/bin/sh",
        "-c",
        "echo changed > /etc/changed; chown 1000 /etc/changed",
    ]);
    root.ok(&["start", "box"]);
    wait_for("the container to stop", Duration::from_secs(20), || {
        root.status("box") == "stopped"
    });
    let out = root.ok(&["publish", "box", "--alias", "box-snapshot"]);
    assert!(out.contains("as image box-snapshot ("), "{out}");
    let image: Value =
        serde_json::from_str(&root.ok(&["image", "info", "box-snapshot", "-o", "json"])).unwrap();
    let rootfs = root
        .path()
        .join("images")
        .join(image["fingerprint"].as_str().unwrap())
        .join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/changed")).unwrap(),
        "changed\n"
    );
    use std::os::unix::fs::MetadataExt;
    // Owners are the container's own again, not the user namespace's host ids.
    assert_eq!(
        std::fs::metadata(rootfs.join("etc/changed")).unwrap().uid(),
        1000
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("bin/busybox")).unwrap().uid(),
        0
    );
    root.ok(&[
        "create",
        "box2",
        "--image",
        "box-snapshot",
        "--",
        "/bin/cat",
        "/etc/changed",
    ]);
    root.ok(&["start", "box2"]);
    wait_for("the copy's output", Duration::from_secs(20), || {
        root.ok(&["logs", "box2"]).contains("changed")
    });
}

#[test]
fn containers_on_a_reflink_filesystem_share_the_images_blocks() {
    require_root!();
    require_program!("mkfs.xfs");
    if !common::have_busybox() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let fs_image = scratch.path().join("xfs.img");
    let mount = scratch.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    sh(&format!(
        "truncate -s 512M {i} && mkfs.xfs -q -m reflink=1 {i} && mount -o loop {i} {m}",
        i = fs_image.display(),
        m = mount.display()
    ));
    let result = std::panic::catch_unwind(|| {
        let corral_root = mount.join("corral");
        let run = |args: &[&str]| {
            let out = Command::new(common::corral_bin())
                .arg("--root")
                .arg(&corral_root)
                // No `default` network on the host for the container made here.
                .env("CORRAL_DEFAULT_NETWORK", "none")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let tree = scratch.path().join("busybox");
        common::build_rootfs(&tree);
        run(&[
            "image",
            "import",
            tree.to_str().unwrap(),
            "--alias",
            "busybox",
        ]);
        let out = run(&["create", "box", "--image", "busybox"]);
        assert!(out.contains("reflink copy"), "{out}");
        assert!(run(&["info", "box"]).contains("reflink copy"));
    });
    sh(&format!("umount {}", mount.display()));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_split_incus_image_with_a_squashfs_rootfs_is_fingerprinted_as_incus_does() {
    require_root!();
    require_program!("gensquashfs");
    require_program!("sqfs2tar");
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let dir = root.dir.path();
    let tree = dir.join("tree");
    common::build_rootfs(&tree);
    std::fs::write(tree.join("etc/hostname"), "split\n").unwrap();
    let squashfs = dir.join("rootfs.squashfs");
    sh(&format!(
        "gensquashfs --quiet --pack-dir {} {}",
        tree.display(),
        squashfs.display()
    ));
    std::fs::write(
        dir.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1701388800\nproperties:\n  os: Busybox\n",
    )
    .unwrap();
    let meta = dir.join("meta.tar.xz");
    sh(&format!(
        "tar -cJf {} -C {} metadata.yaml",
        meta.display(),
        dir.display()
    ));
    root.ok(&[
        "image",
        "import",
        meta.to_str().unwrap(),
        squashfs.to_str().unwrap(),
        "--alias",
        "split",
    ]);
    let info: Value =
        serde_json::from_str(&root.ok(&["image", "info", "split", "-o", "json"])).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {} {} | sha256sum",
            meta.display(),
            squashfs.display()
        ))
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        info["fingerprint"],
        expected.split_whitespace().next().unwrap()
    );
    assert_eq!(info["type"], "container");
    let rootfs = root
        .path()
        .join("images")
        .join(info["fingerprint"].as_str().unwrap())
        .join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/hostname")).unwrap(),
        "split\n"
    );
    assert!(rootfs.join("bin/busybox").is_file());
}

#[test]
fn an_oci_image_built_with_umoci_runs_its_config_and_round_trips() {
    require_root!();
    require_program!("umoci");
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let dir = root.dir.path();
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    sh(&format!(
        "umoci init --layout {l} && umoci new --image {l}:v1 && \
         umoci unpack --image {l}:v1 {b}",
        l = layout.display(),
        b = bundle.display()
    ));
    common::build_rootfs(&bundle.join("rootfs"));
    sh(&format!(
        "umoci repack --image {l}:v1 {b} && umoci config --image {l}:v1 \
         --config.env GREETING=hello --config.workingdir /tmp \
         --config.cmd /bin/sh --config.cmd -c --config.cmd 'echo oci $GREETING in $(pwd)'",
        l = layout.display(),
        b = bundle.display()
    ));
    root.ok(&[
        "image",
        "import",
        layout.to_str().unwrap(),
        "--alias",
        "oci",
    ]);
    let info: Value =
        serde_json::from_str(&root.ok(&["image", "info", "oci", "-o", "json"])).unwrap();
    assert_eq!(info["container"]["working_dir"], "/tmp", "{info}");
    root.ok(&["create", "c", "--image", "oci"]);
    root.ok(&["start", "c"]);
    wait_for("the image's command", Duration::from_secs(20), || {
        root.ok(&["logs", "c"]).contains("oci hello in /tmp")
    });
    // An oci-archive export imports back to the same image.
    let archive = dir.join("oci.tar");
    root.ok(&[
        "image",
        "export",
        "oci",
        archive.to_str().unwrap(),
        "--format",
        "oci-archive",
    ]);
    let out = root.ok(&["image", "import", archive.to_str().unwrap()]);
    assert!(out.contains("was already stored"), "{out}");
}

#[test]
fn an_image_is_kept_for_an_instance_whose_definition_cannot_be_read() {
    require_root!();
    require_program!("qemu-img");
    let root = Root::new();
    common::import_hello_vm_image(&root, root.dir.path(), "base", "16M");
    root.ok(&["create", "linked", "--image", "base", "--memory", "32M"]);
    std::fs::write(
        root.instance_dir("linked").join("instance.toml"),
        "garbage = [",
    )
    .unwrap();
    let refused = root.fails(&["image", "delete", "base"]);
    assert!(
        refused.contains("linked (its definition is unreadable)"),
        "{refused}"
    );
    assert_eq!(images(&root).len(), 1);
}

#[test]
fn malformed_incus_images_give_one_error_and_leave_no_trace() {
    require_root!();
    if !common::have_busybox() {
        return;
    }
    let root = Root::new();
    let dir = root.dir.path();
    common::build_rootfs(&dir.join("tree/rootfs"));
    let cases: [(&str, Option<Vec<u8>>, &str); 3] = [
        ("none", None, "it has no metadata.yaml"),
        (
            "huge",
            Some(vec![b'#'; 2 << 20]),
            "its metadata.yaml is 2097152 bytes",
        ),
        (
            "garbage",
            Some(b"architecture: [".to_vec()),
            "metadata.yaml is not valid",
        ),
    ];
    for (name, yaml, expected) in cases {
        let tree = dir.join("tree");
        let _ = std::fs::remove_file(tree.join("metadata.yaml"));
        if let Some(yaml) = yaml {
            std::fs::write(tree.join("metadata.yaml"), yaml).unwrap();
        }
        let tarball = dir.join(format!("{name}.tar"));
        let entries = if tree.join("metadata.yaml").exists() {
            "metadata.yaml rootfs"
        } else {
            "rootfs"
        };
        sh(&format!(
            "tar -cf {} -C {} {entries}",
            tarball.display(),
            tree.display()
        ));
        let err = root.fails(&[
            "image",
            "import",
            tarball.to_str().unwrap(),
            "--format",
            "incus",
        ]);
        assert!(err.contains(expected), "{name}: {err}");
        assert_eq!(err.matches("corral:").count(), 1, "one error: {err}");
        assert!(images(&root).is_empty());
        assert!(
            store_entries(&root).is_empty(),
            "{:?}",
            store_entries(&root)
        );
    }
}
