//! Where the test guests built from `guests/` are. See `build.rs` for how they are made.

use std::path::PathBuf;

/// The PVH ELF image of guest `name` (`hello`, `echo`, `exit`, `reset`, `counter`,
/// `triple-fault`, `ctrl-alt-del`, `acpi`, the virtio drivers `virtio-blk`, `virtio-net`,
/// `virtio-rng`, `virtio-vsock`, the stand-in guest agent `vsock-agent`, the DHCP client `virtio-net-dhcp`, and the disk workloads `virtio-blk-bench`, `virtio-blk-crash`,
/// `virtio-blk-dump`, and `snapshot-io`, which keeps virtio requests going for snapshot tests).
pub fn elf(name: &str) -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join(format!("{name}.elf"))
}

/// The `hello` guest shaped as a bzImage (setup header, 64-bit entry at +0x200).
pub fn hello_bzimage() -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join("hello.bzImage")
}
