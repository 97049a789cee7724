/*
 * Prints a greeting, its command line, the start of its initrd and (booted through the Linux boot
 * protocol) each setup_data entry, a random seed's bytes in hex, then exits with code 0.
 */
#include "common/guest.h"

#define SETUP_RNG_SEED 9
/* A list longer than this is a VMM bug, not something to walk forever. */
#define MAX_SETUP_DATA 8

static void print_setup_data(u64 entry)
{
	for (int n = 0; entry && n < MAX_SETUP_DATA; n++) {
		u32 type = *(const volatile u32 *)(entry + 8);
		u32 len = *(const volatile u32 *)(entry + 12);
		serial_puts("setup_data: type ");
		serial_put_dec(type);
		serial_puts(", ");
		serial_put_dec(len);
		serial_puts(" bytes");
		if (type == SETUP_RNG_SEED) {
			serial_puts(": ");
			const volatile u8 *data = (const volatile u8 *)(entry + 16);
			for (u32 i = 0; i < len && i < 64; i++) {
				serial_putc("0123456789abcdef"[data[i] >> 4]);
				serial_putc("0123456789abcdef"[data[i] & 0xf]);
			}
		}
		serial_puts("\n");
		entry = *(const volatile u64 *)entry;
	}
}

void guest_run(const struct boot_info *boot)
{
	serial_puts("hello from a corral test guest\n");
	serial_puts("cmdline: ");
	serial_puts(boot->cmdline ? boot->cmdline : "(none)");
	serial_puts("\n");
	if (boot->initrd_size) {
		serial_puts("initrd: ");
		serial_put_dec(boot->initrd_size);
		serial_puts(" bytes: ");
		const char *data = (const char *)boot->initrd_addr;
		for (u64 i = 0; i < boot->initrd_size && i < 32 && data[i] != '\n'; i++)
			serial_putc(data[i]);
		serial_puts("\n");
	}
	print_setup_data(boot->setup_data);
}
