//! A qcow2 header names its backing file, and a header is untrusted: an image whose header is
//! edited to name a host file (`/etc/passwd`) as backing would hand that file to the guest. With a
//! `BackingPolicy::Within`, corral opens backing files only inside the allowed places.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use corral_disk::{
    create_qcow2, BackingPolicy, DiskError, DiskFormat, OpenOptions, Qcow2CreateOptions,
};
use corral_testkit::require_program;

const MIB: u64 = 1 << 20;

/// Makes `overlay` a 1 MiB qcow2 image naming `backing` (raw) as its backing file, unchecked.
fn overlay_naming(overlay: &Path, backing: &str) {
    let args = [
        "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw",
    ];
    let mut args = args.to_vec();
    args.extend([path_str(overlay), "1M"]);
    run("qemu-img", &args);
}

/// A pool directory with `base.raw` and the overlay `disk.qcow2` naming `backing` as its base.
fn pool_with_overlay(root: &Path, backing: &str) -> (PathBuf, PathBuf) {
    let pool = root.join("pool");
    fs::create_dir(&pool).unwrap();
    fs::write(pool.join("base.raw"), pattern(0, MIB as usize, 3)).unwrap();
    let overlay = pool.join("disk.qcow2");
    overlay_naming(&overlay, backing);
    (pool, overlay)
}

fn within(places: &[&Path]) -> OpenOptions {
    OpenOptions::read_only()
        .format(DiskFormat::Qcow2)
        .backing(BackingPolicy::Within(
            places.iter().map(|p| p.to_path_buf()).collect(),
        ))
}

#[test]
fn a_backing_file_outside_the_allowed_places_is_refused_by_name() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let (pool, overlay) = pool_with_overlay(dir.path(), "/etc/passwd");
    let err = corral_disk::open(&overlay, within(&[&pool])).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DiskError::BackingNotAllowed { .. }), "{text}");
    assert!(text.contains("/etc/passwd"), "{text}");
    assert!(text.contains(path_str(&pool)), "{text}");
    // info goes through the same check.
    assert!(matches!(
        corral_disk::info(&overlay, within(&[&pool])),
        Err(DiskError::BackingNotAllowed { .. })
    ));
    // Allowing the file explicitly (or not confining at all) opens it.
    corral_disk::open(&overlay, within(&[&pool, Path::new("/etc/passwd")])).unwrap();
    corral_disk::open(&overlay, OpenOptions::read_only()).unwrap();
}

#[test]
fn backing_files_inside_the_allowed_places_open_and_links_do_not_lead_out() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let (pool, overlay) = pool_with_overlay(dir.path(), "base.raw");
    let disk = corral_disk::open(&overlay, within(&[&pool])).unwrap();
    let mut buf = vec![0u8; 4096];
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, pattern(0, 4096, 3));
    drop(disk);

    // A symbolic link inside the pool that points out of it is judged by where it leads.
    let outside = dir.path().join("secret.raw");
    fs::write(&outside, vec![0x5a; MIB as usize]).unwrap();
    std::os::unix::fs::symlink(&outside, pool.join("link.raw")).unwrap();
    let linked = pool.join("linked.qcow2");
    overlay_naming(&linked, "link.raw");
    let err = corral_disk::open(&linked, within(&[&pool])).unwrap_err();
    assert!(err.to_string().contains("link.raw"), "{err}");
}

#[test]
fn creating_an_overlay_checks_the_named_backing_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    fs::create_dir(&pool).unwrap();
    let outside = dir.path().join("base.raw");
    fs::write(&outside, vec![0u8; MIB as usize]).unwrap();
    let err = create_qcow2(
        &pool.join("disk.qcow2"),
        &Qcow2CreateOptions {
            backing_file: Some(outside.clone()),
            backing_policy: BackingPolicy::Within(vec![pool.clone()]),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, DiskError::BackingNotAllowed { .. }), "{err}");
    assert!(!pool.join("disk.qcow2").exists());
}
