/* Turns the VMM's boot information (PVH start info or Linux zero page) into struct boot_info. */
#include "guest.h"

#define GUEST_BOOT_PVH 0
#define GUEST_BOOT_LINUX 1

/* Field offsets in struct hvm_start_info and struct boot_params. */
#define PVH_NR_MODULES 12
#define PVH_MODLIST 16
#define PVH_CMDLINE 24
#define PVH_RSDP 32
#define ZP_ACPI_RSDP 0x070
#define ZP_RAMDISK_IMAGE 0x218
#define ZP_RAMDISK_SIZE 0x21c
#define ZP_CMD_LINE_PTR 0x228
#define ZP_SETUP_DATA 0x250

#define FIELD(base, offset, type) (*(const volatile type *)((base) + (offset)))

void guest_main(u64 kind, u64 info)
{
	struct boot_info boot = { 0, 0, 0, 0, 0 };
	if (kind == GUEST_BOOT_PVH) {
		boot.cmdline = (const char *)FIELD(info, PVH_CMDLINE, u64);
		if (FIELD(info, PVH_NR_MODULES, u32) > 0) {
			u64 module = FIELD(info, PVH_MODLIST, u64);
			boot.initrd_addr = FIELD(module, 0, u64);
			boot.initrd_size = FIELD(module, 8, u64);
		}
		boot.rsdp = FIELD(info, PVH_RSDP, u64);
	} else {
		boot.cmdline = (const char *)(u64)FIELD(info, ZP_CMD_LINE_PTR, u32);
		boot.initrd_addr = FIELD(info, ZP_RAMDISK_IMAGE, u32);
		boot.initrd_size = FIELD(info, ZP_RAMDISK_SIZE, u32);
		boot.rsdp = FIELD(info, ZP_ACPI_RSDP, u64);
		boot.setup_data = FIELD(info, ZP_SETUP_DATA, u64);
	}
	guest_run(&boot);
	debug_exit(0);
}

#define LSR 5
#define LSR_DATA_READY 0x01
#define LSR_THR_EMPTY 0x20

void serial_putc(char c)
{
	while (!(inb(COM1 + LSR) & LSR_THR_EMPTY))
		;
	outb(COM1, (u8)c);
}

void serial_puts(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

void serial_put_dec(u64 value)
{
	char digits[20];
	int n = 0;
	do {
		digits[n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (n)
		serial_putc(digits[--n]);
}

void serial_put_hex(u64 value)
{
	serial_puts("0x");
	for (int shift = 60; shift >= 0; shift -= 4) {
		u8 digit = (value >> shift) & 0xf;
		if (digit || shift == 0 || value >> shift)
			serial_putc((char)(digit < 10 ? '0' + digit : 'a' + digit - 10));
	}
}

char serial_getc(void)
{
	while (!(inb(COM1 + LSR) & LSR_DATA_READY))
		;
	return (char)inb(COM1);
}

u64 cmdline_u64(const char *cmdline, const char *key, u64 fallback)
{
	for (const char *s = cmdline; s && *s; s++) {
		const char *k = key, *p = s;
		while (*k && *p == *k)
			k++, p++;
		if (*k || (s != cmdline && s[-1] != ' '))
			continue;
		u64 value = 0;
		while (*p >= '0' && *p <= '9')
			value = value * 10 + (u64)(*p++ - '0');
		return value;
	}
	return fallback;
}

void debug_exit(u8 code)
{
	outb(DEBUG_EXIT_PORT, code);
	halt_forever();
}

void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}
