//! The partition table of a VM disk (GPT or MBR with its extended chain), read from untrusted
//! bytes: every offset and count is checked against the disk and bounded before it is used.
//! Shared by everything that looks inside a guest's disk without the guest: finding its kernel
//! (corral-image's bootdisk) and resetting its identity (corral-sysprep).

use crate::{Disk, DiskError};

/// Sectors are 512 bytes: the size every VM disk image format presents.
const SECTOR: u64 = 512;
/// GPT allows any number of entries; real tables have 128. Beyond this the table is refused.
const MAX_GPT_ENTRIES: u32 = 1024;
/// Logical partitions followed in an MBR extended chain before it is taken for a loop.
const MAX_LOGICAL: u32 = 128;
/// The MBR type of a GPT's protective partition.
const GPT_PROTECTIVE: u8 = 0xee;

/// A partition: its number as Linux counts them (1-based; MBR logical ones from 5) and its
/// byte range on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as Linux numbers them (`/dev/vda1`); MBR logical partitions from 5.
    pub number: u32,
    /// The first byte on the disk.
    pub start: u64,
    /// The length in bytes.
    pub size: u64,
}

/// Why a disk's partitions cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("cannot read the disk's partition table")]
    Read(#[source] DiskError),
    #[error("the disk's {table} partition table is invalid: {reason}")]
    Invalid { table: &'static str, reason: String },
}

/// The partitions of `disk`, in table order; empty when the disk has no partition table (the
/// whole disk is then the filesystem). Partitions reaching past the end of the disk are left out.
pub fn partitions(disk: &dyn Disk) -> Result<Vec<Partition>, PartitionError> {
    let disk_size = disk.virtual_size();
    if disk_size < 2 * SECTOR {
        return Ok(Vec::new());
    }
    let mbr = read(disk, 0, SECTOR as usize)?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Ok(Vec::new());
    }
    let entries = mbr_entries(&mbr);
    if entries.iter().any(|entry| entry.kind == GPT_PROTECTIVE) {
        return gpt(disk, disk_size);
    }
    let mut found = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.kind == 0 {
            continue;
        }
        if is_extended(entry.kind) {
            logical(disk, disk_size, entry.first_lba, &mut found)?;
            continue;
        }
        push_checked(
            &mut found,
            disk_size,
            index as u32 + 1,
            entry.first_lba,
            entry.sectors,
        );
    }
    Ok(found)
}

struct MbrEntry {
    kind: u8,
    first_lba: u64,
    sectors: u64,
}

fn mbr_entries(sector: &[u8]) -> Vec<MbrEntry> {
    (0..4)
        .map(|index| {
            let entry = &sector[446 + index * 16..446 + (index + 1) * 16];
            MbrEntry {
                kind: entry[4],
                first_lba: u64::from(le32(&entry[8..12])),
                sectors: u64::from(le32(&entry[12..16])),
            }
        })
        .collect()
}

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

/// Follows the chain of extended boot records starting at `extended_lba`; each one's partition
/// is relative to itself, each link relative to the start of the extended partition.
fn logical(
    disk: &dyn Disk,
    disk_size: u64,
    extended_lba: u64,
    found: &mut Vec<Partition>,
) -> Result<(), PartitionError> {
    let mut ebr_lba = extended_lba;
    for number in 5..5 + MAX_LOGICAL {
        let Some(offset) = ebr_lba
            .checked_mul(SECTOR)
            .filter(|o| o.checked_add(SECTOR).is_some_and(|end| end <= disk_size))
        else {
            return Ok(());
        };
        let sector = read(disk, offset, SECTOR as usize)?;
        if sector[510..512] != [0x55, 0xaa] {
            return Ok(());
        }
        let entries = mbr_entries(&sector);
        if entries[0].kind != 0 {
            if let Some(first) = ebr_lba.checked_add(entries[0].first_lba) {
                push_checked(found, disk_size, number, first, entries[0].sectors);
            }
        }
        if !is_extended(entries[1].kind) || entries[1].first_lba == 0 {
            return Ok(());
        }
        match extended_lba.checked_add(entries[1].first_lba) {
            Some(next) => ebr_lba = next,
            None => return Ok(()),
        }
    }
    Ok(())
}

/// The primary GPT: header at LBA 1 and its entry array, both CRC-checked.
fn gpt(disk: &dyn Disk, disk_size: u64) -> Result<Vec<Partition>, PartitionError> {
    let invalid = |reason: &str| PartitionError::Invalid {
        table: "GPT",
        reason: reason.to_string(),
    };
    let header = read(disk, SECTOR, SECTOR as usize)?;
    if &header[..8] != b"EFI PART" {
        return Err(invalid(
            "the protective MBR announces a GPT but LBA 1 has no `EFI PART` header",
        ));
    }
    let header_size = le32(&header[12..16]) as usize;
    if !(92..=SECTOR as usize).contains(&header_size) {
        return Err(invalid("the header size is out of range"));
    }
    let mut zeroed = header[..header_size].to_vec();
    zeroed[16..20].fill(0);
    if crc32fast::hash(&zeroed) != le32(&header[16..20]) {
        return Err(invalid("the header checksum does not match"));
    }
    let entries_lba = le64(&header[72..80]);
    let count = le32(&header[80..84]);
    let entry_size = le32(&header[84..88]);
    if count > MAX_GPT_ENTRIES {
        return Err(invalid("it has more than 1024 partition entries"));
    }
    if !(128..=4096).contains(&entry_size) || !entry_size.is_power_of_two() {
        return Err(invalid(
            "the partition entry size is not a power of two from 128 to 4096",
        ));
    }
    let length = u64::from(count) * u64::from(entry_size);
    let Some(offset) = entries_lba.checked_mul(SECTOR).filter(|offset| {
        offset
            .checked_add(length)
            .is_some_and(|end| end <= disk_size)
    }) else {
        return Err(invalid("the partition entries lie outside the disk"));
    };
    let array = read(disk, offset, length as usize)?;
    if crc32fast::hash(&array) != le32(&header[88..92]) {
        return Err(invalid("the partition entries' checksum does not match"));
    }
    let mut found = Vec::new();
    for (index, entry) in array.chunks_exact(entry_size as usize).enumerate() {
        if entry[..16].iter().all(|&byte| byte == 0) {
            continue;
        }
        let first = le64(&entry[32..40]);
        let last = le64(&entry[40..48]);
        if last < first {
            continue;
        }
        push_checked(
            &mut found,
            disk_size,
            index as u32 + 1,
            first,
            last - first + 1,
        );
    }
    Ok(found)
}

/// Adds the partition of `sectors` sectors at `first_lba` unless it is empty or leaves the disk.
fn push_checked(
    found: &mut Vec<Partition>,
    disk_size: u64,
    number: u32,
    first_lba: u64,
    sectors: u64,
) {
    let range = first_lba
        .checked_mul(SECTOR)
        .zip(sectors.checked_mul(SECTOR))
        .filter(|&(start, size)| {
            size > 0 && start.checked_add(size).is_some_and(|end| end <= disk_size)
        });
    if let Some((start, size)) = range {
        found.push(Partition {
            number,
            start,
            size,
        });
    }
}

fn read(disk: &dyn Disk, offset: u64, length: usize) -> Result<Vec<u8>, PartitionError> {
    let mut buf = vec![0u8; length];
    disk.read_at(&mut buf, offset)
        .map_err(PartitionError::Read)?;
    Ok(buf)
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn le64(bytes: &[u8]) -> u64 {
    u64::from(le32(&bytes[..4])) | u64::from(le32(&bytes[4..8])) << 32
}
