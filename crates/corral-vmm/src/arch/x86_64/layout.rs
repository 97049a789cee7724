//! Where things live in guest-physical memory at boot.
//!
//! Low memory follows the PC convention Linux expects: usable RAM below the EBDA at 0x9fc00, the
//! legacy video/BIOS hole up to 1 MiB (where the MP table goes), the kernel from 1 MiB. A 1 GiB hole
//! below 4 GiB holds the interrupt controllers and room for MMIO devices; RAM past it continues at
//! 4 GiB.

/// The boot GDT (4 entries).
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT: the guest installs its own before enabling interrupts.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, then its module list and memory map.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MODLIST_START: u64 = 0x6040;
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// The Linux boot protocol's zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack for the 64-bit entry (grows down, below the page tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables for the 64-bit entry: PML4, PDPT, one PD of 2 MiB pages (first 1 GiB).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// The Linux boot protocol's `setup_data` list (one entry: the guest's random seed).
pub const SETUP_DATA_START: u64 = 0xc000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Start of the extended BIOS data area: usable low RAM ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables (RSDP first), in the BIOS area where guests scan for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_MAX_BYTES: u64 = 0xf000;
/// The VM generation ID (16 bytes) the ACPI `VGEN` device points to, after the tables' room and
/// outside the RAM the e820 map gives the guest.
pub const VM_GENERATION_ID_START: u64 = 0xef000;
/// The MP table, in the BIOS area Linux scans (0xf0000-0xfffff); 64 KiB fits 254 vCPUs.
pub const MPTABLE_START: u64 = 0xf0000;
pub const MPTABLE_MAX_BYTES: u64 = 0x10000;
/// Kernels load at 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;
/// The hole below 4 GiB: nothing there is RAM.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Where MMIO devices (virtio-mmio) are placed, one 4 KiB slot each, up to the I/O APIC.
pub const MMIO_DEVICES_START: u64 = MMIO_GAP_START;
pub const MMIO_DEVICES_END: u64 = IOAPIC_START;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;
/// Three pages KVM needs for the TSS on Intel; below the APIC, inside the gap.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Interrupt lines the I/O APIC has (and the MP table describes).
pub const IOAPIC_PINS: u8 = 24;
