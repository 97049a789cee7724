//! Feeds arbitrary bytes to corral as a qcow2 image: open read-only and read, then open writable
//! and write. Every outcome is fine except a panic, an abort or a hang.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use corral_disk::{DiskFormat, OpenOptions};
use libfuzzer_sys::fuzz_target;

/// Every reading stops here, so a huge virtual size does not make one input take minutes.
const READ_LIMIT: u64 = 4 << 20;

fn image_path() -> &'static PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        DIR.get_or_init(|| tempfile::tempdir().expect("fuzz scratch directory"))
            .path()
            .join("input.qcow2")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = image_path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let qcow2 = OpenOptions::read_only().format(DiskFormat::Qcow2);
    if let Ok(disk) = corral_disk::open(path, qcow2) {
        let size = disk.virtual_size();
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0;
        while offset < size.min(READ_LIMIT) {
            let length = (size - offset).min(buf.len() as u64) as usize;
            let _ = disk.read_at(&mut buf[..length], offset);
            offset += length as u64;
        }
        // The far end of the disk, where L1/L2 indices are largest.
        let tail = size.saturating_sub(4096);
        let length = (size - tail) as usize;
        let _ = disk.read_at(&mut buf[..length], tail);
    }
    let _ = corral_disk::info(path, OpenOptions::read_only());
    let _ = corral_disk::check(path);

    let writable = OpenOptions::writable().format(DiskFormat::Qcow2);
    if let Ok(mut disk) = corral_disk::open(path, writable) {
        let size = disk.virtual_size();
        for offset in [0, size / 2, size.saturating_sub(512)] {
            let length = size.saturating_sub(offset).min(512) as usize;
            let _ = disk.write_at(&[0xa5; 512][..length], offset);
        }
        let _ = disk.write_zeroes(0, size.min(128 * 1024));
        let _ = disk.flush();
    }
});
