//! Feeds arbitrary bytes to corral's archive unpacking (decompression detected, then tar, as a
//! plain archive and as an OCI layer over the first's result) into a scratch directory with small
//! limits. Every outcome is fine except a panic, an abort, a hang or a write outside the scratch
//! directory.

#![no_main]

use std::io::Cursor;

use corral_image::archive::{decompress, unpack, Limits, UnpackOptions};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_bytes: 8 << 20,
    max_entries: 10_000,
};

fuzz_target!(|data: &[u8]| {
    let Ok(scratch) = tempfile::tempdir() else {
        return;
    };
    let target = scratch.path().join("target");
    if std::fs::create_dir(&target).is_err() {
        return;
    }
    for layer in [false, true] {
        let options = UnpackOptions {
            limits: LIMITS,
            layer,
        };
        if let Ok(reader) = decompress(Cursor::new(data.to_vec())) {
            let _ = unpack(reader, &target, &options);
        }
    }
    // Nothing beside the target.
    let beside = std::fs::read_dir(scratch.path()).map(|d| d.count()).unwrap_or(1);
    assert_eq!(beside, 1, "an entry was written outside the target");
});
