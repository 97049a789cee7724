//! Property test: random writes, zeroings, discards, flushes and reopens of a qcow2 image (alone
//! and as an overlay over a raw base) agree with an in-memory model, and every resulting image
//! passes `qemu-img check`.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use corral_disk::{create_qcow2, Disk, DiskFormat, OpenOptions, Qcow2CreateOptions};
use corral_testkit::has_program;
use proptest::prelude::*;

const DISK_SIZE: u64 = 2 << 20;

#[derive(Clone, Debug)]
enum Op {
    Write {
        offset: u64,
        length: usize,
        seed: u8,
    },
    WriteZeroes {
        offset: u64,
        length: u64,
    },
    Discard {
        offset: u64,
        length: u64,
    },
    Flush,
    Reopen,
}

/// A range inside the disk, biased to small unaligned requests with some large ones.
fn range() -> impl Strategy<Value = (u64, u64)> {
    (
        0..DISK_SIZE,
        prop_oneof![3 => 1u64..9000, 1 => 1u64..300_000],
    )
        .prop_map(|(offset, length)| (offset, length.min(DISK_SIZE - offset)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (range(), any::<u8>()).prop_map(|((offset, length), seed)| Op::Write {
            offset,
            length: length as usize,
            seed
        }),
        2 => range().prop_map(|(offset, length)| Op::WriteZeroes { offset, length }),
        2 => range().prop_map(|(offset, length)| Op::Discard { offset, length }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn open_writable(path: &Path) -> Box<dyn Disk> {
    corral_disk::open(path, OpenOptions::writable()).expect("open")
}

fn run_ops(ops: &[Op], cluster_size: u64, with_base: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("model.qcow2");
    let mut model = vec![0u8; DISK_SIZE as usize];
    let mut options = Qcow2CreateOptions {
        size: Some(DISK_SIZE),
        cluster_size: Some(cluster_size),
        ..Default::default()
    };
    if with_base {
        model = pattern(0, DISK_SIZE as usize, 0xa5);
        fs::write(dir.path().join("base.raw"), &model).expect("base");
        options.backing_file = Some("base.raw".into());
        options.backing_format = Some(DiskFormat::Raw);
    }
    create_qcow2(&image, &options).expect("create");

    let mut disk = open_writable(&image);
    for op in ops {
        match *op {
            Op::Write {
                offset,
                length,
                seed,
            } => {
                let data = pattern(offset, length, seed);
                disk.write_at(&data, offset).expect("write");
                model[offset as usize..offset as usize + length].copy_from_slice(&data);
            }
            Op::WriteZeroes { offset, length } => {
                disk.write_zeroes(offset, length).expect("write zeroes");
                model[offset as usize..(offset + length) as usize].fill(0);
            }
            Op::Discard { offset, length } => {
                disk.discard(offset, length).expect("discard");
                model[offset as usize..(offset + length) as usize].fill(0);
            }
            Op::Flush => disk.flush().expect("flush"),
            Op::Reopen => {
                drop(disk);
                disk = open_writable(&image);
                prop_assert!(read_all(disk.as_ref()) == model, "content after reopen");
            }
        }
    }
    prop_assert!(read_all(disk.as_ref()) == model, "content at the end");
    drop(disk);
    if has_program("qemu-img") {
        let (ok, report) = run_status("qemu-img", &["check", path_str(&image)]);
        prop_assert!(
            ok && report.contains("No errors"),
            "qemu-img check: {}",
            report
        );
        prop_assert!(
            qemu_read_all(&image, dir.path()) == model,
            "qemu reads the same"
        );
    } else {
        corral_testkit::skip("qemu-img missing: model checked without qemu's verdict");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn standalone_qcow2_matches_model(
        ops in proptest::collection::vec(op(), 1..40),
        cluster_bits in 9u32..17,
    ) {
        run_ops(&ops, 1 << cluster_bits, false)?;
    }

    #[test]
    fn overlay_qcow2_matches_model(
        ops in proptest::collection::vec(op(), 1..40),
        cluster_bits in 9u32..17,
    ) {
        run_ops(&ops, 1 << cluster_bits, true)?;
    }
}
