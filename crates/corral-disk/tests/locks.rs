//! Image locks, QEMU's way: a writer excludes every other opener, readers share, backing files are
//! held shared, and the refusal names the process holding the image. corral and qemu see each
//! other's locks.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use corral_disk::{create_qcow2, create_raw, DiskError, OpenOptions, Qcow2CreateOptions};
use corral_testkit::require_program;

const MIB: u64 = 1 << 20;

fn holders_of(err: &DiskError) -> Vec<u32> {
    match err {
        DiskError::Locked { holders, .. } => holders.iter().map(|h| h.pid).collect(),
        other => panic!("expected a lock conflict, got {other}"),
    }
}

#[test]
fn a_writer_excludes_writers_and_readers_and_readers_share() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    create_raw(&image, MIB).unwrap();

    let writer = corral_disk::open(&image, OpenOptions::writable()).unwrap();
    let second = corral_disk::open(&image, OpenOptions::writable()).unwrap_err();
    let text = second.to_string();
    assert!(text.contains("is in use by pid"), "{text}");
    assert_eq!(holders_of(&second), [std::process::id()], "{text}");
    let reader = corral_disk::open(&image, OpenOptions::read_only()).unwrap_err();
    assert!(
        matches!(reader, DiskError::Locked { writing: false, .. }),
        "{reader}"
    );
    // Looking without locks (info) still works.
    corral_disk::info(&image, OpenOptions::read_only()).unwrap();
    drop(writer);

    let first = corral_disk::open(&image, OpenOptions::read_only()).unwrap();
    let second = corral_disk::open(&image, OpenOptions::read_only()).unwrap();
    let err = corral_disk::open(&image, OpenOptions::writable()).unwrap_err();
    assert!(
        matches!(err, DiskError::Locked { writing: true, .. }),
        "{err}"
    );
    assert!(corral_disk::check_lock(&image, true).is_err());
    assert!(corral_disk::check_lock(&image, false).is_ok());
    drop((first, second));
    corral_disk::check_lock(&image, true).unwrap();
    corral_disk::open(&image, OpenOptions::writable()).unwrap();
}

#[test]
fn backing_files_are_held_shared_while_an_overlay_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    create_raw(&base, MIB).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    create_qcow2(
        &overlay,
        &Qcow2CreateOptions {
            backing_file: Some("base.raw".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let other = dir.path().join("other.qcow2");
    create_qcow2(
        &other,
        &Qcow2CreateOptions {
            backing_file: Some("base.raw".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let _vm = corral_disk::open(&overlay, OpenOptions::writable()).unwrap();
    // A second overlay of the same base: shared reading is fine.
    let _other = corral_disk::open(&other, OpenOptions::writable()).unwrap();
    // Writing the base under them is not, nor resizing it.
    assert!(corral_disk::open(&base, OpenOptions::writable()).is_err());
    let resized = corral_disk::resize(&base, 2 * MIB, Default::default()).unwrap_err();
    assert!(matches!(resized, DiskError::Locked { .. }), "{resized}");
}

/// `qemu-io` on `image`, kept running (it holds the image open) until its stdin closes.
fn qemu_io_holding(image: &Path, read_only: bool) -> Child {
    let mut command = Command::new("qemu-io");
    if read_only {
        command.arg("-r");
    }
    let mut child = command
        .args(["-f", "qcow2", path_str(image)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it has the image locked.
    let deadline = Instant::now() + Duration::from_secs(10);
    while corral_disk::check_lock(image, true).is_ok() {
        assert!(Instant::now() < deadline, "qemu-io did not lock the image");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    child
}

#[test]
fn corral_and_qemu_respect_each_others_locks() {
    require_program!("qemu-io");
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.qcow2");
    let size = Qcow2CreateOptions {
        size: Some(MIB),
        ..Default::default()
    };
    create_qcow2(&image, &size).unwrap();

    // qemu refuses to write, or even check, an image corral writes.
    let disk = corral_disk::open(&image, OpenOptions::writable()).unwrap();
    let (ok, text) = run_status(
        "qemu-io",
        &["-f", "qcow2", "-c", "write 0 512", path_str(&image)],
    );
    assert!(
        !ok && text.contains("Failed to get \"write\" lock"),
        "{text}"
    );
    let (ok, text) = run_status("qemu-img", &["check", path_str(&image)]);
    assert!(
        !ok && text.contains("Failed to get shared \"write\" lock"),
        "{text}"
    );
    drop(disk);

    // corral refuses an image qemu writes, naming the qemu process.
    let mut qemu = qemu_io_holding(&image, false);
    let err = corral_disk::open(&image, OpenOptions::writable()).unwrap_err();
    assert_eq!(holders_of(&err), [qemu.id()]);
    assert!(err.to_string().contains("qemu-io"), "{err}");
    assert!(corral_disk::open(&image, OpenOptions::read_only()).is_err());
    drop(qemu.stdin.take());
    qemu.wait().unwrap();

    // A qemu reader and corral readers share the image.
    let mut qemu = qemu_io_holding(&image, true);
    corral_disk::open(&image, OpenOptions::read_only()).unwrap();
    assert!(corral_disk::open(&image, OpenOptions::writable()).is_err());
    drop(qemu.stdin.take());
    qemu.wait().unwrap();
}

#[test]
fn a_writers_locks_are_handed_over_while_it_keeps_the_image_open_and_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["raw", "qcow2"] {
        let image = dir.path().join(format!("disk.{format}"));
        match format {
            "raw" => create_raw(&image, MIB).unwrap(),
            _ => create_qcow2(
                &image,
                &Qcow2CreateOptions {
                    size: Some(MIB),
                    ..Qcow2CreateOptions::default()
                },
            )
            .unwrap(),
        }
        let mut source = corral_disk::open(&image, OpenOptions::writable()).unwrap();
        let handle = source.take_lock_handle().expect("a writable image has one");
        assert!(source.take_lock_handle().is_none());
        corral_disk::open(&image, OpenOptions::writable()).unwrap_err();

        // Released: another writer (a migration's destination) opens it; the source cannot
        // take it back while that one holds it, and still holds nothing after trying.
        handle.release().unwrap();
        let destination = corral_disk::open(&image, OpenOptions::writable()).unwrap();
        let err = handle.retake().unwrap_err();
        assert!(matches!(err, DiskError::Locked { .. }), "{err}");
        drop(destination);

        // The destination gone (a failed migration), the source takes its image back.
        handle.retake().unwrap();
        corral_disk::open(&image, OpenOptions::read_only()).unwrap_err();
        drop(source);
        assert!(handle.path().ends_with(format!("disk.{format}")));
        drop(handle);
        corral_disk::check_lock(&image, true).unwrap();
    }
    let reader = corral_disk::open(&dir.path().join("disk.raw"), OpenOptions::read_only());
    assert!(reader.unwrap().take_lock_handle().is_none());
}
