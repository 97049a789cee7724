//! Feeds arbitrary bytes to corral as a raw VM disk and looks for its kernel: the partition
//! table, the ext4 filesystems and the boot configurations in them are all parsed from the input.
//! Every outcome is fine except a panic, an abort or a hang.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use corral_disk::{DiskFormat, OpenOptions};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        DIR.get_or_init(|| tempfile::tempdir().expect("fuzz scratch directory"))
            .path()
            .to_path_buf()
    })
}

fuzz_target!(|data: &[u8]| {
    let image = scratch().join("disk.raw");
    if std::fs::write(&image, data).is_err() {
        return;
    }
    let raw = OpenOptions::read_only().format(DiskFormat::Raw);
    let Ok(disk) = corral_disk::open(&image, raw) else {
        return;
    };
    if corral_image::bootdisk::find_boot(disk.as_ref()).is_ok() {
        let out = scratch().join("boot");
        let _ = std::fs::create_dir(&out);
        let _ = corral_image::bootdisk::extract_boot(disk.as_ref(), &out);
    }
});
