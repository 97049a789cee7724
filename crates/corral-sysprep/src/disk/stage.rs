//! A filesystem's bytes copied out of a disk into a sparse host file that e2fsprogs can edit,
//! and copied back where, and only where, they changed.
//!
//! Staging reads only the disk's data ranges (`Disk::data_ranges`: a sparse file's data, the
//! clusters a qcow2 chain allocates) and skips all-zero chunks in them, so holes stay holes and
//! the copy costs the filesystem's allocated data, not its size: a 100 GiB disk holding 100 MiB
//! stages in the time of 100 MiB. Writing back compares the staged file's data (found with
//! `SEEK_DATA`/`SEEK_HOLE`, plus everything staged, should a tool have punched a hole) with the
//! disk block by block and writes only the blocks that differ: a qcow2 overlay gains clusters
//! for the edited blocks alone, and its base is never touched. All comparisons are made before
//! the first write, so a read error leaves the disk unchanged.

use std::os::unix::fs::FileExt;
use std::path::Path;

use corral_disk::{file_data_ranges, Disk};

use crate::error::{Result, SysprepError};

/// Bytes moved per disk request.
const CHUNK: u64 = 1 << 20;
/// The unit of comparison: an ext filesystem's usual block.
const BLOCK: usize = 4096;

/// A filesystem staged from a disk.
pub(crate) struct Staged {
    file: tempfile::NamedTempFile,
    /// Where the filesystem starts on the disk.
    start: u64,
    size: u64,
    /// The (offset, length) ranges staging wrote, in order.
    staged: Vec<(u64, u64)>,
}

impl Staged {
    /// Copies `size` bytes at `start` of `disk` into a new sparse file in `scratch`.
    pub fn stage(disk: &dyn Disk, start: u64, size: u64, scratch: &Path) -> Result<Self> {
        let scratch_error = |source| SysprepError::Scratch {
            dir: scratch.to_path_buf(),
            source,
        };
        let file = tempfile::Builder::new()
            .prefix(".corral-sysprep-")
            .tempfile_in(scratch)
            .map_err(scratch_error)?;
        file.as_file().set_len(size).map_err(scratch_error)?;
        let read_error = |source| SysprepError::Disk {
            action: "read",
            source,
        };
        let mut staged: Vec<(u64, u64)> = Vec::new();
        let mut buf = vec![0u8; CHUNK as usize];
        for data in disk.data_ranges(start, size).map_err(read_error)? {
            let mut offset = data.start - start;
            while offset < data.end - start {
                let len = CHUNK.min(data.end - start - offset);
                let chunk = &mut buf[..len as usize];
                disk.read_at(chunk, start + offset).map_err(read_error)?;
                if !is_zero(chunk) {
                    file.as_file()
                        .write_all_at(chunk, offset)
                        .map_err(scratch_error)?;
                    match staged.last_mut() {
                        Some((at, run)) if *at + *run == offset => *run += len,
                        _ => staged.push((offset, len)),
                    }
                }
                offset += len;
            }
        }
        Ok(Staged {
            file,
            start,
            size,
            staged,
        })
    }

    /// The staged file, for the tools.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Writes the blocks that differ from the disk back to it and flushes it; returns the bytes
    /// written.
    pub fn write_back(&self, disk: &mut dyn Disk) -> Result<u64> {
        let scratch_error = |source| SysprepError::Scratch {
            dir: self.path().to_path_buf(),
            source,
        };
        let file = self.file.as_file();
        let length = file.metadata().map_err(scratch_error)?.len();
        if length != self.size {
            return Err(SysprepError::Scratch {
                dir: self.path().to_path_buf(),
                source: std::io::Error::other(format!(
                    "the staged filesystem changed size from {} to {length} bytes",
                    self.size
                )),
            });
        }
        let mut ranges = self.staged.clone();
        let data = file_data_ranges(file, 0, self.size).map_err(scratch_error)?;
        ranges.extend(
            data.into_iter()
                .map(|range| (range.start, range.end - range.start)),
        );
        let differing = self.differing(disk, &merge(ranges))?;
        let mut written = 0;
        let mut buf = Vec::new();
        for (offset, len) in differing {
            let result = (|| {
                buf.resize(len as usize, 0);
                file.read_exact_at(&mut buf, offset)
                    .map_err(scratch_error)?;
                disk.write_at(&buf, self.start + offset)
                    .map_err(|source| SysprepError::Disk {
                        action: "write",
                        source,
                    })
            })();
            if let Err(source) = result {
                return Err(partly_written(written, source));
            }
            written += len;
        }
        disk.flush()
            .map_err(|source| SysprepError::Disk {
                action: "flush",
                source,
            })
            .map_err(|error| partly_written(written, error))?;
        Ok(written)
    }

    /// The runs of blocks in `ranges` whose staged content differs from the disk's.
    fn differing(&self, disk: &dyn Disk, ranges: &[(u64, u64)]) -> Result<Vec<(u64, u64)>> {
        let file = self.file.as_file();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut staged = vec![0u8; CHUNK as usize];
        let mut current = vec![0u8; CHUNK as usize];
        for &(start, len) in ranges {
            let mut offset = start;
            while offset < start + len {
                let n = CHUNK.min(start + len - offset) as usize;
                file.read_exact_at(&mut staged[..n], offset)
                    .map_err(|source| SysprepError::Scratch {
                        dir: self.path().to_path_buf(),
                        source,
                    })?;
                disk.read_at(&mut current[..n], self.start + offset)
                    .map_err(|source| SysprepError::Disk {
                        action: "read",
                        source,
                    })?;
                for (index, (new, old)) in staged[..n]
                    .chunks(BLOCK)
                    .zip(current[..n].chunks(BLOCK))
                    .enumerate()
                {
                    if new == old {
                        continue;
                    }
                    let at = offset + (index * BLOCK) as u64;
                    let block = new.len() as u64;
                    match runs.last_mut() {
                        Some((run_at, run_len)) if *run_at + *run_len == at => *run_len += block,
                        _ => runs.push((at, block)),
                    }
                }
                offset += n as u64;
            }
        }
        Ok(runs)
    }
}

fn partly_written(written: u64, error: SysprepError) -> SysprepError {
    if written == 0 {
        return error;
    }
    SysprepError::WriteBack {
        written,
        source: Box::new(error),
    }
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// `ranges` sorted, with overlapping and touching ranges joined.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (at, len) in ranges {
        match merged.last_mut() {
            Some((last_at, last_len)) if at <= *last_at + *last_len => {
                *last_len = (*last_len).max(at + len - *last_at);
            }
            _ => merged.push((at, len)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_they_touch_or_overlap() {
        assert_eq!(
            merge(vec![(10, 5), (0, 10), (20, 5), (22, 1), (30, 1)]),
            [(0, 15), (20, 5), (30, 1)]
        );
    }
}
