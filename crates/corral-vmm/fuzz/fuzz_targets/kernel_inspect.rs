//! Kernel image headers come from files users hand the VMM: `inspect` must refuse any garbage
//! with an error, never panic or overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(corral_vmm::kernel::HEADER_BYTES)];
    if let Ok(info) = corral_vmm::kernel::inspect(head, data.len() as u64) {
        assert!(info.max_cmdline >= 1);
    }
});
