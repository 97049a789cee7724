//! `qemu-img check` on corral's side: every reference in a qcow2 image's metadata (header, L1 and
//! L2 tables, data and compressed clusters, refcount table and blocks, snapshot tables) is counted
//! and compared with the stored refcounts, and the OFLAG_COPIED bits are checked against them.
//!
//! - A stored refcount below the references is a **corruption**: the allocator trusts refcounts,
//!   so a cluster counted free would be handed out again and overwritten (a corrupted refcount
//!   table made imago overwrite the header, or recurse until the stack overflowed). A writable
//!   open refuses such an image and names the fix.
//! - A stored refcount above the references is a **leak**: space that is not reused until it is
//!   repaired, harmless otherwise. A process killed between allocating a cluster and using it
//!   leaves leaks, so a writable open accepts them (qemu's rule) and reports them;
//!   [`repair_leaks`] lowers such refcounts (`qemu-img check -r leaks`).
//!
//! The image is untrusted: tables must be cluster aligned and inside the file, their sizes are
//! capped like qemu's, and so is the size of the count array.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{DiskError, Result};
use crate::header::{self, Qcow2Header, V3_HEADER_LEN};
use crate::read_start;

/// qemu's limits on the tables it will load: 32 MiB of L1 entries, 8 MiB of refcount table,
/// 64 MiB of snapshot table.
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const MAX_SNAPSHOT_TABLE_BYTES: u64 = 64 << 20;
/// The most host clusters the check counts (512 MiB of counters at most); an image file with
/// more is beyond what the check handles in memory.
const MAX_CLUSTERS: u64 = 1 << 28;
/// Bits 9..=55 of an L1, L2 or refcount table entry hold a cluster offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// The autoclear bit that says persistent bitmaps are valid.
const AUTOCLEAR_BITMAPS: u64 = 1;
/// The check lists at most this many problems; the counts stay exact.
const MAX_LISTED: usize = 20;

/// What [`check`] found, in `qemu-img check --output=json`'s terms.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckReport {
    /// The image.
    pub filename: PathBuf,
    /// Always `qcow2`.
    pub format: &'static str,
    /// Clusters whose refcount is below their references, plus OFLAG_COPIED mismatches and
    /// references outside the file.
    pub corruptions: u64,
    /// Clusters whose refcount is above their references.
    pub leaks: u64,
    /// Leaked clusters [`repair_leaks`] gave back.
    pub leaks_fixed: u64,
    /// Guest clusters backed by this image (data, zero-with-allocation or compressed).
    pub allocated_clusters: u64,
    /// Guest clusters of the virtual disk.
    pub total_clusters: u64,
    /// The end of the last cluster anything refers to.
    pub image_end_offset: u64,
    /// The first problems found, one sentence each.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// No corruption and no leak.
    pub fn is_clean(&self) -> bool {
        self.corruptions == 0 && self.leaks == 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }

    fn corruption(&mut self, text: String) {
        self.corruptions += 1;
        self.problem(text);
    }
}

/// One table entry that claims sole ownership (OFLAG_COPIED) or not, to compare with the refcount
/// of the cluster it points at once all references are counted.
struct CopiedClaim {
    what: &'static str,
    entry: u64,
    cluster: u64,
}

/// The state of one check.
struct Checker<'a> {
    path: &'a Path,
    file: &'a File,
    header: &'a Qcow2Header,
    file_len: u64,
    reftable: Vec<u64>,
    refblocks: HashMap<u64, Vec<u8>>,
    /// References per host cluster (saturating).
    counts: Vec<u16>,
    claims: Vec<CopiedClaim>,
    report: CheckReport,
}

impl Checker<'_> {
    fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

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

    /// True when `length` bytes at `offset` start on a cluster and lie inside the file.
    fn in_file(&self, offset: u64, length: u64) -> bool {
        offset & (self.cluster_size() - 1) == 0
            && offset
                .checked_add(length)
                .is_some_and(|end| end <= self.file_len)
    }

    /// Reads a table of big-endian u64 entries, which must be cluster aligned inside the file.
    /// A table that is not is an error: nothing below it can be checked.
    fn read_table(&self, what: &str, offset: u64, entries: u64, limit: u64) -> Result<Vec<u64>> {
        let bytes = entries.saturating_mul(8);
        if bytes > limit {
            return Err(self.invalid(format!("the {what} ({bytes} bytes) is implausibly large")));
        }
        if !self.in_file(offset, bytes) {
            return Err(self.invalid(format!(
                "the {what} at offset {offset} is unaligned or outside the file"
            )));
        }
        Ok(self
            .read(offset, bytes)?
            .chunks_exact(8)
            .map(be64)
            .collect())
    }

    /// Counts one reference to every cluster overlapping `length` bytes at `offset`.
    fn reference(&mut self, what: &str, offset: u64, length: u64) {
        if length == 0 {
            return;
        }
        let end = offset.saturating_add(length);
        if end > self.file_len {
            self.report.corruption(format!(
                "the {what} at offset {offset} lies past the end of the file"
            ));
            return;
        }
        let bits = self.header.cluster_bits;
        let first = offset >> bits;
        let last = (end - 1) >> bits;
        for cluster in first..=last {
            // Inside the file, so below MAX_CLUSTERS (checked when the counts were sized).
            let count = &mut self.counts[cluster as usize];
            *count = count.saturating_add(1);
        }
        self.report.image_end_offset = self.report.image_end_offset.max((last + 1) << bits);
    }

    /// The stored refcount of host cluster `cluster` (0 where no refcount block covers it, or
    /// where the block is unusable: that is reported once, from the refcount table check).
    fn refcount(&mut self, cluster: u64) -> Result<u64> {
        let entries_per_block = self.entries_per_block();
        let Some(&rt_entry) = self.reftable.get((cluster / entries_per_block) as usize) else {
            return Ok(0);
        };
        let block_offset = rt_entry & OFFSET_MASK;
        if block_offset == 0 || !self.in_file(block_offset, self.cluster_size()) {
            return Ok(0);
        }
        if !self.refblocks.contains_key(&block_offset) {
            let block = self.read(block_offset, self.cluster_size())?;
            self.refblocks.insert(block_offset, block);
        }
        let block = &self.refblocks[&block_offset];
        Ok(refcount_entry(
            block,
            cluster % entries_per_block,
            self.header.refcount_order,
        ))
    }

    fn entries_per_block(&self) -> u64 {
        (8 * self.cluster_size()) >> self.header.refcount_order
    }

    /// Counts an L1 table and everything below it; `active` is the image's own table (whose
    /// OFLAG_COPIED bits are checked), not a snapshot's.
    fn walk_l1(
        &mut self,
        what: &'static str,
        offset: u64,
        entries: u64,
        active: bool,
    ) -> Result<()> {
        let l1 = self.read_table(what, offset, entries, MAX_L1_BYTES)?;
        self.reference(what, offset, entries * 8);
        for (index, entry) in l1.into_iter().enumerate() {
            let l2_offset = entry & OFFSET_MASK;
            if l2_offset == 0 {
                continue;
            }
            if !self.in_file(l2_offset, self.cluster_size()) {
                self.report.corruption(format!(
                    "L1 entry {index} points at an L2 table at offset {l2_offset}, unaligned or \
                     outside the file"
                ));
                continue;
            }
            self.reference("L2 table", l2_offset, self.cluster_size());
            if active {
                self.claims.push(CopiedClaim {
                    what: "L2 table",
                    entry,
                    cluster: l2_offset >> self.header.cluster_bits,
                });
            }
            let l2 = self.read(l2_offset, self.cluster_size())?;
            for entry in l2.chunks_exact(8).map(be64) {
                self.count_l2_entry(entry, active);
            }
        }
        Ok(())
    }

    fn count_l2_entry(&mut self, entry: u64, active: bool) {
        let bits = self.header.cluster_bits;
        if entry & COMPRESSED != 0 {
            // The descriptor holds the host offset and the number of 512-byte sectors.
            let size_shift = 62 - (bits - 8);
            let sectors = ((entry >> size_shift) & ((1 << (bits - 8)) - 1)) + 1;
            let host = entry & ((1 << size_shift) - 1) & !511;
            if active {
                self.report.allocated_clusters += 1;
            }
            if entry & COPIED != 0 {
                self.report.corruption(format!(
                    "the compressed cluster at offset {host} has OFLAG_COPIED set"
                ));
            }
            self.reference("compressed cluster", host, sectors * 512);
            return;
        }
        let offset = entry & OFFSET_MASK;
        if offset == 0 {
            // Unallocated, or a zero cluster without allocation.
            return;
        }
        if !self.in_file(offset, self.cluster_size()) {
            self.report.corruption(format!(
                "an L2 entry points at a data cluster at offset {offset}, unaligned or outside \
                 the file"
            ));
            return;
        }
        self.reference("data cluster", offset, self.cluster_size());
        if active {
            self.report.allocated_clusters += 1;
            self.claims.push(CopiedClaim {
                what: "data cluster",
                entry,
                cluster: offset >> bits,
            });
        }
    }

    /// Counts the snapshot table and each snapshot's L1 table and what it refers to.
    fn walk_snapshots(&mut self) -> Result<()> {
        let header = self.header;
        if header.snapshot_count == 0 {
            return Ok(());
        }
        let mut offset = header.snapshots_offset;
        let start = offset;
        let mut tables = Vec::new();
        for _ in 0..header.snapshot_count {
            // Entries start 8-byte aligned; the table ends right after the last one. The
            // offset comes from the file: it may be anywhere up to u64::MAX.
            offset = match offset.checked_next_multiple_of(8) {
                Some(aligned)
                    if aligned - start <= MAX_SNAPSHOT_TABLE_BYTES
                        && aligned.saturating_add(40) <= self.file_len =>
                {
                    aligned
                }
                _ => {
                    return Err(self.invalid(format!(
                        "the snapshot table at offset {start} is implausibly large or outside \
                         the file"
                    )))
                }
            };
            let fixed = self.read(offset, 40)?;
            let l1_offset = be64(&fixed[0..8]);
            let l1_entries = u64::from(be32(&fixed[8..12]));
            let id_len = u64::from(u16::from_be_bytes([fixed[12], fixed[13]]));
            let name_len = u64::from(u16::from_be_bytes([fixed[14], fixed[15]]));
            let extra_len = u64::from(be32(&fixed[36..40]));
            offset += 40 + extra_len + id_len + name_len;
            tables.push((l1_offset, l1_entries));
        }
        if !self.in_file(start, offset - start) {
            return Err(self.invalid(format!(
                "the snapshot table at offset {start} is unaligned or outside the file"
            )));
        }
        self.reference("snapshot table", start, offset - start);
        for (l1_offset, l1_entries) in tables {
            self.walk_l1("snapshot L1 table", l1_offset, l1_entries, false)?;
        }
        Ok(())
    }

    /// Counts the refcount table and the refcount blocks it lists.
    fn walk_refcount_structures(&mut self) {
        let cluster_size = self.cluster_size();
        let table_bytes = self.reftable.len() as u64 * 8;
        self.reference(
            "refcount table",
            self.header.refcount_table_offset,
            table_bytes,
        );
        for index in 0..self.reftable.len() {
            let entry = self.reftable[index];
            let offset = entry & OFFSET_MASK;
            if offset == 0 {
                continue;
            }
            if !self.in_file(offset, cluster_size) || entry & 0x1ff != 0 {
                self.report.corruption(format!(
                    "refcount table entry {index} points at a refcount block at offset \
                     {offset}, unaligned or outside the file"
                ));
                continue;
            }
            self.reference("refcount block", offset, cluster_size);
        }
    }

    /// Compares stored refcounts with the references; returns the leaked clusters and the
    /// refcount each should have.
    fn compare(&mut self) -> Result<Vec<(u64, u64)>> {
        let cluster_size = self.cluster_size();
        let mut leaked = Vec::new();
        for cluster in 0..self.counts.len() as u64 {
            let references = u64::from(self.counts[cluster as usize]);
            let stored = self.refcount(cluster)?;
            let offset = cluster * cluster_size;
            if stored < references {
                self.report.corruption(format!(
                    "the cluster at offset {offset} has refcount {stored} but {references} \
                     references"
                ));
            } else if stored > references {
                self.report.leaks += 1;
                if self.report.leaks as usize <= MAX_LISTED {
                    self.report.problem(format!(
                        "the cluster at offset {offset} is leaked (refcount {stored}, \
                         {references} references)"
                    ));
                }
                leaked.push((cluster, references));
            }
        }
        let claims = std::mem::take(&mut self.claims);
        for claim in claims {
            let refcount = self.refcount(claim.cluster)?;
            let claimed = claim.entry & COPIED != 0;
            if claimed != (refcount == 1) {
                self.report.corruption(format!(
                    "the {} at offset {} has OFLAG_COPIED {} but refcount {refcount}",
                    claim.what,
                    claim.cluster * cluster_size,
                    if claimed { "set" } else { "clear" },
                ));
            }
        }
        Ok(leaked)
    }
}

fn be64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

fn be32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
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

/// Sets entry `index` of a refcount block (see [`refcount_entry`]) to `value`.
fn set_refcount_entry(block: &mut [u8], index: u64, order: u32, value: u64) {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let shift = bits * (index % per_byte);
        let mask = ((1u64 << bits) - 1) << shift;
        let byte = &mut block[(index / per_byte) as usize];
        *byte = ((u64::from(*byte) & !mask) | ((value << shift) & mask)) as u8;
        return;
    }
    let width = (bits / 8) as usize;
    let start = index as usize * width;
    let bytes = value.to_be_bytes();
    block[start..start + width].copy_from_slice(&bytes[8 - width..]);
}

/// Runs the whole check on an open image file; returns the report and the leaked clusters with
/// the refcount each should have.
fn run(path: &Path, file: &File, header: &Qcow2Header) -> Result<(CheckReport, Vec<(u64, u64)>)> {
    let file_len = file
        .metadata()
        .map_err(|source| DiskError::io("read", path, source))?
        .len();
    let cluster_size = header.cluster_size();
    let file_clusters = file_len.div_ceil(cluster_size);
    if file_clusters > MAX_CLUSTERS {
        return Err(DiskError::Unsupported {
            path: path.to_path_buf(),
            feature: format!("{file_clusters} host clusters, more than corral's check counts"),
            fix: "check it with `qemu-img check`",
        });
    }
    let mut checker = Checker {
        path,
        file,
        header,
        file_len,
        reftable: Vec::new(),
        refblocks: HashMap::new(),
        counts: vec![0; file_clusters as usize],
        claims: Vec::new(),
        report: CheckReport {
            filename: path.to_path_buf(),
            format: "qcow2",
            total_clusters: header.virtual_size.div_ceil(cluster_size),
            ..CheckReport::default()
        },
    };
    let reftable_entries = u64::from(header.refcount_table_clusters) * cluster_size / 8;
    checker.reftable = checker.read_table(
        "refcount table",
        header.refcount_table_offset,
        reftable_entries,
        MAX_REFTABLE_BYTES,
    )?;
    checker.reference("header", 0, cluster_size);
    checker.walk_l1(
        "L1 table",
        header.l1_table_offset,
        u64::from(header.l1_entries),
        true,
    )?;
    checker.walk_snapshots()?;
    checker.walk_refcount_structures();
    let leaked = checker.compare()?;
    Ok((checker.report, leaked))
}

/// Opens `path` and parses its header for a check, locked like a reader (a writer's caches would
/// make the check see half-written metadata) or, to repair, like a writer.
fn open_for_check(path: &Path, writable: bool) -> Result<(File, Qcow2Header)> {
    let options = crate::OpenOptions {
        writable,
        ..crate::OpenOptions::read_only()
    };
    let file = options.open_file(path)?;
    let header = header::parse(path, &read_start(path, &file, V3_HEADER_LEN)?)?;
    if header.autoclear_features & AUTOCLEAR_BITMAPS != 0 {
        return Err(DiskError::Unsupported {
            path: path.to_path_buf(),
            feature: "persistent dirty bitmaps".into(),
            fix: "check it with `qemu-img check`",
        });
    }
    Ok((file, header))
}

/// Checks the qcow2 image at `path` (read-only) like `qemu-img check`.
pub fn check(path: &Path) -> Result<CheckReport> {
    let (file, header) = open_for_check(path, false)?;
    Ok(run(path, &file, &header)?.0)
}

/// Checks the qcow2 image at `path` and gives leaked clusters back (`qemu-img check -r leaks`).
/// An image with corruptions is left untouched and the error names the fix. The caller must make
/// sure nothing else has the image open.
pub fn repair_leaks(path: &Path) -> Result<CheckReport> {
    let (file, header) = open_for_check(path, true)?;
    let (mut report, leaked) = run(path, &file, &header)?;
    if report.corruptions > 0 {
        return Err(corruption_error(path, &report));
    }
    if leaked.is_empty() {
        return Ok(report);
    }
    let cluster_size = header.cluster_size();
    let entries_per_block = (8 * cluster_size) >> header.refcount_order;
    let reftable_entries = u64::from(header.refcount_table_clusters) * cluster_size / 8;
    let reftable: Vec<u64> = {
        let mut bytes = vec![0u8; (reftable_entries * 8) as usize];
        file.read_exact_at(&mut bytes, header.refcount_table_offset)
            .map_err(|source| DiskError::io("read", path, source))?;
        bytes.chunks_exact(8).map(be64).collect()
    };
    // Every leaked cluster has a non-zero refcount, so its refcount block exists and was read
    // by the check; rewrite each affected block once.
    let mut blocks: HashMap<u64, Vec<u8>> = HashMap::new();
    for &(cluster, references) in &leaked {
        let block_offset = reftable[(cluster / entries_per_block) as usize] & OFFSET_MASK;
        let block = match blocks.entry(block_offset) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let mut bytes = vec![0u8; cluster_size as usize];
                file.read_exact_at(&mut bytes, block_offset)
                    .map_err(|source| DiskError::io("read", path, source))?;
                entry.insert(bytes)
            }
        };
        set_refcount_entry(
            block,
            cluster % entries_per_block,
            header.refcount_order,
            references,
        );
    }
    for (offset, block) in &blocks {
        file.write_all_at(block, *offset)
            .map_err(|source| DiskError::io("write", path, source))?;
    }
    file.sync_all()
        .map_err(|source| DiskError::io("flush", path, source))?;
    report.leaks_fixed = leaked.len() as u64;
    Ok(report)
}

/// The error for an image whose check found corruptions.
fn corruption_error(path: &Path, report: &CheckReport) -> DiskError {
    let first = report.problems.first().cloned().unwrap_or_default();
    DiskError::InvalidQcow2 {
        path: path.to_path_buf(),
        reason: format!(
            "{} corruptions, the first: {first}; repair it with `qemu-img check -r all`",
            report.corruptions
        ),
    }
}

/// The check before a writable open: corruptions refuse the open; leaks are reported as a warning
/// (a crash leaves them; they cost space, nothing else).
pub(crate) fn check_before_writing(
    path: &Path,
    file: &File,
    header: &Qcow2Header,
) -> Result<CheckReport> {
    let (report, _) = run(path, file, header)?;
    if report.corruptions > 0 {
        return Err(corruption_error(path, &report));
    }
    if report.leaks > 0 {
        tracing::warn!(
            "disk image {} has {} leaked clusters (left by a crash: they take space but harm \
             nothing); `corral volume check --repair` or `qemu-img check -r leaks` gives them back",
            path.display(),
            report.leaks
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{refcount_entry, set_refcount_entry};

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

    #[test]
    fn set_refcount_entry_changes_only_its_entry() {
        for order in 0..=6u32 {
            let bits = 1u64 << order;
            let max = if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
            let mut block = vec![0xffu8; 64];
            set_refcount_entry(&mut block, 3, order, 0);
            assert_eq!(refcount_entry(&block, 3, order), 0, "order {order}");
            assert_eq!(refcount_entry(&block, 2, order), max, "order {order}");
            assert_eq!(refcount_entry(&block, 4, order), max, "order {order}");
            set_refcount_entry(&mut block, 3, order, 1);
            assert_eq!(refcount_entry(&block, 3, order), 1, "order {order}");
        }
    }
}
