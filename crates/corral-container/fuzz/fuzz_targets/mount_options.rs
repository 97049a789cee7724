//! Mount options come from the bundle's config.json.
#![no_main]

use corral_container::rootfs::{parse_mount_options, propagation_flags};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let options: Vec<String> = text.split(',').map(str::to_owned).collect();
    let parsed = parse_mount_options(&options);
    for option in &options {
        let _ = propagation_flags(option);
    }
    let _ = parsed.data.len();
});
