//! Copying an image into a new, self-contained one (image import, template copies): the whole
//! backing chain is flattened; only the source's data ranges are read, and zero blocks in them
//! are skipped, so the copy stays sparse and costs the data, not the virtual size.

use std::ops::{ControlFlow, Range};
use std::path::Path;

use crate::create::{check_size, write_qcow2, write_raw, PendingImage, DEFAULT_CLUSTER_SIZE};
use crate::error::{DiskError, Result};
use crate::{open, BackingPolicy, Disk, DiskFormat, OpenOptions};

/// How far a copy has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyProgress {
    /// Bytes of the virtual disk handled so far.
    pub done: u64,
    /// Virtual size of the disk.
    pub total: u64,
}

/// Options for [`convert`].
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Format of the source; `None` detects it.
    pub source_format: Option<DiskFormat>,
    /// Where the source's backing files may be.
    pub source_backing: BackingPolicy,
    /// Format of the new image.
    pub target_format: DiskFormat,
    /// Cluster size of a qcow2 target; `None` for 64 KiB.
    pub cluster_size: Option<u64>,
}

/// The copy moves this much per read; big enough to amortise the per-request cost.
pub(crate) const COPY_CHUNK: u64 = 2 << 20;
/// Zero detection works at this granularity: an all-zero block is not written.
const ZERO_BLOCK: usize = 64 << 10;

/// Copies the image at `source` into a new image at `target` (which must not exist), calling
/// `progress` after each chunk of data and once at the end (`done == total`); returning
/// `ControlFlow::Break` from it cancels the copy and removes the partial target.
pub fn convert(
    source: &Path,
    target: &Path,
    options: ConvertOptions,
    progress: &mut dyn FnMut(CopyProgress) -> ControlFlow<()>,
) -> Result<()> {
    let source_disk = open(
        source,
        OpenOptions {
            format: options.source_format,
            backing: options.source_backing.clone(),
            ..OpenOptions::read_only()
        },
    )?;
    let total = source_disk.virtual_size();
    check_size(target, total)?;
    let pending = PendingImage::new(target)?;
    match options.target_format {
        DiskFormat::Raw => write_raw(&pending, total)?,
        DiskFormat::Qcow2 => write_qcow2(
            &pending,
            total,
            options.cluster_size.unwrap_or(DEFAULT_CLUSTER_SIZE),
            None,
        )?,
    }
    let mut target_disk = open(
        pending.path(),
        OpenOptions::writable().format(options.target_format),
    )?;
    let ranges = source_disk.data_ranges(0, total)?;
    let copied = copy_ranges(
        source_disk.as_ref(),
        &ranges,
        &mut |chunk, offset| copy_nonzero(target_disk.as_mut(), chunk, offset),
        progress,
    )?;
    if copied.is_break() {
        return Err(DiskError::Cancelled {
            source_path: source.to_path_buf(),
            destination: target.to_path_buf(),
        });
    }
    target_disk.flush()?;
    drop(target_disk);
    pending.publish()
}

/// Writes the blocks of `chunk` that are not all zeroes; a new image already reads zero elsewhere.
fn copy_nonzero(target: &mut dyn Disk, chunk: &[u8], offset: u64) -> Result<()> {
    let mut block_offset = offset;
    for block in chunk.chunks(ZERO_BLOCK) {
        if !is_zero(block) {
            target.write_at(block, block_offset)?;
        }
        block_offset += block.len() as u64;
    }
    Ok(())
}

/// Reads `ranges` of `source` (in order, apart, inside the disk) in [`COPY_CHUNK`] pieces and
/// hands each to `write` with its offset, calling `progress` after each piece and once at the end
/// (`done == total`). Returns `Break` when `progress` cancelled the copy.
pub(crate) fn copy_ranges(
    source: &dyn Disk,
    ranges: &[Range<u64>],
    write: &mut dyn FnMut(&[u8], u64) -> Result<()>,
    progress: &mut dyn FnMut(CopyProgress) -> ControlFlow<()>,
) -> Result<ControlFlow<()>> {
    let total = source.virtual_size();
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    let mut done = 0;
    for data in ranges {
        done = data.start;
        while done < data.end {
            let length = (data.end - done).min(COPY_CHUNK) as usize;
            let chunk = &mut buf[..length];
            source.read_at(chunk, done)?;
            write(chunk, done)?;
            done += length as u64;
            fail::fail_point!("image.copying");
            if progress(CopyProgress { done, total }).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
    }
    if done < total {
        // The holes after the last data are done too; a cancel now comes too late to matter.
        fail::fail_point!("image.copying");
        let _ = progress(CopyProgress { done: total, total });
    }
    Ok(ControlFlow::Continue(()))
}

/// True when `block` holds only zero bytes: such a block is left unwritten (a hole).
pub(crate) fn is_zero(block: &[u8]) -> bool {
    block.iter().all(|&byte| byte == 0)
}
