//! The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI finds its CPUs,
//! I/O APIC and interrupt routing. Linux scans 0xf0000-0xfffff for the floating pointer.

use super::layout::{APIC_START, IOAPIC_PINS, IOAPIC_START, MPTABLE_MAX_BYTES};

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR_ENTRY_LEN: usize = 20;
const SMALL_ENTRY_LEN: usize = 8;
const SPEC_REVISION: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Family 6 signature and "has FPU, has APIC" feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 9) | 1;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INTERRUPT_INT: u8 = 0;
const INTERRUPT_NMI: u8 = 1;
const INTERRUPT_EXTINT: u8 = 3;
const ALL_LOCAL_APICS: u8 = 0xff;

#[derive(Debug, thiserror::Error)]
#[error("{vcpus} vCPUs do not fit in the MP table area; use fewer vCPUs")]
pub struct MptableTooLarge {
    vcpus: u8,
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_sub(*b))
}

/// Builds the MP floating pointer followed by the configuration table, for a table placed at
/// guest-physical `address`. Every ISA IRQ 0-23 is routed to the same I/O APIC pin.
pub fn build(address: u64, vcpus: u8) -> Result<Vec<u8>, MptableTooLarge> {
    let small_entries = 2 + usize::from(IOAPIC_PINS) + 2; // bus, I/O APIC, pins, LINT0/1
    let table_len =
        HEADER_LEN + usize::from(vcpus) * PROCESSOR_ENTRY_LEN + small_entries * SMALL_ENTRY_LEN;
    if (FLOATING_POINTER_LEN + table_len) as u64 > MPTABLE_MAX_BYTES {
        return Err(MptableTooLarge { vcpus });
    }
    let ioapic_id = vcpus; // APIC ids 0..vcpus belong to the CPUs.
    let mut entries = Vec::new();
    for cpu in 0..vcpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    for pin in 0..IOAPIC_PINS {
        // Conforming polarity and trigger: ISA defaults (active high, edge).
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INTERRUPT_INT, 0, 0, 0, pin, ioapic_id]);
        entries.push(pin);
    }
    for (kind, lint) in [(INTERRUPT_EXTINT, 0), (INTERRUPT_NMI, 1)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind, 0, 0, 0, 0, ALL_LOCAL_APICS]);
        entries.push(lint);
    }
    let entry_count = usize::from(vcpus) + small_entries;
    debug_assert_eq!(HEADER_LEN + entries.len(), table_len);
    let mut header = Vec::with_capacity(table_len);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.extend_from_slice(&[SPEC_REVISION, 0]); // checksum patched below
    header.extend_from_slice(b"CORRAL  ");
    header.extend_from_slice(b"CORRAL-VMM  ");
    header.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&(entry_count as u16).to_le_bytes());
    header.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]); // no extended table
    header.extend_from_slice(&entries);
    header[7] = checksum(&header);

    let table_address = address + FLOATING_POINTER_LEN as u64;
    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + table_len);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_address as u32).to_le_bytes());
    out.extend_from_slice(&[1, SPEC_REVISION, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out);
    out.extend_from_slice(&header);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn table_checksums_and_counts_are_consistent() {
        let table = build(0xf0000, 2).unwrap();
        assert_eq!(&table[0..4], b"_MP_");
        assert_eq!(sum(&table[..16]), 0, "floating pointer checksum");
        assert_eq!(u32::from_le_bytes(table[4..8].try_into().unwrap()), 0xf0010);
        let config = &table[16..];
        assert_eq!(&config[0..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([config[4], config[5]]));
        assert_eq!(len, config.len());
        assert_eq!(sum(config), 0, "configuration table checksum");
        let count = u16::from_le_bytes([config[34], config[35]]);
        assert_eq!(count, 2 + 2 + 24 + 2);
        // The second processor entry is enabled but not the bootstrap processor.
        let cpu1 = &config[HEADER_LEN + PROCESSOR_ENTRY_LEN..][..PROCESSOR_ENTRY_LEN];
        assert_eq!(
            (cpu1[0], cpu1[1], cpu1[3]),
            (ENTRY_PROCESSOR, 1, CPU_ENABLED)
        );
        assert_eq!(
            len,
            HEADER_LEN + 2 * PROCESSOR_ENTRY_LEN + 28 * SMALL_ENTRY_LEN
        );
    }

    #[test]
    fn the_largest_vcpu_count_fits() {
        assert!(build(0xf0000, 254).is_ok());
    }
}
