//! Kernels found inside disks made here with the tools distributions use: `mkfs.ext4 -d`,
//! `sfdisk` (MBR and GPT) and `qemu-img convert`, plus hostile filesystems that must give an
//! error, never a panic.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral_disk::{DiskFormat, OpenOptions};
use corral_image::bootdisk::{self, BootEntry, BootError};
use corral_testkit::require_program;

const FS_SIZE_MIB: u64 = 24;
/// Partitions start at 1 MiB, as sfdisk aligns them.
const PART_START: u64 = 2048;

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A directory tree from `(path, content)` pairs; a content starting with `->` makes a symlink.
fn tree(root: &Path, files: &[(&str, &[u8])]) {
    for (path, content) in files {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match content.strip_prefix(b"->") {
            Some(target) => {
                std::os::unix::fs::symlink(std::str::from_utf8(target).unwrap(), &path).unwrap()
            }
            None => std::fs::write(&path, content).unwrap(),
        }
    }
}

/// An ext4 image of `files`.
fn ext4(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let root = dir.join("tree");
    std::fs::create_dir_all(&root).unwrap();
    tree(&root, files);
    let image = dir.join("fs.img");
    corral_testkit::mkfs_ext4(&root, &image, &format!("{FS_SIZE_MIB}M"));
    image
}

enum Table {
    /// A small swap-typed partition first, the filesystem second.
    Mbr,
    Gpt,
}

/// A raw disk holding the filesystem image `fs` in a partition of `table`.
fn disk(dir: &Path, fs: &Path, table: Table) -> PathBuf {
    let script = match table {
        Table::Mbr => format!(
            "label: dos\nstart={PART_START}, size=2048, type=82\nstart={}, type=83\n",
            PART_START + 2048
        ),
        Table::Gpt => format!("label: gpt\nstart={PART_START}, type=L\n"),
    };
    let disk = dir.join("disk.raw");
    let fs_sectors = FS_SIZE_MIB << 11;
    let total = (PART_START + 2048 + fs_sectors + 2048) * 512;
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(total)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = sfdisk.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let seek = match table {
        Table::Mbr => PART_START + 2048,
        _ => PART_START,
    };
    run(Command::new("dd")
        .arg(format!("if={}", fs.display()))
        .arg(format!("of={}", disk.display()))
        .args([
            "bs=512",
            &format!("seek={seek}"),
            "conv=notrunc,sparse",
            "status=none",
        ]));
    disk
}

fn qcow2(raw: &Path) -> PathBuf {
    let out = raw.with_extension("qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&out));
    out
}

fn open(path: &Path) -> Box<dyn corral_disk::Disk> {
    let format = corral_disk::detect_format(path).unwrap();
    corral_disk::open(path, OpenOptions::read_only().format(format)).unwrap()
}

fn find(path: &Path) -> Result<BootEntry, BootError> {
    bootdisk::find_boot(open(path).as_ref())
}

/// The message of an error with its causes, as the binary prints it.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// mkfs.ext4 (e2fsprogs), sfdisk (fdisk) and qemu-img (qemu-utils), or the test is skipped.
macro_rules! require_tools {
    () => {
        require_program!("mkfs.ext4");
        require_program!("sfdisk");
        require_program!("qemu-img");
    };
}

const GRUB_TWO_ENTRIES: &[u8] = br#"
set default=1
set timeout=5
menuentry 'Debian GNU/Linux' --class debian {
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=1111 ro quiet
	initrd	/boot/initrd.img-6.1.0-18-amd64
}
menuentry 'Debian GNU/Linux (old)' --class debian {
	search --no-floppy --fs-uuid --set=root 1111
	linux	($root)/boot/vmlinuz-6.1.0-17-amd64 root=UUID=2222 ro console=hvc0
	initrd	/boot/initrd.img-6.1.0-17-amd64
}
"#;

#[test]
fn grub_default_entry_on_an_mbr_disk_through_a_qcow2_backing_chain() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4(
        dir.path(),
        &[
            ("/boot/grub/grub.cfg", GRUB_TWO_ENTRIES),
            ("/boot/vmlinuz-6.1.0-18-amd64", b"kernel 18"),
            ("/boot/initrd.img-6.1.0-18-amd64", b"initrd 18"),
            ("/boot/vmlinuz-6.1.0-17-amd64", b"kernel 17"),
            ("/boot/initrd.img-6.1.0-17-amd64", b"initrd 17"),
        ],
    );
    let raw = disk(dir.path(), &fs, Table::Mbr);
    let base = qcow2(&raw);
    let top = dir.path().join("top.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&top));
    for image in [&raw, &base, &top] {
        let entry = find(image).unwrap();
        assert_eq!(
            entry,
            BootEntry {
                kernel: "/boot/vmlinuz-6.1.0-17-amd64".into(),
                initrd: Some("/boot/initrd.img-6.1.0-17-amd64".into()),
                cmdline: "root=UUID=2222 ro console=hvc0".into(),
                partition: Some(2),
            },
            "{}",
            image.display()
        );
    }
    let out = dir.path().join("boot");
    std::fs::create_dir(&out).unwrap();
    let extracted = bootdisk::extract_boot(open(&top).as_ref(), &out).unwrap();
    assert_eq!(std::fs::read(&extracted.kernel).unwrap(), b"kernel 17");
    assert_eq!(
        std::fs::read(extracted.initrd.unwrap()).unwrap(),
        b"initrd 17"
    );
    let mode = std::fs::metadata(&extracted.kernel)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn bls_entries_on_a_gpt_disk_newest_first() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4(
        dir.path(),
        &[
            (
                "/boot/loader/entries/abc-6.5.6-300.fc39.x86_64.conf",
                b"title Fedora (6.5.6)\nversion 6.5.6\nlinux /vmlinuz-6.5.6\ninitrd /initramfs-6.5.6.img\noptions root=UUID=f00 ro $tuned_params\n",
            ),
            (
                "/boot/loader/entries/abc-6.10.3-200.fc39.x86_64.conf",
                b"title Fedora (6.10.3)\nversion 6.10.3\nlinux /vmlinuz-6.10.3\ninitrd /initramfs-6.10.3.img\noptions root=UUID=f00 ro rhgb\n",
            ),
            ("/boot/vmlinuz-6.5.6", b"old"),
            ("/boot/initramfs-6.5.6.img", b"old initrd"),
            ("/boot/vmlinuz-6.10.3", b"new"),
            ("/boot/initramfs-6.10.3.img", b"new initrd"),
        ],
    );
    let raw = disk(dir.path(), &fs, Table::Gpt);
    let entry = find(&qcow2(&raw)).unwrap();
    assert_eq!(
        entry,
        BootEntry {
            kernel: "/boot/vmlinuz-6.10.3".into(),
            initrd: Some("/boot/initramfs-6.10.3.img".into()),
            cmdline: "root=UUID=f00 ro rhgb console=ttyS0".into(),
            partition: Some(1),
        }
    );
}

#[test]
fn debian_kernel_cmdline_and_the_newest_vmlinuz_on_a_whole_disk_filesystem() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4(
        dir.path(),
        &[
            ("/etc/kernel/cmdline", b"root=/dev/vda ro\n  quiet\n"),
            ("/boot/vmlinuz-6.1.0-x", b"x"),
            ("/boot/initrd.img-6.1.0-x", b"x initrd"),
            ("/boot/vmlinuz-6.1.0-y", b"y"),
            ("/boot/initrd.img-6.1.0-y", b"y initrd"),
            ("/boot/vmlinuz-6.1.0-10", b"ten"),
        ],
    );
    let entry = find(&fs).unwrap();
    assert_eq!(
        entry,
        BootEntry {
            kernel: "/boot/vmlinuz-6.1.0-y".into(),
            initrd: Some("/boot/initrd.img-6.1.0-y".into()),
            cmdline: "root=/dev/vda ro quiet console=ttyS0".into(),
            partition: None,
        }
    );
}

#[test]
fn debian_vmlinuz_symlinks() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4(
        dir.path(),
        &[
            ("/vmlinuz", b"->boot/kernel-current"),
            ("/initrd.img", b"->/boot/initrd-current"),
            ("/boot/kernel-current", b"the kernel"),
            ("/boot/initrd-current", b"the initrd"),
        ],
    );
    let disk = open(&fs);
    let entry = bootdisk::find_boot(disk.as_ref()).unwrap();
    assert_eq!(entry.kernel, "/vmlinuz");
    assert_eq!(entry.initrd.as_deref(), Some("/initrd.img"));
    assert!(entry.cmdline.starts_with("root=UUID="), "{}", entry.cmdline);
    assert!(
        entry.cmdline.ends_with(" console=ttyS0"),
        "{}",
        entry.cmdline
    );
    let out = dir.path().join("boot");
    std::fs::create_dir(&out).unwrap();
    // A link planted where the kernel goes is replaced, not written through.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("kernel")).unwrap();
    let extracted = bootdisk::extract_boot(disk.as_ref(), &out).unwrap();
    assert_eq!(std::fs::read(&extracted.kernel).unwrap(), b"the kernel");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert!(!std::fs::symlink_metadata(&extracted.kernel)
        .unwrap()
        .is_symlink());
}

#[test]
fn a_disk_without_a_kernel_says_so() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4(
        dir.path(),
        &[("/etc/hostname", b"web\n"), ("/boot/config-6.1", b"")],
    );
    let err = find(&qcow2(&disk(dir.path(), &fs, Table::Gpt))).unwrap_err();
    assert!(matches!(err, BootError::NoKernel), "{err:?}");
    assert!(
        chain(&err).contains("install a kernel in the image"),
        "{}",
        chain(&err)
    );

    // A grub.cfg naming a kernel that is not there.
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4(dir.path(), &[("/boot/grub/grub.cfg", GRUB_TWO_ENTRIES)]);
    let err = find(&disk(dir.path(), &fs, Table::Mbr)).unwrap_err();
    assert_eq!(
        chain(&err),
        "partition 2 of the disk: /boot/grub/grub.cfg on the disk names the kernel \
         /boot/vmlinuz-6.1.0-17-amd64, which is not a file on the disk"
    );

    // No filesystem at all.
    let blank = dir.path().join("blank.raw");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let err = find(&blank).unwrap_err();
    assert!(matches!(err, BootError::NoFilesystem { .. }), "{err:?}");
}

#[test]
fn a_kernel_symlink_loop_is_an_error() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4(
        dir.path(),
        &[
            ("/boot/vmlinuz-6.1.0-1", b"->vmlinuz-6.1.0-2"),
            ("/boot/vmlinuz-6.1.0-2", b"->/boot/vmlinuz-6.1.0-1"),
        ],
    );
    let err = find(&fs).unwrap_err();
    assert!(
        chain(&err).contains("too many levels of symbolic links"),
        "{}",
        chain(&err)
    );
    let out = dir.path().join("boot");
    std::fs::create_dir(&out).unwrap();
    assert!(bootdisk::extract_boot(open(&fs).as_ref(), &out).is_err());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn a_huge_grub_cfg_is_refused() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let mut big = GRUB_TWO_ENTRIES.to_vec();
    big.resize(10 << 20, b'#');
    let fs = ext4(dir.path(), &[("/boot/grub/grub.cfg", &big)]);
    let err = find(&fs).unwrap_err();
    assert!(matches!(err, BootError::TooLarge { .. }), "{err:?}");
    assert!(
        chain(&err).contains("/boot/grub/grub.cfg"),
        "{}",
        chain(&err)
    );
}

#[test]
fn corrupted_filesystems_are_errors() {
    require_tools!();
    let files: &[(&str, &[u8])] = &[
        ("/boot/grub/grub.cfg", GRUB_TWO_ENTRIES),
        ("/boot/vmlinuz-6.1.0-17-amd64", b"kernel 17"),
        ("/boot/initrd.img-6.1.0-17-amd64", b"initrd 17"),
    ];
    // The superblock, then the group descriptors, bitmaps and inode table after it.
    for (offset, length) in [(1024u64, 1024usize), (4096, 1 << 20)] {
        let dir = tempfile::tempdir().unwrap();
        let fs = ext4(dir.path(), files);
        let mut noise = vec![0u8; length];
        let mut state = 0x2545_f491_4f6c_dd1du64 ^ offset;
        for byte in &mut noise {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let file = std::fs::OpenOptions::new().write(true).open(&fs).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &noise, offset).unwrap();
        drop(file);
        let out = dir.path().join("boot");
        std::fs::create_dir(&out).unwrap();
        let err = bootdisk::extract_boot(open(&fs).as_ref(), &out).unwrap_err();
        eprintln!("noise at {offset}: {}", chain(&err));
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }
}

#[test]
fn a_raw_disk_recorded_as_raw_is_read_as_raw() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let fs = ext4(dir.path(), &[("/boot/vmlinuz-1", b"k")]);
    let disk = corral_disk::open(&fs, OpenOptions::read_only().format(DiskFormat::Raw)).unwrap();
    assert_eq!(
        bootdisk::find_boot(disk.as_ref()).unwrap().kernel,
        "/boot/vmlinuz-1"
    );
}
