//! Minimal ACPI tables: enough for a guest to find its CPUs and interrupt controller (MADT) and to
//! power off (S5) or reset through ACPI, in the hardware-reduced model Cloud Hypervisor and
//! Firecracker also use (no PM1 blocks, no SCI: a sleep control register and a reset register).
//!
//! RSDP (ACPI 2.0+) → XSDT → FADT (→ DSDT with `\_S5` and the devices) and MADT, all in the BIOS area at
//! [`layout::ACPI_START`], where guests booted without PVH find the RSDP by scanning; PVH guests
//! get its address in `hvm_start_info.rsdp_paddr`. Guests without ACPI support use the MP table.

use super::layout::{self, APIC_START, IOAPIC_START};
use crate::devices::VirtioSlot;

/// I/O ports of the ACPI power-management device (see `devices::legacy::acpi_pm`).
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
pub const SLEEP_STATUS_PORT: u16 = 0x601;
pub const RESET_PORT: u16 = 0x602;
/// What the guest writes to the reset register to reset the machine.
pub const RESET_VALUE: u8 = 0x01;
/// The SLP_TYP value `\_S5` announces, i.e. what the guest writes (with SLP_EN) to power off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The hardware id Linux's vmgenid driver matches (it also knows the `_CID` "VM_Gen_Counter").
const VM_GENERATION_HID: &str = "VMGENCTR";
/// The notification a generation ID's device gets when the ID changes (Microsoft's VM
/// generation ID specification).
const NOTIFY_VM_GENERATION_CHANGED: u8 = 0x80;

const OEM_ID: &[u8; 6] = b"CORRAL";
const OEM_TABLE_ID: &[u8; 8] = b"CORRALVM";
const CREATOR_ID: &[u8; 4] = b"CRRL";
const FADT_REVISION: u8 = 6;
const FADT_MINOR_REVISION: u8 = 5;
const FADT_LEN: usize = 276;
const FADT_FLAG_RESET_REG_SUP: u32 = 1 << 10;
const FADT_FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;
/// IA-PC boot architecture flags: an 8042 is present, there is no VGA.
const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
const IAPC_BOOT_ARCH_NO_VGA: u16 = 1 << 2;
const GAS_SYSTEM_IO: u8 = 1;
const GAS_ACCESS_BYTE: u8 = 1;
const MADT_PCAT_COMPAT: u32 = 1;
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_ENABLED: u32 = 1;

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_sub(*b))
}

/// A system description table: the 36-byte header, then `body`, with length and checksum set.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let length = 36 + body.len();
    let mut table = Vec::with_capacity(length);
    table.extend_from_slice(signature);
    table.extend_from_slice(&(length as u32).to_le_bytes());
    table.extend_from_slice(&[revision, 0]); // checksum patched below
    table.extend_from_slice(OEM_ID);
    table.extend_from_slice(OEM_TABLE_ID);
    table.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    table.extend_from_slice(CREATOR_ID);
    table.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    table.extend_from_slice(body);
    table[9] = checksum(&table);
    table
}

/// A Generic Address Structure for a one-byte I/O port.
fn io_port_gas(port: u16) -> [u8; 12] {
    let mut gas = [0u8; 12];
    gas[0] = GAS_SYSTEM_IO;
    gas[1] = 8; // register bit width
    gas[3] = GAS_ACCESS_BYTE;
    gas[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    gas
}

/// AML encoding, just what the DSDT needs.
mod aml {
    pub const NAME_OP: u8 = 0x08;
    pub const ZERO_OP: u8 = 0x00;
    const BYTE_PREFIX: u8 = 0x0a;
    const DWORD_PREFIX: u8 = 0x0c;
    const SCOPE_OP: u8 = 0x10;
    const BUFFER_OP: u8 = 0x11;
    const PACKAGE_OP: u8 = 0x12;
    const EXT_OP_PREFIX: u8 = 0x5b;
    const DEVICE_OP: u8 = 0x82;
    const METHOD_OP: u8 = 0x14;
    const NOTIFY_OP: u8 = 0x86;
    const ROOT_CHAR: u8 = b'\\';
    const DUAL_NAME_PREFIX: u8 = 0x2e;
    const STRING_PREFIX: u8 = 0x0d;
    const END_TAG: u8 = 0x79;

    /// PkgLength: the length of what follows *including* the PkgLength bytes themselves, in one
    /// byte below 64, else a lead byte (count of extra bytes, low nibble) and up to 3 more.
    fn pkg_length(contents: usize) -> Vec<u8> {
        if contents + 1 < 0x40 {
            return vec![(contents + 1) as u8];
        }
        let extra = (1..=3)
            .find(|&n| contents + 1 + n < 1 << (4 + 8 * n))
            .unwrap_or(3);
        let total = contents + 1 + extra;
        let mut bytes = vec![((extra as u8) << 6) | (total & 0xf) as u8];
        bytes.extend((0..extra).map(|i| (total >> (4 + 8 * i)) as u8));
        bytes
    }

    fn with_pkg_length(op: &[u8], contents: &[u8]) -> Vec<u8> {
        let mut out = op.to_vec();
        out.extend(pkg_length(contents.len()));
        out.extend_from_slice(contents);
        out
    }

    pub fn name(name: &[u8; 4], value: &[u8]) -> Vec<u8> {
        let mut out = vec![NAME_OP];
        out.extend_from_slice(name);
        out.extend_from_slice(value);
        out
    }

    pub fn byte(value: u8) -> Vec<u8> {
        vec![BYTE_PREFIX, value]
    }

    pub fn dword(value: u32) -> Vec<u8> {
        let mut out = vec![DWORD_PREFIX];
        out.extend_from_slice(&value.to_le_bytes());
        out
    }

    pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut contents = vec![elements.len() as u8];
        contents.extend(elements.concat());
        with_pkg_length(&[PACKAGE_OP], &contents)
    }

    pub fn buffer(data: &[u8]) -> Vec<u8> {
        let mut contents = byte(data.len() as u8);
        contents.extend_from_slice(data);
        with_pkg_length(&[BUFFER_OP], &contents)
    }

    pub fn scope(path: &[u8], body: &[u8]) -> Vec<u8> {
        with_pkg_length(&[SCOPE_OP], &[path, body].concat())
    }

    pub fn device(name: &[u8; 4], body: &[u8]) -> Vec<u8> {
        with_pkg_length(&[EXT_OP_PREFIX, DEVICE_OP], &[&name[..], body].concat())
    }

    /// `EisaId("PNP0501")` style compressed id.
    pub fn eisa_id(id: &[u8; 7]) -> u32 {
        let letter = |c: u8| u16::from(c - 0x40) & 0x1f;
        let vendor = (letter(id[0]) << 10) | (letter(id[1]) << 5) | letter(id[2]);
        let hex = |c: u8| char::from(c).to_digit(16).unwrap_or(0) as u8;
        let product = [
            (hex(id[3]) << 4) | hex(id[4]),
            (hex(id[5]) << 4) | hex(id[6]),
        ];
        u32::from_le_bytes([(vendor >> 8) as u8, vendor as u8, product[0], product[1]])
    }

    /// A null-terminated ASCII string (`_HID` values that are not EISA ids).
    pub fn string(text: &str) -> Vec<u8> {
        let mut out = vec![STRING_PREFIX];
        out.extend_from_slice(text.as_bytes());
        out.push(0);
        out
    }

    /// Resource template: 16-bit decoded I/O port ranges `[base, base + len)` and one ISA IRQ.
    pub fn io_and_irq_resources(ports: &[(u16, u8)], irq: u8) -> Vec<u8> {
        const IO_PORT: u8 = 0x47;
        const IRQ_NO_FLAGS: u8 = 0x22;
        let mut out = Vec::new();
        for &(base, len) in ports {
            let [lo, hi] = base.to_le_bytes();
            out.extend_from_slice(&[IO_PORT, 0x01, lo, hi, lo, hi, 0x01, len]);
        }
        let irq_mask = (1u16 << irq).to_le_bytes();
        out.extend_from_slice(&[IRQ_NO_FLAGS, irq_mask[0], irq_mask[1]]);
        out.extend_from_slice(&[END_TAG, 0]);
        out
    }

    /// Resource template: a fixed read-write 32-bit memory range and one edge-triggered,
    /// active-high, exclusive interrupt at `gsi` (what `virtio_mmio`'s ACPI probe reads).
    pub fn memory_and_interrupt_resources(base: u32, len: u32, gsi: u32) -> Vec<u8> {
        const MEMORY32_FIXED: u8 = 0x86;
        const READ_WRITE: u8 = 0x01;
        let mut out = vec![MEMORY32_FIXED, 9, 0, READ_WRITE];
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend(interrupt_resources(gsi));
        out
    }

    /// Resource template: one edge-triggered, active-high, exclusive interrupt at `gsi`.
    pub fn interrupt_resources(gsi: u32) -> Vec<u8> {
        const EXTENDED_INTERRUPT: u8 = 0x89;
        /// Consumer (bit 0), edge triggered (bit 1); active high and exclusive are zeros.
        const CONSUMER_EDGE: u8 = 0x03;
        let mut out = vec![EXTENDED_INTERRUPT, 6, 0, CONSUMER_EDGE, 1];
        out.extend_from_slice(&gsi.to_le_bytes());
        out.extend_from_slice(&[END_TAG, 0]);
        out
    }

    /// `Method (name, args) { body }`, not serialized.
    pub fn method(name: &[u8; 4], args: u8, body: &[u8]) -> Vec<u8> {
        let contents = [name.as_slice(), &[args & 0x7], body].concat();
        with_pkg_length(&[METHOD_OP], &contents)
    }

    /// `Notify (\scope.name, value)`.
    pub fn notify(scope: &[u8; 4], name: &[u8; 4], value: u8) -> Vec<u8> {
        let mut out = vec![NOTIFY_OP, ROOT_CHAR, DUAL_NAME_PREFIX];
        out.extend_from_slice(scope);
        out.extend_from_slice(name);
        out.extend(byte(value));
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn pkg_lengths_count_themselves() {
            assert_eq!(pkg_length(10), vec![11]);
            assert_eq!(pkg_length(62), vec![63]);
            // 63 bytes of contents need two length bytes: total 65 = 0x41.
            assert_eq!(pkg_length(63), vec![0x41, 0x04]);
            assert_eq!(pkg_length(5000), vec![0x8b, 0x38, 0x01]);
            assert_eq!(eisa_id(b"PNP0501"), 0x0105_d041);
            assert_eq!(eisa_id(b"PNP0A03"), 0x030a_d041);
        }
    }
}

/// DSDT: the devices, then `Name (\_S5, Package () { 5, 0, 0, 0 })`. A hardware-reduced ACPI
/// guest has no legacy PIC and maps only the interrupts ACPI describes, so every device with an
/// interrupt is here: COM1 (PNP0501), the i8042 (PNP0303: Ctrl-Alt-Del reaches the guest through
/// it) and each virtio-mmio device (LNRO0005, as Firecracker and QEMU describe them; guests
/// without ACPI find those on the command line instead). Then the VM generation ID (`VGEN`, which
/// Linux's vmgenid driver binds to) and the generic event device (ACPI0013) whose interrupt
/// makes the guest re-read it: its `_EVT` notifies `VGEN` (see `devices::vm_generation`).
fn dsdt(virtio: &[VirtioSlot]) -> Vec<u8> {
    use crate::devices::interrupt::{GSI_ACPI_EVENT, IRQ_COM1, IRQ_KEYBOARD, MMIO_SLOT_BYTES};
    use crate::devices::legacy::i8042::{COMMAND_OFFSET, I8042_PORT};
    use crate::devices::legacy::serial::{COM1_PORT, COM1_PORT_LEN};
    let device = |name: &[u8; 4], hid: Vec<u8>, uid: u32, resources: Vec<u8>| {
        aml::device(
            name,
            &[
                aml::name(b"_HID", &hid),
                aml::name(b"_UID", &aml::dword(uid)),
                aml::name(b"_CRS", &aml::buffer(&resources)),
            ]
            .concat(),
        )
    };
    let mut devices = device(
        b"COM1",
        aml::dword(aml::eisa_id(b"PNP0501")),
        0,
        aml::io_and_irq_resources(&[(COM1_PORT, COM1_PORT_LEN as u8)], IRQ_COM1 as u8),
    );
    devices.extend(device(
        b"PS2_",
        aml::dword(aml::eisa_id(b"PNP0303")),
        0,
        aml::io_and_irq_resources(
            &[(I8042_PORT, 1), (I8042_PORT + COMMAND_OFFSET as u16, 1)],
            IRQ_KEYBOARD as u8,
        ),
    ));
    for (index, slot) in virtio.iter().enumerate() {
        // At most one device per I/O APIC pin, so three digits always suffice.
        let digit = |place: usize| b'0' + (index / place % 10) as u8;
        devices.extend(device(
            &[b'V', digit(100), digit(10), digit(1)],
            aml::string("LNRO0005"),
            index as u32,
            // The MMIO slots lie in the gap below 4 GiB (`layout::MMIO_GAP_END`).
            aml::memory_and_interrupt_resources(slot.base as u32, MMIO_SLOT_BYTES as u32, slot.gsi),
        ));
    }
    let id_address = layout::VM_GENERATION_ID_START;
    devices.extend(aml::device(
        b"VGEN",
        &[
            aml::name(b"_HID", &aml::string(VM_GENERATION_HID)),
            aml::name(b"_CID", &aml::string("VM_Gen_Counter")),
            aml::name(b"_DDN", &aml::string("VM_Gen_Counter")),
            aml::name(
                b"ADDR",
                &aml::package(&[
                    aml::dword(id_address as u32),
                    aml::dword((id_address >> 32) as u32),
                ]),
            ),
        ]
        .concat(),
    ));
    devices.extend(aml::device(
        b"GED_",
        &[
            aml::name(b"_HID", &aml::string("ACPI0013")),
            aml::name(b"_UID", &aml::dword(0)),
            aml::name(
                b"_CRS",
                &aml::buffer(&aml::interrupt_resources(GSI_ACPI_EVENT)),
            ),
            aml::method(
                b"_EVT",
                1,
                &aml::notify(b"_SB_", b"VGEN", NOTIFY_VM_GENERATION_CHANGED),
            ),
        ]
        .concat(),
    ));
    let s5 = aml::name(
        b"_S5_",
        &aml::package(&[
            aml::byte(S5_SLEEP_TYPE),
            vec![aml::ZERO_OP],
            vec![aml::ZERO_OP],
            vec![aml::ZERO_OP],
        ]),
    );
    sdt(b"DSDT", 2, &[aml::scope(b"\\_SB_", &devices), s5].concat())
}

fn fadt(dsdt_address: u64) -> Vec<u8> {
    let mut body = vec![0u8; FADT_LEN - 36];
    let mut put = |offset: usize, bytes: &[u8]| {
        body[offset - 36..offset - 36 + bytes.len()].copy_from_slice(bytes)
    };
    put(40, &(dsdt_address as u32).to_le_bytes());
    put(
        109,
        &(IAPC_BOOT_ARCH_8042 | IAPC_BOOT_ARCH_NO_VGA).to_le_bytes(),
    );
    put(
        112,
        &(FADT_FLAG_HW_REDUCED_ACPI | FADT_FLAG_RESET_REG_SUP).to_le_bytes(),
    );
    put(116, &io_port_gas(RESET_PORT));
    put(128, &[RESET_VALUE]);
    put(131, &[FADT_MINOR_REVISION]);
    put(140, &dsdt_address.to_le_bytes());
    put(244, &io_port_gas(SLEEP_CONTROL_PORT));
    put(256, &io_port_gas(SLEEP_STATUS_PORT));
    put(268, b"CORRALVM"); // hypervisor vendor identity
    sdt(b"FACP", FADT_REVISION, &body)
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for cpu in 0..vcpus {
        body.extend_from_slice(&[MADT_LOCAL_APIC, 8, cpu, cpu]);
        body.extend_from_slice(&MADT_ENABLED.to_le_bytes());
    }
    // The I/O APIC takes the APIC id after the CPUs', as in the MP table; its pins are GSIs 0-23.
    body.extend_from_slice(&[MADT_IO_APIC, 12, vcpus, 0]);
    body.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    sdt(b"APIC", 5, &body)
}

fn rsdp(xsdt_address: u64) -> Vec<u8> {
    let mut rsdp = Vec::with_capacity(36);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes, patched below
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+, XSDT
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&xsdt_address.to_le_bytes());
    rsdp.extend_from_slice(&[0, 0, 0, 0]); // extended checksum, reserved
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);
    rsdp
}

#[derive(Debug, thiserror::Error)]
#[error("the ACPI tables for {vcpus} vCPUs and {devices} virtio devices do not fit in their 64 KiB area")]
pub struct AcpiTooLarge {
    vcpus: u8,
    devices: usize,
}

/// Builds all tables for placement at [`layout::ACPI_START`]: the RSDP first, then XSDT, FADT,
/// DSDT and MADT, each 8-byte aligned.
pub fn build(vcpus: u8, virtio: &[VirtioSlot]) -> Result<Vec<u8>, AcpiTooLarge> {
    let base = layout::ACPI_START;
    let align = |offset: usize| offset.div_ceil(8) * 8;
    // Sizes are fixed except the MADT's, so every address is known before any table is built.
    let xsdt_offset = align(36);
    let xsdt_len = 36 + 2 * 8;
    let fadt_offset = align(xsdt_offset + xsdt_len);
    let dsdt_offset = align(fadt_offset + FADT_LEN);
    let dsdt = dsdt(virtio);
    let madt_offset = align(dsdt_offset + dsdt.len());
    let madt = madt(vcpus);
    let end = madt_offset + madt.len();
    if end as u64 > layout::ACPI_MAX_BYTES {
        return Err(AcpiTooLarge {
            vcpus,
            devices: virtio.len(),
        });
    }

    let address = |offset: usize| base + offset as u64;
    let mut xsdt_body = Vec::with_capacity(16);
    xsdt_body.extend_from_slice(&address(fadt_offset).to_le_bytes());
    xsdt_body.extend_from_slice(&address(madt_offset).to_le_bytes());
    let mut tables = vec![0u8; end];
    let mut place =
        |offset: usize, table: &[u8]| tables[offset..offset + table.len()].copy_from_slice(table);
    place(0, &rsdp(address(xsdt_offset)));
    place(xsdt_offset, &sdt(b"XSDT", 1, &xsdt_body));
    place(fadt_offset, &fadt(address(dsdt_offset)));
    place(dsdt_offset, &dsdt);
    place(madt_offset, &madt);
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    /// The table at guest address `address`, checked for its signature, length and checksum.
    fn table<'a>(tables: &'a [u8], address: u64, signature: &[u8; 4]) -> &'a [u8] {
        let offset = (address - layout::ACPI_START) as usize;
        let length = u32_at(tables, offset + 4) as usize;
        let table = &tables[offset..offset + length];
        assert_eq!(&table[..4], signature);
        assert_eq!(
            sum(table),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        table
    }

    #[test]
    fn a_guest_can_walk_from_the_rsdp_to_the_sleep_control_register_and_s5() {
        let tables = build(2, &[]).unwrap();
        assert_eq!(&tables[..8], b"RSD PTR ");
        assert_eq!(sum(&tables[..20]), 0);
        assert_eq!(sum(&tables[..36]), 0);
        let xsdt = table(&tables, u64_at(&tables, 24), b"XSDT");
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|e| u64_at(e, 0)).collect();
        let fadt = table(&tables, entries[0], b"FACP");
        assert_ne!(u32_at(fadt, 112) & FADT_FLAG_HW_REDUCED_ACPI, 0);
        assert_eq!(fadt[244], GAS_SYSTEM_IO);
        assert_eq!(u64_at(fadt, 248), u64::from(SLEEP_CONTROL_PORT));
        assert_eq!(u64_at(fadt, 120), u64::from(RESET_PORT));
        assert_eq!(fadt[128], RESET_VALUE);
        let dsdt = table(&tables, u64_at(fadt, 140), b"DSDT");
        let s5 = dsdt.windows(4).position(|w| w == b"_S5_").unwrap();
        assert_eq!(&dsdt[s5 + 4..], &[0x12, 7, 4, 0x0a, S5_SLEEP_TYPE, 0, 0, 0]);
        // COM1 with I/O ports 0x3f8-0x3ff and IRQ 4, inside \_SB.
        let sb = dsdt.windows(5).position(|w| w == b"\\_SB_").unwrap();
        let com1 = dsdt.windows(4).position(|w| w == b"COM1").unwrap();
        assert!(sb < com1);
        assert_eq!(&dsdt[com1 - 3..com1 - 1], &[0x5b, 0x82]);
        let resources = [0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8, 0x22, 0x10, 0, 0x79, 0];
        assert!(dsdt.windows(resources.len()).any(|w| w == resources));

        let madt = table(&tables, entries[1], b"APIC");
        assert_eq!(u32_at(madt, 36), APIC_START as u32);
        // Two local APICs (ids 0 and 1), then the I/O APIC with id 2.
        assert_eq!(&madt[44..48], &[MADT_LOCAL_APIC, 8, 0, 0]);
        assert_eq!(&madt[52..56], &[MADT_LOCAL_APIC, 8, 1, 1]);
        assert_eq!(&madt[60..64], &[MADT_IO_APIC, 12, 2, 0]);
        assert_eq!(u32_at(madt, 64), IOAPIC_START as u32);
    }

    /// The DSDT of tables built with `slots`.
    fn dsdt_of(tables: &[u8]) -> &[u8] {
        let xsdt = table(tables, u64_at(tables, 24), b"XSDT");
        let fadt = table(tables, u64_at(xsdt, 36), b"FACP");
        table(tables, u64_at(fadt, 140), b"DSDT")
    }

    /// Where `needle` starts in `haystack`.
    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn the_i8042_and_each_virtio_device_are_described_with_their_ports_memory_and_interrupt() {
        let slots = crate::devices::virtio_slots(2).unwrap();
        let tables = build(1, &slots).unwrap();
        let dsdt = dsdt_of(&tables);
        // The i8042: data port 0x60 and command port 0x64, one byte each, IRQ 1.
        let ps2 = find(dsdt, b"PS2_").unwrap();
        let keyboard_id = aml::dword(aml::eisa_id(b"PNP0303"));
        assert!(find(&dsdt[ps2..], &keyboard_id).is_some());
        let ps2_resources = [
            0x47, 1, 0x60, 0, 0x60, 0, 1, 1, 0x47, 1, 0x64, 0, 0x64, 0, 1, 1, 0x22, 0x02, 0, 0x79,
            0,
        ];
        assert!(find(dsdt, &ps2_resources).is_some());
        for (index, slot) in slots.iter().enumerate() {
            let name = format!("V{index:03}");
            let device = find(dsdt, name.as_bytes()).unwrap_or_else(|| panic!("no {name}"));
            // Inside \_SB, a Device (ExtOp 0x5b 0x82, then its PkgLength) named V00N ...
            assert_eq!(dsdt[device - 3], 0x5b, "{name}");
            let body = &dsdt[device..];
            // ... with _HID "LNRO0005" ...
            assert!(body.starts_with(&[name.as_bytes(), b"\x08_HID\x0dLNRO0005\0"].concat()));
            // ... and its register page and GSI: Memory32Fixed (read-write) and an extended
            // interrupt (consumer, edge, active high, exclusive).
            let mut resources = vec![0x86, 9, 0, 1];
            resources.extend((slot.base as u32).to_le_bytes());
            resources.extend(0x1000u32.to_le_bytes());
            resources.extend([0x89, 6, 0, 0x03, 1]);
            resources.extend(slot.gsi.to_le_bytes());
            resources.extend([0x79, 0]);
            let at = find(body, &resources).unwrap_or_else(|| panic!("{name}'s resources"));
            assert!(find(&body[..at], b"_CRS").is_some(), "{name}");
        }
        assert!(find(dsdt, b"V002").is_none());
    }

    #[test]
    fn the_vm_generation_id_is_described_with_its_address_and_the_event_that_notifies_it() {
        use crate::devices::interrupt::GSI_ACPI_EVENT;
        let tables = build(2, &crate::devices::virtio_slots(3).unwrap()).unwrap();
        let dsdt = dsdt_of(&tables);
        let vgen = find(dsdt, b"VGEN").unwrap();
        // A Device (ExtOp 0x5b 0x82) whose body needs a two-byte PkgLength.
        assert_eq!(&dsdt[vgen - 4..vgen - 2], &[0x5b, 0x82], "VGEN is a Device");
        let body = &dsdt[vgen..];
        assert!(body.starts_with(b"VGEN\x08_HID\x0dVMGENCTR\0"));
        // Name (ADDR, Package () { low, high }): the ID's guest-physical address.
        let mut addr = b"ADDR".to_vec();
        addr.extend([0x12, 12, 2, 0x0c]);
        addr.extend((layout::VM_GENERATION_ID_START as u32).to_le_bytes());
        addr.extend([0x0c, 0, 0, 0, 0]);
        assert!(find(body, &addr).is_some());
        // The ID lies past the tables, in memory the guest is not given as RAM.
        assert!(layout::VM_GENERATION_ID_START >= layout::ACPI_START + tables.len() as u64);

        // The generic event device: its interrupt, and an _EVT that notifies \_SB.VGEN (0x80).
        let ged = find(dsdt, b"GED_").unwrap();
        let body = &dsdt[ged..];
        assert!(body.starts_with(b"GED_\x08_HID\x0dACPI0013\0"));
        let mut interrupt = vec![0x89, 6, 0, 0x03, 1];
        interrupt.extend(GSI_ACPI_EVENT.to_le_bytes());
        assert!(find(body, &interrupt).is_some());
        let evt = find(body, b"_EVT").unwrap();
        assert_eq!(body[evt - 2], 0x14, "_EVT is a Method");
        // One argument, then Notify (\_SB.VGEN, 0x80), the whole body.
        let method = b"_EVT\x01\x86\\\x2e_SB_VGEN\x0a\x80";
        assert!(body[evt..].starts_with(method));
        assert_eq!(usize::from(body[evt - 1]), method.len() + 1, "PkgLength");
    }

    #[test]
    fn the_largest_vcpu_and_virtio_device_counts_fit() {
        let most = (1..)
            .map_while(|count| crate::devices::virtio_slots(count).ok())
            .last()
            .unwrap();
        assert!(most.len() > 10, "{}", most.len());
        assert!(build(254, &most).is_ok());
    }
}
