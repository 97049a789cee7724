//! The guest drives a virtio-mmio transport (with an entropy device behind it) with arbitrary
//! register reads and writes, including queue setup and DRIVER_OK with rings anywhere: no panic,
//! and the status register only ever shows the bits the spec allows.
#![no_main]

use corral_vmm::devices::bus::BusDevice;
use corral_vmm::devices::interrupt::IrqLine;
use corral_vmm::devices::virtio::mmio::MmioTransport;
use corral_vmm::devices::virtio::rng::Rng;
use corral_vmm::devices::virtio::Interrupt;
use libfuzzer_sys::fuzz_target;
use vm_memory::GuestAddress;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = IrqLine::new(5) else { return };
    let Ok(mut transport) =
        MmioTransport::new(Box::<Rng>::default(), Interrupt::new(line.trigger()))
    else {
        return;
    };
    let Ok(memory) = corral_vmm::vstate::memory::from_ranges(&[(GuestAddress(0), 1 << 20)], false) else {
        return;
    };
    transport.set_memory(&memory);
    for op in data.chunks_exact(7) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]) & 0x1ff);
        let value = [op[3], op[4], op[5], op[6]];
        let width = [1usize, 2, 4, 4][usize::from(op[0] >> 6)];
        if op[0] & 1 == 0 {
            transport.write(offset, &value[..width]);
        } else {
            let mut out = [0u8; 4];
            transport.read(offset, &mut out[..width]);
        }
        assert_eq!(transport.state.status & !0x8f, 0, "status {:#x}", transport.state.status);
    }
});
