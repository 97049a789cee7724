//! Creation, resize and convert: the operations behind `corral volume` and image import.

mod common;

use std::fs;
use std::ops::ControlFlow;

use common::*;
use corral_disk::{
    convert, create_qcow2, create_raw, resize, ConvertOptions, CopyProgress, DiskError, DiskFormat,
    OpenOptions, Qcow2CreateOptions, ResizeOptions,
};
use corral_testkit::require_program;

const MIB: u64 = 1 << 20;

#[test]
fn create_refuses_existing_files_and_bad_options_without_touching_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let existing = dir.path().join("precious.img");
    fs::write(&existing, b"do not lose me").expect("write");
    assert!(matches!(
        create_raw(&existing, MIB),
        Err(DiskError::AlreadyExists { .. })
    ));
    assert!(matches!(
        create_qcow2(
            &existing,
            &Qcow2CreateOptions {
                size: Some(MIB),
                ..Default::default()
            }
        ),
        Err(DiskError::AlreadyExists { .. })
    ));
    assert_eq!(fs::read(&existing).expect("read"), b"do not lose me");

    let new = dir.path().join("new.qcow2");
    let with = |options: Qcow2CreateOptions| create_qcow2(&new, &options);
    assert!(matches!(
        with(Qcow2CreateOptions::default()),
        Err(DiskError::InvalidOption { .. })
    ));
    assert!(matches!(
        with(Qcow2CreateOptions {
            size: Some(1000),
            ..Default::default()
        }),
        Err(DiskError::InvalidSize { .. })
    ));
    assert!(matches!(
        with(Qcow2CreateOptions {
            size: Some(MIB),
            cluster_size: Some(3000),
            ..Default::default()
        }),
        Err(DiskError::InvalidOption { .. })
    ));
    assert!(matches!(
        with(Qcow2CreateOptions {
            backing_file: Some("missing.raw".into()),
            ..Default::default()
        }),
        Err(DiskError::Open { .. })
    ));
    assert!(matches!(
        create_raw(&new, 0),
        Err(DiskError::InvalidSize { .. })
    ));
    let left: Vec<_> = fs::read_dir(dir.path()).expect("list").collect();
    assert_eq!(left.len(), 1, "no new or temporary files are left behind");
}

#[test]
fn created_qcow2_images_match_qemu_img_info() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.raw");
    create_raw(&base, 3 * MIB).expect("create base");
    let image = dir.path().join("small-clusters.qcow2");
    create_qcow2(
        &image,
        &Qcow2CreateOptions {
            size: Some(5 * MIB),
            cluster_size: Some(4096),
            backing_file: Some("base.raw".into()),
            backing_format: None, // detected and recorded
            ..Default::default()
        },
    )
    .expect("create");
    assert_qemu_check_clean(&image);
    let qemu = run("qemu-img", &["info", "--output=json", path_str(&image)]);
    assert!(qemu.contains("\"cluster-size\": 4096"), "{qemu}");
    assert!(qemu.contains("\"virtual-size\": 5242880"), "{qemu}");
    assert!(
        qemu.contains("\"backing-filename\": \"base.raw\""),
        "{qemu}"
    );
    assert!(
        qemu.contains("\"backing-filename-format\": \"raw\""),
        "{qemu}"
    );

    let info = corral_disk::info(&image, OpenOptions::read_only()).expect("info");
    assert_eq!(info.format, DiskFormat::Qcow2);
    assert_eq!(info.virtual_size, 5 * MIB);
    assert_eq!(info.cluster_size, Some(4096));
    assert_eq!(info.qcow2_version, Some(3));
    assert_eq!(info.backing_chain.len(), 1);
    assert_eq!(info.backing_chain[0].path, base);
    assert!(info.actual_size > 0);
    let json = serde_json::to_value(&info).expect("json");
    assert_eq!(json["format"], "qcow2");

    // The overlay is larger than its base: past the base's end it reads zero, and a partial write
    // straddling that end copies the base's tail and zeroes, as qemu sees it too.
    fs::write(&base, pattern(0, 3 * MIB as usize, 4)).expect("fill base");
    let mut disk = corral_disk::open(&image, OpenOptions::writable()).expect("open");
    disk.write_at(&pattern(0, 100, 5), 3 * MIB - 50)
        .expect("straddling write");
    disk.flush().expect("flush");
    drop(disk);
    let content = corral_read_all(&image);
    assert_same_content(&content, &qemu_read_all(&image, dir.path()), "qemu agrees");
    assert!(content[3 * MIB as usize + 50..].iter().all(|&b| b == 0));
    assert_qemu_check_clean(&image);
}

#[test]
fn raw_resize_grows_and_shrinks_only_when_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.raw");
    create_raw(&path, 2 * MIB).expect("create");
    {
        let mut disk = corral_disk::open(&path, OpenOptions::writable()).expect("open");
        disk.write_at(&pattern(0, 2 * MIB as usize, 1), 0)
            .expect("fill");
    }
    resize(&path, 4 * MIB, ResizeOptions::default()).expect("grow");
    let content = corral_read_all(&path);
    assert_eq!(content.len() as u64, 4 * MIB);
    assert_same_content(
        &content[..2 * MIB as usize],
        &pattern(0, 2 * MIB as usize, 1),
        "kept",
    );
    assert!(content[2 * MIB as usize..].iter().all(|&b| b == 0));

    let refused = resize(&path, MIB, ResizeOptions::default());
    assert!(
        matches!(refused, Err(DiskError::ShrinkRefused { .. })),
        "{refused:?}"
    );
    assert_eq!(
        fs::metadata(&path).expect("stat").len(),
        4 * MIB,
        "untouched"
    );
    resize(
        &path,
        MIB,
        ResizeOptions {
            force_shrink: true,
            ..Default::default()
        },
    )
    .expect("forced shrink");
    assert_eq!(fs::metadata(&path).expect("stat").len(), MIB);
}

#[test]
fn qcow2_resize_grows_with_zeroes_over_a_larger_backing_and_never_shrinks() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.raw");
    fs::write(&base, pattern(0, 4 * MIB as usize, 5)).expect("base");
    let overlay = dir.path().join("overlay.qcow2");
    create_qcow2(
        &overlay,
        &Qcow2CreateOptions {
            size: Some(2 * MIB),
            backing_file: Some("base.raw".into()),
            backing_format: Some(DiskFormat::Raw),
            ..Default::default()
        },
    )
    .expect("create");
    resize(&overlay, 6 * MIB, ResizeOptions::default()).expect("grow");
    assert_qemu_check_clean(&overlay);
    let content = corral_read_all(&overlay);
    assert_eq!(content.len() as u64, 6 * MIB);
    assert_same_content(
        &content,
        &qemu_read_all(&overlay, dir.path()),
        "qemu agrees",
    );
    assert_same_content(
        &content[..2 * MIB as usize],
        &pattern(0, 2 * MIB as usize, 5),
        "base",
    );
    assert!(
        content[2 * MIB as usize..].iter().all(|&b| b == 0),
        "the grown range reads zero, not the base's old data"
    );

    let refused = resize(
        &overlay,
        2 * MIB,
        ResizeOptions {
            force_shrink: true,
            ..Default::default()
        },
    );
    assert!(
        matches!(refused, Err(DiskError::ShrinkRefused { .. })),
        "{refused:?}"
    );
}

#[test]
fn convert_flattens_a_chain_reports_progress_and_stays_sparse() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.raw");
    let mut base_content = pattern(0, 8 * MIB as usize, 6);
    base_content[2 * MIB as usize..6 * MIB as usize].fill(0); // a hole to keep sparse
    fs::write(&base, &base_content).expect("base");
    let overlay = dir.path().join("overlay.qcow2");
    create_qcow2(
        &overlay,
        &Qcow2CreateOptions {
            backing_file: Some("base.raw".into()),
            backing_format: Some(DiskFormat::Raw),
            ..Default::default()
        },
    )
    .expect("create overlay");
    {
        let mut disk = corral_disk::open(&overlay, OpenOptions::writable()).expect("open");
        disk.write_at(&pattern(0, 1000, 7), 7 * MIB).expect("write");
    }
    let expected = corral_read_all(&overlay);

    for format in [DiskFormat::Qcow2, DiskFormat::Raw] {
        let target = dir.path().join(format!("flat.{format}"));
        let mut reports = Vec::new();
        convert(
            &overlay,
            &target,
            ConvertOptions {
                source_format: None,
                source_backing: Default::default(),
                target_format: format,
                cluster_size: None,
            },
            &mut |progress: CopyProgress| {
                reports.push(progress);
                ControlFlow::Continue(())
            },
        )
        .expect("convert");
        assert!(
            reports.windows(2).all(|w| w[0].done < w[1].done),
            "{reports:?}"
        );
        assert_eq!(
            reports.last(),
            Some(&CopyProgress {
                done: 8 * MIB,
                total: 8 * MIB
            })
        );
        let info = corral_disk::info(&target, OpenOptions::read_only()).expect("info");
        assert_eq!(info.format, format);
        assert!(info.backing_chain.is_empty(), "the copy stands alone");
        assert!(
            info.actual_size < 6 * MIB,
            "the zero range is not allocated: {} bytes",
            info.actual_size
        );
        assert_same_content(&corral_read_all(&target), &expected, "converted content");
        if format == DiskFormat::Qcow2 {
            assert_qemu_check_clean(&target);
        }
        assert_same_content(
            &qemu_read_all(&target, dir.path()),
            &expected,
            "qemu's view",
        );
    }
}

#[test]
fn cancelled_convert_leaves_no_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.raw");
    fs::write(&source, pattern(0, 8 * MIB as usize, 8)).expect("source");
    let target = dir.path().join("target.qcow2");
    let mut calls = 0;
    let result = convert(
        &source,
        &target,
        ConvertOptions {
            source_format: Some(DiskFormat::Raw),
            source_backing: Default::default(),
            target_format: DiskFormat::Qcow2,
            cluster_size: None,
        },
        &mut |_| {
            calls += 1;
            ControlFlow::Break(())
        },
    );
    assert!(
        matches!(result, Err(DiskError::Cancelled { .. })),
        "{result:?}"
    );
    assert_eq!(calls, 1);
    let left: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("source.raw")]);
}
