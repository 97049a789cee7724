//! mountinfo text describes mounts other processes (and containers) made.
#![no_main]

use corral_container::cgroups::Layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Layout::from_mountinfo(&String::from_utf8_lossy(data));
});
