//! Identity reset of VM disks, checked offline with debugfs and e2fsck (nothing is mounted).

use std::ops::{ControlFlow, Range};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use corral_disk::{
    convert, create_qcow2, BackingPolicy, ConvertOptions, Disk, DiskFormat, DiskId, OpenOptions,
    Qcow2CreateOptions,
};
use corral_sysprep::{sysprep_disk, Action, MachineIdMode, Operation, Options, SysprepError};
use corral_testkit::identity::{build_template, hash_file, DbusId, FIXED_ID, ROOT_UUID};
use corral_testkit::require_program;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The root filesystem: partition 2, after a 1 MiB EFI system partition holding a FAT
/// signature (which must be passed over) at 1 MiB.
const ROOT_START: u64 = 2 * MIB;
const FS_SIZE: u64 = 64 * MIB;
const DISK_SIZE: u64 = 67 * MIB;

macro_rules! require_tools {
    () => {
        require_program!("ssh-keygen");
        require_program!("mkfs.ext4");
        require_program!("debugfs");
        require_program!("e2fsck");
        require_program!("tune2fs");
        require_program!("sfdisk");
    };
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The template tree as an ext4 image file with the UUID its fstab names.
fn ext4_image(dir: &Path, dbus: DbusId, extra: impl FnOnce(&Path)) -> std::path::PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).unwrap();
    build_template(&tree, dbus);
    extra(&tree);
    let image = dir.join("root.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-U", ROOT_UUID, "-d"])
        .arg(&tree)
        .arg(&image)
        .arg(format!("{}M", FS_SIZE / MIB)));
    image
}

/// A GPT disk: partition 1 an EFI system partition with a FAT boot sector, partition 2 the
/// filesystem `image` (copied sparsely), or zeroes when `None`.
fn gpt_disk(dir: &Path, image: Option<&Path>) -> std::path::PathBuf {
    let disk = dir.join("disk.raw");
    let file = std::fs::File::create(&disk).unwrap();
    file.set_len(DISK_SIZE).unwrap();
    let table = format!(
        "label: gpt\nstart=2048, size=2048, type=U\nstart={}, size={}, type=L\n",
        ROOT_START / 512,
        FS_SIZE / 512
    );
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let mut boot = vec![0u8; 512];
    boot[0x52..0x5a].copy_from_slice(b"FAT32   ");
    boot[510..].copy_from_slice(&[0x55, 0xaa]);
    file.write_all_at(&boot, MIB).unwrap();
    if let Some(image) = image {
        copy_sparse(&std::fs::read(image).unwrap(), &file, ROOT_START);
    }
    disk
}

fn copy_sparse(bytes: &[u8], to: &std::fs::File, at: u64) {
    for (index, chunk) in bytes.chunks(64 << 10).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            to.write_all_at(chunk, at + (index as u64) * (64 << 10))
                .unwrap();
        }
    }
}

fn open(path: &Path, writable: bool) -> Box<dyn Disk> {
    let options = if writable {
        OpenOptions::writable()
    } else {
        OpenOptions::read_only()
    };
    corral_disk::open(path, options).unwrap()
}

/// The filesystem of `disk` (at `start`) copied into a file debugfs and e2fsck can read.
fn extract(disk: &Path, start: u64, dir: &Path) -> std::path::PathBuf {
    let disk = open(disk, false);
    let out = dir.join("extracted.ext4");
    let file = std::fs::File::create(&out).unwrap();
    file.set_len(FS_SIZE).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for offset in (0..FS_SIZE).step_by(MIB as usize) {
        disk.read_at(&mut buf, start + offset).unwrap();
        copy_sparse(&buf, &file, offset);
    }
    out
}

fn debugfs(image: &Path, request: &str) -> String {
    run(Command::new("debugfs").arg("-R").arg(request).arg(image))
}

fn cat(image: &Path, path: &str) -> String {
    debugfs(image, &format!("cat \"{path}\""))
}

/// The names in a directory, from `ls -p` (`/inode/mode/uid/gid/name/size/`).
fn ls(image: &Path, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = debugfs(image, &format!("ls -p \"{dir}\""))
        .lines()
        .filter_map(|line| line.split('/').nth(5).map(str::to_string))
        .filter(|name| name != "." && name != "..")
        .collect();
    names.sort();
    names
}

fn assert_clean(image: &Path) {
    let output = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    assert!(output.status.success(), "e2fsck: {output:?}");
}

fn fs_uuid(image: &Path) -> String {
    let info = run(Command::new("tune2fs").arg("-l").arg(image));
    info.lines()
        .find_map(|line| line.strip_prefix("Filesystem UUID:"))
        .unwrap()
        .trim()
        .to_string()
}

fn read_range(path: &Path, start: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, start)
        .unwrap();
    buf
}

#[test]
fn a_raw_gpt_disk_is_reset_offline() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), DbusId::Separate, |_| {});
    let disk_path = gpt_disk(dir.path(), Some(&image));
    let esp_before = read_range(&disk_path, 0, ROOT_START);
    let options = Options {
        hostname: Some("clone".into()),
        machine_id: MachineIdMode::New,
        ..Options::default()
    };
    let report = sysprep_disk(open(&disk_path, true).as_mut(), &options).unwrap();
    assert!(!report.dry_run);
    assert_eq!(
        read_range(&disk_path, 0, ROOT_START),
        esp_before,
        "only the root changed"
    );

    let fs = extract(&disk_path, ROOT_START, dir.path());
    assert_clean(&fs);
    let id = cat(&fs, "/etc/machine-id");
    assert_eq!(id.len(), 33, "{id:?}");
    assert_ne!(id.trim(), FIXED_ID);
    assert_eq!(cat(&fs, "/var/lib/dbus/machine-id"), id);
    assert_eq!(ls(&fs, "/etc/ssh"), ["sshd_config"]);
    assert_eq!(cat(&fs, "/etc/hostname"), "clone\n");
    assert!(cat(&fs, "/etc/hosts").contains("127.0.1.1\tclone\n"));
    assert!(ls(&fs, "/var/lib/dhcp").is_empty());
    assert_eq!(ls(&fs, "/var/lib/NetworkManager"), ["NetworkManager.state"]);
    assert_eq!(ls(&fs, "/etc/udev/rules.d"), ["99-local.rules"]);
    assert_eq!(
        cat(&fs, "/etc/sysconfig/network-scripts/ifcfg-eth0"),
        "DEVICE=eth0\nONBOOT=yes\n"
    );
    assert_eq!(
        ls(&fs, "/var/log"),
        [
            "apt",
            "btmp",
            "journal",
            "lastlog",
            "lost+found",
            "syslog",
            "wtmp"
        ]
        .into_iter()
        .filter(|n| *n != "lost+found")
        .collect::<Vec<_>>()
    );
    for log in [
        "/var/log/syslog",
        "/var/log/wtmp",
        "/var/log/apt/history.log",
    ] {
        assert_eq!(cat(&fs, log), "", "{log}");
    }
    assert!(ls(&fs, "/var/log/journal").is_empty());
    assert!(ls(&fs, "/tmp").is_empty());
    assert!(ls(&fs, "/var/tmp").is_empty());
    assert!(!ls(&fs, "/root").contains(&".bash_history".to_string()));
    assert_eq!(ls(&fs, "/var/lib/cloud"), ["seed"]);
    let seed = debugfs(&fs, "cat /var/lib/systemd/random-seed");
    assert_ne!(
        seed.as_bytes(),
        (0..512u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()
    );
    assert!(debugfs(&fs, "stat /var/lib/systemd/random-seed").contains("Size: 512"));
    assert_eq!(fs_uuid(&fs), ROOT_UUID, "fs-uuids is opt-in");
}

#[test]
fn a_qcow2_overlay_is_edited_and_its_base_left_untouched() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), DbusId::Symlink, |_| {});
    let base = gpt_disk(dir.path(), Some(&image));
    let base_hash = hash_file(&base);
    let overlay = dir.path().join("clone.qcow2");
    create_qcow2(
        &overlay,
        &Qcow2CreateOptions {
            backing_file: Some(base.clone()),
            backing_format: Some(DiskFormat::Raw),
            backing_policy: BackingPolicy::Any,
            ..Qcow2CreateOptions::default()
        },
    )
    .unwrap();
    let before = std::fs::metadata(&overlay).unwrap().len();
    let report = sysprep_disk(open(&overlay, true).as_mut(), &Options::default()).unwrap();
    assert!(report.of(Operation::MachineId).count() == 1, "{report}");
    assert_eq!(hash_file(&base), base_hash, "the base is untouched");

    let fs = extract(&overlay, ROOT_START, dir.path());
    assert_clean(&fs);
    assert_eq!(cat(&fs, "/etc/machine-id"), "");
    let dbus = debugfs(&fs, "stat /var/lib/dbus/machine-id");
    assert!(
        dbus.contains("Type: symlink") && dbus.contains("\"/etc/machine-id\""),
        "{dbus}"
    );
    assert!(ls(&fs, "/tmp").is_empty());
    let grown = std::fs::metadata(&overlay).unwrap().len() - before;
    assert!(
        grown < FS_SIZE / 4,
        "the overlay holds the changed blocks only: {grown} bytes"
    );
}

#[test]
fn fs_uuids_gives_a_new_uuid_and_rewrites_fstab() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), DbusId::Symlink, |_| {});
    let disk_path = gpt_disk(dir.path(), Some(&image));
    let mut options = Options::default();
    options.operations.insert(Operation::FsUuids);
    let report = sysprep_disk(open(&disk_path, true).as_mut(), &options).unwrap();
    let fs = extract(&disk_path, ROOT_START, dir.path());
    assert_clean(&fs);
    let uuid = fs_uuid(&fs);
    assert_ne!(uuid, ROOT_UUID);
    assert_eq!(
        cat(&fs, "/etc/fstab"),
        format!("UUID={uuid} / ext4 errors=remount-ro 0 1\n")
    );
    assert!(report.of(Operation::FsUuids).any(|c| c.action
        == Action::NewUuid {
            old: ROOT_UUID.into(),
            new: uuid.clone()
        }));
}

#[test]
fn a_rewritten_file_keeps_its_owner_mode_and_attributes_on_a_disk_without_partitions() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), DbusId::Symlink, |_| {});
    for request in [
        "ea_set /etc/hostname user.origin template",
        "set_inode_field /etc/hostname uid 1234",
        "set_inode_field /etc/hostname mode 0100640",
    ] {
        run(Command::new("debugfs")
            .args(["-w", "-R", request])
            .arg(&image));
    }
    let options = Options {
        hostname: Some("whole".into()),
        ..Options::default()
    };
    sysprep_disk(open(&image, true).as_mut(), &options).unwrap();
    assert_clean(&image);
    assert_eq!(cat(&image, "/etc/hostname"), "whole\n");
    let stat = debugfs(&image, "stat /etc/hostname");
    assert!(
        stat.contains("Mode:  0640") && stat.contains("User:  1234"),
        "{stat}"
    );
    let xattr = debugfs(&image, "ea_get /etc/hostname user.origin");
    assert!(xattr.contains("\"template\""), "{xattr}");
}

#[test]
fn a_dry_run_leaves_the_disk_byte_identical() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), DbusId::Separate, |_| {});
    let disk_path = gpt_disk(dir.path(), Some(&image));
    let before = hash_file(&disk_path);
    let mut options = Options {
        hostname: Some("dry".into()),
        dry_run: true,
        ..Options::default()
    };
    options
        .operations
        .extend([Operation::FsUuids, Operation::SshUserdir]);
    let report = sysprep_disk(open(&disk_path, true).as_mut(), &options).unwrap();
    assert_eq!(hash_file(&disk_path), before);
    let text = report.to_string();
    assert!(
        text.contains("machine-id: would truncate /etc/machine-id"),
        "{text}"
    );
    assert!(text.contains("fs-uuids: would change the UUID"), "{text}");
}

fn assert_refused_unchanged(disk_path: &Path, check: impl FnOnce(&SysprepError)) {
    let before = hash_file(disk_path);
    let err = sysprep_disk(open(disk_path, true).as_mut(), &Options::default()).unwrap_err();
    check(&err);
    assert_eq!(hash_file(disk_path), before, "{err}");
}

#[test]
fn a_disk_without_an_ext_root_is_refused_naming_what_it_has() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let disk_path = gpt_disk(dir.path(), None);
    assert_refused_unchanged(&disk_path, |err| {
        let text = err.to_string();
        assert!(matches!(err, SysprepError::NoEditableRoot { .. }), "{text}");
        assert!(text.contains("partition 1: vfat"), "{text}");
        assert!(text.contains("partition 2: nothing"), "{text}");
        assert!(text.contains("corral guest sysprep"), "{text}");
    });
}

#[test]
fn a_corrupt_partition_table_is_refused() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), DbusId::Symlink, |_| {});
    let disk_path = gpt_disk(dir.path(), Some(&image));
    // A byte of the GPT header's checksum.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk_path)
        .unwrap();
    let crc = read_range(&disk_path, 512 + 16, 1)[0];
    file.write_all_at(&[crc ^ 0xff], 512 + 16).unwrap();
    assert_refused_unchanged(&disk_path, |err| {
        assert!(
            err.to_string().contains("GPT partition table is invalid"),
            "{err}"
        );
    });
}

#[test]
fn a_filesystem_needing_journal_recovery_or_with_errors_is_refused() {
    require_tools!();
    for (request, expected) in [
        ("feature needs_recovery", "not shut down cleanly"),
        ("set_inode_field /etc/hostname links_count 5", "has errors"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let image = ext4_image(dir.path(), DbusId::Symlink, |_| {});
        run(Command::new("debugfs")
            .args(["-w", "-R", request])
            .arg(&image));
        assert_refused_unchanged(&image, |err| {
            assert!(err.to_string().contains(expected), "{request}: {err}");
        });
    }
}

#[test]
fn guest_file_names_are_quoted_and_names_debugfs_cannot_quote_are_refused() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let odd = ["a \"quoted\" name", "-rf", "tab\there", "!rm -rf x"];
    let image = ext4_image(dir.path(), DbusId::Symlink, |tree| {
        for name in odd {
            std::fs::write(tree.join("tmp").join(name), "x").unwrap();
        }
        std::fs::create_dir_all(tree.join("tmp/dir with space/\"inner\"")).unwrap();
    });
    sysprep_disk(open(&image, true).as_mut(), &Options::default()).unwrap();
    assert_clean(&image);
    assert!(ls(&image, "/tmp").is_empty());

    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), DbusId::Symlink, |tree| {
        std::fs::write(tree.join("tmp/evil\nrm \"etc\""), "x").unwrap();
    });
    assert_refused_unchanged(&image, |err| {
        assert!(matches!(err, SysprepError::Unnameable { .. }), "{err}");
    });
    assert!(cat(&image, "/etc/fstab").contains(ROOT_UUID));
}

#[test]
fn a_read_only_disk_is_refused_unless_dry_run() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), DbusId::Symlink, |_| {});
    let err = sysprep_disk(open(&image, false).as_mut(), &Options::default()).unwrap_err();
    assert!(matches!(err, SysprepError::ReadOnlyDisk), "{err}");
    let options = Options {
        dry_run: true,
        ..Options::default()
    };
    let report = sysprep_disk(open(&image, false).as_mut(), &options).unwrap();
    assert!(report.of(Operation::MachineId).count() == 1);
}

/// A disk that counts the bytes read from it: the work an identity reset does.
#[derive(Debug)]
struct Counting {
    disk: Box<dyn Disk>,
    read: AtomicU64,
}

impl Disk for Counting {
    fn format(&self) -> DiskFormat {
        self.disk.format()
    }
    fn virtual_size(&self) -> u64 {
        self.disk.virtual_size()
    }
    fn read_only(&self) -> bool {
        self.disk.read_only()
    }
    fn id(&self) -> DiskId {
        self.disk.id()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> corral_disk::Result<()> {
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.disk.read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> corral_disk::Result<()> {
        self.disk.write_at(buf, offset)
    }
    fn flush(&mut self) -> corral_disk::Result<()> {
        self.disk.flush()
    }
    fn discard(&mut self, offset: u64, length: u64) -> corral_disk::Result<()> {
        self.disk.discard(offset, length)
    }
    fn write_zeroes(&mut self, offset: u64, length: u64) -> corral_disk::Result<()> {
        self.disk.write_zeroes(offset, length)
    }
    fn data_ranges(&self, offset: u64, length: u64) -> corral_disk::Result<Vec<Range<u64>>> {
        self.disk.data_ranges(offset, length)
    }
}

fn convert_to(source: &Path, target: &Path, format: DiskFormat) {
    let options = ConvertOptions {
        source_format: None,
        source_backing: BackingPolicy::Any,
        target_format: format,
        cluster_size: None,
    };
    convert(source, target, options, &mut |_| ControlFlow::Continue(())).unwrap();
}

#[test]
fn a_100_gib_sparse_disk_is_reset_reading_its_data_not_its_size() {
    require_tools!();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    build_template(&tree, DbusId::Symlink);
    let raw = dir.path().join("big.ext4");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(100 * GIB)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-J", "size=16", "-d"])
        .arg(&tree)
        .arg(&raw));
    // The template as corral imports it; its copy's overlay, as a linked clone has it.
    let template = dir.path().join("template.qcow2");
    convert_to(&raw, &template, DiskFormat::Qcow2);
    std::fs::remove_file(&raw).unwrap();
    let overlay = dir.path().join("clone.qcow2");
    create_qcow2(
        &overlay,
        &Qcow2CreateOptions {
            backing_file: Some(template.clone()),
            backing_format: Some(DiskFormat::Qcow2),
            backing_policy: BackingPolicy::Any,
            ..Qcow2CreateOptions::default()
        },
    )
    .unwrap();

    let mut disk = Counting {
        disk: open(&overlay, true),
        read: AtomicU64::new(0),
    };
    let options = Options {
        hostname: Some("big".into()),
        ..Options::default()
    };
    sysprep_disk(&mut disk, &options).unwrap();
    let read = disk.read.load(Ordering::Relaxed);
    assert!(
        read < 64 * MIB,
        "the reset reads the filesystem's data (its bitmaps, inodes, files), not 100 GiB: \
         {read} bytes"
    );
    drop(disk);

    let fs = dir.path().join("clone.ext4");
    convert_to(&overlay, &fs, DiskFormat::Raw);
    assert_clean(&fs);
    assert_eq!(cat(&fs, "/etc/hostname"), "big\n");
    assert_eq!(cat(&fs, "/etc/machine-id"), "");
}
