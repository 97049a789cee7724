//! x86_64 guest setup: memory layout, the e820 map, boot information for PVH and the Linux boot
//! protocol, vCPU registers, CPUID, MSRs and the MP table.

pub mod acpi;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msrs;
pub mod regs;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header, SETUP_RNG_SEED};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::GuestMemoryMmap;

use layout::{
    ACPI_START, CMDLINE_START, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START,
    PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START, SETUP_DATA_START, ZERO_PAGE_START,
};

const E820_RAM: u32 = 1;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// "HdrS": the boot protocol header signature.
const BOOT_HEADER_MAGIC: u32 = 0x5372_6448;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// The boot loader type "undefined" (0xff): corral has no registered id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Alignment Linux assumes for a kernel without a setup header (its CONFIG_PHYSICAL_ALIGN default).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// 256 bits: what Linux's RNG needs to count as seeded. Linux mixes a `SETUP_RNG_SEED` entry into
/// its RNG in `setup_arch`, before anything draws from it, and wipes it: the guest's RNG is seeded
/// at boot even where it has no RDRAND (as under an emulating KVM) and no entropy from interrupts.
pub const RNG_SEED_BYTES: usize = 32;

/// The guest RAM regions for `size` bytes: below the MMIO gap, then from 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// The end of RAM below the MMIO gap: the initrd and everything the kernel needs at boot must fit
/// under it.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

/// The usable-RAM ranges as (start, length): low memory below the EBDA, memory from 1 MiB to the
/// gap, and memory above 4 GiB. Everything else (BIOS area with the MP table, the gap) is not RAM.
pub fn e820_ram(size: u64) -> Vec<(u64, u64)> {
    let mut ranges = vec![
        (0, EBDA_START),
        (HIMEM_START, low_ram_end(size) - HIMEM_START),
    ];
    if size > MMIO_GAP_START {
        ranges.push((MMIO_GAP_END, size - MMIO_GAP_START));
    }
    ranges
}

/// Where the initrd was loaded.
#[derive(Clone, Copy, Debug)]
pub struct InitrdPlacement {
    pub address: GuestAddress,
    pub size: u64,
}

/// Writes the PVH `hvm_start_info`, module list and memory map.
pub fn write_pvh_start_info(
    memory: &GuestMemoryMmap,
    memory_size: u64,
    initrd: Option<InitrdPlacement>,
) -> Result<(), linux_loader::configurator::Error> {
    let memmap: Vec<hvm_memmap_table_entry> = e820_ram(memory_size)
        .into_iter()
        .map(|(addr, size)| hvm_memmap_table_entry {
            addr,
            size,
            type_: E820_RAM,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: ACPI_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut modules = Vec::new();
    if let Some(initrd) = initrd {
        start_info.nr_modules = 1;
        start_info.modlist_paddr = PVH_MODLIST_START;
        modules.push(hvm_modlist_entry {
            paddr: initrd.address.0,
            size: initrd.size,
            ..Default::default()
        });
    }
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, memory)
}

/// Writes the Linux boot protocol's `setup_data` list: one `struct setup_data` (next, type,
/// length, then the bytes) holding `seed`. Returns where the list starts, for the zero page.
pub fn write_rng_seed(
    memory: &GuestMemoryMmap,
    seed: &[u8; RNG_SEED_BYTES],
) -> Result<GuestAddress, vm_memory::GuestMemoryError> {
    let mut entry = Vec::with_capacity(16 + RNG_SEED_BYTES);
    entry.extend_from_slice(&0u64.to_le_bytes());
    entry.extend_from_slice(&SETUP_RNG_SEED.to_le_bytes());
    entry.extend_from_slice(&(RNG_SEED_BYTES as u32).to_le_bytes());
    entry.extend_from_slice(seed);
    memory.write_slice(&entry, GuestAddress(SETUP_DATA_START))?;
    Ok(GuestAddress(SETUP_DATA_START))
}

/// Writes the Linux boot protocol's zero page. `header` is the image's setup header (bzImage) or
/// `None` for an ELF kernel entered at its 64-bit entry point; `setup_data` is the list
/// [`write_rng_seed`] wrote.
pub fn write_zero_page(
    memory: &GuestMemoryMmap,
    memory_size: u64,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    setup_data: GuestAddress,
) -> Result<(), linux_loader::configurator::Error> {
    let mut params = boot_params {
        hdr: header.unwrap_or(setup_header {
            header: BOOT_HEADER_MAGIC,
            boot_flag: BOOT_FLAG_MAGIC,
            kernel_alignment: DEFAULT_KERNEL_ALIGNMENT,
            ..Default::default()
        }),
        acpi_rsdp_addr: ACPI_START,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.setup_data = setup_data.0;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.address.0 as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    for (slot, (addr, size)) in e820_ram(memory_size).into_iter().enumerate() {
        params.e820_table[slot] = boot_e820_entry {
            addr,
            size,
            r#type: E820_RAM,
        };
        params.e820_entries = slot as u8 + 1;
    }
    let params = BootParams::new(&params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, memory)
}

#[cfg(test)]
mod tests {
    use vm_memory::Address;

    use super::*;
    use crate::vstate::memory::from_ranges;

    #[test]
    fn the_zero_page_links_the_random_seed() {
        let size = 16 << 20;
        let memory = from_ranges(&ram_regions(size), false).unwrap();
        let seed: [u8; RNG_SEED_BYTES] = std::array::from_fn(|i| i as u8 + 1);
        let setup_data = write_rng_seed(&memory, &seed).unwrap();
        write_zero_page(&memory, size, None, 10, None, setup_data).unwrap();

        let params: boot_params = memory.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let list = GuestAddress(params.hdr.setup_data);
        let next: u64 = memory.read_obj(list).unwrap();
        let kind: u32 = memory.read_obj(list.unchecked_add(8)).unwrap();
        let len: u32 = memory.read_obj(list.unchecked_add(12)).unwrap();
        let mut bytes = [0u8; RNG_SEED_BYTES];
        memory
            .read_slice(&mut bytes, list.unchecked_add(16))
            .unwrap();
        assert_eq!((next, kind, len), (0, 9, 32));
        assert_eq!(bytes, seed);
        // In RAM, clear of the page tables below it and the command line above it.
        let end = list.0 + 16 + RNG_SEED_BYTES as u64;
        assert!(e820_ram(size)
            .iter()
            .any(|&(start, len)| start <= list.0 && end <= start + len));
        assert!(end <= CMDLINE_START && list.0 >= layout::PDE_START + 0x1000);
    }

    #[test]
    fn memory_above_the_gap_moves_to_4g() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        let big = 4u64 << 30;
        let regions = ram_regions(big);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[1].0, GuestAddress(MMIO_GAP_END));
        let total: usize = regions.iter().map(|r| r.1).sum();
        assert_eq!(total as u64, big);
        let e820 = e820_ram(big);
        assert_eq!(e820[1], (HIMEM_START, MMIO_GAP_START - HIMEM_START));
        assert_eq!(e820[2], (MMIO_GAP_END, big - MMIO_GAP_START));
        assert_eq!(low_ram_end(big), MMIO_GAP_START);
    }
}
