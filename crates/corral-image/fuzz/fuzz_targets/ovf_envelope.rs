//! Feeds arbitrary text to corral's OVF envelope parser and, for what parses, the manifest
//! parser on the same bytes. Every outcome is fine except a panic, an abort or a hang (a
//! DTD or an entity must never expand).

#![no_main]

use corral_image::ovf::{envelope, manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = envelope::parse(data) {
        // What parsed is bounded and consistent: each drive names a declared disk.
        for system in &parsed.systems {
            for drive in &system.disks {
                assert!(parsed.disks.iter().any(|d| d.id == drive.disk.id));
            }
        }
    }
    let _ = manifest::parse(data);
});
