//! `corral import`: OVF packages in the shapes VirtualBox (OVF 1.0 and 2.0) and VMware's ovftool
//! write, made here from raw disks with known content (`qemu-img convert -O vmdk -o
//! subformat=streamOptimized`, GNU tar, sha1sum/sha256sum), imported through the real binary;
//! and hostile or damaged packages, each refused with one error and nothing left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_testkit::require_program;

use common::ovf::{lan_network, raw_disk, run, text};
use common::CorralRoot as Root;

fn sh(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}

/// A raw ext4 disk of `mib` MiB holding a kernel the way Debian installs one, so the imported
/// VM boots from its disk.
fn bootable_disk(path: &Path, mib: u64) {
    let tree = path.with_extension("tree");
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::create_dir_all(tree.join("etc/kernel")).unwrap();
    std::fs::write(tree.join("boot/vmlinuz-6.1.0-18-amd64"), b"a kernel").unwrap();
    std::fs::write(tree.join("etc/kernel/cmdline"), b"root=/dev/vda ro\n").unwrap();
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            text(&tree),
            text(path),
            &format!("{mib}M"),
        ],
    );
}

/// `raw` as a streamOptimized vmdk named `name` in `dir`.
fn vmdk(raw: &Path, dir: &Path, name: &str) -> PathBuf {
    let target = dir.join(name);
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            text(raw),
            text(&target),
        ],
    );
    target
}

fn size(path: &Path) -> String {
    std::fs::metadata(path).unwrap().len().to_string()
}

/// The fixture envelope `name` (corral-image's test data) with its placeholders filled.
fn envelope(name: &str, values: &[(&str, String)]) -> String {
    let path = format!(
        "{}/../corral-image/tests/data/ovf/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(path).unwrap();
    for (key, value) in values {
        text = text.replace(&format!("@{key}@"), value);
    }
    text
}

/// A manifest of `files` in `dir`: VirtualBox's `SHA1 (F) = H` or ovftool's `SHA256(F)= H`.
fn manifest(dir: &Path, files: &[&str], sha1: bool) -> String {
    let mut text = String::new();
    for file in files {
        let tool = if sha1 { "sha1sum" } else { "sha256sum" };
        let out = run(tool, &[text_of(dir, file).as_str()]);
        let digest = out.split_whitespace().next().unwrap();
        if sha1 {
            text.push_str(&format!("SHA1 ({file}) = {digest}\n"));
        } else {
            text.push_str(&format!("SHA256({file})= {digest}\n"));
        }
    }
    text
}

fn text_of(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().unwrap().to_string()
}

/// An OVA of `members` of `dir`, in that order (USTAR, as the OVF spec asks).
fn ova(dir: &Path, name: &str, members: &[&str]) -> PathBuf {
    let target = dir.join(name);
    let mut args = vec!["--format=ustar", "-cf", text(&target), "-C", text(dir)];
    args.extend_from_slice(members);
    run("tar", &args);
    target
}

fn same_content(image: &Path, raw: &Path) {
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            text(image),
            text(raw),
        ],
    );
}

fn definition(root: &Root, name: &str) -> String {
    std::fs::read_to_string(root.instance_dir(name).join("instance.toml")).unwrap()
}

/// The instance directories, litter included, and the root's stray files.
fn leftovers(root: &Root) -> Vec<String> {
    let mut names = Vec::new();
    for dir in ["instances", "storage/default"] {
        if let Ok(entries) = std::fs::read_dir(root.path().join(dir)) {
            for entry in entries {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                names.push(format!("{dir}/{name}"));
            }
        }
    }
    names
}

#[test]
fn a_virtualbox_1_0_ova_becomes_a_vm_with_its_disks_in_order_and_boots_from_its_disk() {
    require_program!("qemu-img");
    require_program!("mkfs.ext4");
    let root = Root::new();
    let dir = root.dir.path();
    bootable_disk(&dir.join("one.raw"), 8);
    raw_disk(&dir.join("two.raw"), 4, 0x5a);
    let disk1 = vmdk(&dir.join("one.raw"), dir, "vbox-disk001.vmdk");
    let disk2 = vmdk(&dir.join("two.raw"), dir, "vbox-disk002.vmdk");
    let ovf = envelope(
        "virtualbox-1.0.ovf",
        &[
            ("SIZE1", size(&disk1)),
            ("SIZE2", size(&disk2)),
            ("CAPACITY1", (8u64 << 20).to_string()),
            ("CAPACITY2", (4u64 << 20).to_string()),
        ],
    );
    std::fs::write(dir.join("vbox.ovf"), ovf).unwrap();
    let files = ["vbox.ovf", "vbox-disk001.vmdk", "vbox-disk002.vmdk"];
    std::fs::write(dir.join("vbox.mf"), manifest(dir, &files, true)).unwrap();
    let package = ova(
        dir,
        "vbox.ova",
        &[
            "vbox.ovf",
            "vbox.mf",
            "vbox-disk001.vmdk",
            "vbox-disk002.vmdk",
        ],
    );
    lan_network(&root);

    let out = root.run(&["import", text(&package), "--network", "lan"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("no manifest"), "{stderr}");
    for note in [
        "IDE controller (PIIX4) → virtio-blk",
        "SATA/other controller (AHCI) → virtio-blk",
        "E1000 on \"NAT\" → virtio-net on network lan",
        "CD/DVD drive",
        "sound card",
    ] {
        assert!(stdout.contains(note), "{note}: {stdout}");
    }
    // Named by its system's id, as VirtualBox names it.
    let toml = definition(&root, "vbox-guest");
    assert!(toml.contains("cpus = 2"), "{toml}");
    assert!(toml.contains("memory = \"96M\""), "{toml}");
    assert!(toml.contains("from = \"disk\""), "{toml}");
    assert!(toml.contains("mac = \"08:00:27:a1:b2:c3\""), "{toml}");
    assert_eq!(toml.matches("[[nics]]").count(), 1, "{toml}");
    // The IDE disk is the first, though the SATA one is written first.
    let instance = root.instance_dir("vbox-guest");
    same_content(&instance.join("disk0.qcow2"), &dir.join("one.raw"));
    same_content(&instance.join("disk1.qcow2"), &dir.join("two.raw"));
    // Nothing of the package is left in the instance.
    let mut files: Vec<String> = std::fs::read_dir(&instance)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["disk0.qcow2", "disk1.qcow2", "instance.toml", "state.json"]
    );

    // `corral image import` points at `corral import` instead of unpacking it as a rootfs.
    let err = root.fails(&["image", "import", text(&package), "--alias", "p"]);
    assert!(err.contains("with `corral import`"), "{err}");

    let again = root.fails(&["import", text(&package), "--network", "lan"]);
    assert!(again.contains("already exists"), "{again}");
    assert_eq!(leftovers(&root), ["instances/vbox-guest"]);

    // A second import under another name would put the same MAC twice on the network: the
    // copy gets a new address, and says so.
    let out = root.run(&["import", text(&package), "copy", "--network", "lan"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("its MAC address 08:00:27:a1:b2:c3 is already used by another instance"),
        "{stdout}"
    );
    let copy = definition(&root, "copy");
    assert!(!copy.contains("08:00:27:a1:b2:c3"), "{copy}");
    let mac = copy
        .lines()
        .find_map(|line| line.strip_prefix("mac = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the copy's nic has a MAC");
    assert!(stdout.contains(&format!("so it gets {mac}")), "{stdout}");
    let first_octet = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(
        first_octet & 0b11,
        0b10,
        "locally administered unicast: {mac}"
    );
}

#[test]
fn virtualbox_2_0_and_ovftool_packages_keep_their_hardware_and_manifest_variants_are_checked() {
    require_program!("qemu-img");
    let root = Root::new();
    let dir = root.dir.path();
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"a kernel").unwrap();
    lan_network(&root);

    // VirtualBox 2.0, the SHA-256 manifest last.
    raw_disk(&dir.join("v2.raw"), 4, 0x11);
    let disk = vmdk(&dir.join("v2.raw"), dir, "vbox2-disk001.vmdk");
    std::fs::write(
        dir.join("vbox2.ovf"),
        envelope(
            "virtualbox-2.0.ovf",
            &[
                ("SIZE1", size(&disk)),
                ("CAPACITY1", (4u64 << 20).to_string()),
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("vbox2.mf"),
        manifest(dir, &["vbox2.ovf", "vbox2-disk001.vmdk"], false),
    )
    .unwrap();
    let package = ova(
        dir,
        "vbox2.ova",
        &["vbox2.ovf", "vbox2-disk001.vmdk", "vbox2.mf"],
    );
    let kernel_arg = text(&kernel);
    root.ok(&[
        "import",
        text(&package),
        "v2",
        "--network",
        "lan",
        "--kernel",
        kernel_arg,
    ]);
    let toml = definition(&root, "v2");
    assert!(
        toml.contains("cpus = 1") && toml.contains("memory = \"64M\""),
        "{toml}"
    );
    assert!(toml.contains("mac = \"08:00:27:12:34:56\""), "{toml}");
    assert!(
        toml.contains(&format!("kernel = \"{kernel_arg}\"")),
        "{toml}"
    );
    same_content(
        &root.instance_dir("v2").join("disk0.qcow2"),
        &dir.join("v2.raw"),
    );

    // ovftool's shape as an .ovf with its disk beside it and no manifest: a warning.
    let beside = dir.join("beside");
    std::fs::create_dir(&beside).unwrap();
    raw_disk(&dir.join("vmw.raw"), 1024, 0x77);
    let disk = vmdk(&dir.join("vmw.raw"), &beside, "vmware-disk1.vmdk");
    let ovf = beside.join("vmware.ovf");
    std::fs::write(
        &ovf,
        envelope(
            "ovftool-1.0.ovf",
            &[("SIZE1", size(&disk)), ("CAPACITY1", "1".into())],
        ),
    )
    .unwrap();
    let out = root.run(&[
        "import",
        text(&ovf),
        "--network",
        "lan",
        "--kernel",
        kernel_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("has no manifest"), "{stderr}");
    assert!(
        stdout.contains("SCSI controller (lsilogic) → virtio-blk"),
        "{stdout}"
    );
    assert!(stdout.contains("floppy drive"), "{stdout}");
    let toml = definition(&root, "vmware-guest");
    assert!(
        toml.contains("cpus = 4") && toml.contains("memory = \"1G\""),
        "{toml}"
    );
    assert!(toml.contains("mac = \"00:50:56:aa:bb:cc\""), "{toml}");
    same_content(
        &root.instance_dir("vmware-guest").join("disk0.qcow2"),
        &dir.join("vmw.raw"),
    );
    // The package beside the .ovf is read, never moved.
    assert!(disk.is_file());

    // Two systems (a VirtualSystemCollection) sharing the disk: one instance each, NAME-SYSTEM;
    // when the second cannot be made, the first is deleted again.
    let single = std::fs::read_to_string(dir.join("vbox2.ovf")).unwrap();
    let start = single.find("<VirtualSystem ").unwrap();
    let end = single.find("</VirtualSystem>").unwrap() + "</VirtualSystem>".len();
    let system = &single[start..end];
    let collection = format!(
        "<VirtualSystemCollection ovf:id=\"app\"><Info>two</Info>{}{}</VirtualSystemCollection>",
        system.replace("ovf:id=\"vbox2-guest\"", "ovf:id=\"web\""),
        system.replace("ovf:id=\"vbox2-guest\"", "ovf:id=\"db\""),
    );
    std::fs::write(
        dir.join("app.ovf"),
        format!("{}{collection}{}", &single[..start], &single[end..]),
    )
    .unwrap();
    let package = ova(dir, "app.ova", &["app.ovf", "vbox2-disk001.vmdk"]);
    let import_app = |name: &str| {
        root.run(&[
            "import",
            text(&package),
            name,
            "--network",
            "none",
            "--kernel",
            kernel_arg,
        ])
    };
    let out = import_app("app");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["app-web", "app-db"] {
        same_content(
            &root.instance_dir(name).join("disk0.qcow2"),
            &dir.join("v2.raw"),
        );
    }
    root.ok(&[
        "import",
        text(&dir.join("vbox2.ova")),
        "two-db",
        "--network",
        "none",
        "--kernel",
        kernel_arg,
    ]);
    let out = import_app("two");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("two-db already exists"),
        "{err}"
    );
    assert!(!root.instance_dir("two-web").exists());
    for name in ["app-web", "app-db", "two-db"] {
        root.ok(&["delete", name]);
    }

    // A corrupted manifest: refused, nothing made.
    let good = std::fs::read_to_string(dir.join("vbox2.mf")).unwrap();
    let bad = good.replacen(
        &good[good.find("= ").unwrap() + 2..good.find("= ").unwrap() + 4],
        "00",
        1,
    );
    assert_ne!(good, bad);
    std::fs::write(dir.join("vbox2.mf"), bad).unwrap();
    let package = ova(
        dir,
        "bad.ova",
        &["vbox2.ovf", "vbox2.mf", "vbox2-disk001.vmdk"],
    );
    let err = root.fails(&[
        "import",
        text(&package),
        "v3",
        "--network",
        "lan",
        "--kernel",
        kernel_arg,
    ]);
    assert!(err.contains("does not match its manifest"), "{err}");
    assert_eq!(err.matches("corral:").count(), 1, "{err}");
    assert_eq!(leftovers(&root), ["instances/v2", "instances/vmware-guest"]);
}

#[test]
fn malformed_packages_give_one_error_each_and_leave_nothing_behind() {
    require_program!("qemu-img");
    require_program!("python3");
    let root = Root::new();
    let dir = root.dir.path();
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"a kernel").unwrap();
    raw_disk(&dir.join("d.raw"), 4, 0x22);
    let disk = vmdk(&dir.join("d.raw"), dir, "vbox2-disk001.vmdk");
    let write_ovf = |name: &str, capacity: u64| {
        std::fs::write(
            dir.join(name),
            envelope(
                "virtualbox-2.0.ovf",
                &[("SIZE1", size(&disk)), ("CAPACITY1", capacity.to_string())],
            ),
        )
        .unwrap();
    };
    write_ovf("good.ovf", 4 << 20);
    write_ovf("small.ovf", 1 << 20);
    std::fs::write(
        dir.join("xxe.ovf"),
        "<?xml version=\"1.0\"?>\n<!DOCTYPE Envelope [<!ENTITY secret SYSTEM \"file:///etc/passwd\">]>\n\
         <Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\">&secret;</Envelope>\n",
    )
    .unwrap();
    let mut laughs = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE l [<!ENTITY l0 \"lol\">");
    for level in 1..10 {
        laughs.push_str(&format!(
            "<!ENTITY l{level} \"{}\">",
            format!("&l{};", level - 1).repeat(10)
        ));
    }
    laughs.push_str(
        "]>\n<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\">&l9;</Envelope>\n",
    );
    std::fs::write(dir.join("laughs.ovf"), laughs).unwrap();
    let xxe = ova(dir, "xxe.ova", &["xxe.ovf", "vbox2-disk001.vmdk"]);
    let laughs = ova(dir, "laughs.ova", &["laughs.ovf", "vbox2-disk001.vmdk"]);
    let missing = ova(dir, "missing.ova", &["good.ovf"]);
    let small = ova(dir, "small.ova", &["small.ovf", "vbox2-disk001.vmdk"]);
    // Members a hostile archive carries (GNU tar will not write them).
    let hostile = |name: &str, script: &str| {
        let target = dir.join(name);
        sh(&format!(
            "cd {} && python3 -c 'import tarfile,io\nt=tarfile.open(\"{}\",\"w\",format=tarfile.USTAR_FORMAT)\n\
             t.add(\"good.ovf\")\n{script}\nt.close()'",
            text(dir),
            text(&target)
        ));
        target
    };
    let dotdot = hostile(
        "dotdot.ova",
        "i=tarfile.TarInfo(\"../evil\")\nd=b\"x\"\ni.size=1\nt.addfile(i,io.BytesIO(d))",
    );
    let absolute = hostile(
        "absolute.ova",
        "i=tarfile.TarInfo(\"/tmp/corral-ovf-evil\")\nd=b\"x\"\ni.size=1\nt.addfile(i,io.BytesIO(d))",
    );
    let link = hostile(
        "link.ova",
        "i=tarfile.TarInfo(\"vbox2-disk001.vmdk\")\ni.type=tarfile.SYMTYPE\ni.linkname=\"/etc/shadow\"\nt.addfile(i)",
    );
    for (package, expected) in [
        (&xxe, "DTD"),
        (&laughs, "DTD"),
        (&missing, "lacks `vbox2-disk001.vmdk`"),
        (&small, "declares a capacity of 1048576 bytes"),
        (&dotdot, "`../evil`"),
        (&absolute, "`/tmp/corral-ovf-evil`"),
        (&link, "`vbox2-disk001.vmdk` with a path or of a type"),
    ] {
        let err = root.fails(&[
            "import",
            text(package),
            "bad",
            "--network",
            "none",
            "--kernel",
            text(&kernel),
        ]);
        assert!(err.contains(expected), "{}: {err}", package.display());
        assert_eq!(err.matches("corral:").count(), 1, "one error: {err}");
        assert!(root
            .ok(&["list", "--all"])
            .lines()
            .all(|l| !l.contains("bad")));
        assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
        assert!(!dir.join("evil").exists() && !Path::new("/tmp/corral-ovf-evil").exists());
    }
}

#[test]
fn an_import_killed_with_its_disks_converted_leaves_nothing_once_the_next_command_runs() {
    require_program!("qemu-img");
    let root = Root::new();
    let dir = root.dir.path();
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"a kernel").unwrap();
    raw_disk(&dir.join("k.raw"), 4, 0x33);
    let disk = vmdk(&dir.join("k.raw"), dir, "vbox2-disk001.vmdk");
    std::fs::write(
        dir.join("k.ovf"),
        envelope(
            "virtualbox-2.0.ovf",
            &[
                ("SIZE1", size(&disk)),
                ("CAPACITY1", (4u64 << 20).to_string()),
            ],
        ),
    )
    .unwrap();
    let package = ova(dir, "k.ova", &["k.ovf", "vbox2-disk001.vmdk"]);
    let out = common::output_via_files(
        root.command(&[
            "import",
            text(&package),
            "killed",
            "--network",
            "none",
            "--kernel",
            text(&kernel),
        ])
        .env("FAILPOINTS", "create.populated=kill"),
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    // The staging directory, with the converted disk in it, is all there is ...
    let litter = leftovers(&root);
    assert!(
        litter.len() == 1 && litter[0].starts_with("instances/.creating-killed-"),
        "{litter:?}"
    );
    // ... until the next command sweeps it.
    assert!(!root.ok(&["list", "--all"]).contains("killed"));
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
}

#[test]
fn an_imported_vm_starts_and_its_guest_reads_the_converted_disks_in_order() {
    corral_testkit::require_kvm!();
    require_program!("qemu-img");
    let root = Root::new();
    let dir = root.dir.path();
    raw_disk(&dir.join("one.raw"), 4, 0x44);
    raw_disk(&dir.join("two.raw"), 4, 0x10);
    let disk1 = vmdk(&dir.join("one.raw"), dir, "vbox-disk001.vmdk");
    let disk2 = vmdk(&dir.join("two.raw"), dir, "vbox-disk002.vmdk");
    let ovf = envelope(
        "virtualbox-1.0.ovf",
        &[
            ("SIZE1", size(&disk1)),
            ("SIZE2", size(&disk2)),
            ("CAPACITY1", (4u64 << 20).to_string()),
            ("CAPACITY2", (4u64 << 20).to_string()),
        ],
    );
    std::fs::write(dir.join("vbox.ovf"), ovf).unwrap();
    let package = ova(
        dir,
        "vbox.ova",
        &["vbox.ovf", "vbox-disk001.vmdk", "vbox-disk002.vmdk"],
    );
    // The test guest that prints the first bytes of every disk, as the kernel.
    let guest = corral_guests::elf("virtio-blk-dump");
    root.ok(&[
        "import",
        text(&package),
        "booted",
        "--network",
        "none",
        "--kernel",
        text(&guest),
    ]);
    root.ok(&["start", "booted"]);
    common::wait_for(
        "the guest to finish",
        std::time::Duration::from_secs(60),
        || root.status("booted") != "running",
    );
    let logs = root.ok(&["logs", "booted"]);
    // i ^ seed for i in 0..16, as raw_disk wrote them.
    let expected = |seed: u8| -> String {
        (0..16u8)
            .map(|i| format!(" {:02x}", i ^ seed))
            .collect::<String>()
    };
    assert!(
        logs.contains(&format!("disk 0:{}", expected(0x44))),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("disk 1:{}", expected(0x10))),
        "{logs}"
    );
}
