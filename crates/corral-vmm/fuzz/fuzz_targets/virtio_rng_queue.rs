//! A hostile driver lays out guest memory for the virtio-rng queue: no panic, no hang, no write
//! outside guest memory.
#![no_main]

use corral_vmm::devices::virtio::rng::RngHandler;
use corral_vmm::devices::virtio::testing::TestQueues;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut queues) = TestQueues::from_bytes(data, 1) else { return };
    let _ = RngHandler.process_queue(&mut queues.queues);
});
