//! `Disk::data_ranges`: which parts of a disk hold data, so readers (identity reset, image copies)
//! skip the holes of a sparse disk. Raw files answer from their holes, qcow2 chains from every
//! layer's clusters; each answer is checked against what the disk reads, and against `qemu-img
//! map` where qemu is installed.

mod common;

use std::ops::Range;
use std::path::Path;

use common::*;
use corral_disk::{
    create_qcow2, create_raw, BackingPolicy, Disk, DiskError, DiskFormat, OpenOptions,
    Qcow2CreateOptions,
};
use corral_testkit::{has_program, require_program};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// corral's default qcow2 cluster size.
const CLUSTER: u64 = 64 * KIB;

fn open(path: &Path, writable: bool) -> Box<dyn Disk> {
    let options = if writable {
        OpenOptions::writable()
    } else {
        OpenOptions::read_only()
    };
    corral_disk::open(path, options).expect("open")
}

fn write(disk: &mut dyn Disk, offset: u64, length: usize, seed: u8) {
    disk.write_at(&pattern(offset, length, seed), offset)
        .expect("write");
}

fn qcow2(path: &Path, size: u64, backing: Option<(&Path, DiskFormat)>) {
    create_qcow2(
        path,
        &Qcow2CreateOptions {
            size: Some(size),
            backing_file: backing.map(|(path, _)| path.to_path_buf()),
            backing_format: backing.map(|(_, format)| format),
            backing_policy: BackingPolicy::Any,
            ..Qcow2CreateOptions::default()
        },
    )
    .expect("create qcow2");
}

/// The ranges of the whole disk, after checking that every byte outside them reads as zeroes
/// (what makes skipping them safe).
fn ranges_checked(disk: &dyn Disk) -> Vec<Range<u64>> {
    let ranges = disk.data_ranges(0, disk.virtual_size()).expect("ranges");
    let mut holes = Vec::new();
    let mut at = 0;
    for data in &ranges {
        assert!(at <= data.start && data.start < data.end, "{ranges:?}");
        holes.push(at..data.start);
        at = data.end;
    }
    holes.push(at..disk.virtual_size());
    let mut buf = vec![0u8; MIB as usize];
    for hole in holes {
        let mut offset = hole.start;
        while offset < hole.end {
            let n = (hole.end - offset).min(MIB) as usize;
            disk.read_at(&mut buf[..n], offset).expect("read hole");
            assert!(
                buf[..n].iter().all(|&b| b == 0),
                "data in the hole {hole:?} near {offset}"
            );
            offset += n as u64;
        }
    }
    ranges
}

/// The data ranges `qemu-img map` reports for the image (data in any layer of its chain).
fn qemu_data_ranges(image: &Path) -> Vec<Range<u64>> {
    let map: serde_json::Value =
        serde_json::from_str(&run("qemu-img", &["map", "--output=json", path_str(image)]))
            .expect("qemu-img map json");
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for entry in map.as_array().expect("an array") {
        if entry["data"] != true {
            continue;
        }
        let start = entry["start"].as_u64().expect("start");
        let end = start + entry["length"].as_u64().expect("length");
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => ranges.push(start..end),
        }
    }
    ranges
}

#[test]
fn a_sparse_raw_file_reports_its_data_and_nothing_of_its_holes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.raw");
    create_raw(&path, 64 * MIB).expect("create");
    let mut disk = open(&path, true);
    write(disk.as_mut(), MIB, 4096, 1);
    write(disk.as_mut(), 10 * MIB, 64 * KIB as usize, 2);
    disk.flush().expect("flush");

    assert_eq!(
        ranges_checked(disk.as_ref()),
        [MIB..MIB + 4096, 10 * MIB..10 * MIB + 64 * KIB]
    );
    assert_eq!(
        disk.data_ranges(MIB + 1024, 10 * MIB).expect("part"),
        [MIB + 1024..MIB + 4096, 10 * MIB..10 * MIB + 64 * KIB],
        "a range asked for is clipped to it"
    );
    assert_eq!(disk.data_ranges(20 * MIB, MIB).expect("hole"), []);
    let err = disk
        .data_ranges(63 * MIB, 2 * MIB)
        .expect_err("past the end");
    assert!(matches!(err, DiskError::OutOfRange { .. }), "{err}");
    if has_program("qemu-img") {
        assert_eq!(qemu_data_ranges(&path), ranges_checked(disk.as_ref()));
    }
}

#[test]
fn a_qcow2_image_reports_its_allocated_clusters_across_l2_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.qcow2");
    // One L2 table maps 512 MiB with 64 KiB clusters: data in the first and third.
    qcow2(&path, 2 * GIB, None);
    let mut disk = open(&path, true);
    write(disk.as_mut(), 3 * MIB + 512, 4096, 1);
    write(disk.as_mut(), 3 * MIB + CLUSTER, 100, 2);
    write(disk.as_mut(), 1100 * MIB, 4096, 3);
    disk.flush().expect("flush");
    drop(disk);

    let disk = open(&path, false);
    let ranges = disk.data_ranges(0, 2 * GIB).expect("ranges");
    assert_eq!(
        ranges,
        [
            3 * MIB..3 * MIB + 2 * CLUSTER,
            1100 * MIB..1100 * MIB + CLUSTER
        ],
        "whole clusters, neighbours joined"
    );
    assert_eq!(
        disk.data_ranges(3 * MIB + CLUSTER, GIB).expect("part"),
        vec![3 * MIB + CLUSTER..3 * MIB + 2 * CLUSTER]
    );
    if has_program("qemu-img") {
        assert_eq!(qemu_data_ranges(&path), ranges);
    }
}

#[test]
fn an_overlay_reports_data_from_every_layer_and_its_zero_clusters_hide_the_base() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.qcow2");
    qcow2(&base, 64 * MIB, None);
    let mut disk = open(&base, true);
    write(disk.as_mut(), 0, CLUSTER as usize, 1);
    write(disk.as_mut(), 8 * MIB, CLUSTER as usize, 2);
    disk.flush().expect("flush");
    drop(disk);
    let overlay = dir.path().join("overlay.qcow2");
    qcow2(&overlay, 64 * MIB, Some((&base, DiskFormat::Qcow2)));
    let mut disk = open(&overlay, true);
    write(disk.as_mut(), 20 * MIB, 4096, 3);
    // Reads as zeroes from now on although the base holds data there.
    disk.write_zeroes(8 * MIB, CLUSTER).expect("zero");
    disk.flush().expect("flush");
    drop(disk);

    let disk = open(&overlay, false);
    let ranges = ranges_checked(disk.as_ref());
    assert_eq!(ranges, [0..CLUSTER, 20 * MIB..20 * MIB + CLUSTER]);
    if has_program("qemu-img") {
        assert_eq!(qemu_data_ranges(&overlay), ranges);
    }
}

#[test]
fn an_overlay_on_a_sparse_raw_base_reports_the_base_s_data_not_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.raw");
    create_raw(&base, 10 * GIB).expect("create");
    let mut disk = open(&base, true);
    write(disk.as_mut(), 5 * MIB, 8192, 1);
    write(disk.as_mut(), 9 * GIB, 4096, 2);
    disk.flush().expect("flush");
    drop(disk);
    // Longer than its base: the end reads as zeroes.
    let overlay = dir.path().join("overlay.qcow2");
    qcow2(&overlay, 11 * GIB, Some((&base, DiskFormat::Raw)));
    let mut disk = open(&overlay, true);
    write(disk.as_mut(), 7 * MIB, 4096, 3);
    write(disk.as_mut(), 10 * GIB + MIB, 4096, 4);
    disk.flush().expect("flush");
    drop(disk);

    let disk = open(&overlay, false);
    let ranges = disk.data_ranges(0, 11 * GIB).expect("ranges");
    assert_eq!(
        ranges,
        [
            5 * MIB..5 * MIB + 8192,
            7 * MIB..7 * MIB + CLUSTER,
            9 * GIB..9 * GIB + 4096,
            10 * GIB + MIB..10 * GIB + MIB + CLUSTER,
        ]
    );
    if has_program("qemu-img") {
        assert_eq!(qemu_data_ranges(&overlay), ranges);
    }
}

#[test]
fn zero_and_compressed_clusters_qemu_writes_are_a_hole_and_data() {
    require_program!("qemu-img");
    require_program!("qemu-io");
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("zero.qcow2");
    qemu_img_create(&[path_str(&image), "16M"]);
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 0 1M",
            // An allocated range turned into zero clusters (qcow2 v3's zero flag).
            "-c",
            "write -z 256k 256k",
            "-c",
            "write -P 0x5c 8M 64k",
            path_str(&image),
        ],
    );
    let disk = open(&image, false);
    let ranges = ranges_checked(disk.as_ref());
    assert_eq!(
        ranges,
        [0..256 * KIB, 512 * KIB..MIB, 8 * MIB..8 * MIB + CLUSTER]
    );
    assert_eq!(qemu_data_ranges(&image), ranges);

    let compressed = dir.path().join("compressed.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            path_str(&image),
            path_str(&compressed),
        ],
    );
    let disk = open(&compressed, false);
    assert_eq!(
        ranges_checked(disk.as_ref()),
        [0..256 * KIB, 512 * KIB..MIB, 8 * MIB..8 * MIB + CLUSTER]
    );
}
