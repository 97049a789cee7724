//! config.json comes from whoever prepared the bundle: parsing, validating and planning from it
//! must never panic.
#![no_main]

use corral_container::spec::{parse_spec, process_env, validate, NamespacePlan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = parse_spec(text) {
        let _ = validate(&spec);
        let _ = NamespacePlan::from_spec(&spec);
        if let Some(process) = spec.process() {
            let _ = process_env(process, None);
        }
    }
});
