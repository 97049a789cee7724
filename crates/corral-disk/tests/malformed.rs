//! A qcow2 file is untrusted input: malformed headers and tables give errors, never panics, and
//! never reach files outside the image.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use corral_disk::{create_qcow2, DiskError, OpenOptions, Qcow2CreateOptions};
use corral_testkit::require_program;

const MIB: u64 = 1 << 20;

/// A small qcow2 image with some data, 4 KiB clusters (so metadata sits in the first clusters).
fn sample_image(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    create_qcow2(
        &path,
        &Qcow2CreateOptions {
            size: Some(4 * MIB),
            cluster_size: Some(4096),
            ..Default::default()
        },
    )
    .expect("create");
    let mut disk = corral_disk::open(&path, OpenOptions::writable()).expect("open");
    disk.write_at(&pattern(0, 300_000, 1), 5000).expect("write");
    disk.write_at(&pattern(0, 4096, 2), 3 * MIB).expect("write");
    disk.flush().expect("flush");
    path
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path).expect("open");
    file.write_all_at(bytes, offset).expect("poke");
}

fn header_u64(path: &Path, offset: u64) -> u64 {
    let file = fs::File::open(path).expect("open");
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, offset).expect("read header");
    u64::from_be_bytes(word)
}

/// Opens (read-only and writable) and reads the whole disk, then writes to it: every step may
/// fail, none may panic. Returns the first error, if any.
fn exercise(path: &Path) -> Option<DiskError> {
    let disk = match corral_disk::open(path, OpenOptions::read_only()) {
        Ok(disk) => disk,
        Err(err) => return Some(err),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut first_error = None;
    let mut offset = 0;
    while offset < disk.virtual_size().min(8 * MIB) {
        let length = (disk.virtual_size() - offset).min(buf.len() as u64) as usize;
        if let Err(err) = disk.read_at(&mut buf[..length], offset) {
            first_error.get_or_insert(err);
        }
        offset += length as u64;
    }
    drop(disk);
    match corral_disk::open(path, OpenOptions::writable()) {
        Ok(mut disk) => {
            let size = disk.virtual_size();
            for offset in [0, size / 2, size.saturating_sub(4096)] {
                if let Err(err) = disk.write_at(&[0x5a; 4096][..size.min(4096) as usize], offset) {
                    first_error.get_or_insert(err);
                }
            }
            if let Err(err) = disk.flush() {
                first_error.get_or_insert(err);
            }
        }
        Err(err) => {
            first_error.get_or_insert(err);
        }
    }
    first_error
}

#[test]
fn corrupt_header_fields_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, u64, &[u8])] = &[
        ("bad version", 4, &7u32.to_be_bytes()),
        ("huge cluster bits", 20, &63u32.to_be_bytes()),
        ("absurd size", 24, &u64::MAX.to_be_bytes()),
        ("encrypted", 32, &2u32.to_be_bytes()),
        (
            "backing name outside cluster",
            8,
            &0xffff_0000u64.to_be_bytes(),
        ),
        (
            "unknown incompatible feature",
            72,
            &(1u64 << 33).to_be_bytes(),
        ),
        ("bad header length", 100, &13u32.to_be_bytes()),
    ];
    for (what, offset, bytes) in cases {
        let image = sample_image(dir.path(), &format!("{}.qcow2", what.replace(' ', "-")));
        poke(&image, *offset, bytes);
        let result = corral_disk::open(&image, OpenOptions::read_only());
        assert!(result.is_err(), "{what}: opened anyway");
        // Every variant renders as a sentence naming the image.
        let message = result.err().map(|err| err.to_string()).unwrap_or_default();
        assert!(message.contains(path_str(&image)), "{what}: {message}");
    }
    let truncated = sample_image(dir.path(), "truncated.qcow2");
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .and_then(|file| file.set_len(50))
        .expect("truncate");
    assert!(matches!(
        corral_disk::open(&truncated, OpenOptions::read_only()),
        Err(DiskError::InvalidQcow2 { .. })
    ));
}

#[test]
fn corrupt_tables_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    // L1 table far past the end of the file / not cluster aligned.
    for (name, l1_offset) in [("l1-past-eof", 1u64 << 45), ("l1-unaligned", 4096 + 3)] {
        let image = sample_image(dir.path(), &format!("{name}.qcow2"));
        poke(&image, 40, &l1_offset.to_be_bytes());
        assert!(exercise(&image).is_some(), "{name}: no error");
    }
    // An L1 table larger than any real one.
    let image = sample_image(dir.path(), "l1-huge.qcow2");
    poke(&image, 36, &u32::MAX.to_be_bytes());
    assert!(exercise(&image).is_some(), "huge l1_size: no error");
    // An L1 entry pointing at an unaligned L2 table.
    let image = sample_image(dir.path(), "l2-unaligned.qcow2");
    let l1_offset = header_u64(&image, 40);
    poke(
        &image,
        l1_offset,
        &((1u64 << 63) | (4096 + 8)).to_be_bytes(),
    );
    assert!(exercise(&image).is_some(), "unaligned l2: no error");
    // The refcount table far past the end of the file.
    let image = sample_image(dir.path(), "reftable-past-eof.qcow2");
    poke(&image, 48, &(1u64 << 45).to_be_bytes());
    assert!(
        exercise(&image).is_some(),
        "refcount table past eof: no error"
    );
}

#[test]
fn backing_loops_are_refused() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    // `-u` skips qemu-img's own check of the backing file, which is what builds a loop.
    let create = |name: &str, backing: &str| {
        let path = dir.path().join(name);
        qemu_img_create(&["-u", "-b", backing, "-F", "qcow2", path_str(&path), "1M"]);
        path
    };
    let a = create("a.qcow2", "b.qcow2");
    create("b.qcow2", "a.qcow2");
    let result = corral_disk::open(&a, OpenOptions::read_only());
    assert!(
        matches!(result, Err(DiskError::BackingLoop { .. })),
        "{result:?}"
    );

    let own = create("self.qcow2", "self.qcow2");
    let result = corral_disk::open(&own, OpenOptions::read_only());
    assert!(
        matches!(result, Err(DiskError::BackingLoop { .. })),
        "{result:?}"
    );

    // A hard link names the same file under another path: still a loop.
    let linked = create("linked.qcow2", "alias.qcow2");
    fs::hard_link(&linked, dir.path().join("alias.qcow2")).expect("hard link");
    let result = corral_disk::open(&linked, OpenOptions::read_only());
    assert!(
        matches!(result, Err(DiskError::BackingLoop { .. })),
        "{result:?}"
    );

    let missing = create("orphan.qcow2", "gone.qcow2");
    let result = corral_disk::open(&missing, OpenOptions::read_only());
    assert!(matches!(result, Err(DiskError::Open { .. })), "{result:?}");
}

#[test]
fn overlong_backing_chains_are_refused() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut previous = "layer-0.qcow2".to_string();
    qemu_img_create(&[path_str(&dir.path().join(&previous)), "1M"]);
    for depth in 1..=corral_disk::MAX_BACKING_DEPTH + 1 {
        let name = format!("layer-{depth}.qcow2");
        let path = dir.path().join(&name);
        qemu_img_create(&["-u", "-b", &previous, "-F", "qcow2", path_str(&path), "1M"]);
        previous = name;
    }
    let top = dir.path().join(&previous);
    let result = corral_disk::open(&top, OpenOptions::read_only());
    assert!(
        matches!(result, Err(DiskError::BackingTooDeep { .. })),
        "{result:?}"
    );
    // One level less is fine.
    let below = dir
        .path()
        .join(format!("layer-{}.qcow2", corral_disk::MAX_BACKING_DEPTH));
    corral_disk::open(&below, OpenOptions::read_only()).expect("a chain at the limit opens");
}

#[test]
fn writable_open_refuses_metadata_counted_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = sample_image(dir.path(), "leaky.qcow2");
    // Clear the first refcount table entry: the header cluster is then counted free.
    let reftable = header_u64(&image, 48);
    poke(&image, reftable, &0u64.to_be_bytes());
    let before = fs::read(&image).expect("read");
    let result = corral_disk::open(&image, OpenOptions::writable());
    assert!(
        matches!(result, Err(DiskError::InvalidQcow2 { .. })),
        "{result:?}"
    );
    assert_eq!(
        fs::read(&image).expect("read"),
        before,
        "nothing was written"
    );
    // Reading does not allocate, so a read-only open still works.
    let disk = corral_disk::open(&image, OpenOptions::read_only()).expect("read-only open");
    let mut buf = vec![0u8; 4096];
    disk.read_at(&mut buf, 3 * MIB).expect("read");
    assert_eq!(buf, pattern(0, 4096, 2));
}

/// Deterministic random corruption of the metadata clusters: whatever the bytes, no panic.
#[test]
fn random_metadata_corruption_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = sample_image(dir.path(), "pristine.qcow2");
    let metadata_len = 5 * 4096; // header, reftable, refblock, L1, first L2
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for round in 0..1000 {
        let image = dir.path().join(format!("corrupt-{round}.qcow2"));
        fs::copy(&pristine, &image).expect("copy");
        for _ in 0..1 + next() % 8 {
            // Bias towards the header, where every byte matters.
            let offset = if next() % 2 == 0 {
                next() % 112
            } else {
                next() % metadata_len
            };
            poke(&image, offset, &[next() as u8]);
        }
        if exercise(&image).is_some() {
            errors += 1;
        }
        fs::remove_file(&image).expect("remove");
    }
    assert!(errors > 0, "some corruptions must be detected");
}
