//! VM configs are user files (and later part of instance definitions): parsing and validation
//! must answer every input with a config or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = corral_vmm::VmConfig::from_toml(text, std::path::Path::new("/vm/vm.toml")) {
        let _ = config.validate();
    }
});
