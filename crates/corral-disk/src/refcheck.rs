//! A check run before a qcow2 image is opened for writing: every cluster holding metadata (header,
//! L1 table, refcount table, L2 tables, refcount blocks) must have a non-zero refcount.
//!
//! The allocator trusts refcounts: a metadata cluster counted as free would be handed out again
//! and overwritten, destroying the image (and a missing first refcount block sends imago's
//! allocator into unbounded recursion). qemu guards the same way with its overlap checks; corral
//! refuses such an image up front and points at `qemu-img check -r all`. Read-only opens never
//! allocate and skip the check.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{DiskError, Result};
use crate::header::Qcow2Header;

/// qemu's limits on the tables it will load: 32 MiB of L1 entries, 8 MiB of refcount table.
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Bits 9..=55 of an L1 or refcount table entry hold a cluster offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

struct Checker<'a> {
    path: &'a Path,
    file: &'a File,
    file_len: u64,
    cluster_bits: u32,
    refcount_order: u32,
    reftable: Vec<u64>,
    refblocks: HashMap<u64, Vec<u8>>,
}

impl Checker<'_> {
    fn invalid(&self, reason: String) -> DiskError {
        DiskError::InvalidQcow2 {
            path: self.path.to_path_buf(),
            reason: format!("{reason}; repair it with `qemu-img check -r all`"),
        }
    }

    fn read(&self, offset: u64, length: u64) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; length as usize];
        self.file
            .read_exact_at(&mut bytes, offset)
            .map_err(|source| DiskError::io("read", self.path, source))?;
        Ok(bytes)
    }

    /// Reads a table of big-endian u64 entries, checking it lies cluster-aligned inside the file.
    fn read_table(&self, what: &str, offset: u64, entries: u64, limit: u64) -> Result<Vec<u64>> {
        let bytes = entries * 8;
        let cluster_mask = (1u64 << self.cluster_bits) - 1;
        if bytes > limit {
            return Err(self.invalid(format!("the {what} ({bytes} bytes) is implausibly large")));
        }
        if offset & cluster_mask != 0 || offset.saturating_add(bytes) > self.file_len {
            return Err(self.invalid(format!(
                "the {what} at offset {offset} is unaligned or outside the file"
            )));
        }
        Ok(self
            .read(offset, bytes)?
            .chunks_exact(8)
            .map(|entry| {
                let mut word = [0u8; 8];
                word.copy_from_slice(entry);
                u64::from_be_bytes(word)
            })
            .collect())
    }

    /// The refcount of the host cluster at `offset` (0 where no refcount block covers it).
    fn refcount(&mut self, offset: u64) -> Result<u64> {
        let cluster = offset >> self.cluster_bits;
        let entry_bits = 1u64 << self.refcount_order;
        let entries_per_block = (8u64 << self.cluster_bits) / entry_bits;
        let Some(&rt_entry) = self.reftable.get((cluster / entries_per_block) as usize) else {
            return Ok(0);
        };
        let block_offset = rt_entry & OFFSET_MASK;
        if block_offset == 0 {
            return Ok(0);
        }
        if !self.refblocks.contains_key(&block_offset) {
            let cluster_size = 1u64 << self.cluster_bits;
            if rt_entry & (cluster_size - 1) != 0 || block_offset + cluster_size > self.file_len {
                return Err(self.invalid(format!(
                    "the refcount block at offset {block_offset} is unaligned or outside the file"
                )));
            }
            let block = self.read(block_offset, cluster_size)?;
            self.refblocks.insert(block_offset, block);
        }
        let block = &self.refblocks[&block_offset];
        let index = cluster % entries_per_block;
        Ok(refcount_entry(block, index, self.refcount_order))
    }

    fn require_referenced(&mut self, what: &str, offset: u64) -> Result<()> {
        if self.refcount(offset)? == 0 {
            return Err(self.invalid(format!(
                "the {what} at offset {offset} has refcount 0, so it would be overwritten"
            )));
        }
        Ok(())
    }
}

/// Entry `index` of a refcount block whose entries are `1 << order` bits wide. Sub-byte entries
/// are packed from the least significant bit (qemu's layout); wider ones are big-endian.
fn refcount_entry(block: &[u8], index: u64, order: u32) -> u64 {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let byte = block[(index / per_byte) as usize];
        return u64::from(byte >> (bits * (index % per_byte))) & ((1 << bits) - 1);
    }
    let width = (bits / 8) as usize;
    let start = index as usize * width;
    block[start..start + width]
        .iter()
        .fold(0, |value, &byte| value << 8 | u64::from(byte))
}

/// Refuses the image if any metadata cluster is counted free.
pub(crate) fn check_metadata_refcounts(
    path: &Path,
    file: &File,
    header: &Qcow2Header,
) -> Result<()> {
    let file_len = file
        .metadata()
        .map_err(|source| DiskError::io("read", path, source))?
        .len();
    let cluster_size = header.cluster_size();
    let mut checker = Checker {
        path,
        file,
        file_len,
        cluster_bits: header.cluster_bits,
        refcount_order: header.refcount_order,
        reftable: Vec::new(),
        refblocks: HashMap::new(),
    };
    let reftable_entries = u64::from(header.refcount_table_clusters) * cluster_size / 8;
    checker.reftable = checker.read_table(
        "refcount table",
        header.refcount_table_offset,
        reftable_entries,
        MAX_REFTABLE_BYTES,
    )?;
    let l1 = checker.read_table(
        "L1 table",
        header.l1_table_offset,
        u64::from(header.l1_entries),
        MAX_L1_BYTES,
    )?;

    checker.require_referenced("header", 0)?;
    let table_clusters = |offset: u64, bytes: u64| {
        (0..bytes.div_ceil(cluster_size)).map(move |i| offset + i * cluster_size)
    };
    for offset in table_clusters(header.refcount_table_offset, reftable_entries * 8) {
        checker.require_referenced("refcount table", offset)?;
    }
    for offset in table_clusters(header.l1_table_offset, l1.len() as u64 * 8) {
        checker.require_referenced("L1 table", offset)?;
    }
    let refblocks: Vec<u64> = checker
        .reftable
        .iter()
        .map(|entry| entry & OFFSET_MASK)
        .filter(|&offset| offset != 0)
        .collect();
    for offset in refblocks {
        checker.require_referenced("refcount block", offset)?;
    }
    for entry in l1 {
        let l2_offset = entry & OFFSET_MASK;
        if l2_offset == 0 {
            continue;
        }
        if l2_offset & (cluster_size - 1) != 0 || l2_offset + cluster_size > file_len {
            return Err(checker.invalid(format!(
                "the L2 table at offset {l2_offset} is unaligned or outside the file"
            )));
        }
        checker.require_referenced("L2 table", l2_offset)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::refcount_entry;

    #[test]
    fn refcount_entries_of_every_width() {
        // 1-bit entries, LSB first: 0b0000_0101 → entries 0 and 2 set.
        assert_eq!(refcount_entry(&[0b101], 0, 0), 1);
        assert_eq!(refcount_entry(&[0b101], 1, 0), 0);
        assert_eq!(refcount_entry(&[0b101], 2, 0), 1);
        // 4-bit entries: low nibble first.
        assert_eq!(refcount_entry(&[0x3a], 0, 2), 0xa);
        assert_eq!(refcount_entry(&[0x3a], 1, 2), 0x3);
        // 16-bit big-endian (qemu's default).
        assert_eq!(refcount_entry(&[0, 1, 0x12, 0x34], 1, 4), 0x1234);
        assert_eq!(refcount_entry(&[0, 1, 0x12, 0x34], 0, 4), 1);
        // 64-bit.
        assert_eq!(refcount_entry(&[0, 0, 0, 0, 0, 0, 1, 2], 0, 6), 0x102);
    }
}
