//! What filesystem a partition holds, from its magic numbers (as blkid finds them), so a disk
//! corral cannot edit is refused with the names of what it has.

use corral_disk::Disk;

use crate::error::{Result, SysprepError};

/// What a partition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// ext2/3/4; `needs_recovery` when its journal was not replayed (an unclean shutdown).
    Ext { needs_recovery: bool },
    /// Anything else, by name ("vfat", "xfs", "LVM physical volume", ...).
    Other(&'static str),
}

/// Enough of the start of a partition for every magic below (btrfs's is at 64 KiB).
const PROBE_LEN: u64 = 0x11000;

const EXT_MAGIC_AT: usize = 0x438;
const EXT_INCOMPAT_AT: usize = 0x460;
const EXT_INCOMPAT_RECOVER: u32 = 0x4;
const EXT_INCOMPAT_JOURNAL_DEV: u32 = 0x8;

pub(crate) fn probe(disk: &dyn Disk, start: u64, size: u64) -> Result<Found> {
    let mut head = vec![0u8; PROBE_LEN.min(size) as usize];
    disk.read_at(&mut head, start)
        .map_err(|source| SysprepError::Disk {
            action: "read",
            source,
        })?;
    Ok(identify(&head))
}

fn identify(head: &[u8]) -> Found {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(EXT_MAGIC_AT, &[0x53, 0xef]) {
        let incompat = head
            .get(EXT_INCOMPAT_AT..EXT_INCOMPAT_AT + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if incompat & EXT_INCOMPAT_JOURNAL_DEV != 0 {
            return Found::Other("an ext4 external journal");
        }
        return Found::Ext {
            needs_recovery: incompat & EXT_INCOMPAT_RECOVER != 0,
        };
    }
    let named = [
        (0, &b"XFSB"[..], "xfs"),
        (0x10040, b"_BHRfS_M", "btrfs"),
        (0, b"LUKS\xba\xbe", "LUKS encryption"),
        (0x218, b"LVM2 001", "an LVM physical volume"),
        (0xff6, b"SWAPSPACE2", "swap"),
        (0x8001, b"CD001", "iso9660"),
        (3, b"NTFS    ", "ntfs"),
        (0x52, b"FAT32   ", "vfat"),
        (0x36, b"FAT16   ", "vfat"),
        (0x36, b"FAT12   ", "vfat"),
        (0, b"ZFS", "zfs"),
    ];
    if let Some((_, _, name)) = named.iter().find(|(offset, magic, _)| at(*offset, magic)) {
        return Found::Other(name);
    }
    if head.iter().all(|&b| b == 0) {
        return Found::Other("nothing (all zeroes)");
    }
    Found::Other("an unknown filesystem")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(offset: usize, magic: &[u8]) -> Vec<u8> {
        let mut head = vec![0u8; PROBE_LEN as usize];
        head[offset..offset + magic.len()].copy_from_slice(magic);
        head
    }

    #[test]
    fn filesystems_are_named_by_their_magic() {
        assert_eq!(identify(&with(0x52, b"FAT32   ")), Found::Other("vfat"));
        assert_eq!(identify(&with(0, b"XFSB")), Found::Other("xfs"));
        assert_eq!(identify(&with(0x10040, b"_BHRfS_M")), Found::Other("btrfs"));
        assert_eq!(
            identify(&with(0x218, b"LVM2 001")),
            Found::Other("an LVM physical volume")
        );
        assert_eq!(identify(&[0u8; 4096]), Found::Other("nothing (all zeroes)"));
        assert_eq!(identify(&[1u8; 16]), Found::Other("an unknown filesystem"));
    }

    #[test]
    fn an_unreplayed_journal_is_seen() {
        let mut head = with(EXT_MAGIC_AT, &[0x53, 0xef]);
        assert_eq!(
            identify(&head),
            Found::Ext {
                needs_recovery: false
            }
        );
        head[EXT_INCOMPAT_AT] = 0x46;
        assert_eq!(
            identify(&head),
            Found::Ext {
                needs_recovery: true
            }
        );
    }
}
