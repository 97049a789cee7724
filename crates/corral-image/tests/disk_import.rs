//! Disk images and Vagrant boxes made here with qemu-img, qemu-io and GNU tar, imported as
//! standalone qcow2 files; malformed ones give one clear error and leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_image::disk_image::{self, DiskImportError, SourceFormat};
use corral_image::progress::{NoProgress, Progress};
use corral_image::vagrant::{self, VagrantError};
use corral_testkit::require_program;

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A qcow2 image of 64 MiB with data written by qemu-io at three places.
fn written_qcow2(dir: &Path) -> PathBuf {
    let image = dir.join("source.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path(&image), "64M"]);
    for (pattern, offset) in [(0x11, "0"), (0x22, "1M"), (0x33, "63M")] {
        run(Command::new("qemu-io").args([
            "-f",
            "qcow2",
            "-c",
            &format!("write -P {pattern} {offset} 64k"),
            path(&image),
        ]));
    }
    image
}

/// Checks `target` is a standalone qcow2 with the same content as `source`.
fn assert_same(source: &Path, target: &Path) {
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output=json", path(target)])).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert!(info.get("backing-filename").is_none(), "{info}");
    qemu_img(&["compare", path(source), path(target)]);
}

/// Counts bytes, to see the import reports them.
#[derive(Default)]
struct Counted(std::sync::atomic::AtomicU64);

impl Progress for Counted {
    fn begin(&self, _what: &str, _total: Option<u64>) {}
    fn advance(&self, bytes: u64) {
        self.0
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn qcow2_raw_and_vmdk_become_standalone_qcow2() {
    require_program!("qemu-img");
    require_program!("qemu-io");
    let dir = tempfile::tempdir().unwrap();
    let qcow2 = written_qcow2(dir.path());
    let raw = dir.path().join("source.raw");
    qemu_img(&["convert", "-O", "raw", path(&qcow2), path(&raw)]);
    let vmdk = dir.path().join("source.vmdk");
    qemu_img(&["convert", "-O", "vmdk", path(&qcow2), path(&vmdk)]);
    // An overlay whose backing file is beside it: flattened.
    let overlay = dir.path().join("overlay.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "source.qcow2",
        path(&overlay),
    ]);

    for (source, format) in [
        (&qcow2, SourceFormat::Qcow2),
        (&raw, SourceFormat::Raw),
        (&vmdk, SourceFormat::Vmdk),
        (&overlay, SourceFormat::Qcow2),
    ] {
        assert_eq!(disk_image::detect(source).unwrap(), format);
        let target = dir.path().join(format!("imported-{format}.qcow2"));
        let _ = std::fs::remove_file(&target);
        let progress = Counted::default();
        let imported = disk_image::import(source, None, &target, &progress).unwrap();
        assert_eq!(imported.virtual_size, 64 << 20, "{format}");
        assert_eq!(progress.0.into_inner(), 64 << 20, "{format}");
        assert_same(source, &target);
    }
}

/// Nothing but the source files remain in `dir`.
fn only(dir: &Path, names: &[&str]) {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    assert_eq!(left, names);
}

#[test]
fn images_reaching_other_files_are_refused_and_leave_nothing() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "/etc/passwd",
        "-u",
        path(&evil),
        "1M",
    ]);
    let target = dir.path().join("imported.qcow2");
    let err = disk_image::import(&evil, None, &target, &NoProgress).unwrap_err();
    assert!(matches!(err, DiskImportError::Disk { .. }), "{err:?}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("/etc/passwd"), "{chain}");
    only(dir.path(), &["evil.qcow2"]);

    // A vmdk descriptor naming a host file as its extent.
    let descriptor = dir.path().join("evil.vmdk");
    std::fs::write(
        &descriptor,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\nRW 2 FLAT \"/etc/passwd\" 0\n",
    )
    .unwrap();
    let err = disk_image::import(&descriptor, None, &target, &NoProgress).unwrap_err();
    assert!(
        matches!(err, DiskImportError::ReachesOtherFile { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
    only(dir.path(), &["evil.qcow2", "evil.vmdk"]);

    // Garbage claiming to be a vmdk.
    let garbage = dir.path().join("garbage.vmdk");
    std::fs::write(&garbage, b"KDMV and then nothing").unwrap();
    let err = disk_image::import(&garbage, None, &target, &NoProgress).unwrap_err();
    assert!(matches!(err, DiskImportError::QemuImg { .. }), "{err:?}");
    only(dir.path(), &["evil.qcow2", "evil.vmdk", "garbage.vmdk"]);

    // An existing target is never replaced.
    std::fs::write(&target, b"precious").unwrap();
    let raw = dir.path().join("small.raw");
    std::fs::write(&raw, vec![1u8; 4096]).unwrap();
    let err = disk_image::import(&raw, None, &target, &NoProgress).unwrap_err();
    assert!(
        matches!(err, DiskImportError::TargetExists { .. }),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}

/// A box as vagrant-libvirt's create_box.sh makes it: `tar czf` of the three files.
fn make_box(dir: &Path, metadata: &str, disk: &Path) -> PathBuf {
    let content = dir.join("box-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("metadata.json"), metadata).unwrap();
    std::fs::write(
        content.join("Vagrantfile"),
        "Vagrant.configure(\"2\") do |config|\n  config.vm.provider :libvirt do |libvirt|\n    libvirt.driver = \"kvm\"\n  end\nend\n",
    )
    .unwrap();
    std::fs::copy(disk, content.join("box.img")).unwrap();
    let out = dir.join("test.box");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&content)
        .args(["./metadata.json", "./Vagrantfile", "./box.img"]));
    std::fs::remove_dir_all(&content).unwrap();
    out
}

const LIBVIRT: &str = r#"{"provider": "libvirt", "format": "qcow2", "virtual_size": 1}"#;

#[test]
fn a_libvirt_box_gives_its_qcow2_disk() {
    require_program!("qemu-img");
    require_program!("qemu-io");
    require_program!("tar");
    let dir = tempfile::tempdir().unwrap();
    let disk = written_qcow2(dir.path());
    let the_box = make_box(dir.path(), LIBVIRT, &disk);
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let read = vagrant::read_box(&the_box, &staging, &NoProgress).unwrap();
    assert_eq!(read.metadata.provider, "libvirt");
    assert_eq!(read.metadata.format.as_deref(), Some("qcow2"));
    assert_eq!(read.metadata.virtual_size, Some(1));
    assert_eq!(
        std::fs::read(&read.disk).unwrap(),
        std::fs::read(&disk).unwrap()
    );
    // ... which imports like any qcow2.
    let target = dir.path().join("imported.qcow2");
    disk_image::import(&read.disk, Some(SourceFormat::Qcow2), &target, &NoProgress).unwrap();
    assert_same(&disk, &target);
}

#[test]
fn malformed_boxes_are_refused_and_leave_nothing() {
    require_program!("qemu-img");
    require_program!("tar");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path(&disk), "8M"]);
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();

    let virtualbox = make_box(dir.path(), r#"{"provider": "virtualbox"}"#, &disk);
    let err = vagrant::read_box(&virtualbox, &staging, &NoProgress).unwrap_err();
    assert!(matches!(err, VagrantError::Provider { .. }), "{err:?}");
    assert!(err.to_string().contains("virtualbox provider"), "{err}");
    only(&staging, &[]);

    // Cut in the middle of box.img.
    let whole = make_box(dir.path(), LIBVIRT, &disk);
    let bytes = std::fs::read(&whole).unwrap();
    let truncated = dir.path().join("truncated.box");
    // The uncompressed tar, cut inside the disk's data.
    let plain = {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    std::fs::write(
        &truncated,
        &plain[..plain.len() - 150_000.min(plain.len() / 2)],
    )
    .unwrap();
    let err = vagrant::read_box(&truncated, &staging, &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            VagrantError::Read { .. } | VagrantError::Missing { .. }
        ),
        "{err:?}"
    );
    only(&staging, &[]);
    // ... and the gzip stream cut short.
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = vagrant::read_box(&truncated, &staging, &NoProgress).unwrap_err();
    assert!(matches!(err, VagrantError::Read { .. }), "{err:?}");
    only(&staging, &[]);

    // An entry with a path that leaves the box.
    let escaping = dir.path().join("escaping.box");
    let mut builder = tar::Builder::new(std::fs::File::create(&escaping).unwrap());
    for (name, content) in [
        ("box.img", &b"qcow2"[..]),
        ("../metadata.json", LIBVIRT.as_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, content).unwrap();
    }
    builder.finish().unwrap();
    drop(builder);
    let err = vagrant::read_box(&escaping, &staging, &NoProgress).unwrap_err();
    assert!(
        matches!(err, VagrantError::UnexpectedEntry { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("../metadata.json"), "{err}");
    only(&staging, &[]);

    // Not a box at all.
    let err = vagrant::read_box(&disk, &staging, &NoProgress).unwrap_err();
    assert!(!err.to_string().is_empty());
    only(&staging, &[]);
}
