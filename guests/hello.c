/* Prints a greeting, its command line and the start of its initrd, then exits with code 0. */
#include "common/guest.h"

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
}
