//! Raw files and host block devices: sparseness, discard, zeroing, read-only and range checks,
//! format detection.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use corral_disk::{create_raw, Disk, DiskError, DiskFormat, HostKind, OpenOptions, RawDisk};
use corral_testkit::{require_program, require_root};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn allocated_bytes(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").blocks() * 512
}

#[test]
fn ten_gib_raw_volume_stays_sparse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.raw");
    create_raw(&path, 10 * GIB).expect("create");
    assert_eq!(fs::metadata(&path).expect("stat").len(), 10 * GIB);
    assert!(
        allocated_bytes(&path) < MIB,
        "a new raw volume allocates nothing"
    );

    let mut disk = corral_disk::open(&path, OpenOptions::writable()).expect("open");
    assert_eq!(disk.virtual_size(), 10 * GIB);
    let data = pattern(7 * GIB, 4096, 1);
    disk.write_at(&data, 7 * GIB).expect("write far out");
    disk.flush().expect("flush");
    let mut back = vec![0u8; 4096];
    disk.read_at(&mut back, 7 * GIB).expect("read back");
    assert_eq!(back, data);
    assert!(
        allocated_bytes(&path) < MIB,
        "only the written block takes space, not {} bytes",
        allocated_bytes(&path)
    );
    let info = corral_disk::info(&path, OpenOptions::read_only()).expect("info");
    assert_eq!(info.format, DiskFormat::Raw);
    assert_eq!(info.virtual_size, 10 * GIB);
    assert!(info.actual_size < MIB);
}

#[test]
fn discard_and_write_zeroes_free_space_in_raw_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.raw");
    create_raw(&path, 8 * MIB).expect("create");
    let mut disk = corral_disk::open(&path, OpenOptions::writable()).expect("open");
    disk.write_at(&pattern(0, 8 * MIB as usize, 2), 0)
        .expect("fill");
    disk.flush().expect("flush");
    let full = allocated_bytes(&path);
    assert!(full >= 8 * MIB);

    disk.discard(MIB, 2 * MIB).expect("discard");
    disk.write_zeroes(4 * MIB, 2 * MIB).expect("write zeroes");
    disk.flush().expect("flush");
    let content = read_all(disk.as_ref());
    let mut expected = pattern(0, 8 * MIB as usize, 2);
    expected[MIB as usize..3 * MIB as usize].fill(0);
    expected[4 * MIB as usize..6 * MIB as usize].fill(0);
    assert_same_content(&content, &expected, "after discard and write_zeroes");
    assert!(
        allocated_bytes(&path) <= full - 4 * MIB,
        "4 MiB were released: {} of {full} bytes still allocated",
        allocated_bytes(&path)
    );
}

#[test]
fn read_only_and_out_of_range_requests_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.raw");
    create_raw(&path, MIB).expect("create");
    let mut disk = corral_disk::open(&path, OpenOptions::read_only()).expect("open");
    assert!(disk.read_only());
    assert!(matches!(
        disk.write_at(&[1], 0),
        Err(DiskError::ReadOnly { .. })
    ));
    assert!(matches!(
        disk.discard(0, 512),
        Err(DiskError::ReadOnly { .. })
    ));
    let mut buf = [0u8; 512];
    assert!(matches!(
        disk.read_at(&mut buf, MIB - 100),
        Err(DiskError::OutOfRange { .. })
    ));
    assert!(matches!(
        disk.read_at(&mut buf, u64::MAX - 10),
        Err(DiskError::OutOfRange { .. })
    ));
    assert!(fs::read(&path).expect("read").iter().all(|&b| b == 0));
}

#[test]
fn format_detection_never_takes_qcow2_for_raw_unless_told() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.img");
    qemu_img_create(&[path_str(&image), "1M"]);
    assert_eq!(
        corral_disk::detect_format(&image).expect("detect"),
        DiskFormat::Qcow2
    );
    let detected = corral_disk::open(&image, OpenOptions::read_only()).expect("open");
    assert_eq!(detected.format(), DiskFormat::Qcow2);
    assert_eq!(detected.virtual_size(), MIB);

    // Told raw, it is raw: the qcow2 metadata shows as data.
    let as_raw = corral_disk::open(&image, OpenOptions::read_only().format(DiskFormat::Raw))
        .expect("open as raw");
    assert_eq!(as_raw.format(), DiskFormat::Raw);
    let mut magic = [0u8; 4];
    as_raw.read_at(&mut magic, 0).expect("read");
    assert_eq!(&magic, b"QFI\xfb");

    // Told qcow2, a raw file is an error, not silently raw.
    let raw = dir.path().join("plain.raw");
    create_raw(&raw, MIB).expect("create");
    assert!(matches!(
        corral_disk::open(&raw, OpenOptions::read_only().format(DiskFormat::Qcow2)),
        Err(DiskError::InvalidQcow2 { .. })
    ));
}

#[test]
fn disk_id_is_stable_and_fits_virtio_serial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("a.raw");
    let second = dir.path().join("b.raw");
    create_raw(&first, MIB).expect("create");
    create_raw(&second, MIB).expect("create");
    let id = corral_disk::open(&first, OpenOptions::read_only())
        .expect("open")
        .id();
    let renamed = dir.path().join("renamed.raw");
    fs::rename(&first, &renamed).expect("rename");
    let again = corral_disk::open(&renamed, OpenOptions::read_only())
        .expect("open")
        .id();
    let other = corral_disk::open(&second, OpenOptions::read_only())
        .expect("open")
        .id();
    assert_eq!(id, again, "the id survives a rename");
    assert_ne!(id, other);
    assert_eq!(id.serial().len(), corral_disk::SERIAL_LEN);
    assert_ne!(id.serial(), other.serial());
}

/// A loop device over a file, detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(file: &Path) -> Self {
        let device = run("losetup", &["--find", "--show", path_str(file)]);
        LoopDevice(PathBuf::from(device.trim()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn host_block_device_reports_size_and_supports_io_and_discard() {
    require_root!();
    require_program!("losetup");
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = dir.path().join("device.raw");
    create_raw(&backing, 16 * MIB).expect("create");
    let device = LoopDevice::attach(&backing);

    let mut disk = RawDisk::open(&device.0, &OpenOptions::writable()).expect("open block device");
    assert_eq!(disk.host_kind(), HostKind::BlockDevice);
    assert_eq!(disk.virtual_size(), 16 * MIB, "size from BLKGETSIZE64");
    let data = pattern(MIB, 64 * 1024, 3);
    disk.write_at(&data, MIB).expect("write");
    disk.write_at(&data, 8 * MIB).expect("write");
    disk.flush().expect("flush");
    let mut back = vec![0u8; data.len()];
    disk.read_at(&mut back, MIB).expect("read");
    assert_eq!(back, data);

    // Loop devices implement discard by punching holes in their file.
    disk.discard(MIB, 64 * 1024).expect("BLKDISCARD");
    disk.write_zeroes(8 * MIB, 64 * 1024).expect("BLKZEROOUT");
    disk.flush().expect("flush");
    disk.read_at(&mut back, MIB).expect("read");
    assert!(back.iter().all(|&b| b == 0), "discarded range reads zero");
    disk.read_at(&mut back, 8 * MIB).expect("read");
    assert!(back.iter().all(|&b| b == 0), "zeroed range reads zero");

    let info = corral_disk::info(&device.0, OpenOptions::read_only()).expect("info");
    assert!(info.block_device);
    assert_eq!(info.virtual_size, 16 * MIB);
    drop(disk);
    assert!(matches!(
        corral_disk::resize(&device.0, 32 * MIB, Default::default()),
        Err(DiskError::InvalidOption { .. })
    ));
}
