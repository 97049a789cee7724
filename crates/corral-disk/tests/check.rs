//! corral's qcow2 check against `qemu-img check`: the same verdict (leaks, corruptions, allocated
//! clusters) on images qemu-img and corral made, on leaks and corruptions made by hand; leaks are
//! repaired, corruptions refused with the fix named.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use corral_disk::{create_qcow2, DiskError, OpenOptions, Qcow2CreateOptions};
use corral_testkit::require_program;

const MIB: u64 = 1 << 20;
const CLUSTER: u64 = 4096;

fn read_u64(path: &Path, offset: u64) -> u64 {
    let mut word = [0u8; 8];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut word, offset)
        .unwrap();
    u64::from_be_bytes(word)
}

fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

/// A corral-made image with 4 KiB clusters and data in guest clusters 0-2 and at 3 MiB.
fn corral_image(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    create_qcow2(
        &path,
        &Qcow2CreateOptions {
            size: Some(4 * MIB),
            cluster_size: Some(CLUSTER),
            ..Default::default()
        },
    )
    .unwrap();
    let mut disk = corral_disk::open(&path, OpenOptions::writable()).unwrap();
    disk.write_at(&pattern(0, 3 * CLUSTER as usize, 1), 0)
        .unwrap();
    disk.write_at(&pattern(0, 4096, 2), 3 * MIB).unwrap();
    disk.flush().unwrap();
    path
}

/// Where the L2 entry of guest cluster 0 is (the first L1 entry's table, entry 0).
fn first_l2_entry(image: &Path) -> u64 {
    let l1 = read_u64(image, 40);
    read_u64(image, l1) & 0x00ff_ffff_ffff_fe00
}

/// Where the 16-bit refcount of host cluster `cluster` is (the first refcount block covers it).
fn refcount_entry(image: &Path, cluster: u64) -> u64 {
    let reftable = read_u64(image, 48);
    let block = read_u64(image, reftable) & 0x00ff_ffff_ffff_fe00;
    block + 2 * cluster
}

#[test]
fn images_qemu_img_made_check_the_same_in_corral() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let text = |name: &str| path(name).display().to_string();
    let raw = path("data.raw");
    fs::write(&raw, pattern(0, (2 * MIB) as usize, 7)).unwrap();
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &text("plain.qcow2"), "2M"],
    );
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "compat=0.10",
            &text("data.raw"),
            &text("v2.qcow2"),
        ],
    );
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            &text("data.raw"),
            &text("compressed.qcow2"),
        ],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &text("v2.qcow2"),
            "-F",
            "qcow2",
            &text("overlay.qcow2"),
        ],
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 9 64k 256k",
            "-c",
            "write -z 512k 64k",
            &text("overlay.qcow2"),
        ],
    );
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            &text("data.raw"),
            &text("snapshots.qcow2"),
        ],
    );
    run(
        "qemu-img",
        &["snapshot", "-c", "first", &text("snapshots.qcow2")],
    );
    run(
        "qemu-io",
        &["-c", "write -P 3 0 128k", &text("snapshots.qcow2")],
    );
    run(
        "qemu-img",
        &["snapshot", "-c", "second", &text("snapshots.qcow2")],
    );
    for name in ["plain", "v2", "compressed", "overlay", "snapshots"] {
        let report = assert_check_agrees_with_qemu(&path(&format!("{name}.qcow2")));
        assert!(report.is_clean(), "{name}: {report:#?}");
    }
}

#[test]
fn images_corral_made_check_clean_in_both() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let image = corral_image(dir.path(), "corral.qcow2");
    let report = assert_check_agrees_with_qemu(&image);
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.allocated_clusters, 4);
}

#[test]
fn leaked_clusters_made_by_hand_are_reported_repaired_and_do_not_stop_a_writable_open() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let image = corral_image(dir.path(), "leaky.qcow2");
    // Drop the mapping of guest cluster 0: its host cluster keeps refcount 1 with no reference.
    write_bytes(&image, first_l2_entry(&image), &0u64.to_be_bytes());
    let (code, _) = qemu_check_json(&image);
    assert_eq!(code, Some(3), "qemu-img sees only leaks");
    let report = assert_check_agrees_with_qemu(&image);
    assert_eq!((report.leaks, report.corruptions), (1, 0));
    assert!(report.problems[0].contains("is leaked"), "{report:#?}");

    // A leak does not stop a writer (qemu's rule).
    let disk = corral_disk::open(&image, OpenOptions::writable()).expect("opens with a leak");
    drop(disk);

    let repaired = corral_disk::repair_leaks(&image).unwrap();
    assert_eq!(repaired.leaks_fixed, 1);
    assert_qemu_check_clean(&image);
    assert!(corral_disk::check(&image).unwrap().is_clean());
}

#[test]
fn corruptions_are_counted_like_qemu_and_refused_with_the_fix() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let image = corral_image(dir.path(), "corrupt.qcow2");
    // Guest cluster 0's data cluster counted free: the allocator would hand it out again.
    let data_cluster = read_u64(&image, first_l2_entry(&image)) & 0x00ff_ffff_ffff_fe00;
    write_bytes(
        &image,
        refcount_entry(&image, data_cluster / CLUSTER),
        &[0, 0],
    );
    let (code, _) = qemu_check_json(&image);
    assert_eq!(code, Some(2), "qemu-img sees corruption");
    let report = assert_check_agrees_with_qemu(&image);
    assert!(report.corruptions > 0);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("refcount 0 but 1 references")),
        "{report:#?}"
    );

    let before = fs::read(&image).unwrap();
    let refused = |err: DiskError| {
        let text = err.to_string();
        assert!(text.contains("qemu-img check -r all"), "{text}");
        assert!(text.contains(&image.display().to_string()), "{text}");
    };
    refused(corral_disk::repair_leaks(&image).unwrap_err());
    refused(corral_disk::open(&image, OpenOptions::writable()).unwrap_err());
    assert_eq!(fs::read(&image).unwrap(), before, "nothing was written");
    // Reading does not allocate: a read-only open still works.
    let disk = corral_disk::open(&image, OpenOptions::read_only()).unwrap();
    let mut buf = vec![0u8; 4096];
    disk.read_at(&mut buf, 3 * MIB).unwrap();
    assert_eq!(buf, pattern(0, 4096, 2));
}

#[test]
fn a_snapshot_table_at_the_end_of_the_address_space_is_refused_not_a_panic() {
    // Found by the open_read_qcow2 fuzz target: aligning an offset near u64::MAX overflowed.
    let dir = tempfile::tempdir().unwrap();
    let image = corral_image(dir.path(), "hostile.qcow2");
    // nb_snapshots (header offset 60) and snapshots_offset (64).
    write_bytes(&image, 60, &u32::MAX.to_be_bytes());
    write_bytes(&image, 64, &u64::MAX.to_be_bytes());
    let err = corral_disk::check(&image).unwrap_err().to_string();
    assert!(err.contains("snapshot table"), "{err}");
}
