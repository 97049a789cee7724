//! The guest drives the i8042 controller with arbitrary port reads and writes: every sequence
//! must keep the device consistent (bounded output buffer, no panic).
#![no_main]

use corral_vmm::devices::bus::BusDevice;
use corral_vmm::devices::interrupt::IrqLine;
use corral_vmm::devices::legacy::i8042::I8042;
use corral_vmm::exit::StopSender;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (sender, _events) = std::sync::mpsc::channel();
    let Ok(line) = IrqLine::new(1) else { return };
    let mut device = I8042::new(line.trigger(), StopSender::new(sender));
    for op in data.chunks_exact(3) {
        let offset = u64::from(op[1] % 6);
        match op[0] % 3 {
            0 => device.write(offset, &[op[2]]),
            1 => device.read(offset, &mut [0u8; 1]),
            _ => device.press_ctrl_alt_del(),
        }
        assert!(device.state.output.len() <= 16);
    }
});
