/*
 * Finds the ACPI tables as an OS would (scanning the BIOS area for the RSDP, checking every
 * signature and checksum), then powers off through the FADT's sleep control register with the
 * SLP_TYP of the DSDT's \_S5 package — or, with "acpi=reset" on the command line, resets through
 * the FADT's reset register. Any inconsistency exits with debug-exit code 1.
 */
#include "common/guest.h"

#define FADT_FLAGS 112
#define FADT_RESET_REG 116
#define FADT_RESET_VALUE 128
#define FADT_X_DSDT 140
#define FADT_SLEEP_CONTROL_REG 244
#define FADT_HW_REDUCED_ACPI (1u << 20)
#define GAS_SYSTEM_IO 1
#define SLEEP_ENABLE 0x20

static u64 read_u64(const u8 *p)
{
	u64 value = 0;
	for (int i = 7; i >= 0; i--)
		value = value << 8 | p[i];
	return value;
}

static u32 read_u32(const u8 *p)
{
	return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

static int same(const u8 *p, const char *s, u64 len)
{
	for (u64 i = 0; i < len; i++)
		if (p[i] != (u8)s[i])
			return 0;
	return 1;
}

static int checksum_ok(const u8 *p, u64 len)
{
	u8 sum = 0;
	for (u64 i = 0; i < len; i++)
		sum += p[i];
	return sum == 0;
}

__attribute__((noreturn)) static void fail(const char *what)
{
	serial_puts("acpi: ");
	serial_puts(what);
	serial_puts("\n");
	debug_exit(1);
}

/* The table at `address` after checking its signature and checksum. */
static const u8 *table(u64 address, const char *signature)
{
	const u8 *t = (const u8 *)address;
	if (!same(t, signature, 4))
		fail("unexpected table signature");
	if (!checksum_ok(t, read_u32(t + 4)))
		fail("bad table checksum");
	return t;
}

static int has_word(const char *cmdline, const char *word)
{
	for (const char *p = cmdline; p && *p; p++)
		if (same((const u8 *)p, word, 10))
			return 1;
	return 0;
}

void guest_run(const struct boot_info *boot)
{
	const u8 *rsdp = 0;
	for (u64 address = 0xe0000; address < 0x100000 && !rsdp; address += 16)
		if (same((const u8 *)address, "RSD PTR ", 8))
			rsdp = (const u8 *)address;
	if (!rsdp || (u64)rsdp != boot->rsdp)
		fail("no RSDP in the BIOS area, or not where the boot information says");
	if (!checksum_ok(rsdp, 20) || !checksum_ok(rsdp, 36))
		fail("bad RSDP checksum");

	const u8 *xsdt = table(read_u64(rsdp + 24), "XSDT");
	const u8 *fadt = 0;
	for (u32 offset = 36; offset < read_u32(xsdt + 4); offset += 8) {
		const u8 *entry = (const u8 *)read_u64(xsdt + offset);
		if (same(entry, "FACP", 4))
			fadt = table((u64)entry, "FACP");
	}
	if (!fadt)
		fail("no FADT");
	if (!(read_u32(fadt + FADT_FLAGS) & FADT_HW_REDUCED_ACPI))
		fail("FADT is not hardware-reduced");

	if (has_word(boot->cmdline, "acpi=reset")) {
		if (fadt[FADT_RESET_REG] != GAS_SYSTEM_IO)
			fail("reset register is not an I/O port");
		serial_puts("acpi: resetting through port ");
		serial_put_hex(read_u64(fadt + FADT_RESET_REG + 4));
		serial_puts("\n");
		outb((u16)read_u64(fadt + FADT_RESET_REG + 4), fadt[FADT_RESET_VALUE]);
		halt_forever();
	}

	const u8 *dsdt = table(read_u64(fadt + FADT_X_DSDT), "DSDT");
	u32 length = read_u32(dsdt + 4);
	int sleep_type = -1;
	for (u32 i = 36; i + 8 < length; i++) {
		/* Name(_S5_, Package(){ SLP_TYPa, ... }): 0x12 PkgLength NumElements element... */
		if (!same(dsdt + i, "_S5_", 4) || dsdt[i + 4] != 0x12)
			continue;
		const u8 *element = dsdt + i + 7;
		sleep_type = element[0] == 0x0a ? element[1] : element[0] == 0x01 ? 1 : 0;
	}
	if (sleep_type < 0)
		fail("no \\_S5 in the DSDT");
	if (fadt[FADT_SLEEP_CONTROL_REG] != GAS_SYSTEM_IO)
		fail("sleep control register is not an I/O port");
	u16 port = (u16)read_u64(fadt + FADT_SLEEP_CONTROL_REG + 4);
	serial_puts("acpi: entering S5 (SLP_TYP ");
	serial_put_dec((u64)sleep_type);
	serial_puts(") through port ");
	serial_put_hex(port);
	serial_puts("\n");
	outb(port, (u8)(sleep_type << 2 | SLEEP_ENABLE));
	halt_forever();
}
