//! corral's qcow2 against qemu's: what corral writes, qemu-img accepts and reads identically; what
//! qemu writes (plain, v2, compressed, zero clusters, backing chains), corral reads identically.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use corral_disk::{create_qcow2, create_raw, Disk, DiskFormat, OpenOptions, Qcow2CreateOptions};
use corral_testkit::require_program;

const MIB: u64 = 1 << 20;

/// Applies the same writes to a corral-opened disk and to a plain raw file of expectations.
struct Mirror<'a> {
    disk: Box<dyn Disk>,
    expected: &'a Path,
}

impl Mirror<'_> {
    fn write(&mut self, offset: u64, length: usize, seed: u8) {
        let data = pattern(offset, length, seed);
        self.disk.write_at(&data, offset).expect("corral write");
        write_expected(self.expected, offset, &data);
    }

    fn zero(&mut self, offset: u64, length: u64) {
        self.disk.write_zeroes(offset, length).expect("corral write_zeroes");
        write_expected(self.expected, offset, &vec![0u8; length as usize]);
    }

    fn discard(&mut self, offset: u64, length: u64) {
        self.disk.discard(offset, length).expect("corral discard");
        write_expected(self.expected, offset, &vec![0u8; length as usize]);
    }
}

fn write_expected(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new().write(true).open(path).expect("open expected");
    file.write_all_at(data, offset).expect("write expected");
}

/// A raw file holding `size` bytes of a base pattern, to serve as expectation or base image.
fn raw_with_pattern(path: &Path, size: u64, seed: u8) {
    fs::write(path, pattern(0, size as usize, seed)).expect("write raw");
}

#[test]
fn qcow2_written_by_corral_passes_qemu_img_check_and_compare() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.qcow2");
    let expected = dir.path().join("expected.raw");
    let size = 64 * MIB;
    create_qcow2(
        &image,
        &Qcow2CreateOptions {
            size: Some(size),
            ..Default::default()
        },
    )
    .expect("create qcow2");
    create_raw(&expected, size).expect("create expected");

    let disk = corral_disk::open(&image, OpenOptions::writable()).expect("open");
    assert_eq!(disk.format(), DiskFormat::Qcow2);
    let mut mirror = Mirror {
        disk,
        expected: &expected,
    };
    mirror.write(0, 512, 1);
    mirror.write(65536 - 100, 300, 2); // spans two clusters
    mirror.write(3 * MIB + 12345, 200_000, 3); // unaligned, several clusters
    mirror.write(size - 4096, 4096, 4); // last sector
    mirror.write(10 * MIB, 2 * MIB as usize, 5);
    mirror.zero(10 * MIB + 65536, 131072); // zero clusters inside written data
    mirror.discard(11 * MIB, 65536);
    mirror.write(11 * MIB + 100, 10, 6); // rewrite inside a discarded cluster
    mirror.disk.flush().expect("flush");
    drop(mirror);

    assert_qemu_check_clean(&image);
    assert_qemu_compare(&image, "qcow2", &expected);
    let info = run("qemu-img", &["info", "--output=json", path_str(&image)]);
    assert!(info.contains(&format!("\"virtual-size\": {size}")), "{info}");
}
