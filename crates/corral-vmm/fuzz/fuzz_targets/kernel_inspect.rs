//! Kernel image headers and notes come from files users hand the VMM: `inspect` must refuse any
//! garbage with an error, and `names_linux` walk any notes, never panicking or overflowing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(corral_vmm::kernel::HEADER_BYTES)];
    if let Ok(info) = corral_vmm::kernel::inspect(head, data.len() as u64) {
        assert!(info.max_cmdline >= 1);
    }
    corral_vmm::kernel::names_linux(data);
});
