//! ext4-view over a [`Disk`]: the filesystem reader wants an owned (`'static`) source, while the
//! caller lends the disk for the call. The filesystem work therefore runs on a scoped thread that
//! asks this thread for every block it reads; the disk never leaves its thread (a `Disk` is
//! `Send`, not `Sync`). A panic in the filesystem reader becomes an error, not a crash.

use std::sync::mpsc;

use corral_disk::partition::Partition;
use corral_disk::{Disk, DiskError};
use ext4_view::{Ext4, Ext4Error, Ext4Read};

use super::BootError;

/// One read of the filesystem reader; ext4-view reads blocks (at most 64 KiB) and the block
/// group descriptor table, which it bounds. Anything bigger is refused.
const MAX_READ: usize = 16 << 20;

/// The byte range of the disk holding the filesystem.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Extent {
    pub start: u64,
    pub size: u64,
}

impl Extent {
    pub fn whole(disk: &dyn Disk) -> Self {
        Extent {
            start: 0,
            size: disk.virtual_size(),
        }
    }

    pub fn of(partition: &Partition) -> Self {
        Extent {
            start: partition.start,
            size: partition.size,
        }
    }
}

/// A read the filesystem reader refused on its own: it reaches outside the filesystem's extent.
#[derive(Debug, thiserror::Error)]
#[error("a read of {length} bytes at offset {offset} leaves the filesystem ({size} bytes)")]
struct OutsideFilesystem {
    offset: u64,
    length: usize,
    size: u64,
}

struct Request {
    offset: u64,
    length: usize,
}

struct ChannelReader {
    extent: Extent,
    requests: mpsc::Sender<Request>,
    replies: mpsc::Receiver<Result<Vec<u8>, DiskError>>,
}

impl Ext4Read for ChannelReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let outside = || OutsideFilesystem {
            offset: start_byte,
            length: dst.len(),
            size: self.extent.size,
        };
        let inside = start_byte
            .checked_add(dst.len() as u64)
            .is_some_and(|end| end <= self.extent.size);
        if !inside || dst.len() > MAX_READ {
            return Err(Box::new(outside()));
        }
        let request = Request {
            offset: self.extent.start + start_byte,
            length: dst.len(),
        };
        self.requests
            .send(request)
            .map_err(|_| Box::new(outside()))?;
        let bytes = self.replies.recv().map_err(|_| Box::new(outside()))??;
        dst.copy_from_slice(&bytes);
        Ok(())
    }
}

/// Loads the ext2/3/4 filesystem at `extent` of `disk` and runs `work` on it (on another thread;
/// see the module documentation). `Err` when there is no filesystem there that can be read.
pub(crate) fn with_ext4<R: Send>(
    disk: &dyn Disk,
    extent: Extent,
    work: impl FnOnce(&Ext4) -> R + Send,
) -> Result<Result<R, Ext4Error>, BootError> {
    let (request_tx, request_rx) = mpsc::channel::<Request>();
    let (reply_tx, reply_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("corral-bootdisk".into())
            .spawn_scoped(scope, move || {
                let reader = ChannelReader {
                    extent,
                    requests: request_tx,
                    replies: reply_rx,
                };
                Ext4::load(Box::new(reader)).map(|fs| work(&fs))
            })
            .map_err(BootError::Thread)?;
        for request in request_rx {
            let mut buf = vec![0u8; request.length];
            let reply = disk.read_at(&mut buf, request.offset).map(|()| buf);
            if reply_tx.send(reply).is_err() {
                break;
            }
        }
        worker.join().map_err(|_| BootError::ReaderPanicked)
    })
}
