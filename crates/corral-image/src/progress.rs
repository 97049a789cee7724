//! Progress of long image work (imports, exports, copies), reported in bytes so a front end can
//! draw a bar with a rate. The library never draws anything itself.

use std::io::Read;

/// Receives progress. Implementations must be cheap: `advance` is called for every read.
pub trait Progress: Sync {
    /// A new phase starts (`what` is a short lower-case phrase: "unpacking layer 2 of 3");
    /// `total` bytes are expected when known.
    fn begin(&self, what: &str, total: Option<u64>);
    /// `bytes` more were processed in the current phase.
    fn advance(&self, bytes: u64);
    /// True once whoever watches wants the work stopped: readers and copies reporting here
    /// then fail with [`Cancelled`] at their next step, and the work undoes what it made.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Work stopped because its [`Progress`] said it was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl Cancelled {
    /// The error an I/O step returns for it.
    pub fn io() -> std::io::Error {
        std::io::Error::other(Cancelled)
    }
}

/// Reports nothing: scripts, tests.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _what: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
}

/// A reader that reports every byte read through it.
pub struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<'a, R: Read> ProgressReader<'a, R> {
    pub fn new(inner: R, progress: &'a dyn Progress) -> Self {
        Self { inner, progress }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.progress.cancelled() {
            return Err(Cancelled::io());
        }
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Reports a `corral_disk::convert` as one phase: begun with the disk's virtual size at its
/// first step, advanced by the bytes each step handled.
pub struct DiskCopy<'a> {
    progress: &'a dyn Progress,
    what: &'a str,
    reported: Option<u64>,
}

impl<'a> DiskCopy<'a> {
    pub fn new(progress: &'a dyn Progress, what: &'a str) -> Self {
        Self {
            progress,
            what,
            reported: None,
        }
    }

    /// The callback `corral_disk::convert` takes: it cancels the copy once `progress` is
    /// cancelled.
    pub fn step(&mut self, step: corral_disk::CopyProgress) -> std::ops::ControlFlow<()> {
        let reported = *self.reported.get_or_insert_with(|| {
            self.progress.begin(self.what, Some(step.total));
            0
        });
        self.progress.advance(step.done.saturating_sub(reported));
        self.reported = Some(step.done);
        if self.progress.cancelled() {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Cancelled once `stop` is set.
    #[derive(Default)]
    struct Stoppable {
        stop: AtomicBool,
    }

    impl Progress for Stoppable {
        fn begin(&self, _what: &str, _total: Option<u64>) {}
        fn advance(&self, _bytes: u64) {}
        fn cancelled(&self) -> bool {
            self.stop.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn a_cancelled_progress_stops_its_reader_and_its_disk_copy() {
        let progress = Stoppable::default();
        let mut reader = ProgressReader::new(&[7u8; 64][..], &progress);
        let mut buf = [0u8; 16];
        assert_eq!(reader.read(&mut buf).unwrap(), 16);
        let mut copy = DiskCopy::new(&progress, "copying");
        let step = corral_disk::CopyProgress {
            done: 16,
            total: 64,
        };
        assert!(copy.step(step).is_continue());

        progress.stop.store(true, Ordering::Relaxed);
        let err = reader.read(&mut buf).unwrap_err();
        assert!(
            err.get_ref().is_some_and(|inner| inner.is::<Cancelled>()),
            "{err}"
        );
        assert!(copy
            .step(corral_disk::CopyProgress {
                done: 32,
                total: 64
            })
            .is_break());
    }
}
