//! A hostile driver lays out guest memory for virtio-vsock's queues: packets with any header
//! (connection requests to ports nobody listens on, data for unknown connections, lengths past
//! their buffers) are answered or dropped, never a panic, a hang or an access outside guest
//! memory.
#![no_main]

use corral_vmm::devices::virtio::testing::TestQueues;
use corral_vmm::devices::virtio::vsock::VsockHandler;
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::epoll::Epoll;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let socket = dir.path().join("v.sock");
    let Ok(listener) = corral_control::bind(&socket) else { return };
    let mut handler = VsockHandler::new(3, socket, listener);
    let Ok(epoll) = Epoll::new() else { return };
    let Ok(mut queues) = TestQueues::from_bytes(data, 3) else { return };
    let _ = handler.process(&mut queues.queues, &epoll);
});
