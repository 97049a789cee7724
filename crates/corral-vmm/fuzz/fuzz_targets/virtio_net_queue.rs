//! A hostile driver lays out guest memory for virtio-net's receive and transmit queues while the
//! "tap" (a datagram socket) has a frame waiting: no panic, no hang, no access outside guest
//! memory.
#![no_main]

use std::os::unix::net::UnixDatagram;

use corral_vmm::devices::virtio::net::NetHandler;
use corral_vmm::devices::virtio::testing::TestQueues;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((host, device)) = UnixDatagram::pair() else { return };
    if device.set_nonblocking(true).is_err() || host.send(&[0x55; 60]).is_err() {
        return;
    }
    let mut handler = NetHandler::new(Box::new(device));
    let Ok(mut queues) = TestQueues::from_bytes(data, 2) else { return };
    let _ = handler.process_tx(&mut queues.queues);
    let _ = handler.process_rx(&mut queues.queues);
});
