//! Registers, descriptor tables and page tables for the two ways corral enters a kernel:
//! PVH (32-bit protected mode, paging off, `ebx` = start info) and the 64-bit Linux boot protocol
//! (long mode with an identity map of the first 1 GiB, `rsi` = zero page).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::GuestMemoryMmap;

use super::gdt::{gdt_entry, kvm_segment_from_gdt};
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    PVH_INFO_START, ZERO_PAGE_START,
};

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Bit 1 of RFLAGS is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;
const PAGE_PRESENT_WRITABLE: u64 = 0x3;
const PAGE_HUGE: u64 = 0x80;

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPoint {
    /// The Xen PVH entry (ELF note `XEN_ELFNOTE_PHYS32_ENTRY`).
    Pvh(GuestAddress),
    /// The 64-bit Linux boot protocol entry (bzImage load address + 0x200, or an ELF's entry).
    Linux64(GuestAddress),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the boot {what} into guest memory")]
pub struct BootTablesError {
    what: &'static str,
    source: vm_memory::GuestMemoryError,
}

fn write<T: vm_memory::ByteValued>(
    memory: &GuestMemoryMmap,
    what: &'static str,
    value: T,
    address: u64,
) -> Result<(), BootTablesError> {
    memory
        .write_obj(value, GuestAddress(address))
        .map_err(|source| BootTablesError { what, source })
}

/// The GDT for an entry mode: null, code, data, TSS.
fn gdt(entry: EntryPoint) -> [u64; 4] {
    let code = match entry {
        EntryPoint::Pvh(_) => gdt_entry(0xc09b, 0, 0xfffff), // 32-bit, 4 GiB flat
        EntryPoint::Linux64(_) => gdt_entry(0xa09b, 0, 0xfffff), // 64-bit
    };
    [
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x008b, 0, 0x67),
    ]
}

/// Writes the GDT, an empty IDT and (for the 64-bit entry) page tables, and returns the special
/// registers that use them.
pub fn boot_sregs(
    memory: &GuestMemoryMmap,
    entry: EntryPoint,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, BootTablesError> {
    let table = gdt(entry);
    for (index, descriptor) in table.iter().enumerate() {
        write(
            memory,
            "GDT",
            *descriptor,
            BOOT_GDT_START + 8 * index as u64,
        )?;
    }
    write(memory, "IDT", 0u64, BOOT_IDT_START)?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;

    let code = kvm_segment_from_gdt(table[1], 1);
    let data = kvm_segment_from_gdt(table[2], 2);
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment_from_gdt(table[3], 3);

    match entry {
        EntryPoint::Pvh(_) => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryPoint::Linux64(_) => {
            write_identity_page_tables(memory)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    Ok(sregs)
}

/// Identity-maps the first 1 GiB with 2 MiB pages: enough for the kernel, the zero page, the
/// command line and the initrd the 64-bit boot protocol needs mapped.
fn write_identity_page_tables(memory: &GuestMemoryMmap) -> Result<(), BootTablesError> {
    write(
        memory,
        "page tables",
        PDPTE_START | PAGE_PRESENT_WRITABLE,
        PML4_START,
    )?;
    write(
        memory,
        "page tables",
        PDE_START | PAGE_PRESENT_WRITABLE,
        PDPTE_START,
    )?;
    for index in 0..512u64 {
        let entry = (index << 21) | PAGE_HUGE | PAGE_PRESENT_WRITABLE;
        write(memory, "page tables", entry, PDE_START + index * 8)?;
    }
    Ok(())
}

/// General registers of the boot vCPU at the entry point.
pub fn boot_regs(entry: EntryPoint) -> kvm_regs {
    match entry {
        EntryPoint::Pvh(address) => kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: address.0,
            rbx: PVH_INFO_START,
            ..Default::default()
        },
        EntryPoint::Linux64(address) => kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: address.0,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_START,
            ..Default::default()
        },
    }
}

/// The x87/SSE state after `fninit` with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_entry_maps_low_memory_one_to_one() {
        let memory =
            crate::vstate::memory::from_ranges(&[(GuestAddress(0), 16 << 20)], false).unwrap();
        let entry = EntryPoint::Linux64(GuestAddress(0x10_0200));
        let sregs = boot_sregs(&memory, entry, kvm_sregs::default()).unwrap();
        assert_eq!(sregs.cr3, PML4_START);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cs.l, 1);
        // Walk the tables for 0x40_1234 (in the third 2 MiB page).
        let pml4: u64 = memory.read_obj(GuestAddress(PML4_START)).unwrap();
        let pdpt: u64 = memory.read_obj(GuestAddress(pml4 & !0xfff)).unwrap();
        let pde: u64 = memory
            .read_obj(GuestAddress((pdpt & !0xfff) + 2 * 8))
            .unwrap();
        assert_eq!(pde & !0xfff, 0x40_0000);
        assert_ne!(pde & PAGE_HUGE, 0);
        assert_eq!(boot_regs(entry).rsi, ZERO_PAGE_START);
    }

    #[test]
    fn pvh_entry_is_flat_protected_mode_without_paging() {
        let memory =
            crate::vstate::memory::from_ranges(&[(GuestAddress(0), 16 << 20)], false).unwrap();
        let entry = EntryPoint::Pvh(GuestAddress(0x10_0000));
        let sregs = boot_sregs(&memory, entry, kvm_sregs::default()).unwrap();
        assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!(
            (sregs.cs.db, sregs.cs.l, sregs.cs.limit),
            (1, 0, 0xffff_ffff)
        );
        let regs = boot_regs(entry);
        assert_eq!((regs.rip, regs.rbx), (0x10_0000, PVH_INFO_START));
    }
}
