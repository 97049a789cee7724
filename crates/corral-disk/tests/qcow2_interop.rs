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
        self.disk
            .write_zeroes(offset, length)
            .expect("corral write_zeroes");
        write_expected(self.expected, offset, &vec![0u8; length as usize]);
    }

    fn discard(&mut self, offset: u64, length: u64) {
        self.disk.discard(offset, length).expect("corral discard");
        write_expected(self.expected, offset, &vec![0u8; length as usize]);
    }
}

fn write_expected(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open expected");
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
    assert!(
        info.contains(&format!("\"virtual-size\": {size}")),
        "{info}"
    );
}

/// Writes with qemu-io into an image (one `-c` command per entry).
fn qemu_io(image: &Path, format: &str, commands: &[&str]) {
    let mut args = vec!["-f", format];
    for command in commands {
        args.push("-c");
        args.push(command);
    }
    args.push(path_str(image));
    run("qemu-io", &args);
}

#[test]
fn reads_plain_and_v2_images_qemu_writes_including_zero_clusters() {
    require_program!("qemu-img");
    require_program!("qemu-io");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, compat) in [("v3.qcow2", "1.1"), ("v2.qcow2", "0.10")] {
        let image = dir.path().join(name);
        qemu_img_create(&[
            "-o",
            &format!("compat={compat},cluster_size=4096"),
            path_str(&image),
            "8M",
        ]);
        qemu_io(
            &image,
            "qcow2",
            &[
                "write -P 0xab 0 1M",
                "write -P 0x17 3000 5000",
                "write -z 64k 128k", // v3: zero flag; v2: zeroes written or deallocated
                "write -P 0x5c 7M 1M",
            ],
        );
        let disk = corral_disk::open(&image, OpenOptions::read_only()).expect("open");
        assert_eq!(disk.virtual_size(), 8 * MIB);
        let actual = read_all(disk.as_ref());
        assert_same_content(&actual, &qemu_read_all(&image, dir.path()), name);
        assert_eq!(actual[100], 0xab, "{name}: qemu's data reads back");
        assert!(actual[65536..65536 + 131072].iter().all(|&b| b == 0));
    }
}

#[test]
fn reads_compressed_images_from_qemu_img_convert() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.raw");
    // Compressible but position-dependent content, with a hole in the middle.
    let mut content = pattern(0, 4 * MIB as usize, 9);
    content[MIB as usize..2 * MIB as usize].fill(0);
    fs::write(&source, &content).expect("write source");
    let compressed = dir.path().join("compressed.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            path_str(&source),
            path_str(&compressed),
        ],
    );
    let check = run("qemu-img", &["check", path_str(&compressed)]);
    assert!(
        !check.contains(" 0.00% compressed"),
        "image is really compressed: {check}"
    );
    assert_same_content(&corral_read_all(&compressed), &content, "compressed image");
}

#[test]
fn reads_backing_chains_qemu_builds_over_raw_and_qcow2() {
    require_program!("qemu-img");
    require_program!("qemu-io");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.raw");
    raw_with_pattern(&base, 4 * MIB, 1);
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");
    // Relative backing names, as templates are usually linked.
    qemu_img_create(&["-b", "base.raw", "-F", "raw", path_str(&mid)]);
    qemu_io(&mid, "qcow2", &["write -P 0x22 1M 100k", "write -z 3M 64k"]);
    qemu_img_create(&["-b", "mid.qcow2", "-F", "qcow2", path_str(&top)]);
    qemu_io(
        &top,
        "qcow2",
        &["write -P 0x33 1099776 10k", "write -P 0x44 0 512"],
    );

    let disk = corral_disk::open(&top, OpenOptions::read_only()).expect("open chain");
    let actual = read_all(disk.as_ref());
    assert_same_content(
        &actual,
        &qemu_read_all(&top, dir.path()),
        "three-level chain",
    );
    // Spot checks that each level really shows: top, mid, mid's zero cluster, base.
    assert_eq!(actual[0], 0x44);
    assert_eq!(actual[(MIB + 50 * 1024) as usize], 0x33);
    assert_eq!(actual[(MIB + 10) as usize], 0x22);
    assert_eq!(actual[(3 * MIB + 10) as usize], 0);
    assert_eq!(
        actual[(2 * MIB + 7) as usize],
        pattern(2 * MIB + 7, 1, 1)[0]
    );

    let info = corral_disk::info(&top, OpenOptions::read_only()).expect("info");
    let chain: Vec<_> = info
        .backing_chain
        .iter()
        .map(|b| (b.path.clone(), b.format))
        .collect();
    assert_eq!(
        chain,
        vec![
            (mid.clone(), DiskFormat::Qcow2),
            (base.clone(), DiskFormat::Raw)
        ]
    );
}

/// A linked clone: an overlay over a base reads the base's data, and every write, even a partial
/// cluster (copy-on-write), lands in the overlay only.
fn check_overlay_over(base: &Path, base_format: DiskFormat, dir: &Path) {
    let base_before = fs::read(base).expect("read base");
    let base_content = corral_read_all(base);
    let size = base_content.len() as u64;
    let overlay = dir.join(format!("overlay-over-{base_format}.qcow2"));
    create_qcow2(
        &overlay,
        &Qcow2CreateOptions {
            backing_file: Some(base.file_name().expect("name").into()),
            backing_format: Some(base_format),
            ..Default::default()
        },
    )
    .expect("create overlay");

    let expected = dir.join(format!("expected-{base_format}.raw"));
    fs::write(&expected, &base_content).expect("expected");
    let disk = corral_disk::open(&overlay, OpenOptions::writable()).expect("open overlay");
    assert_eq!(
        disk.virtual_size(),
        size,
        "size defaults to the backing image's"
    );
    assert_same_content(&read_all(disk.as_ref()), &base_content, "fresh overlay");
    let mut mirror = Mirror {
        disk,
        expected: &expected,
    };
    mirror.write(100, 10, 7); // partial cluster: the rest must be copied from the base
    mirror.write(MIB - 30, 60, 8); // spans two clusters, both partial
    mirror.write(2 * MIB, 65536, 9); // one whole cluster
    mirror.zero(3 * MIB + 4096, 8192); // zeroes over base data, partial cluster
    mirror.discard(3 * MIB + 65536, 65536); // discarded: zero, not the base showing through
    mirror.disk.flush().expect("flush");
    drop(mirror);

    assert_eq!(
        fs::read(base).expect("read base"),
        base_before,
        "base untouched"
    );
    assert_qemu_check_clean(&overlay);
    assert_qemu_compare(&overlay, "qcow2", &expected);
    assert_same_content(
        &corral_read_all(&overlay),
        &fs::read(&expected).expect("read"),
        "reopen",
    );
    let info = run("qemu-img", &["info", path_str(&overlay)]);
    assert!(
        info.contains(&format!("backing file format: {base_format}")),
        "{info}"
    );
}

#[test]
fn overlay_over_raw_base_writes_only_to_itself() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.raw");
    raw_with_pattern(&base, 4 * MIB, 3);
    check_overlay_over(&base, DiskFormat::Raw, dir.path());
}

#[test]
fn overlay_over_qcow2_base_writes_only_to_itself() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.raw");
    raw_with_pattern(&source, 4 * MIB, 4);
    let base = dir.path().join("base.qcow2");
    run(
        "qemu-img",
        &["convert", "-O", "qcow2", path_str(&source), path_str(&base)],
    );
    check_overlay_over(&base, DiskFormat::Qcow2, dir.path());
}

#[test]
fn flush_puts_metadata_on_disk_while_the_image_stays_open() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("open.qcow2");
    create_qcow2(
        &image,
        &Qcow2CreateOptions {
            size: Some(4 * MIB),
            ..Default::default()
        },
    )
    .expect("create");
    let mut writer = corral_disk::open(&image, OpenOptions::writable()).expect("open");
    let data = pattern(MIB, 200_000, 11);
    writer.write_at(&data, MIB).expect("write");
    writer.flush().expect("flush");

    // A second, independent reader sees the data, and qemu finds the image consistent, while the
    // writer still holds it open: nothing depended on the writer's caches or its drop. (Both
    // look past the writer's lock, as `qemu-img -U` does.)
    let reader =
        corral_disk::open(&image, OpenOptions::read_only().force_share()).expect("second open");
    let mut back = vec![0u8; data.len()];
    reader.read_at(&mut back, MIB).expect("read");
    assert_eq!(back, data);
    let checked = run("qemu-img", &["check", "-U", path_str(&image)]);
    assert!(checked.contains("No errors were found"), "{checked}");
    drop(writer);
}
