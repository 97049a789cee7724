//! A hostile driver lays out guest memory (descriptor table, available ring, buffers) for a
//! virtio-blk queue over a small raw disk: every request ends with a status or a reset request,
//! never a panic, a hang or an access outside guest memory.
#![no_main]

use corral_vmm::devices::virtio::block::BlockHandler;
use corral_vmm::devices::virtio::testing::TestQueues;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = tempfile::NamedTempFile::new() else { return };
    if file.as_file().set_len(64 << 10).is_err() {
        return;
    }
    let Ok(disk) = corral_disk::open(file.path(), corral_disk::OpenOptions::writable()) else {
        return;
    };
    let mut handler = BlockHandler::new(disk, "fuzz");
    let Ok(mut queues) = TestQueues::from_bytes(data, 1) else { return };
    let _ = handler.process_queue(&mut queues.queues);
});
