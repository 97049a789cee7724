//! Where the test guests built from `guests/` are. See `build.rs` for how they are made.

use std::path::PathBuf;

/// The PVH ELF image of guest `name` (`hello`, `echo`, `exit`, `reset`, `counter`,
/// `triple-fault`, `ctrl-alt-del`, `acpi`, the virtio drivers `virtio-blk`, `virtio-net`,
/// `virtio-rng`, `virtio-vsock`, the stand-in guest agent `vsock-agent`, the DHCP client `virtio-net-dhcp`, and the disk workloads `virtio-blk-bench`, `virtio-blk-crash`,
/// `virtio-blk-dump`, `snapshot-io`, which keeps virtio requests going for snapshot tests, and
/// `dirty-pages`, which writes the guest pages it is told to for the diff snapshot tests, and
/// `dirtier`, which rewrites 8 MiB round after round, checking each page, for migration tests, and
/// `migration-bench`, which fills its RAM, then idles or dirties a working set at a set rate,
/// for `bench/migration`).
pub fn elf(name: &str) -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join(format!("{name}.elf"))
}

/// The `hello` guest shaped as a bzImage (setup header, 64-bit entry at +0x200).
pub fn hello_bzimage() -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join("hello.bzImage")
}

/// The disk contract of the `virtio-blk` guest: the bytes it expects on its disks and what it
/// leaves on a writable one.
pub mod virtio_blk {
    const SECTOR: usize = 512;

    /// The byte at `offset` of a disk the guest reads (it checks the same formula).
    pub fn host_pattern(offset: usize) -> u8 {
        ((offset / SECTOR) * 7 + offset % SECTOR) as u8
    }

    /// What the guest writes at `offset` of sectors 8-15.
    pub fn guest_pattern(offset: usize) -> u8 {
        0xffu8.wrapping_sub((offset / SECTOR + offset % 256) as u8)
    }

    /// A writable disk of `bytes` as the guest leaves it: sectors 8-15 rewritten, 16-31 zeroed
    /// (write zeroes, then discard).
    pub fn expected_after_guest(mut bytes: Vec<u8>) -> Vec<u8> {
        for (offset, byte) in bytes
            .iter_mut()
            .enumerate()
            .take(32 * SECTOR)
            .skip(8 * SECTOR)
        {
            *byte = if offset < 16 * SECTOR {
                guest_pattern(offset)
            } else {
                0
            };
        }
        bytes
    }
}
