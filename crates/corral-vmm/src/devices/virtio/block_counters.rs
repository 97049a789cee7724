//! What a virtio-blk device has served, counted by its I/O thread and read by the control
//! socket's `info` (and so the API's metrics) while the VM runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct BlockCounters {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub flushes: AtomicU64,
    /// Requests answered with an error status (I/O errors and unsupported requests).
    pub errors: AtomicU64,
}

impl BlockCounters {
    /// A transfer of `bytes` done: a read, or a write.
    pub fn transferred(&self, write: bool, bytes: u64) {
        let (count, total) = if write {
            (&self.writes, &self.written_bytes)
        } else {
            (&self.reads, &self.read_bytes)
        };
        count.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters under `disk.DEVICE.`, as the control socket's `info` names them.
    pub fn named(&self, device: &str, into: &mut BTreeMap<String, u64>) {
        for (name, counter) in [
            ("reads", &self.reads),
            ("read_bytes", &self.read_bytes),
            ("writes", &self.writes),
            ("written_bytes", &self.written_bytes),
            ("flushes", &self.flushes),
            ("errors", &self.errors),
        ] {
            into.insert(
                format!("disk.{device}.{name}"),
                counter.load(Ordering::Relaxed),
            );
        }
    }
}
